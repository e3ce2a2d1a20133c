package glacier

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/diskstat"
	"epost/internal/ids"
	"epost/internal/wire"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DiskStore is a durable Store in one bbolt file.
//
// Layout: bucket "fragments" maps the 32-byte big-endian fragment key (so bbolt's byte order
// is the circle's order) to a value
//
//	format (1 byte) | index (u16) | manifest wire form (uvarint length, bytes) |
//	proof length (1 byte, ProofLen(n)) | proof (32 bytes each) | data (the rest)
//
// and bucket "meta" holds the file's format, which Open checks, so that a release refuses a
// file of another format instead of dropping every entry it cannot read. Format 2 (Merkle
// manifests and inclusion proofs) replaced 1 (manifests listing every fragment hash); a file
// of format 1 is refused with a request to move it aside: no deployment holds one.
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
	mu    sync.Mutex // serialises writers; see the type comment
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
	diskFormat      = 2 // of the file (meta) and of every value
	diskLockTimeout = time.Second
	// maxManifestWire bounds a stored manifest's wire form: far above the largest valid one
	// (≈ 500 bytes with a name of MaxNameLen), it only stops a damaged length from meaning much.
	maxManifestWire = 4 << 10
)

// OpenDiskStore opens (creating) the fragment store in the bbolt file at path. Only one
// process may have the file open; Open gives up after a second if another holds it.
func OpenDiskStore(path string) (*DiskStore, error) {
	// NoSync stays false: every Put commits with an fsync, because a holder acknowledges the
	// fragment as soon as Put returns.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: diskLockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("glacier store open %s: the file is locked by another process (is another epost node using it?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("glacier store open %s: %w", path, err)
	}
	s := &DiskStore{path: path, db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("glacier store open %s: %w", path, err)
	}
	return s, nil
}

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
		case len(v) == 1 && v[0] < diskFormat:
			return fmt.Errorf("fragment store format %d predates Merkle manifests (format %d) and cannot be read: move the file aside (its fragments are rebuilt by maintenance from the other holders) and restart", v[0], diskFormat)
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
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFragments).ForEach(func(k, v []byte) error {
			// Count everything as Put would have; dropDamaged subtracts what it drops.
			s.n.Add(1)
			s.bytes.Add(diskDataLen(v))
			if _, err := decodeDiskEntry(k, v); err != nil {
				damaged = append(damaged, damagedEntry{bytes.Clone(k), bytes.Clone(v)})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	return s.dropDamaged(damaged)
}

// Close closes the file. Later calls fail (Range and Ascend see an empty store).
func (s *DiskStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("glacier store close %s: %w", s.path, err)
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
	val := encodeDiskEntry(&f)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		b := tx.Bucket(bucketFragments)
		old = bytes.Clone(b.Get(fk[:]))
		return b.Put(fk[:], val)
	})
	if err != nil {
		return fmt.Errorf("glacier store put %s in %s: %w", fk.Short(), s.path, err)
	}
	if old != nil {
		s.bytes.Add(-diskDataLen(old))
	} else {
		s.n.Add(1)
	}
	s.bytes.Add(int64(len(f.Data)))
	return nil
}

// Apply commits a batch of puts and deletes in one transaction (one fsync), in order: the
// driver's write-back (persist.go). A delete of a key not held is not an error.
func (s *DiskStore) Apply(ops []FragOp) ([]error, error) {
	res := make([]error, len(ops))
	vals := make([][]byte, len(ops))
	for i, op := range ops {
		if op.Delete {
			continue
		}
		f := op.Put
		if f == nil || f.Manifest == nil || f.Index < 0 || f.Index >= MaxFragments {
			res[i] = fmt.Errorf("glacier store put %s in %s: no manifest or index out of range", op.Key.Short(), s.path)
			continue
		}
		vals[i] = encodeDiskEntry(f)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var dn, dbytes int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		dn, dbytes = 0, 0
		b := tx.Bucket(bucketFragments)
		for i, op := range ops {
			if res[i] != nil {
				continue
			}
			old := b.Get(op.Key[:])
			if old != nil {
				dn--
				dbytes -= diskDataLen(old)
			}
			if op.Delete {
				if old != nil {
					if err := b.Delete(op.Key[:]); err != nil {
						return err
					}
				}
				continue
			}
			if err := b.Put(op.Key[:], vals[i]); err != nil {
				return err
			}
			dn++
			dbytes += int64(len(op.Put.Data))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("glacier store apply in %s: %w", s.path, err)
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
	f, err := decodeDiskEntry(fk[:], raw)
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
	defer s.mu.Unlock()
	var old []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.Glacier.BoltCommit(tx)
		b := tx.Bucket(bucketFragments)
		if old = bytes.Clone(b.Get(fk[:])); old == nil {
			return nil
		}
		return b.Delete(fk[:])
	})
	if err != nil {
		return fmt.Errorf("glacier store delete %s in %s: %w", fk.Short(), s.path, err)
	}
	if old == nil {
		return ErrNotFound
	}
	s.n.Add(-1)
	s.bytes.Add(-diskDataLen(old))
	return nil
}

