package past

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"time"

	"epost/internal/groupcommit"
	"epost/internal/ids"
	"epost/internal/store"
)

// Write-back with group commit: how a replica's writes reach the disk.
//
// The node's state machine writes to its Store inside Step, one message at a time, under the
// driver's lock. If each write went to the disk there and then, every acknowledgement would
// cost an fsync of its own and all other traffic of the node would wait behind it. Instead the
// node writes into writeBack: an overlay that records the change in memory (the node's next
// reads see it at once) and queues it. The driver, once the step is over and its lock
// released, makes everything queued so far durable, and only then sends what the step put in
// the outbox (the raft rule: persist before you send). One committer at a time takes all the
// queued changes and commits them with one store transaction and one fsync (Batcher); changes
// queued by other goroutines meanwhile go into the next commit. Under load many
// acknowledgements therefore share one fsync; a lone write costs what it cost before.
//
// A step waits for every change queued before its end, not only its own: a retried insert is
// acknowledged from the overlay's state ("already stored"), and that acknowledgement must not
// leave before the original write is durable. If a commit fails (a disk error, a full disk),
// the steps that queued the failed changes send none of their acknowledgements (they would be
// lies) but still send their requests to other nodes, the overlay forgets those changes, and
// the error is logged by the driver. The node's acknowledgements to itself (it is a replica of
// a key it inserts) wait for the commit like any other (Node.TakeDurable): a node with a full
// disk counts the other replicas' acknowledgements only.
//
// Range (maintenance's inventory) reads the durable store only: a change not yet committed
// shows up in the next round.

// Batcher is an optional Store ability: commit a batch of changes with one fsync
// (store.Store.Apply). Without it writeBack commits the changes one by one.
type Batcher interface {
	Apply(ops []store.Op) ([]error, error)
}

var _ Batcher = (*store.Store)(nil)

// stagedState is what the overlay knows of a key with changes not yet committed.
type stagedState struct {
	deleted bool          // it is deleted
	obj     *store.Object // it was put (whole object), or nil: the durable object, with expiry
	expiry  time.Time     // a lease extension on the durable object (obj == nil, !deleted)
}

// writeBack is the overlay (see above) over a groupcommit.Queue. Its methods that implement
// Store run under the node's lock; the queue's Persist runs outside it, on any goroutine.
type writeBack struct {
	base Store
	q    *groupcommit.Queue[ids.Key, store.Op, stagedState]
}

func newWriteBack(base Store) *writeBack {
	w := &writeBack{base: base}
	w.q = groupcommit.New[ids.Key, store.Op, stagedState](w.commit, opKey)
	return w
}

func opKey(op *store.Op) ids.Key {
	if op.Kind == store.OpPut {
		return op.Obj.Key
	}
	return op.Key
}

func (w *writeBack) lookup(k ids.Key) *stagedState {
	if s, ok := w.q.Lookup(k); ok {
		return &s
	}
	return nil
}

// Get implements Store.
func (w *writeBack) Get(k ids.Key) (store.Object, error) {
	s := w.lookup(k)
	switch {
	case s == nil:
		return w.base.Get(k)
	case s.deleted:
		return store.Object{}, fmt.Errorf("past store get %s: %w", k, store.ErrNotFound)
	case s.obj != nil:
		return *s.obj, nil
	}
	obj, err := w.base.Get(k)
	if err == nil && store.LaterExpiry(s.expiry, obj.Expiry) {
		obj.Expiry = s.expiry
	}
	return obj, err
}

// Meta implements Store.
func (w *writeBack) Meta(k ids.Key) (store.Meta, error) {
	s := w.lookup(k)
	switch {
	case s == nil:
		return w.base.Meta(k)
	case s.deleted:
		return store.Meta{}, fmt.Errorf("past store meta %s: %w", k, store.ErrNotFound)
	case s.obj != nil:
		return s.obj.Meta, nil
	}
	m, err := w.base.Meta(k)
	if err == nil && store.LaterExpiry(s.expiry, m.Expiry) {
		m.Expiry = s.expiry
	}
	return m, err
}

