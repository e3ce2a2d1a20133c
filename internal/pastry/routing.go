package pastry

import (
	"time"

	"epost/internal/ids"
)

func (n *Node) suspected(id ids.ID) bool {
	if n.nSuspected == 0 {
		return false // the common case, without a map lookup
	}
	p, ok := n.peers[id]
	return ok && p.suspected
}

// isJoining reports whether id is a node that has announced itself but not finished joining:
// it routes, but deliveries must not go to it yet (consistent join).
func (n *Node) isJoining(id ids.ID) bool {
	if len(n.joining) == 0 {
		return false
	}
	_, ok := n.joining[id]
	return ok
}

func (n *Node) setSuspected(p *peer, v bool) {
	if p.suspected == v {
		return
	}
	p.suspected = v
	if v {
		n.nSuspected++
	} else {
		n.nSuspected--
	}
}

// nextHop picks where a message for key goes from here: the closest leaf-set member when key is
// within the leaf set's range, else the routing-table entry that shares one more digit with key,
// else any known node that is closer and shares as long a prefix (Pastry's rare case).
// Suspected nodes and exclude are skipped. local is true when this node is the destination.
func (n *Node) nextHop(key ids.ID, exclude ids.ID) (next Handle, local bool) {
	usable := func(id ids.ID) bool { return id != exclude && !n.suspected(id) && !n.isJoining(id) }
	if n.leaf.InRange(key) {
		best := n.self
		for _, side := range [2][]Handle{n.leaf.right, n.leaf.left} {
			for _, h := range side {
				if usable(h.ID) && ids.Closer(key, h.ID, best.ID) {
					best = h
				}
			}
		}
		return best, best.ID == n.self.ID
	}
	r := ids.SharedPrefix(key, n.self.ID)
	if r >= ids.Digits {
		return n.self, true
	}
	if h, _, ok := n.table.Get(r, key.Digit(r)); ok && usable(h.ID) {
		return h, false
	}
	best := n.self
	consider := func(h Handle) {
		if usable(h.ID) && ids.SharedPrefix(h.ID, key) >= r && ids.Closer(key, h.ID, best.ID) {
			best = h
		}
	}
	for _, h := range n.leaf.right {
		consider(h)
	}
	for _, h := range n.leaf.left {
		consider(h)
	}
	n.table.Each(func(h Handle, _ time.Duration) { consider(h) })
	return best, best.ID == n.self.ID
}

// routeMsg moves a route message one step: deliver here or forward with a hop acknowledgement.
func (n *Node) routeMsg(m *message) { n.route(m, 0) }

// route is routeMsg for the tries-th attempt at this node.
func (n *Node) route(m *message, tries int) {
	var exclude ids.ID
	if m.Kind != kindApp {
		exclude = m.Origin.ID // a joiner is never its own join's destination
	}
	next, local := n.nextHop(m.Key, exclude)
	if local {
		n.deliverLocal(m)
		return
	}
	switch m.Kind {
	case kindApp:
		if n.forward != nil {
			p, ok := n.forward(m.Key, m.Payload, next)
			if !ok {
				return
			}
			if len(m.PayloadTail) > 0 && (len(p) != len(m.Payload) || len(p) > 0 && &p[0] != &m.Payload[0]) {
				// Rewritten by the head alone (see RouteParts): what it meant for the tail
				// is unknown, so the message goes no further.
				n.stats.Dropped++
				return
			}
			m.Payload = p
		}
	case kindJoin:
		if tries == 0 {
			n.sendJoinRows(m.Origin)
		}
	}
	n.forwardTo(next, m, tries)
}

func (n *Node) hopTimeout(id ids.ID) time.Duration {
	rtt := n.table.RTT(id)
	if p, ok := n.peers[id]; ok && p.rtt > 0 {
		rtt = p.rtt
	}
	if rtt == 0 {
		return n.cfg.HopTimeout
	}
	return max(3*rtt+50*time.Millisecond, 200*time.Millisecond)
}

func (n *Node) forwardTo(next Handle, m *message, tries int) {
	n.send(next, m)
	n.pending[m.Seq] = &pendingHop{m: m, next: next.ID, deadline: n.now.Add(n.hopTimeout(next.ID)), tries: tries}
	n.pendingQ = append(n.pendingQ, m.Seq)
}

