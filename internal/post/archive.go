package post

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"epost/internal/content"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/wire"
)

// The archive: every local user's objects also go to Glacier (DESIGN.md layer 7), so that mail
// survives the loss of all of an object's PAST replicas at once, and a node that lost its
// disk gets its user's folders back from the user's keys alone.
//
// What is archived. Whatever the user's node writes for the user once its PAST insert is
// acknowledged: log heads, log entries, head backups, snapshots, the parts of messages the
// user appends (User.Put), and, when a delivered message is filed, the chunks of its parts
// (fetched once more: the sender stored them, but only the recipient's archive can find them
// again). Pending notifications are not (they live until filed, and the sender's node
// retries).
//
// How. The members go into the user's glacier.Aggregator (ePOST's aggregation: batches of at
// most 512,000 bytes or 50 objects; a batch waits at most ArchiveFlush), and each aggregate is
// erasure-coded under a manifest signed with the user's key. Aggregates are chained: each
// links to the previous one (glacier.AggregateKey(owner, seq)), and after every insert the
// node writes the Glacier object "root" (owner-bound like the aggregates, a version that only
// grows) naming the newest aggregate's seq. So the owner's public key is enough to find
// everything again: root, then forward probes for aggregates newer than the root says (the
// root may lag behind), then the chain back.
//
// Fallback. Every PAST lookup POST makes (heads, entries, snapshots, chunks) goes through
// Node.lookup: on a miss, an online local user's index (member key → aggregate) names the
// aggregate; it is retrieved from Glacier (m fragments, each checked against the owner's
// manifest, the object against its hash), the member is checked as PAST's replicas check it
// (content hash, owner signature) and re-inserted into PAST.
//
// Recovery. When a user starts on a node (AddUser), the index is rebuilt from Glacier before
// anything is archived; a first start on a node (fresh: a node that lost its disk, or a user
// moved to a new machine with the key backup) waits for it before it looks for the user's
// logs, so that a log lost from PAST is found in the archive and never created anew.
//
// Leases. Members carry their PAST lease; RefreshLeases raises them in the index, and the
// periodic archive round renews aggregate leases (new manifest version, same blob), repacks
// aggregates that are mostly dead and forgets expired ones (glacier.Aggregator).

// Archive is what POST needs from Glacier; *glacier.Driver implements it.
type Archive interface {
	Codec() *glacier.Codec
	Insert(man *glacier.Manifest, frags [][]byte, cb func(glacier.InsertResult))
	Retrieve(key ids.ID, cb func([]byte, *glacier.Manifest, error))
}

const (
	archiveRootName  = "root"
	archiveRootMagic = "epost/v1/archive-root\x00"
	// archiveMaint is how often renewals, repacks and expiry run (cheap, in memory).
	archiveMaint = time.Hour
	// aggCacheTTL keeps a retrieved aggregate for the lookups that follow (a recovering user
	// reads many members of the same aggregate in a row).
	aggCacheTTL = time.Minute
	aggCacheMax = 16
)

// userArchive is a user's aggregation state. Guarded by the node's mutex.
type userArchive struct {
	agg       *glacier.Aggregator
	ready     bool             // index restored from Glacier (or none found)
	backlog   []glacier.Member // kept before ready
	onReady   []func()
	inserting int    // aggregate and root inserts in flight (or waiting for a retry)
	newest    uint64 // highest aggregate seq stored
	rootVer   uint64
	lastMaint time.Time
}

type cachedAgg struct {
	agg *glacier.Aggregate
	at  time.Time
}

func (n *Node) archiveOn() bool { return n.cfg.Archive != nil }

// newArchive sets up u's archive (not ready until recoverArchive ends).
func (u *User) newArchive() error {
	cfg := glacier.DefaultAggregatorConfig(u.n.cfg.Ring, u.keys.Public().Signing)
	cfg.MaxAge = u.n.cfg.ArchiveFlush
	agg, err := glacier.NewAggregator(cfg)
	if err != nil {
		return err
	}
	u.n.mu.Lock()
	u.arch = &userArchive{agg: agg}
	u.n.mu.Unlock()
	return nil
}

