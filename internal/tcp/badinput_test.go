package tcp

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Each test here attacks node b with one kind of bad input and asserts three things: the
// offending connection is closed, the reason is logged, and b still exchanges frames with a
// good peer a afterwards.

// dialTLS opens a TLS 1.3 connection to addr presenting cert (none if nil).
func dialTLS(t *testing.T, addr string, cert *tls.Certificate) *tls.Conn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawPeer connects to n as a legitimate ring member named name, exchanges hellos, and returns
// the connection for the test to misbehave on.
func rawPeer(t *testing.T, ca *testCA, name string, n *testNode) (*tls.Conn, ids.ID) {
	t.Helper()
	id := ids.HashString(name)
	cert := ca.node(t, id)
	c := dialTLS(t, n.LocalAddr(), &cert)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	bw := bufio.NewWriter(c)
	if err := writeFrame(bw, kindHello, encodeHello(hello{version: protocolVersion, addr: "127.0.0.1:1"})); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	var hdr [headerLen]byte
	kind, p, err := readFrame(c, &hdr, maxHelloPayload)
	if err != nil || kind != kindHello {
		t.Fatalf("read hello: kind %d, %v", kind, err)
	}
	if h, err := decodeHello(p); err != nil || h.addr != n.LocalAddr() {
		t.Fatalf("hello %+v, %v; want address %s", h, err, n.LocalAddr())
	}
	c.SetDeadline(time.Time{})
	return c, id
}

// expectClosed waits until the peer closes c and returns how long that took.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}

func header(length uint32, kind byte) []byte {
	h := make([]byte, headerLen)
	binary.BigEndian.PutUint32(h, length)
	h[4] = kind
	return h
}

func TestFrameOverLimitClosesConnection(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a := newNode(t, ca, "a")
	b := newNode(t, ca, "b", func(c *Config) { c.MaxFrame = 1000 })
	c, x := rawPeer(t, ca, "x", b)

	// Announce 100 MB and send only the header: b must refuse without allocating or waiting.
	if _, err := c.Write(header(100_000_001, kindData)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 2*time.Second)
	l := b.logs.waitLog(t, 2*time.Second, "frame over the size limit", "peer="+x.Short(), "size=100000000", "max=1000")
	if !strings.Contains(l, "level=WARN") {
		t.Errorf("want a warning, got %s", l)
	}
	if s := b.Stats(); s.FramesTooLong != 1 || s.FramesIn != 0 {
		t.Errorf("stats %+v", s)
	}
	pingPong(t, a, b)
}

func TestBadFramesCloseConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
		log   string
	}{
		{"zero length", header(0, kindData), "zero length"},
		{"unknown kind", header(1, 9), "unknown kind 9"},
		{"keepalive with payload", append(header(3, kindKeepalive), 1, 2), "keepalive with 2 payload bytes"},
		{"second hello", append(header(3, kindHello), 0, 1), "protocol error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			ca := newTestCA(t, "ring")
			a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
			c, x := rawPeer(t, ca, "x", b)
			if _, err := c.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c, 2*time.Second)
			b.logs.waitLog(t, 2*time.Second, "protocol error", "peer="+x.Short(), tc.log)
			pingPong(t, a, b)
		})
	}
}

func TestGarbageInsteadOfTLS(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	c, err := net.Dial("tcp", b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 2*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "remote="+c.LocalAddr().String(), "tls")
	if s := b.Stats(); s.RejectedHandshakes != 1 || s.ConnsOpen != 0 {
		t.Errorf("stats %+v", s)
	}
	pingPong(t, a, b)
}

func TestClientWithoutCertificate(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	// In TLS 1.3 the client finishes its side before the server has judged its certificate,
	// so the refusal shows up on the first read.
	c := dialTLS(t, b.LocalAddr(), nil)
	expectClosed(t, c, 2*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "remote="+c.LocalAddr().String(), "certificate")
	pingPong(t, a, b)
}

func TestCertificateRefused(t *testing.T) {
	ca := newTestCA(t, "ring")
	other := newTestCA(t, "another ring")
	id := ids.HashString("x")
	for _, tc := range []struct {
		name   string
		cert   func() tls.Certificate
		reason string
	}{
		{"another CA", func() tls.Certificate { return other.node(t, id) }, "wrong ring CA"},
		{"expired", func() tls.Certificate {
			return ca.issue(t, id, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		}, "expired"},
		{"revoked", func() tls.Certificate {
			c := ca.node(t, id)
			ca.revoke(c)
			return c
		}, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
			cert := tc.cert()
			c := dialTLS(t, b.LocalAddr(), &cert)
			expectClosed(t, c, 2*time.Second)
			l := b.logs.waitLog(t, 2*time.Second, "refused connection", "remote="+c.LocalAddr().String(), tc.reason)
			if !strings.Contains(l, "level=WARN") {
				t.Errorf("want a warning, got %s", l)
			}
			if s := b.Stats(); s.RejectedHandshakes != 1 || s.ConnsOpen != 0 {
				t.Errorf("stats %+v", s)
			}
			pingPong(t, a, b)
		})
	}
}

