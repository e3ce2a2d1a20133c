package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// The value log. A checkpoint copies the overlay into index.db, and a payload inside the index
// travels with it: a 50 KB mail chunk was written to the journal (one record, fdatasynced) and
// then once more into index.db's pages, on each of its three replicas, and kept in memory in
// between. So payloads of at least Options.ValueLogMin bytes (and at most InlineMax; larger
// ones have files of their own) are written once, inside their commit's journal record, and
// stay there: the payload entry names the journal file and the offset of the bytes (location
// inLog), and a checkpoint moves only that small entry into index.db.
//
// Segments. A journal file holds the records of one epoch (journal.go), so the epoch names it.
// When its records are in index.db the file is retired instead of removed: renamed to
// DIR/values/EPOCH if payload entries still point into it, removed if none do. A segment is
// read-only from then on, and removed once its last value is released (the commit that drops
// the last reference is durable in the journal by then, so a crash replays the release before
// anything could look for the value). Open retires the journal files it replayed the same way
// and recounts each segment's live bytes from the payload entries (repair.go); a segment no
// entry points into is debris and goes, an entry whose segment is missing is damage.
//
// Compaction. Deleted and expired payloads leave dead bytes in their segment (mail mostly lives
// for months, pending notifications for days). A retired segment whose live values take less
// than half of it is compacted in the background: its live values are read and committed
// again, into the current journal, and the segment goes once none is left in it.
//
// Reads verify every value against its hash, as for the other locations.

// DefaultValueLogMin is the smallest payload kept in the value log by default: POST's chunks
// of mail above the carried size, not notifications, log entries or heads.
const DefaultValueLogMin = 16 << 10

// compactMinBytes: smaller segments are not worth compacting. (A variable for tests.)
var compactMinBytes int64 = 1 << 20

// valueLog holds the open segment files, the current journal file's included, and the live
// bytes in each. Its methods are safe for concurrent use.
type valueLog struct {
	dir string // DIR/values

	mu      sync.RWMutex
	segs    map[uint64]*valueSeg
	damaged map[Hash]bool // values found missing or wrong, until a good copy is put again
	// Counts since Open, for tests: segments retired, removed once empty, compacted.
	retired, dropped, compactions int
}

type valueSeg struct {
	f       *os.File
	size    int64 // bytes in the file (the current journal's grows)
	live    int64 // bytes of values payload entries point to
	retired bool  // renamed to values/EPOCH: read-only, removed when live reaches 0
	busy    bool  // being compacted
}

func newValueLog(dir string) *valueLog {
	return &valueLog{dir: filepath.Join(dir, "values"), segs: map[uint64]*valueSeg{}, damaged: map[Hash]bool{}}
}

func (v *valueLog) path(epoch uint64) string {
	return filepath.Join(v.dir, strconv.FormatUint(epoch, 10))
}

// add registers an open journal file (not retired) as the segment of epoch.
func (v *valueLog) add(epoch uint64, f *os.File) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.segs[epoch] = &valueSeg{f: f}
}

// grew notes bytes appended to the journal file of epoch (compaction's size measure).
func (v *valueLog) grew(epoch uint64, n int) {
	v.mu.Lock()
	if sg := v.segs[epoch]; sg != nil {
		sg.size += int64(n)
	}
	v.mu.Unlock()
}

// read returns n bytes at off of segment epoch, checked against h. A segment that is gone
// reports fs.ErrNotExist (a concurrent release or compaction: the caller looks again).
func (v *valueLog) read(epoch, off uint64, n int64, h Hash) ([]byte, error) {
	v.mu.RLock()
	sg := v.segs[epoch]
	v.mu.RUnlock()
	if sg == nil {
		return nil, fmt.Errorf("value log segment %d: %w", epoch, fs.ErrNotExist)
	}
	b := make([]byte, n)
	if _, err := sg.f.ReadAt(b, int64(off)); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, fmt.Errorf("value log segment %d: %w", epoch, fs.ErrNotExist)
		}
		v.markDamaged(h)
		return nil, fmt.Errorf("%w: value of %d bytes at %d in segment %d: %v", ErrCorrupt, n, off, epoch, err)
	}
	if Hash(sha256.Sum256(b)) != h {
		v.markDamaged(h)
		return nil, fmt.Errorf("%w: value at %d in segment %d does not hash to %s", ErrCorrupt, off, epoch, h)
	}
	return b, nil
}

// markDamaged remembers that the value of h cannot be served: the next put of those bytes
// writes them again (addRef) instead of only counting a reference, as a payload file is
// rewritten over a damaged one.
func (v *valueLog) markDamaged(h Hash) {
	v.mu.Lock()
	v.damaged[h] = true
	v.mu.Unlock()
}

// healing reports whether h's value is damaged, and forgets it: the caller writes it again.
func (v *valueLog) healing(h Hash) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.damaged[h] {
		return false
	}
	delete(v.damaged, h)
	return true
}

// apply adds a committed transaction's changes of live bytes per segment, and removes retired
// segments left without live values.
func (v *valueLog) apply(delta map[uint64]int64) {
	if len(delta) == 0 {
		return
	}
	v.mu.Lock()
	var gone []uint64
	for epoch, d := range delta {
		sg := v.segs[epoch]
		if sg == nil {
			continue // a segment found missing at Open: its entries are damage already
		}
		sg.live += d
		if sg.retired && sg.live <= 0 && !sg.busy {
			gone = append(gone, epoch)
		}
	}
	v.mu.Unlock()
	for _, epoch := range gone {
		v.drop(epoch)
	}
}

