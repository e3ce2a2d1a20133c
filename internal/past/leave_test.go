package past

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestHandoverOnLeave: a node that leaves cleanly offers its neighbours what they take over,
// and they fetch it from it before it goes, well before their own maintenance (which could
// not help here: the leaver holds the only copy of some objects, as after a replica missed
// writes). The leaver fetches nothing itself.
func TestHandoverOnLeave(t *testing.T) {
	const seed = 17
	cfg := testConfig()
	cfg.MaintenanceDelay = 10 * time.Second // the neighbours' own rounds come too late to count
	r := newTestRing(t, seed, 12, cfg)
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	x := r.nodes[4]
	var mine []Object
	for len(mine) < 20 {
		o := NewContent(r.ring, randomPayload(rng, 500+rng.IntN(2000)), lease)
		if res := r.insert(r.nodes[rng.IntN(len(r.nodes))], o); res.Err != nil {
			r.fail("insert: %v", res.Err)
		}
		for _, tn := range r.closest(o.Key.ID, 3) {
			if tn == x {
				mine = append(mine, o)
			}
		}
	}
	r.net.RunFor(10 * time.Second)
	// Half of x's objects exist only on x.
	for i, o := range mine {
		if i%2 == 1 {
			continue
		}
		for _, tn := range r.nodes {
			if tn != x && tn.st.Has(o.Key) {
				if err := tn.st.Delete(o.Key); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	held := x.st.Len()
	x.pd.Leave()
	offered := x.drv.Leave()
	if offered < len(mine) {
		r.fail("offered %d keys, want at least the %d objects x is a replica of", offered, len(mine))
	}
	x.alive = false // the truth: x is no longer among the closest nodes
	r.net.RunFor(2 * time.Second)
	for _, o := range mine {
		for _, tn := range r.closest(o.Key.ID, 3) {
			if !tn.st.Has(o.Key) {
				r.fail("object %s missing on replica %s two seconds after x left", o.Key, tn.ep.ID().Short())
			}
		}
	}
	if x.st.Len() != held {
		r.fail("the node that left stored objects (%d, had %d)", x.st.Len(), held)
	}
	r.crash(x)
}

// A neighbour slow to hear of the leave (its leaf set still shows the leaver when the offer
// arrives) still takes over what it will be a replica of, and every neighbour answers every
// offer, so the leaver knows when the hand-over is done.
func TestHandoverBeforeTheLeafSetShowsTheLeave(t *testing.T) {
	const seed = 18
	cfg := testConfig()
	cfg.MaintenanceDelay = 10 * time.Second
	r := newTestRing(t, seed, 12, cfg)
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	x := r.nodes[5]
	var mine []Object
	for len(mine) < 20 {
		o := NewContent(r.ring, randomPayload(rng, 500+rng.IntN(2000)), lease)
		if res := r.insert(r.nodes[rng.IntN(len(r.nodes))], o); res.Err != nil {
			r.fail("insert: %v", res.Err)
		}
		for _, tn := range r.closest(o.Key.ID, 3) {
			if tn == x {
				mine = append(mine, o)
			}
		}
	}
	r.net.RunFor(10 * time.Second)
	for _, o := range mine { // x holds the only copy of each
		for _, tn := range r.nodes {
			if tn != x && tn.st.Has(o.Key) {
				if err := tn.st.Delete(o.Key); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// PAST's hand-over alone: the overlay has not told anyone yet.
	if offered := x.drv.Leave(); offered < len(mine) {
		r.fail("offered %d keys, want at least %d", offered, len(mine))
	}
	pending := func() (c int) { x.drv.With(func(n *Node) { c = n.HandoverPending() }); return c }
	if pending() == 0 {
		r.fail("no offer waits for an answer")
	}
	r.net.RunFor(2 * time.Second)
	if c := pending(); c != 0 {
		r.fail("%d offers unanswered two seconds after the leave", c)
	}
	x.alive = false
	for _, o := range mine {
		for _, tn := range r.closest(o.Key.ID, 3) {
			if !tn.st.Has(o.Key) {
				r.fail("object %s missing on its replica %s after the hand-over", o.Key, tn.ep.ID().Short())
			}
		}
	}
}

// Neighbours that lack nothing answer too (an empty fetch): without that the leaver could not
// tell them from neighbours still reading its offers.
func TestHandoverAnsweredWhenNothingIsWanted(t *testing.T) {
	const seed = 19
	cfg := testConfig()
	cfg.MaintenanceDelay = 10 * time.Second
	r := newTestRing(t, seed, 12, cfg)
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	x := r.nodes[6]
	held := 0
	for held < 10 {
		o := NewContent(r.ring, randomPayload(rng, 500), lease)
		if res := r.insert(r.nodes[rng.IntN(len(r.nodes))], o); res.Err != nil {
			r.fail("insert: %v", res.Err)
		}
		if x.st.Has(o.Key) {
			held++
		}
	}
	r.net.RunFor(10 * time.Second) // every replica holds every object
	// Some neighbour is offered only keys it holds already.
	x.pd.Leave()
	if offered := x.drv.Leave(); offered == 0 {
		r.fail("nothing offered")
	}
	pending := func() (c int) { x.drv.With(func(n *Node) { c = n.HandoverPending() }); return c }
	r.net.RunFor(2 * time.Second)
	if c := pending(); c != 0 {
		r.fail("%d offers unanswered by neighbours that lack nothing", c)
	}
}
