package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
	"epost/internal/mailauth"
	eposting "epost/internal/ring"
)

// newFedRing makes a ring of its own name and mail domain with one gateway (node0, which runs
// the global ring) and one node per user, its _epost record published in dns. The gateway
// joins the global ring through globalBootstrap (none: it founds it).
func newFedRing(t *testing.T, seed uint64, name string, dns *dnstest.Server, globalBootstrap string, users ...string) (*ring, string) {
	t.Helper()
	r, globals := newFedRingN(t, seed, name, dns, globalBootstrap, 1, 0, users...)
	return r, globals[0]
}

// newFedRingN is newFedRing with gateways gateways (node0..) and extra nodes without users or
// role after the users' nodes; it returns the gateways' global-ring addresses.
func newFedRingN(t *testing.T, seed uint64, name string, dns *dnstest.Server, globalBootstrap string, gateways, extra int, users ...string) (*ring, []string) {
	t.Helper()
	dir := t.TempDir()
	domain := name + ".example"
	r := &ring{t: t, dir: dir, pw: map[string]string{}, home: map[string]*node{}}
	ringDir := filepath.Join(dir, "ring")
	epost(t, "ring", "init", "--dir", ringDir, "--name", name, "--domain", domain)
	d, err := eposting.LoadDescriptor(ringDir)
	if err != nil {
		t.Fatal(err)
	}
	dns.SetTXT(eposting.DNSName(domain), 10*time.Minute, eposting.DNSValue(d.RingID))
	n := gateways + len(users) + extra
	ports := freePorts(t, n+gateways+3*len(users))
	globals := ports[n : n+gateways]
	for i := range n {
		nd := &node{t: t, name: fmt.Sprintf("%s-node%d", name, i), dir: filepath.Join(dir, fmt.Sprintf("node%d", i)),
			logPth: filepath.Join(dir, fmt.Sprintf("node%d.log", i)), seed: seed + uint64(1000*i)}
		args := []string{"node", "init", "--ring", ringDir, "--dir", nd.dir, "--listen", ports[i]}
		nd.extra = []string{"--resolver", dns.Addr}
		if i > 0 {
			args = append(args, "--bootstrap", ports[0])
		}
		switch u := i - gateways; {
		case i < gateways:
			args = append(args, "--gateway", "--imap", "", "--smtp", "", "--pop3", "")
			nd.extra = append(nd.extra, "--global-listen", globals[i])
			if boot := globalBootstrap; boot != "" || i > 0 {
				if i > 0 {
					boot = globals[0]
				}
				nd.extra = append(nd.extra, "--global-bootstrap", boot)
			}
		case u < len(users):
			p := ports[n+gateways+3*u : n+gateways+3*u+3]
			nd.imap, nd.smtp = p[0], p[1]
			args = append(args, "--imap", p[0], "--smtp", p[1], "--pop3", p[2])
		default:
			args = append(args, "--imap", "", "--smtp", "", "--pop3", "")
		}
		epost(t, args...)
		r.nodes = append(r.nodes, nd)
	}
	for i, u := range users {
		addr := u + "@" + domain
		pw := fmt.Sprintf("pw-%s-%d", u, seed%100000)
		pwFile := filepath.Join(dir, u+".pw")
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		epost(t, "user", "add", "--ring", ringDir, "--node", r.nodes[gateways+i].dir, "--address", addr, "--password-file", pwFile)
		r.pw[addr], r.home[addr] = pw, r.nodes[gateways+i]
	}
	r.marker = fmt.Sprintf("E2E-FED-MARKER-%d", seed)
	return r, globals
}

