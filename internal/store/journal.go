package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"epost/internal/diskstat"
)

// The journal. A bbolt commit costs two fdatasyncs (its pages, then its meta page) and
// rewrites the leaf-to-root path of every bucket it touches: about ten 4 KiB pages for one
// small object, more as the index grows. A replica pays that for every group of inserts. So a
// commit does not go to bbolt: its changes (the final value of every key it touched) are
// appended to DIR/index.journal as one record and fdatasynced (one flush, about the size of
// the data), and then join the overlay (overlay.go) that reads see. A checkpoint writes the
// whole overlay into index.db in one bbolt commit, records there the journal epoch it
// covers, and retires the journal file; it starts when the overlay passes
// Options.CheckpointBytes or is older than Options.CheckpointAge and runs in the background
// while commits go on (see freeze below), and runs once more, in the foreground, at Close.
//
// index.db is thus only ever changed by synced bbolt commits and is always consistent; the
// journal holds what came after. Open replays the records whose epoch is newer than the one
// index.db records, in order (a record holds final values, so a replay of a record already
// applied changes nothing), checkpoints, and only then repairs. A record torn by a crash fails
// its checksum and ends the replay: it was never acknowledged, because a commit returns only
// after its record is synced.
//
// Record: length uint32 | crc32c(body) uint32 | body, and body is epoch uint64, then, if the
// commit put payloads into the value log (values.go), tagValues | length uint32 | their bytes,
// then entries: bucket byte (0x80 set: deletion) | uvarint key length | key | uvarint value
// length | value. The values come first so that their offsets in the file are known before
// the record is built (valuesHeader).

var (
	metaEpoch  = []byte("journal-epoch") // in bucketMeta: the last epoch index.db holds
	crcTable   = crc32.MakeTable(crc32.Castagnoli)
	errJournal = errors.New("index journal")
)

type journal struct {
	f      *os.File
	off    int64  // end of the last good record
	epoch  uint64 // of the records being written
	buf    []byte
	broken error // set when the file could not be restored to a clean end
}

// tagValues starts a record's values section; no bucket has this number.
const tagValues = 0x7f

// valuesHeader is the offset of a record's first value from the record's start.
const valuesHeader = 8 + 8 + 1 + 4

// startRecord returns the buffer of the next record, with room for its header and the values
// section's: a commit appends its values after them (valueBuf), then appendLayer the rest.
func (j *journal) startRecord() []byte {
	var hdr [valuesHeader]byte
	return append(j.buf[:0], hdr[:]...)
}

// appendLayer makes l and the values its payload entries point to durable as one record; rec
// is startRecord's buffer with the values appended (nil: none).
func (j *journal) appendLayer(l *layer, rec []byte) error {
	if j.broken != nil {
		return j.broken
	}
	var buf []byte
	if len(rec) > valuesHeader {
		buf = rec
		buf[16] = tagValues
		binary.BigEndian.PutUint32(buf[17:], uint32(len(rec)-valuesHeader))
	} else {
		var hdr [16]byte // length, checksum, epoch: no values section
		buf = append(j.buf[:0], hdr[:]...)
	}
	binary.BigEndian.PutUint64(buf[8:], j.epoch)
	for b, m := range l.m {
		for k, e := range m {
			tag := byte(b)
			if e.del {
				tag |= 0x80
			}
			buf = append(buf, tag)
			buf = binary.AppendUvarint(buf, uint64(len(k)))
			buf = append(buf, k...)
			buf = binary.AppendUvarint(buf, uint64(len(e.v)))
			buf = append(buf, e.v...)
		}
	}
	body := buf[8:]
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(body)))
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(body, crcTable))
	j.buf = buf
	_, err := j.f.WriteAt(buf, j.off)
	if err == nil {
		err = syscall.Fdatasync(int(j.f.Fd()))
		diskstat.StoreIndex.Sync(len(buf))
	}
	if err != nil {
		// Cut the partial record off so that later records stay reachable by a replay.
		if terr := j.f.Truncate(j.off); terr != nil {
			j.broken = fmt.Errorf("%w: cannot cut a failed write (%v) off the journal: %v", errJournal, err, terr)
		}
		return fmt.Errorf("%w: %v", errJournal, err)
	}
	j.off += int64(len(buf))
	return nil
}

