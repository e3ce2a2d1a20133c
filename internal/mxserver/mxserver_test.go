package mxserver

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
	"epost/internal/mailauth"
	"epost/internal/ring"
)

// fakeRing stores what Deliver gets; users are the known addresses.
type fakeRing struct {
	mu      sync.Mutex
	users   map[string]bool
	failing int // the next n Deliver calls fail one recipient
	got     map[[16]byte][]byte
	calls   int
	lookErr error
}

func (f *fakeRing) Lookup(_ context.Context, addr string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.users[addr], f.lookErr
}

func (f *fakeRing) Deliver(_ context.Context, rcpts []string, nids [][16]byte, msg []byte) ([]Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	st := make([]Status, len(rcpts))
	for i, r := range rcpts {
		if !f.users[r] {
			st[i] = Unknown
			continue
		}
		if f.failing > 0 && i == len(rcpts)-1 {
			f.failing--
			st[i] = Failed
			continue
		}
		if _, dup := f.got[nids[i]]; !dup {
			f.got[nids[i]] = append([]byte(nil), msg...)
		}
		st[i] = Delivered
	}
	return st, nil
}

type fixture struct {
	srv  *Server
	addr string
	ring *fakeRing
	dns  *dnstest.Server
	key  ed25519.PrivateKey
	pol  *ring.Policy
}