// checkPending re-routes messages whose next hop did not acknowledge in time.
func (n *Node) checkPending() {
	if len(n.pendingQ) == 0 {
		return
	}
	var expired []*pendingHop
	kept := n.pendingQ[:0]
	for _, seq := range n.pendingQ {
		p, ok := n.pending[seq]
		if !ok {
			continue
		}
		if n.now.Before(p.deadline) {
			kept = append(kept, seq)
			continue
		}
		delete(n.pending, seq)
		expired = append(expired, p)
	}
	n.pendingQ = kept
	for _, p := range expired {
		if p.tries == 0 {
			// One silent hop may be a lost frame: resend to the same node once before
			// suspecting it and routing around it.
			if h, ok := n.handleOf(p.next); ok {
				n.seq++
				p.m.Seq = n.seq
				n.forwardTo(h, p.m, 1)
				continue
			}
		}
		n.suspect(p.next)
		if p.tries >= n.cfg.MaxReroutes {
			n.stats.Dropped++
			continue
		}
		n.stats.Rerouted++
		n.seq++
		p.m.Seq = n.seq
		n.route(p.m, p.tries+1)
	}
}

func (n *Node) deliverLocal(m *message) {
	switch m.Kind {
	case kindJoin:
		n.sendJoinRows(m.Origin)
		n.send(m.Origin, &message{Type: mJoinReply, Handles: n.leafWithSelf()})
	case kindHeal:
		n.send(m.Origin, &message{Type: mJoinReply, Handles: n.leafWithSelf()})
	default:
		if n.phase != phaseReady {
			// Not joined yet: the right destination is the closest node that is ready, which
			// is some leaf member (our flag tells it not to send the message back).
			if next, local := n.nextHop(m.Key, n.self.ID); !local && next.ID != n.self.ID {
				n.forwardTo(next, m, 0)
				return
			}
			if len(n.buffered) < 4096 {
				n.buffered = append(n.buffered, m)
			} else {
				n.stats.Dropped++
			}
			return
		}
		n.events = append(n.events, Event{Kind: EventDeliver, Key: m.Key, Payload: m.payload(), Origin: m.Origin, Hops: int(m.Hops)})
	}
}

// sendJoinRows gives a joiner the rows of our table that are valid for it: rows 0..p where p
// is the prefix we share with it, plus ourselves.
func (n *Node) sendJoinRows(joiner Handle) {
	p := min(ids.SharedPrefix(n.self.ID, joiner.ID), n.table.Rows()-1)
	hs := []Handle{n.self}
	for r := 0; r <= p; r++ {
		hs = append(hs, n.table.Row(r)...)
	}
	n.send(joiner, &message{Type: mJoinRows, Handles: hs})
}

func (n *Node) onJoinRequest(m *message) {
	if n.phase != phaseReady {
		return // cannot route yet; the joiner retries elsewhere
	}
	kind := uint8(kindJoin)
	if m.Flag {
		kind = kindHeal
	}
	n.seq++
	n.routeMsg(&message{Type: mRoute, Seq: n.seq, Key: m.From.ID, Origin: m.From, Kind: kind})
}

func (n *Node) onJoinReply(m *message) {
	n.considerCandidates(m.Handles)
	if n.phase != phaseJoining {
		return // a healing reply: merging was all there was to do
	}
	n.phase = phaseAnnounced
	n.joinAt = n.now.Add(n.cfg.JoinTimeout)
	n.eachLeaf(func(h Handle) {
		p, ok := n.peers[h.ID]
		if !ok {
			p = &peer{h: h}
			n.peers[h.ID] = p
		}
		n.announce(h, p)
	})
	n.table.Each(func(h Handle, _ time.Duration) {
		if !n.leaf.Contains(h.ID) {
			n.send(h, &message{Type: mAnnounce})
		}
	})
	n.checkJoined()
}

// announce asks leaf member h to confirm us. The announce doubles as a liveness probe: a
// member that does not answer is probed and, if silent, declared dead, which is what lets a
// join finish when the leaf set it was given names a node that just failed.
func (n *Node) announce(h Handle, p *peer) {
	n.awaitingAck[h.ID] = true
	n.send(h, &message{Type: mAnnounce, Flag: true})
	p.lastHeard = n.now
	if p.probeSeq == 0 {
		p.probeSeq = announceProbe
		p.probeAt = n.now.Add(2 * n.cfg.ProbeTimeout)
		n.leafCheckAt = earlierOf(n.leafCheckAt, p.probeAt)
	}
}

// announceProbe marks a peer whose outstanding "probe" is our announce.
const announceProbe = ^uint64(0)

// checkJoined makes a joining node ready once every current leaf member has confirmed it;
// members that left the leaf set (a closer node displaced them) no longer count.
func (n *Node) checkJoined() {
	if n.phase != phaseAnnounced {
		return
	}
	for _, side := range [2][]Handle{n.leaf.right, n.leaf.left} {
		for _, h := range side {
			if n.awaitingAck[h.ID] {
				return
			}
		}
	}
	clear(n.awaitingAck)
	n.becomeReady()
}
