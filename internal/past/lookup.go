package past

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// Lookups: the client side, and what a reader is guaranteed.
//
// An immutable object (content hash, pending notification) is the same wherever it is found,
// so the first copy that passes validation is the answer: the key's root, any replica, or any
// node on the route that holds one (Forward answers, PAST without caching).
//
// A mutable object (signed, record) has versions, and a copy can be stale: a node that was a
// replica while the leaf sets moved keeps its old copy for DropGrace; a replica that was down
// while the writer moved on comes back with the version it had. So a mutable object is read
// from its replica set, never from a leftover copy:
//
//   - nodes on the route never answer for it (Forward lets the lookup go on);
//   - the root answers with its copy and names its replica set (the k nodes closest to the
//     key in its leaf set), and passes the lookup on to the others, which answer the client
//     directly (one hop less than the client asking them itself); a replica still silent
//     after RequestTimeout is asked once more by the client;
//   - the answer is the highest valid sequence number among the answers (two different
//     versions at one sequence number are a fork: reported, and the higher payload hash wins
//     so that every reader picks the same one);
//   - the lookup completes when every replica answered, or StragglerWait after a majority
//     did, or at RequestTimeout with what arrived;
//   - replicas that answered with an older version or none get the newest one (read repair,
//     validated by them like any store, so a client cannot push anything a writer could not).
//
// Guarantee: a lookup that heard from a majority of the key's replica set returns a version at
// least as new as every version a majority of that same replica set acknowledged (two
// majorities share a node). When the replica set changed between the write and the read
// (churn), a newcomer may not have the newest version yet; the read then still sees it if any
// member of the current replica set holds it, and maintenance brings newcomers up to date
// within MaintenanceDelay of the change. A single writer (a log's owner) does not rely on that
// alone: it keeps its last version on its own disk and never goes below it (package post).

// LookupResult is the outcome of LookupLatest.
type LookupResult struct {
	Object   Object // the newest valid version found (mutable), or the object (immutable)
	Err      error  // nil when Object was found
	Replicas int    // nodes asked: the root and the replicas it named
	Answered int    // of those, how many answered in time
	// Versions are the distinct valid versions of a mutable object the replicas answered
	// with, newest first, with how many replicas held each.
	Versions []Version
	Fork     bool // two different versions share a sequence number
	Repaired int  // replicas sent the newest version (read repair)
}

// Version is one version of a mutable object, as replicas reported it.
type Version struct {
	Seq     uint64
	Hash    store.Hash // SHA-256 of the payload
	Holders int
	Object  Object
}

// readState is what the replicas of a lookup said.
type readState struct {
	asked   []pastry.Handle    // root first, then the replicas it named (once it answered)
	answers map[ids.ID]*Object // by node: its valid mutable version, or nil (none)
	reasked bool               // the silent replicas were asked directly
	// unsettled: nodes that said they hold no copy, and that this proves little
	// (ErrUnsettled).
	unsettled map[ids.ID]bool
}

// heard counts the answers from the nodes asked.
func (rs *readState) heard() int {
	c := 0
	for _, h := range rs.asked {
		if _, ok := rs.answers[h.ID]; ok {
			c++
		}
	}
	return c
}

// Lookup fetches the object under key: for an immutable object the first valid copy, for a
// mutable one the newest version its replica set holds (see the top of this file).
func (n *Node) Lookup(now time.Time, key ids.Key, cb func(Object, error)) {
	if cb == nil {
		cb = func(Object, error) {}
	}
	n.LookupLatest(now, key, func(r LookupResult) { cb(r.Object, r.Err) })
}

// LookupLatest is Lookup with the details of what the replicas said (versions, forks).
func (n *Node) LookupLatest(now time.Time, key ids.Key, cb func(LookupResult)) {
	n.now = now
	if cb == nil {
		cb = func(LookupResult) {}
	}
	o := n.newOp(opLookup, key)
	o.onLookup = cb
	o.read = &readState{answers: map[ids.ID]*Object{}}
	n.route(key.ID, &message{Type: mLookup, Op: o.id, Key: key, Origin: n.self})
	n.flushLocal()
}

// mutable reports whether objects of type t have versions.
func mutable(t Type) bool { return t == TypeSigned || t == TypeRecord }

