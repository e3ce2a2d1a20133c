package imapserver

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// chanListener serves connections handed to it, for in-process tests.
type chanListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type loopbackConn struct{ net.Conn }

func (loopbackConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// syncBuffer is a log sink safe for the server's goroutines.
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

// testServer is a Server on an in-process listener with one user "u" whose
// password is "p".
type testServer struct {
	srv   *Server
	ln    *chanListener
	store *mailbox.Memory
	logs  *syncBuffer
}

func newTestServer(tb testing.TB, cfg Config) *testServer {
	tb.Helper()
	var users mailbox.MemoryUsers
	ts := &testServer{store: users.Add("u", "p"), logs: &syncBuffer{}}
	cfg.Auth = &users
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = -1
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = -1 // every pipe connection shows the same made-up address
	}
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ts.srv = srv
	ts.ln = &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	go srv.Serve(ts.ln)
	tb.Cleanup(func() {
		srv.Close()
		if tb.Failed() {
			tb.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

// client is a raw IMAP client for scripted conversations.
type client struct {
	tb testing.TB
	c  net.Conn
	r  *bufio.Reader
}

// dial connects from loopback, or from a remote address if remote is set,
// and reads the greeting.
func (ts *testServer) dial(tb testing.TB, remote bool) (*client, string) {
	tb.Helper()
	a, b := net.Pipe()
	var sc net.Conn = loopbackConn{b}
	if remote {
		sc = remoteConn{b}
	}
	ts.ln.conns <- sc
	a.SetDeadline(time.Now().Add(10 * time.Second))
	tb.Cleanup(func() { a.Close() })
	c := &client{tb: tb, c: a, r: bufio.NewReader(a)}
	return c, c.line()
}

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000} }

// send writes s without waiting. net.Pipe is unbuffered, so it writes from
// a goroutine and the reads below let it through.
func (c *client) send(s string) {
	go io.WriteString(c.c, s)
}

func (c *client) line() string {
	c.tb.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.tb.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

// until reads lines up to the one starting with prefix and returns them all.
func (c *client) until(prefix string) string {
	c.tb.Helper()
	var sb strings.Builder
	for {
		l := c.line()
		sb.WriteString(l)
		if strings.HasPrefix(l, prefix) {
			return sb.String()
		}
	}
}

// closed reports whether the server closed the connection (after any
// remaining lines, which it returns).
func (c *client) closed() (string, bool) {
	rest, err := io.ReadAll(c.r)
	return string(rest), err == nil
}

func (c *client) login() {
	c.tb.Helper()
	c.send("l LOGIN u p\r\n")
	if l := c.until("l "); !strings.Contains(l, "l OK") {
		c.tb.Fatalf("login: %q", l)
	}
}
