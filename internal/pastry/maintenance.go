package pastry

import (
	"time"

	"epost/internal/ids"
)

// deadList remembers nodes declared dead, for partition healing, oldest first.
type deadList struct {
	list []deadNode
	byID map[ids.ID]int // id -> count of entries (0 or 1)
}

func (d *deadList) has(id ids.ID) bool { return d.byID[id] > 0 }

func (d *deadList) add(h Handle, now time.Time, max int) {
	if d.has(h.ID) {
		return
	}
	if len(d.list) >= max {
		delete(d.byID, d.list[0].h.ID)
		d.list = append(d.list[:0], d.list[1:]...)
	}
	d.list = append(d.list, deadNode{h: h, at: now})
	d.byID[h.ID] = 1
}

func (d *deadList) remove(id ids.ID) {
	if !d.has(id) {
		return
	}
	delete(d.byID, id)
	for i, x := range d.list {
		if x.h.ID == id {
			d.list = append(d.list[:i], d.list[i+1:]...)
			return
		}
	}
}

func (d *deadList) expire(before time.Time) {
	for len(d.list) > 0 && d.list[0].at.Before(before) {
		delete(d.byID, d.list[0].h.ID)
		d.list = d.list[1:]
	}
}

// Tick advances timers: join retries, hop timeouts, leaf-set probing and failure detection,
// routing-table maintenance and partition healing.
func (n *Node) Tick(now time.Time) {
	n.now = now
	switch n.phase {
	case phaseIdle, phaseLeft:
		return
	case phaseJoining:
		if !now.Before(n.joinAt) {
			n.sendJoinRequest()
		}
	case phaseAnnounced:
		if !now.Before(n.joinAt) {
			n.joinAt = now.Add(n.cfg.JoinTimeout)
			for _, h := range n.leaf.Members() {
				if n.awaitingAck[h.ID] {
					n.send(h, &message{Type: mAnnounce, Flag: true})
				}
			}
		}
	}
	n.checkPending()
	n.checkLeaves()
	n.checkTable()
	n.checkSuspects()
	n.expireIndirect()
	if n.phase != phaseReady {
		return
	}
	if !now.Before(n.nextRT) {
		n.nextRT = now.Add(jitter(n.rng, n.cfg.TableInterval))
		n.maintainTable()
	}
	if !now.Before(n.nextHeal) {
		n.nextHeal = now.Add(jitter(n.rng, n.cfg.HealInterval))
		n.heal()
	}
}

// leafCheckEvery is how often leaf members' timers are examined; probe timeouts are therefore
// accurate to this much.
const leafCheckEvery = 200 * time.Millisecond

// leafSendSlack is how late a routine probe may be sent, so that members' timers are
// examined in batches rather than one scan per member.
const leafSendSlack = 2 * time.Second

// eachLeaf calls f once for every leaf member (a member on both sides once), without allocating.
func (n *Node) eachLeaf(f func(h Handle)) {
	for _, h := range n.leaf.right {
		f(h)
	}
	for _, h := range n.leaf.left {
		if !containsID(n.leaf.right, h.ID) {
			f(h)
		}
	}
}

