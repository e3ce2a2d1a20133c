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
