package store

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
)

// A Precondition decides, inside the write transaction, whether incoming may replace stored
// (nil when the key has no live object). Returning an error refuses that one object; wrap
// ErrPrecondition so callers can tell a refusal from a failure. incoming's Size and Hash are
// filled in. It must not call the Store and must not keep stored or incoming.
type Precondition func(stored *Meta, incoming *Object) error

// SeqGreater admits an object only if no live object has the key or its sequence number is
// strictly greater than the stored one: the no-rollback rule of signed mutable objects.
func SeqGreater(stored *Meta, incoming *Object) error {
	if stored != nil && incoming.Seq <= stored.Seq {
		return fmt.Errorf("%w: sequence %d is not above the stored %d", ErrPrecondition, incoming.Seq, stored.Seq)
	}
	return nil
}

// Put stores obj under obj.Key, replacing any live object with that key, and returns once the
// object is durable. Replacing takes the new object whole, expiry included; use UpdateExpiry to
// extend a lease. obj.Size and obj.Hash are computed; the store keeps its own copy of the bytes.
func (s *Store) Put(obj Object) error { return s.PutIf(obj, nil) }

// PutIfSeqGreater is PutIf(obj, SeqGreater).
func (s *Store) PutIfSeqGreater(obj Object) error { return s.PutIf(obj, SeqGreater) }

// PutIf is Put guarded by cond, which sees the stored object inside the write transaction, so
// no other write can come between the check and the put. A nil cond always admits.
func (s *Store) PutIf(obj Object, cond Precondition) error {
	errs, err := s.PutBatch([]Object{obj}, cond)
	if err != nil {
		return err
	}
	return errs[0]
}

// PutBatch stores many objects with a single index commit (one fsync instead of one per
// object), each guarded by cond (nil admits all). The objects are applied in order, so a later
// object with the same key as an earlier one sees it as stored.
//
// If err is non-nil nothing was stored. Otherwise results[i] is nil if objs[i] is now durable,
// or why it alone was refused (ErrTooLarge, ErrPrecondition, a payload file error); the others
// are stored regardless.
func (s *Store) PutBatch(objs []Object, cond Precondition) (results []error, err error) {
	results = make([]error, len(objs))
	prepared := make([]Object, len(objs))
	var files []Hash // pinned, to be unpinned (and removed if unused) whatever happens
	defer func() {
		for _, h := range files {
			s.unpin(h)
			// A no-op for files now referenced; removes files of refused objects and of
			// content that turned out to be stored inline already.
			s.removeBlobIfUnused(h)
		}
	}()

	for i := range objs {
		o, err := s.prepare(&objs[i], false)
		if err != nil {
			results[i] = fmt.Errorf("store put %s: %w", objs[i].Key, err)
			continue
		}
		prepared[i] = o
		if o.Size > int64(s.opts.InlineMax) {
			s.pin(o.Hash)
			files = append(files, o.Hash)
		}
	}
	s.writeBlobs(prepared, results)
	if len(files) > 0 {
		// One directory fsync makes every rename above durable, and it also covers a file
		// found in place for dedup whose writer may not have synced the directory yet.
		if err := syncDir(s.blobDir); err != nil {
			return nil, fmt.Errorf("store put: %w", err)
		}
	}

	if !slices.Contains(results, nil) {
		return results, nil // nothing left to commit; spare the fsync
	}
	prepErrs := slices.Clone(results)
	err = s.update(func(w *writeTx) error {
		// This may run more than once (see update); start from the preparation's verdicts.
		copy(results, prepErrs)
		for i := range prepared {
			if results[i] != nil {
				continue
			}
			if err := applyPut(w, &prepared[i], cond, int64(s.opts.InlineMax), &results[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store put: %w", err)
	}
	return results, nil
}

// prepare checks limits and computes the payload's size and, unless hashed (the caller did), its
// hash.
func (s *Store) prepare(obj *Object, hashed bool) (Object, error) {
	if len(obj.Payload) > s.opts.MaxPayload {
		return Object{}, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, len(obj.Payload), s.opts.MaxPayload)
	}
	if len(obj.Aux) > s.opts.MaxAux {
		return Object{}, fmt.Errorf("%w: aux of %d bytes exceeds %d", ErrTooLarge, len(obj.Aux), s.opts.MaxAux)
	}
	o := *obj
	o.Size = int64(len(o.Payload))
	if !hashed {
		o.Hash = sha256.Sum256(o.Payload)
	}
	// Keep what the index can represent, so Meta returns exactly what was stored.
	o.Expiry = clampExpiry(o.Expiry)
	return o, nil
}

// blobWriters bounds the payload files one PutBatch writes at once. Writing them in parallel
// lets the disk merge their fsyncs instead of paying one full flush after another.
const blobWriters = 8

// writeBlobs writes the payload files of the large objects among objs (each distinct payload
// once), recording failures in results.
func (s *Store) writeBlobs(objs []Object, results []error) {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, blobWriters)
		seen   = map[Hash]bool{}
		failMu sync.Mutex
		failed = map[Hash]error{}
	)
	for i := range objs {
		o := &objs[i]
		if results[i] != nil || o.Size <= int64(s.opts.InlineMax) || seen[o.Hash] {
			continue
		}
		seen[o.Hash] = true
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.writeBlob(o.Hash, o.Payload); err != nil {
				failMu.Lock()
				failed[o.Hash] = err
				failMu.Unlock()
			}
		})
	}
	wg.Wait()
	for i := range objs {
		if err, ok := failed[objs[i].Hash]; ok && results[i] == nil && objs[i].Size > int64(s.opts.InlineMax) {
			results[i] = fmt.Errorf("store put %s: %w", objs[i].Key, err)
		}
	}
}
