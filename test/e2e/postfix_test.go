package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"epost/internal/dnstest"
	"epost/test/cluster"
)

// Issue 14's interop tests: Debian's Postfix plays the internet on loopback, a DNS server in
// the test answers MX, A and TXT (SPF, DKIM, DMARC) for the ring's domain and the outside one,
// and the ring's gateway runs the MX and the outbound queue. They need root (Postfix's master
// starts as root) and Postfix; .ci/run installs it and sets EPOST_REQUIRE_POSTFIX=1, which
// turns a missing Postfix into a failure instead of a skip.

// postfixMTA is a private Postfix instance: it listens on port, relays acme.example to the
// ring's MX, and delivers internet.example into a Maildir (every user to carol's).
type postfixMTA struct {
	t       *testing.T
	dir     string
	conf    string
	port    string
	maildir string // .../carol/new holds delivered messages
	log     string
}

func needPostfix(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root (Postfix's master starts as root)"
	default:
		if _, err := exec.LookPath("postfix"); err != nil {
			why = "postfix is not installed (apt-get install postfix)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("EPOST_REQUIRE_POSTFIX") != "" {
		t.Fatalf("EPOST_REQUIRE_POSTFIX is set but %s", why)
	}
	t.Skip(why)
}

func startPostfix(t *testing.T, mx string) *postfixMTA {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "epost-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	os.Chmod(dir, 0o755) // Postfix's daemons run as the postfix user and must reach their queue
	p := &postfixMTA{t: t, dir: dir, conf: filepath.Join(dir, "etc"), port: freePorts(t, 1)[0],
		maildir: filepath.Join(dir, "mail", "carol"), log: filepath.Join(dir, "maillog")}
	for _, d := range []string{p.conf, filepath.Join(dir, "queue"), filepath.Join(dir, "data"), filepath.Join(dir, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	if out, err := exec.Command("chown", "65534:65534", filepath.Join(dir, "mail")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	master, err := os.ReadFile("/usr/share/postfix/master.cf.dist")
	if err != nil {
		if master, err = os.ReadFile("/etc/postfix/master.cf"); err != nil {
			t.Fatal(err)
		}
	}
	// No chroot (the queue is a temporary directory), and smtpd on our port.
	var mlines []string
	for _, l := range strings.Split(string(master), "\n") {
		f := strings.Fields(l)
		if len(f) >= 8 && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, " ") {
			if f[4] == "y" || f[4] == "-" {
				f[4] = "n"
			}
			if f[0] == "smtp" && f[1] == "inet" {
				f[0] = p.port
			}
			l = strings.Join(f, " ")
		}
		mlines = append(mlines, l)
	}
	if err := os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(strings.Join(mlines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
syslog_name = postfix-epost-test
myhostname = mta.internet.example
mydomain = internet.example
myorigin = $mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = check_recipient_access inline:{ {nobody@internet.example = REJECT no such user here} }, permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
virtual_mailbox_domains = internet.example
virtual_mailbox_maps = static:carol/
virtual_transport = virtual
virtual_mailbox_base = %[1]s/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
transport_maps = inline:{acme.example=smtp:[127.0.0.1]:%[2]s}
smtp_tls_security_level = may
smtp_host_lookup = native
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
bounce_queue_lifetime = 0
`, dir, mx[strings.LastIndex(mx, ":")+1:])
	if err := os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *postfixMTA) start() {
	p.t.Helper()
	if out, err := exec.Command("postfix", "-c", p.conf, "start").CombinedOutput(); err != nil {
		p.t.Fatalf("postfix start: %v\n%s\n%s", err, out, tail(p.log))
	}
	for range 100 {
		if c, err := net.Dial("tcp", p.port); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("postfix does not listen on %s:\n%s", p.port, tail(p.log))
}

func (p *postfixMTA) stop() {
	exec.Command("postfix", "-c", p.conf, "stop").Run()
	for range 100 { // wait until the port is free
		c, err := net.Dial("tcp", p.port)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// delivered returns the messages in carol's Maildir.
func (p *postfixMTA) delivered() [][]byte {
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(p.maildir, sub))
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(p.maildir, sub, e.Name())); err == nil {
				out = append(out, b)
			}
		}
	}
	return out
}

// countDelivered counts carol's messages holding token.
func (p *postfixMTA) countDelivered(token string) int {
	n := 0
	for _, m := range p.delivered() {
		if bytes.Contains(m, []byte(token)) {
			n++
		}
	}
	return n
}

// inject submits a message to Postfix as an internet user would (loopback is in mynetworks).
func (p *postfixMTA) inject(from, to string, msg []byte) error {
	return smtp.SendMail(p.port, nil, from, []string{to}, msg)
}

// dkimpySign signs msg with Python's dkimpy (an implementation that is not ours) under
// sel._domainkey.<domain>, with an RSA key whose record it returns.
func dkimpySign(t *testing.T, domain string, msg []byte) (signed []byte, record string) {
	t.Helper()
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import dkim").Run() != nil {
		t.Fatal("python3-dkim is missing (apt-get install python3-dkim python3-nacl)")
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o600)
	os.WriteFile(filepath.Join(dir, "m.eml"), msg, 0o600)
	script := `
import sys, dkim
m = open(sys.argv[1], "rb").read()
sig = dkim.sign(m, b"sel", sys.argv[3].encode(), open(sys.argv[2], "rb").read(), include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
sys.stdout.buffer.write(sig + m)
`
	out, err := exec.Command(py, "-c", script, filepath.Join(dir, "m.eml"), filepath.Join(dir, "k.pem"), domain).Output()
	if err != nil {
		t.Fatalf("dkimpy sign: %v", err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	return out, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// dkimpyVerify checks msg's DKIM signature with dkimpy against the record published for name.
func dkimpyVerify(t *testing.T, msg []byte, name, record string) bool {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.eml")
	os.WriteFile(f, msg, 0o600)
	script := `
import sys, dkim
txt = sys.argv[3].encode()
def dns(name, timeout=5):
    return txt if name == sys.argv[2].encode() else None
print("ok" if dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dns) else "bad")
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, f, name+".", record).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy verify: %v %s", err, out)
	}
	return strings.TrimSpace(string(out)) == "ok"
}

// gatewayQueued is the number of internet entries in the gateway's queue (-1: unknown).
func gatewayQueued(t *testing.T, gw *node) int {
	t.Helper()
	out, err := exec.Command(cluster.Bin, "status", "--dir", gw.dir, "--json").Output()
	if err != nil {
		return -1
	}
	var st struct {
		Gateway *struct {
			Queue struct {
				Internet struct {
					Entries int `json:"entries"`
				} `json:"internet"`
			} `json:"queue"`
		} `json:"gateway"`
	}
	if json.Unmarshal(out, &st) != nil || st.Gateway == nil {
		return -1
	}
	return st.Gateway.Queue.Internet.Entries
}

// TestPostfixInterop runs issue 14's scenarios against a real Postfix.
func TestPostfixInterop(t *testing.T) {
	needPostfix(t)
	seed := testSeed(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	acme, _ := newFedRing(t, seed, "acme", dns, "", "alice", "bob")
	gw := acme.nodes[0]
	mx := freePorts(t, 1)[0]
	pf := startPostfix(t, mx)
	pfPort := pf.port[strings.LastIndex(pf.port, ":")+1:]
	// The ring's gateway: the MX, and outbound mail to Postfix (internet.example's MX is
	// mx.internet.example, 127.0.0.1, on Postfix's port), retried every 2 s.
	gw.extra = append(gw.extra, "--mx", mx, "--mx-hostname", "mx.acme.example", "--outbound-port", pfPort, "--queue-backoff", "2s")
	// The outside domain: SPF for loopback, DMARC p=none, its MX.
	dns.SetTXT("internet.example", time.Hour, "v=spf1 ip4:127.0.0.0/8 -all")
	dns.SetTXT("_dmarc.internet.example", time.Hour, "v=DMARC1; p=none")
	dns.SetMX("internet.example", time.Hour, "mx.internet.example:10")
	dns.SetAddrs("mx.internet.example", time.Hour, "127.0.0.1")
	// The ring's domain: only its gateway sends for it, and forgeries are to be rejected.
	dns.SetTXT("acme.example", time.Hour, "v=spf1 ip4:192.0.2.1 -all")
	dns.SetTXT("_dmarc.acme.example", time.Hour, "v=DMARC1; p=reject")
	out := epost(t, "gateway", "dkim", "--node", gw.dir, "--domain", "acme.example", "--selector", "gw")
	var dkimName, dkimValue string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "gw._domainkey.acme.example. TXT ") {
			dkimName, dkimValue, _ = strings.Cut(l, " TXT ")
			dkimName, dkimValue = strings.TrimSuffix(dkimName, "."), strings.Trim(dkimValue, `"`)
		}
	}
	if dkimName == "" {
		t.Fatalf("gateway dkim printed no record:\n%s", out)
	}
	dns.SetTXT(dkimName, time.Hour, dkimValue)
	for _, n := range acme.nodes {
		n.start()
	}
	waitReady(t, acme.nodes...)
	alice, bob := "alice@acme.example", "bob@acme.example"
	countInbox(t, acme, alice, "nothing")
	countInbox(t, acme, bob, "nothing")

	t.Run("inbound from Postfix, SPF and DKIM checked", func(t *testing.T) {
		tok := "pf-in-" + acme.marker
		msg := internetMessage("Carol <carol@internet.example>", bob, "from postfix", "body "+tok)
		signed, rec := dkimpySign(t, "internet.example", msg)
		dns.SetTXT("sel._domainkey.internet.example", time.Hour, rec)
		if err := pf.inject("carol@internet.example", bob, signed); err != nil {
			t.Fatalf("inject into postfix: %v", err)
		}
		waitInbox(t, acme, bob, tok, 90*time.Second)
		got := inboxMessages(t, acme, bob, tok)
		head := string(got[0][:bytes.Index(got[0], []byte("\r\n\r\n"))])
		for _, want := range []string{"Authentication-Results: mx.acme.example;", "spf=pass", "dkim=pass", "header.d=internet.example", "dmarc=pass", "Received: from mta.internet.example"} {
			if !strings.Contains(head, want) {
				t.Fatalf("bob's copy lacks %q:\n%s", want, head)
			}
		}
	})

	t.Run("a forgery of the ring's domain under p=reject is refused", func(t *testing.T) {
		tok := "pf-forged-" + acme.marker
		msg := internetMessage("Boss <boss@acme.example>", bob, "urgent wire", "body "+tok)
		if err := pf.inject("boss@acme.example", bob, msg); err != nil {
			t.Fatalf("inject: %v", err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			l, _ := os.ReadFile(pf.log)
			if bytes.Contains(l, []byte("5.7.1 DMARC policy of acme.example rejects")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("postfix never heard the DMARC refusal; its log:\n%s", tail(pf.log))
			}
			time.Sleep(500 * time.Millisecond)
		}
		if n := countInbox(t, acme, bob, tok); n != 0 {
			t.Fatalf("the forgery reached bob's INBOX")
		}
	})

	t.Run("the MX is no open relay", func(t *testing.T) {
		args := []string{"--server", mx, "--from", "spammer@internet.example", "--to", "victim@elsewhere.example", "--helo", "mta.internet.example", "--body", "relay me"}
		if _, err := exec.LookPath("swaks"); err != nil {
			t.Skip("swaks is not installed")
		}
		out, err := exec.Command("swaks", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "550 5.7.1") {
			t.Fatalf("relay attempt: %v\n%s", err, out)
		}
	})

	t.Run("outbound to Postfix, DKIM verified by dkimpy", func(t *testing.T) {
		tok := "pf-out-" + acme.marker
		sendEventually(t, acme, alice, "carol@internet.example", "to postfix", "body "+tok, 60*time.Second)
		waitFor(t, 90*time.Second, func() bool { return pf.countDelivered(tok) >= 1 }, func() string { return tail(gw.logPth) + "\n" + tail(pf.log) })
		for _, m := range pf.delivered() {
			if bytes.Contains(m, []byte(tok)) && !dkimpyVerify(t, m, dkimName, dkimValue) {
				t.Fatalf("dkimpy does not verify the gateway's signature:\n%s", m)
			}
		}
		if n := pf.countDelivered(tok); n != 1 {
			t.Fatalf("delivered %d times", n)
		}
	})

	t.Run("Postfix down: queued, retried, delivered when it returns", func(t *testing.T) {
		pf.stop()
		tok := "pf-down-" + acme.marker
		sendEventually(t, acme, alice, "carol@internet.example", "while down", "body "+tok, 60*time.Second)
		waitFor(t, 60*time.Second, func() bool { return gatewayQueued(t, gw) >= 1 }, func() string { return tail(gw.logPth) })
		time.Sleep(5 * time.Second) // a few failed attempts
		pf.start()
		waitFor(t, 90*time.Second, func() bool { return pf.countDelivered(tok) >= 1 }, func() string { return tail(gw.logPth) + "\n" + tail(pf.log) })
	})

	t.Run("a permanent refusal becomes a DSN in alice's INBOX", func(t *testing.T) {
		tok := "pf-refused-" + acme.marker
		sendEventually(t, acme, alice, "nobody@internet.example", "to nobody "+tok, "body", 60*time.Second)
		waitFor(t, 90*time.Second, func() bool {
			for _, m := range inboxMessages(t, acme, alice, "nobody@internet.example") {
				if bytes.Contains(m, []byte("multipart/report")) && bytes.Contains(m, []byte("Action: failed")) && bytes.Contains(m, []byte(tok)) {
					return true
				}
			}
			return false
		}, func() string { return tail(gw.logPth) })
	})

	t.Run("kill -9 of the gateway with 100 mails queued", func(t *testing.T) {
		pf.stop()
		const n = 100
		toks := make([]string, n)
		for i := range toks {
			toks[i] = fmt.Sprintf("pf-kill-%d-%s", i, acme.marker)
			sendEventually(t, acme, alice, "carol@internet.example", fmt.Sprintf("queued %d", i), "body "+toks[i]+" end", 60*time.Second)
		}
		waitFor(t, 120*time.Second, func() bool { return gatewayQueued(t, gw) >= n }, func() string { return tail(gw.logPth) })
		gw.stop(syscall.SIGKILL)
		pf.start()
		gw.start()
		waitFor(t, 180*time.Second, func() bool {
			for _, tok := range toks {
				if pf.countDelivered(tok+" end") < 1 {
					return false
				}
			}
			return true
		}, func() string { return tail(gw.logPth) + "\n" + tail(pf.log) })
		time.Sleep(3 * time.Second)
		for _, tok := range toks {
			if c := pf.countDelivered(tok + " end"); c != 1 {
				t.Fatalf("%s delivered %d times, want once", tok, c)
			}
		}
	})
}

// waitFor polls cond until limit, then fails with what explain says.
func waitFor(t *testing.T, limit time.Duration, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v:\n%s", limit, explain())
		}
		time.Sleep(500 * time.Millisecond)
	}
}
