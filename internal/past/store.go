package past

import (
	"crypto/sha256"
	"fmt"
	"iter"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/store"
)

// Store is the local storage a PAST node persists through. Every mutating method returns only
// once the change is durable: PAST acknowledges a write right after PutIf returns. Methods are
// called from the node's Step and Tick, so they run one at a time per node.
//
// *store.Store (bbolt, fsync before return) implements it for real nodes; MemStore implements
// it for the simulator and tests. Errors wrap store.ErrNotFound and store.ErrPrecondition.
type Store interface {
	// PutIf stores obj unless cond (run atomically with the write) refuses it.
	PutIf(obj store.Object, cond store.Precondition) error
	Get(k ids.Key) (store.Object, error)
	Meta(k ids.Key) (store.Meta, error)
	// UpdateExpiry extends a lease, never shortens it, and returns the one in force.
	UpdateExpiry(k ids.Key, t time.Time) (time.Time, error)
	// Range yields live objects on arc in clockwise order.
	Range(arc store.Arc) iter.Seq2[store.Meta, error]
	// Delete moves a live object to the trash.
	Delete(k ids.Key) error
	CollectExpired(now time.Time) (int, error)
	PurgeTrash(now time.Time) (int, error)
}

var _ Store = (*store.Store)(nil)

// LazyStore is an optional Store ability (store.Store has it): changes whose loss in a crash
// is harmless, committed without an fsync of their own (see internal/store's lazy.go). PAST
// uses it for lease extensions and for the drop of a pending notification its recipient has
// filed; without it those are ordinary writes.
type LazyStore interface {
	DeleteLazy(k ids.Key)
	UpdateExpiryLazy(k ids.Key, t time.Time)
}

var _ LazyStore = (*store.Store)(nil)

// MemStore is an in-memory Store with the semantics of internal/store (leases, trash with a
// grace period, sequence-number preconditions), for the simulator and tests. "Durable" means
// "in the map". It is not safe for concurrent use.
type MemStore struct {
	Now        func() time.Time // stamps Delete; required
	TrashGrace time.Duration

	live   map[ids.Key]*store.Object
	sorted []ids.Key // live keys in (ring, id) order; nil when it needs rebuilding
	trash  map[ids.Key]trashed
	bytes  int64
}

type trashed struct {
	obj *store.Object
	at  time.Time
}

// NewMemStore makes an empty store whose Delete stamps times from now.
func NewMemStore(now func() time.Time, trashGrace time.Duration) *MemStore {
	if trashGrace <= 0 {
		trashGrace = store.DefaultTrashGrace
	}
	return &MemStore{Now: now, TrashGrace: trashGrace, live: make(map[ids.Key]*store.Object), trash: make(map[ids.Key]trashed)}
}

// Len is the number of live objects; Bytes their payload bytes.
func (m *MemStore) Len() int     { return len(m.live) }
func (m *MemStore) Bytes() int64 { return m.bytes }

// Has reports whether a live object has key k.
func (m *MemStore) Has(k ids.Key) bool { _, ok := m.live[k]; return ok }

// TrashLen is the number of trashed objects.
func (m *MemStore) TrashLen() int { return len(m.trash) }

// Keys calls f for every live key, in no particular order.
func (m *MemStore) Keys(f func(k ids.Key)) {
	for k := range m.live {
		f(k)
	}
}

// PutIf implements Store. The payload is kept without copying: callers hand over decoded
// message bytes that nobody else holds.
func (m *MemStore) PutIf(obj store.Object, cond store.Precondition) error {
	if len(obj.Payload) > store.DefaultMaxPayload || len(obj.Aux) > store.DefaultMaxAux {
		return fmt.Errorf("memstore put %s: %w", obj.Key, store.ErrTooLarge)
	}
	obj.Size = int64(len(obj.Payload))
	obj.Hash = sha256.Sum256(obj.Payload)
	old := m.live[obj.Key]
	if cond != nil {
		var om *store.Meta
		if old != nil {
			om = &old.Meta
		}
		if err := cond(om, &obj); err != nil {
			return fmt.Errorf("memstore put %s: %w", obj.Key, err)
		}
	}
	if old != nil {
		m.bytes -= old.Size
	} else {
		m.sorted = nil
	}
	o := obj
	m.live[obj.Key] = &o
	m.bytes += o.Size
	return nil
}

