package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"epost/internal/dnstest"
	eposting "epost/internal/ring"
)

// newFedRing makes a ring of its own name and mail domain with one gateway (node0, which runs
// the global ring) and one node per user, its _epost record published in dns. The gateway
// joins the global ring through globalBootstrap (none: it founds it).
func newFedRing(t *testing.T, seed uint64, name string, dns *dnstest.Server, globalBootstrap string, users ...string) (*ring, string) {
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
	n := 1 + len(users)
	ports := freePorts(t, n+1+3*len(users))
	global := ports[n]
	for i := range n {
		nd := &node{t: t, name: fmt.Sprintf("%s-node%d", name, i), dir: filepath.Join(dir, fmt.Sprintf("node%d", i)),
			logPth: filepath.Join(dir, fmt.Sprintf("node%d.log", i)), seed: seed + uint64(1000*i)}
		args := []string{"node", "init", "--ring", ringDir, "--dir", nd.dir, "--listen", ports[i]}
		nd.extra = []string{"--resolver", dns.Addr}
		if i == 0 {
			args = append(args, "--gateway", "--imap", "", "--smtp", "", "--pop3", "")
			nd.extra = append(nd.extra, "--global-listen", global)
			if globalBootstrap != "" {
				nd.extra = append(nd.extra, "--global-bootstrap", globalBootstrap)
			}
		} else {
			p := ports[n+1+3*(i-1) : n+1+3*i]
			nd.imap, nd.smtp = p[0], p[1]
			args = append(args, "--bootstrap", ports[0], "--imap", p[0], "--smtp", p[1], "--pop3", p[2])
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
		epost(t, "user", "add", "--ring", ringDir, "--node", r.nodes[i+1].dir, "--address", addr, "--password-file", pwFile)
		r.pw[addr], r.home[addr] = pw, r.nodes[i+1]
	}
	r.marker = fmt.Sprintf("E2E-FED-MARKER-%d", seed)
	return r, global
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
	// A message larger than one hand-off carries (until the chunked relay exists) is refused
	// for good, with the reason, rather than retried forever.
	big := strings.Repeat("0123456789abcdef", 3<<20/16)
	if err := trySend(acme, alice, bob, "too big", big); err == nil || !isCode(err, 554) {
		t.Fatalf("a 3 MiB message to another ring: %v, want 554", err)
	}
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
