package tcp

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// testCA is a tiny ring CA: Ed25519, node ids in a URI SAN "epost://node/<hex id>". It stands in
// for the ring package's certificate checks.
type testCA struct {
	name    string
	cert    *x509.Certificate
	key     ed25519.PrivateKey
	pool    *x509.CertPool
	mu      sync.Mutex
	revoked map[string]bool // serial numbers
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{name: name, cert: cert, key: key, pool: pool, revoked: map[string]bool{}}
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 100}

// issue makes a node certificate for id valid in [notBefore, notAfter].
func (ca *testCA) issue(t testing.TB, id ids.ID, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	u := &url.URL{Scheme: "epost", Host: "node", Path: "/" + id.String()}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: id.Short()},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *testCA) node(t testing.TB, id ids.ID) tls.Certificate {
	return ca.issue(t, id, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func (ca *testCA) revoke(c tls.Certificate) {
	ca.mu.Lock()
	ca.revoked[c.Leaf.SerialNumber.String()] = true
	ca.mu.Unlock()
}

// verify is the VerifyPeer of a ring using this CA.
func (ca *testCA) verify(cert *x509.Certificate) (ids.ID, error) {
	_, err := cert.Verify(x509.VerifyOptions{Roots: ca.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return ids.ID{}, errors.New("wrong ring CA")
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ids.ID{}, errors.New("expired")
	case err != nil:
		return ids.ID{}, err
	}
	ca.mu.Lock()
	revoked := ca.revoked[cert.SerialNumber.String()]
	ca.mu.Unlock()
	if revoked {
		return ids.ID{}, errors.New("revoked")
	}
	for _, u := range cert.URIs {
		if u.Scheme == "epost" && u.Host == "node" {
			return ids.Parse(strings.TrimPrefix(u.Path, "/"))
		}
	}
	return ids.ID{}, errors.New("no node id in certificate")
}

// logBuffer collects text logs for assertions; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// line returns the first log line containing every part, or "".
func (b *logBuffer) line(parts ...string) string {
	for l := range strings.SplitSeq(b.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok && l != "" {
			return l
		}
	}
	return ""
}

// waitLog waits until a line containing every part is logged.
func (b *logBuffer) waitLog(t testing.TB, within time.Duration, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if l := b.line(parts...); l != "" {
			return l
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line with %q within %v; log:\n%s", parts, within, b.String())
	return ""
}

// received is one delivered frame.
type received struct {
	from  transport.From
	frame []byte
}

// testNode is a Transport with a recording Handler and a log buffer.
type testNode struct {
	*Transport
	id   ids.ID
	cert tls.Certificate
	logs *logBuffer
	got  chan received
}

// fastConfig has short timeouts so the bad-input tests run in about a second each, with margins
// wide enough for a loaded two-core CI machine (keepalive 10x more often than the read timeout).
func fastConfig(c *Config) {
	c.HandshakeTimeout = 500 * time.Millisecond
	c.ReadTimeout = time.Second
	c.KeepaliveInterval = 100 * time.Millisecond
	c.WriteTimeout = time.Second
	c.DialTimeout = time.Second
	c.MinBackoff = 50 * time.Millisecond
	c.MaxBackoff = 200 * time.Millisecond
}

func newNode(t testing.TB, ca *testCA, name string, tweak ...func(*Config)) *testNode {
	t.Helper()
	id := ids.HashString(name)
	n := &testNode{id: id, cert: ca.node(t, id), logs: &logBuffer{}, got: make(chan received, 1<<16)}
	cfg := Config{
		ListenAddr:  "127.0.0.1:0",
		ID:          id,
		Certificate: n.cert,
		VerifyPeer:  ca.verify,
		Handler: func(from transport.From, frame []byte) {
			select {
			case n.got <- received{from, frame}:
			default:
				panic("test handler queue full")
			}
		},
		Logger: slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	fastConfig(&cfg)
	for _, f := range tweak {
		f(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Transport = tr
	t.Cleanup(func() {
		tr.Close()
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, n.logs.String())
		}
	})
	return n
}

// recv waits for one frame.
func (n *testNode) recv(t testing.TB, within time.Duration) received {
	t.Helper()
	select {
	case r := <-n.got:
		return r
	case <-time.After(within):
		t.Fatalf("node %s: no frame within %v", n.id.Short(), within)
		return received{}
	}
}

// sendRetry sends, waiting out back-pressure, so that no frame is lost and order holds.
func sendRetry(t testing.TB, from *testNode, to *testNode, frame []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := from.Send(to.id, to.LocalAddr(), frame)
		if err == nil {
			return
		}
		if !errors.Is(err, transport.ErrBackpressure) || time.Now().After(deadline) {
			t.Fatalf("send %s -> %s: %v", from.id.Short(), to.id.Short(), err)
		}
		time.Sleep(time.Millisecond)
	}
}

// pingPong checks that a and b can still exchange frames both ways.
func pingPong(t testing.TB, a, b *testNode) {
	t.Helper()
	sendRetry(t, a, b, []byte("ping"))
	if r := b.recv(t, 5*time.Second); string(r.frame) != "ping" || r.from.ID != a.id {
		t.Fatalf("b got %.40q from %s, want ping from %s", r.frame, r.from.ID.Short(), a.id.Short())
	}
	sendRetry(t, b, a, []byte("pong"))
	if r := a.recv(t, 5*time.Second); string(r.frame) != "pong" || r.from.ID != b.id {
		t.Fatalf("a got %.40q from %s, want pong from %s", r.frame, r.from.ID.Short(), b.id.Short())
	}
}

// checkNoLeak fails if goroutines started during the test outlive it (after a grace period).
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, now, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func seqFrame(seq int, size int) []byte {
	f := make([]byte, max(size, 8))
	copy(f, fmt.Sprintf("%08d", seq))
	return f
}

func seqOf(t testing.TB, f []byte) int {
	var n int
	if _, err := fmt.Sscanf(string(f[:8]), "%08d", &n); err != nil {
		t.Fatalf("bad frame %q: %v", f[:8], err)
	}
	return n
}

// drain discards frames already delivered to n.
func (n *testNode) drain() {
	for {
		select {
		case <-n.got:
		default:
			return
		}
	}
}
