package pastry

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"epost/internal/ids"
)

func randID(r *rand.Rand) ids.ID {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		binary.BigEndian.PutUint64(id[i:], r.Uint64())
	}
	return id
}

// truth computes the leaf set of self among all from a sorted ring.
func truth(all []ids.ID, self ids.ID, half int) []ids.ID {
	s := slices.Clone(all)
	slices.SortFunc(s, ids.Cmp)
	i, _ := slices.BinarySearchFunc(s, self, ids.Cmp)
	set := map[ids.ID]bool{}
	for k := 1; k <= half && k < len(s); k++ {
		set[s[(i+k)%len(s)]] = true
		set[s[(i-k+len(s))%len(s)]] = true
	}
	var out []ids.ID
	for id := range set {
		out = append(out, id)
	}
	slices.SortFunc(out, ids.Cmp)
	return out
}

func TestLeafSetMatchesTruth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   int
		l       int
		removes int
	}{
		{"tiny ring, both sides overlap", 5, 24, 0},
		{"exactly L+1 nodes", 25, 24, 0},
		{"large ring", 500, 24, 0},
		{"large ring after removals", 500, 24, 100},
		{"small leaf set", 100, 4, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := uint64(tc.nodes*31 + tc.l)
			r := rand.New(rand.NewPCG(seed, 1))
			all := make([]ids.ID, tc.nodes)
			for i := range all {
				all[i] = randID(r)
			}
			self := all[0]
			ls := NewLeafSet(self, tc.l)
			for _, i := range r.Perm(tc.nodes) {
				ls.Add(Handle{ID: all[i], Addr: "a"})
			}
			for k := 0; k < tc.removes; k++ {
				j := 1 + r.IntN(len(all)-1)
				ls.Remove(all[j])
				all = append(all[:j], all[j+1:]...)
				// Re-offer everyone, as gossip would.
				for _, id := range all {
					ls.Add(Handle{ID: id, Addr: "a"})
				}
			}
			var got []ids.ID
			for _, h := range ls.Members() {
				got = append(got, h.ID)
			}
			slices.SortFunc(got, ids.Cmp)
			if want := truth(all, self, tc.l/2); !slices.Equal(got, want) {
				t.Fatalf("seed %d: leaf set has %d members, want %d", seed, len(got), len(want))
			}
			if ls.Size() != len(got) {
				t.Fatalf("Size %d != members %d", ls.Size(), len(got))
			}
			// Sides are ordered nearest first.
			for i := 1; i < len(ls.Right()); i++ {
				if !ids.Less(ids.Clockwise(self, ls.Right()[i-1].ID), ids.Clockwise(self, ls.Right()[i].ID)) {
					t.Fatalf("right side out of order at %d", i)
				}
			}
			for i := 1; i < len(ls.Left()); i++ {
				if !ids.Less(ids.Sub(self, ls.Left()[i-1].ID), ids.Sub(self, ls.Left()[i].ID)) {
					t.Fatalf("left side out of order at %d", i)
				}
			}
		})
	}
}

func TestLeafSetInRange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	self := randID(r)
	ls := NewLeafSet(self, 4)
	if !ls.InRange(randID(r)) {
		t.Fatal("an incomplete leaf set must cover every key")
	}
	for i := 0; i < 200; i++ {
		ls.Add(Handle{ID: randID(r), Addr: "a"})
	}
	lo, hi := ls.Left()[1].ID, ls.Right()[1].ID
	if !ls.InRange(lo) || !ls.InRange(hi) || !ls.InRange(self) {
		t.Fatal("edges and self must be in range")
	}
	if ls.InRange(ids.Add(hi, ids.ID{31: 1})) && ids.Add(hi, ids.ID{31: 1}) != lo {
		t.Fatal("just past the right edge must be out of range")
	}
	if ls.WouldAdd(self) || ls.Add(Handle{ID: self, Addr: "a"}) {
		t.Fatal("self must never be a member")
	}
}

