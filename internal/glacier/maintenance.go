package glacier

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"epost/internal/bloom"
	"epost/internal/ids"
	"epost/internal/pastry"
)

// Fragment maintenance. See the package documentation for the design; in short:
//
//   - A node is responsible for the fragment positions closer to it than to any other node:
//     its arc (mid(left neighbour, self), mid(self, right neighbour)].
//   - Its rebuild arc is the same, computed over the live leaf set plus every node seen in it
//     within GoneAfter: positions of a neighbour that is merely offline stay that neighbour's,
//     so an evening offline re-codes nothing; after GoneAfter they become ours.
//   - Each round it sends, for every offset j in 1..n-1, a sync request to the nodes covering
//     its rebuild arc shifted by j·2^256/n: they hold fragment i+j of every object whose
//     fragment i we should hold. The request carries a Bloom filter of the (fragment key,
//     version) pairs we hold in our arc; the peer offers the positions in our arc, of objects
//     it holds a fragment of, that the filter lacks. Offset 0 goes to our two immediate
//     neighbours and hands over fragments they hold in our arc (after a join).
//   - For an offered position we rebuild: fetch m fragments (each checked by its proof against
//     the signed manifest's root) from the offerers, decode, check the object hash, re-encode
//     all n fragments, rebuild the Merkle tree, check its root is the manifest's and store the
//     missing fragment with its proof from that tree. At most MaxRebuildsPerRound per round.

// seenNode remembers when a node was last in our leaf set.
type seenNode struct {
	h    pastry.Handle
	last time.Time
}

// SetLeafSet gives the node the overlay's current leaf set (left counter-clockwise and right
// clockwise, nearest first) and schedules a maintenance round.
func (n *Node) SetLeafSet(now time.Time, left, right []pastry.Handle) {
	n.now = now
	n.left, n.right = slices.Clone(left), slices.Clone(right)
	n.ready = true
	for _, side := range [2][]pastry.Handle{left, right} {
		for _, h := range side {
			n.seen[h.ID] = seenNode{h: h, last: now}
		}
	}
	n.forgetGone()
	if due := now.Add(n.cfg.SyncDelay); n.nextRound.IsZero() || due.Before(n.nextRound) {
		n.nextRound = due
	}
	n.flushLocal()
}

// forgetGone drops remembered nodes absent for GoneAfter and bounds the memory to a few
// leaf sets' worth, keeping the most recently seen.
func (n *Node) forgetGone() {
	limit := 4*(len(n.left)+len(n.right)) + 16
	var all []seenNode
	for id, s := range n.seen {
		if n.now.Sub(s.last) >= n.cfg.GoneAfter {
			delete(n.seen, id) // order-independent
			continue
		}
		all = append(all, s)
	}
	if len(all) <= limit {
		return
	}
	slices.SortFunc(all, func(a, b seenNode) int {
		if c := b.last.Compare(a.last); c != 0 {
			return c
		}
		return ids.Cmp(a.h.ID, b.h.ID)
	})
	for _, s := range all[limit:] {
		delete(n.seen, s.h.ID)
	}
}

// arc is (From, To]; From == To means the whole ring.
type arc struct{ From, To ids.ID }

func (a arc) whole() bool { return a.From == a.To }

func (a arc) contains(x ids.ID) bool { return a.whole() || x == a.To || ids.Between(a.From, x, a.To) }

// midpoint is the point halfway clockwise from a to b.
func midpoint(a, b ids.ID) ids.ID {
	d := ids.Clockwise(a, b)
	var half ids.ID
	var carry byte
	for i := range d {
		half[i] = d[i]>>1 | carry
		carry = d[i] << 7
	}
	return ids.Add(a, half)
}

// arcBetween is self's arc given its nearest neighbours on each side.
func (n *Node) arcBetween(l, r ids.ID) arc {
	a := arc{From: midpoint(l, n.self.ID), To: midpoint(n.self.ID, r)}
	if a.From == a.To { // two-node ring seen from one side: still a proper arc
		a.To = ids.Sub(a.To, ids.ID{31: 1})
	}
	return a
}

// liveArc is the arc this node is responsible for by its live leaf set.
func (n *Node) liveArc() arc {
	if len(n.left) == 0 || len(n.right) == 0 {
		return arc{n.self.ID, n.self.ID}
	}
	return n.arcBetween(n.left[0].ID, n.right[0].ID)
}

