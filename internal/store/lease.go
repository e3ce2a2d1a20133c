package store

import (
	"fmt"
	"iter"
	"time"

	"epost/internal/ids"
)

// Leases. Every object may carry an expiry (the zero Time: never expires). PAST refreshes the
// leases of objects still referenced; CollectExpired moves the others to the trash.

// The index keeps expiries as int64 nanoseconds since 1970, which spans the years 1678-2262.
var (
	minExpiry = time.Unix(0, -1<<63+1).UTC() // not -1<<63: that one would read back as "never"
	maxExpiry = time.Unix(0, 1<<63-1).UTC()
)

// clampExpiry maps t into the representable range, keeping the zero Time (forever) as is; a
// clamped time means the same as the original for any clock this software will see.
func clampExpiry(t time.Time) time.Time {
	switch {
	case t.IsZero():
		return t
	case t.After(maxExpiry):
		return maxExpiry
	case t.Before(minExpiry):
		return minExpiry
	}
	return t.Round(0).UTC()
}

// LaterExpiry reports whether a is a longer lease than b, with the zero Time as forever.
func LaterExpiry(a, b time.Time) bool { return laterExpiry(a, b) }

func laterExpiry(a, b time.Time) bool {
	switch {
	case b.IsZero():
		return false
	case a.IsZero():
		return true
	}
	return a.After(b)
}

// UpdateExpiry extends the lease of the live object under k to t if that is later than its
// current expiry (the zero t means forever) and returns the expiry now in force. It never
// shortens a lease, so replicas refreshing in any order converge on the longest one.
func (s *Store) UpdateExpiry(k ids.Key, t time.Time) (time.Time, error) {
	return s.setExpiry(k, t, false)
}

// SetExpiry sets the lease of the live object under k to t even if that shortens it.
func (s *Store) SetExpiry(k ids.Key, t time.Time) error {
	_, err := s.setExpiry(k, t, true)
	return err
}

func (s *Store) setExpiry(k ids.Key, t time.Time, force bool) (time.Time, error) {
	t = clampExpiry(t)
	var result time.Time
	err := s.update(func(w *writeTx) error {
		old, err := w.live(k)
		if err != nil {
			return err
		}
		if old == nil {
			return ErrNotFound
		}
		result = old.Expiry
		if !force && !laterExpiry(t, old.Expiry) {
			return nil
		}
		m := *old
		m.Expiry = t
		result = t
		return w.putLive(old, &m)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store set expiry %s: %w", k, err)
	}
	return result, nil
}

// Expired yields the live objects whose lease has ended at now, earliest expiry first.
func (s *Store) Expired(now time.Time) iter.Seq2[Meta, error] {
	return func(yield func(Meta, error) bool) {
		end := sortableTime(now)
		var after []byte // expiry-index key last yielded
		for {
			var batch []Meta
			err := s.view(func(tx *readTx) error {
				c := tx.Bucket(bucketExpiry).Cursor()
				objects := tx.Bucket(bucketObjects)
				var k []byte
				if after == nil {
					k, _ = c.First()
				} else if k, _ = c.Seek(after); k != nil && string(k) == string(after) {
					k, _ = c.Next()
				}
				for ; k != nil && len(batch) < chunkSize; k, _ = c.Next() {
					if len(k) != 8+keyLen {
						continue
					}
					if string(k[:8]) > string(end) {
						break
					}
					after = append(after[:0], k...)
					key := decodeKey(k[8:])
					v := objects.Get(k[8:])
					if v == nil {
						return fmt.Errorf("%w: expiry index names %s but no live object has it", ErrCorrupt, key)
					}
					m, err := decodeRecord(key, v)
					if err != nil {
						return err
					}
					batch = append(batch, m)
				}
				return nil
			})
			if err != nil {
				yield(Meta{}, fmt.Errorf("store expired: %w", err))
				return
			}
			for _, m := range batch {
				if !yield(m, nil) {
					return
				}
			}
			if len(batch) < chunkSize {
				return
			}
		}
	}
}

// CollectExpired moves every live object whose lease has ended at now to the trash, stamped
// now, and returns how many it moved.
func (s *Store) CollectExpired(now time.Time) (int, error) {
	total := 0
	for {
		n := 0
		err := s.update(func(w *writeTx) error {
			keys := scanTimeIndex(w.expiry, now, chunkSize)
			n = len(keys)
			for _, k := range keys {
				m, err := w.live(k)
				if err != nil {
					return err
				}
				if m == nil {
					return fmt.Errorf("%w: expiry index names %s but no live object has it", ErrCorrupt, k)
				}
				if err := w.moveToTrash(m, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("store collect expired: %w", err)
		}
		total += n
		if n < chunkSize {
			return total, nil
		}
	}
}
