package glacier

import (
	"cmp"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"syscall"

	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/diskstat"
	"epost/internal/ids"
	"epost/internal/wire"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DiskStore is a durable Store in a bbolt file (the index) and a data file beside it.
//
// Layout: bucket "fragments" maps the 32-byte big-endian fragment key (so bbolt's byte order
// is the circle's order) to a value
//
//	format (1 byte) | index (u16) | manifest wire form (uvarint length, bytes) |
//	proof length (1 byte, ProofLen(n)) | proof (32 bytes each) | where the data is
//
// where the data is, in value format 3, offset (u64) and length (u32) in the data file
// (PATH with ".db" replaced by ".data"), and in value format 2 (written by earlier releases,
// still read) the data itself, the rest of the value. Bucket "meta" holds the file's format,
// which Open checks, so that a release refuses a file of another format instead of dropping
// every entry it cannot read: 3 may hold values of both formats; 2 holds inline values only
// and becomes 3 at Open; 1 (manifests listing every fragment hash, before Merkle manifests)
// is refused with a request to move it aside: no deployment holds one.
//
// Why a data file. bbolt keeps a leaf's values inside the leaf, and a leaf holds at least two
// entries, so every fragment put into the B+tree rewrote its neighbours' data too: the
// index wrote three to four times the fragment bytes it stored (issue 12). The data file is
// append-only: a batch's fragments are written at its end (each at a 4 KiB boundary) and
// fdatasynced before the index commit that refers to them, so a crash leaves at most
// unreferenced bytes, never a reference to missing ones. The space of a deleted or replaced
// fragment is given back to the file system by punching a hole (fallocate), so the file's
// size only grows while its blocks follow what is held; Open punches every range that no
// entry refers to (what a crash between a commit and its punch left) and cuts the tail.
//
// Concurrency: safe for concurrent use. Writers (Put, Delete, dropping damaged entries,
// Close) are serialised by mu, so that reading the old value, committing and updating the
// counters happen as one step; Len and Bytes read atomic counters and never wait for an fsync.
// Range and Ascend run their callback inside a bbolt read transaction: the callback must not
// call Put or Delete (bbolt may need to grow its memory map, which waits for every reader:
// a deadlock), but may call Get, Len and Bytes.
type DiskStore struct {
	path  string
	db    *bolt.DB
	data  *os.File
	mu    sync.Mutex // serialises writers; see the type comment
	end   int64      // where the next fragment's data goes in the data file; guarded by mu
	n     atomic.Int64
	bytes atomic.Int64
}

var _ Store = (*DiskStore)(nil)

var (
	bucketFragments = []byte("fragments")
	bucketMeta      = []byte("meta")
	metaFormat      = []byte("format")
)

const (
	diskFormat      = 3 // of the file (meta)
	valueInline     = 2 // value format: the data inside the value (earlier releases)
	valueExternal   = 3 // value format: the data in the data file
	dataAlign       = 4096
	diskLockTimeout = time.Second
	// initialMmap is glacier.db's first mapping (address space only: see OpenDiskStore).
	initialMmap = 1 << 30
	// maxManifestWire bounds a stored manifest's wire form: far above the largest valid one
	// (≈ 500 bytes with a name of MaxNameLen), it only stops a damaged length from meaning much.
	maxManifestWire = 4 << 10
)

// OpenDiskStore opens (creating) the fragment store in the bbolt file at path. Only one
// process may have the file open; Open gives up after a second if another holds it.
func OpenDiskStore(path string) (*DiskStore, error) {
	// NoSync stays false: every Put commits with an fsync, because a holder acknowledges the
	// fragment as soon as Put returns.
	// The map freelist and an unsynced freelist, as in the object store: the freelist of a
	// file that fragments come and go in is long, and writing it at every commit would cost
	// pages per commit; Open rebuilds it by a scan instead. Durability is unaffected.
	// A large initial mapping (address space, not memory) spares the remaps of a growing file:
	// each one copies every node the writing transaction has touched out of the old mapping.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: diskLockTimeout,
		FreelistType: bolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: initialMmap})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("glacier store open %s: the file is locked by another process (is another epost node using it?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("glacier store open %s: %w", path, err)
	}
	data, err := os.OpenFile(dataPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("glacier store open %s: %w", path, err)
	}
	s := &DiskStore{path: path, db: db, data: data}
	if err := s.init(); err != nil {
		data.Close()
		db.Close()
		return nil, fmt.Errorf("glacier store open %s: %w", path, err)
	}
	return s, nil
}