// rebuildArc is the arc computed as if every node seen within GoneAfter were still there.
func (n *Node) rebuildArc() arc {
	var l, r ids.ID
	var lOK, rOK bool
	consider := func(id ids.ID) {
		if id == n.self.ID {
			return
		}
		if !lOK || ids.Less(ids.Sub(n.self.ID, id), ids.Sub(n.self.ID, l)) {
			l, lOK = id, true
		}
		if !rOK || ids.Less(ids.Sub(id, n.self.ID), ids.Sub(r, n.self.ID)) {
			r, rOK = id, true
		}
	}
	for _, side := range [2][]pastry.Handle{n.left, n.right} {
		for _, h := range side {
			consider(h.ID)
		}
	}
	for id, s := range n.seen { // min over a set: order-independent
		if n.now.Sub(s.last) < n.cfg.GoneAfter {
			consider(id)
		}
	}
	if !lOK {
		return arc{n.self.ID, n.self.ID}
	}
	return n.arcBetween(l, r)
}

// syncRound compares our holdings with the holders of the other positions of the same
// objects, and hands off what has long been outside our arc.
func (n *Node) syncRound() {
	n.stats.SyncRounds++
	n.round++
	n.budget, n.handoffs = n.cfg.MaxRebuildsPerRound, n.cfg.MaxHandoffsPerRound
	live, mine := n.liveArc(), n.rebuildArc()
	type entry struct {
		fk  ids.ID
		ver uint64
	}
	var held []entry
	var drop []ids.ID
	n.st.Range(func(fk ids.ID, f *Fragment) bool {
		if mine.contains(fk) {
			held = append(held, entry{fk, f.Manifest.Version})
		}
		if live.contains(fk) || mine.contains(fk) {
			delete(n.notMine, fk)
			return true
		}
		since, ok := n.notMine[fk]
		switch {
		case !ok:
			n.notMine[fk] = n.now
		case n.now.Sub(since) >= n.cfg.DropGrace:
			drop = append(drop, fk)
		}
		return true
	})
	for _, fk := range drop {
		if n.st.Delete(fk) == nil {
			n.stats.Dropped++
		}
		delete(n.notMine, fk)
	}
	if len(n.left) == 0 && len(n.right) == 0 {
		return // alone: nobody to compare with
	}
	salt := n.rng.Uint64()
	b := bloom.New(len(held), salt, maxBloomBytes)
	for _, e := range held {
		b.Add(e.fk, e.ver)
	}
	// Each peer may offer a share of this round's budget, with slack because offers overlap
	// (every surviving fragment of an object offers the same missing position).
	want := uint16(min(maxOffers, max(16, (3*n.cfg.MaxRebuildsPerRound+n.cfg.N-2)/max(1, n.cfg.N-1))))
	req := message{Type: mSyncRequest, Op: n.round, Requester: n.self, From: mine.From, To: mine.To, Salt: salt, Bloom: b.Bits}
	// Offset 0: our immediate neighbours, for hand-off of fragments in our arc.
	hand := req
	hand.Want = uint16(min(maxOffers, n.cfg.MaxHandoffsPerRound))
	var near []pastry.Handle
	if len(n.left) > 0 {
		near = append(near, n.left[0])
	}
	if len(n.right) > 0 && (len(near) == 0 || n.right[0].ID != near[0].ID) {
		near = append(near, n.right[0])
	}
	for _, h := range near {
		n.send(h, &hand, true)
	}
	for j := 1; j < n.cfg.N; j++ {
		r := req
		r.Offset, r.Want = uint16(j), want
		start := ids.Add(ids.Add(mine.From, n.frac[j]), ids.ID{31: 1})
		n.route(start, &r, true)
	}
}

// onSyncRequest offers the requester the positions in its arc that it lacks, of objects we
// hold a fragment of, and passes the request on to our right neighbour when the requester's
// shifted arc extends beyond ours.
func (n *Node) onSyncRequest(m *message) {
	if m.Requester.ID.IsZero() || m.Requester.Addr == "" || int(m.Offset) >= n.cfg.N {
		n.stats.BadMessages++
		return
	}
	a := arc{m.From, m.To}
	j := int(m.Offset)
	b := &bloom.Filter{Bits: m.Bloom, Salt: m.Salt}
	want := min(int(m.Want), maxOffers)
	var offers []Offer
	now := n.now.UnixNano()
	check := func(fk ids.ID, f *Fragment) bool {
		if len(offers) >= want {
			return false
		}
		if f.Manifest.Expiry <= now {
			return true
		}
		s := (f.Index - j + n.cfg.N) % n.cfg.N
		p := fk
		if j != 0 {
			p = ids.Add(f.Manifest.Key(), n.frac[s])
		}
		if a.contains(p) && !b.Has(p, f.Manifest.Version) {
			offers = append(offers, Offer{Key: f.Manifest.Key(), Index: uint16(s), SrcIndex: uint16(f.Index), Version: f.Manifest.Version})
		}
		return true
	}
	if a.whole() {
		n.st.Range(check)
	} else {
		// Only fragments near the requester's arc shifted by j can map into it: fragment
		// i+j sits F(j) clockwise of fragment i, up to one unit of rounding (slack 2).
		start := ids.Sub(ids.Add(a.From, n.frac[j]), slack)
		end := ids.Add(ids.Add(a.To, n.frac[j]), slack)
		n.st.Ascend(start, func(fk ids.ID, f *Fragment) bool {
			if !ids.Between(start, fk, end) {
				return false
			}
			return check(fk, f)
		})
	}
	if len(offers) > 0 {
		n.send(m.Requester, &message{Type: mSyncOffer, Op: m.Op, Offers: offers}, true)
	}
	if j == 0 || int(m.Hops) >= n.cfg.MaxWalk || len(n.right) == 0 || a.whole() {
		return
	}
	mine := n.liveArc()
	if mine.whole() {
		return
	}
	start, end := ids.Add(a.From, n.frac[j]), ids.Add(a.To, n.frac[j])
	if mine.To != end && ids.Between(start, mine.To, end) {
		next := *m
		next.Hops++
		n.send(n.right[0], &next, true)
	}
}

