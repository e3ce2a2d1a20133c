package post

import (
	"bytes"
	"fmt"
	"slices"

	"epost/internal/content"
	"epost/internal/ids"
	"epost/internal/past"
)

// Opening a log, and what the single writer does when the ring holds something it did not
// expect (DESIGN.md layer 8: the writer never goes backwards).
//
// A log is built from candidate heads: the versions the head's replica set holds (PAST reads
// a mutable object from its whole replica set), the node's own record of the last head it
// wrote (HeadRecords, durable before any write of that head is acknowledged) and, while the log is open, the head
// the node last committed. The newest candidate (highest sequence number) is the base. Every
// other candidate either is an ancestor of the base (the base's chain holds its newest entry
// at its index: nothing to do) or forked from it: then the entries it has beyond the common
// prefix are appended again after the base's, skipping filed notifications the base holds
// already, so that no entry of either side is lost. Forks are logged loudly and counted.
//
// The next head is written above every sequence number seen, so it never loses to a stale
// or forked version at a replica; when the ring held less than the record (its replicas lost
// the newest head, or only stale ones answered), the base is written back at once
// (republish).
//
// Reopening restores the base's inline tail: entries the previous writer had not yet stored
// on their own are stored now, and carried inline by every head until they are.

// headCand is one candidate head of a log.
type headCand struct {
	seq     uint64
	payload []byte
	from    string // "ring", "record", "local": for logs
}

// loadedLog is a log rebuilt from its candidates.
type loadedLog struct {
	logKey  [32]byte
	wrapped []byte
	st      headState
	seq     uint64 // the base's sequence number
	maxSeq  uint64 // highest sequence number among the candidates
	payload []byte
	from    string
	bodies  [][]byte
	locs    []ids.ID
	extra   [][]byte // entries of forked candidates to append again
	forks   int
	missing uint64    // entries that could not be found (allowGaps)
	rewound bool      // INBOX shows that the node's disk went back in time (diskWentBack)
	segs    []snapSeg // the base's snapshot segments, oldest first
}

// loadLog builds l's state from cands (at least one). allowGaps opens the log even when an
// entry is missing from PAST and Glacier (see replay).
func (u *User) loadLog(l *logState, cands []headCand, allowGaps bool, cb func(*loadedLog, error)) {
	slices.SortStableFunc(cands, func(a, b headCand) int {
		if a.seq != b.seq {
			if a.seq > b.seq {
				return -1
			}
			return 1
		}
		ha, hb := sum(a.payload), sum(b.payload)
		return -bytes.Compare(ha[:], hb[:]) // the same tie-break as PAST's readers
	})
	base := cands[0]
	key, wrapped, st, err := decodeHead(u.keys, l.key, base.payload)
	if err != nil {
		cb(nil, fmt.Errorf("head (%s, seq %d): %w", base.from, base.seq, err))
		return
	}
	ll := &loadedLog{logKey: key, wrapped: wrapped, st: *st, seq: base.seq, payload: base.payload, from: base.from}
	for _, c := range cands {
		ll.maxSeq = max(ll.maxSeq, c.seq)
	}
	u.replay(&key, l.key, st, allowGaps, &ll.segs, func(bodies [][]byte, locs []ids.ID, missing uint64, err error) {
		if err != nil {
			cb(nil, err)
			return
		}
		ll.bodies, ll.locs, ll.missing = bodies, locs, missing
		u.mergeForks(l, ll, cands[1:], cb)
	})
}