// readJournal returns the records of f newer than epoch, oldest first, as layers, with the
// newest epoch seen, and the epoch of f's records, if any (one file holds one epoch).
func readJournal(f *os.File, after uint64) (recs []*layer, newest, fileEpoch uint64, err error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return nil, 0, 0, err
	}
	newest = after
	for len(data) >= 16 {
		n := int(binary.BigEndian.Uint32(data[0:4]))
		if n < 8 || len(data)-8 < n {
			break
		}
		body := data[8 : 8+n]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(data[4:8]) {
			break
		}
		data = data[8+n:]
		epoch := binary.BigEndian.Uint64(body)
		fileEpoch = epoch
		if epoch <= after {
			continue
		}
		l, ok := decodeLayer(body[8:])
		if !ok {
			return nil, 0, 0, fmt.Errorf("%w: a record with a good checksum does not decode", errJournal)
		}
		recs = append(recs, l)
		newest = max(newest, epoch)
	}
	return recs, newest, fileEpoch, nil
}

func decodeLayer(p []byte) (*layer, bool) {
	l := newLayer()
	for len(p) > 0 {
		tag := p[0]
		p = p[1:]
		if tag == tagValues { // the value log's bytes: read where the entries point
			if len(p) < 4 || uint64(len(p)-4) < uint64(binary.BigEndian.Uint32(p)) {
				return nil, false
			}
			p = p[4+binary.BigEndian.Uint32(p):]
			continue
		}
		b := int(tag &^ 0x80)
		if b >= numBuckets {
			return nil, false
		}
		kl, n := binary.Uvarint(p)
		if n <= 0 || uint64(len(p)-n) < kl {
			return nil, false
		}
		k := p[n : n+int(kl)]
		p = p[n+int(kl):]
		vl, n := binary.Uvarint(p)
		if n <= 0 || uint64(len(p)-n) < vl {
			return nil, false
		}
		v := append([]byte{}, p[n:n+int(vl)]...)
		p = p[n+int(vl):]
		l.set(b, k, entry{v: v, del: tag&0x80 != 0})
	}
	return l, true
}

// openJournal opens DIR/index.journal and replays what index.db lacks into it, leaving the
// journal empty and ready for the next epoch.
func (s *Store) openJournal() error {
	f, err := os.OpenFile(s.journalPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	var covered uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaEpoch); len(v) == 8 {
			covered = binary.BigEndian.Uint64(v)
		}
		return nil
	}); err != nil {
		f.Close()
		return err
	}
	// A checkpoint that was running in the background when the process stopped left the
	// records it was writing in the previous journal file: they come first.
	var recs []*layer
	newest := covered
	var prevEpoch uint64
	if pf, err := os.Open(s.prevJournalPath()); err == nil {
		prs, pn, pe, err := readJournal(pf, covered)
		pf.Close()
		if err != nil {
			f.Close()
			return err
		}
		recs, newest, prevEpoch = prs, max(newest, pn), pe
	} else if !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return err
	}
	crs, cn, curEpoch, err := readJournal(f, covered)
	if err != nil {
		f.Close()
		return err
	}
	recs, newest = append(recs, crs...), max(newest, cn)
	if len(recs) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			diskstat.StoreIndex.BoltCommit(tx)
			for _, l := range recs {
				if err := l.applyTo(tx); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(metaEpoch, binary.BigEndian.AppendUint64(nil, newest))
		})
		if err != nil {
			f.Close()
			return fmt.Errorf("replay the index journal: %w", err)
		}
		s.opts.Logger.Info("store: replayed the index journal", "dir", s.dir, "records", len(recs))
	}
	// Both files are in index.db now. Values in them stay where payload entries point: the
	// files become segments of the value log, and repair removes those nothing points into.
	f.Close()
	if err := s.keepAsSegment(s.prevJournalPath(), prevEpoch); err != nil {
		return err
	}
	if err := s.keepAsSegment(s.journalPath(), curEpoch); err != nil {
		return err
	}
	s.journal = &journal{}
	return s.newJournalFile(newest + 1)
}

// keepAsSegment moves a replayed journal file whose records are of epoch into values/ (its
// values may be live; repair decides), or removes it when it holds no record.
func (s *Store) keepAsSegment(path string, epoch uint64) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case epoch == 0 || fi.Size() == 0:
		return os.Remove(path)
	}
	if err := os.MkdirAll(s.vlog.dir, 0o700); err != nil {
		return err
	}
	if err := os.Rename(path, s.vlog.path(epoch)); err != nil {
		return err
	}
	return syncDir(s.vlog.dir)
}

// newJournalFile starts an empty journal file for epoch; its values are read through the value
// log. The directory is synced before anything is appended to it.
func (s *Store) newJournalFile(epoch uint64) error {
	f, err := os.OpenFile(s.journalPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		if err = syncDir(s.dir); err != nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errJournal, err)
	}
	s.journal.f, s.journal.off, s.journal.epoch = f, 0, epoch
	s.vlog.add(epoch, f)
	return nil
}

