package ring

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"epost/internal/ids"
)

// NodeIDFromPublicKey derives a node's id from its Ed25519 public key. The id is a hash of the
// key, so nobody can choose where on the ring their node lands (Pastry's defence against an
// attacker placing nodes next to a victim's keys), and the prefix keeps this hash apart from
// every other SHA-256 in the system.
func NodeIDFromPublicKey(pub ed25519.PublicKey) ids.ID {
	h := sha256.New()
	h.Write([]byte("epost-node-id-v1\x00"))
	h.Write(pub)
	var id ids.ID
	h.Sum(id[:0])
	return id
}

// The certificate names its holder with URI SANs:
//
//	CA:   epost://ring/<ring id hex>
//	node: epost://node/<ring id hex>/<node id hex>
//
// X.509 has no field for "position on a hash circle", and URI SANs are the standard place for
// application-defined identities (SPIFFE does the same).
const uriScheme = "epost"

func ringURI(ring ids.RingID) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "ring", Path: "/" + ring.String()}
}

func nodeURI(ring ids.RingID, node ids.ID) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "node", Path: "/" + ring.String() + "/" + node.String()}
}

// NodeIdentity reads the ring id and node id a certificate claims, without checking anything
// else; VerifyPeer is what makes the claim trustworthy.
func NodeIdentity(cert *x509.Certificate) (ring ids.RingID, node ids.ID, err error) {
	var found *url.URL
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme || u.Host != "node" {
			continue
		}
		if found != nil {
			return ring, node, fmt.Errorf("%w: more than one node identity", ErrBadCert)
		}
		found = u
	}
	if found == nil {
		return ring, node, fmt.Errorf("%w: no epost://node/ identity (not an epost node certificate)", ErrBadCert)
	}
	r, n, ok := strings.Cut(strings.TrimPrefix(found.Path, "/"), "/")
	if !ok {
		return ring, node, fmt.Errorf("%w: malformed node identity %q", ErrBadCert, found)
	}
	if ring, err = ids.Parse(r); err != nil {
		return ring, node, fmt.Errorf("%w: node identity: %v", ErrBadCert, err)
	}
	if node, err = ids.Parse(n); err != nil {
		return ring, node, fmt.Errorf("%w: node identity: %v", ErrBadCert, err)
	}
	return ring, node, nil
}

// randomSerial returns a positive 127-bit serial: random serials need no issuance counter that
// two enrollments could race on, and 127 bits make collisions negligible (RFC 5280 section
// 4.1.2.2 allows up to 20 octets).
func randomSerial() (*big.Int, error) {
	max := new(big.Int).Lsh(big.NewInt(1), 127)
	for {
		s, err := rand.Int(rand.Reader, max)
		if err != nil {
			return nil, err
		}
		if s.Sign() > 0 {
			return s, nil
		}
	}
}

// caValidity is how long a ring CA certificate is valid. Rings are long-lived and rotating the CA
// means re-enrolling every node, so it is long; the node certificates it signs are short.
const caValidity = 20 * 365 * 24 * time.Hour

// clockSkew backdates NotBefore so that a node whose clock is a little behind the CA's accepts
// a fresh certificate.
const clockSkew = 5 * time.Minute

// newCACert makes the ring's self-signed CA certificate.
func newCACert(key ed25519.PrivateKey, d *Descriptor, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "epost ring CA " + d.Name, Organization: []string{d.Name}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // the CA signs node and user certificates only, never sub-CAs
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{ringURI(d.RingID)},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// Validity is a certificate's validity window. The zero value means "from now for
// DefaultNodeValidity".
type Validity struct {
	NotBefore time.Time
	NotAfter  time.Time
}

// DefaultNodeValidity is the lifetime of a node certificate when none is asked for.
const DefaultNodeValidity = 365 * 24 * time.Hour

// resolve fills in defaults and checks the window.
func (v Validity) resolve(now time.Time) (Validity, error) {
	if v.NotBefore.IsZero() {
		v.NotBefore = now.Add(-clockSkew)
	}
	if v.NotAfter.IsZero() {
		v.NotAfter = now.Add(DefaultNodeValidity)
	}
	if !v.NotAfter.After(v.NotBefore) {
		return v, fmt.Errorf("certificate validity: not-after %s is not after not-before %s",
			v.NotAfter.Format(time.RFC3339), v.NotBefore.Format(time.RFC3339))
	}
	return v, nil
}

// Role is a duty the ring CA grants a node in its certificate, as the URI epost://role/<name>:
// only the administrator makes a node a gateway (every user runs a node; a self-declared
// gateway could attract other users' mail). Peers read it from the certificate they verified.
type Role string

// RoleGateway: the node joins the global ring for its ring and carries mail between rings and
// to and from the internet (docs/gateway-design.md).
const RoleGateway Role = "gateway"

func roleURI(r Role) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "role", Path: "/" + string(r)}
}

// NodeRoles returns the roles a node certificate carries. Only a certificate the ring's trust
// verified (Trust.VerifyPeer) makes them true.
func NodeRoles(cert *x509.Certificate) []Role {
	var out []Role
	for _, u := range cert.URIs {
		if u.Scheme == uriScheme && u.Host == "role" {
			out = append(out, Role(strings.TrimPrefix(u.Path, "/")))
		}
	}
	return out
}

// HasRole reports whether cert carries role.
func HasRole(cert *x509.Certificate, role Role) bool { return slices.Contains(NodeRoles(cert), role) }

// issueNodeCert signs a node certificate binding node id and public key in this ring, with the
// roles given.
func issueNodeCert(ca *x509.Certificate, caKey ed25519.PrivateKey, ring *Descriptor, pub ed25519.PublicKey, v Validity, roles []Role) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	node := NodeIDFromPublicKey(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "epost node " + node.Short(), Organization: []string{ring.Name}},
		NotBefore:             v.NotBefore,
		NotAfter:              v.NotAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		// Nodes are TLS clients and servers alike: every node dials and accepts.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{nodeURI(ring.RingID, node)},
	}
	for i, r := range roles {
		if r != RoleGateway {
			return nil, fmt.Errorf("node certificate: unknown role %q", r)
		}
		if !slices.Contains(roles[:i], r) {
			tmpl.URIs = append(tmpl.URIs, roleURI(r))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Fingerprint is the SHA-256 of a certificate's DER, in hex: what an operator compares by eye
// when a CA certificate arrives by an untrusted channel.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// caPublicKey returns the CA certificate's Ed25519 key.
func caPublicKey(ca *x509.Certificate) (ed25519.PublicKey, error) {
	pub, ok := ca.PublicKey.(ed25519.PublicKey)
	if !ok || !ca.IsCA {
		return nil, errors.New("ring CA certificate: not an Ed25519 CA certificate")
	}
	return pub, nil
}
