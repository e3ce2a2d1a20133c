package sim

import (
	"testing"
	"time"

	"epost/internal/pastry"
)

func TestDebugSmall(t *testing.T) {
	r := newSimRing(1, pastry.Config{LeafSetSize: 24}, 250*time.Millisecond)
	for i := 0; i < 60; i++ {
		r.net.RunFor(20 * time.Millisecond)
		r.addNode()
	}
	r.net.RunFor(10 * time.Second)
	for _, sn := range r.nodes {
		if sn.ready {
			continue
		}
		sn.drv.With(func(n *pastry.Node) {
			t.Logf("node %d %s phase=%d await=%v ready=%v leaf=%d table=%d stats=%+v", sn.idx, sn.ep.ID().Short(), n.Phase(), n.Awaiting(), n.Ready(), n.LeafSet().Size(), n.Table().Len(), n.Stats())
		})
	}
	t.Logf("net %+v", r.net.Stats())
}
