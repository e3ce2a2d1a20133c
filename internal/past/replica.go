package past

import (
	"crypto/sha256"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// The replica and root side of inserts, lookups and refreshes.

func hashOf(b []byte) store.Hash { return sha256.Sum256(b) }

// onLocate answers, as the key's root, with the replica set seen from here.
func (n *Node) onLocate(from pastry.Handle, m *message) {
	if m.Key.Ring != n.cfg.Ring {
		n.send(from, &message{Type: mLocateReply, Op: m.Op, Key: m.Key, Code: codeWrongRing}, false)
		return
	}
	reply := &message{Type: mLocateReply, Op: m.Op, Key: m.Key, Handles: n.replicaSet(m.Key.ID)}
	if m.Flag {
		// A deduplicating insert asks whether we hold it already (content objects only:
		// their key names their bytes).
		if meta, err := n.st.Meta(m.Key); err == nil && Type(meta.Type) == TypeContent && !meta.Expired(n.now) {
			reply.Flag = true
		}
	}
	n.send(from, reply, false)
}

// onStore validates and stores each object, then acknowledges each, after the durable write.
func (n *Node) onStore(from pastry.Handle, m *message) {
	for _, obj := range m.Objects {
		if m.Flag {
			n.onStoreProbe(from, m, obj)
			continue
		}
		if m.Hint && !n.isReplica(obj.Key) {
			n.send(from, &message{Type: mStoreAck, Op: m.Op, Key: obj.Key, Code: codeNotResponsible}, false)
			continue
		}
		err := n.accept(obj)
		ack := &message{Type: mStoreAck, Op: m.Op, Key: obj.Key, Code: codeOK}
		if err != nil {
			ack.Code = codeOf(err)
			ack.Detail = truncate(err.Error(), maxDetail)
			if ack.Code == codeStale {
				// Show the writer the version that beat it, so that it can read it and
				// continue from it instead of guessing (package post's log writer).
				if cur, err := n.st.Get(obj.Key); err == nil && !cur.Expired(n.now) {
					ack.Objects = []Object{cur}
				}
			}
		}
		n.send(from, ack, false)
	}
}

// isReplica reports whether this node is among key's k closest by its own leaf-set view.
func (n *Node) isReplica(key ids.Key) bool {
	for _, h := range n.replicaSet(key.ID) {
		if h.ID == n.self.ID {
			return true
		}
	}
	return false
}

// onStoreProbe extends the lease of a content object we hold, in place of storing the bytes
// again (InsertDedupe), or says we lack it.
func (n *Node) onStoreProbe(from pastry.Handle, m *message, hdr Object) {
	ack := &message{Type: mStoreAck, Op: m.Op, Key: hdr.Key, Code: codeNotFound}
	meta, err := n.st.Meta(hdr.Key)
	if err == nil && Type(meta.Type) == TypeContent && Type(hdr.Type) == TypeContent && hdr.Key.Ring == n.cfg.Ring && !meta.Expired(n.now) {
		exp := hdr.Expiry
		if limit := n.now.Add(n.cfg.MaxLease); exp.IsZero() || exp.After(limit) {
			exp = limit
		}
		if err := n.extendLease(hdr.Key, meta, exp); err == nil {
			ack.Code = codeOK
		} else {
			ack.Code = codeStoreFailed
		}
	}
	n.send(from, ack, false)
}

// onDelete drops a pending object whose recipient authorised it. The root passes a routed
// delete on to the replica set, like a refresh; a replica that misses it may offer the
// object back through maintenance, and the recipient, who files each notification once,
// then drops it again.
func (n *Node) onDelete(from pastry.Handle, m *message, routed bool) {
	c := codeOK
	meta, err := n.st.Meta(m.Key)
	switch {
	case m.Key.Ring != n.cfg.Ring:
		c = codeWrongRing
	case err != nil:
		c = codeNotFound
	default:
		if err := checkDrop(&meta, m.Proof); err != nil {
			c = codeForbidden
		} else if err := n.deletePending(m.Key); err != nil {
			c = codeStoreFailed
		} else if n.cfg.Observer != nil {
			n.cfg.Observer.Removed(m.Key)
		}
	}
	if !routed || !m.Flag {
		return
	}
	if c == codeOK || c == codeNotFound {
		for _, h := range n.replicaSet(m.Key.ID) {
			if h.ID != n.self.ID {
				n.send(h, &message{Type: mDelete, Key: m.Key, Proof: m.Proof}, false)
			}
		}
	}
	n.send(from, &message{Type: mDeleteReply, Op: m.Op, Key: m.Key, Code: c}, false)
}

// onLookup answers a lookup routed here (as root) or sent here directly (as a replica the
// root passed it on to, or the client asked). The root names its replica set, and passes the
// lookup on to the others, whenever they must answer too: it lacks the object, or the object
// is mutable and the newest version may be elsewhere (lookup.go). A replica's answer to a
// lookup passed on by the root is flagged, so the client can tell it from the root's.
func (n *Node) onLookup(from pastry.Handle, m *message, routed bool) {
	to := from
	if !m.Origin.ID.IsZero() && m.Origin.Addr != "" {
		to = m.Origin // a routed lookup names its origin so that a forwarder can answer too
	}
	reply := &message{Type: mLookupReply, Op: m.Op, Key: m.Key, Flag: !routed && m.Flag}
	obj, err := n.st.Get(m.Key)
	found := err == nil && !obj.Expired(n.now)
	if found {
		reply.Objects = []Object{obj}
	} else {
		reply.Code = codeNotFound
		if n.unsettled(m.Key.ID) {
			reply.Detail = detailUnsettled
		}
	}
	if routed && (!found || mutable(Type(obj.Type))) {
		// Nearest to the key first.
		for _, h := range n.replicaSet(m.Key.ID) {
			if h.ID == n.self.ID {
				continue
			}
			reply.Handles = append(reply.Handles, h)
			if h.ID != to.ID { // a client that is a replica asks itself
				n.send(h, &message{Type: mLookup, Op: m.Op, Key: m.Key, Origin: to, Flag: true}, false)
			}
		}
	}
	n.send(to, reply, false)
}

// onRefresh extends a lease. The root passes a routed refresh on to the rest of the replica
// set and answers the client; replicas missing the refresh are healed by maintenance, since an
// object whose lease ran out here is fetched again from a replica that has the longer lease.
func (n *Node) onRefresh(from pastry.Handle, m *message, routed bool) {
	if m.Key.Ring != n.cfg.Ring {
		if routed {
			n.send(from, &message{Type: mRefreshReply, Op: m.Op, Key: m.Key, Code: codeWrongRing}, false)
		}
		return
	}
	exp := fromUnixNano(m.Expiry)
	if limit := n.now.Add(n.cfg.MaxLease); exp.IsZero() || exp.After(limit) {
		exp = limit
	}
	c := codeOK
	if meta, err := n.st.Meta(m.Key); err != nil || meta.Expired(n.now) {
		c = codeNotFound
	} else if err := n.extendLease(m.Key, meta, exp); err != nil {
		c = codeStoreFailed
	}
	if !routed || !m.Flag {
		return
	}
	for _, h := range n.replicaSet(m.Key.ID) {
		if h.ID != n.self.ID {
			n.send(h, &message{Type: mRefresh, Key: m.Key, Expiry: m.Expiry}, false)
		}
	}
	n.send(from, &message{Type: mRefreshReply, Op: m.Op, Key: m.Key, Code: c}, false)
}

func truncate(s string, max int) string {
	if len(s) > max {
		return s[:max]
	}
	return s
}

// deletePending drops a pending notification its recipient filed. The drop needs no fsync
// of its own (LazyStore): if a crash loses it, the notification is offered again and the
// recipient, who has it in its received set, drops it again.
func (n *Node) deletePending(k ids.Key) error {
	if lz, ok := n.st.(LazyStore); ok {
		lz.DeleteLazy(k)
		return nil
	}
	return n.st.Delete(k)
}