// TestMailBetweenRings: two rings of real node processes, each with a gateway, their domains
// confirmed by a DNS server; alice of acme mails bob of globex over SMTP on her own node, and
// bob reads it over IMAP on his, exactly once; then bob answers. An unknown user of the other
// ring is refused at RCPT.
func TestMailBetweenRings(t *testing.T) {
	seed := testSeed(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	acme, acmeGlobal := newFedRing(t, seed, "acme", dns, "", "alice")
	globex, _ := newFedRing(t, seed+7, "globex", dns, acmeGlobal, "bob")
	for _, n := range append(append([]*node{}, acme.nodes...), globex.nodes...) {
		n.start()
	}
	waitReady(t, append(append([]*node{}, acme.nodes...), globex.nodes...)...)
	alice, bob := "alice@acme.example", "bob@globex.example"
	countInbox(t, globex, bob, "nothing") // bob's keys open: his node files what is pushed to him
	countInbox(t, acme, alice, "nothing")

	// The gateways need a moment to admit each other; the first tries may be told to wait (451).
	tok := "across-" + acme.marker
	sent := time.Now()
	sendEventually(t, acme, alice, bob, "hello from acme", "body "+tok, 60*time.Second)
	took := waitInbox(t, globex, bob, tok, 60*time.Second)
	t.Logf("acme -> globex: 250 after %v, in bob's INBOX %v later", time.Since(sent).Round(time.Millisecond)-took.Round(time.Millisecond), took.Round(time.Millisecond))

	tok2 := "reply-" + globex.marker
	sendEventually(t, globex, bob, alice, "re: hello", "body "+tok2, 60*time.Second)
	waitInbox(t, acme, alice, tok2, 60*time.Second)

	if err := trySend(acme, alice, "nobody@globex.example", "x", "x"); err == nil || !isCode(err, 550) {
		t.Fatalf("unknown user of the other ring: %v, want 550", err)
	}
	// A message larger than one overlay message (5 MiB of attachment) goes in parts, from
	// alice's node to her ring's gateway and from there to globex's, and arrives once.
	tok3 := "big-" + acme.marker
	var bigBody strings.Builder
	bigBody.WriteString(tok3 + " \r\n")
	for bigBody.Len() < 5<<20 {
		bigBody.WriteString("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567\r\n")
	}
	sendEventually(t, acme, alice, bob, "big", bigBody.String(), 60*time.Second)
	waitInbox(t, globex, bob, tok3, 90*time.Second)
	// Gateways carried ciphertext: no file of any node of either ring holds the messages'
	// plaintext.
	for _, r := range []*ring{acme, globex} {
		for _, m := range []string{acme.marker, globex.marker} {
			r.marker = m
			if hits := r.scanPlaintext(); len(hits) > 0 {
				t.Fatalf("plaintext %q found in %v", m, hits)
			}
		}
	}
}

// inboxTokens logs in over IMAP and counts, for each token, the INBOX messages holding it.
func inboxTokens(t *testing.T, r *ring, user string, tokens []string) map[string]int {
	t.Helper()
	n := r.home[user]
	c, err := imapclient.DialStartTLS(n.imap, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatalf("imap dial %s: %v", n.imap, err)
	}
	defer c.Close()
	if err := c.Login(user, r.pw[user]).Wait(); err != nil {
		t.Fatalf("imap login %s: %v", user, err)
	}
	counts := map[string]int{}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages > 0 {
		var seq imap.SeqSet
		seq.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			body := m.FindBodySection(&imap.FetchItemBodySection{})
			for _, tok := range tokens {
				if bytes.Contains(body, []byte(tok+" ")) {
					counts[tok]++
				}
			}
		}
	}
	c.Logout().Wait()
	return counts
}