func dataPath(path string) string { return strings.TrimSuffix(path, ".db") + ".data" }

// init creates the buckets, checks the format and recomputes the counters by one scan,
// dropping entries that do not decode.
func (s *DiskStore) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(metaFormat); {
		case v == nil:
			if err := meta.Put(metaFormat, []byte{diskFormat}); err != nil {
				return err
			}
		case len(v) == 1 && v[0] < valueInline:
			return fmt.Errorf("fragment store format %d predates Merkle manifests (format %d) and cannot be read: move the file aside (its fragments are rebuilt by maintenance from the other holders) and restart", v[0], valueInline)
		case len(v) == 1 && v[0] == valueInline:
			// Its values stay readable; new ones go to the data file.
			if err := meta.Put(metaFormat, []byte{diskFormat}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] != diskFormat:
			return fmt.Errorf("fragment store format %v is not the supported version %d; use a matching epost release", v, diskFormat)
		}
		_, err = tx.CreateBucketIfNotExists(bucketFragments)
		return err
	})
	if err != nil {
		return err
	}
	var damaged []damagedEntry
	var used []extent
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFragments).ForEach(func(k, v []byte) error {
			// Count everything as Put would have; dropDamaged subtracts what it drops.
			s.n.Add(1)
			s.bytes.Add(diskDataLen(v))
			if dv, err := parseDiskValue(v); err == nil && dv.external {
				used = append(used, extent{dv.off, int64(dv.n)})
			}
			// The data is not read here: Get checks it against the manifest when it is used.
			if _, err := s.decode(k, v, false); err != nil {
				damaged = append(damaged, damagedEntry{bytes.Clone(k), bytes.Clone(v)})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if err := s.reclaim(used); err != nil {
		return err
	}
	return s.dropDamaged(damaged)
}

// extent is a fragment's data in the data file.
type extent struct{ off, n int64 }

func alignUp(n int64) int64 { return (n + dataAlign - 1) &^ (dataAlign - 1) }

// reclaim punches every range of the data file that no entry uses and cuts the file after
// the last used one; new data goes after it.
func (s *DiskStore) reclaim(used []extent) error {
	slices.SortFunc(used, func(a, b extent) int { return cmp.Compare(a.off, b.off) })
	var at int64
	for _, e := range used {
		if e.off > at {
			s.punch(at, e.off-at)
		}
		at = max(at, alignUp(e.off+e.n))
	}
	if err := s.data.Truncate(at); err != nil {
		return fmt.Errorf("cut the data file: %w", err)
	}
	s.end = at
	return nil
}

// punch gives the blocks of [off, off+n) back to the file system. Where the file system
// cannot, the space stays allocated (the data is dead either way): nothing to report.
func (s *DiskStore) punch(off, n int64) {
	if n > 0 {
		_ = unix.Fallocate(int(s.data.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, alignUp(n))
	}
}

// writeData appends the data of the batch's puts to the data file, each at a block boundary,
// fdatasyncs it and returns their offsets (-1 where there is none). The caller holds mu.
func (s *DiskStore) writeData(ops []FragOp, res []error) ([]int64, error) {
	offs := make([]int64, len(ops))
	start, total := s.end, 0
	for i, op := range ops {
		offs[i] = -1
		if res[i] != nil || op.Delete {
			continue
		}
		offs[i] = s.end
		if _, err := s.data.WriteAt(op.Put.Data, s.end); err != nil {
			s.punch(start, s.end-start)
			return nil, fmt.Errorf("write the data file: %w", err)
		}
		s.end = alignUp(s.end + int64(len(op.Put.Data)))
		total += len(op.Put.Data)
	}
	if total == 0 {
		return offs, nil
	}
	err := syscall.Fdatasync(int(s.data.Fd()))
	diskstat.Glacier.Sync(total)
	if err != nil {
		s.punch(start, s.end-start)
		return nil, fmt.Errorf("fdatasync the data file: %w", err)
	}
	return offs, nil
}

// Close closes the file. Later calls fail (Range and Ascend see an empty store).
func (s *DiskStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	derr := s.data.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("glacier store close %s: %w", s.path, err)
	}
	if derr != nil && !errors.Is(derr, os.ErrClosed) {
		return fmt.Errorf("glacier store close %s: %w", s.path, derr)
	}
	return nil
}

// Len implements Store.
func (s *DiskStore) Len() int { return int(s.n.Load()) }

// Bytes is the fragment data held.
func (s *DiskStore) Bytes() int64 { return s.bytes.Load() }

// Put implements Store: it returns once the fragment is committed and fsynced. A fragment
// already held at fk is replaced (the node has decided which version wins).
func (s *DiskStore) Put(fk ids.ID, f Fragment) error {
	if f.Manifest == nil || f.Index < 0 || f.Index >= MaxFragments {
		return fmt.Errorf("glacier store put %s in %s: no manifest or index %d out of range", fk.Short(), s.path, f.Index)
	}
	res, err := s.Apply([]FragOp{{Key: fk, Put: &f}})
	if err != nil {
		return fmt.Errorf("glacier store put %s in %s: %w", fk.Short(), s.path, err)
	}
	return res[0]
}

// Apply commits a batch of puts and deletes in one transaction, in order: the driver's
// write-back (persist.go). The puts' data is written and fdatasynced first, in one flush for
// the batch, then the index commits. A delete of a key not held is not an error.
func (s *DiskStore) Apply(ops []FragOp) ([]error, error) {
	res := make([]error, len(ops))
	for i, op := range ops {
		if op.Delete {
			continue
		}
		f := op.Put
		if f == nil || f.Manifest == nil || f.Index < 0 || f.Index >= MaxFragments {
			res[i] = fmt.Errorf("glacier store put %s in %s: no manifest or index out of range", op.Key.Short(), s.path)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	offs, err := s.writeData(ops, res)
	if err != nil {
		return nil, fmt.Errorf("glacier store apply in %s: %w", s.path, err)
	}
	var dn, dbytes int64
	var freed []extent
	err = s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		dn, dbytes, freed = 0, 0, freed[:0]
		b := tx.Bucket(bucketFragments)
		for i, op := range ops {
			if res[i] != nil {
				continue
			}
			if old := b.Get(op.Key[:]); old != nil {
				dn--
				dbytes -= diskDataLen(old)
				if dv, err := parseDiskValue(old); err == nil && dv.external {
					freed = append(freed, extent{dv.off, int64(dv.n)})
				}
				if op.Delete {
					if err := b.Delete(op.Key[:]); err != nil {
						return err
					}
				}
			}
			if op.Delete {
				continue
			}
			if err := b.Put(op.Key[:], encodeExternalEntry(op.Put, offs[i])); err != nil {
				return err
			}
			dn++
			dbytes += int64(len(op.Put.Data))
		}
		return nil
	})
	if err != nil {
		for i, off := range offs {
			if off >= 0 {
				s.punch(off, int64(len(ops[i].Put.Data)))
			}
		}
		return nil, fmt.Errorf("glacier store apply in %s: %w", s.path, err)
	}
	for _, e := range freed {
		s.punch(e.off, e.n)
	}
	s.n.Add(dn)
	s.bytes.Add(dbytes)
	return res, nil
}

// Get implements Store. It checks the data and its proof against the manifest's fragment
// root; a damaged entry is
// dropped and reported as an error wrapping ErrNotFound, so that maintenance fetches a good
// copy from the other holders.
//
// The manifest's signature is not verified again: it was verified when the fragment was
// accepted, these bytes come from our own disk, and Range would otherwise pay an ed25519
// verification per held fragment on every maintenance round. Decoding (bounds and shape)
// and the proof check catch damage to everything but fields outside the root (version,
// expiry, name); whoever we serve the manifest to verifies it before trusting it.
func (s *DiskStore) Get(fk ids.ID) (Fragment, error) {
	var raw []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		raw = bytes.Clone(tx.Bucket(bucketFragments).Get(fk[:]))
		return nil
	})
	if err != nil {
		return Fragment{}, fmt.Errorf("glacier store get %s in %s: %w", fk.Short(), s.path, err)
	}
	if raw == nil {
		return Fragment{}, ErrNotFound
	}
	f, err := s.decode(fk[:], raw, true)
	if err == nil {
		err = f.Manifest.CheckFragment(f.Index, f.Data, f.Proof)
	}
	if err != nil {
		derr := s.dropDamaged([]damagedEntry{{bytes.Clone(fk[:]), raw}})
		return Fragment{}, errors.Join(fmt.Errorf("glacier store get %s in %s: damaged entry dropped (%v): %w", fk.Short(), s.path, err, ErrNotFound), derr)
	}
	return f, nil
}

