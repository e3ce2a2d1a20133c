package pastry

import (
	"fmt"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Leaving the ring.
//
// A node that stops cleanly tells its leaf set and its routing-table entries that it is gone
// (mLeave, which carries its leaf set), so they drop it at once instead of after a failure
// detector's 15 to 30 seconds of probes. Each receiver treats the leave as a confirmed failure:
// the leaver goes from every table into the dead list (so that gossip which still lists it is
// ignored until the node itself is heard again, exactly as after a failure), hops awaiting
// its acknowledgement are re-routed at once, and the leaver's leaf set refills the receiver's
// without a round trip (the usual leaf request to the far ends follows, as after a failure).
//
// The leave is believed only from the leaver itself: the transport authenticates every frame's
// sender (tcp: the peer's ring certificate; simnet: by construction) and Step already rejects a
// frame whose claimed sender differs; a leave whose sender the transport could not vouch for is
// rejected too. Nobody can make a ring forget a node that is still there.
//
// After Leave a node routes, probes and answers nothing: it is gone. Every frame it still sends
// carries the gone flag, and it keeps exchanging only direct messages with nodes that have not
// left, for the applications' hand-over (PAST offers the objects its neighbours become
// responsible for, and serves their fetches, for a short grace). A receiver delivers such a
// message without counting its sender alive. A restart is a new Node with the same id: it
// joins as usual, and its first frame (without the gone flag) takes it out of the dead lists.

// Leave takes this node out of the ring. It reports how many leaf-set members and how many
// other nodes (routing-table entries) were told. Calling it again does nothing.
func (n *Node) Leave(now time.Time) (leaf, others int) {
	n.now = now
	if n.phase == phaseLeft {
		return 0, 0
	}
	started := n.phase != phaseIdle
	n.phase = phaseLeft // before sending: every frame from now on carries the gone flag
	clear(n.pending)
	n.pendingQ = nil
	n.buffered = nil
	n.indirect = nil
	clear(n.awaitingAck)
	if !started {
		return 0, 0
	}
	members := n.leaf.Members()
	for _, h := range members {
		n.send(h, &message{Type: mLeave, Handles: members})
		leaf++
	}
	n.table.Each(func(h Handle, _ time.Duration) {
		if !n.leaf.Contains(h.ID) {
			n.send(h, &message{Type: mLeave})
			others++
		}
	})
	return leaf, others
}

// Left reports whether Leave was called.
func (n *Node) Left() bool { return n.phase == phaseLeft }

// stepLeft handles a frame that reaches a node after its Leave. Direct messages from nodes
// still in the ring are the applications' hand-over and are delivered. Any other frame comes
// from a node that does not know we left (it has us in its routing table, which we cannot
// know, or it heard of us from someone whose view is behind): it is told, so that it drops us
// and re-routes now rather than after a hop timeout or its probes. The answer is one frame per
// frame received, like the probe reply it replaces, and a node told forgets us at once, so
// the exchange ends there.
func (n *Node) stepLeft(m *message) {
	if m.Gone {
		return // two nodes that left have nothing to say to each other
	}
	if m.Type == mDirect {
		n.events = append(n.events, Event{Kind: EventDirect, Payload: m.Payload, Origin: m.From})
		return
	}
	if m.From.Addr != "" {
		// With our leaf set: the sender may be repairing its own around us (it learned of us
		// from a neighbour that left at the same moment), and our neighbours are its candidates.
		n.send(m.From, &message{Type: mLeave, Handles: n.leaf.Members()})
	}
}

// stepGone handles a frame from a node that says it left: a leave, or a direct message of its
// hand-over. Its sender is never counted alive.
func (n *Node) stepGone(from transport.From, m *message) error {
	if from.ID.IsZero() {
		n.stats.Rejected++
		return fmt.Errorf("%w: a leave from %s that the transport did not authenticate", ErrSpoofed, m.From.ID.Short())
	}
	left, right := len(n.leaf.left), len(n.leaf.right)
	n.forget(m.From)
	if m.Type == mLeave && len(m.Handles) > 0 {
		n.refill(m.Handles, left, right)
	}
	if m.Type == mDirect {
		n.events = append(n.events, Event{Kind: EventDirect, Payload: m.Payload, Origin: m.From})
	}
	return nil
}

// refill offers the leaver's leaf set as candidates, and probes at once each one that enters
// our leaf set: it may be leaving at this very moment too (a rack powered down), without
// having told us because we were not yet its neighbour, and our record of having heard from
// it lately (as a routing-table entry) must not delay finding out. A node that left answers
// the probe with its leave.
//
// The hole the leaver left (sides shorter than left and right, their lengths before it was
// dropped) is filled at once with the nearest candidates, taken at the leaver's word, so that
// the leaf set is whole again within this one message. Beyond the hole the candidates are
// gossip like any other, verified before they are added (considerCandidates), and so is the
// hole while a member placed that way has not answered yet: a hostile node that leaves and
// comes back again and again places one unproven member at a time, which the probe below
// soon declares dead.
func (n *Node) refill(hs []Handle, left, right int) {
	ver := n.leafVer
	n.fillVacated(hs, right, true)
	n.fillVacated(hs, left, false)
	n.considerCandidates(hs)
	if n.leafVer == ver {
		return
	}
	for _, h := range hs {
		p, ok := n.peers[h.ID]
		if !ok || p.probeSeq != 0 || !n.leaf.Contains(h.ID) || n.now.Sub(p.lastHeard) < leafCheckEvery {
			continue
		}
		p.probeSeq = n.probe(p.h, false)
		p.probeAt = n.now.Add(n.cfg.ProbeTimeout)
		n.leafCheckAt = earlierOf(n.leafCheckAt, p.probeAt)
	}
}

// fillVacated adds the candidates nearest to this node on one side of the leaf set (clockwise:
// the right side) until that side is want members long again.
func (n *Node) fillVacated(hs []Handle, want int, clockwise bool) {
	if len(n.filled) > 0 {
		return
	}
	side, dist := func() int { return len(n.leaf.left) }, ccw
	if clockwise {
		side, dist = func() int { return len(n.leaf.right) }, ids.Clockwise
	}
	for side() < want {
		var best Handle
		var bestDist ids.ID
		for _, h := range hs {
			if h.ID == n.self.ID || h.ID.IsZero() || h.Addr == "" || n.leaf.Contains(h.ID) ||
				n.dead.has(h.ID) || n.suspected(h.ID) {
				continue
			}
			if d := dist(n.self.ID, h.ID); best.ID.IsZero() || ids.Less(d, bestDist) {
				best, bestDist = h, d
			}
		}
		if best.ID.IsZero() {
			return
		}
		n.add(best, 0, false)
		if !n.leaf.Contains(best.ID) {
			return
		}
		n.filled[best.ID] = struct{}{}
	}
}

// forget drops a node that left from every table, as declareDead does after failure
// detection, and re-routes the messages still waiting for its hop acknowledgement.
func (n *Node) forget(h Handle) {
	if n.dead.has(h.ID) && !n.knows(h.ID) {
		return // already forgotten: one leave per frame of the hand-over is enough
	}
	n.declareDead(h)
	due := false
	for _, p := range n.pending {
		if p.next == h.ID {
			p.deadline = n.now
			due = true
		}
	}
	if due {
		n.checkPending()
	}
}

// knows reports whether id is in any of the node's tables.
func (n *Node) knows(id ids.ID) bool {
	if n.leaf.Contains(id) || n.table.entry(id) != nil {
		return true
	}
	if _, ok := n.peers[id]; ok {
		return true
	}
	_, ok := n.joining[id]
	return ok
}