// slack covers the rounding of Fraction: F(i) - F(j) and F(i-j) differ by at most one.
var slack = ids.ID{31: 2}

// rebuild is one missing fragment being restored.
type rebuild struct {
	op          uint64
	key         ids.ID // object
	idx         int
	version     uint64
	sources     []source
	asked       int   // sources asked so far (a prefix of sources)
	order       []int // other positions, asked through the overlay once sources run out
	nextPos     int
	outstanding int
	man         *Manifest
	got         [][]byte
	have        int
	deadline    time.Time
	started     time.Time
	// stale is this node's own older version of the fragment, when it holds one: a renewal
	// it missed changes only the manifest, so one fetched fragment (for its manifest) is
	// enough, unless the content changed too (a repack).
	stale *Fragment
}

type source struct {
	h   pastry.Handle
	idx int
}

// onSyncOffer starts (within this round's budget) or feeds the rebuild of offered positions.
func (n *Node) onSyncOffer(from pastry.Handle, m *message) {
	mine := n.rebuildArc()
	for _, o := range m.Offers {
		if int(o.Index) >= n.cfg.N || int(o.SrcIndex) >= n.cfg.N {
			continue
		}
		fk := FragmentKey(o.Key, int(o.Index), n.cfg.N)
		if !mine.contains(fk) {
			continue
		}
		var stale *Fragment
		if f, err := n.st.Get(fk); err == nil {
			if f.Manifest.Version >= o.Version {
				continue
			}
			if f.Manifest.Key() == o.Key && f.Index == int(o.Index) {
				stale = &f
			}
		}
		src := source{h: from, idx: int(o.SrcIndex)}
		if rb := n.rebuilds[fk]; rb != nil {
			if !slices.ContainsFunc(rb.sources, func(s source) bool { return s.h.ID == from.ID && s.idx == src.idx }) {
				if src.idx == rb.idx {
					// A copy of the very fragment: cheapest, ask it first.
					rb.sources = slices.Insert(rb.sources, rb.asked, src)
				} else {
					rb.sources = append(rb.sources, src)
				}
				n.askSources(rb)
			}
			continue
		}
		handoff := src.idx == int(o.Index) || stale != nil // cheap: a copy, or a manifest
		if handoff && n.handoffs <= 0 || !handoff && n.budget <= 0 {
			continue
		}
		if handoff {
			n.handoffs--
		} else {
			n.budget--
		}
		n.nextOp++
		rb := &rebuild{op: n.nextOp, key: o.Key, idx: int(o.Index), version: o.Version, sources: []source{src},
			got: make([][]byte, n.cfg.N), started: n.now, order: n.rng.Perm(n.cfg.N), stale: stale}
		n.rebuilds[fk] = rb
		n.rbByOp[rb.op] = fk
		n.rbQ = append(n.rbQ, fk)
		n.stats.RebuildsStarted++
		n.askSources(rb)
	}
}

// askSources asks further holders until enough fragments are on their way: one if a source
// holds the very fragment, else m. Offerers are asked first (directly); once they run out,
// the other positions of the object are asked through the overlay, like a reader would.
func (n *Node) askSources(rb *rebuild) {
	need := n.cfg.M - rb.have
	if rb.stale != nil {
		need = 1 // its manifest
	}
	for rb.asked < len(rb.sources) && rb.outstanding < need {
		s := rb.sources[rb.asked]
		rb.asked++
		if rb.got[s.idx] != nil {
			continue
		}
		rb.outstanding++
		rb.deadline = n.now.Add(n.cfg.RequestTimeout)
		n.send(s.h, &message{Type: mFetch, Op: rb.op, Key: rb.key, Index: uint16(s.idx), Maint: true}, true)
		if s.idx == rb.idx {
			return // a copy suffices; ask others only if it fails
		}
	}
	for rb.outstanding < need && rb.nextPos < len(rb.order) {
		i := rb.order[rb.nextPos]
		rb.nextPos++
		if i == rb.idx || rb.got[i] != nil || slices.ContainsFunc(rb.sources[:rb.asked], func(s source) bool { return s.idx == i }) {
			continue
		}
		rb.outstanding++
		rb.deadline = n.now.Add(n.cfg.RequestTimeout)
		n.route(FragmentKey(rb.key, i, n.cfg.N), &message{Type: mFetch, Op: rb.op, Key: rb.key, Index: uint16(i), Maint: true}, true)
	}
}

