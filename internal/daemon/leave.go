package daemon

import (
	"time"

	"epost/internal/past"
	"epost/internal/pastry"
)

// Leaving the ring on a clean stop.
//
// The overlay tells the leaf set and the routing table that the node is gone (pastry's
// Leave): they drop it at once instead of after 15 to 30 s of failure detection, and PAST and
// Glacier on each of them see the leaf-set change and rebalance. PAST then offers each
// neighbour the objects it takes over, and the node keeps serving the neighbours' fetches
// (and lookups) while they come. Every neighbour answers every offer, with an empty fetch when
// it lacks nothing, so the node waits until all have answered and it sent nothing for
// leaveQuiet (its last replies are written by then), and never longer than Timers.LeaveGrace
// (a neighbour that went down meanwhile never answers). With nothing to hand over it waits
// only leaveFlush, for the leave frames to leave the transport's queues before it closes.

// MaxLeaveGrace bounds Timers.LeaveGrace: a stop must stay quick.
const MaxLeaveGrace = 10 * time.Second

const (
	leaveQuiet = 500 * time.Millisecond // after the last answer: the last replies are written
	leaveFlush = 100 * time.Millisecond // the leave frames are written by then on any live link
	leavePoll  = 25 * time.Millisecond
)

// leave runs the leave and the hand-over grace, and logs what it did. It is a no-op when the
// overlay never started.
func (n *Node) leave(drv *pastry.Driver) {
	if drv == nil || !n.joined.Load() {
		return
	}
	start := time.Now()
	leaf, others := drv.Leave()
	var pd *past.Driver
	if a := n.apps.Load(); a != nil {
		pd = a.past
	}
	state := func() (sent uint64, pending int) {
		if pd != nil {
			pd.With(func(pn *past.Node) { sent, pending = pn.Stats().MaintMsgs, pn.HandoverPending() })
		}
		return sent, pending
	}
	offered := 0
	if pd != nil {
		offered = pd.Leave()
	}
	afterOffers, pending := state()
	grace := n.timers.LeaveGrace
	last, lastAt := afterOffers, time.Now()
	for {
		time.Sleep(leavePoll)
		now := time.Now()
		m, p := state()
		if m != last {
			last, lastAt = m, now
		}
		pending = p
		if now.Sub(start) >= grace ||
			(offered == 0 && now.Sub(start) >= leaveFlush) ||
			(offered > 0 && pending == 0 && now.Sub(lastAt) >= leaveQuiet) {
			break
		}
	}
	n.log.Info("left the ring", "node", n.rn.ID.Short(), "leaf_members_told", leaf, "others_told", others,
		"keys_offered", offered, "handover_replies", last-afterOffers, "unanswered_offers", pending,
		"took", time.Since(start).Round(time.Millisecond))
}
