package imapserver

import (
	"bufio"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// liveSession is a client that also reads what the server sends between commands.
type liveSession struct {
	t      *testing.T
	client net.Conn
	br     *bufio.Reader
	n      int
}

func newLiveSession(t *testing.T, srv *Server) *liveSession {
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	t.Cleanup(func() { client.Close() })
	l := &liveSession{t: t, client: client, br: bufio.NewReader(client)}
	l.br.ReadString('\n')
	return l
}

// cmd sends a command and returns the responses up to its tagged one.
func (l *liveSession) cmd(c string) string {
	l.n++
	tag := "n" + strings.Repeat("x", l.n)
	go l.client.Write([]byte(tag + " " + c + "\r\n"))
	var out strings.Builder
	for {
		l.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := l.br.ReadString('\n')
		out.WriteString(line)
		if err != nil || strings.HasPrefix(line, tag+" ") {
			return out.String()
		}
	}
}

// await reads unsolicited responses until one contains want; it fails after a while.
func (l *liveSession) await(want string) string {
	l.t.Helper()
	var out strings.Builder
	for {
		l.client.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := l.br.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			l.t.Fatalf("waiting for %q: %v; got\n%s", want, err, out.String())
		}
		if strings.Contains(line, want) {
			return out.String()
		}
	}
}

// quiet checks that nothing arrives for a moment.
func (l *liveSession) quiet() {
	l.t.Helper()
	l.client.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := l.br.ReadString('\n'); err == nil {
		l.t.Fatalf("unexpected %q", line)
	}
}

func notifyServer(t *testing.T) (*Server, *mailbox.Memory) {
	var users mailbox.MemoryUsers
	st := users.Add("u", "p")
	srv, err := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return srv, st
}

// TestNotifySelectedAndOthers: RFC 5465 events between commands, for the selected mailbox
// and, as STATUS, for others.
func TestNotifySelectedAndOthers(t *testing.T) {
	srv, _ := notifyServer(t)
	a, b := newLiveSession(t, srv), pipeSession(t, srv)
	a.cmd("LOGIN u p")
	b("LOGIN u p")
	b(appendCmd("INBOX", msgN(1)))
	b(appendCmd("Archive", msgN(2)))
	if out := a.cmd("CAPABILITY"); !strings.Contains(out, " NOTIFY") {
		t.Fatal(out)
	}
	a.cmd("SELECT INBOX")
	out := a.cmd("NOTIFY SET STATUS (SELECTED (MessageNew (UID FLAGS) MessageExpunge FlagChange)) (PERSONAL (MessageNew MessageExpunge))")
	if !strings.Contains(out, "* STATUS Archive (MESSAGES 1 UIDNEXT 2 UIDVALIDITY ") || strings.Contains(out, "STATUS INBOX") || !strings.Contains(out, " OK ") {
		t.Fatalf("NOTIFY SET STATUS:\n%s", out)
	}
	// A message for the selected mailbox: EXISTS, then the MessageNew FETCH.
	b(appendCmd("INBOX", msgN(3)))
	got := a.await("* 2 FETCH (UID 2 FLAGS (\\Recent))")
	if !before(got, "* 2 EXISTS", "* 2 FETCH (UID 2 FLAGS (\\Recent))") {
		t.Fatalf("new message:\n%s", got)
	}
	// A flag change and an expunge in the selected mailbox.
	b("SELECT INBOX")
	b("STORE 1 +FLAGS (\\Deleted)")
	a.await("* 1 FETCH (UID 1 FLAGS (\\Deleted")
	b("EXPUNGE")
	a.await("* 1 EXPUNGE")
	// Another mailbox: STATUS.
	b(appendCmd("Archive", msgN(4)))
	if got := a.await("* STATUS Archive"); !strings.Contains(got, "MESSAGES 2 UIDNEXT 3") {
		t.Fatalf("other mailbox:\n%s", got)
	}
	// FlagChange was not asked for other mailboxes: no STATUS for a flag change there.
	b("SELECT Archive")
	b("STORE 1 +FLAGS (\\Seen)")
	a.quiet()
	// NOTIFY NONE: nothing more, even for the selected mailbox.
	if out := a.cmd("NOTIFY NONE"); !strings.Contains(out, " OK ") {
		t.Fatal(out)
	}
	b(appendCmd("INBOX", msgN(5)))
	b(appendCmd("Archive", msgN(6)))
	a.quiet()
	if out := a.cmd("NOOP"); !strings.Contains(out, "* 2 EXISTS") {
		t.Fatalf("NOOP after NOTIFY NONE:\n%s", out)
	}
}

