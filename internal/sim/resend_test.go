package sim

import (
	"testing"
	"time"

	"epost/internal/post"
)

// A message sent again under the same notification ids after it was accepted (an SMTP
// client that lost the 250 and retried; the MX derives the same ids) is sealed anew, so its
// pending object differs from the stored one: the replicas refuse it as a conflict, which
// SendWithIDs reports as accepted, and the recipient files the message once.
func TestMailResendSameIDsAccepted(t *testing.T) {
	const seed = 61
	w := newWorld(t, seed, 20, nil)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	w.run.crash(b.node) // offline: the pending copy stays in the ring until b returns
	w.run.ring.net.RunFor(time.Minute)
	id := post.NotificationID{1, 2, 3}
	parts := [][]byte{[]byte("Subject: once\r\n\r\nbody")}
	for try := range 2 {
		var res []post.Result
		a.u.SendWithIDs([]string{"b@sim.example"}, []post.NotificationID{id}, parts, func(r []post.Result) { res = r })
		w.wait(time.Minute, func() bool { return res != nil })
		if len(res) != 1 || res[0].Status != post.Accepted {
			w.fail("send %d: %+v", try, res)
		}
		w.run.ring.net.RunFor(30 * time.Second)
	}
	w.run.restart(b.node)
	w.wait(2*time.Minute, func() bool { e, _ := b.u.Entries(post.InboxLog, 0); return len(e) == 1 })
	w.run.ring.net.RunFor(time.Minute)
	if n := len(w.inbox(b)); n != 1 {
		w.fail("b's INBOX has %d entries, want 1", n)
	}
}
