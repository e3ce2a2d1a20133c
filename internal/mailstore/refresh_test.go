package mailstore

import (
	"testing"
	"time"
)

// TestReadsShareTheStateLock: a read with nothing new to apply takes the state lock shared,
// so it goes ahead while another reader holds it (a long FETCH or SEARCH); before, every read
// queued for the exclusive lock to look for new log entries, and every reader behind it waited
// too (RWMutex: a waiting writer holds up new readers).
func TestReadsShareTheStateLock(t *testing.T) {
	w := newTestWorld(t, 31, 6)
	alice := w.newUser("alice@ring.example", 1)
	w.start(alice, w.nodes[1], true)
	s := w.open(alice, "")
	inbox := mustFolder(w, s, "INBOX")
	if _, err := inbox.Append([]byte("Subject: x\r\n\r\nx\r\n"), nil, time.Time{}); err != nil {
		w.fail("append: %v", err)
	}
	if _, err := inbox.Status(); err != nil {
		w.fail("status: %v", err)
	}
	s.mu.RLock() // another reader, in the middle of a long read
	done := make(chan error, 1)
	go func() {
		st, err := inbox.Status()
		if err == nil && st.Messages != 1 {
			t.Errorf("status %+v", st)
		}
		if err == nil {
			_, err = inbox.Changed(0)
		}
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("a read with nothing to apply waited for another reader to finish")
		s.mu.RUnlock()
		err = <-done
		s.mu.RLock()
	}
	s.mu.RUnlock()
	if err != nil {
		t.Errorf("read: %v", err)
	}
}
