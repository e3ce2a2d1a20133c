package post

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"time"

	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/wire"
)

// lookup is PAST's Lookup with the archive behind it: on a miss, a local user whose archive
// holds key restores it from Glacier (see the top of this file).
func (n *Node) lookup(key ids.Key, cb func(past.Object, error)) {
	n.st.Lookup(key, func(obj past.Object, err error) {
		if err == nil || !n.archiveOn() {
			cb(obj, err)
			return
		}
		n.restore(key, err, cb)
	})
}

// lookupLatest is PAST's LookupLatest with the archive behind it: on a miss a local user's
// archive restores the object (as lookup does), and with deep a mutable object found in PAST
// is also compared with the version the archive holds: the newer wins, and goes back into
// PAST. A node without its own record of a log's head (a lost disk) opens it this way, so
// that it never starts from an older head than one the ring or Glacier still has.
func (n *Node) lookupLatest(key ids.Key, deep bool, cb func(past.LookupResult)) {
	n.st.LookupLatest(key, func(r past.LookupResult) {
		if !n.archiveOn() {
			cb(r)
			return
		}
		if r.Err != nil {
			n.restore(key, r.Err, func(obj past.Object, err error) {
				if err == nil {
					r.Object, r.Err = obj, nil
					r.Versions = []past.Version{{Seq: obj.Seq, Hash: sha256.Sum256(obj.Payload), Holders: 0, Object: obj}}
				}
				cb(r)
			})
			return
		}
		if !deep {
			cb(r)
			return
		}
		u, g := n.archiveHolding(key)
		if u == nil {
			cb(r)
			return
		}
		u.fetchAggregate(g, func(agg *glacier.Aggregate, err error) {
			if err != nil {
				n.cfg.Log.Warn("post: cannot compare a head with its archived version", "key", key.Full(), "err", err)
				cb(r)
				return
			}
			obj, err := n.fromAggregate(agg, key)
			if err != nil || obj.Seq <= r.Object.Seq {
				cb(r)
				return
			}
			n.cfg.Log.Warn("post: Glacier holds a newer version than PAST's replicas; restoring it", "key", key.Full(), "past_seq", r.Object.Seq, "glacier_seq", obj.Seq)
			n.st.Insert(obj, nil)
			r.Versions = append([]past.Version{{Seq: obj.Seq, Hash: sha256.Sum256(obj.Payload), Object: obj}}, r.Versions...)
			r.Object = obj
			cb(r)
		})
	})
}

// archiveHolding names the local user whose archive indexes key, and the aggregate.
func (n *Node) archiveHolding(key ids.Key) (*User, ids.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, addr := range slices.Sorted(maps.Keys(n.users)) {
		c := n.users[addr]
		if c.arch == nil || !c.arch.ready {
			continue
		}
		if g, ok := c.arch.agg.Locate(key); ok {
			return c, g
		}
	}
	return nil, ids.ID{}
}

// restore gets key back from a local user's archive after PAST missed it (perr), and
// stores it in PAST again: from the archive's memory while its aggregate is not yet stored
// (an object whose replicas all lost it within ArchiveFlush of its write), else from Glacier.
func (n *Node) restore(key ids.Key, perr error, cb func(past.Object, error)) {
	if u, m, ok := n.archiveHeld(key); ok {
		obj, err := n.fromMember(key, m.Data, m.ContentHash)
		if err == nil {
			n.cfg.Log.Warn("post: PAST lost an object not yet archived; storing it again from the archive's memory", "user", u.addr, "key", key.Full(), "past", perr)
			n.reinsert(obj)
			cb(obj, nil)
			return
		}
		n.cfg.Log.Warn("post: an archived object held in memory does not check", "user", u.addr, "key", key.Full(), "err", err)
	}
	u, g := n.archiveHolding(key)
	if u == nil {
		cb(past.Object{}, perr)
		return
	}
	u.fetchAggregate(g, func(agg *glacier.Aggregate, err error) {
		if err == nil {
			var obj past.Object
			if obj, err = n.fromAggregate(agg, key); err == nil {
				n.cfg.Log.Debug("post: restored an object from Glacier", "user", u.addr, "key", key.Full(), "past", perr)
				n.reinsert(obj)
				cb(obj, nil)
				return
			}
		}
		cb(past.Object{}, fmt.Errorf("%w (archive: %v)", perr, err))
	})
}

// archiveHeld finds key among the members a local user's archive holds in memory
// (glacier.Aggregator.Held), or among those waiting for the archive to be ready.
func (n *Node) archiveHeld(key ids.Key) (*User, glacier.Member, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, addr := range slices.Sorted(maps.Keys(n.users)) {
		c := n.users[addr]
		if c.arch == nil || c.arch.agg == nil {
			continue
		}
		if m, ok := c.arch.agg.Held(key); ok {
			return c, m, true
		}
		for _, m := range c.arch.backlog {
			if m.Key == key {
				m.Data = slices.Clone(m.Data)
				return c, m, true
			}
		}
	}
	return nil, glacier.Member{}, false
}

