package mailstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"epost/internal/content"
	"epost/internal/mailbox"
)

// Append implements mailbox.Folder: the message is split (splitMessage), its large pieces
// stored as content objects, and one insert entry written; the UID is known once the entry
// is durable and replayed.
func (fo *folder) Append(raw []byte, flags []mailbox.Flag, date time.Time) (mailbox.UID, error) {
	uids, err := fo.AppendAll([]mailbox.NewMessage{{Raw: raw, Flags: flags, Date: date}})
	if err != nil {
		return 0, err
	}
	return uids[0], nil
}

// AppendAll implements mailbox.MultiAppender as Append does for one message, for all of them
// at once: every large piece is stored in parallel, then the records go into as few insert
// entries as fit (maxEntryBytes), queued together, so that POST writes them under one head
// (or a few: a head carries at most half of post's inline limit) and the caller waits for
// one ring round trip, not one per message.
func (fo *folder) AppendAll(msgs []mailbox.NewMessage) ([]mailbox.UID, error) {
	s, f := fo.s, fo.f
	if len(msgs) == 0 {
		return nil, nil
	}
	structures := make([]*mailbox.Structure, len(msgs))
	var pieces [][]byte
	var counts []int
	for i, m := range msgs {
		structures[i] = mailbox.Parse(m.Raw) // outside the locks: the only expensive step
		p := splitMessage(m.Raw)
		pieces = append(pieces, p...)
		counts = append(counts, len(p))
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var segs []segment
	var stored *storing // the pieces' insert, when it runs alongside the entry's
	if sl, ok := s.cfg.Contents.(Sealer); ok {
		var err error
		if segs, stored, err = s.sealPieces(sl, pieces); err != nil {
			return nil, fmt.Errorf("mailstore: append: %w", err)
		}
	} else {
		var err error
		if segs, err = s.storePieces(ctx, pieces); err != nil {
			return nil, fmt.Errorf("mailstore: append: %w", err)
		}
	}
	recs := make([]record, len(msgs))
	for i, m := range msgs {
		date := m.Date
		if date.IsZero() {
			date = s.cfg.Clock.Now()
		}
		recs[i] = record{Date: date.Round(time.Second).UTC(), Size: int64(len(m.Raw)), Flags: normalizeFlags(m.Flags),
			Segments: segs[:counts[i]:counts[i]], Structure: encodeStructure(structures[i])}
		segs = segs[counts[i]:]
	}
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	s.mu.RLock()
	deleted := f.deleted
	s.mu.RUnlock()
	if deleted {
		return nil, mailbox.ErrNoFolder
	}
	if stored != nil {
		// Readers on this node find the bytes here while the pieces are still on their way.
		for i, m := range msgs {
			s.contents.put(segmentsKey(recs[i].Segments), m.Raw)
		}
	}
	uids, err := fo.insertLocked(recs)
	if stored != nil {
		perr := s.w.wait(ctx, "store message parts", stored.done)
		if perr == nil {
			perr = stored.err()
		}
		if perr != nil {
			// The entries name pieces the ring may not have: take the messages out again.
			// The client hears of a failure and appends again (a crash before this expunge
			// leaves such a message unreadable, never an acknowledged one lost).
			if filed := compactUIDs(uids); len(filed) > 0 {
				if _, xerr := fo.expungeLocked(filed); xerr != nil {
					s.cfg.Log.Error("mailstore: appended messages whose parts were not stored stay in the folder", "user", s.cfg.Address, "folder", f.Name, "uids", filed, "err", xerr)
				}
			}
			return nil, fmt.Errorf("mailstore: append: %w", perr)
		}
	}
	if stored == nil { // else cached above
		for i, m := range msgs[:len(uids)] {
			if uids[i] != 0 {
				s.contents.put(segmentsKey(recs[i].Segments), m.Raw)
			}
		}
	}
	if err != nil {
		return compactUIDs(uids), err
	}
	return uids, nil
}

// compactUIDs drops the zeros (messages not filed) of a partial insert.
func compactUIDs(uids []mailbox.UID) []mailbox.UID {
	var out []mailbox.UID
	for _, u := range uids {
		if u != 0 {
			out = append(out, u)
		}
	}
	return out
}

// maxParallelPuts bounds the content inserts one append has in flight.
const maxParallelPuts = 256

// storePieces makes segments of pieces: small ones inline, the others content objects
// (stored in parallel; identical ones exist once in the ring).
func (s *Store) storePieces(ctx context.Context, pieces [][]byte) ([]segment, error) {
	segs := make([]segment, len(pieces))
	var big [][]byte
	var at []int
	for i, p := range pieces {
		if len(p) <= maxInline {
			segs[i] = segment{Inline: slices.Clone(p)}
			continue
		}
		big = append(big, p)
		at = append(at, i)
	}
	// A MULTIAPPEND may bring thousands of parts: at most maxParallelPuts in flight at once.
	var refs []content.Ref
	for wave := range slices.Chunk(big, maxParallelPuts) {
		r, err := s.w.putAll(ctx, s.cfg.Contents, wave)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r...)
	}
	for j, i := range at {
		r := refs[j]
		segs[i] = segment{Ref: &r}
	}
	return segs, nil
}

