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
// Record: length uint32 | crc32c(body) uint32 | body, and body is epoch uint64 followed by
// entries: bucket byte (0x80 set: deletion) | uvarint key length | key | uvarint value length |
// value.

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

// appendLayer makes l durable as one record.
func (j *journal) appendLayer(l *layer) error {
	if j.broken != nil {
		return j.broken
	}
	buf := append(j.buf[:0], 0, 0, 0, 0, 0, 0, 0, 0)
	buf = binary.BigEndian.AppendUint64(buf, j.epoch)
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

// restart begins epoch after a checkpoint that covered the previous one. A failed truncate
// is harmless: the old records carry covered epochs and a replay skips them.
func (j *journal) restart(epoch uint64) {
	j.epoch = epoch
	if err := j.f.Truncate(0); err == nil {
		j.off = 0
	}
}

// readJournal returns the records of f newer than epoch, oldest first, as layers, with the
// newest epoch seen.
func readJournal(f *os.File, after uint64) (recs []*layer, newest uint64, err error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return nil, 0, err
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
		if epoch <= after {
			continue
		}
		l, ok := decodeLayer(body[8:])
		if !ok {
			return nil, 0, fmt.Errorf("%w: a record with a good checksum does not decode", errJournal)
		}
		recs = append(recs, l)
		newest = max(newest, epoch)
	}
	return recs, newest, nil
}

func decodeLayer(p []byte) (*layer, bool) {
	l := newLayer()
	for len(p) > 0 {
		tag := p[0]
		p = p[1:]
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
	if pf, err := os.Open(s.prevJournalPath()); err == nil {
		prs, pn, err := readJournal(pf, covered)
		pf.Close()
		if err != nil {
			f.Close()
			return err
		}
		recs, newest = prs, max(newest, pn)
	} else if !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return err
	}
	crs, cn, err := readJournal(f, covered)
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
	if err := os.Remove(s.prevJournalPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return err
	}
	s.journal = &journal{f: f, epoch: newest + 1}
	s.journal.restart(newest + 1)
	if s.journal.off != 0 {
		f.Close()
		return fmt.Errorf("%w: cannot empty %s", errJournal, s.journalPath())
	}
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
// The directory is synced before anything is appended to the new file.
func (j *journal) rotate(cur, prev string) error {
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
	j.f.Close()
	j.f, j.off = f, 0
	j.epoch++
	return nil
}

// freeze starts a background checkpoint of the overlay. Only the commit leader may call it,
// and only when no checkpoint is running.
func (s *Store) freeze() error {
	if s.over.empty() {
		return nil
	}
	epoch := s.journal.epoch
	if err := s.journal.rotate(s.journalPath(), s.prevJournalPath()); err != nil {
		return err
	}
	s.overMu.Lock()
	frozen := s.over
	s.frozen, s.over = frozen, newLayer()
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
	_ = os.Remove(s.prevJournalPath())
	s.overMu.Lock()
	s.frozen = nil
	s.overMu.Unlock()
}

// checkpoint moves the overlay (and a frozen layer a background checkpoint left) into
// index.db in the caller's goroutine. Only Close may call it, alone, once no background
// checkpoint runs.
func (s *Store) checkpoint() error {
	over, frozen := s.over, s.frozen
	if over.empty() && frozen == nil {
		return nil
	}
	epoch := s.journal.epoch
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.StoreIndex.BoltCommit(tx)
		if frozen != nil {
			if err := frozen.applyTo(tx); err != nil {
				return err
			}
		}
		if err := over.applyTo(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaEpoch, binary.BigEndian.AppendUint64(nil, epoch))
	})
	if err != nil {
		return fmt.Errorf("store checkpoint: %w", mapClosed(err))
	}
	_ = os.Remove(s.prevJournalPath())
	s.journal.restart(epoch + 1)
	s.overMu.Lock()
	s.over, s.frozen = newLayer(), nil
	s.overMu.Unlock()
	return nil
}

// checkpointDue says whether the overlay should go to index.db now.
func (s *Store) checkpointDue() bool {
	return s.over.size >= s.opts.CheckpointBytes || s.now().Sub(s.overSince) >= s.opts.CheckpointAge
}

func (s *Store) journalPath() string { return filepath.Join(s.dir, "index.journal") }
