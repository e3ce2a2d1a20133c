package pop3server

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
)

const (
	testUser = "bob@example.org"
	testPass = "secret"
)

func newTestServer(t testing.TB, cfg Config) (*Server, *mailbox.Memory) {
	var users mailbox.MemoryUsers
	store := users.Add(testUser, testPass)
	inbox, _ := store.Folder(mailbox.Inbox)
	inbox.Append([]byte("Subject: one\r\n\r\n.hello\r\n"), nil, time.Time{})
	inbox.Append([]byte("Subject: two\r\n\r\nworld\r\n"), nil, time.Time{})
	cfg.Auth = &users
	cfg.AuthFailDelay = -1
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, store
}

// client is a line-oriented test client.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if line != "" {
		if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
			c.t.Fatalf("write %q: %v", line, err)
		}
	}
	resp, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("after %q: %v", line, err)
	}
	return strings.TrimRight(resp, "\r\n")
}

// multi reads the rest of a multi-line response.
func (c *client) multi() []string {
	var lines []string
	for {
		l := c.cmd("")
		if l == "." {
			return lines
		}
		lines = append(lines, l)
	}
}

func serveTCP(t *testing.T, s *Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) *client {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// remoteConn pretends to come from another machine.
type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000} }

// TestPlaintextPolicy: from another machine without TLS, USER is neither
// advertised nor accepted unless AllowPlaintextAuth (RFC 2595 section 2.3).
func TestPlaintextPolicy(t *testing.T) {
	for _, allow := range []bool{false, true} {
		s, _ := newTestServer(t, Config{AllowPlaintextAuth: allow})
		a, b := net.Pipe()
		go s.handle(remoteConn{b}, false)
		c := &client{t: t, conn: a, r: bufio.NewReader(a)}
		c.cmd("")
		c.cmd("CAPA")
		caps := strings.Join(c.multi(), " ")
		if strings.Contains(caps, "USER") != allow {
			t.Errorf("allow=%v: CAPA %q", allow, caps)
		}
		if resp := c.cmd("USER " + testUser); strings.HasPrefix(resp, "+OK") != allow {
			t.Errorf("allow=%v: USER -> %q", allow, resp)
		}
		a.Close()
	}

	// After STLS (RFC 2595 section 4) the remote client may log in, and
	// a command pipelined behind STLS in clear text is thrown away.
	s, _ := newTestServer(t, Config{TLS: selfSigned(t)})
	a, b := net.Pipe()
	go s.handle(remoteConn{b}, false)
	c := &client{t: t, conn: a, r: bufio.NewReader(a)}
	c.cmd("")
	a.SetDeadline(time.Now().Add(5 * time.Second))
	a.Write([]byte("STLS\r\nUSER injected\r\n"))
	if got := c.cmd(""); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("STLS: %q", got)
	}
	tc := tls.Client(a, &tls.Config{InsecureSkipVerify: true})
	c = &client{t: t, conn: tc, r: bufio.NewReader(tc)}
	if got := c.cmd("PASS " + testPass); !strings.HasPrefix(got, "-ERR send USER first") {
		t.Errorf("pipelined USER survived STLS: %q", got)
	}
	c.cmd("USER " + testUser)
	if got := c.cmd("PASS " + testPass); !strings.HasPrefix(got, "+OK") {
		t.Errorf("PASS over STLS: %q", got)
	}
	c.cmd("CAPA")
	if caps := strings.Join(c.multi(), " "); strings.Contains(caps, "STLS") {
		t.Errorf("STLS offered twice: %q", caps)
	}
	a.Close()
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

