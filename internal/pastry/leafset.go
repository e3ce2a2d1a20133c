package pastry

import (
	"time"

	"epost/internal/ids"
)

// Handle names a node: its id and the transport address it listens on.
type Handle struct {
	ID   ids.ID
	Addr string
}

func (h Handle) String() string { return h.ID.Short() + "@" + h.Addr }

// LeafSet holds the L/2 nodes numerically closest to this node on each side of the circle.
// right is ordered by clockwise distance from self (nearest first), left by counter-clockwise
// distance. In a ring of fewer than L+1 nodes one node can sit on both sides.
type LeafSet struct {
	self  ids.ID
	half  int
	left  []Handle
	right []Handle
	ldist []ids.ID // ldist[i] is the counter-clockwise distance from self to left[i]
	rdist []ids.ID // rdist[i] is the clockwise distance from self to right[i]
}

// NewLeafSet makes an empty leaf set of size l (l/2 per side).
func NewLeafSet(self ids.ID, l int) *LeafSet {
	h := max(l/2, 1)
	return &LeafSet{self: self, half: h, left: make([]Handle, 0, h), right: make([]Handle, 0, h)}
}

// Left returns the counter-clockwise side, nearest first. The slice must not be modified.
func (l *LeafSet) Left() []Handle { return l.left }

// Right returns the clockwise side, nearest first. The slice must not be modified.
func (l *LeafSet) Right() []Handle { return l.right }

// insertSide puts h into side ordered by dist(self, x), keeping at most half entries. dists
// caches each member's distance so that the common case, a candidate farther than the whole
// side, costs one subtraction and one comparison.
func (l *LeafSet) insertSide(side []Handle, dists []ids.ID, h Handle, dist func(a, b ids.ID) ids.ID) ([]Handle, []ids.ID, bool) {
	d := dist(l.self, h.ID)
	if len(side) >= l.half && !ids.Less(d, dists[len(dists)-1]) {
		if side[len(side)-1].ID == h.ID {
			side[len(side)-1].Addr = h.Addr
		}
		return side, dists, false
	}
	pos := len(side)
	for i := range side {
		if side[i].ID == h.ID {
			side[i].Addr = h.Addr
			return side, dists, false
		}
		if pos == len(side) && ids.Less(d, dists[i]) {
			pos = i
		}
	}
	if pos >= l.half {
		return side, dists, false
	}
	if len(side) < l.half {
		side = append(side, Handle{})
		dists = append(dists, ids.ID{})
	}
	copy(side[pos+1:], side[pos:len(side)-1])
	copy(dists[pos+1:], dists[pos:len(dists)-1])
	side[pos] = h
	dists[pos] = d
	return side, dists, true
}

func ccw(a, b ids.ID) ids.ID { return ids.Sub(a, b) }

// Add inserts h where it belongs; it reports whether the set changed.
func (l *LeafSet) Add(h Handle) bool {
	if h.ID == l.self {
		return false
	}
	var a, b bool
	l.right, l.rdist, a = l.insertSide(l.right, l.rdist, h, ids.Clockwise)
	l.left, l.ldist, b = l.insertSide(l.left, l.ldist, h, ccw)
	return a || b
}

// WouldAdd reports whether Add(h) would change the set, without changing it.
func (l *LeafSet) WouldAdd(id ids.ID) bool {
	if id == l.self || l.Contains(id) {
		return false
	}
	if len(l.right) < l.half || len(l.left) < l.half {
		return true
	}
	return ids.Less(ids.Clockwise(l.self, id), l.rdist[len(l.rdist)-1]) ||
		ids.Less(ccw(l.self, id), l.ldist[len(l.ldist)-1])
}

func removeFrom(side []Handle, dists []ids.ID, id ids.ID) ([]Handle, []ids.ID, bool) {
	for i, x := range side {
		if x.ID == id {
			copy(side[i:], side[i+1:])
			copy(dists[i:], dists[i+1:])
			return side[:len(side)-1], dists[:len(dists)-1], true
		}
	}
	return side, dists, false
}

