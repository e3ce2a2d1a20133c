package store

import (
	"fmt"
	"time"

	"epost/internal/ids"
)

// The trash keeps deleted and expired objects, payload included, for Options.TrashGrace, so a
// wrong deletion (a lease that was not refreshed in time, an operator's mistake) can be undone
// with Restore. Trashed objects are invisible to Get, Has, Meta, Range and Summarize.

// Delete moves the live object under k to the trash, stamped with Options.Now.
func (s *Store) Delete(k ids.Key) error {
	at := s.now()
	err := s.update(func(w *writeTx) error {
		m, err := w.live(k)
		if err != nil {
			return err
		}
		if m == nil {
			return ErrNotFound
		}
		return w.moveToTrash(m, at)
	})
	if err != nil {
		return fmt.Errorf("store delete %s: %w", k, err)
	}
	return nil
}

// Trashed returns the metadata of the trashed object under k and when it was trashed.
func (s *Store) Trashed(k ids.Key) (Meta, time.Time, error) {
	var (
		m  Meta
		at time.Time
	)
	err := s.view(func(tx *readTx) error {
		v := tx.Bucket(bucketTrash).Get(encodeKey(k))
		if v == nil {
			return ErrNotFound
		}
		var err error
		at, m, err = decodeTrash(k, v)
		return err
	})
	if err != nil {
		return Meta{}, time.Time{}, fmt.Errorf("store trashed %s: %w", k, err)
	}
	return m, at, nil
}

// Restore moves the trashed object under k back to life with its old expiry (which may well
// have passed: extend it with UpdateExpiry, or the next CollectExpired trashes it again). It
// fails with ErrPrecondition if a live object has the key meanwhile.
func (s *Store) Restore(k ids.Key) error {
	err := s.update(func(w *writeTx) error {
		m, at, err := w.trashed(k)
		if err != nil {
			return err
		}
		if m == nil {
			return ErrNotFound
		}
		live, err := w.live(k)
		if err != nil {
			return err
		}
		if live != nil {
			return fmt.Errorf("%w: a live object has the key; delete it first", ErrPrecondition)
		}
		if err := w.deleteTrash(m, at); err != nil {
			return err
		}
		// The payload reference moves along with the object.
		return w.putLive(nil, m)
	})
	if err != nil {
		return fmt.Errorf("store restore %s: %w", k, err)
	}
	return nil
}

// PurgeTrash removes for good the objects trashed at or before now - Options.TrashGrace, with
// their payloads when nothing else refers to them. It returns how many objects it removed.
func (s *Store) PurgeTrash(now time.Time) (int, error) {
	cutoff := now.Add(-s.opts.TrashGrace)
	total := 0
	for {
		n := 0
		err := s.update(func(w *writeTx) error {
			keys := scanTimeIndex(w.trashq, cutoff, chunkSize)
			n = len(keys)
			for _, k := range keys {
				m, at, err := w.trashed(k)
				if err != nil {
					return err
				}
				if m == nil {
					return fmt.Errorf("%w: trash index names %s but the trash does not hold it", ErrCorrupt, k)
				}
				if err := w.deleteTrash(m, at); err != nil {
					return err
				}
				if err := w.release(m.Hash); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("store purge trash: %w", err)
		}
		total += n
		if n < chunkSize {
			return total, nil
		}
	}
}

// chunkSize bounds the objects one transaction or one iterator step handles, so that a big
// collection neither holds the write lock for long nor builds a huge transaction.
const chunkSize = 512

// scanTimeIndex returns up to limit keys from a time index (expiry, trashq) whose time is at
// or before until, oldest first.
func scanTimeIndex(b bucket, until time.Time, limit int) []ids.Key {
	end := sortableTime(until)
	var keys []ids.Key
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if len(k) != 8+keyLen {
			continue // not ours; repair rebuilds the index if it is damaged
		}
		if string(k[:8]) > string(end) {
			break
		}
		keys = append(keys, decodeKey(k[8:]))
	}
	return keys
}
