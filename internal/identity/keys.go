package identity

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	cryptorand "crypto/rand"
	"fmt"
	"io"
)

// HPKE ciphersuite of every ePOST encryption key (RFC 9180 section 7): DHKEM(X25519,
// HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305. ChaCha20Poly1305 is constant time without AES
// hardware, and HPKE messages here are small (notifications), so its speed never matters.
// The ids appear in every Record, so that a later suite can be introduced without ambiguity.
const (
	SuiteKEM  uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	SuiteKDF  uint16 = 0x0001 // HKDF-SHA256
	SuiteAEAD uint16 = 0x0003 // ChaCha20Poly1305
)

// Key sizes.
const (
	SigningKeySize    = ed25519.PublicKeySize // 32
	EncryptionKeySize = 32                    // X25519 public key
	SignatureSize     = ed25519.SignatureSize // 64
	privateKeysSize   = ed25519.SeedSize + 32 // what SealPrivate encrypts
)

// Keys is a user's private key pair. It is made on the user's own node and never leaves it
// except sealed under the user's password (SealPrivate).
type Keys struct {
	signing    ed25519.PrivateKey
	encryption *ecdh.PrivateKey
}

// PublicKeys is the public half of Keys, as published in the user's Record.
type PublicKeys struct {
	Signing    ed25519.PublicKey // 32 bytes
	Encryption []byte            // 32 bytes, X25519, used with the HPKE suite above
}

// NewKeys makes a fresh key pair from 64 bytes of rand (crypto/rand if nil). Both keys are
// derived from those bytes alone, so a seeded reader gives the same keys every time (tests,
// simulator); production passes nil or crypto/rand.Reader.
func NewKeys(rand io.Reader) (*Keys, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	var seed [privateKeysSize]byte
	defer clear(seed[:])
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, fmt.Errorf("identity: new keys: %w", err)
	}
	return keysFromSeed(seed[:])
}

// keysFromSeed builds Keys from the Ed25519 seed followed by the X25519 scalar.
func keysFromSeed(seed []byte) (*Keys, error) {
	if len(seed) != privateKeysSize {
		return nil, fmt.Errorf("%w: private keys are %d bytes, want %d", ErrMalformed, len(seed), privateKeysSize)
	}
	enc, err := ecdh.X25519().NewPrivateKey(seed[ed25519.SeedSize:])
	if err != nil {
		return nil, fmt.Errorf("%w: x25519 private key: %v", ErrMalformed, err)
	}
	return &Keys{signing: ed25519.NewKeyFromSeed(seed[:ed25519.SeedSize]), encryption: enc}, nil
}

// seed returns the 64 secret bytes keysFromSeed reads; the caller must clear them.
func (k *Keys) seed() []byte {
	out := make([]byte, 0, privateKeysSize)
	out = append(out, k.signing.Seed()...)
	return append(out, k.encryption.Bytes()...)
}

// Public returns the public keys (fresh copies).
func (k *Keys) Public() PublicKeys {
	return PublicKeys{
		Signing:    clone(k.signing.Public().(ed25519.PublicKey)),
		Encryption: k.encryption.PublicKey().Bytes(),
	}
}

// SigningKey exposes the Ed25519 private key, for callers that need a crypto.Signer. Prefer
// Sign, which adds domain separation.
func (k *Keys) SigningKey() ed25519.PrivateKey { return k.signing }

// Equal reports whether k and o are the same private keys (constant time).
func (k *Keys) Equal(o *Keys) bool {
	return k.signing.Equal(o.signing) && k.encryption.Equal(o.encryption)
}

// Equal reports whether p and o are the same public keys.
func (p PublicKeys) Equal(o PublicKeys) bool {
	return bytes.Equal(p.Signing, o.Signing) && bytes.Equal(p.Encryption, o.Encryption)
}

// Check reports whether p has well-formed keys: the right sizes and an X25519 key that is not
// of low order.
// (An Ed25519 key that is not a curve point is caught by the proof of possession, which can
// never verify under it.)
func (p PublicKeys) Check() error {
	if len(p.Signing) != SigningKeySize {
		return fmt.Errorf("%w: signing key is %d bytes, want %d", ErrMalformed, len(p.Signing), SigningKeySize)
	}
	if len(p.Encryption) != EncryptionKeySize {
		return fmt.Errorf("%w: encryption key is %d bytes, want %d", ErrMalformed, len(p.Encryption), EncryptionKeySize)
	}
	pub, err := ecdh.X25519().NewPublicKey(p.Encryption)
	if err != nil {
		return fmt.Errorf("%w: encryption key: %v", ErrMalformed, err)
	}
	// A low-order point makes every Diffie-Hellman with it zero (RFC 7748 section 6.1), so no
	// one could ever encrypt to it; a CA must not certify one.
	if _, err := lowOrderProbe.ECDH(pub); err != nil {
		return fmt.Errorf("%w: encryption key is a low-order point", ErrMalformed)
	}
	return nil
}

// signLabel prefixes every message signed by Sign; with the length-prefixed context after it,
// no two (context, message) pairs produce the same signed bytes.
const signLabel = "epost/v1/sig\x00"

// MaxContext bounds the context string of Sign and Verify.
const MaxContext = 255

func signedBytes(context string, msg []byte) ([]byte, error) {
	if len(context) == 0 || len(context) > MaxContext {
		return nil, fmt.Errorf("identity: signing context length %d not in 1..%d", len(context), MaxContext)
	}
	b := make([]byte, 0, len(signLabel)+1+len(context)+len(msg))
	b = append(b, signLabel...)
	b = append(b, byte(len(context)))
	b = append(b, context...)
	return append(b, msg...), nil
}

// Sign signs msg for the purpose named by context, which should be an "epost/v1/..." label
// naming what msg is (for example "epost/v1/notification"). The signature is Ed25519 (RFC 8032)
// over signLabel || u8(len(context)) || context || msg, so a signature made for one context
// never verifies under another.
func Sign(k *Keys, context string, msg []byte) ([]byte, error) {
	return signWith(k.signing, context, msg)
}

func signWith(priv ed25519.PrivateKey, context string, msg []byte) ([]byte, error) {
	b, err := signedBytes(context, msg)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(priv, b), nil
}

// Verify checks a signature made by Sign. It returns an error wrapping ErrBadSignature, or
// ErrMalformed for a public key or signature of the wrong size (never a panic).
func Verify(pub ed25519.PublicKey, context string, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(pub), ed25519.PublicKeySize)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadSignature, len(sig), ed25519.SignatureSize)
	}
	b, err := signedBytes(context, msg)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, b, sig) {
		return fmt.Errorf("%w: context %q", ErrBadSignature, context)
	}
	return nil
}

// lowOrderProbe is a fixed, public X25519 scalar used only to detect low-order points.
var lowOrderProbe = func() *ecdh.PrivateKey {
	k, err := ecdh.X25519().NewPrivateKey([]byte("epost/v1/x25519-low-order-probe!"))
	if err != nil {
		panic(err) // unreachable: every 32-byte string is an X25519 scalar
	}
	return k
}()

func hpkeKEM() hpke.KEM { return hpke.DHKEM(ecdh.X25519()) }
