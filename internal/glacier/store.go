package glacier

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"epost/internal/ids"
	"epost/internal/wire"
)

// Fragment is one held fragment: fragment Index of the object its manifest describes, with
// its inclusion proof (ProofLen(n) sibling hashes from its leaf up to Manifest.FragRoot).
type Fragment struct {
	Manifest *Manifest
	Index    int
	Data     []byte
	Proof    [][32]byte
}

// Key is where the fragment lives: FragmentKey(K, Index, n).
func (f *Fragment) Key() ids.ID { return f.Manifest.FragmentKey(f.Index) }

// ErrNotFound is returned for fragments a store does not hold.
var ErrNotFound = errors.New("glacier: fragment not found")

// Store is a node's local fragment storage, keyed by fragment key. Put returns only once the
// fragment is durable: a holder acknowledges right after it. Methods are called from the
// node's Step and Tick, one at a time.
type Store interface {
	Put(fk ids.ID, f Fragment) error
	Get(fk ids.ID) (Fragment, error)
	Delete(fk ids.ID) error
	// Range calls f for every held fragment in increasing key order until f returns false.
	// f must not modify the store. The fragments' Data may be nil (DiskStore leaves the bytes
	// on disk): walks read manifests and indexes only; Get has the data.
	Range(f func(fk ids.ID, fr *Fragment) bool)
	// Ascend is Range going clockwise from the first key after from, once around the ring.
	Ascend(from ids.ID, f func(fk ids.ID, fr *Fragment) bool)
	Len() int
}

// MemStore is an in-memory Store for the simulator and tests ("durable" means "in the map").
// It is not safe for concurrent use.
type MemStore struct {
	m      map[ids.ID]*Fragment
	sorted []memEntry // by key
	bytes  int64
}

type memEntry struct {
	fk ids.ID
	f  *Fragment
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{m: make(map[ids.ID]*Fragment)} }

func (s *MemStore) search(fk ids.ID) (int, bool) {
	return slices.BinarySearchFunc(s.sorted, fk, func(e memEntry, k ids.ID) int { return ids.Cmp(e.fk, k) })
}

// Put implements Store.
func (s *MemStore) Put(fk ids.ID, f Fragment) error {
	f.Data = slices.Clip(f.Data)
	p := &f
	i, found := s.search(fk)
	if found {
		s.bytes -= int64(len(s.sorted[i].f.Data))
		s.sorted[i].f = p
	} else {
		s.sorted = slices.Insert(s.sorted, i, memEntry{fk, p})
	}
	s.m[fk] = p
	s.bytes += int64(len(f.Data))
	return nil
}

// Get implements Store.
func (s *MemStore) Get(fk ids.ID) (Fragment, error) {
	f, ok := s.m[fk]
	if !ok {
		return Fragment{}, ErrNotFound
	}
	return *f, nil
}

// Delete implements Store.
func (s *MemStore) Delete(fk ids.ID) error {
	f, ok := s.m[fk]
	if !ok {
		return ErrNotFound
	}
	s.bytes -= int64(len(f.Data))
	delete(s.m, fk)
	if i, found := s.search(fk); found {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
	return nil
}

// Range implements Store.
func (s *MemStore) Range(f func(fk ids.ID, fr *Fragment) bool) {
	for _, e := range s.sorted {
		if !f(e.fk, e.f) {
			return
		}
	}
}

// Ascend implements Store.
func (s *MemStore) Ascend(from ids.ID, f func(fk ids.ID, fr *Fragment) bool) {
	i, found := s.search(from)
	if found {
		i++
	}
	for k := 0; k < len(s.sorted); k++ {
		e := s.sorted[(i+k)%len(s.sorted)]
		if !f(e.fk, e.f) {
			return
		}
	}
}

// Len implements Store.
func (s *MemStore) Len() int { return len(s.m) }

// Bytes is the fragment data held.
func (s *MemStore) Bytes() int64 { return s.bytes }

// ManifestCache remembers manifests whose signature was verified, keyed by the SHA-256 of their
// wire form. Verification is a pure function of those bytes, so a hit needs neither decoding
// nor a signature check, and every fragment of one object held here shares one decoded
// manifest. The simulator shares one cache among all its nodes, which saves memory and CPU and
// changes no outcome; a real node has its own. Safe for concurrent use.
type ManifestCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*Manifest
}

// NewManifestCache returns a cache of at most max manifests (0: 65,536).
func NewManifestCache(max int) *ManifestCache {
	if max <= 0 {
		max = 1 << 16
	}
	return &ManifestCache{max: max, m: make(map[[32]byte]*Manifest)}
}

// Verified decodes a manifest's wire form and checks its signature, through the cache (c may
// be nil: no caching).
func (c *ManifestCache) Verified(raw []byte) (*Manifest, error) {
	var h [32]byte
	if c != nil {
		h = sha256.Sum256(raw)
		c.mu.Lock()
		hit := c.m[h]
		c.mu.Unlock()
		if hit != nil {
			return hit, nil
		}
	}
	r := wire.NewReader(raw)
	m := DecodeManifest(r)
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if err := m.Verify(); err != nil {
		return nil, err
	}
	if c != nil {
		c.mu.Lock()
		if len(c.m) >= c.max {
			for k := range c.m { // evict one arbitrary entry: it only costs a re-verification
				delete(c.m, k)
				break
			}
		}
		c.m[h] = m
		c.mu.Unlock()
	}
	return m, nil
}

// skipManifest advances r over a manifest's wire form without decoding it and returns those
// bytes (nil after an error) and the n it states (unchecked: 0 or above MaxFragments possible).
func skipManifest(r *wire.Reader) ([]byte, int) {
	start := r.B
	skip := func(n int) {
		if r.Err() == nil {
			r.B = r.B[n:]
		}
	}
	if f := r.U8(); f != manifestFormat && r.Err() == nil {
		r.Fail("manifest format %d, want %d", f, manifestFormat)
	}
	r.ID()
	skip(r.Len(ed25519.PublicKeySize, "owner key"))
	skip(r.Len(MaxNameLen, "name"))
	r.U64()
	r.I64()
	r.U32()
	n := int(r.U16())
	r.U16()
	r.ID() // object hash
	r.ID() // fragment root
	skip(r.Len(ed25519.SignatureSize, "signature"))
	if r.Err() != nil {
		return nil, 0
	}
	return start[: len(start)-len(r.B) : len(start)-len(r.B)], n
}

// writeProof appends an inclusion proof: a count byte and the hashes.
func writeProof(w *wire.Writer, proof [][32]byte) {
	w.U8(uint8(len(proof)))
	for i := range proof {
		w.B = append(w.B, proof[i][:]...)
	}
}

// readProof reads an inclusion proof for a manifest of n fragments: its length must be
// ProofLen(n), for a valid n (nil after an error).
func readProof(r *wire.Reader, n int) [][32]byte {
	c := int(r.U8())
	if r.Err() != nil {
		return nil
	}
	if n < 1 || n > MaxFragments || c != ProofLen(n) {
		r.Fail("proof of %d hashes for n = %d, want %d", c, n, ProofLen(n))
		return nil
	}
	p := make([][32]byte, c)
	for i := range p {
		p[i] = [32]byte(r.ID())
	}
	if r.Err() != nil {
		return nil
	}
	return p
}
