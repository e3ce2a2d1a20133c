package past

import (
	"testing"

	"epost/internal/ids"
	"epost/internal/pastry"
)

func idAt(b byte) ids.ID {
	var id ids.ID
	id[0] = b
	return id
}

// In a ring smaller than the leaf set, both halves hold the same nodes and reach all the way
// round: every node is in range (the arc from the farthest left to the farthest right member
// is then a short stretch that leaves most members out, and their sync requests were refused).
func TestInLeafRangeSmallRing(t *testing.T) {
	h := func(b byte) pastry.Handle { return pastry.Handle{ID: idAt(b)} }
	n := &Node{cfg: Config{Replicas: 3}, self: h(0x10)}
	n.right = []pastry.Handle{h(0x30), h(0x50), h(0x90)} // clockwise, nearest first
	n.left = []pastry.Handle{h(0xD0), h(0x90), h(0x50)}  // counter-clockwise, nearest first
	for _, b := range []byte{0x30, 0x50, 0x70, 0x90, 0xD0, 0xF0} {
		if !n.inLeafRange(idAt(b)) {
			t.Errorf("%#x out of range in a 5-node ring", b)
		}
	}
	// A large ring: the halves do not meet, and a node beyond both ends is out of range.
	n.right = []pastry.Handle{h(0x11), h(0x12), h(0x13)}
	n.left = []pastry.Handle{h(0x0F), h(0x0E), h(0x0D)}
	if n.inLeafRange(idAt(0x80)) || !n.inLeafRange(idAt(0x12)) || !n.inLeafRange(idAt(0x0D)) {
		t.Error("large ring: range wrong")
	}
}