func (n *Node) onRebuildReply(fk ids.ID, m *message) {
	rb := n.rebuilds[fk]
	if rb == nil {
		return
	}
	rb.outstanding = max(0, rb.outstanding-1)
	idx := int(m.Index)
	var man *Manifest
	ok := m.Code == codeOK && idx < n.cfg.N && rb.got[idx] == nil
	if ok {
		var err error
		man, err = n.checkManifest(m.RawMan)
		ok = err == nil && man.Key() == rb.key && man.CheckFragment(idx, m.Data, m.Proof) == nil
	}
	if ok && rb.stale != nil {
		old := rb.stale
		rb.stale = nil
		if man.SameContent(old.Manifest) && man.Version > old.Manifest.Version {
			// Only the manifest changed (a renewal this node missed): swap it in.
			if err := n.st.Put(fk, Fragment{Manifest: man, Index: old.Index, Data: old.Data, Proof: old.Proof}); err == nil {
				n.stats.Refreshed++
			}
			n.endRebuild(fk)
			return
		}
		// New content (a repack): rebuild from m fragments after all, this one included.
	}
	if ok && rb.man != nil && !rb.man.SameContent(man) {
		ok = man.Version > rb.man.Version && rb.have == 0
	}
	if !ok {
		if m.Code == codeOK {
			n.stats.BadReplies++
		}
		n.askSources(rb)
		return
	}
	if rb.man == nil || man.Version > rb.man.Version {
		rb.man = man
	}
	if idx == rb.idx {
		if n.accept(rb.man, idx, m.Data, m.Proof) == nil {
			n.stats.HandedOff++
		}
		n.endRebuild(fk)
		return
	}
	rb.got[idx] = m.Data
	rb.have++
	if rb.have < n.cfg.M {
		n.askSources(rb)
		return
	}
	data, proof, err := n.recode(rb.man, rb.got, rb.idx)
	if err == nil && n.accept(rb.man, rb.idx, data, proof) == nil {
		n.stats.Rebuilt++
	}
	n.endRebuild(fk)
}

// recode restores fragment idx of man, with its inclusion proof, from m proven fragments: it
// decodes the object, checks its hash, re-encodes all n fragments and rebuilds the Merkle
// tree, whose root must be the manifest's. The proof comes from that tree, so the holder ends
// up with exactly what the inserter would have sent it. (Codec.Rebuild would produce the
// fragment alone, but the proof needs the sibling leaves, which are all fragments' hashes.)
func (n *Node) recode(man *Manifest, got [][]byte, idx int) ([]byte, [][32]byte, error) {
	obj, err := n.codec.Decode(got, int(man.Size))
	if err != nil {
		return nil, nil, err
	}
	if sha256.Sum256(obj) != man.ObjectHash {
		return nil, nil, ErrHashMismatch
	}
	frags, err := n.codec.Encode(obj)
	if err != nil {
		return nil, nil, err
	}
	root, proofs := merkleTree(frags)
	if root != man.FragRoot {
		return nil, nil, fmt.Errorf("%w: re-encoded fragments do not lead to the manifest's root", ErrBadFragment)
	}
	return frags[idx], proofs[idx], nil
}

func (n *Node) endRebuild(fk ids.ID) {
	if rb := n.rebuilds[fk]; rb != nil {
		delete(n.rbByOp, rb.op)
		delete(n.rebuilds, fk)
	}
}

// checkRebuilds asks further sources after a timeout, and abandons rebuilds that ran out of
// them (the next round offers the position again).
func (n *Node) checkRebuilds() {
	keep := n.rbQ[:0]
	for _, fk := range n.rbQ {
		rb := n.rebuilds[fk]
		if rb == nil {
			continue
		}
		if n.now.Before(rb.deadline) {
			keep = append(keep, fk)
			continue
		}
		rb.outstanding = 0
		n.askSources(rb)
		if rb.outstanding == 0 || n.now.Sub(rb.started) > 4*n.cfg.RequestTimeout {
			n.stats.RebuildsAbandoned++
			n.endRebuild(fk)
			continue
		}
		keep = append(keep, fk)
	}
	n.rbQ = keep
}