func (n *Node) onLookupReply(from pastry.Handle, m *message) {
	o, ok := n.ops[m.Op]
	if !ok || o.kind != opLookup || m.Key != o.key {
		return
	}
	rs := o.read
	var got *Object
	if m.Code == codeOK && len(m.Objects) == 1 {
		obj := m.Objects[0]
		// Believe no replica: the object must pass the same checks a replica makes.
		if obj.Key == o.key && ValidateWith(&obj, n.cfg.Ring, n.now, &n.cfg.Policy) == nil {
			if !mutable(Type(obj.Type)) {
				cb := o.onLookup
				res := LookupResult{Object: obj, Replicas: max(1, len(rs.asked)), Answered: 1}
				n.finish(o, func() { cb(res) })
				return
			}
			got = &obj
		}
	}
	if _, dup := rs.answers[from.ID]; dup {
		return
	}
	if o.phase == phaseDirect && !slices.ContainsFunc(rs.asked, func(a pastry.Handle) bool { return a.ID == from.ID }) {
		return // not a node we asked
	}
	// A replica the root passed the lookup to may answer before the root does: keep its
	// answer until the root names the replica set.
	rs.answers[from.ID] = got
	if got == nil && m.Code == codeNotFound && m.Detail == detailUnsettled {
		if rs.unsettled == nil {
			rs.unsettled = map[ids.ID]bool{}
		}
		rs.unsettled[from.ID] = true
	}
	if o.phase == phaseLocating {
		if m.Flag {
			return // a replica's answer; the root's is still to come
		}
		// The root's answer: its copy, if any, and its replica set.
		rs.asked = append(rs.asked, from)
		for _, h := range m.Handles {
			if len(rs.asked) >= max(n.cfg.Replicas, 1) {
				break // a root cannot make us wait for more than k nodes
			}
			if h.ID.IsZero() || h.Addr == "" || slices.ContainsFunc(rs.asked, func(a pastry.Handle) bool { return a.ID == h.ID }) {
				continue
			}
			rs.asked = append(rs.asked, h)
		}
		for id := range rs.answers {
			if !slices.ContainsFunc(rs.asked, func(a pastry.Handle) bool { return a.ID == id }) {
				delete(rs.answers, id) // order-independent: only forgets
			}
		}
		o.phase, o.deadline = phaseDirect, n.now.Add(n.cfg.RequestTimeout)
		if _, ok := rs.answers[n.self.ID]; !ok && slices.ContainsFunc(rs.asked, func(a pastry.Handle) bool { return a.ID == n.self.ID }) {
			// We are a replica ourselves: our copy counts like any other.
			n.send(n.self, &message{Type: mLookup, Op: o.id, Key: o.key}, false)
		}
	}
	switch heard := rs.heard(); {
	case heard >= len(rs.asked):
		n.finishLookup(o)
	case heard >= Quorum(len(rs.asked)):
		// A majority answered: wait a little for the rest (a newer version may be there),
		// not a whole timeout for one that is down.
		if d := n.now.Add(n.stragglerWait()); d.Before(o.deadline) {
			o.deadline = d
		}
	}
}

// lookupTimeout runs when a lookup's replicas were silent until its deadline: without a
// majority's answers it asks the silent ones directly, once; otherwise it reports what it has.
func (n *Node) lookupTimeout(o *op) {
	rs := o.read
	if rs.reasked || rs.heard() >= Quorum(len(rs.asked)) {
		n.finishLookup(o)
		return
	}
	rs.reasked = true
	o.deadline = n.now.Add(n.cfg.RequestTimeout)
	for _, h := range rs.asked[1:] {
		if _, ok := rs.answers[h.ID]; !ok {
			n.send(h, &message{Type: mLookup, Op: o.id, Key: o.key}, false)
		}
	}
}

func (n *Node) stragglerWait() time.Duration {
	if n.cfg.StragglerWait > 0 {
		return n.cfg.StragglerWait
	}
	return n.cfg.RequestTimeout / 4
}

// newest picks the newest of the versions received: the highest sequence number, and among
// different versions at one sequence number (a fork) the higher payload hash, so that every
// reader picks the same one.
func newest(objs []Object) (best Object, versions []Version, fork bool) {
	type vk struct {
		seq  uint64
		hash store.Hash
	}
	count := map[vk]int{}
	for i := range objs {
		k := vk{objs[i].Seq, hashOf(objs[i].Payload)}
		if count[k] == 0 {
			versions = append(versions, Version{Seq: k.seq, Hash: k.hash, Object: objs[i]})
		}
		count[k]++
	}
	for i := range versions {
		versions[i].Holders = count[vk{versions[i].Seq, versions[i].Hash}]
	}
	slices.SortFunc(versions, func(a, b Version) int {
		if a.Seq != b.Seq {
			if a.Seq > b.Seq {
				return -1
			}
			return 1
		}
		return -bytes.Compare(a.Hash[:], b.Hash[:])
	})
	for i := 1; i < len(versions); i++ {
		if versions[i].Seq == versions[i-1].Seq {
			fork = true
		}
	}
	return versions[0].Object, versions, fork
}

// finishLookup reports the newest version received, repairs the replicas that answered with
// an older one or none, and forgets the operation.
func (n *Node) finishLookup(o *op) {
	rs := o.read
	res := LookupResult{Replicas: len(rs.asked), Answered: rs.heard()}
	var objs []Object
	for _, h := range rs.asked {
		if obj := rs.answers[h.ID]; obj != nil {
			objs = append(objs, *obj)
		}
	}
	if len(objs) == 0 {
		n.failLookup(o, nil)
		return
	}
	res.Object, res.Versions, res.Fork = newest(objs)
	if res.Fork {
		n.stats.Forks++
	}
	for _, h := range rs.asked {
		obj, answered := rs.answers[h.ID]
		if !answered || (obj != nil && obj.Seq >= res.Object.Seq) {
			continue
		}
		// Read repair: the replica validates it like any store (signature, sequence).
		n.stats.ReadRepairs++
		res.Repaired++
		n.send(h, &message{Type: mStore, Objects: []Object{res.Object}}, false)
	}
	cb := o.onLookup
	n.finish(o, func() { cb(res) })
}

// failLookup reports that no valid copy was found: not found when every node asked said so,
// else why not.
func (n *Node) failLookup(o *op, cause error) {
	rs := o.read
	res := LookupResult{Replicas: len(rs.asked), Answered: rs.heard()}
	switch {
	case cause != nil:
		res.Err = fmt.Errorf("past lookup %s: %w", o.key, cause)
	case res.Answered < res.Replicas:
		res.Err = fmt.Errorf("past lookup %s: %w (%d of %d replicas did not answer: %w)", o.key, ErrNotFound, res.Replicas-res.Answered, res.Replicas, ErrTimeout)
	case slices.ContainsFunc(rs.asked, func(h pastry.Handle) bool { return rs.unsettled[h.ID] }):
		res.Err = fmt.Errorf("past lookup %s: %w (%w)", o.key, ErrNotFound, ErrUnsettled)
	default:
		res.Err = fmt.Errorf("past lookup %s: %w", o.key, ErrNotFound)
	}
	cb := o.onLookup
	n.finish(o, func() { cb(res) })
}
