package pastry

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestFoundAlone: a node whose join never completes (its bootstrap is silent) becomes ready on
// its own when told to, once, and keeps its bootstrap list for the heal; a ready node is left
// as it is.
func TestFoundAlone(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 1))
	n := NewNode(testConfig(), Handle{ID: randID(r), Addr: "self:1"}, r, nil)
	now := time.Unix(1_800_000_000, 0)
	n.Start(now, []string{"silent:1"})
	n.TakeEvents()
	for i := 0; i < 20; i++ {
		now = now.Add(time.Second)
		n.Tick(now)
	}
	if n.Ready() {
		t.Fatal("ready without an answer from its bootstrap")
	}
	if !n.FoundAlone(now) || !n.Ready() {
		t.Fatal("FoundAlone did not make the joining node ready")
	}
	ready := 0
	for _, e := range n.TakeEvents() {
		if e.Kind == EventReady {
			ready++
		}
	}
	if ready != 1 {
		t.Fatalf("%d ready events, want 1", ready)
	}
	if n.FoundAlone(now) {
		t.Fatal("FoundAlone changed a ready node")
	}
	if len(n.bootstrap) != 1 {
		t.Fatalf("bootstrap list %v lost: the heal needs it", n.bootstrap)
	}
}
