package store

import (
	"fmt"
	"slices"
	"time"

	"epost/internal/ids"
)

// OpKind says what an Op does.
type OpKind uint8

// Op kinds.
const (
	OpPut    OpKind = iota + 1 // Put Obj, guarded by Cond
	OpExpiry                   // UpdateExpiry(Key, Expiry): extend, never shorten
	OpDelete                   // Delete(Key): move to the trash
)

// Op is one change of an Apply batch.
type Op struct {
	Kind OpKind
	Obj  Object       // OpPut
	Cond Precondition // OpPut; nil admits
	// Hashed (OpPut): Obj.Hash is already the SHA-256 of Obj.Payload, computed by the caller
	// (PAST's replicas hash every payload they validate): Apply does not hash it again.
	Hashed bool
	Key    ids.Key   // OpExpiry, OpDelete
	Expiry time.Time // OpExpiry
}

// Apply makes a mixed batch of changes durable with one index commit (one fsync), in order:
// a later op on a key sees the earlier ones. It is PutBatch for puts, lease extensions and
// deletions together, for a caller that queues its writes and commits them in groups (PAST's
// replicas: see internal/past's persist.go).
//
// If err is non-nil nothing was changed. Otherwise results[i] is nil if ops[i] is now durable,
// or why it alone was refused (ErrPrecondition, ErrNotFound, ErrTooLarge, a payload file
// error); the others are applied regardless.
func (s *Store) Apply(ops []Op) (results []error, err error) {
	results = make([]error, len(ops))
	prepared := make([]Object, len(ops))
	var files []Hash
	defer func() {
		for _, h := range files {
			s.unpin(h)
			s.removeBlobIfUnused(h)
		}
	}()
	var puts []Object
	var putAt []int
	for i := range ops {
		if ops[i].Kind != OpPut {
			continue
		}
		o, err := s.prepare(&ops[i].Obj, ops[i].Hashed)
		if err != nil {
			results[i] = fmt.Errorf("store put %s: %w", ops[i].Obj.Key, err)
			continue
		}
		prepared[i] = o
		if o.Size > int64(s.opts.InlineMax) {
			s.pin(o.Hash)
			files = append(files, o.Hash)
			puts = append(puts, o)
			putAt = append(putAt, i)
		}
	}
	if len(puts) > 0 {
		perr := make([]error, len(puts))
		s.writeBlobs(puts, perr)
		for j, e := range perr {
			if e != nil {
				results[putAt[j]] = e
			}
		}
		if err := syncDir(s.blobDir); err != nil {
			return nil, fmt.Errorf("store apply: %w", err)
		}
	}
	prepErrs := slices.Clone(results)
	err = s.update(func(w *writeTx) error {
		copy(results, prepErrs)
		for i := range ops {
			if results[i] != nil {
				continue
			}
			var err error
			switch ops[i].Kind {
			case OpPut:
				err = applyPut(w, &prepared[i], ops[i].Cond, int64(s.opts.InlineMax), &results[i])
			case OpExpiry:
				err = applyExpiry(w, ops[i].Key, clampExpiry(ops[i].Expiry), &results[i])
			case OpDelete:
				err = applyDelete(w, ops[i].Key, s.now(), &results[i])
			default:
				results[i] = fmt.Errorf("store apply: unknown op %d", ops[i].Kind)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store apply: %w", err)
	}
	return results, nil
}

// applyPut is one put of Apply; refusals go to res, failures of the transaction are returned.
func applyPut(w *writeTx, o *Object, cond Precondition, inlineMax int64, res *error) error {
	old, err := w.live(o.Key)
	if err != nil {
		return err
	}
	if cond != nil {
		if err := cond(old, o); err != nil {
			*res = fmt.Errorf("store put %s: %w", o.Key, err)
			return nil
		}
	}
	switch {
	case o.Size > inlineMax:
		err = w.addRef(o.Hash, o.Size, nil, inFile)
	case w.vals != nil && o.Size >= w.vals.min:
		err = w.addRef(o.Hash, o.Size, o.Payload, inLog)
	default:
		err = w.addRef(o.Hash, o.Size, o.Payload, inIndex)
	}
	if err != nil {
		return err
	}
	if err := w.putLive(old, &o.Meta); err != nil {
		return err
	}
	if old != nil {
		return w.release(old.Hash)
	}
	return nil
}

func applyExpiry(w *writeTx, k ids.Key, t time.Time, res *error) error {
	old, err := w.live(k)
	if err != nil {
		return err
	}
	if old == nil {
		*res = fmt.Errorf("store set expiry %s: %w", k, ErrNotFound)
		return nil
	}
	if !laterExpiry(t, old.Expiry) {
		return nil
	}
	m := *old
	m.Expiry = t
	return w.putLive(old, &m)
}

func applyDelete(w *writeTx, k ids.Key, at time.Time, res *error) error {
	m, err := w.live(k)
	if err != nil {
		return err
	}
	if m == nil {
		*res = fmt.Errorf("store delete %s: %w", k, ErrNotFound)
		return nil
	}
	return w.moveToTrash(m, at)
}
