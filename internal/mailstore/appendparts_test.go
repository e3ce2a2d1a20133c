package mailstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/content"
	"epost/internal/post"
)

// refusingParts is the ring's content store with every Seal's store failing: the parts of an
// append never reach the ring, while its log entry does.
type refusingParts struct{ *post.Node }

func (r refusingParts) Seal(data []byte) (content.Ref, func(func(error)), error) {
	ref, _, err := r.Node.Seal(data)
	return ref, func(cb func(error)) { cb(errors.New("test: the ring refused the parts")) }, err
}

// An append writes its insert entry while the message's parts are being stored. When the
// parts fail the append fails, and the message its entry filed is taken out again: nobody,
// in this session or another, is left with a message whose bytes the ring does not have.
func TestAppendPartsFailedLeavesNoMessage(t *testing.T) {
	w := newTestWorld(t, 31, 8)
	alice := w.newUser("alice@ring.example", 1)
	w.start(alice, w.nodes[1], true)
	s, err := Open(context.Background(), Config{
		Address: alice.addr, Logs: alice.u, Contents: refusingParts{alice.node.post}, Clock: alice.node.ep.Clock(), Drive: w.drive,
		Rand: rand.NewChaCha8([32]byte{3}), Timeout: 2 * time.Minute,
	})
	if err != nil {
		w.fail("open: %v", err)
	}
	f := mustFolder(w, s, "INBOX")
	att := make([]byte, 64<<10)
	w.fill(att)
	if uid, err := f.Append(attachmentMessage("lost parts", "b1", att), nil, time.Time{}); err == nil {
		w.fail("append with its parts refused: uid %d, no error", uid)
	}
	if list, err := f.List(); err != nil || len(list) != 0 {
		w.fail("INBOX after the failed append: %d messages (%v), want none", len(list), err)
	}
	// Another store of the same user, replaying the log from the start, agrees.
	other := w.open(alice, "")
	list, err := mustFolder(w, other, "INBOX").List()
	if err != nil || len(list) != 0 {
		w.fail("INBOX replayed by another store: %d messages (%v), want none", len(list), err)
	}
	// A small message has no parts to store: it is appended as before.
	if _, err := f.Append([]byte("Subject: small\r\n\r\nhi\r\n"), nil, time.Time{}); err != nil {
		w.fail("small append: %v", err)
	}
	if st, err := f.Status(); err != nil || st.Messages != 1 {
		w.fail("status after the small append: %+v, %v", st, err)
	}
}