// TestNotifyDelayed: SELECTED-DELAYED sends new messages and flag changes at once but keeps
// expunges for a command that may report them (RFC 5465 section 6.1.2).
func TestNotifyDelayed(t *testing.T) {
	srv, _ := notifyServer(t)
	a, b := newLiveSession(t, srv), pipeSession(t, srv)
	a.cmd("LOGIN u p")
	b("LOGIN u p")
	b(appendCmd("INBOX", msgN(1)))
	b(appendCmd("INBOX", msgN(2)))
	a.cmd("SELECT INBOX")
	a.cmd("NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge FlagChange))")
	b("SELECT INBOX")
	b("STORE 1 +FLAGS (\\Deleted)")
	a.await("* 1 FETCH")
	b("EXPUNGE")
	b(appendCmd("INBOX", msgN(3)))
	if got := a.await("EXISTS"); strings.Contains(got, "EXPUNGE") || !strings.Contains(got, "* 3 EXISTS") {
		t.Fatalf("delayed:\n%s", got)
	}
	if out := a.cmd("NOOP"); !strings.Contains(out, "* 1 EXPUNGE") {
		t.Fatalf("NOOP:\n%s", out)
	}
}

// TestNotifyMailboxEvents: MailboxName and SubscriptionChange as LIST responses (RFC 5465
// sections 5.4 and 5.5), from another session of the user; none for the session's own.
func TestNotifyMailboxEvents(t *testing.T) {
	srv, _ := notifyServer(t)
	a, b := newLiveSession(t, srv), pipeSession(t, srv)
	a.cmd("LOGIN u p")
	b("LOGIN u p")
	a.cmd("NOTIFY SET (PERSONAL (MailboxName SubscriptionChange))")
	b("CREATE Work")
	a.await(`* LIST (\HasNoChildren) "/" Work`)
	b("CREATE Work/Old")
	a.await(`* LIST (\HasNoChildren) "/" Work/Old`)
	b("RENAME Work Job")
	got := a.await(`"/" Job/Old ("OLDNAME" (Work/Old))`)
	if !strings.Contains(got, `* LIST (\HasChildren) "/" Job ("OLDNAME" (Work))`) {
		t.Fatalf("rename:\n%s", got)
	}
	b("SUBSCRIBE Job")
	a.await(`* LIST (\HasChildren \Subscribed) "/" Job`)
	b("UNSUBSCRIBE Job")
	a.await(`* LIST (\HasChildren) "/" Job`)
	b("DELETE Job/Old")
	a.await(`* LIST (\NonExistent) "/" Job/Old`)
	// The session's own change is not reported back to it.
	if out := a.cmd("CREATE Mine"); strings.Contains(out, "* LIST") {
		t.Fatalf("own CREATE:\n%s", out)
	}
	a.quiet()
}