func TestSlowLorisClosedAfterReadTimeout(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b") // ReadTimeout 1 s
	c, x := rawPeer(t, ca, "x", b)
	// Half a header, then a frame that never completes: both must hit the read deadline.
	if _, err := c.Write(append(header(1001, kindData), make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	took := expectClosed(t, c, 3*time.Second)
	if took < 800*time.Millisecond {
		t.Errorf("closed after %v, before the read timeout", took)
	}
	b.logs.waitLog(t, 2*time.Second, "read timeout", "peer="+x.Short())
	pingPong(t, a, b)
}

func TestNeverHandshakesClosedAfterHandshakeTimeout(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b") // HandshakeTimeout 500 ms
	c, err := net.Dial("tcp", b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	took := expectClosed(t, c, 3*time.Second)
	if took < 400*time.Millisecond {
		t.Errorf("closed after %v, before the handshake timeout", took)
	}
	b.logs.waitLog(t, 2*time.Second, "refused connection", "remote="+c.LocalAddr().String(), "timeout")
	pingPong(t, a, b)
}

func TestPeerWithoutHello(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	cert := ca.node(t, ids.HashString("x"))
	c := dialTLS(t, b.LocalAddr(), &cert)
	// A data frame where the hello belongs: refused before anything is attributed to x.
	if _, err := c.Write(append(header(4, kindData), "abc"...)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 2*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "before hello")
	select {
	case r := <-b.got:
		t.Fatalf("frame %q delivered without a hello", r.frame)
	default:
	}
	pingPong(t, a, b)
}

func TestWrongProtocolVersion(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	cert := ca.node(t, ids.HashString("x"))
	c := dialTLS(t, b.LocalAddr(), &cert)
	bw := bufio.NewWriter(c)
	writeFrame(bw, kindHello, encodeHello(hello{version: 99, addr: "127.0.0.1:1"}))
	bw.Flush()
	expectClosed(t, c, 2*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "protocol version 99")
	pingPong(t, a, b)
}

func TestPeerIDMismatch(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a := newNode(t, ca, "a", func(c *Config) { c.MinBackoff = time.Minute; c.MaxBackoff = time.Minute })
	b := newNode(t, ca, "b")
	expected := ids.HashString("somebody else")
	// a believes `expected` lives at b's address; b's certificate proves otherwise.
	if err := a.Send(expected, b.LocalAddr(), []byte("for somebody else")); err != nil {
		t.Fatalf("send queues while dialing: %v", err)
	}
	l := a.logs.waitLog(t, 2*time.Second, "someone else is at that address",
		"peer="+expected.Short(), "got="+b.id.Short())
	if !strings.Contains(l, "level=WARN") {
		t.Errorf("want a warning, got %s", l)
	}
	if s := a.Stats(); s.PeerMismatches != 1 || s.ConnsOpen != 0 || s.DroppedUnsent != 1 {
		t.Errorf("stats %+v", s)
	}
	// The frame was never written: b must not see it, under any id.
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-b.got:
		t.Fatalf("b received %q meant for another node", r.frame)
	default:
	}
	if err := a.Send(expected, b.LocalAddr(), []byte("again")); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("send right after a mismatch: %v, want ErrUnreachable (backoff)", err)
	}
	pingPong(t, a, b)
}

func TestTooManyInbound(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a := newNode(t, ca, "a")
	b := newNode(t, ca, "b", func(c *Config) { c.MaxInbound = 1; c.HandshakeTimeout = time.Second })
	hog, err := net.Dial("tcp", b.LocalAddr()) // holds the only inbound slot while handshaking
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	time.Sleep(50 * time.Millisecond)
	c, err := net.Dial("tcp", b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c, 2*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "too many inbound connections")
	// Once the hog times out (and its slot is released, which the log line follows), a gets in.
	expectClosed(t, hog, 3*time.Second)
	b.logs.waitLog(t, 2*time.Second, "refused connection", "remote="+hog.LocalAddr().String(), "timeout")
	pingPong(t, a, b)
}