// checkLeaves probes leaf members not heard from lately and declares dead those that stay
// silent through retries and indirect probes.
func (n *Node) checkLeaves() {
	if n.now.Before(n.leafCheckAt) {
		return
	}
	// The next examination is due when the earliest member timer expires: probe timeouts are
	// examined promptly, new probes may wait a little so that scans stay rare.
	dueSend, dueTimeout := n.now.Add(n.cfg.ProbeInterval), n.now.Add(n.cfg.ProbeInterval)
	defer func() {
		n.leafCheckAt = earlierOf(laterOf(dueSend, n.now.Add(leafSendSlack)), laterOf(dueTimeout, n.now.Add(leafCheckEvery)))
	}()
	var gone []Handle
	n.eachLeaf(func(h Handle) {
		p, ok := n.peers[h.ID]
		if !ok {
			p = &peer{h: h}
			n.peers[h.ID] = p
		}
		if p.probeSeq != 0 {
			if n.now.Before(p.probeAt) {
				dueTimeout = earlierOf(dueTimeout, p.probeAt)
				return
			}
			p.tries++
			if p.tries > n.cfg.ProbeRetries {
				gone = append(gone, h)
				return
			}
			n.setSuspected(p, true)
			if p.tries == 1 {
				n.probeIndirectly(h)
			}
			p.probeSeq = n.probe(h, false)
			p.probeAt = n.now.Add(n.cfg.ProbeTimeout << p.tries)
			dueTimeout = earlierOf(dueTimeout, p.probeAt)
			return
		}
		if next := p.lastHeard.Add(n.cfg.ProbeInterval); n.now.Before(next) {
			dueSend = earlierOf(dueSend, next)
			return
		}
		withLeaf := p.leafVerAck != n.leafVer
		p.leafVerAck = n.leafVer
		p.probeSeq = n.probe(h, withLeaf)
		p.probeAt = n.now.Add(n.cfg.ProbeTimeout)
		dueTimeout = earlierOf(dueTimeout, p.probeAt)
	})
	for _, h := range gone {
		n.declareDead(h)
	}
}

func (n *Node) probeIndirectly(target Handle) {
	asked := 0
	for _, h := range n.leaf.Members() {
		if asked >= n.cfg.IndirectProbes {
			break
		}
		if h.ID == target.ID || n.suspected(h.ID) {
			continue
		}
		n.seq++
		n.send(h, &message{Type: mIndirectProbe, Seq: n.seq, Origin: target})
		asked++
	}
}

func (n *Node) expireIndirect() {
	kept := n.indirect[:0]
	for _, r := range n.indirect {
		if n.now.Before(r.deadline) {
			kept = append(kept, r)
		}
	}
	n.indirect = kept
}

// checkTable probes routing-table entries not heard from lately, so that entries of nodes
// that left are found and replaced before a message needs them (each stale entry otherwise
// costs a message a hop timeout). A silent entry becomes a suspect, probed with retries.
func (n *Node) checkTable() {
	if n.now.Before(n.tableCheckAt) {
		return
	}
	n.tableCheckAt = n.now.Add(tableCheckEvery)
	var silent []ids.ID
	n.table.eachEntry(func(e *tableEntry) {
		switch {
		case !e.probeAt.IsZero():
			if !n.now.Before(e.probeAt) {
				e.probeAt = time.Time{}
				silent = append(silent, e.h.ID)
			}
		case n.now.Sub(e.heard) >= n.cfg.TableProbeInterval:
			if n.leaf.Contains(e.h.ID) {
				e.heard = n.now // watched through the leaf set
				return
			}
			n.probe(e.h, false)
			e.probeAt = n.now.Add(2 * n.cfg.ProbeTimeout)
		}
	})
	for _, id := range silent {
		n.suspect(id)
	}
}

// tableCheckEvery is how often routing-table entries' liveness timers are examined.
const tableCheckEvery = 2 * time.Second

// suspect starts probing a node that failed to acknowledge a hop. Leaf members are handled by
// checkLeaves; others get direct probes only.
func (n *Node) suspect(id ids.ID) {
	p, ok := n.peers[id]
	if !ok {
		h, found := n.handleOf(id)
		if !found {
			return
		}
		p = &peer{h: h}
		n.peers[id] = p
	}
	if p.suspected {
		return
	}
	n.setSuspected(p, true)
	if !n.leaf.Contains(id) {
		n.suspects = append(n.suspects, id)
	}
	if p.probeSeq == 0 {
		p.tries = 1
		p.probeSeq = n.probe(p.h, false)
		p.probeAt = n.now.Add(n.cfg.ProbeTimeout)
		n.leafCheckAt = earlierOf(n.leafCheckAt, p.probeAt)
		if n.leaf.Contains(id) {
			n.probeIndirectly(p.h)
		}
	}
}

