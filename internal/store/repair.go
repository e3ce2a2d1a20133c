package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"epost/internal/diskstat"
	"epost/internal/ids"
)

// RepairReport is what Open found and did.
//
// TempFiles and Orphans are the normal debris of a crash (a write interrupted before its index
// commit, a removal interrupted after it). Fixed should stay empty: an entry there means the
// index disagreed with itself, which points to a bug or a damaged disk. Damaged lists objects
// whose payload is missing or wrong; they stay in the index and Get fails for them with
// ErrCorrupt until a good copy is Put again (PAST fetches one from another replica).
type RepairReport struct {
	TempFiles int
	Orphans   int
	Fixed     []string
	Damaged   []Damage
}

// Damage is one object whose payload cannot be served.
type Damage struct {
	Key     ids.Key
	InTrash bool
	Hash    Hash
	Err     error // wraps ErrCorrupt
}

func (s *Store) repair() error {
	var r RepairReport

	// Anything in tmp/ is a payload file whose Put never committed.
	entries, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return err
		}
		r.TempFiles++
	}

	// Recount the index: reference counts, statistics and the time indexes are derived data
	// kept in step by every transaction; check them rather than trust them.
	files := map[Hash]int64{}       // payloads the index expects in files, with their sizes
	logs := map[Hash]payloadEntry{} // payloads the index expects in the value log
	badHashes := map[Hash]error{}   // payloads that cannot be served
	err = s.db.Update(func(tx *bolt.Tx) error {
		diskstat.StoreIndex.BoltCommit(tx)
		w := newWriteTx(tx)
		c := recount{w: w, refs: map[Hash]uint64{}}
		if err := c.scanObjects(&r); err != nil {
			return err
		}
		if err := c.scanTrash(&r); err != nil {
			return err
		}
		if err := c.checkTimeIndex(w.expiry, c.expiry, "expiry", &r); err != nil {
			return err
		}
		if err := c.checkTimeIndex(w.trashq, c.trashq, "trash time", &r); err != nil {
			return err
		}
		if err := c.checkPayloads(files, logs, badHashes, s.opts.VerifyPayloads, &r); err != nil {
			return err
		}
		if c.stats != w.stats {
			r.Fixed = append(r.Fixed, fmt.Sprintf("statistics were %+v, recounted %+v", w.stats, c.stats))
			w.stats = c.stats
		}
		return w.flushStats()
	})
	if err != nil {
		return err
	}

	// Payload files: remove those the index does not expect, check the others.
	entries, err = os.ReadDir(s.blobDir)
	if err != nil {
		return err
	}
	present := map[Hash]bool{}
	for _, e := range entries {
		var h Hash
		n, herr := hex.Decode(h[:], []byte(e.Name()))
		size, want := files[h]
		if herr != nil || n != len(h) || len(e.Name()) != 2*len(h) || !want {
			if err := os.RemoveAll(filepath.Join(s.blobDir, e.Name())); err != nil {
				return err
			}
			r.Orphans++
			continue
		}
		present[h] = true
		if err := s.checkBlob(h, size); err != nil {
			badHashes[h] = err
		}
	}
	for h := range files {
		if !present[h] {
			badHashes[h] = fmt.Errorf("%w: payload file %s is missing", ErrCorrupt, h)
		}
	}
	if err := s.openSegments(logs, badHashes, &r); err != nil {
		return err
	}
	if len(badHashes) > 0 {
		if err := s.damagedKeys(badHashes, &r); err != nil {
			return err
		}
	}

	s.repairs = r
	log := s.opts.Logger
	if r.TempFiles > 0 || r.Orphans > 0 {
		log.Info("store: removed crash debris", "dir", s.dir, "temp_files", r.TempFiles, "orphan_payloads", r.Orphans)
	}
	for _, f := range r.Fixed {
		log.Warn("store: index repaired", "dir", s.dir, "fix", f)
	}
	for _, d := range r.Damaged {
		log.Error("store: object payload damaged; it must be fetched again from another replica",
			"dir", s.dir, "key", d.Key.Full(), "in_trash", d.InTrash, "err", d.Err)
	}
	return nil
}

// checkBlob checks a payload file's size and, with Options.VerifyPayloads, its hash.
func (s *Store) checkBlob(h Hash, size int64) error {
	if !s.opts.VerifyPayloads {
		fi, err := os.Stat(s.blobPath(h))
		if err != nil {
			return fmt.Errorf("%w: payload file %s: %v", ErrCorrupt, h, err)
		}
		if fi.Size() != size {
			return fmt.Errorf("%w: payload file %s has %d bytes, want %d", ErrCorrupt, h, fi.Size(), size)
		}
		return nil
	}
	_, err := s.readBlob(h, size)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: payload file %s: %v", ErrCorrupt, h, err)
	}
	return err
}

