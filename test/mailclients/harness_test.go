// Package mailclients_test runs real mail clients against the node's SMTP
// submission and POP3 servers on loopback: Python's smtplib and poplib (the
// standard library only), swaks and mutt. A fake Submitter files each
// submitted message straight into the recipients' in-memory INBOX, so that
// "send as alice, read as bob" runs end to end.
package mailclients_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
	"epost/internal/pop3server"
	"epost/internal/smtpserver"
)

const (
	domain   = "example.org"
	alice    = "alice@example.org"
	bob      = "bob@example.org"
	password = "correct horse battery staple"
	// smallLimit is the SIZE of the harness's second SMTP server.
	smallLimit = 64 << 10
)

// harness is one set of servers with users alice and bob.
type harness struct {
	t      testing.TB
	users  mailbox.MemoryUsers
	stores map[string]*mailbox.Memory
	outbox *smtpserver.DirOutbox
	sub    *memSubmitter
	tls    *tls.Config
	// certPEM is the servers' self-signed certificate, for clients that
	// must be told to trust it.
	certPEM []byte

	// Addresses: SMTP with STARTTLS, SMTP implicit TLS, SMTP with a small
	// SIZE, POP3 with STLS, POP3 implicit TLS.
	SMTP, SMTPS, SMTPSmall, POP3, POP3S string
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, stores: make(map[string]*mailbox.Memory)}
	h.tls, h.certPEM = selfSigned(t)
	for _, u := range []string{alice, bob} {
		h.stores[u] = h.users.Add(u, password)
	}
	var err error
	if h.outbox, err = smtpserver.OpenDirOutbox(t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	h.sub = &memSubmitter{stores: h.stores}
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logBuf.String())
		}
	})
	smtpCfg := smtpserver.Config{
		Domain:     "node.example.org",
		Auth:       smtpserver.MailboxAuth(&h.users),
		Recipients: ringDirectory{h.stores},
		Submitter:  h.sub,
		Outbox:     h.outbox,
		TLS:        h.tls,
		Logger:     log,
	}
	h.SMTP = h.serveSMTP(smtpCfg, false)
	h.SMTPS = h.serveSMTP(smtpCfg, true)
	small := smtpCfg
	small.MaxMessageBytes = smallLimit
	h.SMTPSmall = h.serveSMTP(small, false)

	popCfg := pop3server.Config{Auth: &h.users, TLS: h.tls, Logger: log, AuthFailDelay: -1}
	h.POP3 = h.servePOP3(popCfg, false)
	h.POP3S = h.servePOP3(popCfg, true)
	return h
}

func listen(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (h *harness) serveSMTP(cfg smtpserver.Config, implicitTLS bool) string {
	srv, err := smtpserver.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ln := listen(h.t)
	go func() {
		if implicitTLS {
			srv.ServeTLS(ln)
		} else {
			srv.Serve(ln)
		}
	}()
	h.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (h *harness) servePOP3(cfg pop3server.Config, implicitTLS bool) string {
	srv, err := pop3server.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ln := listen(h.t)
	go func() {
		if implicitTLS {
			srv.ServeTLS(ln)
		} else {
			srv.Serve(ln)
		}
	}()
	h.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// inbox returns a user's INBOX.
func (h *harness) inbox(user string) mailbox.Folder {
	f, err := h.stores[user].Folder(mailbox.Inbox)
	if err != nil {
		h.t.Fatal(err)
	}
	return f
}

// messages returns the raw bytes of every message in a user's INBOX.
func (h *harness) messages(user string) [][]byte {
	h.t.Helper()
	f := h.inbox(user)
	list, err := f.List()
	if err != nil {
		h.t.Fatal(err)
	}
	var out [][]byte
	for _, m := range list {
		c, err := f.Content(m.UID)
		if err != nil {
			h.t.Fatal(err)
		}
		b := make([]byte, c.Size())
		c.ReadAt(b, 0)
		out = append(out, b)
	}
	return out
}

// seed appends messages to a user's INBOX directly.
func (h *harness) seed(user string, msgs ...string) {
	for _, m := range msgs {
		if _, err := h.inbox(user).Append([]byte(m), nil, time.Time{}); err != nil {
			h.t.Fatal(err)
		}
	}
}

// ringDirectory is the fake Recipients: the harness's users are ring
// users, other example.org addresses do not exist, the rest is outside.
type ringDirectory struct{ stores map[string]*mailbox.Memory }

func (d ringDirectory) Classify(_ context.Context, addr string) (smtpserver.RecipientClass, error) {
	if _, ok := d.stores[strings.ToLower(addr)]; ok {
		return smtpserver.RingUser, nil
	}
	if strings.HasSuffix(strings.ToLower(addr), "@"+domain) {
		return smtpserver.NoSuchUser, nil
	}
	return smtpserver.Outside, nil
}

// memSubmitter is the fake Submitter: it appends a copy of each message
// to every recipient's INBOX (the real one stores POST parts and sends
// notifications).
type memSubmitter struct {
	stores map[string]*mailbox.Memory
	mu     sync.Mutex
	envs   []smtpserver.Envelope
}

func (m *memSubmitter) Submit(_ context.Context, env smtpserver.Envelope, raw []byte) error {
	for _, to := range env.To {
		f, err := m.stores[strings.ToLower(to)].Folder(mailbox.Inbox)
		if err != nil {
			return err
		}
		if _, err := f.Append(bytes.Clone(raw), nil, time.Time{}); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.envs = append(m.envs, env)
	m.mu.Unlock()
	return nil
}

// selfSigned makes a throwaway certificate for 127.0.0.1.
func selfSigned(tb testing.TB) (*tls.Config, []byte) {
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
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// runPython runs one named check of testdata/clients.py against h.
func (h *harness) runPython(t *testing.T, name string, extra map[string]any) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found in PATH; the smtplib/poplib tests need it")
	}
	cfg := map[string]any{
		"smtp": h.SMTP, "smtps": h.SMTPS, "smtp_small": h.SMTPSmall, "small_limit": smallLimit,
		"pop3": h.POP3, "pop3s": h.POP3S,
		"alice": alice, "bob": bob, "password": password, "tmp": t.TempDir(),
	}
	for k, v := range extra {
		cfg[k] = v
	}
	js, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/clients.py", name)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "EPOST_TEST="+string(js))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok "+name) {
		t.Fatalf("python %s: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(line, "ok ") {
			t.Log(line)
		}
	}
	return string(out)
}

// syncBuffer is a bytes.Buffer safe for the servers' concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