// drop closes and removes the retired segment epoch if no value is left in it.
func (v *valueLog) drop(epoch uint64) {
	v.mu.Lock()
	sg := v.segs[epoch]
	if sg == nil || !sg.retired || sg.live > 0 || sg.busy {
		v.mu.Unlock()
		return
	}
	delete(v.segs, epoch)
	v.dropped++
	v.mu.Unlock()
	_ = sg.f.Close()
	_ = os.Remove(v.path(epoch))
}

// retire turns the journal file of epoch, now at path, into a segment once its records are in
// index.db: renamed into values/ while values in it are live, else closed and removed. The
// caller knows no commit appends to it any more.
func (v *valueLog) retire(epoch uint64, path string) error {
	v.mu.Lock()
	sg := v.segs[epoch]
	live := sg != nil && sg.live > 0
	v.mu.Unlock()
	if !live {
		v.mu.Lock()
		delete(v.segs, epoch)
		v.mu.Unlock()
		if sg != nil {
			_ = sg.f.Close()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return err
	}
	if err := os.Rename(path, v.path(epoch)); err != nil {
		return err
	}
	// Both names' directories: a crash must leave the file under one name or the other.
	if err := syncDir(v.dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	v.mu.Lock()
	sg.retired = true
	v.retired++
	left := sg.live <= 0 // released meanwhile
	v.mu.Unlock()
	if left {
		v.drop(epoch)
	}
	return nil
}

// compactable returns a retired segment worth compacting, marked busy, or false.
func (v *valueLog) compactable() (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for epoch, sg := range v.segs {
		if sg.retired && !sg.busy && sg.size >= compactMinBytes && 2*sg.live < sg.size {
			sg.busy = true
			v.compactions++
			return epoch, true
		}
	}
	return 0, false
}

// compacted ends a compaction of epoch; the segment goes if nothing is left in it.
func (v *valueLog) compacted(epoch uint64) {
	v.mu.Lock()
	sg := v.segs[epoch]
	if sg != nil {
		sg.busy = false
	}
	v.mu.Unlock()
	v.drop(epoch)
}

// close closes every segment file but the current journal's, which the journal closes.
func (v *valueLog) close(current uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for epoch, sg := range v.segs {
		if epoch != current {
			_ = sg.f.Close()
		}
	}
	v.segs = map[uint64]*valueSeg{}
}

// valueBuf collects the values one commit appends to the journal with its record, in the
// record's own buffer (journal.startRecord). Their place in the file is known before the
// record is written: the committer is alone in appending, and the values come first in the
// record's body (journal.go).
type valueBuf struct {
	epoch uint64 // the journal file's epoch: the segment the values land in
	start uint64 // file offset of rec[0]: the record's start
	min   int64  // the smallest payload that goes to the log
	rec   []byte
	log   *valueLog
}

// add appends p and returns where it will be.
func (b *valueBuf) add(p []byte) (epoch, off uint64) {
	off = b.start + uint64(len(b.rec))
	b.rec = append(b.rec, p...)
	return b.epoch, off
}

// compactBatch bounds the values one compaction commit moves.
const compactBatch = 4 << 20

// compactSoon compacts, in the background, the retired segments that are mostly dead.
func (s *Store) compactSoon() {
	epoch, ok := s.vlog.compactable()
	if !ok {
		return
	}
	s.ckpt.Add(1)
	go func() {
		defer s.ckpt.Done()
		for ok {
			err := s.compactSegment(epoch)
			s.vlog.compacted(epoch)
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					s.opts.Logger.Warn("store: value log compaction stopped", "dir", s.dir, "segment", epoch, "err", err)
				}
				return
			}
			epoch, ok = s.vlog.compactable()
		}
	}()
}

// compactSegment commits the live values of segment epoch again, into the current journal, in
// batches, reading each before the commit that moves it (no I/O inside a commit); a value
// released or moved meanwhile is left alone.
func (s *Store) compactSegment(epoch uint64) error {
	type move struct {
		h    Hash
		p    payloadEntry
		data []byte
	}
	var after []byte
	for {
		select {
		case <-s.closing:
			return ErrClosed
		default:
		}
		var batch []move
		size, n := 0, 0
		err := s.view(func(tx *readTx) error {
			c := tx.Bucket(bucketPayload).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else if k, v = c.Seek(after); k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
			for ; k != nil && n < chunkSize && size < compactBatch; k, v = c.Next() {
				n++
				after = append(after[:0], k...)
				var h Hash
				copy(h[:], k)
				if p, err := decodePayloadEntry(h, v); err == nil && p.loc == inLog && p.seg == epoch {
					batch = append(batch, move{h: h, p: p})
					size += int(p.size)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		done := n < chunkSize && size < compactBatch
		kept := batch[:0]
		for _, m := range batch {
			data, err := s.vlog.read(m.p.seg, m.p.off, m.p.size, m.h)
			if err != nil {
				continue // released meanwhile, or damaged: Get and Scrub report damage
			}
			m.data = data
			kept = append(kept, m)
		}
		if len(kept) > 0 {
			err := s.update(func(w *writeTx) error {
				if w.vals == nil {
					return nil // no value log: nothing to move
				}
				for _, m := range kept {
					v := w.payload.Get(m.h[:])
					if v == nil {
						continue
					}
					p, err := decodePayloadEntry(m.h, v)
					if err != nil || p.loc != inLog || p.seg != m.p.seg || p.off != m.p.off {
						continue
					}
					w.addLive(p.seg, -p.size)
					p.seg, p.off = w.vals.add(m.data)
					w.addLive(p.seg, p.size)
					if err := putFresh(w.payload, m.h[:], p.encode()); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
}