// TestGatewayKilledMidStream: two rings of four node processes, two gateways each; alice and
// bob write to each other (200 mails each way), and halfway through one gateway of each ring is
// killed with SIGKILL while it holds mail it has answered for, and never comes back. Every mail
// that got a 250 arrives exactly once.
//
// The gateways answer a hand-off from their queue at once (--hand-off-wait 1ms: the path a
// loaded machine takes after 5 s), and the kill comes while the other ring's gateways are
// down (killed too, and started again after it), so that the victim's queue holds mail it
// cannot have passed on. That mail
// is saved only by the origin's custody: the sender's node keeps each message a gateway only
// queued and offers it to another gateway after --custody-timeout (docs/gateway-design.md §8.2).
func TestGatewayKilledMidStream(t *testing.T) {
	seed := testSeed(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	const gateways = 2
	acme, acmeGlobals := newFedRingN(t, seed, "acme", dns, "", gateways, 1, "alice")
	globex, _ := newFedRingN(t, seed+7, "globex", dns, acmeGlobals[0], gateways, 1, "bob")
	all := append(append([]*node{}, acme.nodes...), globex.nodes...)
	keepLogsOnFailure(t, seed, all...)
	for _, n := range all {
		n.extra = append(n.extra, "--hand-off-wait", "1ms", "--custody-timeout", "3s", "--queue-backoff", "1s")
		n.start()
	}
	waitReady(t, all...)
	alice, bob := "alice@acme.example", "bob@globex.example"
	countInbox(t, globex, bob, "nothing")
	countInbox(t, acme, alice, "nothing")

	const perWay, held = 200, 10
	type way struct {
		r, dst   *ring
		from, to string
		sent     []string
	}
	ways := []*way{{r: acme, dst: globex, from: alice, to: bob}, {r: globex, dst: acme, from: bob, to: alice}}
	send := func(wi int, w *way, i int) bool {
		tok := fmt.Sprintf("kill-%d-%d-%d", wi, i, seed)
		start := time.Now()
		for {
			err := trySend(w.r, w.from, w.to, "stream", "body "+tok+" end")
			if err == nil {
				w.sent = append(w.sent, tok)
				return true
			}
			if !isCode(err, 4) && !strings.Contains(err.Error(), "connection") {
				t.Errorf("%s -> %s #%d: %v", w.from, w.to, i, err)
				return false
			}
			if time.Since(start) > 90*time.Second {
				t.Errorf("%s -> %s #%d: no 250 in 90 s: %v", w.from, w.to, i, err)
				return false
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	stream := func(from, to int) {
		var wg sync.WaitGroup
		for wi, w := range ways {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from; i < to; i++ {
					if !send(wi, w, i) {
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	stream(0, perWay/2-held)
	if t.Failed() {
		return
	}
	// Each way in turn: the receiving ring's gateways go down, the sender writes `held` mails
	// (its ring's gateways queue them: they cannot pass them on), and the sending ring's
	// gateway holding most of them is killed for good; then the receiving ring's gateways
	// start again.
	for wi, w := range ways {
		var down []*node
		for _, g := range w.dst.nodes[:gateways] {
			if g.running() {
				g.stop(syscall.SIGKILL)
				down = append(down, g)
			}
		}
		for i := perWay/2 - held; i < perWay/2; i++ {
			if !send(wi, w, i) {
				break
			}
		}
		var victim *node
		most := 0
		for _, g := range w.r.nodes[:gateways] {
			if st, ok := g.status(); ok && st.Gateway.Queue.Federation.Entries > most {
				victim, most = g, st.Gateway.Queue.Federation.Entries
			}
		}
		if victim != nil {
			t.Logf("%s -> %s: killing %s, which holds %d queued mails", w.from, w.to, victim.name, most)
			victim.stop(syscall.SIGKILL)
		}
		for _, g := range down {
			g.start()
		}
		if t.Failed() {
			return
		}
		if victim == nil {
			t.Fatalf("%s -> %s: no gateway of %s queued any of the %d mails sent while the other ring's gateways were stopped", w.from, w.to, w.r.nodes[0].name, held)
		}
	}
	stream(perWay/2, perWay)
	if t.Failed() {
		return
	}
	for _, w := range ways {
		rcv := acme
		if w.to == bob {
			rcv = globex
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			counts := inboxTokens(t, rcv, w.to, w.sent)
			missing, dup := 0, 0
			for _, tok := range w.sent {
				switch c := counts[tok]; {
				case c == 0:
					missing++
				case c > 1:
					dup++
				}
			}
			if dup > 0 {
				t.Fatalf("%s: %d of %d mails filed more than once", w.to, dup, len(w.sent))
			}
			if missing == 0 {
				t.Logf("%s: all %d mails that got a 250 arrived once", w.to, len(w.sent))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d mails that got a 250 never arrived (one gateway of each ring was killed)", w.to, missing, len(w.sent))
			}
			time.Sleep(2 * time.Second)
		}
	}
}

// internetMTA is a mail server "on the internet" (loopback): it takes what it is given, except
// for recipients at busy.internet.example, whom it asks to come back later (451).
type internetMTA struct {
	mu  sync.Mutex
	got []string // "from|rcpt|body"
}

type mtaSession struct {
	m     *internetMTA
	from  string
	rcpts []string
}

func (m *internetMTA) NewSession(*smtp.Conn) (smtp.Session, error) { return &mtaSession{m: m}, nil }
func (s *mtaSession) Reset()                                       { s.from, s.rcpts = "", nil }
func (s *mtaSession) Logout() error                                { return nil }
func (s *mtaSession) Mail(from string, _ *smtp.MailOptions) error  { s.from = from; return nil }
func (s *mtaSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasSuffix(to, "@busy.internet.example") {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "busy, try again later"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *mtaSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	for _, rc := range s.rcpts {
		s.m.got = append(s.m.got, s.from+"|"+rc+"|"+string(b))
	}
	s.m.mu.Unlock()
	return nil
}

// TestMailToTheInternet: alice's mail for an internet address leaves her node's outbox for the
// ring's gateway, which looks up the destination's MX and delivers it by SMTP, once.
func TestMailToTheInternet(t *testing.T) {
	seed := testSeed(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	mta := &internetMTA{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(mta)
	srv.Domain = "mx.internet.example"
	go srv.Serve(l)
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dns.SetMX("internet.example", time.Hour, "mx.internet.example:10")
	dns.SetMX("busy.internet.example", time.Hour, "mx.internet.example:10")
	dns.SetAddrs("mx.internet.example", time.Hour, "127.0.0.1")

	acme, _ := newFedRing(t, seed, "acme", dns, "", "alice")
	// A gateway for internet mail only: no --global-listen (its queue runs on a private
	// global side).
	var extra []string
	for i := 0; i < len(acme.nodes[0].extra); i++ {
		if acme.nodes[0].extra[i] == "--global-listen" || acme.nodes[0].extra[i] == "--global-bootstrap" {
			i++
			continue
		}
		extra = append(extra, acme.nodes[0].extra[i])
	}
	acme.nodes[0].extra = append(extra, "--outbound-port", strconv.Itoa(port))
	// The gateway signs acme.example's outgoing mail with a key the operator made.
	out := epost(t, "gateway", "dkim", "--node", acme.nodes[0].dir, "--domain", "acme.example", "--selector", "gw")
	var record string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "gw._domainkey.acme.example. TXT ") {
			record = l
		}
	}
	name, value, _ := strings.Cut(record, " TXT ")
	if name == "" {
		t.Fatalf("gateway dkim printed no record:\n%s", out)
	}
	dns.SetTXT(name, time.Hour, strings.Trim(value, `"`))
	for _, n := range acme.nodes {
		n.start()
	}
	waitReady(t, acme.nodes...)
	alice := "alice@acme.example"
	countInbox(t, acme, alice, "nothing")
	tok := "internet-" + acme.marker
	sendEventually(t, acme, alice, "carol@internet.example", "to the internet", "body "+tok, 30*time.Second)
	// 3 MiB: more than one overlay message carries from alice's node to the gateway.
	bigTok := "internet-big-" + acme.marker
	sendEventually(t, acme, alice, "carol@internet.example", "big", bigTok+" \r\n"+strings.Repeat(strings.Repeat("x", 76)+"\r\n", 3<<20/78), 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mta.mu.Lock()
		got := append([]string(nil), mta.got...)
		mta.mu.Unlock()
		n := 0
		for _, g := range got {
			if strings.Contains(g, tok) {
				n++
				if !strings.HasPrefix(g, alice+"|carol@internet.example|") {
					t.Fatalf("delivered as %q", g[:min(len(g), 80)])
				}
			}
		}
		if n == 1 {
			// The signature verifies against the published key.
			for _, g := range got {
				if strings.Contains(g, tok) {
					body := g[strings.Index(g, "|carol@internet.example|")+len("|carol@internet.example|"):]
					c := &mailauth.Checker{Resolver: &dnsres.Resolver{Server: dns.Addr, Timeout: time.Second}}
					r := c.Check(context.Background(), net.ParseIP("127.0.0.1"), "gateway.acme.example", alice, []byte(body))
					if len(r.DKIM) != 1 || r.DKIM[0].Result != mailauth.Pass || r.DKIM[0].Domain != "acme.example" {
						t.Fatalf("DKIM of the delivered message: %+v", r.DKIM)
					}
				}
			}
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("the internet MTA got the message %d times; gateway log:\n%s", n, tail(acme.nodes[0].logPth))
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Mail the MTA defers stays in the gateway's queue, and epost status says where and why.
	sendEventually(t, acme, alice, "dave@busy.internet.example", "deferred", "body "+tok, 30*time.Second)
	gw := acme.nodes[0].dir
	waitFor(t, 60*time.Second, func() bool {
		mta.mu.Lock()
		defer mta.mu.Unlock()
		n := 0
		for _, g := range mta.got {
			if strings.Contains(g, bigTok) {
				n++
			}
		}
		return n == 1
	}, func() string { return tail(acme.nodes[0].logPth) })
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var st struct {
			Gateway *struct {
				Queue struct {
					Internet     struct{ Entries int }
					Destinations []struct {
						Dest        string
						Queued      int
						LastError   string    `json:"last_error"`
						NextAttempt time.Time `json:"next_attempt"`
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(epost(t, "status", "--dir", gw, "--json")), &st); err != nil {
			t.Fatal(err)
		}
		if g := st.Gateway; g != nil && g.Queue.Internet.Entries == 1 && len(g.Queue.Destinations) == 1 {
			d := g.Queue.Destinations[0]
			if d.Dest == "busy.internet.example" && d.Queued == 1 && strings.Contains(d.LastError, "451 4.7.1") && d.NextAttempt.After(time.Now()) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway's status does not show the deferred entry: %+v\ngateway log:\n%s", st.Gateway, tail(acme.nodes[0].logPth))
		}
	}
	if text := epost(t, "status", "--dir", gw); !strings.Contains(text, "to busy.internet.example: 1 queued (1 recipients), next attempt in") ||
		!strings.Contains(text, "451 4.7.1") {
		t.Fatalf("the text status does not show the deferred entry:\n%s", text)
	}
}
