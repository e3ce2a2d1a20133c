package smtpout

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
)

// mx is a remote MTA: it takes mail for known users, refuses unknown ones (550) and defers
// "busy" ones (451), and records what it received and how.
type mx struct {
	mu    sync.Mutex
	got   []received
	helos []string
}

type received struct {
	from  string
	rcpts []string
	data  []byte
	tls   bool
}

type mxSession struct {
	m     *mx
	conn  *smtp.Conn
	from  string
	rcpts []string
}

func (m *mx) NewSession(c *smtp.Conn) (smtp.Session, error) {
	m.mu.Lock()
	m.helos = append(m.helos, c.Hostname())
	m.mu.Unlock()
	return &mxSession{m: m, conn: c}, nil
}

func (s *mxSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *mxSession) Logout() error { return nil }
func (s *mxSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "nobody@"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case strings.HasPrefix(to, "busy@"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy, try later"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *mxSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.m.mu.Lock()
	s.m.got = append(s.m.got, received{from: s.from, rcpts: s.rcpts, data: b, tls: isTLS})
	s.m.mu.Unlock()
	return nil
}

func selfSigned(t *testing.T, host string) *tls.Config {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}}
}

// startMX serves on ip:port (port 0: a free one) and returns the port.
func startMX(t *testing.T, m *mx, ip string, port int, tlsCfg *tls.Config) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(m)
	s.Domain, s.TLSConfig = "mx.dest.example", tlsCfg
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func TestDeliver(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	withTLS, plain := &mx{}, &mx{}
	port := startMX(t, withTLS, "127.0.0.2", 0, selfSigned(t, "mx2.dest.example"))
	startMX(t, plain, "127.0.0.4", port, nil)
	// mx1 (preferred) is down: nothing listens on 127.0.0.3.
	srv.SetMX("dest.example", time.Hour, "mx2.dest.example:20", "mx1.dest.example:10")
	srv.SetAddrs("mx1.dest.example", time.Hour, "127.0.0.3")
	srv.SetAddrs("mx2.dest.example", time.Hour, "127.0.0.2")
	srv.SetAddrs("plain.example", time.Hour, "127.0.0.4") // no MX: the implicit MX
	srv.SetMX("nomail.example", time.Hour, ".:0")
	d := New(Config{Resolver: &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}, HELO: "gw1.acme.example", Port: port, Timeout: 2 * time.Second})
	ctx := context.Background()
	msg := []byte("From: alice@acme.example\r\nTo: bob@dest.example\r\nSubject: out\r\n\r\nHello\r\n.leading dot\r\n")

	res, err := d.Deliver(ctx, "dest.example", "alice@acme.example", []string{"bob@dest.example", "nobody@dest.example", "busy@dest.example"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Delivered || res[0].MX != "mx2.dest.example" {
		t.Fatalf("bob: %+v", res[0])
	}
	if res[1].Delivered || !res[1].Permanent || res[1].Code != 550 || res[1].Enhanced != "5.1.1" {
		t.Fatalf("nobody: %+v", res[1])
	}
	if res[2].Delivered || res[2].Permanent || res[2].Code != 451 {
		t.Fatalf("busy: %+v", res[2])
	}
	withTLS.mu.Lock()
	if len(withTLS.got) != 1 || !withTLS.got[0].tls || !bytes.Equal(withTLS.got[0].data, msg) || withTLS.got[0].from != "alice@acme.example" || withTLS.helos[0] != "gw1.acme.example" {
		t.Fatalf("the exchanger got %+v (helos %v)", withTLS.got, withTLS.helos)
	}
	withTLS.mu.Unlock()

	// No MX: the domain's own address, without TLS (opportunistic), the null sender.
	res, _ = d.Deliver(ctx, "plain.example", "", []string{"carol@plain.example"}, msg)
	if !res[0].Delivered || len(plain.got) != 1 || plain.got[0].tls || plain.got[0].from != "" {
		t.Fatalf("implicit MX: %+v, got %+v", res[0], plain.got)
	}
	// TLS required: the plain exchanger is refused, and the recipient waits.
	strict := New(Config{Resolver: d.cfg.Resolver, HELO: "gw1.acme.example", Port: port, Timeout: 2 * time.Second, RequireTLS: true})
	res, _ = strict.Deliver(ctx, "plain.example", "", []string{"carol@plain.example"}, msg)
	if res[0].Delivered || res[0].Permanent || !strings.Contains(res[0].Text, "STARTTLS") {
		t.Fatalf("TLS required: %+v", res[0])
	}
	// A null MX: refused for good at once.
	res, _ = d.Deliver(ctx, "nomail.example", "alice@acme.example", []string{"x@nomail.example"}, msg)
	if !res[0].Permanent || res[0].Enhanced != "5.1.10" {
		t.Fatalf("null MX: %+v", res[0])
	}
	// No such domain at all: refused for good (5.1.2), not retried for days.
	res, _ = d.Deliver(ctx, "nowhere.example", "alice@acme.example", []string{"x@nowhere.example"}, msg)
	if res[0].Delivered || !res[0].Permanent || res[0].Enhanced != "5.1.2" {
		t.Fatalf("unknown domain: %+v", res[0])
	}
	// DNS failing: retried later, with why.
	srv.Fail("dest.example", 2)
	res, _ = d.Deliver(ctx, "dest.example", "alice@acme.example", []string{"bob@dest.example"}, msg)
	if res[0].Delivered || res[0].Permanent || res[0].Text == "" {
		t.Fatalf("DNS failing: %+v", res[0])
	}
	srv.Fail("dest.example", 0)
	// A base TLS configuration does not turn opportunistic TLS into verified TLS: the
	// exchanger's self-signed certificate is still taken.
	withBase := New(Config{Resolver: d.cfg.Resolver, HELO: "gw1.acme.example", Port: port, Timeout: 2 * time.Second, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}})
	if res, _ = withBase.Deliver(ctx, "dest.example", "alice@acme.example", []string{"bob@dest.example"}, msg); !res[0].Delivered {
		t.Fatalf("opportunistic TLS with a base config: %+v", res[0])
	}
}

