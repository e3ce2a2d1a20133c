package mailstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailbox"
	"epost/internal/post"
	"epost/internal/smtpserver"
)

// users makes the mail layer of node tn with the given users' files in a fresh node dir.
func (w *testWorld) users(tn *testNode, passwords map[*testUser]string) *Users {
	w.t.Helper()
	dir := w.t.TempDir()
	for tu, pw := range passwords {
		sealed, err := identity.SealPrivate(tu.keys, tu.addr, []byte(pw), rand.NewChaCha8([32]byte{1}), identity.SealOptions{Time: 1, MemoryKiB: 64, Threads: 1})
		if err != nil {
			w.fail("seal: %v", err)
		}
		if err := post.SaveUser(dir, tu.addr, sealed, tu.rec); err != nil {
			w.fail("save user: %v", err)
		}
	}
	us, err := NewUsers(UsersConfig{NodeDir: dir, Node: tn.post, HasDomain: func(d string) bool { return d == "ring.example" },
		Clock: tn.ep.Clock(), Drive: w.drive, Rand: rand.NewChaCha8([32]byte{byte(w.rng.Uint32())}), Timeout: 2 * time.Minute})
	if err != nil {
		w.fail("users: %v", err)
	}
	tn.onFiled = us.OnFiled
	return us
}

// liveKeys is the set of object keys held by all stores.
func (w *testWorld) liveKeys() map[ids.Key]bool {
	keys := map[ids.Key]bool{}
	for _, tn := range w.nodes {
		tn.st.Keys(func(k ids.Key) { keys[k] = true })
	}
	return keys
}

// Login starts POST and the store; alice submits to bob over the Submitter; bob's INBOX
// shows the exact bytes and his IDLE watch fires; unknown recipients are refused; the same
// attachment appended to two folders and submitted is stored once.
func TestUsersSubmitDeliver(t *testing.T) {
	for _, seed := range []uint64{23, 24} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { testUsersSubmitDeliver(t, seed) })
	}
}

