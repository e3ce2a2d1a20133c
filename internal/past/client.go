package past

import (
	"fmt"
	"strings"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// The client side: operations this node started, their retries and their results.

type opKind uint8

const (
	opInsert opKind = iota + 1
	opLookup
	opRefresh
	opDelete
	opLocate // Prelocate: the replica set alone, for the located cache
)

// prelocateTTL bounds how long a Prelocate's answer is kept: it is for an insert that
// follows within a message's submission, not for later writers.
const prelocateTTL = 5 * time.Second

type opPhase uint8

const (
	phaseLocating opPhase = iota // routed request in flight
	phaseDirect                  // talking to replicas directly
)

// replicaState is what one replica said to an operation.
type replicaState struct {
	h        pastry.Handle
	answered bool
	err      error // nil: acknowledged
}

type op struct {
	id       uint64
	kind     opKind
	key      ids.Key
	obj      Object
	expiry   int64
	phase    opPhase
	tries    int
	deadline time.Time
	replicas []replicaState
	dedupe   bool
	hinted   bool    // stores sent to a cached replica set
	probing  bool    // dedupe: the root holds it; ask replicas to extend instead of sending bytes
	reported bool    // dedupe: the result went out at quorum; still sending bytes to replicas that lack them
	proof    []byte  // delete
	newer    *Object // insert: the newest version a stale refusal showed us
	// straggling: a signed insert had its majority and waits StragglerWait for the other
	// replicas, one of which may hold a newer version (a stale refusal the writer must see).
	straggling bool

	onInsert  func(InsertResult)
	onLookup  func(LookupResult)
	read      *readState // lookup: what the replicas said
	onRefresh func(error)
	onDelete  func(error)
}

// Refusal is one replica's answer other than an acknowledgement.
type Refusal struct {
	Replica pastry.Handle
	Err     error
}

// InsertResult is the outcome of Insert.
type InsertResult struct {
	Key      ids.Key
	Acked    int // replicas that acknowledged after their durable write
	Needed   int // Quorum(Replicas)
	Replicas int // size of the replica set the root named (0: the root never answered)
	Refusals []Refusal
	Err      error // nil when Acked >= Needed
	// Newer is the newest version of a mutable object that replicas refused this one for
	// (ErrStale): they hold a higher sequence number, or a different version at this one.
	// It passed the checks a replica makes. Nil when no replica refused as stale.
	Newer *Object
}

func (n *Node) newOp(kind opKind, key ids.Key) *op {
	n.nextOp++
	o := &op{id: n.nextOp, kind: kind, key: key, tries: 1, deadline: n.now.Add(n.cfg.RequestTimeout)}
	n.ops[o.id] = o
	n.opQ = append(n.opQ, o.id)
	return o
}

func (n *Node) finish(o *op, f func()) {
	delete(n.ops, o.id)
	n.done = append(n.done, f)
}

// checkOwn is an inserting node's check of the object it is about to send: what every replica
// checks (ValidateWith) but the proofs of a content or signed object, its hash and its
// signature. Every replica, this node included when it is one, checks those before it stores
// the object, so a wrong one is refused all the same; checking them here too cost a hash of
// every part and a signature verification of every log head the node had just made itself
// (about 2.5% of a busy ring's CPU in the IMAP write load of BENCHMARKS.md). InsertDedupe
// sends only the key to replicas that hold it already, so nobody checks such a content
// object's bytes: its callers build it with NewContent, whose key is the hash of the bytes.
func (n *Node) checkOwn(obj *Object) error {
	if t := Type(obj.Type); t == TypeContent || t == TypeSigned {
		return validate(obj, n.cfg.Ring, n.now, false)
	}
	return ValidateWith(obj, n.cfg.Ring, n.now, &n.cfg.Policy)
}

// Insert stores obj on the k replicas of its key; cb runs once a majority acknowledged, or
// with an error saying how many did and why the others did not.
func (n *Node) Insert(now time.Time, obj Object, cb func(InsertResult)) {
	n.now = now
	if cb == nil {
		cb = func(InsertResult) {}
	}
	if err := n.checkOwn(&obj); err != nil && !n.skipClientCheck {
		n.done = append(n.done, func() { cb(InsertResult{Key: obj.Key, Err: fmt.Errorf("past insert %s: %w", obj.Key, err)}) })
		return
	}
	o := n.newOp(opInsert, obj.Key)
	o.obj, o.onInsert = obj, cb
	if c, ok := n.located[obj.Key]; ok && n.now.Before(c.until) {
		n.storeHinted(o, c.replicas)
		return
	}
	if hs, ok := n.knownReplicas(obj.Key.ID); ok {
		n.storeHinted(o, hs)
		return
	}
	n.stats.Located++
	n.route(obj.Key.ID, &message{Type: mLocate, Op: o.id, Key: obj.Key})
	n.flushLocal()
}

// storeHinted sends an insert's object straight to replicas it did not ask the root for (a
// cached or locally known set), hinted: a node that is not among the key's k closest by its
// own view refuses, and the insert then locates the key through the root after all.
func (n *Node) storeHinted(o *op, replicas []pastry.Handle) {
	n.stats.Direct++
	o.phase, o.hinted = phaseDirect, true
	for _, h := range replicas {
		o.replicas = append(o.replicas, replicaState{h: h})
		n.send(h, &message{Type: mStore, Op: o.id, Hint: true, Objects: []Object{o.obj}}, false)
	}
	n.flushLocal()
}

// knownReplicas returns key's replica set when this node's own leaf set names it for
// certain, so that an insert need not ask the root: the leaf set holds the whole ring (a
// ring of at most L+1 nodes, the common case of an organization's ring), or key lies far
// enough inside the leaf set's arc that its k closest nodes are all members. The root would
// answer from the same kind of view; it only costs the round trip. Off with the located
// cache (LocateCacheTTL zero), since both rest on hinted stores.
func (n *Node) knownReplicas(key ids.ID) ([]pastry.Handle, bool) {
	if n.cfg.LocateCacheTTL <= 0 || n.skipKnownReplicas || !n.ready || len(n.left) == 0 || len(n.right) == 0 {
		return nil, false
	}
	k := n.cfg.Replicas
	if n.wholeRingKnown() {
		return n.replicaSet(key), true
	}
	// Leave k members at each end of the arc: key's k closest nodes then lie within it.
	if len(n.left) <= k || len(n.right) <= k {
		return nil, false
	}
	lo, hi := n.left[len(n.left)-1-k].ID, n.right[len(n.right)-1-k].ID
	if !ids.Between(lo, key, hi) {
		return nil, false
	}
	return n.replicaSet(key), true
}

// wholeRingKnown reports whether the leaf set's two sides meet, going round the circle: the
// farthest right member lies at or beyond the farthest left one, so every node of the ring
// is a member. A side shorter than a full leaf set means the same once the overlay has
// settled, but also a node still joining; only the meeting sides are taken as proof.
func (n *Node) wholeRingKnown() bool {
	lo, hi := n.left[len(n.left)-1].ID, n.right[len(n.right)-1].ID
	if lo == hi {
		return true
	}
	for _, h := range n.right {
		if h.ID == lo {
			return true
		}
	}
	return false
}

// Prelocate asks the root of key for the key's replica set ahead of an Insert the caller is
// about to make, and keeps the answer in the located cache (LocateCacheTTL, at most
// prelocateTTL): that Insert then goes straight to the replicas, hinted, without a locate
// round trip of its own. POST locates a notification's replicas this way while the message's
// parts are being stored, instead of after. Replicas refuse hinted stores they are not
// responsible for and the insert then locates again, so a stale answer costs a round trip,
// never a misplaced object. Nothing happens when the cache already answers, when the cache
// is off, or if the root does not answer (no retry: the Insert locates by itself).
func (n *Node) Prelocate(now time.Time, key ids.Key) {
	n.now = now
	if n.cfg.LocateCacheTTL <= 0 {
		return
	}
	if c, ok := n.located[key]; ok && n.now.Before(c.until) {
		return
	}
	if _, ok := n.knownReplicas(key.ID); ok {
		return // the Insert will not ask the root either
	}
	o := n.newOp(opLocate, key)
	n.route(key.ID, &message{Type: mLocate, Op: o.id, Key: key})
	n.flushLocal()
}

// onPrelocateReply keeps the replica set a Prelocate asked for.
func (n *Node) onPrelocateReply(o *op, m *message) {
	delete(n.ops, o.id)
	if m.Code != codeOK {
		return
	}
	c := located{until: n.now.Add(min(n.cfg.LocateCacheTTL, prelocateTTL))}
	seen := map[ids.ID]bool{}
	for _, h := range m.Handles {
		if len(c.replicas) == n.cfg.Replicas {
			break // a root cannot make us write to more than k nodes
		}
		if h.ID.IsZero() || h.Addr == "" || seen[h.ID] {
			continue
		}
		seen[h.ID] = true
		c.replicas = append(c.replicas, h)
	}
	if len(c.replicas) > 0 {
		n.located[o.key] = c
	}
}

// InsertDedupe is Insert for content objects that are often stored already (attachments
// sent again, the same part to many recipients): ePOST looked a chunk up before inserting it
// and refreshed its lease instead of storing it again. Here the look-up rides on the locate:
// the root says whether it holds the object, and if it does the client asks each replica to
// extend the lease of its copy and sends the bytes only to replicas that lack one. The
// outcome and quorum rule are Insert's; the latency is an insert's, not a lookup's plus an
// insert's.
func (n *Node) InsertDedupe(now time.Time, obj Object, cb func(InsertResult)) {
	if Type(obj.Type) != TypeContent {
		n.Insert(now, obj, cb)
		return
	}
	n.now = now
	if cb == nil {
		cb = func(InsertResult) {}
	}
	if err := n.checkOwn(&obj); err != nil {
		n.done = append(n.done, func() { cb(InsertResult{Key: obj.Key, Err: fmt.Errorf("past insert %s: %w", obj.Key, err)}) })
		return
	}
	o := n.newOp(opInsert, obj.Key)
	o.obj, o.onInsert, o.dedupe = obj, cb, true
	if hs, ok := n.knownReplicas(obj.Key.ID); ok {
		// Without the root's word on whether it is stored already, the bytes go to every
		// replica (one holding it extends the lease): on the ring's own links a chunk's
		// bytes cost less than the locate round trip would.
		n.storeHinted(o, hs)
		return
	}
	n.stats.Located++
	n.route(obj.Key.ID, &message{Type: mLocate, Op: o.id, Key: obj.Key, Flag: true})
	n.flushLocal()
}

// Delete asks the replicas of key to move it to their trash; proof authorises it (only
// pending objects can be deleted, with DropProof by their recipient). cb gets nil when the
// root deleted it or never had it.
func (n *Node) Delete(now time.Time, key ids.Key, proof []byte, cb func(error)) {
	n.now = now
	if cb == nil {
		cb = func(error) {}
	}
	o := n.newOp(opDelete, key)
	o.onDelete, o.proof = cb, proof
	n.route(key.ID, &message{Type: mDelete, Op: o.id, Key: key, Flag: true, Proof: proof})
	n.flushLocal()
}

func (n *Node) onDeleteReply(from pastry.Handle, m *message) {
	o, ok := n.ops[m.Op]
	if !ok || o.kind != opDelete || m.Key != o.key {
		return
	}
	err := m.Code.err()
	if m.Code == codeNotFound {
		err = nil // nothing left to drop
	}
	cb := o.onDelete
	n.finish(o, func() { cb(err) })
}

// Refresh extends the leases of keys on all their replicas to expiry (capped by each
// replica's MaxLease). cb gets nil, or an error naming the keys no root held or that timed out.
func (n *Node) Refresh(now time.Time, keys []ids.Key, expiry time.Time, cb func(error)) {
	n.now = now
	if cb == nil {
		cb = func(error) {}
	}
	if len(keys) == 0 {
		n.done = append(n.done, func() { cb(nil) })
		return
	}
	agg := &refreshAgg{left: len(keys), cb: cb}
	for _, k := range keys {
		o := n.newOp(opRefresh, k)
		o.expiry = unixNano(expiry)
		o.onRefresh = agg.one(k)
		n.route(k.ID, &message{Type: mRefresh, Op: o.id, Key: k, Flag: true, Expiry: o.expiry})
	}
	n.flushLocal()
}

type refreshAgg struct {
	left   int
	failed []string
	cb     func(error)
}

func (a *refreshAgg) one(k ids.Key) func(error) {
	return func(err error) {
		if err != nil {
			a.failed = append(a.failed, fmt.Sprintf("%s: %v", k, err))
		}
		a.left--
		if a.left == 0 {
			if len(a.failed) > 0 {
				a.cb(fmt.Errorf("past refresh: %d keys failed: %s", len(a.failed), strings.Join(a.failed, "; ")))
				return
			}
			a.cb(nil)
		}
	}
}

func (n *Node) onLocateReply(from pastry.Handle, m *message) {
	o, ok := n.ops[m.Op]
	if ok && o.kind == opLocate && m.Key == o.key {
		n.onPrelocateReply(o, m)
		return
	}
	if !ok || o.kind != opInsert || o.phase != phaseLocating || m.Key != o.key {
		return
	}
	if m.Code != codeOK {
		n.finishInsert(o, m.Code.err())
		return
	}
	seen := map[ids.ID]bool{}
	for _, h := range m.Handles {
		if len(o.replicas) == n.cfg.Replicas {
			break // a root cannot make us write to more than k nodes
		}
		if h.ID.IsZero() || h.Addr == "" || seen[h.ID] {
			continue
		}
		seen[h.ID] = true
		o.replicas = append(o.replicas, replicaState{h: h})
	}
	if len(o.replicas) == 0 {
		return // retried on timeout
	}
	o.phase, o.tries, o.deadline = phaseDirect, 1, n.now.Add(n.cfg.RequestTimeout)
	o.probing = o.dedupe && m.Flag
	if n.cfg.LocateCacheTTL > 0 && Type(o.obj.Type) == TypeSigned {
		// Only keys a writer rewrites (log heads, backups) are worth remembering.
		c := located{until: n.now.Add(n.cfg.LocateCacheTTL)}
		for _, r := range o.replicas {
			c.replicas = append(c.replicas, r.h)
		}
		n.located[o.key] = c
	}
	for _, r := range o.replicas {
		n.sendStore(o, r.h)
	}
}

// sendStore sends the object to one replica, or, when probing, only its header: a replica
// holding the object extends its lease and acknowledges, one lacking it says not-found and
// gets the bytes (onStoreAck).
func (n *Node) sendStore(o *op, h pastry.Handle) {
	if o.probing {
		hdr := o.obj
		hdr.Payload = nil
		n.send(h, &message{Type: mStore, Op: o.id, Flag: true, Objects: []Object{hdr}}, false)
		return
	}
	n.send(h, &message{Type: mStore, Op: o.id, Objects: []Object{o.obj}}, false)
}

func (n *Node) onStoreAck(from pastry.Handle, m *message) {
	o, ok := n.ops[m.Op]
	if !ok || o.kind != opInsert || o.phase != phaseDirect || m.Key != o.key {
		return
	}
	if o.hinted && m.Code == codeNotResponsible {
		// The cached replica set is out of date: locate the key again.
		delete(n.located, o.key)
		o.hinted, o.phase, o.replicas, o.tries = false, phaseLocating, nil, 1
		o.deadline = n.now.Add(n.cfg.RequestTimeout)
		n.route(o.key.ID, &message{Type: mLocate, Op: o.id, Key: o.key})
		return
	}
	if o.probing && m.Code == codeNotFound {
		// This replica lacks the object: send it the bytes after all.
		for _, r := range o.replicas {
			if r.h.ID == from.ID && !r.answered {
				n.send(r.h, &message{Type: mStore, Op: o.id, Objects: []Object{o.obj}}, false)
			}
		}
		return
	}
	if m.Code == codeStale && len(m.Objects) == 1 {
		cur := m.Objects[0]
		if cur.Key == o.key && ValidateWith(&cur, n.cfg.Ring, n.now, &n.cfg.Policy) == nil &&
			(o.newer == nil || cur.Seq > o.newer.Seq) {
			o.newer = &cur
		}
	}
	answered, acked := 0, 0
	defer func() {
		if o.reported && answered == len(o.replicas) {
			delete(n.ops, o.id) // every replica has answered the reported dedupe insert
		}
	}()
	for i := range o.replicas {
		r := &o.replicas[i]
		if r.h.ID == from.ID && !r.answered {
			r.answered = true
			if m.Code != codeOK {
				r.err = fmt.Errorf("%w (%s)", m.Code.err(), m.Detail)
			}
		}
		if r.answered {
			answered++
			if r.err == nil {
				acked++
			}
		}
	}
	if o.reported {
		return
	}
	if o.probing && acked >= Quorum(len(o.replicas)) && answered < len(o.replicas) {
		// A replica that has not answered yet may lack the object and need the bytes (see
		// the not-found case above): report now, and keep the operation until it answers
		// or times out, as Insert's own stores to every replica outlive its result.
		n.report(o, nil)
		o.reported = true
		return
	}
	if acked >= Quorum(len(o.replicas)) && answered < len(o.replicas) && Type(o.obj.Type) == TypeSigned {
		if !o.straggling {
			o.straggling = true
			if d := n.now.Add(n.stragglerWait()); d.Before(o.deadline) {
				o.deadline = d
			}
		}
		return
	}
	if acked >= Quorum(len(o.replicas)) || answered == len(o.replicas) {
		n.finishInsert(o, nil)
	}
}

// finishInsert reports the insert's outcome and forgets the operation.
func (n *Node) finishInsert(o *op, cause error) {
	delete(n.ops, o.id)
	if o.reported {
		return
	}
	n.report(o, cause)
}

// report queues the insert's outcome: success with a majority, else how many acknowledged
// and why the others did not.
func (n *Node) report(o *op, cause error) {
	res := InsertResult{Key: o.key, Replicas: len(o.replicas), Needed: Quorum(len(o.replicas)), Newer: o.newer}
	for _, r := range o.replicas {
		if (r.answered && r.err != nil) || cause != nil || len(o.replicas) == 0 {
			delete(n.located, o.key) // a replica refused us: locate afresh next time
			break
		}
	}
	var why []string
	for _, r := range o.replicas {
		switch {
		case r.answered && r.err == nil:
			res.Acked++
		case r.answered:
			res.Refusals = append(res.Refusals, Refusal{Replica: r.h, Err: r.err})
			why = append(why, fmt.Sprintf("%s refused: %v", r.h.ID.Short(), r.err))
		default:
			res.Refusals = append(res.Refusals, Refusal{Replica: r.h, Err: ErrTimeout})
			why = append(why, fmt.Sprintf("%s: no answer", r.h.ID.Short()))
		}
	}
	switch {
	case cause != nil:
		res.Err = fmt.Errorf("past insert %s: %w", o.key, cause)
	case len(o.replicas) == 0:
		res.Err = fmt.Errorf("past insert %s: %w: the key's root did not answer after %d tries", o.key, ErrTimeout, o.tries)
	case res.Acked < res.Needed:
		delete(n.located, o.key)
		res.Err = fmt.Errorf("past insert %s: %w: %d of %d replicas acknowledged, %d needed: %s",
			o.key, ErrQuorum, res.Acked, res.Replicas, res.Needed, strings.Join(why, "; "))
		if len(res.Refusals) > 0 && res.Acked == 0 {
			// Every replica refused for the same kind of reason: let errors.Is see it.
			res.Err = fmt.Errorf("%w: %w", res.Err, res.Refusals[0].Err)
		}
	}
	cb := o.onInsert
	n.done = append(n.done, func() { cb(res) })
}

func (n *Node) onRefreshReply(from pastry.Handle, m *message) {
	o, ok := n.ops[m.Op]
	if !ok || o.kind != opRefresh || m.Key != o.key {
		return
	}
	cb := o.onRefresh
	err := m.Code.err()
	n.finish(o, func() { cb(err) })
}

// checkOps retries or gives up on operations past their deadline.
func (n *Node) checkOps() {
	kept := n.opQ[:0]
	var due []*op
	for _, id := range n.opQ {
		o, ok := n.ops[id]
		if !ok {
			continue
		}
		kept = append(kept, id)
		if !n.now.Before(o.deadline) {
			due = append(due, o)
		}
	}
	n.opQ = kept
	for _, o := range due {
		n.timeout(o)
	}
}

func (n *Node) timeout(o *op) {
	if o.kind == opLocate {
		delete(n.ops, o.id) // the insert it was for locates by itself
		return
	}
	if o.kind == opLookup && o.phase == phaseDirect {
		n.lookupTimeout(o)
		return
	}
	if o.straggling {
		n.finishInsert(o, nil) // a majority acknowledged; the silent rest is left to maintenance
		return
	}
	if o.tries >= n.cfg.Retries {
		if o.reported {
			delete(n.ops, o.id) // the replicas still silent are left to maintenance
			return
		}
		switch o.kind {
		case opInsert:
			n.finishInsert(o, nil)
		case opLookup:
			n.failLookup(o, ErrTimeout)
		case opRefresh:
			cb := o.onRefresh
			n.finish(o, func() { cb(ErrTimeout) })
		case opDelete:
			cb := o.onDelete
			n.finish(o, func() { cb(ErrTimeout) })
		}
		return
	}
	o.tries++
	n.stats.Retries++
	o.deadline = n.now.Add(n.cfg.RequestTimeout)
	switch {
	case o.kind == opInsert && o.phase == phaseDirect:
		o.probing = false // a retry carries the bytes
		for _, r := range o.replicas {
			if !r.answered {
				// A cached set's retry stays hinted: a node no longer a replica refuses it
				// (and the insert locates again) instead of storing the object.
				n.send(r.h, &message{Type: mStore, Op: o.id, Hint: o.hinted, Objects: []Object{o.obj}}, false)
			}
		}
	case o.kind == opInsert:
		n.route(o.key.ID, &message{Type: mLocate, Op: o.id, Key: o.key, Flag: o.dedupe})
	case o.kind == opLookup:
		n.route(o.key.ID, &message{Type: mLookup, Op: o.id, Key: o.key, Origin: n.self})
	case o.kind == opRefresh:
		n.route(o.key.ID, &message{Type: mRefresh, Op: o.id, Key: o.key, Flag: true, Expiry: o.expiry})
	case o.kind == opDelete:
		n.route(o.key.ID, &message{Type: mDelete, Op: o.id, Key: o.key, Flag: true, Proof: o.proof})
	}
}