// keep adds obj, just stored in PAST for u, to u's archive.
func (u *User) keep(obj past.Object) {
	n := u.n
	if !n.archiveOn() {
		return
	}
	m := glacier.Member{Key: obj.Key, Expiry: obj.Expiry}
	if m.Expiry.IsZero() {
		m.Expiry = n.now().Add(n.cfg.ContentLease)
	}
	if past.Type(obj.Type) == past.TypeContent {
		m.Data, m.ContentHash = obj.Payload, true
	} else {
		m.Data = encodeArchived(&obj)
	}
	n.mu.Lock()
	a := u.arch
	if a == nil {
		n.mu.Unlock()
		return
	}
	if !a.ready {
		m.Data = slices.Clone(m.Data)
		a.backlog = append(a.backlog, m)
		n.mu.Unlock()
		return
	}
	out, err := a.agg.Add(n.now(), m)
	n.stats.ArchiveKept++
	n.mu.Unlock()
	if err != nil {
		n.cfg.Log.Warn("post: cannot archive object", "user", u.addr, "key", obj.Key.Full(), "err", err)
		return
	}
	for _, g := range out {
		u.insertAggregate(g)
	}
}

// keepRefs archives the chunks of refs (parts of a message just filed).
func (u *User) keepRefs(refs []content.Ref) {
	n := u.n
	if !n.archiveOn() {
		return
	}
	for _, r := range refs {
		for _, k := range refKeys(r) {
			if obj, ok := n.st.LocalGet(k); ok {
				u.keep(obj)
				continue
			}
			n.st.Lookup(k, func(obj past.Object, err error) {
				if err != nil {
					n.cfg.Log.Warn("post: cannot fetch a part to archive it", "user", u.addr, "key", k.Full(), "err", err)
					return
				}
				u.keep(obj)
			})
		}
	}
}

// Put is Node.Put for u: the chunks also go to u's archive.
func (u *User) Put(data []byte, cb func(content.Ref, error)) { u.n.put(data, u.keep, cb) }

// Get is Node.Get (with the archive fallback of every local user).
func (u *User) Get(ref content.Ref, cb func([]byte, error)) { u.n.Get(ref, cb) }

// insertAggregate erasure-codes g under u's key and inserts it, retrying while it is current.
func (u *User) insertAggregate(g *glacier.Aggregate) {
	n := u.n
	man, frags, err := glacier.NewManifest(n.cfg.Archive.Codec(), u.keys.SigningKey(), n.cfg.Ring, g.Name, g.Version, g.Expiry, g.Blob)
	if err != nil {
		n.cfg.Log.Error("post: cannot encode an aggregate", "user", u.addr, "seq", g.Seq, "err", err)
		return
	}
	n.mu.Lock()
	u.arch.inserting++
	n.mu.Unlock()
	n.cfg.Archive.Insert(man, frags, func(r glacier.InsertResult) {
		n.mu.Lock()
		a := u.arch
		if r.Err != nil {
			n.stats.ArchiveFailed++
			n.mu.Unlock()
			n.cfg.Log.Warn("post: aggregate insert failed; retrying", "user", u.addr, "seq", g.Seq, "version", g.Version, "err", r.Err)
			n.after(n.cfg.RetryDelay, func() {
				n.mu.Lock()
				a.inserting--
				cur, ok := a.agg.Aggregate(g.Key)
				n.mu.Unlock()
				if ok && cur.Version == g.Version { // else superseded (renewed, repacked) or expired
					u.insertAggregate(g)
				}
			})
			return
		}
		a.inserting--
		n.stats.ArchiveFlushed++
		advance := g.Seq > a.newest
		if advance {
			a.newest = g.Seq
		}
		n.mu.Unlock()
		n.cfg.Log.Debug("post: aggregate archived", "user", u.addr, "seq", g.Seq, "version", g.Version, "bytes", len(g.Blob), "members", len(g.TOC), "acked", r.Acks)
		if advance {
			u.writeRoot()
		}
	})
}

