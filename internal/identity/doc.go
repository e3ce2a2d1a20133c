// Package identity is a ring user's cryptographic identity: an Ed25519 signing key and an
// X25519 HPKE encryption key (RFC 9180), the CA-signed Record that binds both to an address,
// the signing request a user's node sends to the ring CA, and the password-sealed blob that
// keeps the private keys at rest.
//
// Weakness 6 of the original ePOST (the CA generated users' keys, and certificates never
// expired) is fixed here: keys are made on the user's node by NewKeys, the CA only sees a
// Request carrying the public keys and a proof of possession, and every Record has a serial,
// a validity window and a revocation hook.
//
// Every signature, KDF and HPKE context carries an "epost/v1/..." label so that a signature or
// ciphertext made for one purpose is never valid for another.
//
// The package is pure: it never touches the network or the disk and never reads the clock;
// randomness and time are passed in. Decoders never panic on malformed bytes; they return an
// error wrapping ErrMalformed.
package identity

import "errors"

// Sentinel errors. Callers test them with errors.Is; returned errors wrap them with context.
var (
	// ErrMalformed: bytes or values that do not have the documented shape.
	ErrMalformed = errors.New("identity: malformed")
	// ErrBadSignature: a signature (CA signature, proof of possession, user signature) is invalid.
	ErrBadSignature = errors.New("identity: bad signature")
	// ErrExpired: a record is past its NotAfter time.
	ErrExpired = errors.New("identity: record expired")
	// ErrNotYetValid: a record is used before its NotBefore time.
	ErrNotYetValid = errors.New("identity: record not yet valid")
	// ErrRevoked: the record's serial is on the ring's revocation list.
	ErrRevoked = errors.New("identity: record revoked")
	// ErrWrongPassword: a sealed private-key blob does not open with the given password. A
	// blob that was tampered with gives the same error, by design (AEAD cannot tell them apart).
	ErrWrongPassword = errors.New("identity: wrong password")
	// ErrBadAddress: an address is not a valid, plain email address with a domain.
	ErrBadAddress = errors.New("identity: bad address")
	// ErrDecrypt: an HPKE bundle does not open (wrong key, info, aad, or tampered bytes).
	ErrDecrypt = errors.New("identity: cannot decrypt")
)
