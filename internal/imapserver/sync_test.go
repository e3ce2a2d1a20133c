package imapserver

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// listCountingStore counts Folder.List calls.
type listCountingStore struct {
	mailbox.Store
	lists atomic.Int64
}

type listCountingFolder struct {
	mailbox.Folder
	s *listCountingStore
}

func (s *listCountingStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil {
		return nil, err
	}
	return listCountingFolder{f, s}, nil
}

func (f listCountingFolder) List() ([]mailbox.Summary, error) {
	f.s.lists.Add(1)
	return f.Folder.List()
}

type storeAuth struct{ s mailbox.Store }

func (a storeAuth) Authenticate(user, pass string) (mailbox.Store, error) {
	if user != "u" || pass != "p" {
		return nil, mailbox.ErrAuthFailed
	}
	return a.s, nil
}

// TestSyncAsksOnlyForChanges: a session learns of another session's flag changes, new
// messages and expunges from the folder's Changed and Expunged, never by listing the whole
// folder after each command (under 20 writers the folder changes between almost any two
// commands, and the listing held the mail store's state lock for the folder's size). An
// expunge that a FETCH may not report (RFC 3501 section 7.4.1) is reported by the next NOOP.
func TestSyncAsksOnlyForChanges(t *testing.T) {
	ls := &listCountingStore{Store: mailbox.NewMemory(nil)}
	inbox, _ := ls.Store.Folder("INBOX")
	for _, m := range []string{"Subject: a\r\n\r\na\r\n", "Subject: b\r\n\r\nb\r\n", "Subject: c\r\n\r\nc\r\n"} {
		inbox.Append([]byte(m), nil, time.Time{})
	}
	srv, _ := New(Config{Auth: storeAuth{ls}, Logger: slog.New(slog.DiscardHandler)})
	a, b := pipeSession(t, srv), pipeSession(t, srv)
	a("LOGIN u p")
	b("LOGIN u p")
	a("SELECT INBOX")
	b("SELECT INBOX")
	for _, c := range []struct {
		s         func(string) string
		cmd       string
		want, not []string
		reset     bool // count List calls from here on (EXPUNGE lists the folder to find \Deleted)
	}{
		{b, "STORE 1 +FLAGS ($Done)", []string{"OK STORE"}, nil, false},
		{b, "STORE 2 +FLAGS.SILENT (\\Deleted)", []string{"OK STORE"}, nil, false},
		{b, "EXPUNGE", []string{"* 2 EXPUNGE"}, nil, true},
		{b, "APPEND INBOX {3+}\r\nnew", []string{"OK [APPENDUID"}, nil, false},
		// FETCH may not send EXPUNGE: the flag change and the new message only.
		{a, "FETCH 1 (UID)", []string{"* 1 FETCH (UID 1 FLAGS ($Done \\Recent))", "* 4 EXISTS", "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Done)"}, []string{"EXPUNGE"}, false},
		{a, "NOOP", []string{"* 2 EXPUNGE"}, []string{"EXISTS", "FLAGS ($Done)"}, false},
		{a, "FETCH 1:* (UID)", []string{"* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)"}, nil, false},
		{b, "STORE 3 -FLAGS (\\Seen)", []string{"OK STORE"}, nil, false},
		{b, "STORE 3 +FLAGS (\\Flagged)", []string{"OK STORE"}, nil, false},
		{a, "NOOP", []string{"* 3 FETCH (UID 4 FLAGS (\\Flagged))"}, []string{"EXPUNGE", "EXISTS"}, false},
	} {
		out := c.s(c.cmd)
		if c.reset {
			ls.lists.Store(0)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: want %q in\n%s", c.cmd, w, out)
			}
		}
		for _, n := range c.not {
			if strings.Contains(out, n) {
				t.Errorf("%s: %q should not be in\n%s", c.cmd, n, out)
			}
		}
	}
	if n := ls.lists.Load(); n != 0 {
		t.Errorf("the sessions listed the folder %d times to learn of changes; want 0", n)
	}
}

// rebuiltStore's folders report mod-sequences lowered by back once it is set: the folder's
// log was rebuilt shorter (the mail store replays a log POST rebuilt under it), so that
// HIGHESTMODSEQ went back.
type rebuiltStore struct {
	mailbox.Store
	back atomic.Uint64
}

type rebuiltFolder struct {
	mailbox.Folder
	s *rebuiltStore
}

func (s *rebuiltStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil {
		return nil, err
	}
	return rebuiltFolder{f, s}, nil
}

func (f rebuiltFolder) Status() (mailbox.Status, error) {
	st, err := f.Folder.Status()
	st.HighestModSeq -= f.s.back.Load()
	return st, err
}

func (f rebuiltFolder) shift(l []mailbox.Summary) []mailbox.Summary {
	for i := range l {
		l[i].ModSeq -= f.s.back.Load()
	}
	return l
}

func (f rebuiltFolder) List() ([]mailbox.Summary, error) {
	l, err := f.Folder.List()
	return f.shift(l), err
}

func (f rebuiltFolder) Changed(since uint64) ([]mailbox.Summary, error) {
	l, err := f.Folder.Changed(since + f.s.back.Load())
	return f.shift(l), err
}

func (f rebuiltFolder) Expunged(since uint64) ([]mailbox.UID, error) {
	return f.Folder.Expunged(since + f.s.back.Load())
}

