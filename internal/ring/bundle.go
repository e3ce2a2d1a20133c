package ring

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"epost/internal/wire"
)

// Bundle is what a ring shows others (the global ring, senders' nodes of other rings): its
// CA certificate, its signed descriptor and its signed revocation list, exactly as its own
// nodes hold them. Nothing in it is secret, and VerifyBundle checks all of it against the CA
// key the ring id is derived from.
type Bundle struct {
	CA          []byte // DER
	Descriptor  []byte // signed envelope
	Revocations []byte // signed envelope
}

// MaxBundle bounds a bundle's wire form (a revocation list of a few thousand entries fits).
const MaxBundle = 64 << 10

const bundleVersion = 1

// LoadBundle reads the bundle of the ring whose ring or node directory dir is.
func LoadBundle(dir string) (Bundle, error) {
	ca, err := loadCert(filepath.Join(dir, FileCACert))
	if err != nil {
		return Bundle{}, fmt.Errorf("ring bundle: %w", err)
	}
	desc, err := readSmall(filepath.Join(dir, FileDescriptor))
	if err != nil {
		return Bundle{}, fmt.Errorf("ring bundle: %w", err)
	}
	rl, err := readSmall(filepath.Join(dir, FileRevocations))
	if err != nil {
		return Bundle{}, fmt.Errorf("ring bundle: %w", err)
	}
	return Bundle{CA: ca.Raw, Descriptor: desc, Revocations: rl}, nil
}

// Encode is the bundle's wire form.
func (b Bundle) Encode() []byte {
	var w wire.Writer
	w.U8(bundleVersion)
	w.Bytes(b.CA)
	w.Bytes(b.Descriptor)
	w.Bytes(b.Revocations)
	return w.B
}

// DecodeBundle parses Encode's output; it checks the shape only (VerifyBundle the rest).
func DecodeBundle(data []byte) (Bundle, error) {
	if len(data) > MaxBundle {
		return Bundle{}, fmt.Errorf("%w: ring bundle of %d bytes, at most %d", wire.ErrMalformed, len(data), MaxBundle)
	}
	r := wire.NewReader(data)
	if v := r.U8(); r.Err() == nil && v != bundleVersion {
		return Bundle{}, fmt.Errorf("%w: ring bundle version %d, this epost reads %d: upgrade epost", wire.ErrMalformed, v, bundleVersion)
	}
	b := Bundle{CA: r.Bytes(MaxBundle, "CA certificate"), Descriptor: r.Bytes(MaxBundle, "descriptor"), Revocations: r.Bytes(MaxBundle, "revocations")}
	if err := r.Done(); err != nil {
		return Bundle{}, fmt.Errorf("ring bundle: %w", err)
	}
	return b, nil
}

// Foreign is another ring, as its verified bundle shows it.
type Foreign struct {
	Descriptor *Descriptor
	Trust      *Trust // verifies its nodes' certificates and its user records' revocations
}

// VerifyBundle checks a bundle at now: the CA certificate is a self-signed Ed25519 CA,
// valid now, naming the ring its key's id is (version 2 descriptors only: a version 1 ring
// cannot federate); the descriptor carries the CA's signature and that id; the revocation
// list carries the CA's signature.
func VerifyBundle(b Bundle, now time.Time) (*Foreign, error) {
	ca, err := x509.ParseCertificate(b.CA)
	if err != nil {
		return nil, fmt.Errorf("ring bundle: CA certificate: %w", err)
	}
	pub, err := caPublicKey(ca)
	if err != nil {
		return nil, fmt.Errorf("ring bundle: %w", err)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("ring bundle: CA certificate is not self-signed: %w", err)
	}
	if now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
		return nil, fmt.Errorf("%w: ring bundle: CA certificate %q valid %v to %v", ErrExpired, ca.Subject.CommonName, ca.NotBefore, ca.NotAfter)
	}
	d, err := VerifyDescriptor(pub, b.Descriptor)
	if err != nil {
		return nil, fmt.Errorf("ring bundle: %w", err)
	}
	if !d.Federable() {
		return nil, fmt.Errorf("ring bundle: ring %q has a version %d descriptor (its id is its name's, which anyone could claim): it cannot federate", d.Name, d.Version)
	}
	t, err := NewTrust(ca, d, b.Revocations)
	if err != nil {
		return nil, fmt.Errorf("ring bundle: %w", err)
	}
	return &Foreign{Descriptor: d, Trust: t}, nil
}
