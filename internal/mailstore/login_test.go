package mailstore

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/mailbox"
	"epost/internal/past"
	"epost/internal/post"
	"epost/internal/smtpserver"
)

// closestNodes lists the live nodes by closeness to key (the first Replicas of them hold it).
func (w *testWorld) closestNodes(key ids.ID) []*testNode {
	var out []*testNode
	for _, tn := range w.nodes {
		if tn.ep.Up() {
			out = append(out, tn)
		}
	}
	slices.SortStableFunc(out, func(a, b *testNode) int {
		switch {
		case ids.Closer(key, a.ep.ID(), b.ep.ID()):
			return -1
		case ids.Closer(key, b.ep.ID(), a.ep.ID()):
			return 1
		}
		return 0
	})
	return out
}

// A user's very first login while a replica of the INBOX head has died unnoticed: the
// start fails cleanly (no user left on the node, no "started" marker), and a later login,
// once the ring has repaired itself, finishes the start (the root log the first one created
// is opened, not created again) and the user sends and receives mail.
func TestUsersFirstLoginRetriedAfterReplicaCrash(t *testing.T) {
	const seed = 31
	w := newTestWorld(t, seed, 12)
	alice := w.newUser("alice@ring.example", 1)
	// Bob's keys (and so his log keys) are drawn until an INBOX replica other than the key's
	// root holds none of the root log's replicas, and a node holds neither, for bob.
	var bob *testUser
	var rootKey ids.Key
	var rootReplicas []*testNode
	var victim, home *testNode
	for try := 0; victim == nil || home == nil; try++ {
		if try == 50 {
			w.fail("no INBOX replica apart from the root log's replicas")
		}
		bob = w.newUser("bob@ring.example", 2)
		inboxKey := past.SignedKey(w.ring, bob.keys.Public().Signing, []byte("epost/v1/log/"+post.InboxLog))
		rootKey = past.SignedKey(w.ring, bob.keys.Public().Signing, []byte("epost/v1/log/"+post.RootLog))
		replicas := w.closestNodes(inboxKey.ID)
		rootReplicas = w.closestNodes(rootKey.ID)[:3]
		victim, home = nil, nil
		for _, tn := range replicas[1:3] { // a replica, not the key's root: the root lists it
			if !slices.Contains(rootReplicas, tn) {
				victim = tn
				break
			}
		}
		for _, tn := range w.nodes[1:] {
			if !slices.Contains(replicas[:3], tn) && !slices.Contains(rootReplicas, tn) {
				home = tn
				break
			}
		}
	}
	ua := w.users(w.nodes[0], map[*testUser]string{alice: "alice-pw"})
	ub := w.users(home, map[*testUser]string{bob: "bob-pw"})
	if _, err := ua.Authenticate(alice.addr, "alice-pw"); err != nil {
		w.fail("alice login: %v", err)
	}

	// The replica dies mid-way: right after the root log's head is stored.
	crashed := false
	ub.w.drive = func() {
		if !crashed && slices.ContainsFunc(rootReplicas, func(tn *testNode) bool { return tn.st.Has(rootKey) }) {
			crashed = true
			w.crash(victim)
		}
		w.drive()
	}
	_, err := ub.Authenticate(bob.addr, "bob-pw")
	ub.w.drive = w.drive
	if !crashed {
		w.fail("bob's root log was never created")
	}
	if err == nil {
		w.fail("bob's first login succeeded with a replica of his INBOX head dead and undetected")
	}
	t.Logf("seed %d: first login: %v", seed, err)
	if _, ok := home.post.User(bob.addr); ok {
		w.fail("a failed first start left bob on the node")
	}
	if _, err := os.Stat(filepath.Join(post.UserDir(ub.cfg.NodeDir, bob.addr), startedMarker)); err == nil {
		w.fail("a failed first start wrote the started marker")
	}

	w.net.RunFor(2 * time.Minute) // the ring notices the death and repairs the replica sets
	sb, err := ub.Authenticate(bob.addr, "bob-pw")
	if err != nil {
		w.fail("bob's login after repair: %v", err)
	}
	u, ok := home.post.User(bob.addr)
	if !ok {
		w.fail("bob is not on his node after a successful login")
	}
	if root, _ := u.Entries(post.RootLog, 0); !slices.ContainsFunc(root, func(e []byte) bool { return string(e) == "+"+post.InboxLog }) {
		w.fail("bob's root log does not list INBOX")
	}
	if h, err := u.Head(post.RootLog); err != nil || h.Seq < 2 {
		// The first login created root (seq 1) and listed nothing; the second opened it and
		// appended, so its head moved on rather than being created again at seq 1.
		w.fail("bob's root head %+v %v", h, err)
	}
	w.net.RunFor(5 * time.Second)

	inbox := mustFolder(w, sb, mailbox.Inbox)
	raw := []byte("From: alice@ring.example\r\nTo: bob@ring.example\r\nSubject: welcome\r\n\r\nhello\r\n")
	env := smtpserver.Envelope{From: alice.addr, To: []string{bob.addr}, User: alice.addr}
	if err := ua.Submitter().Submit(context.Background(), env, raw); err != nil {
		w.fail("submit: %v", err)
	}
	if !w.runUntil(time.Minute, func() bool { l, _ := inbox.List(); return len(l) == 1 }) {
		w.fail("bob never got alice's message")
	}
	if _, err := mustFolder(w, sb, "Drafts").Append(raw, nil, time.Time{}); err != nil {
		w.fail("bob's append: %v", err)
	}
}
