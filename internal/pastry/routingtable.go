package pastry

import (
	"time"

	"epost/internal/ids"
)

// tableEntry is one routing-table slot: a node and its measured round-trip time (0: unknown).
type tableEntry struct {
	h       Handle
	rtt     time.Duration
	heard   time.Time // last time the node was heard from (zero: only heard of)
	probeAt time.Time // an outstanding liveness probe times out then (zero: none)
}

// RoutingTable is Pastry's prefix table with b = 4: row r holds, for each digit d, a node that
// shares the first r digits with this node and has d as digit r. Among candidates for a slot it
// keeps the one with the lowest measured RTT (proximity neighbour selection). Rows are
// allocated on first use: a ring of N nodes fills about log16(N) of the 64.
type RoutingTable struct {
	self  ids.ID
	rows  [ids.Digits]*[ids.Base]tableEntry
	count int
}

// NewRoutingTable makes an empty table for self.
func NewRoutingTable(self ids.ID) *RoutingTable { return &RoutingTable{self: self} }

func (t *RoutingTable) slot(id ids.ID) (int, int) {
	r := ids.SharedPrefix(t.self, id)
	if r >= ids.Digits {
		return -1, -1
	}
	return r, id.Digit(r)
}

// Get returns the entry at (row, col).
func (t *RoutingTable) Get(row, col int) (Handle, time.Duration, bool) {
	rw := t.rows[row]
	if rw == nil || rw[col].h.ID.IsZero() {
		return Handle{}, 0, false
	}
	return rw[col].h, rw[col].rtt, true
}

// Consider offers h with measured rtt (0 if unknown) for its slot. An empty slot takes it; an
// occupied slot takes it only when its RTT is known and lower than the occupant's (or the
// occupant's is unknown). It reports whether the table changed.
func (t *RoutingTable) Consider(h Handle, rtt time.Duration) bool {
	r, c := t.slot(h.ID)
	if r < 0 || h.ID.IsZero() {
		return false
	}
	rw := t.rows[r]
	if rw == nil {
		rw = new([ids.Base]tableEntry)
		t.rows[r] = rw
	}
	e := &rw[c]
	switch {
	case e.h.ID.IsZero():
		t.count++
		*e = tableEntry{h: h, rtt: rtt}
		return true
	case e.h.ID == h.ID:
		if rtt > 0 {
			e.rtt = rtt
		}
		e.h.Addr = h.Addr
		return false
	case rtt > 0 && (e.rtt == 0 || rtt < e.rtt):
		*e = tableEntry{h: h, rtt: rtt}
		return true
	}
	return false
}

// Occupied reports whether id's slot holds another node with a known RTT.
func (t *RoutingTable) SlotOccupant(id ids.ID) (Handle, time.Duration, bool) {
	r, c := t.slot(id)
	if r < 0 {
		return Handle{}, 0, false
	}
	return t.Get(r, c)
}

// Remove empties id's slot if id holds it; it returns the slot's row (-1 if not present).
func (t *RoutingTable) Remove(id ids.ID) int {
	r, c := t.slot(id)
	if r < 0 || t.rows[r] == nil || t.rows[r][c].h.ID != id {
		return -1
	}
	t.rows[r][c] = tableEntry{}
	t.count--
	return r
}

// entry returns id's slot if id holds it.
func (t *RoutingTable) entry(id ids.ID) *tableEntry {
	r, c := t.slot(id)
	if r < 0 || t.rows[r] == nil || t.rows[r][c].h.ID != id {
		return nil
	}
	return &t.rows[r][c]
}

// eachEntry calls f with a pointer to every filled slot, in table order.
func (t *RoutingTable) eachEntry(f func(e *tableEntry)) {
	for _, rw := range t.rows {
		if rw == nil {
			continue
		}
		for i := range rw {
			if !rw[i].h.ID.IsZero() {
				f(&rw[i])
			}
		}
	}
}

// RTT returns the measured RTT to id if id is in the table.
func (t *RoutingTable) RTT(id ids.ID) time.Duration {
	if h, rtt, ok := t.SlotOccupant(id); ok && h.ID == id {
		return rtt
	}
	return 0
}

// Row returns the non-empty entries of row r.
func (t *RoutingTable) Row(r int) []Handle {
	rw := t.rows[r]
	if rw == nil {
		return nil
	}
	var out []Handle
	for _, e := range rw {
		if !e.h.ID.IsZero() {
			out = append(out, e.h)
		}
	}
	return out
}

// Rows returns the number of rows in use (index of the last non-empty row + 1).
func (t *RoutingTable) Rows() int {
	for r := ids.Digits - 1; r >= 0; r-- {
		if t.rows[r] != nil {
			for _, e := range t.rows[r] {
				if !e.h.ID.IsZero() {
					return r + 1
				}
			}
		}
	}
	return 0
}

// Len is the number of filled slots.
func (t *RoutingTable) Len() int { return t.count }

// Each calls f for every entry.
func (t *RoutingTable) Each(f func(h Handle, rtt time.Duration)) {
	for _, rw := range t.rows {
		if rw == nil {
			continue
		}
		for _, e := range rw {
			if !e.h.ID.IsZero() {
				f(e.h, e.rtt)
			}
		}
	}
}
