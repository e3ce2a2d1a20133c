package past

import (
	"slices"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// Hand-over when this node leaves the ring cleanly (pastry.Node.Leave).
//
// Maintenance is a pull protocol, and the neighbours that drop a node that left pull what
// they are now responsible for from the remaining replicas, after MaintenanceDelay. That is
// enough while the other k-1 copies exist; the hand-over covers the objects of which the
// leaver's copy is the only one, or the newest (a replica that was down, or a write that
// reached only a quorum): the leaver offers each neighbour the keys on its own arc that the
// neighbour will be a replica of once the leaver is gone, as an unsolicited sync-offer. A
// neighbour fetches what it lacks or holds older, exactly as in a maintenance round (fetches
// are validated like inserts; nothing is pushed), and the leaver serves those fetches, and
// lookups, until its driver stops. The leaver's own maintenance rounds stop: it must not
// fetch anything any more.
//
// Offers go out after the overlay's leave on the same connections. Their Op carries
// handoverOp. A neighbour computes its arc without the leaver, whether or not its leaf set
// shows the leave yet, and answers every offer with a fetch that echoes its Op, an empty one
// when it lacks nothing: the leaver knows when all are done (HandoverPending) instead of
// guessing from silence. A neighbour that never answers (down,
// or its links to us broke) leaves the wait to the caller's grace.

// leaveOfferLimit bounds the keys offered to one neighbour (in offers of MaxKeysPerExchange):
// the hand-over has seconds, not the time a whole store takes; the neighbours' maintenance
// pulls the rest from the other replicas.
const leaveOfferLimit = 8 * maxKeys

// Leave stops maintenance and offers the neighbours the objects they take over. It returns
// the number of keys offered (a key offered to two neighbours counts twice).
func (n *Node) Leave() (offered int) {
	if !n.ready {
		return 0
	}
	n.ready = false // no more maintenance rounds: see Tick
	arc, whole := n.responsibleArc()
	if whole {
		arc = store.WholeRing(n.cfg.Ring)
	}
	// The k nearest on each side are everyone a key of our arc can move to.
	var near []pastry.Handle
	for i := 0; i < n.cfg.Replicas; i++ {
		for _, side := range [2][]pastry.Handle{n.right, n.left} {
			if i < len(side) && !slices.ContainsFunc(near, func(h pastry.Handle) bool { return h.ID == side[i].ID }) {
				near = append(near, side[i])
			}
		}
	}
	if len(near) == 0 {
		return 0
	}
	offers := make(map[ids.ID][]KeySeq, len(near))
	for meta, err := range n.st.Range(arc) {
		if err != nil {
			break
		}
		if meta.Expired(n.now) {
			continue
		}
		for _, h := range closestOf(near, meta.Key.ID, n.cfg.Replicas) {
			if len(offers[h.ID]) < leaveOfferLimit {
				offers[h.ID] = append(offers[h.ID], KeySeq{ID: meta.Key.ID, Seq: meta.Seq})
			}
		}
	}
	for _, h := range near {
		keys := offers[h.ID]
		offered += len(keys)
		for len(keys) > 0 {
			batch := keys[:min(len(keys), n.cfg.MaxKeysPerExchange)]
			keys = keys[len(batch):]
			op := handoverOp | uint64(len(n.handover)+1)
			n.handover[op] = h.ID
			n.send(h, &message{Type: mSyncOffer, Op: op, Key: ids.Key{Ring: n.cfg.Ring}, Keys: batch}, true)
		}
	}
	return offered
}

// HandoverPending is the number of hand-over offers (Leave) no neighbour has answered yet.
// Each answer is a fetch this node serves at once; at zero the neighbours have all they asked
// for on its way to them.
func (n *Node) HandoverPending() int { return len(n.handover) }

// arcWithout is responsibleArc for the leaf set without node id (a neighbour leaving).
func (n *Node) arcWithout(id ids.ID) (store.Arc, bool) {
	l, r := n.left, n.right
	defer func() { n.left, n.right = l, r }()
	drop := func(hs []pastry.Handle) []pastry.Handle {
		return slices.DeleteFunc(slices.Clone(hs), func(h pastry.Handle) bool { return h.ID == id })
	}
	n.left, n.right = drop(l), drop(r)
	return n.responsibleArc()
}

// closestOf returns the k members of hs numerically closest to key, closest first.
func closestOf(hs []pastry.Handle, key ids.ID, k int) []pastry.Handle {
	c := slices.Clone(hs)
	slices.SortFunc(c, func(a, b pastry.Handle) int {
		if a.ID == b.ID {
			return 0
		}
		if ids.Closer(key, a.ID, b.ID) {
			return -1
		}
		return 1
	})
	return c[:min(k, len(c))]
}

// Leave runs Node.Leave and sends the offers. Call it after the overlay's Leave, and keep the
// driver running while neighbours fetch.
func (d *Driver) Leave() (offered int) {
	d.loop.Mu.Lock()
	if d.loop.Stopped() {
		d.loop.Mu.Unlock()
		return 0
	}
	d.node.now = d.clock.Now()
	offered = d.node.Leave()
	d.flushLocked(false)
	return offered
}