// PutIf implements Store: cond is judged against the overlay now, and again by the store at
// commit time. A set obj.Hash (with obj.Size) must be the SHA-256 of obj.Payload: accept
// passes the hash it validated, so that a 50 KB chunk is hashed once per replica, not three
// times (validation, here, the store).
func (w *writeBack) PutIf(obj store.Object, cond store.Precondition) error {
	if len(obj.Payload) > store.DefaultMaxPayload || len(obj.Aux) > store.DefaultMaxAux {
		return fmt.Errorf("past store put %s: %w", obj.Key, store.ErrTooLarge)
	}
	if obj.Hash == (store.Hash{}) || obj.Size != int64(len(obj.Payload)) {
		obj.Size = int64(len(obj.Payload))
		obj.Hash = sha256.Sum256(obj.Payload)
	}
	if cond != nil {
		var cur *store.Meta
		if m, err := w.Meta(obj.Key); err == nil {
			cur = &m
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := cond(cur, &obj); err != nil {
			return fmt.Errorf("past store put %s: %w", obj.Key, err)
		}
	}
	o := obj
	w.q.Stage(store.Op{Kind: store.OpPut, Obj: o, Cond: cond, Hashed: true}, stagedState{obj: &o})
	return nil
}

// UpdateExpiry implements Store.
func (w *writeBack) UpdateExpiry(k ids.Key, t time.Time) (time.Time, error) {
	m, err := w.Meta(k)
	if err != nil {
		return time.Time{}, err
	}
	if !store.LaterExpiry(t, m.Expiry) {
		return m.Expiry, nil
	}
	st := stagedState{expiry: t}
	if cur := w.lookup(k); cur != nil && cur.obj != nil {
		o := *cur.obj
		o.Expiry = t
		st = stagedState{obj: &o}
	}
	w.q.Stage(store.Op{Kind: store.OpExpiry, Key: k, Expiry: t}, st)
	return t, nil
}

// Delete implements Store.
func (w *writeBack) Delete(k ids.Key) error {
	if _, err := w.Meta(k); err != nil {
		return err
	}
	w.q.Stage(store.Op{Kind: store.OpDelete, Key: k}, stagedState{deleted: true})
	return nil
}

// Range implements Store: the durable store's objects (see above).
func (w *writeBack) Range(arc store.Arc) iter.Seq2[store.Meta, error] { return w.base.Range(arc) }

// CollectExpired implements Store.
func (w *writeBack) CollectExpired(now time.Time) (int, error) { return w.base.CollectExpired(now) }

// PurgeTrash implements Store.
func (w *writeBack) PurgeTrash(now time.Time) (int, error) { return w.base.PurgeTrash(now) }

// commit applies ops to the durable store: in one transaction if it can batch.
func (w *writeBack) commit(ops []store.Op) ([]error, error) {
	if b, ok := w.base.(Batcher); ok {
		return b.Apply(ops)
	}
	results := make([]error, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case store.OpPut:
			results[i] = w.base.PutIf(op.Obj, op.Cond)
		case store.OpExpiry:
			_, results[i] = w.base.UpdateExpiry(op.Key, op.Expiry)
		case store.OpDelete:
			results[i] = w.base.Delete(op.Key)
		}
	}
	return results, nil
}

// DeleteLazy implements LazyStore when the durable store does and no change of k is queued
// (a lazy change could otherwise be committed before the queued one and be undone by it);
// otherwise it is a queued delete like any other.
func (w *writeBack) DeleteLazy(k ids.Key) {
	if lz, ok := w.base.(LazyStore); ok && w.lookup(k) == nil {
		lz.DeleteLazy(k)
		return
	}
	_ = w.Delete(k)
}

// UpdateExpiryLazy implements LazyStore (see DeleteLazy).
func (w *writeBack) UpdateExpiryLazy(k ids.Key, t time.Time) {
	if lz, ok := w.base.(LazyStore); ok && w.lookup(k) == nil {
		lz.UpdateExpiryLazy(k, t)
		return
	}
	_, _ = w.UpdateExpiry(k, t)
}
