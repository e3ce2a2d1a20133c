package daemon

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mailLeaf(t *testing.T, dir string, addrs ...string) *x509.Certificate {
	t.Helper()
	cfg, err := loadOrMakeMailTLS(dir, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// checkMailNames verifies the certificate, trusted as itself (as a client that accepted it),
// for each name as crypto/x509 does (IP SANs for addresses), and as fetchmail 6.4 does (the
// name equals the CN or a DNS SAN).
func checkMailNames(t *testing.T, leaf *x509.Certificate, names ...string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, name := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("x509 Verify for %s: %v", name, err)
		}
		if strings.Contains(name, ":") { // IPv6: no DNS name can say it; fetchmail users write a name
			continue
		}
		if leaf.Subject.CommonName != name && !slices.Contains(leaf.DNSNames, name) {
			t.Errorf("%s is neither the CN %q nor a DNS SAN %v: fetchmail 6.4 refuses it", name, leaf.Subject.CommonName, leaf.DNSNames)
		}
	}
}

// A node's mail certificate has a host name as CN and names localhost and the loopback
// addresses, and the hosts of the node's configured listeners.
func TestMailCertNames(t *testing.T) {
	dir := t.TempDir()
	leaf := mailLeaf(t, dir)
	if leaf.Subject.CommonName != "localhost" {
		t.Errorf("CN %q, want localhost", leaf.Subject.CommonName)
	}
	checkMailNames(t, leaf, "localhost", "127.0.0.1", "::1")

	// A node whose config names its mail hosts: CN the first host name, SANs all of them.
	dir = t.TempDir()
	cfg := `{"listen":"192.0.2.7:7001","imap":"192.0.2.7:1143","smtp":"Mail.Example.org:587","pop3":"0.0.0.0:1110","data_dir":"data"}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf = mailLeaf(t, dir, "[2001:db8::5]:993")
	if leaf.Subject.CommonName != "mail.example.org" {
		t.Errorf("CN %q, want mail.example.org", leaf.Subject.CommonName)
	}
	checkMailNames(t, leaf, "mail.example.org", "192.0.2.7", "2001:db8::5", "localhost", "127.0.0.1")
	if slices.Contains(leaf.DNSNames, "0.0.0.0") {
		t.Errorf("a wildcard listener's address is in the certificate: %v", leaf.DNSNames)
	}
	// Asked again with fewer names (as the MX asks), the certificate is kept.
	if again := mailLeaf(t, dir); !bytes.Equal(again.Raw, leaf.Raw) {
		t.Error("a certificate with every wanted name was made anew")
	}
}

// A certificate an earlier version made (CN not a host name) is made anew with the names;
// one the operator put there is kept as it is.
func TestMailCertRenewal(t *testing.T) {
	write := func(t *testing.T, dir string, name pkix.Name, dns []string) []byte {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, DNSNames: dns,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		os.WriteFile(filepath.Join(dir, FileMailKey), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
		os.WriteFile(filepath.Join(dir, FileMailCert), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		return der
	}

	old := t.TempDir()
	oldDER := write(t, old, pkix.Name{CommonName: legacyMailCertCN}, []string{"localhost"})
	_, renewed, err := loadOrMakeMailCert(old)
	if err != nil || renewed == "" {
		t.Fatalf("legacy certificate: renewed %q, err %v; want it made anew", renewed, err)
	}
	leaf := mailLeaf(t, old)
	if bytes.Equal(leaf.Raw, oldDER) {
		t.Fatal("the legacy certificate is still in place")
	}
	checkMailNames(t, leaf, "localhost", "127.0.0.1", "::1")

	own := t.TempDir()
	ownDER := write(t, own, pkix.Name{CommonName: "mail.corp.example"}, []string{"mail.corp.example"})
	if _, renewed, err := loadOrMakeMailCert(own); err != nil || renewed != "" {
		t.Fatalf("operator's certificate: renewed %q, err %v; want it kept", renewed, err)
	}
	if leaf := mailLeaf(t, own); !bytes.Equal(leaf.Raw, ownDER) {
		t.Fatal("the operator's certificate was replaced")
	}
}