// Remove drops id from both sides; it reports whether the set changed.
func (l *LeafSet) Remove(id ids.ID) bool {
	var a, b bool
	l.left, l.ldist, a = removeFrom(l.left, l.ldist, id)
	l.right, l.rdist, b = removeFrom(l.right, l.rdist, id)
	return a || b
}

// Contains reports whether id is a member.
func (l *LeafSet) Contains(id ids.ID) bool {
	for _, x := range l.left {
		if x.ID == id {
			return true
		}
	}
	for _, x := range l.right {
		if x.ID == id {
			return true
		}
	}
	return false
}

// Get returns the member with this id.
func (l *LeafSet) Get(id ids.ID) (Handle, bool) {
	for _, x := range l.right {
		if x.ID == id {
			return x, true
		}
	}
	for _, x := range l.left {
		if x.ID == id {
			return x, true
		}
	}
	return Handle{}, false
}

// Complete reports whether both sides are full; an incomplete leaf set means (once it has
// stabilised) that it holds every node of the ring.
func (l *LeafSet) Complete() bool { return len(l.left) >= l.half && len(l.right) >= l.half }

// InRange reports whether key falls within the arc the leaf set covers, so that the node
// numerically closest to key is this node or a member.
//
// The covered arc runs clockwise from the farthest left member lo, through self, to the
// farthest right member hi. When the two halves overlap (a ring of L nodes or fewer: both
// sides are full, yet one node sits on both) the arcs reach past each other and cover the
// whole circle; every node is a member and every key is in range. Measuring lo to hi as a
// plain clockwise arc would then give the short stretch between the two halves' far ends,
// which does not even hold self: routing then mixed leaf-set and table hops, delivered to the
// wrong node and let two nodes pass a message back and forth for ever.
func (l *LeafSet) InRange(key ids.ID) bool {
	if !l.Complete() || l.Overlaps() {
		return true
	}
	lo, hi := l.left[len(l.left)-1].ID, l.right[len(l.right)-1].ID
	return key == lo || ids.Between(lo, key, hi)
}

// Overlaps reports whether both sides are full and together go all the way round the circle:
// the clockwise distance to the farthest right member is at least the clockwise distance to
// the farthest left member (equal when one node is farthest on both sides).
func (l *LeafSet) Overlaps() bool {
	if !l.Complete() {
		return false
	}
	toHi := l.rdist[len(l.rdist)-1]
	toLo := ids.Sub(ids.Zero, l.ldist[len(l.ldist)-1]) // self is never a member: ldist > 0
	return !ids.Less(toHi, toLo)
}

// Members returns every member once (nodes on both sides appear once), right side first.
func (l *LeafSet) Members() []Handle {
	out := make([]Handle, 0, len(l.left)+len(l.right))
	out = append(out, l.right...)
	for _, x := range l.left {
		dup := false
		for _, y := range l.right {
			if y.ID == x.ID {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, x)
		}
	}
	return out
}

// Size is the number of distinct members.
func (l *LeafSet) Size() int {
	n := len(l.right)
	for _, x := range l.left {
		if !containsID(l.right, x.ID) {
			n++
		}
	}
	return n
}

func containsID(hs []Handle, id ids.ID) bool {
	for _, h := range hs {
		if h.ID == id {
			return true
		}
	}
	return false
}

// peer is what a node knows about the liveness of one other node it watches (leaf-set
// members, and any node it suspects).
type peer struct {
	h          Handle
	lastHeard  time.Time
	rtt        time.Duration // last measured round-trip time, 0 if unknown
	probeSeq   uint64        // outstanding probe, 0 if none
	probeAt    time.Time     // when the outstanding probe times out
	tries      int           // probes sent without answer
	suspected  bool
	indirect   int    // indirect probes outstanding
	leafVerAck uint64 // leaf-set version last sent to this peer
}