// Delete implements Store. Like MemStore it returns ErrNotFound for a key it does not hold:
// the node counts only real deletions.
func (s *DiskStore) Delete(fk ids.ID) error {
	s.mu.Lock()
	held := false
	err := s.db.View(func(tx *bolt.Tx) error {
		held = tx.Bucket(bucketFragments).Get(fk[:]) != nil
		return nil
	})
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("glacier store delete %s in %s: %w", fk.Short(), s.path, err)
	}
	if !held {
		return ErrNotFound
	}
	if _, err := s.Apply([]FragOp{{Key: fk, Delete: true}}); err != nil {
		return fmt.Errorf("glacier store delete %s: %w", fk.Short(), err)
	}
	return nil
}

// Range implements Store. It neither reads nor hashes the data (Get does): maintenance reads
// only manifests and indexes, and reading every held byte each round would dominate its cost.
// Entries that do not decode are skipped and dropped after the walk.
func (s *DiskStore) Range(f func(fk ids.ID, fr *Fragment) bool) {
	s.walk(func(c *bolt.Cursor) ([]byte, []byte) { return c.First() }, false, f)
}

// Ascend implements Store, as MemStore does: from the first key strictly after from,
// clockwise, wrapping around once. Like Range, it leaves the data on disk (a sync request
// walked with the data read every held fragment's bytes on the node's event loop, stalling
// all of its PAST and POST traffic for seconds).
func (s *DiskStore) Ascend(from ids.ID, f func(fk ids.ID, fr *Fragment) bool) {
	s.walk(func(c *bolt.Cursor) ([]byte, []byte) {
		k, v := c.Seek(from[:])
		if k != nil && bytes.Equal(k, from[:]) {
			k, v = c.Next()
		}
		if k == nil {
			k, v = c.First()
		}
		return k, v
	}, true, f)
}

