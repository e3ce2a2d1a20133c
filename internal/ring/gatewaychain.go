package ring

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"

	"epost/internal/ids"
)

// GatewayPeer is what a gateway of the global ring proved in its TLS handshake.
type GatewayPeer struct {
	Ring ids.RingID // its ring: the id of the CA key that signed its certificate
	Node ids.ID
	CA   *x509.Certificate
	Leaf *x509.Certificate
}

// VerifyGatewayChain checks the chain a member of the global ring presents, [node certificate,
// its ring's CA certificate], at now: the CA certificate is a self-signed Ed25519 CA naming
// the ring its key's id is (ids.RingIDOfCA), the node certificate is that CA's, for that ring,
// binds its node id to its key, is valid now and carries the gateway role. It proves
// membership of *some* ring only: whether that ring is admitted (its domains confirmed) and
// whether the certificate is revoked are for the caller, with the ring's bundle.
func VerifyGatewayChain(chain []*x509.Certificate, now time.Time) (GatewayPeer, error) {
	if len(chain) != 2 {
		return GatewayPeer{}, fmt.Errorf("%w: the global ring wants [node certificate, ring CA certificate], got %d certificates", ErrBadCert, len(chain))
	}
	leaf, ca := chain[0], chain[1]
	pub, err := caPublicKey(ca)
	if err != nil {
		return GatewayPeer{}, fmt.Errorf("%w: %v", ErrBadCert, err)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		return GatewayPeer{}, fmt.Errorf("%w: ring CA certificate is not self-signed: %v", ErrBadCert, err)
	}
	id := ids.RingIDOfCA(pub)
	named := false
	for _, u := range ca.URIs {
		named = named || u.String() == ringURI(id).String()
	}
	if !named {
		return GatewayPeer{}, fmt.Errorf("%w: CA certificate %q does not name ring %s, its key's id (a ring made before federation cannot join the global ring)", ErrWrongRing, ca.Subject.CommonName, id.Short())
	}
	t := &Trust{ca: ca, caPub: pub, descriptor: &Descriptor{RingID: id, Name: ca.Subject.CommonName}}
	node, err := t.verifyIdentity(leaf)
	if err != nil {
		return GatewayPeer{}, err
	}
	if err := t.checkTime(leaf, node, now); err != nil {
		return GatewayPeer{}, err
	}
	if !HasRole(leaf, RoleGateway) {
		return GatewayPeer{}, fmt.Errorf("%w: node %s of ring %s is not a gateway (no gateway role in its certificate)", ErrBadCert, node.Short(), id.Short())
	}
	return GatewayPeer{Ring: id, Node: node, CA: ca, Leaf: leaf}, nil
}

// SameCA reports whether f's CA has the key of certificate c (a bundle must come from the
// ring whose CA the handshake showed; a CA certificate re-issued over the same key is the
// same CA).
func (f *Foreign) SameCA(c *x509.Certificate) bool {
	pub, err := caPublicKey(c)
	return err == nil && bytes.Equal(f.Trust.caPub, pub)
}
