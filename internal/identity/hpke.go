package identity

import (
	"crypto/hpke"
	"fmt"
)

// hpkeInfoLabel prefixes the caller's info in every HPKE context (RFC 9180 section 5.1), so
// ePOST ciphertexts never open in another protocol that shares the recipient key.
const hpkeInfoLabel = "epost/v1/hpke\x00"

// EncapsulatedKeySize is the length of the encapsulated key at the front of a bundle; a bundle
// is EncapsulatedKeySize + len(plaintext) + BundleTagSize bytes long.
const (
	EncapsulatedKeySize = 32
	BundleTagSize       = 16
)

// SealTo encrypts plaintext to the holder of recipient (a 32-byte X25519 public key from the
// recipient's verified Record) in HPKE base mode, single shot (RFC 9180 sections 5.1.1, 6.1).
// info names the purpose (an "epost/v1/..." label) and may carry public context such as the
// recipient's address; aad is authenticated but not encrypted. Both must be given again to Open.
//
// The bundle is enc || ciphertext. Base mode does not authenticate the sender: sign the
// plaintext (Sign) and put the recipient's address inside what is signed, so a signed message
// cannot be re-encrypted to someone else and look as if it had been sent to them.
//
// The ephemeral key comes from crypto/rand (crypto/hpke does not accept a reader); tests that
// need determinism use testing/cryptotest.SetGlobalRandom.
func SealTo(recipient []byte, info, plaintext, aad []byte) ([]byte, error) {
	if len(recipient) != EncryptionKeySize {
		return nil, fmt.Errorf("%w: recipient key is %d bytes, want %d", ErrMalformed, len(recipient), EncryptionKeySize)
	}
	pk, err := hpkeKEM().NewPublicKey(recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient key: %v", ErrMalformed, err)
	}
	enc, s, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), hpkeInfo(info))
	if err != nil {
		// Only a low-order recipient point makes the DH fail.
		return nil, fmt.Errorf("identity: hpke seal: %w", err)
	}
	ct, err := s.Seal(aad, plaintext)
	if err != nil {
		return nil, fmt.Errorf("identity: hpke seal: %w", err)
	}
	return append(enc, ct...), nil
}

// Open decrypts a bundle made by SealTo with the same info and aad. Every failure (short
// bundle, bad encapsulated key, wrong key, tampering) returns an error wrapping ErrDecrypt.
func (k *Keys) Open(bundle, info, aad []byte) ([]byte, error) {
	if len(bundle) < EncapsulatedKeySize+BundleTagSize {
		return nil, fmt.Errorf("%w: bundle of %d bytes is too short", ErrDecrypt, len(bundle))
	}
	sk, err := hpke.NewDHKEMPrivateKey(k.encryption)
	if err != nil {
		return nil, fmt.Errorf("identity: hpke open: %w", err)
	}
	r, err := hpke.NewRecipient(bundle[:EncapsulatedKeySize], sk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), hpkeInfo(info))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	pt, err := r.Open(aad, bundle[EncapsulatedKeySize:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return pt, nil
}

func hpkeInfo(info []byte) []byte {
	return append([]byte(hpkeInfoLabel), info...)
}
