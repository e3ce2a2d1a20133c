package daemon

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// The mail servers' certificate is made once, kept private, valid for loopback, and reused.
func TestMailCertMadeOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	c1, err := loadOrMakeMailTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileMailKey))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	c2, err := loadOrMakeMailTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c1.Certificates[0].Certificate[0], c2.Certificates[0].Certificate[0]
	if !bytes.Equal(a, b) {
		t.Fatal("a second start made a new certificate; mail clients would have to trust it again")
	}
	cert, err := x509.ParseCertificate(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate not valid for 127.0.0.1: %v", err)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate not valid for localhost: %v", err)
	}
}

// A damaged certificate is an error that names the files to delete, never silently replaced.
func TestMailCertDamaged(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadOrMakeMailTLS(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileMailCert), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadOrMakeMailTLS(dir)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("delete")) {
		t.Fatalf("got %v, want an error saying which files to delete", err)
	}
}

// A taken mail port is an error that says which flag picks another.
func TestMailPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, err := listenMail("IMAP", ln.Addr().String(), "--imap")
	if err == nil {
		l.Close()
		t.Fatal("listening on a taken port succeeded")
	}
	if !bytes.Contains([]byte(err.Error()), []byte("--imap")) {
		t.Fatalf("got %v, want advice naming --imap", err)
	}
}