// TestNotifyPoll: changes made around this server (here, straight in the store) are found by
// comparing the folder list.
func TestNotifyPoll(t *testing.T) {
	srv, st := notifyServer(t)
	srv.notify.poll = 50 * time.Millisecond
	a := newLiveSession(t, srv)
	a.cmd("LOGIN u p")
	a.cmd("NOTIFY SET (SUBTREE Ext (MailboxName SubscriptionChange MessageNew MessageExpunge))")
	if err := st.Create("Ext", ""); err != nil {
		t.Fatal(err)
	}
	a.await(`* LIST (\HasNoChildren) "/" Ext`)
	if err := st.SetSubscribed("Ext", true); err != nil {
		t.Fatal(err)
	}
	a.await(`* LIST (\HasNoChildren \Subscribed) "/" Ext`)
	f, _ := st.Folder("Ext")
	if _, err := f.Append([]byte(msgN(1)), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	a.await("* STATUS Ext (MESSAGES 1 UIDNEXT 2 ")
	if err := st.Create("Other", ""); err != nil {
		t.Fatal(err)
	}
	a.quiet()
}

// TestNotifyErrors: BADEVENT, composition errors (BAD), NOTIFY in the wrong state.
func TestNotifyErrors(t *testing.T) {
	srv, _ := notifyServer(t)
	c := pipeSession(t, srv)
	if out := c("NOTIFY NONE"); !strings.Contains(out, " BAD ") {
		t.Fatalf("before login:\n%s", out)
	}
	c("LOGIN u p")
	for _, tc := range []struct{ cmd, want string }{
		{"NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))", "NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)]"},
		{"NOTIFY SET (PERSONAL (MailboxMetadataChange))", "NO [BADEVENT"},
		{"NOTIFY SET (PERSONAL (MessageNew))", " BAD "},
		{"NOTIFY SET (PERSONAL (FlagChange))", " BAD "},
		{"NOTIFY SET (SELECTED (MailboxName))", " BAD "},
		{"NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (SELECTED-DELAYED NONE)", " BAD "},
		{"NOTIFY SET (INBOXES (MessageNew MessageExpunge)) (MAILBOXES (Sent Nope) (MessageNew MessageExpunge FlagChange))", " OK "},
		{"NOTIFY SET (PERSONAL NONE)", " OK "},
	} {
		if out := c(tc.cmd); !strings.Contains(out, tc.want) {
			t.Errorf("%q: want %q in\n%s", tc.cmd, tc.want, out)
		}
	}
}

// TestNotifyMessageNewFetch: the MessageNew fetch attributes of RFC 5465 section 5.2's example,
// (UID BODY.PEEK[HEADER.FIELDS (From To)]): a new message is announced with EXISTS, then a
// FETCH with that data; BODY without .PEEK does not set \Seen either; the session's own APPEND
// and COPY into the selected mailbox get their EXISTS but no MessageNew FETCH (section 5).
func TestNotifyMessageNewFetch(t *testing.T) {
	srv, _ := notifyServer(t)
	a, b := newLiveSession(t, srv), pipeSession(t, srv)
	a.cmd("LOGIN u p")
	b("LOGIN u p")
	b(appendCmd("INBOX", msgN(1)))
	a.cmd("SELECT INBOX")
	if out := a.cmd("NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From To)]) MessageExpunge))"); !strings.Contains(out, " OK ") {
		t.Fatal(out)
	}
	b(appendCmd("INBOX", "From: ann@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n"))
	got := a.await("From: ann@example.org")
	want := "* 2 FETCH (UID 2 BODY[HEADER.FIELDS (From To)] {46}\r\nFrom: ann@example.org\r\n"
	if !strings.Contains(got, want) || !before(got, "* 2 EXISTS", "* 2 FETCH") {
		t.Fatalf("want EXISTS, then %q, in\n%s", want, got)
	}
	a.await(")")
	// Without .PEEK: the data, and still no \Seen.
	a.cmd("NOTIFY SET (SELECTED (MessageNew (UID BODY[HEADER.FIELDS (Subject)]) MessageExpunge))")
	b(appendCmd("INBOX", "Subject: second\r\n\r\nbody\r\n"))
	a.await("Subject: second")
	a.await(")")
	b("SELECT INBOX")
	if out := b("UID FETCH 3 (FLAGS)"); strings.Contains(out, `\Seen`) {
		t.Fatalf("MessageNew FETCH set \\Seen:\n%s", out)
	}
	// The session's own APPEND and COPY: EXISTS, no MessageNew FETCH.
	if out := a.cmd(appendCmd("INBOX", "Subject: mine\r\n\r\nbody\r\n")); !strings.Contains(out, "* 4 EXISTS") || strings.Contains(out, "FETCH") {
		t.Fatalf("own APPEND:\n%s", out)
	}
	out := a.cmd("COPY 1 INBOX") + a.cmd("NOOP")
	if !strings.Contains(out, "* 5 EXISTS") || strings.Contains(out, "FETCH") {
		t.Fatalf("own COPY:\n%s", out)
	}
	a.quiet()
}

// armedStore hands out an INBOX whose next Status call first files a message, as if it arrived
// while the session ran a command: the command's own sync then finds it.
type armedStore struct {
	mailbox.Store
	mu  sync.Mutex
	arm func()
}

func (s *armedStore) Authenticate(user, pass string) (mailbox.Store, error) { return s, nil }

func (s *armedStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil || !strings.EqualFold(name, mailbox.Inbox) {
		return f, err
	}
	return armedFolder{f, s}, nil
}

type armedFolder struct {
	mailbox.Folder
	s *armedStore
}

func (f armedFolder) Status() (mailbox.Status, error) {
	f.s.mu.Lock()
	arm := f.s.arm
	f.s.arm = nil
	f.s.mu.Unlock()
	if arm != nil {
		arm()
	}
	return f.Folder.Status()
}

// TestNotifyMessageNewInCommand: a message that arrives while a command runs is announced by
// that command's EXISTS, and its MessageNew FETCH comes with it, not never (the watch that
// fires afterwards finds nothing new), and not twice.
func TestNotifyMessageNewInCommand(t *testing.T) {
	mem := mailbox.NewMemory(time.Now)
	if err := mailbox.EnsureSpecialUse(mem); err != nil {
		t.Fatal(err)
	}
	st := &armedStore{Store: mem}
	srv, err := New(Config{Auth: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a := newLiveSession(t, srv)
	a.cmd("LOGIN u p")
	a.cmd("SELECT INBOX")
	a.cmd("NOTIFY SET (SELECTED-DELAYED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From)]) MessageExpunge))")
	inbox, _ := mem.Folder(mailbox.Inbox)
	st.mu.Lock()
	st.arm = func() { inbox.Append([]byte("From: carol@example.org\r\n\r\nbody\r\n"), nil, time.Time{}) }
	st.mu.Unlock()
	out := a.cmd("CHECK")
	if !before(out, "* 1 EXISTS", "* 1 FETCH (UID 1 BODY[HEADER.FIELDS (From)] {27}\r\nFrom: carol@example.org\r\n") {
		t.Fatalf("CHECK:\n%s", out)
	}
	a.quiet()
}