func testUsersSubmitDeliver(t *testing.T, seed uint64) {
	w := newTestWorld(t, seed, 12)
	alice := w.newUser("alice@ring.example", 1)
	bob := w.newUser("bob@ring.example", 2)
	ua := w.users(w.nodes[1], map[*testUser]string{alice: "alice-pw"})
	ub := w.users(w.nodes[2], map[*testUser]string{bob: "bob-pw"})

	if _, err := ua.Authenticate("alice@ring.example", "wrong"); !errors.Is(err, mailbox.ErrAuthFailed) {
		w.fail("wrong password: %v", err)
	}
	if _, err := ua.Authenticate("nobody@ring.example", "x"); !errors.Is(err, mailbox.ErrAuthFailed) {
		w.fail("unknown user: %v", err)
	}
	sa, err := ua.Authenticate("Alice@ring.example", "alice-pw")
	if err != nil {
		w.fail("alice login: %v", err)
	}
	sa2, err := ua.Authenticate("alice@ring.example", "alice-pw")
	if err != nil || sa2 != sa {
		w.fail("second login: %v (same store %v)", err, sa2 == sa)
	}
	infos, _ := sa.Folders()
	if len(infos) != 1+len(mailbox.SpecialUses) {
		w.fail("alice's folders %+v", infos)
	}
	sb, err := ub.Authenticate("bob@ring.example", "bob-pw")
	if err != nil {
		w.fail("bob login: %v", err)
	}
	w.net.RunFor(5 * time.Second) // presence announcements settle

	// Recipients.
	rc := ua.Recipients()
	for addr, want := range map[string]smtpserver.RecipientClass{
		"bob@ring.example": smtpserver.RingUser, "BOB@Ring.Example": smtpserver.RingUser,
		"nobody@ring.example": smtpserver.NoSuchUser, "someone@elsewhere.example": smtpserver.Outside,
	} {
		if got, err := rc.Classify(context.Background(), addr); err != nil || got != want {
			w.fail("classify %s: %v %v, want %v", addr, got, err, want)
		}
	}

	// The same attachment in Sent and Drafts (different messages) is stored once.
	att := make([]byte, 2<<20)
	w.fill(att)
	m1 := attachmentMessage("first", "one", att)
	m2 := attachmentMessage("second", "two", att)
	sent := mustFolder(w, sa, "Sent")
	drafts := mustFolder(w, sa, "Drafts")
	if _, err := sent.Append(m1, []mailbox.Flag{mailbox.FlagSeen}, time.Time{}); err != nil {
		w.fail("append: %v", err)
	}
	before := len(w.liveKeys())
	if _, err := drafts.Append(m2, []mailbox.Flag{mailbox.FlagDraft}, time.Time{}); err != nil {
		w.fail("append: %v", err)
	}
	w.net.RunFor(5 * time.Second)
	grown := len(w.liveKeys()) - before
	t.Logf("seed %d: second copy of a %d-byte attachment added %d objects", seed, len(att), grown)
	attChunks := len(att)*4/3/(1<<20) + 1
	if grown >= attChunks {
		w.fail("second copy of the attachment added %d objects (the attachment alone is %d chunks)", grown, attChunks)
	}
	segOf := func(s mailbox.Store, name string) []segment {
		fo := mustFolder(w, s, name).(*folder)
		fo.s.mu.RLock()
		defer fo.s.mu.RUnlock()
		return fo.f.Msgs[0].Segments
	}
	big := func(segs []segment) *segment {
		for i := range segs {
			if segs[i].size() > 1<<20 {
				return &segs[i]
			}
		}
		return nil
	}
	if a, b := big(segOf(sa, "Sent")), big(segOf(sa, "Drafts")); a == nil || b == nil || a.Ref.Hash != b.Ref.Hash ||
		!slices.Equal(a.Ref.Chunks, b.Ref.Chunks) {
		w.fail("attachment pieces differ between the two folders")
	}

	// alice -> bob through the Submitter; bob's IDLE watch fires on filing.
	inboxB := mustFolder(w, sb, mailbox.Inbox)
	wake, stop := inboxB.Watch()
	defer stop()
	raw := append([]byte("Received: from client by n1; Sun, 29 Nov 2026 07:00:00 +0000\r\n"), m1...)
	env := smtpserver.Envelope{From: "alice@ring.example", To: []string{"bob@ring.example"}, User: "alice@ring.example"}
	if err := ua.Submitter().Submit(context.Background(), env, raw); err != nil {
		w.fail("submit: %v", err)
	}
	woke := false
	w.runUntil(time.Minute, func() bool {
		select {
		case <-wake:
			woke = true
		default:
		}
		return woke
	})
	if !woke {
		w.fail("bob's INBOX watch never fired")
	}
	l, _ := inboxB.List()
	if len(l) != 1 || l[0].Size != int64(len(raw)) {
		w.fail("bob's INBOX %+v", l)
	}
	if got := readAll(w, inboxB, l[0].UID); !bytes.Equal(got, raw) {
		w.fail("bob's copy is not byte-exact")
	}
	m, err := inboxB.Message(l[0].UID)
	if err != nil || m.Structure.Envelope.Subject != "first" {
		w.fail("bob's envelope %+v %v", m, err)
	}
	// Bob files it elsewhere: the record moves, the content stays where it is.
	archive := mustFolder(w, sb, "Archive")
	if _, err := inboxB.Move([]mailbox.UID{l[0].UID}, archive); err != nil {
		w.fail("move: %v", err)
	}
	if got := readAll(w, archive, 1); !bytes.Equal(got, raw) {
		w.fail("moved filed message differs")
	}

	// Unknown recipients: all refused is permanent; some refused is a 250 and a notice.
	env.To = []string{"nobody@ring.example"}
	if err := ua.Submitter().Submit(context.Background(), env, raw); !errors.Is(err, smtpserver.ErrRejected) {
		w.fail("submit to nobody: %v", err)
	}
	env.To = []string{"bob@ring.example", "nobody@ring.example"}
	if err := ua.Submitter().Submit(context.Background(), env, raw); err != nil {
		w.fail("submit to bob and nobody: %v", err)
	}
	inboxA := mustFolder(w, sa, mailbox.Inbox)
	la, _ := inboxA.List()
	if len(la) != 1 {
		w.fail("alice's bounce notices: %d", len(la))
	}
	w.runUntil(time.Minute, func() bool { l, _ := inboxB.List(); return len(l) == 1 })
	if l, _ := inboxB.List(); len(l) != 1 || l[0].UID != 2 {
		w.fail("bob's INBOX after the second message: %+v", l)
	}
	// Every chunk a folder references is live in the ring (what LiveKeys hands to Refresh).
	live := w.liveKeys()
	keys := ua.sessions["alice@ring.example"].store.LiveKeys()
	if len(keys) < attChunks {
		w.fail("alice's live keys: %d", len(keys))
	}
	for _, k := range append(keys, ub.sessions["bob@ring.example"].store.LiveKeys()...) {
		if !live[k] {
			w.fail("referenced chunk %s is in no store", k.ID.Short())
		}
	}
	if err := ua.Close(); err != nil {
		w.fail("close: %v", err)
	}
	ub.Close()
}
