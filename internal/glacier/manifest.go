package glacier

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"epost/internal/ids"
	"epost/internal/wire"
)

// Limits on what a manifest may describe; they bound decoding and storage.
const (
	MaxObjectSize = 2 << 20 // an aggregate (ePOST: at most 512,000 bytes), or one PAST object of up to 1 MiB with its wrapping
	MaxNameLen    = 256
)

// Domain separation: no hash or signature made for one purpose is valid for another (and none
// made for PAST's signed objects is valid here).
const (
	objectKeyDomain = "epost-glacier-object-v1\x00"
	manifestDomain  = "epost-glacier-manifest-v2\x00"
)

// manifestFormat is the first byte of a manifest's wire form. Format 1 (no such byte, a list
// of n fragment hashes, domain "-manifest-v1") was replaced by 2 (a Merkle root, merkle.go);
// an encoding of another format is refused by DecodeManifest.
const manifestFormat = 2

// Manifest errors. Holders send them back as codes (message.go).
var (
	ErrBadManifest  = errors.New("glacier: manifest malformed or signature invalid")
	ErrBadFragment  = errors.New("glacier: fragment does not match its manifest")
	ErrWrongParams  = errors.New("glacier: manifest's n/m differ from the ring's")
	ErrWrongRing    = errors.New("glacier: manifest belongs to another ring")
	ErrExpired      = errors.New("glacier: manifest expired")
	ErrHashMismatch = errors.New("glacier: decoded object does not match the manifest's hash")
)

// ObjectKey is the key of the object name owned by owner in ring:
// SHA-256(domain || ring || owner public key || name).
//
// Why owner-bound keys rather than K = hash(aggregate): a holder sees one fragment, never the
// object, so it cannot check a content hash; what it can check alone is that the manifest is
// signed by the key it names and that this key and the name hash to K. Then only the owner can
// make any manifest valid at K, so nobody can squat on an object's n positions with a
// different fragment set, and the owner can publish new versions (longer leases, a repacked
// aggregate) that holders order by version. The object's content is still pinned by
// ObjectHash, which every reader checks after decoding.
func ObjectKey(ring ids.RingID, owner ed25519.PublicKey, name []byte) ids.ID {
	h := sha256.New()
	h.Write([]byte(objectKeyDomain))
	h.Write(ring[:])
	h.Write(owner)
	h.Write(name)
	var id ids.ID
	h.Sum(id[:0])
	return id
}

// FragmentKey is where fragment i of n of object k lives: k + i·2^256/n.
func FragmentKey(k ids.ID, i, n int) ids.ID { return ids.Add(k, ids.Fraction(i, n)) }

// Manifest describes one version of an erasure-coded object; signed by its owner, it travels
// with every fragment, and with the fragment's inclusion proof (merkle.go) lets each holder
// check its fragment on its own. Its size does not depend on n.
type Manifest struct {
	Ring       ids.RingID
	Owner      ed25519.PublicKey
	Name       []byte
	Version    uint64 // grows with every re-signing (lease extension, repack)
	Expiry     int64  // unix nanoseconds; holders drop the fragments after it
	Size       uint32 // object bytes
	N, M       uint16
	ObjectHash [32]byte // SHA-256 of the object
	FragRoot   [32]byte // Merkle root over the n fragments (merkle.go)
	Sig        []byte

	key ids.ID // ObjectKey, memoised by NewManifest and verification (then immutable)
}

// Key is the object key K the manifest is bound to.
func (m *Manifest) Key() ids.ID {
	if !m.key.IsZero() {
		return m.key
	}
	return ObjectKey(m.Ring, m.Owner, m.Name)
}

// FragmentKey is the key of fragment i of this object.
func (m *Manifest) FragmentKey(i int) ids.ID { return FragmentKey(m.Key(), i, int(m.N)) }

// ExpiryTime is Expiry as a time.
func (m *Manifest) ExpiryTime() time.Time { return time.Unix(0, m.Expiry) }