// walk calls f for each entry from start on, in key order, wrapping to the first key once
// if wrap is set, until f returns false.
func (s *DiskStore) walk(start func(*bolt.Cursor) ([]byte, []byte), wrap bool, f func(ids.ID, *Fragment) bool) {
	var damaged []damagedEntry
	// The only error View returns here is a closed store, which holds nothing to visit.
	_ = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketFragments).Cursor()
		k, v := start(c)
		first := k // valid for the transaction
		for k != nil {
			fr, err := s.decode(k, v, false) // manifests and indexes only: walks never need the bytes
			if err != nil {
				damaged = append(damaged, damagedEntry{bytes.Clone(k), bytes.Clone(v)})
			} else if !f(ids.ID(k), &fr) {
				return nil
			}
			k, v = c.Next()
			if k == nil && wrap {
				k, v = c.First()
			}
			if wrap && bytes.Equal(k, first) {
				return nil
			}
		}
		return nil
	})
	// Nobody can act on an error here; the entries are met and dropped again next time.
	_ = s.dropDamaged(damaged)
}

type damagedEntry struct{ key, val []byte }

// dropDamaged deletes entries that still hold the damaged value read earlier (a Put may have
// replaced them with a good copy since) and updates the counters.
func (s *DiskStore) dropDamaged(es []damagedEntry) error {
	if len(es) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var dropped []damagedEntry
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		b := tx.Bucket(bucketFragments)
		dropped = dropped[:0]
		defer func() {
			for _, e := range dropped {
				if dv, err := parseDiskValue(e.val); err == nil && dv.external {
					tx.OnCommit(func() { s.punch(dv.off, int64(dv.n)) })
				}
			}
		}()
		for _, e := range es {
			if !bytes.Equal(b.Get(e.key), e.val) {
				continue
			}
			if err := b.Delete(e.key); err != nil {
				return err
			}
			dropped = append(dropped, e)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("glacier store %s: drop %d damaged entries: %w", s.path, len(es), err)
	}
	for _, e := range dropped {
		s.n.Add(-1)
		s.bytes.Add(-diskDataLen(e.val))
	}
	return nil
}

// encodeInlineEntry is the value of format 2, the data inline (earlier releases; tests).
func encodeInlineEntry(f *Fragment) []byte {
	w := encodeEntryHead(f, valueInline, len(f.Data))
	w.B = append(w.B, f.Data...)
	return w.B
}

// encodeExternalEntry is the value of format 3, the data at off in the data file.
func encodeExternalEntry(f *Fragment, off int64) []byte {
	w := encodeEntryHead(f, valueExternal, 12)
	w.U64(uint64(off))
	w.U32(uint32(len(f.Data)))
	return w.B
}

func encodeEntryHead(f *Fragment, format byte, tail int) *wire.Writer {
	man := f.Manifest.Bytes()
	w := &wire.Writer{B: make([]byte, 0, 1+2+3+len(man)+1+32*len(f.Proof)+tail)}
	w.U8(format)
	w.U16(uint16(f.Index))
	w.Bytes(man)
	writeProof(w, f.Proof)
	return w
}