func TestSession(t *testing.T) {
	s, store := newTestServer(t, Config{})
	addr := serveTCP(t, s)
	c := dial(t, addr)
	steps := []struct{ send, want string }{
		{"", "+OK"},
		{"STAT", "-ERR"},
		{"PASS x", "-ERR send USER first"},
		{"USER " + testUser, "+OK"},
		{"PASS wrong", "-ERR [AUTH]"},
		{"USER " + testUser, "+OK"},
		{"PASS " + testPass, "+OK maildrop has 2"},
		{"STAT", "+OK 2 "},
		{"LIST 3", "-ERR"},
		{"LIST 0", "-ERR"},
		{"RETR x", "-ERR"},
		{"TOP 1", "-ERR"},
		{"DELE 1", "+OK"},
		{"DELE 1", "-ERR"},
		{"STAT", "+OK 1 "},
		{"NOOP", "+OK"},
		{"USER x", "-ERR already"},
		{"FOO", "-ERR unknown"},
	}
	for _, st := range steps {
		if got := c.cmd(st.send); !strings.HasPrefix(got, st.want) {
			t.Fatalf("%q -> %q, want %q", st.send, got, st.want)
		}
	}
	// A second session of the same user is refused while this one runs.
	c2 := dial(t, addr)
	c2.cmd("")
	c2.cmd("USER " + testUser)
	if got := c2.cmd("PASS " + testPass); !strings.HasPrefix(got, "-ERR [IN-USE]") {
		t.Errorf("second session: %q", got)
	}
	if got := c.cmd("RETR 2"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("RETR 2: %q", got)
	}
	if body := c.multi(); strings.Join(body, "|") != "Subject: two||world" {
		t.Errorf("RETR 2 body %q", body)
	}
	// Pipelined commands get their replies together (RFC 2449 section 6.6).
	c.conn.Write([]byte("NOOP\r\nUIDL 2\r\nQUIT\r\n"))
	c.cmd("")
	inbox, _ := store.Folder(mailbox.Inbox)
	st, _ := inbox.Status()
	if got := c.cmd(""); got != "+OK 2 "+strconv.FormatUint(uint64(st.UIDValidity), 10)+".2" {
		t.Errorf("UIDL 2: %q", got)
	}
	if got := c.cmd(""); !strings.HasPrefix(got, "+OK") {
		t.Errorf("QUIT: %q", got)
	}
	if st, _ := inbox.Status(); st.Messages != 1 {
		t.Errorf("after QUIT %d messages, want 1", st.Messages)
	}
}

// TestLimits: connection limit, idle timeout, long lines, repeated errors.
func TestLimits(t *testing.T) {
	s, _ := newTestServer(t, Config{MaxConns: 1, IdleTimeout: 200 * time.Millisecond})
	addr := serveTCP(t, s)
	c := dial(t, addr)
	c.cmd("")
	c2 := dial(t, addr)
	if got := c2.cmd(""); !strings.HasPrefix(got, "-ERR [SYS/TEMP] too many") {
		t.Errorf("second connection: %q", got)
	}
	if got := c.cmd("USER " + strings.Repeat("x", 5000)); !strings.HasPrefix(got, "-ERR command line too long") {
		t.Errorf("long line: %q", got)
	}
	start := time.Now()
	if got := c.cmd(""); !strings.Contains(got, "autologout") {
		t.Errorf("idle: %q", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle timeout took %v", d)
	}
}

// fuzzConn feeds fixed input to a session and discards its output.
type fuzzConn struct {
	r io.Reader
	net.Conn
}

func (c fuzzConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c fuzzConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c fuzzConn) Close() error                     { return nil }
func (c fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzSession runs whole sessions on arbitrary client bytes: no panic, no
// hang, and the store stays consistent.
func FuzzSession(f *testing.F) {
	login := "USER " + testUser + "\r\nPASS " + testPass + "\r\n"
	for _, s := range []string{
		"CAPA\r\nQUIT\r\n",
		login + "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n",
		login + "TOP 1 999999999\r\nLIST 99999999999999\r\nDELE 0\r\n",
		"USER\r\nPASS\r\n\r\n\x00\xff\r\nSTLS\r\n",
	} {
		f.Add([]byte(s))
	}
	var mu sync.Mutex
	f.Fuzz(func(t *testing.T, in []byte) {
		mu.Lock()
		defer mu.Unlock()
		s, store := newTestServer(t, Config{})
		conn := fuzzConn{r: bytes.NewReader(in)}
		ss := &session{srv: s, conn: conn, log: s.log, r: bufio.NewReaderSize(conn, 4096), w: bufio.NewWriter(conn)}
		ss.run()
		inbox, _ := store.Folder(mailbox.Inbox)
		if st, err := inbox.Status(); err != nil || st.Messages > 2 {
			t.Fatalf("store after session: %+v %v", st, err)
		}
	})
}