// NewManifest encodes obj with c and returns the fragments and the manifest signed by priv.
// Encode gives the fragments' inclusion proofs too; prefer it for objects to be inserted.
func NewManifest(c *Codec, priv ed25519.PrivateKey, ring ids.RingID, name []byte, version uint64, expiry time.Time, obj []byte) (*Manifest, [][]byte, error) {
	e, err := Encode(c, priv, ring, name, version, expiry, obj)
	if err != nil {
		return nil, nil, err
	}
	return e.Manifest, e.Frags, nil
}

// Encoded is an object ready to be inserted (Node.InsertEncoded): its manifest signed by the
// owner, its n fragments, and each fragment's inclusion proof. Encode computes the proofs in
// the same pass over the fragments as the manifest's root, so an insert does not hash the
// fragments a second time (8 times the object's bytes with a 64/8 code). The fragments must
// not be modified.
type Encoded struct {
	Manifest *Manifest
	Frags    [][]byte
	proofs   [][][32]byte // by position; set only by Encode, so they match Frags
}

// Encode erasure-codes obj with c and signs its manifest with priv.
func Encode(c *Codec, priv ed25519.PrivateKey, ring ids.RingID, name []byte, version uint64, expiry time.Time, obj []byte) (*Encoded, error) {
	if len(obj) > MaxObjectSize {
		return nil, fmt.Errorf("glacier: object of %d bytes exceeds %d", len(obj), MaxObjectSize)
	}
	if len(name) > MaxNameLen {
		return nil, fmt.Errorf("glacier: name of %d bytes exceeds %d", len(name), MaxNameLen)
	}
	frags, err := c.Encode(obj)
	if err != nil {
		return nil, err
	}
	root, proofs := merkleTree(frags)
	m := &Manifest{Ring: ring, Owner: priv.Public().(ed25519.PublicKey), Name: append([]byte(nil), name...),
		Version: version, Expiry: expiry.UnixNano(), Size: uint32(len(obj)), N: uint16(c.n), M: uint16(c.m),
		ObjectHash: sha256.Sum256(obj), FragRoot: root}
	m.Sig = ed25519.Sign(priv, m.signedBytes())
	m.key = ObjectKey(ring, m.Owner, m.Name)
	return &Encoded{Manifest: m, Frags: frags, proofs: proofs}, nil
}

// signedBytes is what the owner signs: the domain and every field but the signature.
func (m *Manifest) signedBytes() []byte {
	w := wire.Writer{B: make([]byte, 0, len(manifestDomain)+160+len(m.Name))}
	w.B = append(w.B, manifestDomain...)
	m.encodeBody(&w)
	return w.B
}

func (m *Manifest) encodeBody(w *wire.Writer) {
	w.U8(manifestFormat)
	w.ID(m.Ring)
	w.Bytes(m.Owner)
	w.Bytes(m.Name)
	w.U64(m.Version)
	w.I64(m.Expiry)
	w.U32(m.Size)
	w.U16(m.N)
	w.U16(m.M)
	w.B = append(w.B, m.ObjectHash[:]...)
	w.B = append(w.B, m.FragRoot[:]...)
}

// Encode appends the manifest's wire form to w.
func (m *Manifest) Encode(w *wire.Writer) {
	m.encodeBody(w)
	w.Bytes(m.Sig)
}

// Bytes is the manifest's wire form.
func (m *Manifest) Bytes() []byte {
	w := wire.Writer{}
	m.Encode(&w)
	return w.B
}

// DecodeManifest reads a manifest from r (shape only; call Verify before trusting it).
func DecodeManifest(r *wire.Reader) *Manifest {
	m := &Manifest{}
	if f := r.U8(); f != manifestFormat && r.Err() == nil {
		r.Fail("manifest format %d, want %d (written by an older release?)", f, manifestFormat)
	}
	m.Ring = r.ID()
	m.Owner = r.Bytes(ed25519.PublicKeySize, "owner key")
	m.Name = r.Bytes(MaxNameLen, "name")
	m.Version = r.U64()
	m.Expiry = r.I64()
	m.Size = r.U32()
	m.N = r.U16()
	m.M = r.U16()
	m.ObjectHash = [32]byte(r.ID())
	m.FragRoot = [32]byte(r.ID())
	m.Sig = r.Bytes(ed25519.SignatureSize, "signature")
	return m
}