// reinsert stores a restored object in PAST again.
func (n *Node) reinsert(obj past.Object) {
	n.st.Insert(obj, func(r past.InsertResult) {
		n.mu.Lock()
		if r.Err == nil {
			n.stats.ArchiveRestored++
		}
		n.mu.Unlock()
		if r.Err != nil {
			n.cfg.Log.Warn("post: re-inserting a restored object failed", "key", obj.Key.Full(), "err", r.Err)
		}
	})
}

// fromAggregate extracts member key from agg and checks it as a PAST replica would.
func (n *Node) fromAggregate(agg *glacier.Aggregate, key ids.Key) (past.Object, error) {
	data, err := agg.Member(key)
	if err != nil {
		return past.Object{}, err
	}
	i := slices.IndexFunc(agg.TOC, func(e glacier.TOCEntry) bool { return e.ID == key.ID })
	return n.fromMember(key, data, agg.TOC[i].ContentHash)
}

// fromMember rebuilds archived member key (its bytes data, which it may keep) as a PAST
// object and checks it as a PAST replica would.
func (n *Node) fromMember(key ids.Key, data []byte, contentHash bool) (past.Object, error) {
	var obj past.Object
	var err error
	if contentHash {
		obj = past.NewContent(n.cfg.Ring, data, n.now().Add(n.cfg.ContentLease))
	} else if obj, err = decodeArchived(key, data); err != nil {
		return past.Object{}, err
	}
	if obj.Key != key {
		return past.Object{}, fmt.Errorf("%w: archived object is not %s", ErrMalformed, key.Full())
	}
	if err := past.Validate(&obj, n.cfg.Ring, n.now()); err != nil {
		return past.Object{}, err
	}
	return obj, nil
}

// fetchAggregate retrieves aggregate g of u from Glacier, through a short cache.
func (u *User) fetchAggregate(g ids.ID, cb func(*glacier.Aggregate, error)) {
	n := u.n
	now := n.now()
	n.mu.Lock()
	if c, ok := n.aggCache[g]; ok && now.Sub(c.at) < aggCacheTTL {
		n.mu.Unlock()
		cb(c.agg, nil)
		return
	}
	if ws, ok := n.aggWait[g]; ok {
		n.aggWait[g] = append(ws, cb)
		n.mu.Unlock()
		return
	}
	n.aggWait[g] = []func(*glacier.Aggregate, error){cb}
	n.mu.Unlock()
	n.cfg.Archive.Retrieve(g, func(blob []byte, man *glacier.Manifest, err error) {
		var agg *glacier.Aggregate
		if err == nil {
			agg, err = glacier.DecodeAggregate(blob)
		}
		n.mu.Lock()
		ws := n.aggWait[g]
		delete(n.aggWait, g)
		if err == nil {
			if len(n.aggCache) >= aggCacheMax {
				for k, c := range n.aggCache {
					if now.Sub(c.at) >= aggCacheTTL || len(n.aggCache) >= aggCacheMax {
						delete(n.aggCache, k)
					}
				}
			}
			n.aggCache[g] = cachedAgg{agg: agg, at: n.now()}
		}
		n.mu.Unlock()
		for _, w := range ws {
			w(agg, err)
		}
	})
}

// encodeArchived is the member form of a non-content object: type, seq, expiry, aux, payload.
func encodeArchived(obj *past.Object) []byte {
	w := wire.Writer{B: make([]byte, 0, 32+len(obj.Aux)+len(obj.Payload))}
	w.U8(obj.Type)
	w.U64(obj.Seq)
	exp := int64(0)
	if !obj.Expiry.IsZero() {
		exp = obj.Expiry.UnixNano()
	}
	w.I64(exp)
	w.Bytes(obj.Aux)
	w.B = append(w.B, obj.Payload...)
	return w.B
}

func decodeArchived(key ids.Key, b []byte) (past.Object, error) {
	r := wire.NewReader(b)
	obj := past.Object{}
	obj.Key = key
	obj.Type = r.U8()
	obj.Seq = r.U64()
	if exp := r.I64(); exp != 0 {
		obj.Expiry = time.Unix(0, exp)
	}
	obj.Aux = r.Bytes(past.MaxObjectSize, "aux")
	if err := r.Err(); err != nil {
		return past.Object{}, fmt.Errorf("%w: archived object: %v", ErrMalformed, err)
	}
	obj.Payload = slices.Clone(r.B)
	return obj, nil
}