// mergeForks checks the other candidates against the base, one after another, and collects
// the entries of those that forked.
func (u *User) mergeForks(l *logState, ll *loadedLog, rest []headCand, cb func(*loadedLog, error)) {
	for len(rest) > 0 && bytes.Equal(rest[0].payload, ll.payload) {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		cb(ll, nil)
		return
	}
	c := rest[0]
	key, _, st, err := decodeHead(u.keys, l.key, c.payload)
	if err != nil {
		u.n.cfg.Log.Warn("post: skipping an undecodable head candidate", "user", u.addr, "log", l.name, "from", c.from, "seq", c.seq, "err", err)
		u.mergeForks(l, ll, rest[1:], cb)
		return
	}
	if st.Count == 0 || (st.Count <= uint64(len(ll.locs)) && ll.locs[st.Count-1] == st.Newest) {
		u.mergeForks(l, ll, rest[1:], cb) // an ancestor of the base
		return
	}
	u.replay(&key, l.key, st, true, nil, func(bodies [][]byte, locs []ids.ID, _ uint64, err error) {
		if err != nil {
			u.n.cfg.Log.Error("post: FORK: cannot read a forked head's entries; they are not merged", "user", u.addr, "log", l.name, "from", c.from, "seq", c.seq, "err", err)
			u.mergeForks(l, ll, rest[1:], cb)
			return
		}
		p := commonPrefix(ll.bodies, ll.locs, bodies, locs)
		have := map[NotificationID]bool{}
		if l.name == InboxLog {
			for _, b := range ll.bodies {
				if f, err := DecodeFiled(b); err == nil {
					have[f.ID] = true
				}
			}
		}
		added := 0
		for _, b := range bodies[p:] {
			if b == nil || slices.ContainsFunc(ll.bodies[p:], func(x []byte) bool { return bytes.Equal(x, b) }) ||
				slices.ContainsFunc(ll.extra, func(x []byte) bool { return bytes.Equal(x, b) }) {
				continue
			}
			if f, err := DecodeFiled(b); l.name == InboxLog && err == nil && have[f.ID] {
				continue
			}
			ll.extra = append(ll.extra, b)
			added++
		}
		ll.forks++
		u.n.mu.Lock()
		u.n.stats.Forks++
		u.n.mu.Unlock()
		u.n.cfg.Log.Error("post: FORK in a log: two heads do not extend one another; the entries of the other side are appended again",
			"user", u.addr, "log", l.name, "base_from", ll.from, "base_seq", ll.seq, "base_count", len(ll.bodies),
			"other_from", c.from, "other_seq", c.seq, "other_count", len(bodies), "common", p, "appended", added)
		u.mergeForks(l, ll, rest[1:], cb)
	})
}

// commonPrefix is the number of leading entries two replays share: the same location, or
// (inside a snapshot, where locations are not kept) the same body.
func commonPrefix(ab [][]byte, al []ids.ID, bb [][]byte, bl []ids.ID) int {
	n := min(len(ab), len(bb))
	for i := 0; i < n; i++ {
		switch {
		case !al[i].IsZero() && !bl[i].IsZero():
			if al[i] != bl[i] {
				return i
			}
		case !bytes.Equal(ab[i], bb[i]):
			return i
		}
	}
	return n
}

