package imapserver

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// step is one exchange of a scripted conversation: send, then read up to
// the line starting with until, which must contain every want and no
// notWant.
type step struct {
	send, until   string
	want, notWant []string
}

// TestFrontScripts runs conversations that exercise the front layer: where
// commands start (literals, continuation lines), ID, unknown commands before
// login, and capability lists.
func TestFrontScripts(t *testing.T) {
	big := strings.Repeat("x NOOP\r\n", 625) // 5000 octets
	trap := "\r\n* CAPABILITY IMAP4rev1\r\nb OK x\r\n"
	for _, tc := range []struct {
		name  string
		login bool
		steps []step
	}{
		{"id before login", false, []step{
			{`a ID ("name" "imaplib" "version" "3")` + "\r\n", "a ", []string{`* ID ("name" "epost" "vendor" "ePOST in Go")`, "a OK"}, nil},
		}},
		{"id after login", true, []step{
			{"a ID NIL\r\n", "a ", []string{"* ID (", "a OK"}, nil},
			{"b id ()\r\n", "b ", []string{"b OK"}, nil},
		}},
		{"id with literals", false, []step{
			{`a ID ("name" {3}` + "\r\n", "+ ", nil, nil},
			{`abc "os" {2+}` + "\r\nxy)\r\n", "a ", []string{"a OK"}, []string{"+ "}},
		}},
		{"id errors", false, []step{
			{"a ID\r\n", "a ", []string{"a BAD"}, nil},
			{"b ID (\"k\")\r\n", "b ", []string{"b BAD"}, nil},
			{"c ID (" + strings.Repeat(`"k" "v" `, 31) + ")\r\n", "c ", []string{"c BAD Too many ID fields"}, nil},
			{"d ID (\"k\" {5000}\r\n", "d ", []string{"d BAD"}, []string{"+ "}},
			{"e ID (\"k\" {5000+}\r\n" + big + ")\r\nf NOOP\r\n", "f ", []string{"e BAD", "f OK"}, []string{"x OK"}},
		}},
		{"unknown commands before login", false, []step{
			{"a FROBNICATE\r\n", "a ", []string{"a BAD Unknown command"}, nil},
			{"b FOO {5}\r\nc NOOP\r\n", "c ", []string{"b BAD", "c OK"}, []string{"+ "}},
			{"\r\nd NOOP\r\n", "d ", []string{"* BAD", "d OK"}, nil},
		}},
		{"unknown command literal dropped", false, []step{
			{"a FOO {6+}\r\nb NOOP\r\nc NOOP\r\n", "c ", []string{"a BAD", "c OK"}, []string{"b OK"}},
		}},
		{"unknown commands after login go to the engine", true, []step{
			{"a FOO\r\nb BAR\r\nc BAZ\r\nd QUX\r\ne NOOP\r\n", "e ", []string{"d BAD", "e OK"}, nil},
		}},
		{"literals in LOGIN", false, []step{
			{"a LOGIN {1}\r\n", "+ ", nil, nil},
			{"u {1}\r\n", "+ ", nil, nil},
			{"p\r\n", "a ", []string{"a OK"}, nil},
			{"b ID NIL\r\n", "b ", []string{"b OK"}, nil},
		}},
		{"refused synchronizing literal", false, []step{
			{"a LOGIN {5000}\r\n", "a ", []string{"a BAD"}, []string{"+ "}},
			{"b NOOP\r\n", "b ", []string{"b OK"}, nil},
		}},
		{"refused non-synchronizing literal", false, []step{
			{"a LOGIN {5000+}\r\n" + big + " p\r\nb NOOP\r\n", "b ", []string{"a BAD", "b OK"}, []string{"x OK", "x BAD"}},
		}},
		{"oversized literal on a continuation line", false, []step{
			{"a LOGIN {1}\r\n", "+ ", nil, nil},
			{"u {5000}\r\n", "a ", []string{"a BAD"}, []string{"+ "}},
			{"b LOGIN {1+}\r\nu {5000+}\r\n" + big + "\r\nc NOOP\r\n", "c ", []string{"b BAD", "c OK"}, []string{"x OK", "x BAD"}},
		}},
		{"oversized literals after login", true, []step{
			{"a SEARCH TEXT {5000}\r\n", "a ", []string{"a BAD"}, []string{"+ "}},
			{"b APPEND {5000}\r\n", "b ", []string{"b BAD"}, []string{"+ "}},
			{"c APPEND INBOX {5000}\r\n", "+ ", nil, nil},
			{big + "\r\n", "c ", []string{"c OK [APPENDUID"}, []string{"x OK"}},
		}},
		{"authenticate lines are not commands", false, []step{
			{"a AUTHENTICATE PLAIN\r\n", "+", nil, nil},
			{base64.StdEncoding.EncodeToString([]byte("\x00u\x00p")) + "\r\n", "a ", []string{"a OK [CAPABILITY", " ID]"}, []string{"BAD"}},
		}},
		{"idle done is not a command", true, []step{
			{"s SELECT INBOX\r\n", "s ", []string{"s OK"}, nil},
			{"i IDLE\r\n", "+ ", nil, nil},
			{"DONE\r\n", "i ", []string{"i OK"}, nil},
			{"j ID NIL\r\n", "j ", []string{"j OK"}, nil},
		}},
		{"capabilities", false, []step{
			{"a CAPABILITY\r\n", "a ", []string{"AUTH=PLAIN", " ID\r\n"}, []string{"LOGINDISABLED", "STARTTLS"}},
			{"b LOGIN u p\r\n", "b ", []string{"b OK [CAPABILITY ", " ID] "}, []string{"AUTH="}},
			{"c CAPABILITY\r\n", "c ", []string{"UNAUTHENTICATE", "APPENDLIMIT=", " ID\r\n"}, []string{"CONDSTORE", "QRESYNC", "AUTH="}},
		}},
		{"unauthenticate", true, []step{
			{"u UNAUTHENTICATE\r\n", "u ", []string{"u OK"}, nil},
			{"v FOO\r\n", "v ", []string{"v BAD Unknown command"}, nil},
			{"w CAPABILITY\r\n", "w ", []string{"AUTH=PLAIN"}, nil},
			{"x LOGIN u p\r\n", "x ", []string{"x OK"}, nil},
		}},
		{"capability text inside a literal is left alone", true, []step{
			{fmt.Sprintf("a APPEND INBOX {%d}\r\n", len(trap)), "+ ", nil, nil},
			{trap + "\r\n", "a ", []string{"a OK"}, nil},
			{"c SELECT INBOX\r\n", "c ", nil, nil},
			{"d FETCH 1 BODY.PEEK[]\r\n", "d ", []string{fmt.Sprintf("{%d}\r\n%s)", len(trap), trap)}, []string{"IMAP4rev1 ID"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			c, greeting := ts.dial(t, false)
			if !strings.Contains(greeting, " ID]") {
				t.Errorf("greeting %q", greeting)
			}
			if tc.login {
				c.login()
			}
			for i, s := range tc.steps {
				c.send(s.send)
				got := c.until(s.until)
				for _, w := range s.want {
					if !strings.Contains(got, w) {
						t.Errorf("step %d: no %q in %q", i, w, got)
					}
				}
				for _, w := range s.notWant {
					if strings.Contains(got, w) {
						t.Errorf("step %d: %q in %q", i, w, got)
					}
				}
			}
		})
	}
}

// TestUnknownCommandLimit: before login, the fourth unknown command goes to
// the engine, which answers BAD and hangs up (its defence against
// cross-protocol attacks, e.g. a browser posting to the IMAP port).
func TestUnknownCommandLimit(t *testing.T) {
	ts := newTestServer(t, Config{})
	c, _ := ts.dial(t, false)
	c.send("GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nUser-Agent: y\r\nz NOOP\r\n")
	for _, want := range []string{"GET BAD", "Host: BAD", "Accept: BAD", "User-Agent: BAD"} {
		if l := c.line(); !strings.HasPrefix(l, want) {
			t.Errorf("got %q, want %s", l, want)
		}
	}
	rest, ok := c.closed()
	if !ok || !strings.Contains(rest, "* BYE") || strings.Contains(rest, "z OK") {
		t.Errorf("after the limit: %q (closed %v)", rest, ok)
	}
}

// TestEngineCommands checks engineCommands against the engine: before
// login, a command it knows gets an answer and the connection lives on,
// while an unknown one would end it.
func TestEngineCommands(t *testing.T) {
	ts := newTestServer(t, Config{})
	for name := range engineCommands {
		if name == "LOGOUT" {
			continue
		}
		c, _ := ts.dial(t, false)
		// Three unknown commands use up the front layer's allowance, so
		// that a name the engine did not know would reach it and end the
		// connection.
		c.send("u1 X\r\nu2 X\r\nu3 X\r\na " + name + "\r\nb NOOP\r\n")
		got := c.until("b ")
		if !strings.Contains(got, "b OK") || strings.Contains(got, "BYE") {
			t.Errorf("%s: %q", name, got)
		}
	}
}

func testTLSConfig(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestStartTLS: plaintext pipelined after STARTTLS is dropped, not run over
// TLS (command injection), and the policy follows the transport.
func TestStartTLS(t *testing.T) {
	ts := newTestServer(t, Config{TLS: testTLSConfig(t)})
	c, greeting := ts.dial(t, true)
	if !strings.Contains(greeting, "STARTTLS") || !strings.Contains(greeting, "LOGINDISABLED") || strings.Contains(greeting, "AUTH=") {
		t.Errorf("greeting %q", greeting)
	}
	c.send("a LOGIN u p\r\n")
	if l := c.line(); !strings.HasPrefix(l, "a NO [PRIVACYREQUIRED]") {
		t.Errorf("plaintext login: %q", l)
	}
	c.send("b STARTTLS\r\nx LOGIN u p\r\n")
	if l := c.line(); !strings.HasPrefix(l, "b OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	time.Sleep(50 * time.Millisecond) // let the injected line reach the server first
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true})
	c = &client{tb: t, c: tc, r: bufio.NewReader(tc)}
	c.send("y NOOP\r\n")
	if got := c.until("y "); strings.Contains(got, "x ") || !strings.Contains(got, "y OK") {
		t.Errorf("after STARTTLS: %q", got)
	}
	c.send("z CAPABILITY\r\n")
	if got := c.until("z "); strings.Contains(got, "STARTTLS") || strings.Contains(got, "LOGINDISABLED") || !strings.Contains(got, "AUTH=PLAIN") {
		t.Errorf("capabilities over TLS: %q", got)
	}
	c.login()
	if !strings.Contains(ts.logs.String(), "plaintext after STARTTLS dropped") {
		t.Errorf("injection not logged:\n%s", ts.logs.String())
	}
}

// TestTimeouts: before login the command timeout applies, after login the
// idle timeout, and the server says BYE before it closes.
func TestTimeouts(t *testing.T) {
	ts := newTestServer(t, Config{CommandTimeout: 100 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
	for _, login := range []bool{false, true} {
		c, _ := ts.dial(t, false)
		if login {
			c.login()
		}
		start := time.Now()
		rest, ok := c.closed()
		d := time.Since(start)
		if !ok || !strings.Contains(rest, "* BYE Autologout") {
			t.Errorf("login %v: %q closed %v", login, rest, ok)
		}
		if login && d < 300*time.Millisecond || !login && d > 300*time.Millisecond {
			t.Errorf("login %v: closed after %v", login, d)
		}
	}
}

// TestRemoteLoginDisabled: without TLS configured, a remote client sees
// LOGINDISABLED and gets PRIVACYREQUIRED for LOGIN and AUTHENTICATE.
func TestRemoteLoginDisabled(t *testing.T) {
	ts := newTestServer(t, Config{})
	c, greeting := ts.dial(t, true)
	if !strings.Contains(greeting, "LOGINDISABLED") || strings.Contains(greeting, "STARTTLS") {
		t.Errorf("greeting %q", greeting)
	}
	c.send("a LOGIN u p\r\nb AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00u\x00p")) + "\r\n")
	if got := c.until("b "); !strings.Contains(got, "a NO [PRIVACYREQUIRED]") || !strings.Contains(got, "b NO [PRIVACYREQUIRED]") {
		t.Errorf("remote login: %q", got)
	}
}

// TestMaxConns: connections beyond the limit get BYE; a closed one frees
// its slot.
func TestMaxConns(t *testing.T) {
	ts := newTestServer(t, Config{MaxConns: 1})
	c, g := ts.dial(t, false)
	if !strings.HasPrefix(g, "* OK") {
		t.Fatalf("first: %q", g)
	}
	_, g2 := ts.dial(t, false)
	if !strings.HasPrefix(g2, "* BYE") {
		t.Errorf("second: %q", g2)
	}
	c.send("z LOGOUT\r\n")
	c.closed()
	deadline := time.Now().Add(2 * time.Second)
	for ts.srv.active.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, g3 := ts.dial(t, false); !strings.HasPrefix(g3, "* OK") {
		t.Errorf("after close: %q", g3)
	}
}
