package past

import (
	"epost/internal/bloom"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// Replica maintenance: a pull protocol (FreePastry's ReplicationManager and ePOST's replica
// maintenance work alike; Glacier also syncs with Bloom filters).
//
// A node is among the k closest nodes to key x exactly when x is closer to it than to the k-th
// node on either side (the k-th counter-clockwise neighbour L_k and clockwise R_k), so its
// responsibility arc is (mid(L_k, self), mid(self, R_k)]. In each round, after a leaf-set change
// and every MaintenanceInterval, the node sends the k nearest neighbours on each side a
// sync-request: its arc, the count and XOR digest of the (key, seq) pairs it holds there and a
// Bloom filter of them. A neighbour holding the same count and digest on that arc stays
// silent; otherwise it offers the (key, seq) pairs it holds on the arc that the filter lacks
// (at most MaxKeysPerExchange, flagging that more remain). The node fetches the offered keys it
// lacks or holds older, each from the first neighbour that offered it, and stores what arrives
// through accept, exactly like an insert: a neighbour cannot push anything a client could not.
//
// Handover is the same mechanism seen from a newcomer: a joining node's arc covers keys its
// neighbours hold, and it pulls them. Nodes whose arc shrank keep objects outside it for
// DropGrace (in case the view was transient) and then move them to the trash.

// responsibleArc is the arc of keys this node is a replica of, by its leaf-set view; whole is
// true when the view is too small to tell, in which case everything counts as ours.
func (n *Node) responsibleArc() (arc store.Arc, whole bool) {
	k := n.cfg.Replicas
	arc = store.WholeRing(n.cfg.Ring)
	if len(n.left) < k || len(n.right) < k {
		return arc, true
	}
	lk, rk := n.left[k-1].ID, n.right[k-1].ID
	if lk == n.self.ID || rk == n.self.ID {
		return arc, true
	}
	arc.From = midpoint(lk, n.self.ID)
	arc.To = midpoint(n.self.ID, rk)
	if arc.From == arc.To {
		return store.WholeRing(n.cfg.Ring), true
	}
	return arc, false
}

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

// syncPeers are the k nearest leaf-set members on each side: every node that shares an object
// with us, and after failures the former holders of what we just became responsible for.
func (n *Node) syncPeers() []pastry.Handle {
	k := n.cfg.Replicas
	var out []pastry.Handle
	seen := map[ids.ID]bool{n.self.ID: true}
	for i := 0; i < k; i++ {
		for _, side := range [2][]pastry.Handle{n.right, n.left} {
			if i < len(side) && !seen[side[i].ID] {
				seen[side[i].ID] = true
				out = append(out, side[i])
			}
		}
	}
	return out
}

// syncRound summarises what we hold on our arc, asks the neighbours for what we lack, and
// hands off objects that have been outside our arc for DropGrace.
func (n *Node) syncRound() {
	n.stats.SyncRounds++
	n.round++
	arc, whole := n.responsibleArc()
	var mine []KeySeq
	var digest uint64
	var drop, handoff []ids.Key
	for meta, err := range n.st.Range(store.WholeRing(n.cfg.Ring)) {
		if err != nil {
			return
		}
		if whole || arc.Contains(meta.Key) {
			mine = append(mine, KeySeq{ID: meta.Key.ID, Seq: meta.Seq})
			digest ^= digestOf(meta.Key.ID, meta.Seq)
			if len(n.notMine) > 0 {
				delete(n.notMine, meta.Key)
				delete(n.handedOff, meta.Key)
			}
			continue
		}
		since, ok := n.notMine[meta.Key]
		switch {
		case !ok:
			n.notMine[meta.Key] = n.now
		case n.now.Sub(since) >= n.cfg.DropGrace:
			drop = append(drop, meta.Key)
		case n.now.Sub(since) >= n.cfg.HandoffDelay && !n.handedOff[meta.Key] && len(handoff) < maxHandoffsPerRound:
			handoff = append(handoff, meta.Key)
		}
	}
	n.handOff(handoff)
	for _, k := range drop {
		if n.st.Delete(k) == nil {
			n.stats.Dropped++
			if n.cfg.Observer != nil {
				n.cfg.Observer.Removed(k)
			}
		}
		delete(n.notMine, k)
		delete(n.handedOff, k)
	}
	peers := n.syncPeers()
	if len(peers) == 0 {
		return
	}
	salt := n.rng.Uint64()
	b := bloom.New(len(mine), salt, maxBloomBytes)
	for _, e := range mine {
		b.Add(e.ID, e.Seq)
	}
	req := &message{Type: mSyncRequest, Op: n.round, Arc: arc, Count: uint64(len(mine)), Digest: digest, Salt: salt, Bloom: b.Bits}
	p := req.encode(nil)
	for _, h := range peers {
		n.stats.MaintMsgs++
		n.stats.MaintBytes += uint64(len(p))
		n.out = append(n.out, Outgoing{To: h, Payload: p, Maintenance: true})
	}
}

// onSyncRequest offers the requester what it lacks on its arc.
func (n *Node) onSyncRequest(from pastry.Handle, m *message) {
	if m.Arc.Ring != n.cfg.Ring || !n.inLeafRange(from.ID) {
		return // only nodes that belong in our leaf set share responsibility with us
	}
	b := &bloom.Filter{Bits: m.Bloom, Salt: m.Salt}
	var count, digest uint64
	var offer []KeySeq
	more := false
	for meta, err := range n.st.Range(m.Arc) {
		if err != nil {
			return
		}
		if meta.Expired(n.now) {
			continue
		}
		count++
		digest ^= digestOf(meta.Key.ID, meta.Seq)
		if b.Has(meta.Key.ID, meta.Seq) {
			continue
		}
		if len(offer) < n.cfg.MaxKeysPerExchange {
			offer = append(offer, KeySeq{ID: meta.Key.ID, Seq: meta.Seq})
		} else {
			more = true
		}
	}
	if (count == m.Count && digest == m.Digest) || len(offer) == 0 {
		return
	}
	n.send(from, &message{Type: mSyncOffer, Op: m.Op, Key: ids.Key{Ring: n.cfg.Ring}, Keys: offer, Flag: more}, true)
}

// inLeafRange reports whether id lies within our leaf set's range: a leaf member, or a node
// that would be one (a newcomer we have not heard of yet must still get its answer).
func (n *Node) inLeafRange(id ids.ID) bool {
	if len(n.left) < n.cfg.Replicas || len(n.right) < n.cfg.Replicas {
		return true
	}
	lo, hi := n.left[len(n.left)-1].ID, n.right[len(n.right)-1].ID
	// In a ring smaller than the leaf set the two halves overlap (the farthest right member
	// lies at or beyond the farthest left one, going clockwise): they cover the whole ring,
	// and the arc from lo to hi would be the short stretch between them.
	if !ids.Less(ids.Sub(hi, n.self.ID), ids.Sub(lo, n.self.ID)) {
		return true
	}
	return id == lo || ids.Between(lo, id, hi)
}

// onSyncOffer fetches the offered versions we lack, each from one neighbour only.
func (n *Node) onSyncOffer(from pastry.Handle, m *message) {
	if m.Key.Ring != n.cfg.Ring {
		return
	}
	arc, whole := n.responsibleArc()
	leaving := m.Op&handoverOp != 0
	if leaving {
		// A hand-over: the leaver told the overlay first, but our leaf set may not show it
		// yet. Our arc is the one we have without it.
		arc, whole = n.arcWithout(from.ID)
	}
	var want []KeySeq
	for _, e := range m.Keys {
		k := ids.Key{Ring: n.cfg.Ring, ID: e.ID}
		if !whole && !arc.Contains(k) {
			continue
		}
		if deadline, ok := n.fetching[k]; ok && n.now.Before(deadline) {
			continue
		}
		if meta, err := n.st.Meta(k); err == nil && meta.Seq >= e.Seq {
			continue
		}
		n.fetching[k] = n.now.Add(n.cfg.RequestTimeout)
		want = append(want, e)
	}
	if len(want) > 0 || leaving {
		// A leaver waits for an answer to each offer, an empty one included (leave.go).
		n.send(from, &message{Type: mFetch, Op: m.Op, Key: ids.Key{Ring: n.cfg.Ring}, Keys: want}, true)
	}
	if m.Flag {
		// More remain: another round soon rather than after a full interval.
		if due := n.now.Add(n.cfg.MaintenanceDelay); due.Before(n.nextRound) {
			n.nextRound = due
		}
	}
}

// onFetch sends the requested objects we hold, in replies of at most MaxTransferBytes.
func (n *Node) onFetch(from pastry.Handle, m *message) {
	if m.Key.Ring != n.cfg.Ring {
		return
	}
	if peer, ok := n.handover[m.Op]; ok && peer == from.ID {
		delete(n.handover, m.Op) // the answer to one of our hand-over offers
	}
	var batch []Object
	size := 0
	flush := func() {
		if len(batch) > 0 {
			n.send(from, &message{Type: mFetchReply, Op: m.Op, Objects: batch}, true)
		}
		batch, size = nil, 0
	}
	for _, e := range m.Keys {
		obj, err := n.st.Get(ids.Key{Ring: n.cfg.Ring, ID: e.ID})
		if err != nil || obj.Expired(n.now) {
			continue
		}
		if size > 0 && size+len(obj.Payload)+len(obj.Aux) > n.cfg.MaxTransferBytes {
			flush()
		}
		batch = append(batch, obj)
		size += len(obj.Payload) + len(obj.Aux)
	}
	flush()
}

// onFetchReply stores what a neighbour sent, validated exactly like an insert.
func (n *Node) onFetchReply(from pastry.Handle, m *message) {
	for _, obj := range m.Objects {
		if _, asked := n.fetching[obj.Key]; !asked {
			n.stats.BadMessages++ // unsolicited: a neighbour may not push
			continue
		}
		delete(n.fetching, obj.Key)
		if n.accept(obj) == nil {
			n.stats.Repaired++
		}
	}
}

// maxHandoffsPerRound bounds the hand-off inserts one maintenance round starts.
const maxHandoffsPerRound = 100

// handOff inserts objects that have been outside our arc for HandoffDelay into their replica
// set, once each, before DropGrace ends and they are dropped. Usually the replicas hold them
// already (an insert that only extends leases: InsertDedupe for content objects, an
// idempotent retry for the rest), but a copy can be stranded: one written while a partition
// cut the ring (the replica set then was on its side), or one the replica set lost while we
// were its member. The neighbours' maintenance only reaches nodes near the key; this reaches
// the key's replica set wherever we are. A stale version of a mutable object is refused by
// the replicas, as any stale write.
func (n *Node) handOff(keys []ids.Key) {
	for _, k := range keys {
		obj, err := n.st.Get(k)
		if err != nil || obj.Expired(n.now) {
			continue
		}
		n.handedOff[k] = true
		n.stats.HandedOff++
		if Type(obj.Type) == TypeContent {
			n.InsertDedupe(n.now, obj, nil)
		} else {
			n.Insert(n.now, obj, nil)
		}
	}
}
