package store

import (
	"errors"
	"time"

	"epost/internal/ids"
)

// Lazy writes: changes whose loss in a crash does no harm, committed without a transaction
// (and an fsync) of their own. They ride along with the next ordinary commit, or are
// committed together after LazyDelay when none comes. A crash before that loses them, and
// the caller must be content with that:
//
//   - DeleteLazy: a pending notification its recipient has filed. If the deletion is lost, the
//     notification is offered again and the recipient, who has it in its received set, drops
//     it again.
//   - UpdateExpiryLazy: a lease extension. If it is lost, the object keeps the lease it had,
//     and the owner refreshes again before that lease runs out.
//
// Reads see a lazy change only once it is committed.

// LazyDelay is how long lazy changes wait for an ordinary commit to ride along with.
const LazyDelay = time.Second

type lazyOp func(w *writeTx) error

// DeleteLazy removes the live object under k, lazily (see above). Unlike Delete it skips the
// trash when the payload lives in the index: its one caller drops a pending notification
// whose recipient signed a receipt for it, which nobody has reason to restore, and a trashed
// copy would keep the payload in the index for TrashGrace (a notification that carries its
// message's chunks is a few kilobytes). If the insert and the drop fall between the same two
// checkpoints, the index file never sees the object at all.
func (s *Store) DeleteLazy(k ids.Key) {
	at := s.now()
	s.addLazy(func(w *writeTx) error {
		m, err := w.live(k)
		if err != nil || m == nil {
			return err
		}
		if v := w.payload.Get(m.Hash[:]); v != nil {
			if p, err := decodePayloadEntry(m.Hash, v); err == nil && p.loc != inFile {
				if err := w.deleteLive(m); err != nil {
					return err
				}
				return w.release(m.Hash)
			}
		}
		return w.moveToTrash(m, at)
	})
}

// UpdateExpiryLazy extends the lease of the live object under k to t, lazily (see above).
func (s *Store) UpdateExpiryLazy(k ids.Key, t time.Time) {
	t = clampExpiry(t)
	s.addLazy(func(w *writeTx) error {
		old, err := w.live(k)
		if err != nil || old == nil || !laterExpiry(t, old.Expiry) {
			return err
		}
		m := *old
		m.Expiry = t
		return w.putLive(old, &m)
	})
}

func (s *Store) addLazy(op lazyOp) {
	s.lazyMu.Lock()
	defer s.lazyMu.Unlock()
	s.lazy = append(s.lazy, op)
	if s.lazyTimer == nil {
		s.lazyTimer = time.AfterFunc(LazyDelay, func() { _ = s.FlushLazy() })
	}
}

// takeLazy returns the queued lazy changes as one write, or nil.
func (s *Store) takeLazy() func(w *writeTx) error {
	s.lazyMu.Lock()
	ops := s.lazy
	s.lazy = nil
	if s.lazyTimer != nil {
		s.lazyTimer.Stop()
		s.lazyTimer = nil
	}
	s.lazyMu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	return func(w *writeTx) error {
		for _, op := range ops {
			w.freed = nil
			if err := op(w); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	}
}

// FlushLazy commits the queued lazy changes now (Close does it too).
func (s *Store) FlushLazy() error {
	fn := s.takeLazy()
	if fn == nil {
		return nil
	}
	return s.update(fn)
}