func start(t *testing.T, set func(p *ring.Policy)) *fixture {
	t.Helper()
	d, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	pub, key, _ := ed25519.GenerateKey(nil)
	d.SetTXT("sender.example", time.Hour, "v=spf1 ip4:127.0.0.1 -all")
	d.SetTXT("sel._domainkey.sender.example", time.Hour, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	d.SetTXT("_dmarc.sender.example", time.Hour, "v=DMARC1; p=reject")
	d.SetTXT("bank.example", time.Hour, "v=spf1 ip4:192.0.2.1 -all")
	d.SetTXT("_dmarc.bank.example", time.Hour, "v=DMARC1; p=reject")
	pol := &ring.Policy{AcceptDomains: []string{"acme.example"}, MaxMessageBytes: 1 << 20, MaxRecipients: 3,
		DMARC: ring.DMARCEnforce, SPFFail: ring.SPFTag, MaxConnsPerIP: 5, MaxMessagesPerIPPerMinute: 50, Postmaster: "bob@acme.example"}
	if set != nil {
		set(pol)
	}
	fr := &fakeRing{users: map[string]bool{"bob@acme.example": true, "carol@acme.example": true}, got: map[[16]byte][]byte{}}
	s, err := New(Config{
		Hostname: "mx.acme.example", Policy: func() *ring.Policy { return pol }, Ring: fr,
		Checker: &mailauth.Checker{Resolver: &dnsres.Resolver{Server: d.Addr, Timeout: time.Second}},
		Secret:  []byte("ring secret"), DeliverTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return &fixture{srv: s, addr: ln.Addr().String(), ring: fr, dns: d, key: key, pol: pol}
}

const plain = "From: Alice <alice@sender.example>\r\nTo: bob@acme.example\r\nSubject: hello\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.example>\r\n\r\nHello Bob.\r\n"

// send runs one transaction; it returns the first error and the command it came from.
func send(t *testing.T, addr, from string, to []string, msg string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return "dial", err
	}
	defer c.Close()
	if err := c.Hello("mta.sender.example"); err != nil {
		return "helo", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "mail", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "rcpt", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "data", err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return "data", err
	}
	if err := w.Close(); err != nil {
		return "data", err
	}
	return "", c.Quit()
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestInboundDelivered(t *testing.T) {
	f := start(t, nil)
	signed, err := mailauth.Sign([]byte(plain), mailauth.SignOptions{Domain: "sender.example", Selector: "sel", Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	// A sender tries to pass its own verdict off as ours: it must be gone.
	forged := "Authentication-Results: mx.acme.example; dmarc=pass header.from=bank.example\r\n" + string(signed)
	if where, err := send(t, f.addr, "alice@sender.example", []string{"bob@acme.example", "Carol@ACME.example"}, forged); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if len(f.ring.got) != 2 {
		t.Fatalf("%d copies stored, want 2", len(f.ring.got))
	}
	for _, m := range f.ring.got {
		s := string(m)
		if !strings.HasPrefix(s, "Received: from mta.sender.example ([127.0.0.1])") {
			t.Fatalf("no Received field first:\n%s", s)
		}
		if strings.Count(s, "Authentication-Results:") != 1 || !strings.Contains(s, "spf=pass") || !strings.Contains(s, "dkim=pass") || !strings.Contains(s, "dmarc=pass") {
			t.Fatalf("Authentication-Results wrong:\n%s", s)
		}
		if strings.Contains(s, "bank.example") {
			t.Fatalf("the forged verdict survived:\n%s", s)
		}
	}
	// The same DATA again (the sender lost our 250): the same ids, nothing new.
	if where, err := send(t, f.addr, "alice@sender.example", []string{"bob@acme.example", "carol@acme.example"}, forged); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if len(f.ring.got) != 2 {
		t.Fatalf("a retried message made %d copies, want 2", len(f.ring.got))
	}
	if st := f.srv.Stats(); st.Accepted != 2 || st.Recipients != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInboundRefusals(t *testing.T) {
	f := start(t, nil)
	cases := []struct {
		name, from string
		to         []string
		msg        string
		where      string
		code       int
		reason     string
	}{
		{"open relay", "alice@sender.example", []string{"victim@elsewhere.example"}, plain, "rcpt", 550, ReasonRelay},
		{"relay via a lookalike", "alice@sender.example", []string{"x@acme.example.evil.example"}, plain, "rcpt", 550, ReasonRelay},
		{"unknown user", "alice@sender.example", []string{"nobody@acme.example"}, plain, "rcpt", 550, ReasonUnknownUser},
		{"forged bank under p=reject", "ceo@bank.example", []string{"bob@acme.example"},
			strings.ReplaceAll(plain, "alice@sender.example", "ceo@bank.example"), "data", 550, ReasonDMARC},
		{"no From", "alice@sender.example", []string{"bob@acme.example"}, "Subject: x\r\n\r\nbody\r\n", "data", 550, ReasonDMARC},
		{"too large", "alice@sender.example", []string{"bob@acme.example"}, plain + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 16000), "data", 552, ReasonSize},
	}
	for _, c := range cases {
		before := f.srv.Stats().Refused[c.reason]
		where, err := send(t, f.addr, c.from, c.to, c.msg)
		if where != c.where || code(err) != c.code {
			t.Fatalf("%s: refused at %q with %v, want %s %d", c.name, where, err, c.where, c.code)
		}
		if f.srv.Stats().Refused[c.reason] != before+1 {
			t.Fatalf("%s: refusal not counted as %s: %+v", c.name, c.reason, f.srv.Stats())
		}
	}
	if len(f.ring.got) != 0 {
		t.Fatalf("refused mail stored: %d", len(f.ring.got))
	}
	// Too many recipients: 452 for the extra one.
	c, _ := smtp.Dial(f.addr)
	defer c.Close()
	_ = c.Hello("x")
	_ = c.Mail("alice@sender.example", nil)
	for i, r := range []string{"bob@acme.example", "carol@acme.example", "postmaster@acme.example"} {
		err := c.Rcpt(r, nil)
		if i < 2 && err != nil {
			t.Fatalf("rcpt %s: %v", r, err)
		}
		if i >= 2 && err != nil {
			t.Fatalf("postmaster (mapped to bob, already there) refused: %v", err)
		}
	}
	f.pol.MaxRecipients = 2
	f.ring.users["dave@acme.example"] = true
	if err := c.Rcpt("dave@acme.example", nil); code(err) != 452 {
		t.Fatalf("third recipient over the limit: %v", err)
	}
}

// A bounce from the internet (null reverse path, RFC 5321 section 4.5.5) reaches its user.
func TestInboundNullSender(t *testing.T) {
	f := start(t, func(p *ring.Policy) { p.DMARC = ring.DMARCReport })
	bounce := "From: MAILER-DAEMON@sender.example\r\nTo: bob@acme.example\r\nSubject: Undelivered Mail\r\n\r\nyour mail bounced\r\n"
	if where, err := send(t, f.addr, "", []string{"bob@acme.example"}, bounce); err != nil {
		t.Fatalf("null sender: %s %v", where, err)
	}
	if len(f.ring.got) != 1 {
		t.Fatalf("%d copies, want 1", len(f.ring.got))
	}
}

func TestInboundRetryAfterFailure(t *testing.T) {
	f := start(t, func(p *ring.Policy) { p.DMARC = ring.DMARCReport })
	f.ring.failing = 1
	to := []string{"bob@acme.example", "carol@acme.example"}
	if where, err := send(t, f.addr, "alice@sender.example", to, plain); where != "data" || code(err) != 451 {
		t.Fatalf("one copy not stored: %s %v, want 451 at data", where, err)
	}
	if where, err := send(t, f.addr, "alice@sender.example", to, plain); err != nil {
		t.Fatalf("retry: %s %v", where, err)
	}
	if len(f.ring.got) != 2 {
		t.Fatalf("after a 451 and a retry: %d copies, want 2", len(f.ring.got))
	}
	// A lookup the ring cannot answer now: 451 at RCPT.
	f.ring.lookErr = errors.New("timeout")
	if where, err := send(t, f.addr, "alice@sender.example", to, plain); where != "rcpt" || code(err) != 451 {
		t.Fatalf("lookup failing: %s %v", where, err)
	}
}

func TestInboundLimits(t *testing.T) {
	f := start(t, func(p *ring.Policy) {
		p.MaxMessagesPerIPPerMinute = 2
		p.MaxConnsPerIP = 2
		p.Deny = []string{"spam.example"}
	})
	to := []string{"bob@acme.example"}
	// The server counts a connection until it has closed its side, a little after QUIT.
	settle := func() {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			f.srv.mu.Lock()
			n := len(f.srv.conns)
			f.srv.mu.Unlock()
			if n == 0 || time.Now().After(deadline) {
				return
			}
		}
	}
	for i := range 2 {
		settle()
		if where, err := send(t, f.addr, "alice@sender.example", to, plain); err != nil {
			t.Fatalf("message %d: %s %v", i, where, err)
		}
	}
	settle()
	if where, err := send(t, f.addr, "alice@sender.example", to, plain); where != "mail" || code(err) != 450 {
		t.Fatalf("third message in a minute: %s %v, want 450 at mail", where, err)
	}
	settle()
	if where, err := send(t, f.addr, "x@spam.example", to, plain); where != "mail" || code(err) != 550 {
		t.Fatalf("denied sender: %s %v", where, err)
	}
	// Two connections open: the third hears 421.
	settle()
	a, _ := net.Dial("tcp", f.addr)
	b, _ := net.Dial("tcp", f.addr)
	defer a.Close()
	defer b.Close()
	buf := make([]byte, 64)
	for _, c := range []net.Conn{a, b} {
		if n, _ := c.Read(buf); !strings.HasPrefix(string(buf[:n]), "220") {
			t.Fatalf("greeting %q", buf[:n])
		}
	}
	c, _ := net.Dial("tcp", f.addr)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := c.Read(buf); !strings.HasPrefix(string(buf[:n]), "421 4.7.0") {
		t.Fatalf("third connection: %q", buf[:n])
	}
}

func TestNotificationID(t *testing.T) {
	a := NotificationID([]byte("s"), "bob@acme.example", []byte("m"))
	if a != NotificationID([]byte("s"), "BOB@acme.example", []byte("m")) {
		t.Fatal("the id depends on the address's case")
	}
	if a == NotificationID([]byte("s"), "carol@acme.example", []byte("m")) || a == NotificationID([]byte("t"), "bob@acme.example", []byte("m")) ||
		a == NotificationID([]byte("s"), "bob@acme.example", []byte("n")) {
		t.Fatal("ids collide")
	}
}
