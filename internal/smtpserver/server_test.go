package smtpserver

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const (
	user = "alice@example.org"
	pass = "secret"
)

// fakeRing is Recipients and Submitter: known users are in ring, a
// "down@" address fails lookup, the rest is outside.
type fakeRing struct {
	mu      sync.Mutex
	got     [][]byte
	envs    []Envelope
	submit  func(ctx context.Context) error // nil means success
	entered chan struct{}
}

func (f *fakeRing) Classify(_ context.Context, addr string) (RecipientClass, error) {
	switch {
	case addr == "bob@example.org" || addr == user:
		return RingUser, nil
	case strings.HasPrefix(addr, "down@"):
		return NoSuchUser, errors.New("directory unreachable")
	case strings.HasSuffix(addr, "@example.org"):
		return NoSuchUser, nil
	}
	return Outside, nil
}

func (f *fakeRing) Submit(ctx context.Context, env Envelope, raw []byte) error {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.submit != nil {
		if err := f.submit(ctx); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, append([]byte(nil), raw...))
	f.envs = append(f.envs, env)
	return nil
}

type testEnv struct {
	srv    *Server
	ring   *fakeRing
	outbox *DirOutbox
	addr   string
}

func start(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	var users mailbox.MemoryUsers
	users.Add(user, pass)
	ring := &fakeRing{}
	ob, err := OpenDirOutbox(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth, cfg.Recipients, cfg.Submitter, cfg.Outbox = MailboxAuth(&users), ring, ring, ob
	cfg.Domain = "node.test"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &testEnv{srv: srv, ring: ring, outbox: ob, addr: ln.Addr().String()}
}

func login(t testing.TB, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	return c
}

func code(err error) int {
	var e *smtp.SMTPError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func send(c *smtp.Client, to []string, msg string) error {
	if err := c.Mail(user, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	io.WriteString(w, msg)
	return w.Close()
}

const testMsg = "Subject: hi\r\n\r\n.dot line\r\nbody\r\n"

// TestSubmitErrors: the Submitter's failures become 451 (transient), 554
// (ErrRejected) and 552 (too big), each with the error text; nothing goes
// to the outbox when the ring copy failed; a lookup failure is 451 at RCPT.
func TestSubmitErrors(t *testing.T) {
	e := start(t, Config{})
	c := login(t, e.addr)
	defer c.Close()
	for _, tc := range []struct {
		err  error
		code int
	}{
		{errors.New("PAST quorum not reached"), 451},
		{fmt.Errorf("policy: %w", ErrRejected), 554},
		{fmt.Errorf("store: %w", mailbox.ErrTooBig), 552},
	} {
		e.ring.submit = func(context.Context) error { return tc.err }
		err := send(c, []string{"bob@example.org", "carol@elsewhere.net"}, testMsg)
		if code(err) != tc.code || !strings.Contains(err.Error(), tc.err.Error()) {
			t.Errorf("submit error %v: reply %v, want %d with the text", tc.err, err, tc.code)
		}
		if ids, _ := e.outbox.Pending(); len(ids) != 0 {
			t.Errorf("outbox holds %v after a failed submission", ids)
		}
	}
	e.ring.submit = nil
	c.Reset()
	c.Mail(user, nil)
	if err := c.Rcpt("down@example.org", nil); code(err) != 451 {
		t.Errorf("lookup failure: %v", err)
	}
	if err := c.Rcpt("nobody@example.org", nil); code(err) != 550 {
		t.Errorf("unknown user: %v", err)
	}
	if err := c.Mail(user, nil); code(err) != 503 {
		t.Errorf("nested MAIL: %v", err)
	}
}

// TestNoAckBeforeDurable: the client gets no reply to DATA while Submit is
// still running, and 250 right after it returns.
func TestNoAckBeforeDurable(t *testing.T) {
	e := start(t, Config{})
	release := make(chan struct{})
	e.ring.entered = make(chan struct{}, 1)
	e.ring.submit = func(context.Context) error { <-release; return nil }
	c := login(t, e.addr)
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- send(c, []string{"bob@example.org"}, testMsg) }()
	<-e.ring.entered
	select {
	case err := <-done:
		t.Fatalf("DATA answered (%v) before Submit returned", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("DATA after Submit: %v", err)
	}
	got := string(e.ring.got[0])
	if !strings.HasPrefix(got, "Received: from localhost ([127.0.0.1])\r\n\tby node.test (epost) with ESMTPA id ") ||
		!strings.Contains(got, "\r\n\tfor <bob@example.org>; ") {
		t.Errorf("trace field: %q", got)
	}
	if !strings.HasSuffix(got, testMsg) {
		t.Errorf("message body changed: %q", got)
	}
}

// TestSubmitAbortedOnClose: closing the server cancels Submit's context.
func TestSubmitAbortedOnClose(t *testing.T) {
	e := start(t, Config{})
	e.ring.entered = make(chan struct{}, 1)
	e.ring.submit = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	c := login(t, e.addr)
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- send(c, []string{"bob@example.org"}, testMsg) }()
	<-e.ring.entered
	e.srv.Close()
	if err := <-done; err == nil {
		t.Fatal("DATA succeeded although Submit was aborted")
	}
}

// remoteListener hands out net.Pipe connections whose remote address is
// not loopback.
type remoteListener struct{ conns chan net.Conn }

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000} }

