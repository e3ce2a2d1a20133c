package glacier

import (
	"errors"

	"epost/internal/groupcommit"
	"epost/internal/ids"
)

// Write-back with group commit, as in PAST (internal/past persist.go): the node's Put and
// Delete go into an overlay that the node's next reads see at once, and the driver makes them
// durable in groups (one DiskStore transaction, one fsync, for every change queued meanwhile)
// outside the node's lock, before it sends the acknowledgements that depend on them. A
// fragment insert arrives as n messages spread over the ring, several to each holder in a row:
// each holder now commits what arrived together once. Range and Ascend (maintenance) read the
// durable store only: a change not yet committed shows up in the next round.

// FragOp is one change of a Batcher batch: a put (Fragment set) or a delete.
type FragOp struct {
	Key    ids.ID
	Put    *Fragment // nil: delete
	Delete bool
}

// Batcher is an optional Store ability: commit a batch of changes with one fsync
// (DiskStore.Apply). Without it the changes are applied one by one.
type Batcher interface {
	Apply(ops []FragOp) ([]error, error)
}

// staged is the overlay's view of a key with changes not yet committed.
type staged struct {
	frag *Fragment // nil: deleted
}

type writeBack struct {
	base Store
	q    *groupcommit.Queue[ids.ID, FragOp, staged]
}

func newWriteBack(base Store) *writeBack {
	w := &writeBack{base: base}
	w.q = groupcommit.New[ids.ID, FragOp, staged](w.commit, func(op *FragOp) ids.ID { return op.Key })
	return w
}

// Put implements Store.
func (w *writeBack) Put(fk ids.ID, f Fragment) error {
	fr := f
	w.q.Stage(FragOp{Key: fk, Put: &fr}, staged{frag: &fr})
	return nil
}

// Get implements Store.
func (w *writeBack) Get(fk ids.ID) (Fragment, error) {
	if s, ok := w.q.Lookup(fk); ok {
		if s.frag == nil {
			return Fragment{}, ErrNotFound
		}
		return *s.frag, nil
	}
	return w.base.Get(fk)
}

// Delete implements Store.
func (w *writeBack) Delete(fk ids.ID) error {
	if _, err := w.Get(fk); err != nil {
		return err
	}
	w.q.Stage(FragOp{Key: fk, Delete: true}, staged{})
	return nil
}

// Range implements Store (the durable store only).
func (w *writeBack) Range(f func(fk ids.ID, fr *Fragment) bool) { w.base.Range(f) }

// Ascend implements Store (the durable store only).
func (w *writeBack) Ascend(from ids.ID, f func(fk ids.ID, fr *Fragment) bool) {
	w.base.Ascend(from, f)
}

// Len implements Store (the durable store's count).
func (w *writeBack) Len() int { return w.base.Len() }

func (w *writeBack) commit(ops []FragOp) ([]error, error) {
	if b, ok := w.base.(Batcher); ok {
		return b.Apply(ops)
	}
	res := make([]error, len(ops))
	for i, op := range ops {
		if op.Delete {
			if err := w.base.Delete(op.Key); err != nil && !errors.Is(err, ErrNotFound) {
				res[i] = err
			}
			continue
		}
		res[i] = w.base.Put(op.Key, *op.Put)
	}
	return res, nil
}
