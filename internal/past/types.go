package past

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/store"
	"epost/internal/wire"
)

// Object types POST adds (see object.go for content and signed objects). Each has its own
// replica-side policy, enforced in ValidateWith at every replica on every write.
const (
	// TypeRecord: a user's CA-signed identity record (identity.SignedRecord, encoded), stored
	// at identity.RecordKey(ring, address). Replicas check the CA signature, the validity
	// window, that the key is the record's key and (on store) that its serial is not revoked;
	// Seq is the record's serial, so a re-issued record replaces an older one and never the
	// other way round.
	TypeRecord Type = 3
	// TypePending: a sealed POST notification waiting for its recipient. The key binds the
	// recipient and the notification id (PendingKey); Aux carries them with the payload's
	// hash, so any replica can check integrity without knowing the sender. Immutable: a
	// second write of the same key must carry the same bytes, and only extends the lease.
	TypePending Type = 4
)

// Limits of pending objects: a sealed notification is small (part references, a record,
// a signature), and an empty one is forged.
const (
	MinPendingSize = identity.EncapsulatedKeySize + identity.BundleTagSize + 64
	MaxPendingSize = 512 << 10
	PendingIDSize  = 16
)

// More sentinel errors.
var (
	ErrConflict  = errors.New("past: a different object already has this immutable key")
	ErrForbidden = errors.New("past: delete not authorised by the object's owner")
	ErrRevoked   = errors.New("past: record revoked by the ring CA")
	ErrNoCA      = errors.New("past: replica has no ring CA key to check records with")
	// ErrNotResponsible: a store sent to a cached replica set reached a node that is no
	// longer among the key's k closest; the client locates the key again.
	ErrNotResponsible = errors.New("past: not a replica of this key")
)

const pendingKeyDomain = "epost-past-pending-v1\x00"

// PendingKey is where the pending notification id for recipient lives:
// SHA-256(domain || RecordKey(ring, recipient).ID || id).
func PendingKey(ring ids.RingID, recipient string, id [PendingIDSize]byte) ids.Key {
	rk := identity.RecordKey(ring, recipient)
	h := sha256.New()
	h.Write([]byte(pendingKeyDomain))
	h.Write(rk.ID[:])
	h.Write(id[:])
	var out ids.ID
	h.Sum(out[:0])
	return ids.Key{Ring: ring, ID: out}
}

// Pending is the public part of a pending object, kept in Aux. Recipient and RecipientKey
// let holders find the recipient's presence topic and check that "online" announcements and
// drop requests come from the recipient; they are metadata the k holders see (ePOST's holders
// knew the recipient too, to push to it).
type Pending struct {
	Recipient    string // normalized address
	ID           [PendingIDSize]byte
	Hash         [32]byte          // SHA-256 of the payload
	RecipientKey ed25519.PublicKey // the recipient's signing key, from its certified record
}

const pendingAuxVersion = 1

// Encode is the Aux form of p.
func (p *Pending) Encode() []byte {
	w := wire.Writer{}
	w.U8(pendingAuxVersion)
	w.String(p.Recipient)
	w.B = append(w.B, p.ID[:]...)
	w.B = append(w.B, p.Hash[:]...)
	w.Bytes(p.RecipientKey)
	return w.B
}

// DecodePending reads a pending object's Aux. It never panics.
func DecodePending(aux []byte) (Pending, error) {
	r := wire.NewReader(aux)
	var p Pending
	if v := r.U8(); r.Err() == nil && v != pendingAuxVersion {
		return Pending{}, fmt.Errorf("%w: pending aux version %d", wire.ErrMalformed, v)
	}
	p.Recipient = r.String(254, "recipient")
	var idAndHash [PendingIDSize + 32]byte
	for i := range idAndHash {
		idAndHash[i] = r.U8()
	}
	copy(p.ID[:], idAndHash[:PendingIDSize])
	copy(p.Hash[:], idAndHash[PendingIDSize:])
	p.RecipientKey = r.Bytes(ed25519.PublicKeySize, "recipient key")
	if err := r.Done(); err != nil {
		return Pending{}, err
	}
	if len(p.RecipientKey) != ed25519.PublicKeySize {
		return Pending{}, fmt.Errorf("%w: recipient key of %d bytes", wire.ErrMalformed, len(p.RecipientKey))
	}
	return p, nil
}