func (l remoteListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l remoteListener) Close() error   { return nil }
func (l remoteListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 587} }

// TestPlaintextPolicy: from another machine without TLS, AUTH is neither
// advertised nor accepted (538) unless AllowPlaintextAuth.
func TestPlaintextPolicy(t *testing.T) {
	for _, allow := range []bool{false, true} {
		e := start(t, Config{AllowPlaintextAuth: allow})
		ln := remoteListener{make(chan net.Conn)}
		go e.srv.Serve(ln)
		a, b := net.Pipe()
		ln.conns <- remoteConn{b}
		c := smtp.NewClient(a)
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("AUTH"); ok != allow {
			t.Errorf("allow=%v: AUTH advertised %v", allow, ok)
		}
		err := c.Auth(sasl.NewPlainClient("", user, pass))
		if allow && err != nil || !allow && code(err) != 538 {
			t.Errorf("allow=%v: AUTH -> %v", allow, err)
		}
		c.Close()
	}

	// After STARTTLS (RFC 3207) the same remote client may log in.
	e := start(t, Config{TLS: selfSigned(t)})
	ln := remoteListener{make(chan net.Conn)}
	go e.srv.Serve(ln)
	a, b := net.Pipe()
	ln.conns <- remoteConn{b}
	c, err := smtp.NewClientStartTLS(a, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Errorf("AUTH after STARTTLS: %v", err)
	}
	if err := send(c, []string{"bob@example.org"}, testMsg); err != nil {
		t.Errorf("send after STARTTLS: %v", err)
	}
	if got := string(e.ring.got[0]); !strings.Contains(got, "with ESMTPSA") || !strings.Contains(got, "[192.0.2.7]") {
		t.Errorf("trace field after STARTTLS: %q", got[:150])
	}
}

// selfSigned makes a throwaway server certificate.
func selfSigned(t testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"node.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestMaxConns: a connection over the limit gets 421 at once.
func TestMaxConns(t *testing.T) {
	e := start(t, Config{MaxConns: 1})
	c1, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if l, _ := bufio.NewReader(c1).ReadString('\n'); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("first: %q", l)
	}
	c2, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if l, _ := bufio.NewReader(c2).ReadString('\n'); !strings.HasPrefix(l, "421 4.7.0") {
		t.Errorf("second: %q", l)
	}
	c1.Close()
	time.Sleep(50 * time.Millisecond) // let the server see the close
	c3, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if l, _ := bufio.NewReader(c3).ReadString('\n'); !strings.HasPrefix(l, "220 ") {
		t.Errorf("after a slot freed: %q", l)
	}
}

// TestIdleTimeout: a silent client gets 421 and is dropped.
func TestIdleTimeout(t *testing.T) {
	e := start(t, Config{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	r.ReadString('\n')
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "421 ") {
		t.Errorf("idle: %q", l)
	}
}

func TestReceived(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
	got := received(receivedInfo{helo: "pc (evil)\x01", remote: &net.TCPAddr{IP: net.ParseIP("::1")}, by: "node",
		id: "42", tls: true, auth: true, utf8: true, rcpts: []string{"a@b"}, when: when})
	want := "Received: from pc__evil__ ([IPv6:::1])\r\n\tby node (epost) with UTF8SMTPSA id 42\r\n\tfor <a@b>; Fri, 02 Jan 2026 03:04:05 +0100\r\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	got = received(receivedInfo{helo: "h", by: "n", id: "1", rcpts: []string{"a", "b"}, when: when})
	if strings.Contains(got, "for") || !strings.Contains(got, "with ESMTP id") {
		t.Errorf("two recipients: %q", got)
	}
}

func TestLoginMechanism(t *testing.T) {
	e := start(t, Config{})
	c, err := smtp.Dial(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient(user, "wrong")); code(err) != 535 {
		t.Errorf("LOGIN wrong password: %v", err)
	}
	c.Close()
	c, _ = smtp.Dial(e.addr)
	if err := c.Auth(sasl.NewLoginClient(user, pass)); err != nil {
		t.Errorf("LOGIN: %v", err)
	}
	if err := send(c, []string{"bob@example.org"}, testMsg); err != nil {
		t.Errorf("send after LOGIN: %v", err)
	}
}

// TestMaxConnsPerAddr: one address over its bound gets 421, while another address still gets
// in; the server counts the refusal.
func TestMaxConnsPerAddr(t *testing.T) {
	e := start(t, Config{MaxConnsPerAddr: 1})
	dialFrom := func(ip net.IP) string {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		l, _ := bufio.NewReader(c).ReadString('\n')
		return l
	}
	if l := dialFrom(net.IPv4(127, 0, 0, 1)); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("first: %q", l)
	}
	if l := dialFrom(net.IPv4(127, 0, 0, 1)); !strings.HasPrefix(l, "421 4.7.0") || !strings.Contains(l, "your address") {
		t.Errorf("second from the same address: %q", l)
	}
	if l := dialFrom(net.IPv4(127, 0, 0, 2)); !strings.HasPrefix(l, "220 ") {
		t.Errorf("from another address: %q", l)
	}
	if st := e.srv.ConnStats(); st.RefusedByAddr != 1 || st.RefusedTotal != 0 || st.Open != 2 {
		t.Errorf("stats %+v", st)
	}
}
