package identity

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"epost/internal/ids"
)

// RecordVersion is the format version written first in every record body.
const RecordVersion = 1

// Signing contexts (see Sign). Each names exactly one kind of signed bytes.
const (
	ContextRecord  = "epost/v1/identity-record"  // the CA's signature over a record body
	ContextRequest = "epost/v1/identity-request" // the user's proof of possession
)

// maxBody bounds the encoded bodies of records and requests (the largest is about 400 bytes).
const maxBody = 1024

// Record binds an address in a ring to a user's public keys, for a validity window. The ring
// CA signs it (SignRecord) and the user's node publishes it at RecordKey(Ring, Address).
//
// Times have second precision: encoding truncates them to whole Unix seconds (UTC).
type Record struct {
	Ring      ids.RingID
	Address   string // normalized (NormalizeAddress)
	Keys      PublicKeys
	Serial    uint64 // unique per CA; what a revocation names
	NotBefore time.Time
	NotAfter  time.Time // inclusive: the record is valid during the second NotAfter
}

// Key is where r is published.
func (r *Record) Key() ids.Key { return RecordKey(r.Ring, r.Address) }

// SignedRecord is a record body in its canonical encoding plus the CA's signature over it.
// Verification checks the signature over exactly these bytes, so re-encoding can never change
// what was signed.
type SignedRecord struct {
	Body      []byte
	Signature []byte
}

// Encoding of a record body, version 1 (big-endian):
//
//	u8  version (1)
//	32  ring id
//	u8  n, n bytes: normalized address (n <= 254)
//	32  Ed25519 public key
//	u16 KEM id, u16 KDF id, u16 AEAD id (HPKE suite; only 0x0020, 0x0001, 0x0003)
//	32  X25519 public key
//	u64 serial
//	i64 not-before, i64 not-after (Unix seconds, not-before < not-after)
func (r *Record) encode() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	e := encoder{b: make([]byte, 0, 200)}
	e.u8(RecordVersion)
	e.raw(r.Ring[:])
	e.str8(r.Address)
	encodeKeys(&e, r.Keys)
	e.u64(r.Serial)
	e.u64(uint64(r.NotBefore.Unix()))
	e.u64(uint64(r.NotAfter.Unix()))
	return e.b, nil
}

func (r *Record) check() error {
	a, err := NormalizeAddress(r.Address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if a != r.Address {
		return fmt.Errorf("%w: address %q is not normalized (want %q)", ErrMalformed, r.Address, a)
	}
	if err := r.Keys.Check(); err != nil {
		return err
	}
	if r.NotBefore.Unix() >= r.NotAfter.Unix() {
		return fmt.Errorf("%w: not-before %v is not before not-after %v", ErrMalformed, r.NotBefore, r.NotAfter)
	}
	return nil
}

func encodeKeys(e *encoder, k PublicKeys) {
	e.raw(k.Signing)
	e.u16(SuiteKEM)
	e.u16(SuiteKDF)
	e.u16(SuiteAEAD)
	e.raw(k.Encryption)
}

func decodeKeys(d *decoder) PublicKeys {
	var k PublicKeys
	k.Signing = clone(d.take(SigningKeySize))
	kem, kdf, aead := d.u16(), d.u16(), d.u16()
	k.Encryption = clone(d.take(EncryptionKeySize))
	if d.err == nil && (kem != SuiteKEM || kdf != SuiteKDF || aead != SuiteAEAD) {
		d.err = fmt.Errorf("%w: unsupported HPKE suite %#04x/%#04x/%#04x", ErrMalformed, kem, kdf, aead)
	}
	return k
}

// DecodeRecord parses a record body (SignedRecord.Body) without checking any signature. Use
// it only to inspect; trust a record only through SignedRecord.Verify.
func DecodeRecord(body []byte) (*Record, error) {
	if len(body) > maxBody {
		return nil, fmt.Errorf("%w: record body of %d bytes exceeds %d", ErrMalformed, len(body), maxBody)
	}
	d := decoder{b: body}
	if v := d.u8(); d.err == nil && v != RecordVersion {
		return nil, fmt.Errorf("%w: record version %d, want %d", ErrMalformed, v, RecordVersion)
	}
	var r Record
	copy(r.Ring[:], d.take(ids.Bytes))
	r.Address = d.str8()
	r.Keys = decodeKeys(&d)
	r.Serial = d.u64()
	r.NotBefore = time.Unix(int64(d.u64()), 0).UTC()
	r.NotAfter = time.Unix(int64(d.u64()), 0).UTC()
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("identity: record: %w", err)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("identity: record: %w", err)
	}
	return &r, nil
}