// Verify checks the manifest's shape and its owner's signature. It does not check the ring,
// the ring's n/m or the expiry; holders do (Node.checkManifest).
func (m *Manifest) Verify() error {
	switch {
	case len(m.Owner) != ed25519.PublicKeySize || len(m.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: owner key or signature has the wrong length", ErrBadManifest)
	case m.M < 1 || m.N < m.M || int(m.N) > MaxFragments:
		return fmt.Errorf("%w: fragments %d/%d", ErrBadManifest, m.N, m.M)
	case m.Size > MaxObjectSize:
		return fmt.Errorf("%w: object size %d", ErrBadManifest, m.Size)
	case len(m.Name) > MaxNameLen:
		return fmt.Errorf("%w: name too long", ErrBadManifest)
	}
	if !ed25519.Verify(m.Owner, m.signedBytes(), m.Sig) {
		return fmt.Errorf("%w: signature", ErrBadManifest)
	}
	m.key = ObjectKey(m.Ring, m.Owner, m.Name)
	return nil
}

// CheckFragment reports whether data, with its inclusion proof, is fragment i of the object
// the manifest describes: the proof must have ProofLen(n) hashes and lead from data's leaf to
// FragRoot.
func (m *Manifest) CheckFragment(i int, data []byte, proof [][32]byte) error {
	if i < 0 || i >= int(m.N) {
		return fmt.Errorf("%w: index %d of %d", ErrBadFragment, i, m.N)
	}
	if len(data) != FragmentSize(int(m.Size), int(m.M)) {
		return fmt.Errorf("%w: fragment %d is %d bytes, want %d", ErrBadFragment, i, len(data), FragmentSize(int(m.Size), int(m.M)))
	}
	if len(proof) != ProofLen(int(m.N)) {
		return fmt.Errorf("%w: fragment %d has a proof of %d hashes, want %d", ErrBadFragment, i, len(proof), ProofLen(int(m.N)))
	}
	if rootFromProof(i, data, proof) != m.FragRoot {
		return fmt.Errorf("%w: fragment %d does not lead to the manifest's root", ErrBadFragment, i)
	}
	return nil
}

// SameContent reports whether two manifests describe the same fragments (versions may differ).
func (m *Manifest) SameContent(o *Manifest) bool {
	return m.Size == o.Size && m.N == o.N && m.M == o.M && m.ObjectHash == o.ObjectHash && m.FragRoot == o.FragRoot
}

// RenewManifest returns a copy of old with a new version and expiry, signed by priv: the same
// object and fragments under a longer lease (Node.Renew sends it to the holders, who keep their
// fragment data). priv must be old's owner; the version and the expiry must both grow, so that
// holders order the renewal after old and a renewal never shortens a lease.
func RenewManifest(old *Manifest, priv ed25519.PrivateKey, version uint64, expiry time.Time) (*Manifest, error) {
	k := old.Key().Short()
	switch {
	case len(priv) != ed25519.PrivateKeySize || !priv.Public().(ed25519.PublicKey).Equal(old.Owner):
		return nil, fmt.Errorf("glacier: renew %s: the key is not the manifest's owner", k)
	case version <= old.Version:
		return nil, fmt.Errorf("glacier: renew %s: version %d is not after %d", k, version, old.Version)
	case expiry.UnixNano() <= old.Expiry:
		return nil, fmt.Errorf("glacier: renew %s: expiry %s is not after %s", k, expiry.UTC(), old.ExpiryTime().UTC())
	}
	m := *old
	m.Owner = append(ed25519.PublicKey(nil), old.Owner...)
	m.Name = append([]byte(nil), old.Name...)
	m.Version, m.Expiry = version, expiry.UnixNano()
	m.Sig = ed25519.Sign(priv, m.signedBytes())
	m.key = ObjectKey(m.Ring, m.Owner, m.Name)
	return &m, nil
}