// relay is a smarthost: it wants AUTH PLAIN as gw/secret (only after STARTTLS).
type relay struct{ mx }

type relaySession struct {
	mxSession
	authed bool
}

func (r *relay) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &relaySession{mxSession: mxSession{m: &r.mx, conn: c}}, nil
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "gw" || pass != "secret" {
			return errors.New("bad credentials")
		}
		s.authed = true
		return nil
	}), nil
}

func (s *relaySession) Mail(from string, o *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	return s.mxSession.Mail(from, o)
}

// With a smarthost every domain goes there (no MX lookup), over STARTTLS with AUTH; a wrong
// password leaves the mail pending (a 4xx-like outcome, retried), never bounced.
func TestDeliverThroughSmarthost(t *testing.T) {
	r := &relay{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(r)
	s.Domain, s.TLSConfig = "smarthost.example", selfSigned(t, "smarthost.example")
	go s.Serve(l)
	defer s.Close()
	dns, err := dnstest.Start() // answers nothing: an MX lookup would fail
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	sh := &Smarthost{Addr: l.Addr().String(), Username: "gw", Password: "secret", InsecureTLS: true}
	d := New(Config{Resolver: &dnsres.Resolver{Server: dns.Addr, Timeout: time.Second}, HELO: "gw.acme.example", Smarthost: sh})
	res, err := d.Deliver(context.Background(), "anywhere.example", "alice@acme.example", []string{"carol@anywhere.example"}, []byte("Subject: x\r\n\r\nvia the relay\r\n"))
	if err != nil || len(res) != 1 || !res[0].Delivered {
		t.Fatalf("through the smarthost: %+v %v", res, err)
	}
	r.mu.Lock()
	if len(r.got) != 1 || !r.got[0].tls || !bytes.Contains(r.got[0].data, []byte("via the relay")) {
		t.Fatalf("the smarthost got %+v", r.got)
	}
	r.mu.Unlock()
	// The certificate is checked unless InsecureTLS.
	sh.InsecureTLS = false
	if res, _ := d.Deliver(context.Background(), "anywhere.example", "alice@acme.example", []string{"carol@anywhere.example"}, []byte("x")); res[0].Delivered || res[0].Permanent {
		t.Fatalf("an unverified smarthost certificate was accepted: %+v", res)
	}
	sh.InsecureTLS, sh.Password = true, "wrong"
	if res, _ := d.Deliver(context.Background(), "anywhere.example", "alice@acme.example", []string{"carol@anywhere.example"}, []byte("x")); res[0].Delivered || res[0].Permanent {
		t.Fatalf("a wrong password: %+v", res)
	}
}