// SignRecord is the CA's act: it encodes rec canonically and signs it with the ring CA key.
// It refuses a record that would not decode (unnormalized address, bad keys, empty window).
// Before calling it the CA must have verified the user's SignedRequest.
func SignRecord(rec Record, caKey ed25519.PrivateKey) (SignedRecord, error) {
	if len(caKey) != ed25519.PrivateKeySize {
		return SignedRecord{}, fmt.Errorf("identity: sign record: CA key is %d bytes, want %d", len(caKey), ed25519.PrivateKeySize)
	}
	body, err := rec.encode()
	if err != nil {
		return SignedRecord{}, fmt.Errorf("identity: sign record: %w", err)
	}
	sig, err := signWith(caKey, ContextRecord, body)
	if err != nil {
		return SignedRecord{}, err
	}
	return SignedRecord{Body: body, Signature: sig}, nil
}

// Verify checks, in this order, that the body decodes (ErrMalformed), that the CA signed it
// (ErrBadSignature), that now lies in [NotBefore, NotAfter] (ErrNotYetValid, ErrExpired) and
// that revoked, if not nil, does not name its serial (ErrRevoked). It returns the record.
//
// The caller must still check that the record is the one it asked for: that Ring and Address
// are those it looked up (a valid record stored at the wrong key is still a valid record).
func (s SignedRecord) Verify(caPub ed25519.PublicKey, now time.Time, revoked func(serial uint64) bool) (*Record, error) {
	r, err := s.verifySignature(caPub)
	if err != nil {
		return nil, err
	}
	if err := r.checkValid(now, revoked); err != nil {
		return nil, err
	}
	return r, nil
}

// verifySignature decodes the body and checks the CA's signature over it.
func (s SignedRecord) verifySignature(caPub ed25519.PublicKey) (*Record, error) {
	r, err := DecodeRecord(s.Body)
	if err != nil {
		return nil, err
	}
	if err := Verify(caPub, ContextRecord, s.Body, s.Signature); err != nil {
		return nil, fmt.Errorf("identity: record %s serial %d: %w", r.Address, r.Serial, err)
	}
	return r, nil
}

// checkValid checks r's validity window at now and its serial against revoked.
func (r *Record) checkValid(now time.Time, revoked func(serial uint64) bool) error {
	if now.Before(r.NotBefore) {
		return fmt.Errorf("%w: record %s serial %d is valid from %v", ErrNotYetValid, r.Address, r.Serial, r.NotBefore)
	}
	if now.Unix() > r.NotAfter.Unix() {
		return fmt.Errorf("%w: record %s serial %d expired at %v; ask the ring administrator to renew it", ErrExpired, r.Address, r.Serial, r.NotAfter)
	}
	if revoked != nil && revoked(r.Serial) {
		return fmt.Errorf("%w: record %s serial %d", ErrRevoked, r.Address, r.Serial)
	}
	return nil
}

// Encode is the wire form of a signed record: u32 body length, body, 64-byte signature.
func (s SignedRecord) Encode() []byte {
	e := encoder{b: make([]byte, 0, 4+len(s.Body)+len(s.Signature))}
	e.bytes32(s.Body)
	e.raw(s.Signature)
	return e.b
}

// DecodeSignedRecord parses Encode's output. It checks only the shape; call Verify.
func DecodeSignedRecord(b []byte) (SignedRecord, error) {
	d := decoder{b: b}
	body := d.bytes32(maxBody)
	sig := d.take(SignatureSize)
	if err := d.finish(); err != nil {
		return SignedRecord{}, fmt.Errorf("identity: signed record: %w", err)
	}
	return SignedRecord{Body: clone(body), Signature: clone(sig)}, nil
}
