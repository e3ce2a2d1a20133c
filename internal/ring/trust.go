package ring

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"epost/internal/ids"
)

// Reasons a peer certificate is refused. VerifyPeer wraps them with the details, so that
// errors.Is selects the reason and the message is a complete log line.
var (
	ErrBadCert   = errors.New("ring: bad node certificate")
	ErrUnknownCA = errors.New("ring: certificate not signed by this ring's CA")
	ErrWrongRing = errors.New("ring: certificate belongs to another ring")
	ErrExpired   = errors.New("ring: certificate outside its validity period") // expired or not yet valid
	ErrRevoked   = errors.New("ring: certificate revoked")
)

// Trust is what a node believes about its ring: the CA, the descriptor and the newest
// revocation list it has seen. It is safe for concurrent use: TLS handshakes call VerifyPeer
// from many goroutines while UpdateRevocations installs a newer list.
type Trust struct {
	ca         *x509.Certificate
	caPub      ed25519.PublicKey
	descriptor *Descriptor

	mu             sync.RWMutex
	revocations    *RevocationList
	revocationsRaw []byte // signed form of revocations, to pass on to other nodes
}

// NewTrust checks that the CA certificate is the one of the descriptor's ring and builds the
// verifier. The descriptor must already be verified against ca; the signed revocation list
// (nil for none) is verified here.
func NewTrust(ca *x509.Certificate, d *Descriptor, revocations []byte) (*Trust, error) {
	pub, err := caPublicKey(ca)
	if err != nil {
		return nil, err
	}
	found := false
	for _, u := range ca.URIs {
		if u.String() == ringURI(d.RingID).String() {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: CA certificate %q is not the CA of ring %q", ErrWrongRing, ca.Subject.CommonName, d.Name)
	}
	t := &Trust{ca: ca, caPub: pub, descriptor: d, revocations: &RevocationList{Ring: d.RingID}}
	if revocations != nil {
		if _, err := t.UpdateRevocations(revocations); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// CA returns the ring CA certificate.
func (t *Trust) CA() *x509.Certificate { return t.ca }

// Descriptor returns the verified ring descriptor.
func (t *Trust) Descriptor() *Descriptor { return t.descriptor }

// RingID returns the ring's id.
func (t *Trust) RingID() ids.RingID { return t.descriptor.RingID }

// Revocations returns the revocation list in use. The caller must not modify it.
func (t *Trust) Revocations() *RevocationList {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.revocations
}

// SignedRevocations returns the signed form of the revocation list in use (nil if none), as
// it is stored on disk and passed between nodes.
func (t *Trust) SignedRevocations() []byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.revocationsRaw
}

// UpdateRevocations verifies a signed revocation list (from a peer or the CA) and installs it if
// it is newer than the current one; it reports whether it did. An older or equal version is
// ignored, not an error: lists are gossiped and arrive out of order.
func (t *Trust) UpdateRevocations(data []byte) (bool, error) {
	l, err := VerifyRevocations(t.caPub, t.descriptor.RingID, data)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.Version <= t.revocations.Version {
		return false, nil
	}
	t.revocations, t.revocationsRaw = l, data
	return true, nil
}

// VerifyPeer decides whether cert is a valid node certificate of this ring at time now, and
// returns the node id it proves. It checks that the certificate names an epost node of this
// ring, is signed by this ring's CA, binds the node id to the hash of its key, that now is inside
// its validity window (and the CA's), and that neither its serial nor its node id is revoked.
func (t *Trust) VerifyPeer(cert *x509.Certificate, now time.Time) (ids.ID, error) {
	node, err := t.verifyIdentity(cert)
	if err != nil {
		return ids.Zero, err
	}
	if err := t.checkTime(cert, node, now); err != nil {
		return ids.Zero, err
	}
	if e, revoked := t.Revocations().IsRevoked(cert.SerialNumber, node); revoked {
		why := ""
		if e.Reason != "" {
			why = " (" + e.Reason + ")"
		}
		return ids.Zero, fmt.Errorf("%w: node %s, serial %s, revoked %s%s", ErrRevoked, node.Short(),
			cert.SerialNumber, e.Revoked.UTC().Format(time.RFC3339), why)
	}
	return node, nil
}

// verifyIdentity checks everything about cert that does not change with time or revocations:
// that the CA vouches for this node id and key in this ring.
func (t *Trust) verifyIdentity(cert *x509.Certificate) (ids.ID, error) {
	if cert == nil {
		return ids.Zero, fmt.Errorf("%w: no certificate", ErrBadCert)
	}
	ring, node, err := NodeIdentity(cert)
	if err != nil {
		return ids.Zero, err
	}
	// The ring claim is checked before the signature only to make the log line useful: a node
	// of another ring is reported as such rather than as "unknown CA". Either way it is refused.
	if ring != t.descriptor.RingID {
		return ids.Zero, fmt.Errorf("%w: node %s claims ring %s, this is ring %s (%q)",
			ErrWrongRing, node.Short(), ring.Short(), t.descriptor.RingID.Short(), t.descriptor.Name)
	}
	if err := cert.CheckSignatureFrom(t.ca); err != nil {
		return ids.Zero, fmt.Errorf("%w: node %s, issuer %q: %v", ErrUnknownCA, node.Short(), cert.Issuer.CommonName, err)
	}
	if cert.IsCA {
		return ids.Zero, fmt.Errorf("%w: node %s: certificate is a CA certificate", ErrBadCert, node.Short())
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return ids.Zero, fmt.Errorf("%w: node %s: key is %T, want Ed25519", ErrBadCert, node.Short(), cert.PublicKey)
	}
	if got := NodeIDFromPublicKey(pub); got != node {
		return ids.Zero, fmt.Errorf("%w: certificate names node %s but its key hashes to %s", ErrBadCert, node.Short(), got.Short())
	}
	return node, nil
}

func (t *Trust) checkTime(cert *x509.Certificate, node ids.ID, now time.Time) error {
	const f = time.RFC3339
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("%w: node %s: not valid before %s (now %s; check the clocks)",
			ErrExpired, node.Short(), cert.NotBefore.UTC().Format(f), now.UTC().Format(f))
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%w: node %s: expired %s (now %s; re-enroll the node)",
			ErrExpired, node.Short(), cert.NotAfter.UTC().Format(f), now.UTC().Format(f))
	}
	if now.Before(t.ca.NotBefore) || now.After(t.ca.NotAfter) {
		return fmt.Errorf("%w: ring CA valid %s to %s (now %s)", ErrExpired,
			t.ca.NotBefore.UTC().Format(f), t.ca.NotAfter.UTC().Format(f), now.UTC().Format(f))
	}
	return nil
}

