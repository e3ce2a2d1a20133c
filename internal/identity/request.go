package identity

import (
	"fmt"
	"time"

	"epost/internal/ids"
)

// RequestVersion is the format version written first in every request body.
const RequestVersion = 1

// Request is what a user's node asks the ring CA to certify: an address and the public keys
// the node just made. The CA never sees a private key; the proof of possession (a signature
// by the new signing key over the request) shows the requester holds the signing key, so no
// one can get someone else's key certified under their own address.
//
// There is no proof of possession for the X25519 key: a user who registers a key they do not
// hold only makes their own mail unreadable to themselves.
type Request struct {
	Ring    ids.RingID
	Address string // normalized
	Keys    PublicKeys
	Time    time.Time // when the request was made (Unix seconds); the CA may refuse stale ones
}

// SignedRequest is a request body in canonical encoding plus the proof of possession.
type SignedRequest struct {
	Body  []byte
	Proof []byte // Sign(keys, ContextRequest, Body)
}

// Encoding of a request body, version 1 (big-endian):
//
//	u8  version (1)
//	32  ring id
//	u8  n, n bytes: normalized address
//	32  Ed25519 public key
//	u16 KEM id, u16 KDF id, u16 AEAD id
//	32  X25519 public key
//	i64 time (Unix seconds)
func (r *Request) encode() []byte {
	e := encoder{b: make([]byte, 0, 200)}
	e.u8(RequestVersion)
	e.raw(r.Ring[:])
	e.str8(r.Address)
	encodeKeys(&e, r.Keys)
	e.u64(uint64(r.Time.Unix()))
	return e.b
}

// NewRequest makes the signing request for keys and address in ring, signed by the new key.
func NewRequest(k *Keys, ring ids.RingID, address string, now time.Time) (SignedRequest, error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return SignedRequest{}, err
	}
	r := Request{Ring: ring, Address: a, Keys: k.Public(), Time: now}
	body := r.encode()
	proof, err := Sign(k, ContextRequest, body)
	if err != nil {
		return SignedRequest{}, err
	}
	return SignedRequest{Body: body, Proof: proof}, nil
}

// Verify is the CA's check: the body decodes and the proof is a valid signature over it by the
// signing key inside it. Policy (is this user allowed this address? is the request fresh?) is
// the CA's business after this.
func (s SignedRequest) Verify() (*Request, error) {
	if len(s.Body) > maxBody {
		return nil, fmt.Errorf("%w: request body of %d bytes exceeds %d", ErrMalformed, len(s.Body), maxBody)
	}
	d := decoder{b: s.Body}
	if v := d.u8(); d.err == nil && v != RequestVersion {
		return nil, fmt.Errorf("%w: request version %d, want %d", ErrMalformed, v, RequestVersion)
	}
	var r Request
	copy(r.Ring[:], d.take(ids.Bytes))
	r.Address = d.str8()
	r.Keys = decodeKeys(&d)
	r.Time = time.Unix(int64(d.u64()), 0).UTC()
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("identity: request: %w", err)
	}
	if a, err := NormalizeAddress(r.Address); err != nil || a != r.Address {
		return nil, fmt.Errorf("%w: request address %q is not a normalized address", ErrMalformed, r.Address)
	}
	if err := r.Keys.Check(); err != nil {
		return nil, fmt.Errorf("identity: request: %w", err)
	}
	if err := Verify(r.Keys.Signing, ContextRequest, s.Body, s.Proof); err != nil {
		return nil, fmt.Errorf("identity: request for %s: proof of possession: %w", r.Address, err)
	}
	return &r, nil
}

// Record turns a verified request into the record the CA signs.
func (r *Request) Record(serial uint64, notBefore, notAfter time.Time) Record {
	return Record{
		Ring:      r.Ring,
		Address:   r.Address,
		Keys:      PublicKeys{Signing: clone(r.Keys.Signing), Encryption: clone(r.Keys.Encryption)},
		Serial:    serial,
		NotBefore: notBefore,
		NotAfter:  notAfter,
	}
}

// Encode is the wire form: u32 body length, body, 64-byte proof.
func (s SignedRequest) Encode() []byte {
	e := encoder{b: make([]byte, 0, 4+len(s.Body)+len(s.Proof))}
	e.bytes32(s.Body)
	e.raw(s.Proof)
	return e.b
}

// DecodeSignedRequest parses Encode's output. It checks only the shape; call Verify.
func DecodeSignedRequest(b []byte) (SignedRequest, error) {
	d := decoder{b: b}
	body := d.bytes32(maxBody)
	proof := d.take(SignatureSize)
	if err := d.finish(); err != nil {
		return SignedRequest{}, fmt.Errorf("identity: signed request: %w", err)
	}
	return SignedRequest{Body: clone(body), Proof: clone(proof)}, nil
}