// writeRoot records the newest aggregate's seq in the user's Glacier root object.
func (u *User) writeRoot() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	seq := a.newest
	v := max(a.rootVer+1, uint64(n.now().UnixNano()))
	a.rootVer = v
	a.inserting++
	exp := n.now().Add(n.cfg.ContentLease)
	if g, ok := a.agg.Aggregate(a.agg.Head()); ok && g.Expiry.After(exp) {
		exp = g.Expiry
	}
	n.mu.Unlock()
	w := wire.Writer{}
	w.B = append(w.B, archiveRootMagic...)
	w.U64(seq)
	man, frags, err := glacier.NewManifest(n.cfg.Archive.Codec(), u.keys.SigningKey(), n.cfg.Ring, []byte(archiveRootName), v, exp, w.B)
	if err != nil {
		n.mu.Lock()
		a.inserting--
		n.mu.Unlock()
		n.cfg.Log.Error("post: cannot encode the archive root", "user", u.addr, "err", err)
		return
	}
	n.cfg.Archive.Insert(man, frags, func(r glacier.InsertResult) {
		n.mu.Lock()
		a.inserting--
		retry := r.Err != nil && a.rootVer == v // a newer root replaces this one anyway
		if retry {
			a.inserting++ // owed until the retry
		}
		n.mu.Unlock()
		if retry {
			n.cfg.Log.Warn("post: archive root insert failed; retrying", "user", u.addr, "err", r.Err)
			n.after(n.cfg.RetryDelay, func() {
				n.mu.Lock()
				a.inserting--
				n.mu.Unlock()
				u.writeRoot()
			})
		}
	})
}

func decodeRoot(b []byte) (uint64, error) {
	if len(b) != len(archiveRootMagic)+8 || string(b[:len(archiveRootMagic)]) != archiveRootMagic {
		return 0, fmt.Errorf("%w: archive root", ErrMalformed)
	}
	r := wire.NewReader(b[len(archiveRootMagic):])
	return r.U64(), r.Done()
}

// archiveTick flushes a batch that waited ArchiveFlush and, hourly, renews, repacks and
// expires aggregates.
func (u *User) archiveTick() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	if a == nil || !a.ready {
		n.mu.Unlock()
		return
	}
	now := n.now()
	var gs []*glacier.Aggregate
	if g := a.agg.Tick(now); g != nil {
		gs = append(gs, g)
	}
	if now.Sub(a.lastMaint) >= archiveMaint {
		a.lastMaint = now
		a.agg.Expire(now)
		gs = append(gs, a.agg.Renewals(now)...)
		for _, rp := range a.agg.Repack(now) {
			gs = append(gs, rp.New)
		}
	}
	n.mu.Unlock()
	for _, g := range gs {
		u.insertAggregate(g)
	}
}

// archiveRefresh raises the archived leases of keys (RefreshLeases).
func (u *User) archiveRefresh(keys []ids.Key, expiry time.Time) {
	n := u.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if u.arch == nil || !u.arch.ready {
		return
	}
	for _, k := range keys {
		u.arch.agg.Refresh(k, expiry)
	}
}

// archiveTickEvery is the period of archiveTick.
func (n *Node) archiveTickEvery() time.Duration {
	return min(max(n.cfg.ArchiveFlush/4, 100*time.Millisecond), time.Minute)
}

// recoverArchive rebuilds u's index from Glacier: the root, forward probes past it, then the
// chain back. done runs once the archive is ready (found, or certainly absent) or, if Glacier
// gives no clear answer, after recoverPatience attempts; the recovery then goes on in the
// background, and nothing is archived until it ends (a new aggregate must never take the seq
// of one the ring may still hold).
func (u *User) recoverArchive(done func()) {
	n := u.n
	n.mu.Lock()
	n.stats.ArchiveRecoveries++
	if done != nil {
		u.arch.onReady = append(u.arch.onReady, done)
	}
	n.mu.Unlock()
	u.recoverAttempt(0, time.Now())
}