// Get implements Store.
func (m *MemStore) Get(k ids.Key) (store.Object, error) {
	o, ok := m.live[k]
	if !ok {
		return store.Object{}, fmt.Errorf("memstore get %s: %w", k, store.ErrNotFound)
	}
	return *o, nil
}

// Meta implements Store.
func (m *MemStore) Meta(k ids.Key) (store.Meta, error) {
	o, ok := m.live[k]
	if !ok {
		return store.Meta{}, fmt.Errorf("memstore meta %s: %w", k, store.ErrNotFound)
	}
	return o.Meta, nil
}

// UpdateExpiry implements Store.
func (m *MemStore) UpdateExpiry(k ids.Key, t time.Time) (time.Time, error) {
	o, ok := m.live[k]
	if !ok {
		return time.Time{}, fmt.Errorf("memstore expiry %s: %w", k, store.ErrNotFound)
	}
	if !o.Expiry.IsZero() && (t.IsZero() || t.After(o.Expiry)) {
		o.Expiry = t
	}
	return o.Expiry, nil
}

func cmpKey(a, b ids.Key) int {
	if c := ids.Cmp(a.Ring, b.Ring); c != 0 {
		return c
	}
	return ids.Cmp(a.ID, b.ID)
}

// Range implements Store. The loop body may modify the store.
func (m *MemStore) Range(arc store.Arc) iter.Seq2[store.Meta, error] {
	return func(yield func(store.Meta, error) bool) {
		if m.sorted == nil {
			m.sorted = make([]ids.Key, 0, len(m.live))
			for k := range m.live {
				m.sorted = append(m.sorted, k)
			}
			slices.SortFunc(m.sorted, cmpKey)
		}
		keys := m.sorted
		// Start just after arc.From and go clockwise once around the ring's keys.
		lo, _ := slices.BinarySearchFunc(keys, ids.Key{Ring: arc.Ring, ID: arc.From}, cmpKey)
		first, _ := slices.BinarySearchFunc(keys, ids.Key{Ring: arc.Ring}, cmpKey)
		end := first
		for end < len(keys) && keys[end].Ring == arc.Ring {
			end++
		}
		n := end - first
		if n == 0 {
			return
		}
		if lo < first || lo > end {
			lo = first
		}
		start := lo - first
		for i := 0; i < n; i++ {
			k := keys[first+(start+i)%n]
			if !arc.Contains(k) {
				if arc.From != arc.To && i > 0 {
					return // left the arc: keys are in clockwise order
				}
				continue
			}
			o, ok := m.live[k]
			if !ok {
				continue // deleted by the loop body
			}
			if !yield(o.Meta, nil) {
				return
			}
		}
	}
}

// Delete implements Store.
func (m *MemStore) Delete(k ids.Key) error {
	o, ok := m.live[k]
	if !ok {
		return fmt.Errorf("memstore delete %s: %w", k, store.ErrNotFound)
	}
	m.toTrash(o, m.Now())
	return nil
}

func (m *MemStore) toTrash(o *store.Object, at time.Time) {
	delete(m.live, o.Key)
	m.sorted = nil
	m.bytes -= o.Size
	m.trash[o.Key] = trashed{obj: o, at: at}
}

// CollectExpired implements Store.
func (m *MemStore) CollectExpired(now time.Time) (int, error) {
	var expired []*store.Object
	for _, o := range m.live {
		if o.Expired(now) {
			expired = append(expired, o)
		}
	}
	for _, o := range expired {
		m.toTrash(o, now)
	}
	return len(expired), nil
}

// PurgeTrash implements Store.
func (m *MemStore) PurgeTrash(now time.Time) (int, error) {
	cutoff := now.Add(-m.TrashGrace)
	n := 0
	for k, t := range m.trash {
		if !t.at.After(cutoff) {
			delete(m.trash, k)
			n++
		}
	}
	return n, nil
}