// Verifier adapts VerifyPeer to a transport that wants a one-argument check, reading the time
// from now at every call.
func (t *Trust) Verifier(now func() time.Time) func(*x509.Certificate) (ids.ID, error) {
	return func(c *x509.Certificate) (ids.ID, error) { return t.VerifyPeer(c, now()) }
}

// IsRecordRevoked reports whether a CA-issued record with this serial (a user record, say) is on
// the revocation list; its signature fits the revocation hook of such records' Verify methods.
func (t *Trust) IsRecordRevoked(serial uint64) bool {
	_, revoked := t.Revocations().IsRevoked(new(big.Int).SetUint64(serial), ids.Zero)
	return revoked
}

// PeerID verifies the peer certificate of an established TLS connection and returns the peer's
// node id. The transport calls it after the handshake (which already ran VerifyPeer) to learn
// who it is talking to, and compares the result with the node id it meant to dial.
func (t *Trust) PeerID(cs tls.ConnectionState, now time.Time) (ids.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ids.Zero, fmt.Errorf("%w: peer sent no certificate", ErrBadCert)
	}
	return t.VerifyPeer(cs.PeerCertificates[0], now)
}

// TLSConfig returns the configuration for both ends of a node-to-node connection: TLS 1.3 only,
// the node presents creds, and each side requires and checks the other's certificate with
// VerifyPeer at now(). Go's own chain verification is switched off (InsecureSkipVerify,
// RequireAnyClientCert) because nodes are named by node id, not by DNS name, and because
// VerifyPeer is stricter than it; VerifyConnection runs on every handshake, resumed ones too.
func (t *Trust) TLSConfig(creds tls.Certificate, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true,
		Time:               now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := t.PeerID(cs, now())
			return err
		},
	}
	if creds.Certificate != nil {
		cfg.Certificates = []tls.Certificate{creds}
	}
	return cfg
}