// diskValue is a value split into its parts (aliasing it); it never panics.
type diskValue struct {
	idx      int
	man      []byte // the manifest's wire form
	proof    []byte // the proof's wire form
	external bool
	data     []byte // inline
	off      int64  // external
	n        int    // external
}

func parseDiskValue(v []byte) (diskValue, error) {
	var dv diskValue
	r := wire.NewReader(v)
	fm := r.U8()
	if r.Err() == nil && fm != valueInline && fm != valueExternal {
		return dv, fmt.Errorf("%w: value format %d", wire.ErrMalformed, fm)
	}
	dv.idx = int(r.U16())
	n := r.Len(maxManifestWire, "manifest")
	if err := r.Err(); err != nil {
		return dv, err
	}
	dv.man, v = r.B[:n:n], r.B[n:]
	if len(v) < 1 || int(v[0]) > maxProofLen || len(v) < 1+32*int(v[0]) {
		return dv, fmt.Errorf("%w: proof", wire.ErrMalformed)
	}
	end := 1 + 32*int(v[0])
	dv.proof, v = v[:end:end], v[end:]
	if fm == valueInline {
		dv.data = v
		return dv, nil
	}
	if len(v) != 12 {
		return dv, fmt.Errorf("%w: data location", wire.ErrMalformed)
	}
	dv.external = true
	dv.off = int64(binary.BigEndian.Uint64(v))
	dv.n = int(binary.BigEndian.Uint32(v[8:]))
	if dv.off < 0 || dv.off%dataAlign != 0 || dv.n > MaxObjectSize {
		return dv, fmt.Errorf("%w: data location", wire.ErrMalformed)
	}
	return dv, nil
}

// diskDataLen is the data length a value holds or points to, as Put and the open scan
// counted it (0 for a value damaged since, which only skews Bytes until the next Open).
func diskDataLen(v []byte) int64 {
	dv, err := parseDiskValue(v)
	switch {
	case err != nil:
		return 0
	case dv.external:
		return int64(dv.n)
	}
	return int64(len(dv.data))
}

// decodeDiskEntry decodes a value of format 2 (inline data) into a Fragment that owns its
// memory; see decodeEntry.
func decodeDiskEntry(k, v []byte) (Fragment, error) {
	dv, err := parseDiskValue(v)
	if err == nil && dv.external {
		err = fmt.Errorf("%w: value format %d", wire.ErrMalformed, valueExternal)
	}
	if err != nil {
		return Fragment{}, err
	}
	return decodeEntry(k, dv, nil)
}

// decode decodes one entry of either format, reading external data if withData (else the
// Fragment's Data is nil).
func (s *DiskStore) decode(k, v []byte, withData bool) (Fragment, error) {
	dv, err := parseDiskValue(v)
	if err != nil {
		return Fragment{}, err
	}
	var data []byte
	if dv.external && withData {
		data = make([]byte, dv.n)
		if _, err := s.data.ReadAt(data, dv.off); err != nil {
			return Fragment{}, fmt.Errorf("%w: read %d bytes at %d of the data file: %v", ErrBadFragment, dv.n, dv.off, err)
		}
	}
	return decodeEntry(k, dv, data)
}

// decodeEntry builds the Fragment; data is the external data (nil: inline or not read). It
// checks the manifest's shape and the proof's length but neither the signature nor the proof
// (see Get).
func decodeEntry(k []byte, dv diskValue, data []byte) (Fragment, error) {
	if len(k) != ids.Bytes {
		return Fragment{}, fmt.Errorf("%w: key of %d bytes", wire.ErrMalformed, len(k))
	}
	r := wire.NewReader(dv.man)
	m := DecodeManifest(r)
	if err := r.Done(); err != nil {
		return Fragment{}, err
	}
	switch {
	case len(m.Owner) != ed25519.PublicKeySize || len(m.Sig) != ed25519.SignatureSize,
		m.M < 1 || m.N < m.M || int(m.N) > MaxFragments:
		return Fragment{}, fmt.Errorf("%w: manifest shape", ErrBadManifest)
	case dv.idx >= int(m.N):
		return Fragment{}, fmt.Errorf("%w: index %d of %d", ErrBadFragment, dv.idx, m.N)
	}
	pr := wire.NewReader(dv.proof)
	proof := readProof(pr, int(m.N))
	if err := pr.Done(); err != nil {
		return Fragment{}, err
	}
	if !dv.external {
		data = bytes.Clone(dv.data)
	}
	return Fragment{Manifest: m, Index: dv.idx, Data: data, Proof: proof}, nil
}