// recoverPatience is how many inconclusive attempts a waiting start sits through.
const recoverPatience = 3

func (u *User) recoverAttempt(attempt int, start time.Time) {
	n := u.n
	owner := u.keys.Public().Signing
	found := map[uint64]retrieved{}
	retry := func(what string, err error) {
		d := min(n.cfg.RetryDelay<<min(attempt, 6), time.Minute)
		n.cfg.Log.Warn("post: archive recovery inconclusive; retrying", "user", u.addr, "step", what, "attempt", attempt+1, "retry_in", d, "err", err)
		var cbs []func()
		if attempt+1 == recoverPatience {
			n.mu.Lock()
			cbs, u.arch.onReady = u.arch.onReady, nil
			n.mu.Unlock()
		}
		for _, f := range cbs {
			f() // the start goes on; archiving waits for the recovery
		}
		n.after(d, func() { u.recoverAttempt(attempt+1, start) })
	}
	var probe func(seq, from uint64)
	probe = func(seq, from uint64) {
		n.cfg.Archive.Retrieve(glacier.AggregateKey(n.cfg.Ring, owner, seq), func(blob []byte, man *glacier.Manifest, err error) {
			switch {
			case err == nil:
				found[seq] = retrieved{blob, man}
				probe(seq+1, from)
			case errors.Is(err, glacier.ErrNoObject):
				if seq == from && from > 1 {
					// The aggregate the root names has expired everywhere: so has everything
					// older (leases never decrease along the chain). Nothing to restore, but
					// new aggregates go after it.
					u.archiveReady(nil, from, start, nil)
					return
				}
				u.walkArchive(seq-1, found, start, func(err error) { retry("chain", err) })
			default:
				retry(fmt.Sprintf("aggregate %d", seq), err)
			}
		})
	}
	n.cfg.Archive.Retrieve(glacier.ObjectKey(n.cfg.Ring, owner, []byte(archiveRootName)), func(blob []byte, man *glacier.Manifest, err error) {
		from := uint64(1)
		switch {
		case err == nil:
			if seq, derr := decodeRoot(blob); derr == nil && seq > 0 {
				from = seq
				n.mu.Lock()
				u.arch.rootVer = max(u.arch.rootVer, man.Version)
				n.mu.Unlock()
			} else {
				n.cfg.Log.Warn("post: archive root unreadable; probing from the first aggregate", "user", u.addr, "err", derr)
			}
		case errors.Is(err, glacier.ErrNoObject):
		default:
			retry("root", err)
			return
		}
		probe(from, from)
	})
}

type retrieved struct {
	blob []byte
	man  *glacier.Manifest
}

// walkArchive walks u's chain back from aggregate newest and makes the archive ready; an
// aggregate that cannot be retrieved (but may exist) calls fail instead. One that exists
// nowhere any more (expired) ends the walk: what was found is restored.
func (u *User) walkArchive(newest uint64, found map[uint64]retrieved, start time.Time, fail func(error)) {
	n := u.n
	owner := u.keys.Public().Signing
	n.mu.Lock()
	w := u.arch.agg.Walk(ids.Zero)
	if newest > 0 {
		w = u.arch.agg.Walk(glacier.AggregateKey(n.cfg.Ring, owner, newest))
	}
	n.mu.Unlock()
	var step func()
	step = func() {
		want, ok := w.Want()
		if !ok {
			u.archiveReady(w, newest, start, nil)
			return
		}
		feed := func(r retrieved) {
			if err := w.Feed(r.blob, r.man.Version, r.man.ExpiryTime()); err != nil {
				u.archiveReady(w, newest, start, err)
				return
			}
			step()
		}
		for _, r := range found {
			if r.man.Key() == want {
				feed(r)
				return
			}
		}
		n.cfg.Archive.Retrieve(want, func(blob []byte, man *glacier.Manifest, err error) {
			switch {
			case err == nil:
				feed(retrieved{blob, man})
			case errors.Is(err, glacier.ErrNoObject):
				u.archiveReady(w, newest, start, fmt.Errorf("aggregate %s: %w", want.Short(), err))
			default:
				fail(fmt.Errorf("aggregate %s: %w", want.Short(), err))
			}
		})
	}
	step()
}