// Range implements Store. It does not hash the data (Get does): maintenance reads only
// manifests and indexes, and hashing every held byte each round would dominate its cost.
// Entries that do not decode are skipped and dropped after the walk.
func (s *DiskStore) Range(f func(fk ids.ID, fr *Fragment) bool) {
	s.walk(func(c *bolt.Cursor) ([]byte, []byte) { return c.First() }, false, f)
}

// Ascend implements Store, as MemStore does: from the first key strictly after from,
// clockwise, wrapping around once.
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
			fr, err := decodeDiskEntry(k, v)
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

func encodeDiskEntry(f *Fragment) []byte {
	man := f.Manifest.Bytes()
	w := wire.Writer{B: make([]byte, 0, 1+2+3+len(man)+1+32*len(f.Proof)+len(f.Data))}
	w.U8(diskFormat)
	w.U16(uint16(f.Index))
	w.Bytes(man)
	writeProof(&w, f.Proof)
	w.B = append(w.B, f.Data...)
	return w.B
}

// diskHeader reads a value up to its proof and returns the index, the manifest's wire form
// and the rest (proof and data, aliasing v), or an error; it never panics.
func diskHeader(v []byte) (idx int, man, rest []byte, err error) {
	r := wire.NewReader(v)
	if fm := r.U8(); r.Err() == nil && fm != diskFormat {
		return 0, nil, nil, fmt.Errorf("%w: value format %d", wire.ErrMalformed, fm)
	}
	idx = int(r.U16())
	n := r.Len(maxManifestWire, "manifest")
	if err := r.Err(); err != nil {
		return 0, nil, nil, err
	}
	return idx, r.B[:n:n], r.B[n:], nil
}

// diskData splits the rest of a value into the proof's wire form and the data.
func diskData(rest []byte) (proof, data []byte, err error) {
	if len(rest) < 1 || int(rest[0]) > maxProofLen || len(rest) < 1+32*int(rest[0]) {
		return nil, nil, fmt.Errorf("%w: proof", wire.ErrMalformed)
	}
	end := 1 + 32*int(rest[0])
	return rest[:end:end], rest[end:], nil
}

// diskDataLen is the data length a value holds, as Put and the open scan counted it (0 for a
// value damaged since, which only skews Bytes until the next Open).
func diskDataLen(v []byte) int64 {
	_, _, rest, err := diskHeader(v)
	if err != nil {
		return 0
	}
	_, data, err := diskData(rest)
	if err != nil {
		return 0
	}
	return int64(len(data))
}

// decodeDiskEntry decodes one entry into a Fragment that owns its memory. It checks the
// manifest's shape and the proof's length but neither the signature nor the proof (see Get).
func decodeDiskEntry(k, v []byte) (Fragment, error) {
	if len(k) != ids.Bytes {
		return Fragment{}, fmt.Errorf("%w: key of %d bytes", wire.ErrMalformed, len(k))
	}
	idx, raw, rest, err := diskHeader(v)
	if err != nil {
		return Fragment{}, err
	}
	r := wire.NewReader(raw)
	m := DecodeManifest(r)
	if err := r.Done(); err != nil {
		return Fragment{}, err
	}
	switch {
	case len(m.Owner) != ed25519.PublicKeySize || len(m.Sig) != ed25519.SignatureSize,
		m.M < 1 || m.N < m.M || int(m.N) > MaxFragments:
		return Fragment{}, fmt.Errorf("%w: manifest shape", ErrBadManifest)
	case idx >= int(m.N):
		return Fragment{}, fmt.Errorf("%w: index %d of %d", ErrBadFragment, idx, m.N)
	}
	pr := wire.NewReader(rest)
	proof := readProof(pr, int(m.N))
	if err := pr.Err(); err != nil {
		return Fragment{}, err
	}
	return Fragment{Manifest: m, Index: idx, Data: bytes.Clone(pr.B), Proof: proof}, nil
}