// damagedKeys lists the objects (live and trashed) whose payload is in bad.
func (s *Store) damagedKeys(bad map[Hash]error, r *RepairReport) error {
	return s.view(func(tx *readTx) error {
		for _, trash := range []bool{false, true} {
			b := tx.Bucket(bucketObjects)
			if trash {
				b = tx.Bucket(bucketTrash)
			}
			err := b.ForEach(func(k, v []byte) error {
				if len(k) != keyLen {
					return nil
				}
				key := decodeKey(k)
				var m Meta
				var err error
				if trash {
					_, m, err = decodeTrash(key, v)
				} else {
					m, err = decodeRecord(key, v)
				}
				if err != nil {
					return nil // already reported by the recount
				}
				if e, ok := bad[m.Hash]; ok {
					r.Damaged = append(r.Damaged, Damage{Key: key, InTrash: trash, Hash: m.Hash, Err: e})
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// recount rebuilds the derived data of the index from the objects and the trash.
type recount struct {
	w      *writeTx
	refs   map[Hash]uint64
	stats  Stats
	expiry map[string]bool // expected expiry index keys
	trashq map[string]bool // expected trash time index keys
}

func (c *recount) scanObjects(r *RepairReport) error {
	c.expiry = map[string]bool{}
	return c.w.objects.ForEach(func(k, v []byte) error {
		if len(k) != keyLen {
			r.Fixed = append(r.Fixed, fmt.Sprintf("ignored malformed object key %x", k))
			return nil
		}
		key := decodeKey(k)
		m, err := decodeRecord(key, v)
		if err != nil {
			r.Damaged = append(r.Damaged, Damage{Key: key, Err: err})
			return nil
		}
		c.refs[m.Hash]++
		c.stats.Objects++
		c.stats.Bytes += m.Size
		if !m.Expiry.IsZero() {
			c.expiry[string(timeIndexKey(m.Expiry, key))] = true
		}
		return nil
	})
}

func (c *recount) scanTrash(r *RepairReport) error {
	c.trashq = map[string]bool{}
	return c.w.trash.ForEach(func(k, v []byte) error {
		if len(k) != keyLen {
			r.Fixed = append(r.Fixed, fmt.Sprintf("ignored malformed trash key %x", k))
			return nil
		}
		key := decodeKey(k)
		at, m, err := decodeTrash(key, v)
		if err != nil {
			r.Damaged = append(r.Damaged, Damage{Key: key, InTrash: true, Err: err})
			return nil
		}
		c.refs[m.Hash]++
		c.stats.TrashObjects++
		c.stats.TrashBytes += m.Size
		c.trashq[string(timeIndexKey(at, key))] = true
		return nil
	})
}

// checkTimeIndex makes index b hold exactly the keys in want, rebuilding it if not.
func (c *recount) checkTimeIndex(b bucket, want map[string]bool, name string, r *RepairReport) error {
	n, ok := 0, true
	err := b.ForEach(func(k, _ []byte) error {
		n++
		ok = ok && want[string(k)]
		return nil
	})
	if err != nil || (ok && n == len(want)) {
		return err
	}
	r.Fixed = append(r.Fixed, fmt.Sprintf("rebuilt the %s index (%d entries, want %d)", name, n, len(want)))
	var stale [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		stale = append(stale, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for k := range want {
		if err := b.Put([]byte(k), nil); err != nil {
			return err
		}
	}
	return nil
}

// openSegments opens the value log's segments that payload entries point into (logs) and
// removes the others; entries whose value is missing, cut short or (with verify) wrong go to
// bad. Each segment's live bytes are recounted from the entries (values.go).
func (s *Store) openSegments(logs map[Hash]payloadEntry, bad map[Hash]error, r *RepairReport) error {
	live := map[uint64]int64{}
	for _, p := range logs {
		live[p.seg] += p.size
	}
	entries, err := os.ReadDir(s.vlog.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	sizes := map[uint64]int64{}
	for _, e := range entries {
		epoch, perr := strconv.ParseUint(e.Name(), 10, 64)
		if perr != nil || live[epoch] == 0 || epoch == s.journal.epoch {
			if err := os.RemoveAll(filepath.Join(s.vlog.dir, e.Name())); err != nil {
				return err
			}
			r.Orphans++
			continue
		}
		f, err := os.Open(s.vlog.path(epoch))
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		sizes[epoch] = fi.Size()
		s.vlog.mu.Lock()
		s.vlog.segs[epoch] = &valueSeg{f: f, size: fi.Size(), live: live[epoch], retired: true}
		s.vlog.mu.Unlock()
	}
	for h, p := range logs {
		size, ok := sizes[p.seg]
		switch {
		case !ok:
			bad[h] = fmt.Errorf("%w: value log segment %d of payload %s is missing", ErrCorrupt, p.seg, h)
			s.vlog.markDamaged(h)
		case int64(p.off)+p.size > size:
			bad[h] = fmt.Errorf("%w: value log segment %d ends before payload %s", ErrCorrupt, p.seg, h)
			s.vlog.markDamaged(h)
		case s.opts.VerifyPayloads:
			if _, err := s.vlog.read(p.seg, p.off, p.size, h); err != nil {
				bad[h] = err
			}
		}
	}
	return nil
}

// checkPayloads corrects reference counts, drops unreferenced payload entries and notes which
// payloads should be files or in the value log. Referenced payloads without an entry go to bad.
func (c *recount) checkPayloads(files map[Hash]int64, logs map[Hash]payloadEntry, bad map[Hash]error, verify bool, r *RepairReport) error {
	type fix struct {
		key []byte
		val []byte // nil: delete
	}
	var fixes []fix
	seen := map[Hash]bool{}
	err := c.w.payload.ForEach(func(k, v []byte) error {
		var h Hash
		key := append([]byte(nil), k...)
		if len(k) != len(h) {
			fixes = append(fixes, fix{key: key})
			r.Fixed = append(r.Fixed, fmt.Sprintf("dropped malformed payload key %x", k))
			return nil
		}
		copy(h[:], k)
		p, err := decodePayloadEntry(h, v)
		if err != nil {
			fixes = append(fixes, fix{key: key})
			r.Fixed = append(r.Fixed, fmt.Sprintf("dropped malformed payload entry %s", h))
			return nil
		}
		want := c.refs[h]
		if want == 0 {
			fixes = append(fixes, fix{key: key})
			r.Fixed = append(r.Fixed, fmt.Sprintf("dropped unreferenced payload %s", h))
			return nil
		}
		seen[h] = true
		if p.refs != want {
			r.Fixed = append(r.Fixed, fmt.Sprintf("payload %s had %d references, counted %d", h, p.refs, want))
			p.refs = want
			fixes = append(fixes, fix{key: key, val: p.encode()})
		}
		switch {
		case p.loc == inFile:
			files[h] = p.size
		case p.loc == inLog:
			logs[h] = p
		case verify && Hash(sha256.Sum256(p.data)) != h:
			bad[h] = fmt.Errorf("%w: inline payload does not hash to %s", ErrCorrupt, h)
		}
		c.stats.Payloads++
		c.stats.UniqueBytes += p.size
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range fixes {
		var err error
		if f.val == nil {
			err = c.w.payload.Delete(f.key)
		} else {
			err = c.w.payload.Put(f.key, f.val)
		}
		if err != nil {
			return err
		}
	}
	for h := range c.refs {
		if !seen[h] {
			bad[h] = fmt.Errorf("%w: payload %s has no index entry", ErrCorrupt, h)
		}
	}
	return nil
}

// Scrub reads and verifies every payload, live and trashed, and returns the objects whose
// payload is missing or does not hash to its name: rot found before a Get trips over it. It
// reads in chunks and may run alongside any other method; PAST runs it now and then and
// re-fetches what it reports from other replicas.
func (s *Store) Scrub() ([]Damage, error) {
	bad := map[Hash]error{}
	var after []byte
	for {
		type fileRef struct {
			h    Hash
			size int64
		}
		var files []fileRef
		var logs []payloadEntry
		var logHashes []Hash
		n := 0
		err := s.view(func(tx *readTx) error {
			c := tx.Bucket(bucketPayload).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else if k, v = c.Seek(after); k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
			for ; k != nil && n < chunkSize; k, v = c.Next() {
				n++
				after = append(after[:0], k...)
				var h Hash
				copy(h[:], k)
				p, err := decodePayloadEntry(h, v)
				switch {
				case err != nil:
					bad[h] = err
				case p.loc == inFile:
					files = append(files, fileRef{h, p.size})
				case p.loc == inLog:
					logs, logHashes = append(logs, p), append(logHashes, h)
				case Hash(sha256.Sum256(p.data)) != h:
					bad[h] = fmt.Errorf("%w: inline payload does not hash to %s", ErrCorrupt, h)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store scrub: %w", err)
		}
		for _, f := range files {
			_, err := s.readBlob(f.h, f.size)
			if err == nil {
				continue
			}
			if errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("%w: payload file %s is missing", ErrCorrupt, f.h)
			}
			bad[f.h] = err
		}
		for i, p := range logs {
			if _, err := s.vlog.read(p.seg, p.off, p.size, logHashes[i]); err != nil {
				bad[logHashes[i]] = err // a value released meanwhile is no damage: see below
			}
		}
		if n < chunkSize {
			break
		}
	}
	if len(bad) == 0 {
		return nil, nil
	}
	// A payload purged while we looked is not damage: damagedKeys only names payloads that
	// objects still refer to.
	var r RepairReport
	if err := s.damagedKeys(bad, &r); err != nil {
		return nil, fmt.Errorf("store scrub: %w", mapClosed(err))
	}
	return r.Damaged, nil
}