// Checkpoints in the background. A checkpoint of a large overlay is a large bbolt commit
// (tens of megabytes of pages), and commits must not wait for it: the commit leader freezes
// the overlay instead (it becomes the layer below a new, empty one, and reads see both),
// moves the journal file aside as index.journal.prev (its records are the frozen layer's) and
// starts a new one for the next epoch, and a goroutine writes the frozen layer into index.db
// and then removes the previous file and the frozen layer. Open replays index.journal.prev
// before index.journal; a removal lost in a crash leaves records whose epoch index.db covers,
// which a replay skips. One checkpoint runs at a time; while it does, the new overlay grows.

func (s *Store) prevJournalPath() string { return s.journalPath() + ".prev" }

// A background checkpoint writes its layer in parts of about checkpointPart bytes, pausing
// checkpointPause between them.
// (Variables, so that tests can cut small layers into many parts.)
var (
	checkpointPart  = 2 << 20
	checkpointPause = 20 * time.Millisecond
)

// rotate moves the journal file aside (to prev) and starts an empty one for the next epoch.
// The directory is synced before anything is appended to the new file. The old file stays
// open in vl: its values are read from it until it is retired (values.go).
func (j *journal) rotate(cur, prev string, vl *valueLog) error {
	if j.broken != nil {
		return j.broken
	}
	if err := os.Rename(cur, prev); err != nil {
		return fmt.Errorf("%w: %v", errJournal, err)
	}
	f, err := os.OpenFile(cur, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		if err = syncDir(filepath.Dir(cur)); err != nil {
			f.Close()
		}
	}
	if err != nil {
		// Put the old file back and keep writing to it (its handle never changed).
		if rerr := os.Rename(prev, cur); rerr != nil {
			j.broken = fmt.Errorf("%w: cannot start a new journal (%v) nor restore the old one (%v)", errJournal, err, rerr)
		}
		return fmt.Errorf("%w: %v", errJournal, err)
	}
	j.f, j.off = f, 0
	j.epoch++
	vl.add(j.epoch, f)
	return nil
}

// freeze starts a background checkpoint of the overlay. Only the commit leader may call it,
// and only when no checkpoint is running.
func (s *Store) freeze() error {
	if s.over.empty() {
		return nil
	}
	if err := s.retirePrev(); err != nil {
		return err // the rotation would overwrite a file values still live in
	}
	epoch := s.journal.epoch
	if err := s.journal.rotate(s.journalPath(), s.prevJournalPath(), s.vlog); err != nil {
		return err
	}
	s.overMu.Lock()
	frozen := s.over
	s.frozen, s.over = frozen, newLayer()
	s.frozenEpoch = epoch
	s.overMu.Unlock()
	s.ckpt.Add(1)
	go s.checkpointFrozen(frozen, epoch)
	return nil
}

// checkpointFrozen writes the frozen layer (the journal's records up to epoch) into index.db,
// retrying every second while the store is open, then drops the previous journal file and the
// frozen layer. If the store closes first, the frozen layer stays for Close's checkpoint.
//
// The layer goes in parts of checkpointPart bytes, one bbolt commit each, with a pause between
// them: one commit of tens of megabytes of scattered pages keeps the disk busy long enough to
// hold up every journal fsync behind it (and on a machine running several nodes, such as the
// demo, their checkpoints tend to come together). Only the last part records the epoch; if the
// process stops before it, Open replays the whole epoch again from index.journal.prev, which
// changes nothing the earlier parts wrote (records hold final values), and until then reads
// see the frozen layer over the partly written index.
func (s *Store) checkpointFrozen(frozen *layer, epoch uint64) {
	defer s.ckpt.Done()
	parts := frozen.split(checkpointPart)
	for i := 0; i < len(parts); {
		last := i == len(parts)-1
		err := s.db.Update(func(tx *bolt.Tx) error {
			diskstat.StoreIndex.BoltCommit(tx)
			if err := parts[i].applyTo(tx); err != nil {
				return err
			}
			if !last {
				return nil
			}
			return tx.Bucket(bucketMeta).Put(metaEpoch, binary.BigEndian.AppendUint64(nil, epoch))
		})
		pause := checkpointPause
		if err == nil {
			i++
		} else {
			s.opts.Logger.Warn("store: background checkpoint failed; the journal keeps the changes", "dir", s.dir, "err", err)
			pause = time.Second
		}
		if last && err == nil {
			break
		}
		select {
		case <-s.closing:
			if err != nil {
				return
			}
		case <-time.After(pause):
		}
	}
	s.noteIndexSize()
	s.overMu.Lock()
	s.prevToRetire = epoch
	s.overMu.Unlock()
	if err := s.retirePrev(); err != nil {
		s.opts.Logger.Warn("store: cannot retire the previous journal file; trying again at the next checkpoint", "dir", s.dir, "err", err)
	}
	s.overMu.Lock()
	s.frozen = nil
	s.overMu.Unlock()
	s.compactSoon()
}

