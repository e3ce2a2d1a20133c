package ring

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// testNow is the fixed clock of these tests; certificates are made relative to it, so the
// outcome never depends on the wall clock.
var testNow = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

func newTestRing(t testing.TB, name string) *Ring {
	t.Helper()
	p := DefaultParams(name, name+".example")
	p.Bootstrap = []string{"127.0.0.1:7001"}
	r, err := Create(filepath.Join(t.TempDir(), "ring"), p, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testConfig(listen string) NodeConfig {
	return NodeConfig{Listen: listen, IMAP: DefaultIMAP, SMTP: DefaultSMTP, POP3: DefaultPOP3}
}

func newTestNode(t testing.TB, r *Ring, v Validity) *Node {
	t.Helper()
	n, err := InitNode(r, filepath.Join(t.TempDir(), "node"), testConfig("127.0.0.1:7002"), v, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustCAKey(t testing.TB, r *Ring) ed25519.PrivateKey {
	t.Helper()
	k, err := r.CAKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// craftCert signs an arbitrary node certificate with r's CA, for certificates the package itself
// would never issue (a node id that does not match the key, a wrong ring id).
func craftCert(t testing.TB, r *Ring, pub ed25519.PublicKey, uri *url.URL, isCA bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "crafted"},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if uri != nil {
		tmpl.URIs = []*url.URL{uri}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.CA, pub, mustCAKey(t, r))
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
