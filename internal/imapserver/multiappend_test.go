package imapserver

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// batchStore is a memory store whose folders are mailbox.MultiAppenders that count their
// calls and can fail part way, as a ring-backed store does after some entries were durable.
type batchStore struct {
	mailbox.Store
	mu        sync.Mutex
	appends   int // Folder.Append calls
	batches   []int
	failAfter int // AppendAll files this many messages and then fails (0: never)
}

type batchAuth struct{ s *batchStore }

func (a batchAuth) Authenticate(user, pass string) (mailbox.Store, error) {
	if user != "u" || pass != "p" {
		return nil, mailbox.ErrAuthFailed
	}
	return a.s, nil
}

type batchFolder struct {
	mailbox.Folder
	s *batchStore
}

func (s *batchStore) Folder(name string) (mailbox.Folder, error) {
	f, err := s.Store.Folder(name)
	if err != nil {
		return nil, err
	}
	return batchFolder{f, s}, nil
}

func (f batchFolder) Append(raw []byte, flags []mailbox.Flag, date time.Time) (mailbox.UID, error) {
	f.s.mu.Lock()
	f.s.appends++
	f.s.mu.Unlock()
	return f.Folder.Append(raw, flags, date)
}

func (f batchFolder) AppendAll(msgs []mailbox.NewMessage) ([]mailbox.UID, error) {
	f.s.mu.Lock()
	f.s.batches = append(f.s.batches, len(msgs))
	failAfter := f.s.failAfter
	f.s.mu.Unlock()
	var uids []mailbox.UID
	for i, m := range msgs {
		if failAfter > 0 && i == failAfter {
			return uids, mailbox.ErrUnavailable
		}
		uid, err := f.Folder.Append(m.Raw, m.Flags, m.Date)
		if err != nil {
			return uids, err
		}
		uids = append(uids, uid)
	}
	return uids, nil
}

// TestMultiappendOneBatch: a MULTIAPPEND (RFC 3502) reaches the store as one AppendAll, so a
// ring-backed store waits for durability once for the whole command; a single APPEND stays an
// Append. When the batch fails part way, the messages filed before the failure are expunged
// again (all or nothing) and the client gets a NO.
func TestMultiappendOneBatch(t *testing.T) {
	bs := &batchStore{Store: mailbox.NewMemory(nil)}
	srv, _ := New(Config{Auth: batchAuth{bs}, Logger: slog.New(slog.DiscardHandler)})
	c := pipeSession(t, srv)
	c("LOGIN u p")
	if out := c("APPEND INBOX {3+}\r\none"); !strings.Contains(out, "OK [APPENDUID ") {
		t.Fatalf("APPEND: %s", out)
	}
	var cmd strings.Builder
	cmd.WriteString("APPEND INBOX")
	for range 50 {
		cmd.WriteString(" (\\Seen) {5+}\r\nhello")
	}
	if out := c(cmd.String()); !strings.Contains(out, "OK [APPENDUID ") || !strings.Contains(out, ",51]") {
		t.Fatalf("MULTIAPPEND: %s", out)
	}
	if bs.appends != 1 || len(bs.batches) != 1 || bs.batches[0] != 50 {
		t.Fatalf("store saw %d Appends and batches %v; want 1 Append (the single APPEND) and one batch of 50", bs.appends, bs.batches)
	}

	bs.failAfter = 2
	if out := c("APPEND INBOX {1+}\r\na {1+}\r\nb {1+}\r\nc"); !strings.Contains(out, "NO [UNAVAILABLE]") {
		t.Fatalf("failing MULTIAPPEND: %s", out)
	}
	if out := c("STATUS INBOX (MESSAGES)"); !strings.Contains(out, "(MESSAGES 51)") {
		t.Fatalf("after a failed MULTIAPPEND the messages filed before the failure remain: %s", out)
	}
}
