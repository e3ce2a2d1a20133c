package past

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"epost/internal/ids"
	"epost/internal/store"
	"epost/internal/wire"
)

// Object is what PAST stores: the store's record (key, type, sequence number, lease, Aux,
// payload). For signed objects Aux carries the owner's key, the object name, the signed expiry
// and the signature (see Signed).
type Object = store.Object

// Type says how replicas validate an object. It is stored as store.Meta.Type.
type Type uint8

// Object types.
const (
	// TypeContent: key.ID is the SHA-256 of the payload; immutable, so a second insert of the
	// same key only extends the lease.
	TypeContent Type = 1
	// TypeSigned: a mutable object owned by an Ed25519 key. key.ID binds the owner's public
	// key and a name; every version carries a sequence number that must grow.
	TypeSigned Type = 2
)

// Limits.
const (
	MaxObjectSize = 1 << 20 // payload bytes per object (POST chunks are at most 1 MiB)
	MaxNameLen    = 256     // name of a signed object
)

// Sentinel errors of validation; replicas send them back as codes (see codes in message.go), so
// a writer can tell with errors.Is why a replica refused.
var (
	ErrWrongRing    = errors.New("past: key belongs to another ring")
	ErrTooLarge     = errors.New("past: object larger than 1 MiB")
	ErrHashMismatch = errors.New("past: content does not hash to its key")
	ErrBadSignature = errors.New("past: owner signature invalid")
	ErrNotOwner     = errors.New("past: key is not bound to the signing owner and name")
	ErrStale        = errors.New("past: sequence number not above the stored one")
	ErrExpired      = errors.New("past: lease already over")
	ErrBadType      = errors.New("past: unknown object type")
	ErrNotFound     = errors.New("past: object not found")
	ErrTimeout      = errors.New("past: no answer in time")
	ErrStore        = errors.New("past: replica's store failed")
	ErrQuorum       = errors.New("past: too few replicas acknowledged")
)

// Domain separation for hashes and signatures, so that no signature or key made for one purpose
// is valid for another.
const (
	ownerKeyDomain = "epost-past-owner-v1\x00"
	signDomain     = "epost-past-signed-v1\x00"
)

// NewContent makes a content-hash object: its key is the SHA-256 of payload in ring.
func NewContent(ring ids.RingID, payload []byte, lease time.Time) Object {
	return Object{Meta: store.Meta{Key: ids.Key{Ring: ring, ID: ids.Hash(payload)}, Type: uint8(TypeContent), Expiry: lease}, Payload: payload}
}

// SignedKey is the key of the signed object name owned by owner in ring:
// SHA-256(domain || owner public key || name). Nobody else can make an object valid there.
func SignedKey(ring ids.RingID, owner ed25519.PublicKey, name []byte) ids.Key {
	h := sha256.New()
	h.Write([]byte(ownerKeyDomain))
	h.Write(owner)
	h.Write(name)
	var id ids.ID
	h.Sum(id[:0])
	return ids.Key{Ring: ring, ID: id}
}

// Signed is the owner's part of a signed object, kept in the store's Aux.
type Signed struct {
	Owner  ed25519.PublicKey
	Name   []byte
	Expiry int64 // unix nanoseconds the owner signed; the lease may since have been extended
	Sig    []byte
}

func (s *Signed) encode() []byte {
	w := wire.Writer{}
	w.Bytes(s.Owner)
	w.Bytes(s.Name)
	w.I64(s.Expiry)
	w.Bytes(s.Sig)
	return w.B
}

// DecodeSigned reads the owner's part of a signed object from Aux.
func DecodeSigned(aux []byte) (Signed, error) {
	r := wire.NewReader(aux)
	s := Signed{
		Owner:  r.Bytes(ed25519.PublicKeySize, "owner key"),
		Name:   r.Bytes(MaxNameLen, "name"),
		Expiry: r.I64(),
		Sig:    r.Bytes(ed25519.SignatureSize, "signature"),
	}
	if err := r.Done(); err != nil {
		return Signed{}, err
	}
	if len(s.Owner) != ed25519.PublicKeySize || len(s.Sig) != ed25519.SignatureSize {
		return Signed{}, fmt.Errorf("%w: owner key or signature has the wrong length", ErrBadSignature)
	}
	return s, nil
}

// signedMessage is what the owner signs: (ring, key, seq, payload hash, expiry).
func signedMessage(k ids.Key, seq uint64, payload []byte, expiry int64) []byte {
	ph := sha256.Sum256(payload)
	b := make([]byte, 0, len(signDomain)+2*ids.Bytes+8+len(ph)+8)
	b = append(b, signDomain...)
	b = append(b, k.Ring[:]...)
	b = append(b, k.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, ph[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(expiry))
	return b
}

// NewSigned makes version seq of the signed object name owned by priv.
func NewSigned(priv ed25519.PrivateKey, ring ids.RingID, name []byte, seq uint64, payload []byte, lease time.Time) Object {
	pub := priv.Public().(ed25519.PublicKey)
	k := SignedKey(ring, pub, name)
	exp := lease.UnixNano()
	s := Signed{Owner: pub, Name: append([]byte(nil), name...), Expiry: exp}
	s.Sig = ed25519.Sign(priv, signedMessage(k, seq, payload, exp))
	return Object{Meta: store.Meta{Key: k, Type: uint8(TypeSigned), Seq: seq, Expiry: lease, Aux: s.encode()}, Payload: payload}
}

// Validate checks an object the way every replica does before storing it, whoever sent it
// (client or neighbour): right ring, size, lease not over, and the type's rule. The sequence
// number rule needs the stored version and is enforced atomically by the store (accept).
func Validate(obj *Object, ring ids.RingID, now time.Time) error {
	return validate(obj, ring, now, true)
}

// validate is Validate; without proofs it skips the checks only a stranger's object needs,
// the content hash and the owner's signature (see Node.checkOwn).
func validate(obj *Object, ring ids.RingID, now time.Time, proofs bool) error {
	if obj.Key.Ring != ring {
		return ErrWrongRing
	}
	if len(obj.Payload) > MaxObjectSize {
		return ErrTooLarge
	}
	if !obj.Expiry.IsZero() && !obj.Expiry.After(now) {
		return ErrExpired
	}
	switch Type(obj.Type) {
	case TypeContent:
		if obj.Seq != 0 || len(obj.Aux) != 0 {
			return fmt.Errorf("%w: content objects carry no sequence number or owner", ErrBadType)
		}
		if proofs && ids.Hash(obj.Payload) != obj.Key.ID {
			return ErrHashMismatch
		}
	case TypeSigned:
		s, err := DecodeSigned(obj.Aux)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		if SignedKey(ring, s.Owner, s.Name) != obj.Key {
			return ErrNotOwner
		}
		if proofs && !ed25519.Verify(s.Owner, signedMessage(obj.Key, obj.Seq, obj.Payload, s.Expiry), s.Sig) {
			return ErrBadSignature
		}
	default:
		return fmt.Errorf("%w %d", ErrBadType, obj.Type)
	}
	return nil
}