// After the folder's HIGHESTMODSEQ went back, a sync that may not send EXPUNGE (a FETCH)
// compares the whole list and brings the view's mod-sequence down; the expunges it could not
// report are still reported by the next sync that may, even when they came after it, below
// the mod-sequence of the last expunges the client was told of.
func TestSyncAfterModSeqWentBack(t *testing.T) {
	rs := &rebuiltStore{Store: mailbox.NewMemory(nil)}
	inbox, _ := rs.Store.Folder("INBOX")
	for i := range 6 {
		inbox.Append([]byte("Subject: m\r\n\r\nm\r\n"), nil, time.Time{})
		if i < 5 {
			inbox.ChangeFlags([]mailbox.UID{1}, mailbox.FlagsAdd, []mailbox.Flag{mailbox.Flag("$K" + string(rune('a'+i)))}, 0)
		}
	}
	srv, _ := New(Config{Auth: storeAuth{rs}, Logger: slog.New(slog.DiscardHandler)})
	a, b := pipeSession(t, srv), pipeSession(t, srv)
	a("LOGIN u p")
	b("LOGIN u p")
	a("SELECT INBOX")
	b("SELECT INBOX")
	st, _ := inbox.Status()
	rs.back.Store(st.HighestModSeq - 2) // the log was rebuilt shorter
	if out := a("FETCH 1 (UID)"); !strings.Contains(out, "OK FETCH") {
		t.Fatalf("FETCH after the rebuild:\n%s", out)
	}
	b("STORE 2 +FLAGS.SILENT (\\Deleted)")
	if out := b("EXPUNGE"); !strings.Contains(out, "* 2 EXPUNGE") {
		t.Fatalf("b's EXPUNGE:\n%s", out)
	}
	if out := a("NOOP"); !strings.Contains(out, "* 2 EXPUNGE") {
		t.Errorf("NOOP after another session's expunge: no EXPUNGE in\n%s", out)
	}
	if out := a("FETCH 1:* (UID)"); strings.Contains(out, "(UID 2)") || !strings.Contains(out, "* 5 FETCH (UID 6)") {
		t.Errorf("the view after the expunge:\n%s", out)
	}
}

// expungingStore's folders lose a message between its summary and its content, as when
// another session's EXPUNGE lands in the middle of a FETCH.
type expungingStore struct{ mailbox.Store }

type expungingFolder struct{ mailbox.Folder }

func (s expungingStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil {
		return nil, err
	}
	return expungingFolder{f}, nil
}

func (f expungingFolder) Content(uid mailbox.UID) (mailbox.Content, error) {
	if uid == 2 {
		return nil, mailbox.ErrNoMessage
	}
	return f.Folder.Content(uid)
}

// TestFetchRacingExpunge: a message whose content is gone by the time a FETCH reads it (an
// EXPUNGE of another session) is left out, as one whose summary is gone is; the FETCH does not
// fail as if the store were unavailable (an outside load run saw NO [UNAVAILABLE] here).
func TestFetchRacingExpunge(t *testing.T) {
	mem := mailbox.NewMemory(nil)
	inbox, _ := mem.Folder("INBOX")
	for _, m := range []string{"Subject: a\r\n\r\na\r\n", "Subject: b\r\n\r\nb\r\n", "Subject: c\r\n\r\nc\r\n"} {
		inbox.Append([]byte(m), nil, time.Time{})
	}
	srv, _ := New(Config{Auth: storeAuth{expungingStore{mem}}, Logger: slog.New(slog.DiscardHandler)})
	a := pipeSession(t, srv)
	a("LOGIN u p")
	a("SELECT INBOX")
	out := a("FETCH 1:3 (BODY.PEEK[])")
	if !strings.Contains(out, "* 1 FETCH") || !strings.Contains(out, "* 3 FETCH") || strings.Contains(out, "* 2 FETCH") {
		t.Errorf("FETCH racing an expunge:\n%s", out)
	}
	if !strings.Contains(out, " OK ") && !strings.Contains(out, "NO [EXPUNGEISSUED]") {
		t.Errorf("FETCH racing an expunge did not end in OK or NO [EXPUNGEISSUED]:\n%s", out)
	}
}

// validityStore's folders report a UIDVALIDITY raised by bump, as the mail store does after a
// merge rebuilt a folder's log.
type validityStore struct {
	mailbox.Store
	bump atomic.Uint32
}

type validityFolder struct {
	mailbox.Folder
	s *validityStore
}

func (s *validityStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil {
		return nil, err
	}
	return validityFolder{f, s}, nil
}

func (f validityFolder) Status() (mailbox.Status, error) {
	st, err := f.Folder.Status()
	st.UIDValidity += f.s.bump.Load()
	return st, err
}

// A session whose selected folder gets a new UIDVALIDITY ends with BYE at its next command:
// its UIDs and sequence numbers may name other messages now, which no untagged response can
// say (RFC 3501 section 2.3.1.1). A new session selects the folder under the new value.
func TestSessionEndsWhenUIDValidityChanges(t *testing.T) {
	vs := &validityStore{Store: mailbox.NewMemory(nil)}
	inbox, _ := vs.Store.Folder("INBOX")
	inbox.Append([]byte("Subject: m\r\n\r\nm\r\n"), nil, time.Time{})
	srv, _ := New(Config{Auth: storeAuth{vs}, Logger: slog.New(slog.DiscardHandler)})
	a := pipeSession(t, srv)
	a("LOGIN u p")
	out := a("SELECT INBOX")
	vs.bump.Store(7)
	if out = a("NOOP"); !strings.Contains(out, "* BYE") || !strings.Contains(out, "UIDVALIDITY") {
		t.Fatalf("NOOP after the folder's UIDVALIDITY changed:\n%s", out)
	}
	st, _ := inbox.Status()
	b := pipeSession(t, srv)
	b("LOGIN u p")
	if out := b("SELECT INBOX"); !strings.Contains(out, fmt.Sprintf("[UIDVALIDITY %d]", st.UIDValidity+7)) {
		t.Fatalf("a new session's SELECT:\n%s", out)
	}
}