func (n *Node) handleOf(id ids.ID) (Handle, bool) {
	if h, ok := n.leaf.Get(id); ok {
		return h, true
	}
	if h, _, ok := n.table.SlotOccupant(id); ok && h.ID == id {
		return h, true
	}
	return Handle{}, false
}

// checkSuspects finishes probing suspects outside the leaf set.
func (n *Node) checkSuspects() {
	kept := n.suspects[:0]
	var gone []Handle
	for _, id := range n.suspects {
		p, ok := n.peers[id]
		if !ok || !p.suspected || n.leaf.Contains(id) {
			continue // cleared, or now watched as a leaf member
		}
		if p.probeSeq != 0 && !n.now.Before(p.probeAt) {
			p.tries++
			if p.tries > n.cfg.ProbeRetries {
				gone = append(gone, p.h)
				continue
			}
			p.probeSeq = n.probe(p.h, false)
			p.probeAt = n.now.Add(n.cfg.ProbeTimeout << (p.tries - 1))
		}
		kept = append(kept, id)
	}
	n.suspects = kept
	for _, h := range gone {
		n.declareDead(h)
	}
}

// declareDead removes a node from every table, remembers it for healing, and starts repair.
func (n *Node) declareDead(h Handle) {
	if len(n.joining) > 0 {
		delete(n.joining, h.ID)
	}
	if p, ok := n.peers[h.ID]; ok {
		n.setSuspected(p, false)
	}
	delete(n.peers, h.ID)
	delete(n.filled, h.ID)
	n.dead.add(h, n.now, n.cfg.MaxDeadRemember)
	n.events = append(n.events, Event{Kind: EventNodeFailed, Origin: h})
	if row := n.table.Remove(h.ID); row >= 0 {
		// Lazy repair: ask another node of the same row for its entry in that slot's row.
		if row2 := n.table.Row(row); len(row2) > 0 {
			n.send(row2[n.rng.IntN(len(row2))], &message{Type: mRowRequest, Row: uint8(row)})
		}
	}
	if n.awaitingAck[h.ID] {
		delete(n.awaitingAck, h.ID)
		defer n.checkJoined()
	}
	if !n.leaf.Remove(h.ID) {
		return
	}
	n.leafChanged()
	// Refill from the far end of each side: those members know the nodes beyond.
	for _, side := range [2][]Handle{n.leaf.right, n.leaf.left} {
		for i := len(side) - 1; i >= 0; i-- {
			if !n.suspected(side[i].ID) {
				n.send(side[i], &message{Type: mLeafRequest})
				break
			}
		}
	}
}

// maintainTable asks a random entry of each row for its row, to find closer or missing nodes.
func (n *Node) maintainTable() {
	rows := n.table.Rows()
	for r := 0; r < rows; r++ {
		row := n.table.Row(r)
		if len(row) == 0 {
			continue
		}
		n.send(row[n.rng.IntN(len(row))], &message{Type: mRowRequest, Row: uint8(r)})
	}
}

// heal re-joins through a bootstrap address or a node once declared dead: if the ring split,
// the reply comes from the other part and the two merge.
func (n *Node) heal() {
	n.dead.expire(n.now.Add(-n.cfg.DeadRetention))
	if n.leaf.Size() == 0 && len(n.bootstrap) > 0 {
		// A ring of one with nodes to join through (founded alone while they were away, see
		// FoundAlone): ask all of them, and again soon, until one answers.
		for _, a := range n.bootstrap {
			n.send(Handle{Addr: a}, &message{Type: mJoinRequest, Flag: true})
		}
		n.nextHeal = n.now.Add(jitter(n.rng, min(4*n.cfg.JoinTimeout, n.cfg.HealInterval)))
		return
	}
	total := len(n.bootstrap) + len(n.dead.list)
	if total == 0 {
		return
	}
	i := n.rng.IntN(total)
	to := Handle{}
	if i < len(n.bootstrap) {
		to.Addr = n.bootstrap[i]
	} else {
		to = n.dead.list[i-len(n.bootstrap)].h
	}
	n.send(to, &message{Type: mJoinRequest, Flag: true})
}

func earlierOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