// NewPending makes the pending object for sealed, addressed to recipient (normalized) whose
// certified signing key is rkey.
func NewPending(ring ids.RingID, recipient string, rkey ed25519.PublicKey, id [PendingIDSize]byte, sealed []byte, lease time.Time) Object {
	p := Pending{Recipient: recipient, ID: id, Hash: sha256.Sum256(sealed), RecipientKey: rkey}
	return Object{Meta: store.Meta{Key: PendingKey(ring, recipient, id), Type: uint8(TypePending), Expiry: lease, Aux: p.Encode()}, Payload: sealed}
}

// NewRecord makes the object that publishes a signed record. The record is not checked here;
// replicas check it.
func NewRecord(sr identity.SignedRecord, lease time.Time) (Object, error) {
	rec, err := identity.DecodeRecord(sr.Body)
	if err != nil {
		return Object{}, err
	}
	return Object{Meta: store.Meta{Key: rec.Key(), Type: uint8(TypeRecord), Seq: rec.Serial, Expiry: lease}, Payload: sr.Encode()}, nil
}

// Policy is what a replica needs beyond the ring id to judge POST's object types.
type Policy struct {
	CA ed25519.PublicKey // ring CA key: records must carry its signature
	// Revoked, if set, names revoked record serials (ring.Trust.IsRecordRevoked). It is
	// consulted when a replica stores a record, not when a reader validates one, so that a
	// reader can tell "revoked" from "unknown".
	Revoked func(serial uint64) bool
}

// ValidateWith is Validate plus the policies of records and pending objects.
func ValidateWith(obj *Object, ring ids.RingID, now time.Time, pol *Policy) error {
	switch Type(obj.Type) {
	case TypeContent, TypeSigned:
		return Validate(obj, ring, now)
	}
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
	case TypeRecord:
		if pol == nil || len(pol.CA) != ed25519.PublicKeySize {
			return ErrNoCA
		}
		if len(obj.Aux) != 0 {
			return fmt.Errorf("%w: records carry no aux", ErrBadType)
		}
		sr, err := identity.DecodeSignedRecord(obj.Payload)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		rec, err := sr.Verify(pol.CA, now, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		if rec.Ring != ring || rec.Key() != obj.Key {
			return ErrNotOwner
		}
		if rec.Serial != obj.Seq {
			return fmt.Errorf("%w: seq %d is not the record's serial %d", ErrNotOwner, obj.Seq, rec.Serial)
		}
	case TypePending:
		if obj.Seq != 0 {
			return fmt.Errorf("%w: pending objects carry no sequence number", ErrBadType)
		}
		if len(obj.Payload) < MinPendingSize || len(obj.Payload) > MaxPendingSize {
			return fmt.Errorf("%w: pending object of %d bytes, want %d..%d", ErrTooLarge, len(obj.Payload), MinPendingSize, MaxPendingSize)
		}
		p, err := DecodePending(obj.Aux)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotOwner, err)
		}
		if PendingKey(ring, p.Recipient, p.ID) != obj.Key {
			return ErrNotOwner
		}
		if sha256.Sum256(obj.Payload) != p.Hash {
			return ErrHashMismatch
		}
	default:
		return fmt.Errorf("%w %d", ErrBadType, obj.Type)
	}
	return nil
}

// Deletion of pending objects: the recipient, having filed the notification, signs the key
// with the signing key named in the object's Aux; holders check that before moving the object
// to the trash. Nobody else can make a holder drop a pending notification.
const dropContext = "epost/v1/past-pending-drop"

// DropProof signs the drop of the pending object at key with the recipient's keys.
func DropProof(k *identity.Keys, key ids.Key) ([]byte, error) {
	return identity.Sign(k, dropContext, dropMessage(key))
}

func dropMessage(key ids.Key) []byte {
	b := make([]byte, 0, 2*ids.Bytes)
	b = append(b, key.Ring[:]...)
	return append(b, key.ID[:]...)
}

// checkDrop reports whether proof authorises deleting meta.
func checkDrop(meta *store.Meta, proof []byte) error {
	if Type(meta.Type) != TypePending {
		return fmt.Errorf("%w: only pending objects can be deleted", ErrForbidden)
	}
	p, err := DecodePending(meta.Aux)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	if err := identity.Verify(p.RecipientKey, dropContext, dropMessage(meta.Key), proof); err != nil {
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return nil
}