func (u *User) archiveReady(w *glacier.ChainWalk, newest uint64, start time.Time, werr error) {
	n := u.n
	n.mu.Lock()
	a := u.arch
	if a.ready {
		n.mu.Unlock()
		return
	}
	if w != nil {
		if err := a.agg.Restore(w); err != nil {
			werr = errors.Join(werr, err)
		}
	}
	a.newest = max(a.newest, newest)
	a.agg.Reserve(a.newest + 1)
	a.ready = true
	backlog, cbs := a.backlog, a.onReady
	a.backlog, a.onReady = nil, nil
	indexed := a.agg.Head()
	n.mu.Unlock()
	if werr != nil {
		n.cfg.Log.Warn("post: archive index restored only in part", "user", u.addr, "newest", newest, "err", werr)
	} else if newest > 0 {
		n.cfg.Log.Info("post: archive index restored from Glacier", "user", u.addr, "aggregates", newest, "head", indexed.Short(), "took", time.Since(start).Round(time.Millisecond))
	}
	for _, m := range backlog {
		n.mu.Lock()
		out, err := a.agg.Add(n.now(), m)
		n.stats.ArchiveKept++
		n.mu.Unlock()
		if err != nil {
			n.cfg.Log.Warn("post: cannot archive object", "user", u.addr, "key", m.Key.Full(), "err", err)
			continue
		}
		for _, g := range out {
			u.insertAggregate(g)
		}
	}
	for _, f := range cbs {
		f()
	}
}

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

func (n *Node) restore(key ids.Key, perr error, cb func(past.Object, error)) {
	n.mu.Lock()
	var u *User
	var g ids.ID
	for _, addr := range slices.Sorted(maps.Keys(n.users)) {
		c := n.users[addr]
		if c.arch == nil || !c.arch.ready {
			continue
		}
		if k, ok := c.arch.agg.Locate(key); ok {
			u, g = c, k
			break
		}
	}
	n.mu.Unlock()
	if u == nil {
		cb(past.Object{}, perr)
		return
	}
	u.fetchAggregate(g, func(agg *glacier.Aggregate, err error) {
		if err == nil {
			var obj past.Object
			if obj, err = n.fromAggregate(agg, key); err == nil {
				n.cfg.Log.Debug("post: restored an object from Glacier", "user", u.addr, "key", key.Full(), "past", perr)
				n.st.Insert(obj, func(r past.InsertResult) {
					n.mu.Lock()
					if r.Err == nil {
						n.stats.ArchiveRestored++
					}
					n.mu.Unlock()
					if r.Err != nil {
						n.cfg.Log.Warn("post: re-inserting a restored object failed", "key", key.Full(), "err", r.Err)
					}
				})
				cb(obj, nil)
				return
			}
		}
		cb(past.Object{}, fmt.Errorf("%w (archive: %v)", perr, err))
	})
}

// fromAggregate extracts member key from agg and checks it as a PAST replica would.
func (n *Node) fromAggregate(agg *glacier.Aggregate, key ids.Key) (past.Object, error) {
	data, err := agg.Member(key)
	if err != nil {
		return past.Object{}, err
	}
	var obj past.Object
	i := slices.IndexFunc(agg.TOC, func(e glacier.TOCEntry) bool { return e.ID == key.ID })
	if agg.TOC[i].ContentHash {
		obj = past.NewContent(n.cfg.Ring, slices.Clone(data), n.now().Add(n.cfg.ContentLease))
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