// retirePrev retires the previous journal file once a checkpoint holds its records (values.go);
// a failure leaves it for the next attempt.
func (s *Store) retirePrev() error {
	s.overMu.Lock()
	epoch := s.prevToRetire
	s.overMu.Unlock()
	if epoch == 0 {
		return nil
	}
	if err := s.vlog.retire(epoch, s.prevJournalPath()); err != nil {
		return fmt.Errorf("%w: retire %s: %v", errJournal, s.prevJournalPath(), err)
	}
	s.overMu.Lock()
	if s.prevToRetire == epoch {
		s.prevToRetire = 0
	}
	s.overMu.Unlock()
	return nil
}

// checkpoint moves the overlay (and a frozen layer a background checkpoint left) into
// index.db in the caller's goroutine. Only Close may call it, alone, once no background
// checkpoint runs.
func (s *Store) checkpoint() error {
	over, frozen := s.over, s.frozen
	if over.empty() && frozen == nil {
		return s.retirePrev()
	}
	epoch := s.journal.epoch
	// In parts of checkpointPart bytes, one bbolt commit each (the frozen layer's first, then
	// the overlay's), so that a big overlay does not become one transaction holding every
	// page it dirties. Only the last part records the epoch: if the process stops before it,
	// Open replays both journal files again, which changes nothing the earlier parts wrote.
	var parts []*layer
	if frozen != nil {
		parts = frozen.split(checkpointPart)
	}
	parts = append(parts, over.split(checkpointPart)...)
	for i, part := range parts {
		last := i == len(parts)-1
		err := s.db.Update(func(tx *bolt.Tx) error {
			diskstat.StoreIndex.BoltCommit(tx)
			if err := part.applyTo(tx); err != nil {
				return err
			}
			if !last {
				return nil
			}
			return tx.Bucket(bucketMeta).Put(metaEpoch, binary.BigEndian.AppendUint64(nil, epoch))
		})
		if err != nil {
			return fmt.Errorf("store checkpoint: %w", mapClosed(err))
		}
	}
	s.overMu.Lock()
	if frozen != nil {
		s.prevToRetire = s.frozenEpoch
	}
	s.over, s.frozen = newLayer(), nil
	s.overMu.Unlock()
	// Both journal files are in index.db: retire them, and go on in a new file.
	if err := s.retirePrev(); err != nil {
		return err
	}
	if err := s.vlog.retire(epoch, s.journalPath()); err != nil {
		return fmt.Errorf("%w: retire %s: %v", errJournal, s.journalPath(), err)
	}
	return s.newJournalFile(epoch + 1)
}

// checkpointDue says whether the overlay should go to index.db now. The journal file counts
// too: with payloads in the value log it grows faster than the overlay, and Open reads it whole.
func (s *Store) checkpointDue() bool {
	lim := s.checkpointLimit()
	return int64(s.over.size) >= lim || s.journal.off >= lim || s.now().Sub(s.overSince) >= s.opts.CheckpointAge
}

// maxCheckpointGrowth bounds how far checkpointLimit follows the index: at most this many
// times Options.CheckpointBytes. (A variable, so that tests with tiny checkpoints can keep
// them tiny.)
var maxCheckpointGrowth int64 = 4

// checkpointLimit is the size of the overlay or of the journal that starts a checkpoint:
// Options.CheckpointBytes, or the index's size in use when that is larger, up to
// maxCheckpointGrowth times CheckpointBytes (128 MiB by default). Keys are hashes, so once the
// index has more leaves than a checkpoint has keys a checkpoint rewrites about every page of
// it: with a fixed limit its cost per committed byte would grow with the store (a user's
// 50,000th message would cost several times the journal bytes of the first). Following the
// index keeps it at about one index byte per journal byte up to the cap; the price, for big
// stores only, is a larger overlay in memory and a longer journal to read and replay at Open
// (both journal files, up to twice the limit, after a crash during a checkpoint).
func (s *Store) checkpointLimit() int64 {
	lim := int64(s.opts.CheckpointBytes)
	if sz := s.indexSize.Load(); sz > lim {
		lim = min(sz, maxCheckpointGrowth*lim)
	}
	return lim
}

// noteIndexSize records the size of index.db's pages in use (its file never shrinks; free
// pages do not count) for checkpointLimit.
func (s *Store) noteIndexSize() {
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	st := s.db.Stats()
	size -= int64(st.FreePageN+st.PendingPageN) * int64(os.Getpagesize()) // bbolt's page size (Open sets none)
	s.indexSize.Store(max(size, 0))
}

func (s *Store) journalPath() string { return filepath.Join(s.dir, "index.journal") }
