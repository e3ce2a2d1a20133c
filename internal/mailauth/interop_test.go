package mailauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
)

// dkimPython finds a Python with dkimpy (Debian's python3-dkim; .ci/run installs it).
func dkimPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import dkim, nacl").Run() == nil {
			return py
		}
	}
	t.Skip("no python3 with dkimpy and nacl (apt-get install python3-dkim python3-nacl)")
	return ""
}

// Our signatures verify with dkimpy, and dkimpy's (RSA) verify with our checker: the two
// implementations agree on RFC 6376.
func TestDKIMInteropWithDkimpy(t *testing.T) {
	py := dkimPython(t)
	dir := t.TempDir()

	// Ours (ed25519) checked by dkimpy.
	pub, key, _ := genEd25519()
	signed, err := Sign([]byte(msg), SignOptions{Domain: "sender.example", Selector: "sel", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "signed.eml"), signed, 0o600)
	script := `
import sys, dkim
txt = sys.argv[2].encode()
def dns(name, timeout=5):
    return txt if name == b"sel._domainkey.sender.example." else None
ok = dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dns)
print("ok" if ok else "bad")
`
	out, err := exec.Command(py, "-c", script, filepath.Join(dir, "signed.eml"), "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("dkimpy on our ed25519 signature: %v: %s", err, out)
	}

	// dkimpy's (RSA-SHA256) checked by ours.
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	os.WriteFile(filepath.Join(dir, "rsa.pem"), keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "plain.eml"), []byte(msg), 0o600)
	sign := `
import sys, dkim
m = open(sys.argv[1], "rb").read()
sig = dkim.sign(m, b"rsa", b"sender.example", open(sys.argv[2], "rb").read(), include_headers=[b"from", b"to", b"subject", b"date"])
sys.stdout.buffer.write(sig + m)
`
	theirs, err := exec.Command(py, "-c", sign, filepath.Join(dir, "plain.eml"), filepath.Join(dir, "rsa.pem")).Output()
	if err != nil {
		t.Fatalf("dkimpy sign: %v", err)
	}
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	srv.SetTXT("rsa._domainkey.sender.example", time.Hour, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	c := &Checker{Resolver: &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}}
	r := c.Check(context.Background(), net.ParseIP("127.0.0.1"), "x", "alice@sender.example", theirs)
	if len(r.DKIM) != 1 || r.DKIM[0].Result != Pass || r.DKIM[0].Domain != "sender.example" {
		t.Fatalf("our check of dkimpy's signature: %+v", r.DKIM)
	}
}
