package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"

	"epost/internal/ids"
)

// Get returns the live object under k with its payload, verified against its hash
// (ErrCorrupt if it does not match or is missing; ErrNotFound if there is no such object).
func (s *Store) Get(k ids.Key) (Object, error) {
	// A file payload is read after the index transaction ends, so a concurrent replace or
	// purge can remove the file in between; then the index has moved on and a second look
	// finds the new state. A file that stays missing while the index refers to it is damage.
	// A value in the value log is read the same way: its segment may go in between (the
	// value released, or moved by a compaction).
	for attempt := 1; ; attempt++ {
		obj, p, err := s.getIndexed(k)
		if err != nil || p.loc == inIndex {
			return obj, err
		}
		var data []byte
		if p.loc == inLog {
			data, err = s.vlog.read(p.seg, p.off, p.size, obj.Hash)
		} else {
			data, err = s.readBlob(obj.Hash, obj.Size)
		}
		if err == nil {
			obj.Payload = data
			return obj, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			if attempt < 3 {
				continue
			}
			err = fmt.Errorf("%w: payload %s is missing (%v)", ErrCorrupt, obj.Hash, err)
		}
		return Object{}, fmt.Errorf("store get %s: %w", k, err)
	}
}

// getIndexed reads k's record and, for inline payloads, the verified payload. For the other
// locations p says where the caller must read it (a file, the value log).
func (s *Store) getIndexed(k ids.Key) (obj Object, p payloadEntry, err error) {
	err = s.view(func(tx *readTx) error {
		v := tx.Bucket(bucketObjects).Get(encodeKey(k))
		if v == nil {
			return ErrNotFound
		}
		m, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		obj.Meta = m
		pv := tx.Bucket(bucketPayload).Get(m.Hash[:])
		if pv == nil {
			return fmt.Errorf("%w: payload %s has no index entry", ErrCorrupt, m.Hash)
		}
		p, err = decodePayloadEntry(m.Hash, pv)
		if err != nil {
			return err
		}
		if p.loc != inIndex {
			p.data = nil
			return nil
		}
		if Hash(sha256.Sum256(p.data)) != m.Hash {
			return fmt.Errorf("%w: inline payload does not hash to %s", ErrCorrupt, m.Hash)
		}
		obj.Payload = append([]byte(nil), p.data...)
		p.data = nil // bbolt's memory
		return nil
	})
	if err != nil {
		return Object{}, payloadEntry{}, fmt.Errorf("store get %s: %w", k, err)
	}
	return obj, p, nil
}

// Has reports whether a live object has key k.
func (s *Store) Has(k ids.Key) (bool, error) {
	var ok bool
	err := s.view(func(tx *readTx) error {
		ok = tx.Bucket(bucketObjects).Get(encodeKey(k)) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store has %s: %w", k, err)
	}
	return ok, nil
}

// Meta returns the live object under k without reading its payload.
func (s *Store) Meta(k ids.Key) (Meta, error) {
	var m Meta
	err := s.view(func(tx *readTx) error {
		v := tx.Bucket(bucketObjects).Get(encodeKey(k))
		if v == nil {
			return ErrNotFound
		}
		var err error
		m, err = decodeRecord(k, v)
		return err
	})
	if err != nil {
		return Meta{}, fmt.Errorf("store meta %s: %w", k, err)
	}
	return m, nil
}