// TestLeafSetOverlapCoversTheRing: in a ring of L/2+1 to L nodes both sides are full and one
// node sits on both, so the leaf set covers the whole circle; from L+1 nodes on the sides are
// disjoint and the keys between the two far ends are out of range.
func TestLeafSetOverlapCoversTheRing(t *testing.T) {
	for _, tc := range []struct{ nodes, l int }{
		{3, 8}, {5, 8}, {8, 8}, {9, 8}, {10, 8},
		{12, 24}, {13, 24}, {20, 24}, {24, 24}, {25, 24}, {26, 24}, {40, 24},
	} {
		seed := uint64(tc.nodes*100 + tc.l)
		r := rand.New(rand.NewPCG(seed, 3))
		all := make([]ids.ID, tc.nodes)
		for i := range all {
			all[i] = randID(r)
		}
		ls := NewLeafSet(all[0], tc.l)
		for _, id := range all[1:] {
			ls.Add(Handle{ID: id, Addr: "a"})
		}
		others, half := tc.nodes-1, tc.l/2
		if got, want := ls.Overlaps(), others >= half && others < tc.l; got != want {
			t.Fatalf("seed %d, %d nodes, L=%d: Overlaps = %v, want %v", seed, tc.nodes, tc.l, got, want)
		}
		keys := []ids.ID{all[0], ids.Add(all[0], ids.ID{31: 1}), ids.Sub(all[0], ids.ID{31: 1})}
		for _, id := range all {
			keys = append(keys, id, ids.Add(id, ids.ID{31: 1}))
		}
		for range 200 {
			keys = append(keys, randID(r))
		}
		covers := others < tc.l
		for _, k := range keys {
			if covers && !ls.InRange(k) {
				t.Fatalf("seed %d, %d nodes, L=%d: the leaf set holds every node, yet %s is out of range", seed, tc.nodes, tc.l, k.Short())
			}
		}
		if !covers {
			hi := ls.Right()[len(ls.Right())-1].ID
			if past := ids.Add(hi, ids.ID{31: 1}); ls.InRange(past) {
				t.Fatalf("seed %d, %d nodes, L=%d: just past the right edge is in range", seed, tc.nodes, tc.l)
			}
		}
	}
}

func TestRoutingTableSlotsAndPNS(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	self := randID(r)
	rt := NewRoutingTable(self)
	for i := 0; i < 2000; i++ {
		rt.Consider(Handle{ID: randID(r), Addr: "a"}, 0)
	}
	rt.Each(func(h Handle, _ time_Duration) {
		row := ids.SharedPrefix(self, h.ID)
		got, _, ok := rt.Get(row, h.ID.Digit(row))
		if !ok || got.ID != h.ID {
			t.Fatalf("entry %s not in its slot", h)
		}
	})
	if rt.Rows() < 2 || rt.Len() < 20 {
		t.Fatalf("table too empty: rows=%d len=%d", rt.Rows(), rt.Len())
	}
	// Proximity: a candidate with a lower measured RTT replaces the occupant.
	occupant, _, _ := rt.Get(0, (self.Digit(0)+1)%16)
	cand := occupant.ID.WithDigit(63, (occupant.ID.Digit(63)+1)%16)
	if rt.Consider(Handle{ID: cand, Addr: "b"}, 0) {
		t.Fatal("unmeasured candidate must not displace an occupant")
	}
	rt.Consider(occupant, 50*ms)
	if rt.Consider(Handle{ID: cand, Addr: "b"}, 80*ms) {
		t.Fatal("slower candidate displaced a faster occupant")
	}
	if !rt.Consider(Handle{ID: cand, Addr: "b"}, 10*ms) {
		t.Fatal("faster candidate did not displace the occupant")
	}
	if row := rt.Remove(cand); row != 0 {
		t.Fatalf("Remove returned row %d", row)
	}
	if _, _, ok := rt.Get(0, cand.Digit(0)); ok {
		t.Fatal("slot not emptied")
	}
}
