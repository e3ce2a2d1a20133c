package past

import (
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// A replica's "no copy here" is unsettled while a node that would be among the key's
// replicas is missing: one that left the leaf set within LossMemory, or one known from before
// the start that has not come back. A loss far from the key, or an old one, settles nothing.
func TestNotFoundUnsettledByMissingReplicas(t *testing.T) {
	h := func(b byte) pastry.Handle { return pastry.Handle{ID: idAt(b), Addr: "x"} }
	t0 := time.Unix(1_000_000, 0)
	cfg := Config{Replicas: 3, LossMemory: time.Hour, Known: []ids.ID{idAt(0x14)}}
	n := NewNode(cfg, h(0x10), NewMemStore(func() time.Time { return t0 }, 0), rand.New(rand.NewPCG(1, 1)))
	right := []pastry.Handle{h(0x20), h(0x30), h(0x40), h(0x50)}
	left := []pastry.Handle{h(0x08), h(0x04), h(0xF0), h(0xE0)}
	near, far := idAt(0x12), idAt(0x45)

	// Started: 0x14, known from before, is not back. It would be a replica of near.
	n.SetLeafSet(t0, left, right)
	if !n.unsettled(near) {
		t.Error("a replica known from before the start is missing: want unsettled")
	}
	if n.unsettled(far) {
		t.Error("the missing node is far from the key: want settled")
	}
	// It is back: settled.
	n.SetLeafSet(t0.Add(time.Second), left, append([]pastry.Handle{h(0x14)}, right...))
	if n.unsettled(near) {
		t.Error("every node known from before is back: want settled")
	}
	// 0x20 vanishes (crash, partition): keys it would replicate are unsettled, for LossMemory.
	n.SetLeafSet(t0.Add(2*time.Second), left, append([]pastry.Handle{h(0x14)}, right[1:]...))
	near = idAt(0x1C)
	if !n.unsettled(near) {
		t.Error("a replica of the key vanished a moment ago: want unsettled")
	}
	n.now = t0.Add(2*time.Second + time.Hour)
	if n.unsettled(near) {
		t.Error("the loss is older than LossMemory: want settled")
	}
	// A new leaf set forgets the old loss for good.
	n.SetLeafSet(t0.Add(3*time.Second+time.Hour), left, append([]pastry.Handle{h(0x14)}, right[1:]...))
	if len(n.lost) != 0 {
		t.Errorf("losses older than LossMemory kept: %v", n.lost)
	}
}