// replay rebuilds all bodies of a log from its head state, decrypting with key: inline
// entries, then the chain back to the snapshot (a segment at a time where the head names
// one), then the snapshot. Every entry's index and
// link is checked. An entry missing from PAST is looked for in Glacier (Node.lookup); if it
// is missing from both, replay fails unless allowGaps, in which case it stops there: the
// entries before it stay nil and missing counts them.
//
// segs, if not nil, receives the snapshot's segments, oldest first.
func (u *User) replay(key *[32]byte, head ids.Key, st *headState, allowGaps bool, segs *[]snapSeg, cb func([][]byte, []ids.ID, uint64, error)) {
	bodies := make([][]byte, st.Count)
	locs := make([]ids.ID, st.Count)
	next := st.Newest
	for i := len(st.Inline) - 1; i >= 0; i-- {
		idx, p, body, err := openEntry(key, head, st.Inline[i])
		if err != nil || idx != st.InlineFrom+uint64(i) || ids.Hash(st.Inline[i]) != next {
			cb(nil, nil, 0, fmt.Errorf("%w: inline entry %d", ErrMalformed, st.InlineFrom+uint64(i)))
			return
		}
		bodies[idx], locs[idx] = body, next
		next = p
	}
	lowest := st.InlineFrom
	if len(st.Inline) == 0 {
		lowest = st.Count
	}
	// loadSeg reads the snapshot segment at raw, which ends at to, then the ones before it.
	var loadSeg func(raw []byte, to uint64)
	loadSeg = func(raw []byte, to uint64) {
		ref, err := content.UnmarshalRef(raw)
		if err != nil {
			cb(nil, nil, 0, err)
			return
		}
		u.n.Get(ref, func(data []byte, err error) {
			if err != nil {
				cb(nil, nil, 0, fmt.Errorf("snapshot: %w", err))
				return
			}
			from, prev, seg, err := decodeSegment(data, to)
			if err != nil {
				cb(nil, nil, 0, err)
				return
			}
			copy(bodies[from:to], seg)
			if segs != nil {
				*segs = append([]snapSeg{{from: from, to: to, ref: raw}}, *segs...)
			}
			if from == 0 {
				cb(bodies, locs, 0, nil) // locations before the snapshot are not needed again
				return
			}
			loadSeg(prev, from)
		})
	}
	loadSnap := func() {
		if st.SnapshotIndex == 0 {
			cb(bodies, locs, 0, nil)
			return
		}
		loadSeg(st.Snapshot, st.SnapshotIndex)
	}
	segAt := make(map[ids.ID]entrySeg, len(st.Segs)) // by the location of its newest entry
	for _, sg := range st.Segs {
		segAt[sg.Last] = sg
	}
	var walk func(idx uint64, loc ids.ID)
	// walkSeg reads the segment whose newest entry is entry idx at loc, and walks on below it.
	walkSeg := func(idx uint64, loc ids.ID, sg entrySeg) {
		u.n.lookup(ids.Key{Ring: u.n.cfg.Ring, ID: sg.Loc}, func(obj past.Object, err error) {
			if err != nil {
				if allowGaps && provenAbsent(err) {
					cb(bodies, locs, idx+1, nil)
					return
				}
				cb(nil, nil, 0, fmt.Errorf("entries %d-%d: %w", idx+1-sg.Count, idx, err))
				return
			}
			cts, err := decodeEntrySeg(obj.Payload, sg.Count)
			if err != nil {
				cb(nil, nil, 0, err)
				return
			}
			for j := len(cts) - 1; j >= 0; j-- {
				i, p, body, err := openEntry(key, head, cts[j])
				if err != nil || i != idx || ids.Hash(cts[j]) != loc {
					cb(nil, nil, 0, fmt.Errorf("%w: entry %d in its segment", ErrMalformed, idx))
					return
				}
				bodies[idx], locs[idx] = body, loc
				idx, loc = idx-1, p
			}
			walk(idx, loc)
		})
	}
	walk = func(idx uint64, loc ids.ID) {
		// idx is the index of the entry at loc; stop at the snapshot.
		if idx+1 <= st.SnapshotIndex || idx == ^uint64(0) {
			loadSnap()
			return
		}
		if sg, ok := segAt[loc]; ok && sg.Count <= idx+1 {
			walkSeg(idx, loc, sg)
			return
		}
		u.n.lookup(ids.Key{Ring: u.n.cfg.Ring, ID: loc}, func(obj past.Object, err error) {
			if err != nil {
				if allowGaps && provenAbsent(err) {
					cb(bodies, locs, idx+1, nil)
					return
				}
				cb(nil, nil, 0, fmt.Errorf("entry %d: %w", idx, err))
				return
			}
			i, p, body, err := openEntry(key, head, obj.Payload)
			if err != nil || i != idx {
				cb(nil, nil, 0, fmt.Errorf("%w: entry %d", ErrMalformed, idx))
				return
			}
			bodies[idx], locs[idx] = body, loc
			walk(idx-1, p)
		})
	}
	if lowest == 0 || lowest <= st.SnapshotIndex {
		loadSnap()
		return
	}
	walk(lowest-1, next)
}
