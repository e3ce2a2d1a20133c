package past

import (
	"errors"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// What a "not found" proves.
//
// Every replica of a key saying it holds no copy proves the object absent only when those
// replicas are the ones that were given it, or got it from them. That fails when a node that
// would be among the key's replicas vanished lately: it crashed, or a partition cut it off,
// and its copy went with it. During a partition that cut off every holder, the nodes on this
// side never get a copy. A replica knows of such losses from its own leaf set (members that
// left it within LossMemory), and at its start from the nodes it knew before (Config.Known)
// that are not back yet.
//
// Such a replica answers "none here, unsettled", and a lookup that found nothing reports
// ErrUnsettled along with ErrNotFound. Readers that act on absence (a recipient lookup
// refusing mail for good) treat it as "try again later"; the others see ErrNotFound as before.

// ErrUnsettled marks a lookup that found no copy while a node it asked had lately lost a
// node that may hold one.
var ErrUnsettled = errors.New("past: replica set changed lately; absence not proven")

// noteLosses records which leaf-set members are gone from the new leaf set, forgets those
// that are back, and drops losses older than LossMemory. The nodes known from before the start
// count from the first leaf set.
func (n *Node) noteLosses(left, right []pastry.Handle) {
	if !n.ready {
		for id, at := range n.lost {
			if at.IsZero() {
				n.lost[id] = n.now
			}
		}
	}
	now := make(map[ids.ID]bool, len(left)+len(right))
	for _, side := range [2][]pastry.Handle{left, right} {
		for _, h := range side {
			now[h.ID] = true
			delete(n.lost, h.ID)
		}
	}
	for _, side := range [2][]pastry.Handle{n.left, n.right} {
		for _, h := range side {
			if !now[h.ID] && h.ID != n.self.ID {
				n.lost[h.ID] = n.now
			}
		}
	}
	for id, at := range n.lost {
		if n.now.Sub(at) >= n.cfg.LossMemory {
			delete(n.lost, id)
		}
	}
}

// unsettled reports whether this node's "no copy of key here" may be wrong: see the top of
// this file.
func (n *Node) unsettled(key ids.ID) bool {
	if len(n.lost) == 0 {
		return false
	}
	rs := n.replicaSet(key)
	for id, at := range n.lost {
		if n.now.Sub(at) >= n.cfg.LossMemory {
			continue
		}
		if len(rs) < n.cfg.Replicas || ids.Closer(key, id, rs[len(rs)-1].ID) {
			return true
		}
	}
	return false
}
