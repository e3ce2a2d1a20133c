// Package imap_test runs real IMAP clients against the node's IMAP server:
// Python's imaplib (the standard library only), and go-imap's client for
// benchmarks.
package imap_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"epost/internal/imapserver"
	"epost/internal/mailbox"
)

const (
	testUser     = "alice@example.org"
	testPassword = "correct horse battery staple"
)

// imapService is what the tests need of either engine.
type imapService interface {
	Serve(net.Listener) error
	ServeTLS(net.Listener) error
	Close() error
}

// testServer is a running server on loopback with one in-memory user.
type testServer struct {
	addr  string
	store *mailbox.Memory
	srv   imapService
}

// serverConfig is the engine's configuration.
type serverConfig = imapserver.Config

// engines are the IMAP engines a node can serve: internal/imapserver (the go-imap engine it served
// before is gone).
var engines = []string{"imapserver"}

// forEngines runs f once per engine, as subtests.
func forEngines(t *testing.T, f func(t *testing.T, engine string)) {
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { f(t, e) })
	}
}

// start starts engine with cfg on loopback, with one user.
func start(tb testing.TB, engine string, cfg serverConfig, useTLS bool) *testServer {
	tb.Helper()
	var users mailbox.MemoryUsers
	store := users.Add(testUser, testPassword)
	cfg.Auth = &users
	if cfg.Logger == nil {
		var buf bytes.Buffer
		cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("server log:\n%s", buf.String())
			}
		})
	}
	var srv imapService
	var err error
	switch engine {
	case "imapserver":
		srv, err = imapserver.New(cfg)
	default:
		tb.Fatalf("unknown engine %q", engine)
	}
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		if useTLS {
			srv.ServeTLS(ln)
		} else {
			srv.Serve(ln)
		}
	}()
	tb.Cleanup(func() { srv.Close() })
	return &testServer{addr: ln.Addr().String(), store: store, srv: srv}
}

// selfSigned makes a throwaway certificate for 127.0.0.1.
func selfSigned(tb testing.TB) *tls.Config {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "epost test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// runPython runs one named check of testdata/client.py against addr.
func runPython(t *testing.T, addr, name string) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found in PATH; the imaplib client tests need it")
	}
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/client.py", host, port, testUser, testPassword, name)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok "+name) {
		t.Fatalf("python %s: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(line, "ok ") {
			t.Log(line)
		}
	}
}