// storing is the background insert of an append's pieces: done is closed once every piece's
// outcome is known, and err then tells whether all were stored.
type storing struct {
	done chan struct{}
	mu   sync.Mutex
	errs []error
}

func (st *storing) err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return errors.Join(st.errs...)
}

// sealPieces makes segments of pieces as storePieces does, with the references computed at
// once; the large pieces are stored in the background, at most maxParallelPuts at a time.
func (s *Store) sealPieces(sl Sealer, pieces [][]byte) ([]segment, *storing, error) {
	segs := make([]segment, len(pieces))
	var stores []func(func(error))
	for i, p := range pieces {
		if len(p) <= maxInline {
			segs[i] = segment{Inline: slices.Clone(p)}
			continue
		}
		ref, store, err := sl.Seal(p)
		if err != nil {
			return nil, nil, err
		}
		segs[i] = segment{Ref: &ref}
		stores = append(stores, store)
	}
	st := &storing{done: make(chan struct{})}
	if len(stores) == 0 {
		close(st.done)
		return segs, st, nil
	}
	// A window of maxParallelPuts: each completion starts the next store.
	next, left := 0, len(stores)
	var start func()
	start = func() {
		st.mu.Lock()
		if next == len(stores) {
			st.mu.Unlock()
			return
		}
		store := stores[next]
		next++
		st.mu.Unlock()
		store(func(err error) {
			st.mu.Lock()
			if err != nil {
				st.errs = append(st.errs, err)
			}
			left--
			last := left == 0
			st.mu.Unlock()
			if last {
				close(st.done)
				return
			}
			start()
		})
	}
	for range min(maxParallelPuts, len(stores)) {
		start()
	}
	return segs, st, nil
}

