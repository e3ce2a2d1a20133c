package sim

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/post"
)

// newRingWorld is a world whose ring has a name (and id) of its own, with hook set on its
// POST configuration.
func newRingWorld(t *testing.T, seed uint64, nodes int, name string, set func(*MailConfig)) *world {
	t.Helper()
	cfg := MailConfig{Nodes: nodes, Users: 2, Seed: seed, RingName: name}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if set != nil {
		set(&cfg)
	}
	return newWorldCfg(t, seed, nodes, cfg)
}

func (w *world) record(su *simUser) *identity.Record {
	rec, err := identity.DecodeRecord(su.rec.Body)
	if err != nil {
		w.fail("%v", err)
	}
	return rec
}

func nid(r *rand.Rand) post.NotificationID {
	var id post.NotificationID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	return id
}

// Mail between two rings at the POST layer, the gateways' hand-off done by the test: a user
// of ring A seals a message for a user of ring B (parts keyed in B, sealed with A's secret),
// a node of B stores and pushes it (DeliverRemote), and the recipient files it once, verified
// under A's CA (ForeignSender), and reads the parts without B's secret. Delivering the same
// bundle again files nothing new; a sender certified by a third ring's CA for an address of
// A's domain is refused; an unknown recipient is reported as such.
func TestMailBetweenRings(t *testing.T) {
	const seed = 51
	a := newRingWorld(t, seed, 12, "ring-a", nil)
	c := newRingWorld(t, seed+2, 8, "ring-c", nil)
	trusts := map[ids.RingID]*post.RingTrust{
		a.run.ringID: {Ring: a.run.ringID, CA: a.run.caPub},
		c.run.ringID: {Ring: c.run.ringID, CA: c.run.caPub},
	}
	// The directory, as the daemon's will answer: a.example belongs to ring A (DNS), and
	// only A's CA speaks for it.
	domainRing := map[string]ids.RingID{"a.example": a.run.ringID, "c.example": c.run.ringID}
	asked, flaky := 0, 2 // the directory cannot tell the first two times (DNS trouble)
	b := newRingWorld(t, seed+1, 12, "ring-b", func(cfg *MailConfig) {
		cfg.Post.ForeignSender = func(from string, ring ids.RingID, cb func(*post.RingTrust, error)) {
			asked++
			if flaky > 0 {
				flaky--
				cb(nil, errors.New("the resolver did not answer"))
				return
			}
			_, dom, _ := strings.Cut(from, "@")
			if got, ok := domainRing[dom]; !ok || got != ring {
				cb(nil, fmt.Errorf("%w: domain %s does not belong to ring %s", post.ErrForeignRefused, dom, ring.Short()))
				return
			}
			cb(trusts[ring], nil)
		}
	})
	alice := a.addUser(0, "alice@a.example", 1)
	mallory := c.addUser(0, "alice@a.example", 7) // ring C's CA certifies an address of A's domain
	bob := b.addUser(3, "bob@b.example", 2)
	gw := b.run.nodes[5] // the gateway of B that took the hand-off

	r := rand.New(rand.NewPCG(seed, 9))
	parts := [][]byte{[]byte("Subject: across rings\r\n\r\n"), make([]byte, 40000)}
	fill(r, parts[1])
	id := nid(r)
	bundle, err := alice.u.SealRemote(b.run.ringID, []*identity.Record{b.record(bob)}, []post.NotificationID{id}, parts)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle crosses the global ring in its wire form.
	bundle, err = post.DecodeRemoteBundle(bundle.Encode())
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range bundle.Chunks {
		if bytes.Contains(ch, parts[1][:64]) || bytes.Contains(ch, []byte("across rings")) {
			b.fail("a chunk carries plaintext")
		}
	}
	deliver := func(bd *post.RemoteBundle) []post.Result {
		var res []post.Result
		gw.post.DeliverRemote(bd, func(rs []post.Result) { res = rs })
		b.wait(time.Minute, func() bool { return res != nil })
		return res
	}
	if res := deliver(bundle); len(res) != 1 || res[0].Status != post.Accepted {
		b.fail("delivery in ring B: %+v", res)
	}
	b.wait(time.Minute, func() bool { return len(b.inbox(bob)) == 1 })
	inbox := b.inbox(bob)
	if len(inbox) != 1 {
		b.fail("bob's INBOX has %d entries, want 1", len(inbox))
	}
	f, err := post.DecodeFiled(inbox[0])
	if err != nil || !f.Foreign || f.From != "alice@a.example" || f.ID != id || len(f.Parts) != 2 {
		b.fail("filed: %+v %v", f, err)
	}
	for i, ref := range f.Parts {
		var got []byte
		var gerr error
		done := false
		bob.u.GetForeign(ref, func(d []byte, e error) { got, gerr, done = d, e, true })
		b.wait(time.Minute, func() bool { return done })
		if gerr != nil || !bytes.Equal(got, parts[i]) {
			b.fail("part %d read back: %v", i, gerr)
		}
		// With B's own secret the parts do not verify: they are not B's.
		done = false
		bob.u.Get(ref, func(d []byte, e error) { gerr, done = e, true })
		b.wait(time.Minute, func() bool { return done })
		if gerr == nil {
			b.fail("part %d of a foreign message read with ring B's secret", i)
		}
	}

	// The same bundle again (a gateway retried after a crash): nothing new is filed.
	if res := deliver(bundle); len(res) != 1 || res[0].Status != post.Accepted {
		b.fail("second delivery: %+v", res)
	}
	b.run.ring.net.RunFor(30 * time.Second)
	if n := len(b.inbox(bob)); n != 1 {
		b.fail("after a repeated hand-off bob's INBOX has %d entries, want 1", n)
	}

	// Ring C's "alice@a.example": sealed and stored like any message, refused by bob's node.
	rejected := b.run.nodes[3].post.Stats().Rejected
	forged, err := mallory.u.SealRemote(b.run.ringID, []*identity.Record{b.record(bob)}, []post.NotificationID{nid(r)}, [][]byte{[]byte("Subject: trust me\r\n\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if res := deliver(forged); len(res) != 1 || res[0].Status != post.Accepted {
		b.fail("forged delivery: %+v", res)
	}
	b.run.ring.net.RunFor(30 * time.Second)
	if n := len(b.inbox(bob)); n != 1 || b.run.nodes[3].post.Stats().Rejected == rejected {
		b.fail("the forged sender: bob's INBOX has %d entries (want 1), rejections %d -> %d", n, rejected, b.run.nodes[3].post.Stats().Rejected)
	}

	// A recipient ring B does not know.
	ghostKeys, _ := identity.NewKeys(rand.NewChaCha8([32]byte{99}))
	ghost := &identity.Record{Ring: b.run.ringID, Address: "ghost@b.example", Keys: ghostKeys.Public()}
	unknown, err := alice.u.SealRemote(b.run.ringID, []*identity.Record{ghost}, []post.NotificationID{nid(r)}, [][]byte{[]byte("hello?")})
	if err != nil {
		t.Fatal(err)
	}
	if res := deliver(unknown); len(res) != 1 || res[0].Status != post.UnknownRecipient {
		b.fail("unknown recipient: %+v", res)
	}
	// A bundle for another ring is not stored here.
	if res := deliver(&post.RemoteBundle{Dest: a.run.ringID, Notes: bundle.Notes}); len(res) != 1 || res[0].Status != post.Failed {
		b.fail("bundle for ring A delivered in B: %+v", res)
	}
	if asked < 4 || flaky != 0 {
		b.fail("the directory was asked %d times (the first two answers temporary failures)", asked)
	}
}