// insertLocked writes insert entries for recs (batched under the entry size limit) and
// returns the UIDs they got, in order. On an error, the UIDs of the records whose entry is
// durable all the same are given, and zero for the others. The caller holds wmu (shared or
// alone).
func (fo *folder) insertLocked(recs []record) ([]mailbox.UID, error) {
	s, f := fo.s, fo.f
	var bodies [][]byte
	var counts []int
	var batch []record
	flush := func() {
		if len(batch) > 0 {
			bodies = append(bodies, (&entry{Kind: kindInsert, Records: batch}).encode())
			counts = append(counts, len(batch))
			batch = nil
		}
	}
	size := 0
	for _, r := range recs {
		one := (&entry{Kind: kindInsert, Records: []record{r}}).encode()
		if len(one) > maxEntryBytes {
			// A structure too large to keep: the parse cache is computed from the bytes
			// when needed instead.
			r.Structure = nil
			one = (&entry{Kind: kindInsert, Records: []record{r}}).encode()
			if len(one) > maxEntryBytes {
				return nil, fmt.Errorf("mailstore: message record of %d bytes: %w", len(one), mailbox.ErrTooBig)
			}
		}
		if size+len(one) > maxEntryBytes {
			flush()
			size = 0
		}
		batch = append(batch, r)
		size += len(one)
	}
	flush()
	ctx, cancel := s.ctx()
	defer cancel()
	idx, filed, err := s.w.appendEach(ctx, s.cfg.Logs.Append, f.Log, bodies)
	s.mu.Lock()
	s.syncLocked(f)
	var uids []mailbox.UID
	for i, at := range idx {
		if !filed[i] {
			uids = append(uids, make([]mailbox.UID, counts[i])...)
			continue
		}
		got := f.insertedBy(at)
		if len(got) != counts[i] {
			s.mu.Unlock()
			return nil, fmt.Errorf("mailstore: insert into %s: entry %d replayed as %d messages, want %d", f.Name, at, len(got), counts[i])
		}
		uids = append(uids, got...)
	}
	s.mu.Unlock()
	s.changed(f)
	if err != nil {
		return uids, fmt.Errorf("mailstore: insert into %s: %w", f.Name, err)
	}
	return uids, nil
}

// Copy implements mailbox.Folder: the copies' records name the same content (no upload).
func (fo *folder) Copy(uids []mailbox.UID, dest mailbox.Folder) (mailbox.CopyResult, error) {
	d, ok := dest.(*folder)
	if !ok || d.s != fo.s {
		return mailbox.CopyResult{}, fmt.Errorf("mailstore: copy across stores: %w", mailbox.ErrNoFolder)
	}
	fo.s.wmu.RLock()
	defer fo.s.wmu.RUnlock()
	return fo.s.copyLocked(fo, uids, d, false)
}

// Move implements mailbox.Folder (RFC 6851): insert into dest, then expunge here. The two
// logs cannot change atomically; a crash between the steps leaves a copy, never a loss.
func (fo *folder) Move(uids []mailbox.UID, dest mailbox.Folder) (mailbox.CopyResult, error) {
	d, ok := dest.(*folder)
	if !ok || d.s != fo.s {
		return mailbox.CopyResult{}, fmt.Errorf("mailstore: move across stores: %w", mailbox.ErrNoFolder)
	}
	fo.s.wmu.Lock()
	defer fo.s.wmu.Unlock()
	return fo.s.copyLocked(fo, uids, d, true)
}

func (s *Store) copyLocked(src *folder, uids []mailbox.UID, dest *folder, move bool) (mailbox.CopyResult, error) {
	s.refresh(src.f)
	sorted := slices.Clone(uids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	s.mu.RLock()
	if src.f.deleted || dest.f.deleted {
		s.mu.RUnlock()
		return mailbox.CopyResult{}, mailbox.ErrNoFolder
	}
	res := mailbox.CopyResult{UIDValidity: dest.f.UIDValidity}
	var recs []record
	for _, uid := range sorted {
		m := src.f.find(uid)
		if m == nil {
			continue
		}
		recs = append(recs, record{Date: m.Date, Size: m.Size, Flags: slices.Clone(m.Flags), Segments: m.Segments,
			Structure: encodeStructure(m.Structure)})
		res.SourceUIDs = append(res.SourceUIDs, uid)
	}
	s.mu.RUnlock()
	if len(recs) == 0 {
		return res, nil
	}
	destUIDs, err := dest.insertLocked(recs)
	if err != nil {
		return mailbox.CopyResult{}, err
	}
	res.DestUIDs = destUIDs
	if move {
		if _, err := src.expungeLocked(res.SourceUIDs); err != nil {
			return mailbox.CopyResult{}, fmt.Errorf("mailstore: move: copied, but expunge failed: %w", err)
		}
	}
	return res, nil
}
