// Package demo tests "epost demo" the way the README tells a user to run it: the real binary
// as a process, the swaks line it prints, and Python's imaplib and poplib as the mail clients.
// It then restarts the demo on the same directory and reads the mail again.
package demo

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"epost/test/cluster"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { cluster.Main(m) }

type demoUser struct {
	Address  string `json:"address"`
	Password string `json:"password"`
	IMAP     string `json:"imap"`
	SMTP     string `json:"smtp"`
	POP3     string `json:"pop3"`
	Ring     string `json:"ring"`
	Node     string `json:"node"`
}

// demo is one running "epost demo" process.
type demo struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func startDemo(t *testing.T, dir string, seed uint64, extra ...string) *demo {
	t.Helper()
	d := &demo{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(cluster.Bin, append([]string{"demo", "--dir", dir, "--seed", strconv.FormatUint(seed, 10)}, extra...)...)
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.mu.Lock()
			d.out.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
		d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

func (d *demo) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// ready waits for DIR/demo.json and returns its users.
func (d *demo) ready(dir string) []demoUser {
	d.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			d.t.Fatalf("epost demo exited early:\n%s", d.output())
		default:
		}
		if data, err := os.ReadFile(filepath.Join(dir, "demo.json")); err == nil {
			var f struct{ Users []demoUser }
			if err := json.Unmarshal(data, &f); err != nil {
				d.t.Fatalf("demo.json: %v\n%s", err, data)
			}
			return f.Users
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.t.Fatalf("no demo.json after 2 minutes; output:\n%s\nlogs in %s/logs", d.output(), dir)
	return nil
}

// stop interrupts the demo as Ctrl-C would and waits for it to exit.
func (d *demo) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("epost demo did not stop within 30 s of SIGINT:\n%s", d.output())
	}
}

// readScript logs in as the user over IMAP (STARTTLS) and POP3 (STLS) and prints how many
// messages carry the token: "imap=N pop3=M".
const readScript = `
import imaplib, poplib, ssl, sys, time
host_imap, host_pop, user, pw, token = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
h, p = host_imap.rsplit(':', 1)
found = 0
deadline = time.time() + 60
while True:
    m = imaplib.IMAP4(h, int(p)); m.starttls(ssl_context=ctx); m.login(user, pw); m.select('INBOX')
    typ, data = m.search(None, 'ALL')
    found = 0
    for num in data[0].split():
        typ, msg = m.fetch(num, '(RFC822)')
        if token.encode() in msg[0][1]:
            found += 1
    m.logout()
    if found or time.time() > deadline:
        break
    time.sleep(1)
h, p = host_pop.rsplit(':', 1)
P = poplib.POP3(h, int(p)); P.stls(context=ctx); P.user(user); P.pass_(pw)
popfound = 0
for i in range(1, P.stat()[0] + 1):
    if token.encode() in b'\r\n'.join(P.retr(i)[1]):
        popfound += 1
P.quit()
print('imap=%d pop3=%d' % (found, popfound))
`

func readMail(t *testing.T, u demoUser, token string) string {
	t.Helper()
	out, err := exec.Command("python3", "-c", readScript, u.IMAP, u.POP3, u.Address, u.Password, token).CombinedOutput()
	if err != nil {
		t.Fatalf("reading %s's mail: %v\n%s", u.Address, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestDemoSwaksIMAPPOP3Restart(t *testing.T) {
	for _, tool := range []string{"swaks", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed; this test sends with swaks and reads with Python's imaplib/poplib (apt-get install swaks python3)", tool)
		}
	}
	seed := rand.Uint64()
	if s := os.Getenv("EPOST_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with EPOST_TEST_SEED=%d)", seed, seed)
	dir := t.TempDir()
	start := time.Now()
	d := startDemo(t, dir, seed)
	users := d.ready(dir)
	t.Logf("demo ready in %s", time.Since(start).Round(time.Millisecond))
	if len(users) != 2 {
		t.Fatalf("demo.json has %d users, want 2", len(users))
	}
	bob := users[1]

	// The welcome mail is there.
	if got := readMail(t, bob, "Welcome to ePOST"); got != "imap=1 pop3=1" {
		t.Fatalf("bob's welcome mail: %s, want imap=1 pop3=1\n%s", got, d.output())
	}

	// Send with the swaks line the demo printed, made unique by a token in the subject.
	var line string
	for _, l := range strings.Split(d.output(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "swaks ") && strings.Contains(l, "--to "+bob.Address) {
			line = l
			break
		}
	}
	if line == "" {
		t.Fatalf("the demo printed no swaks line for mail to %s:\n%s", bob.Address, d.output())
	}
	token := fmt.Sprintf("demo-test-%d", seed)
	line = strings.Replace(line, `"Subject: hi"`, `"Subject: hi `+token+`"`, 1)
	sent := time.Now()
	if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if got := readMail(t, bob, token); got != "imap=1 pop3=1" {
		t.Fatalf("after swaks: %s, want imap=1 pop3=1\n%s", got, d.output())
	}
	t.Logf("swaks to IMAP and POP3 read: %s", time.Since(sent).Round(time.Millisecond))

	// Mail from "the internet": the swaks line for the gateway's MX (no AUTH), and the MX in
	// demo.json.
	var mxLine string
	for _, l := range strings.Split(d.output(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "swaks ") && strings.Contains(l, "--from carol@example.net") {
			mxLine = l
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "demo.json"))
	var df struct{ MX string }
	if json.Unmarshal(raw, &df); df.MX == "" || mxLine == "" || !strings.Contains(mxLine, "--server "+df.MX) {
		t.Fatalf("the demo printed no swaks line for its MX (demo.json mx %q):\n%s", df.MX, d.output())
	}
	mxToken := fmt.Sprintf("demo-mx-%d", seed)
	mxLine = strings.Replace(mxLine, `"Subject: from the internet"`, `"Subject: from the internet `+mxToken+`"`, 1)
	if out, err := exec.Command("sh", "-c", mxLine).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", mxLine, err, out)
	}
	if got := readMail(t, bob, mxToken); got != "imap=1 pop3=1" {
		t.Fatalf("after swaks to the MX: %s, want imap=1 pop3=1\n%s", got, d.output())
	}
	firstContact(t, d, dir, users)

	// Restart on the same directory: same users, passwords and mail.
	d.stop()
	if _, err := os.Stat(filepath.Join(dir, "demo.json")); err == nil {
		t.Fatal("demo.json still there after the demo stopped")
	}
	start = time.Now()
	d2 := startDemo(t, dir, seed+1)
	users2 := d2.ready(dir)
	t.Logf("demo restarted and ready in %s", time.Since(start).Round(time.Millisecond))
	if len(users2) != 2 || users2[1] != bob {
		t.Fatalf("after restart demo.json says %+v, want the same users, passwords and ports as %+v", users2, users)
	}
	if got := readMail(t, bob, token); got != "imap=1 pop3=1" {
		t.Fatalf("after restart: %s, want imap=1 pop3=1\n%s", got, d2.output())
	}
	if got := readMail(t, bob, "Welcome to ePOST"); got != "imap=1 pop3=1" {
		t.Fatalf("welcome mail after restart: %s, want imap=1 pop3=1 (sent once)", got)
	}
	d2.stop()
}

// swaksLineTo is the swaks line the demo printed for mail to addr, with token in the subject.
func swaksLineTo(t *testing.T, d *demo, addr, token string) string {
	t.Helper()
	for _, l := range strings.Split(d.output(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "swaks ") && strings.Contains(l, "--to "+addr) {
			return strings.Replace(l, `"Subject: hi"`, `"Subject: hi `+token+`"`, 1)
		}
	}
	t.Fatalf("the demo printed no swaks line for mail to %s:\n%s", addr, d.output())
	return ""
}

// TestDemoTwoRings: "epost demo --rings 2" runs acme.example (alice) and globex.example (bob)
// as two federated rings; the welcome mail crossed from acme to globex, and the swaks lines the
// demo prints carry mail both ways, read with Python's imaplib and poplib.
func TestDemoTwoRings(t *testing.T) {
	for _, tool := range []string{"swaks", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install swaks python3)", tool)
		}
	}
	seed := rand.Uint64()
	if s := os.Getenv("EPOST_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with EPOST_TEST_SEED=%d)", seed, seed)
	dir := t.TempDir()
	d := startDemo(t, dir, seed, "--rings", "2")
	users := d.ready(dir)
	if len(users) != 2 || users[0].Ring != "acme" || users[1].Ring != "globex" || users[0].Address != "alice@acme.example" || users[1].Address != "bob@globex.example" {
		t.Fatalf("demo.json users: %+v", users)
	}
	alice, bob := users[0], users[1]
	if got := readMail(t, bob, "Welcome to ePOST"); got != "imap=1 pop3=1" {
		t.Fatalf("bob's welcome mail from the other ring: %s, want imap=1 pop3=1\n%s", got, d.output())
	}
	for _, c := range []struct{ from, to demoUser }{{alice, bob}, {bob, alice}} {
		token := fmt.Sprintf("rings-%s-%d", c.from.Ring, seed)
		line := swaksLineTo(t, d, c.to.Address, token)
		// A 451 (the other ring's gateways slow to answer on a loaded machine) is retried, as
		// an MTA would; anything else fails the test.
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
			out, err := exec.Command("sh", "-c", line).CombinedOutput()
			if err == nil {
				break
			}
			if !strings.Contains(string(out), "<~* 451 ") || time.Now().After(deadline) {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
		}
		if got := readMail(t, c.to, token); got != "imap=1 pop3=1" {
			t.Fatalf("%s -> %s: %s, want imap=1 pop3=1\n%s", c.from.Address, c.to.Address, got, d.output())
		}
	}
	d.stop()
}

// firstContact checks what a new user meets (issue 14 §7): the demo says which node serves each
// user; its status line is printed only when it changed; epost status on the demo's folder
// lists the nodes to ask instead of advising epost node run; the mail certificate verifies for
// 127.0.0.1 and localhost in a real STARTTLS handshake, with a host name as its CN.
func firstContact(t *testing.T, d *demo, dir string, users []demoUser) {
	t.Helper()
	out := d.output()
	for _, u := range users {
		if u.Node == "" || !strings.Contains(out, "served by "+u.Node) {
			t.Errorf("the demo does not say which node serves %s (demo.json node %q):\n%s", u.Address, u.Node, out)
		}
	}
	var prev string
	live := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "live status") {
			live = true
			continue
		}
		if !live || len(l) < 12 || l[4] != ':' || l[7] != ':' {
			continue
		}
		if cur := l[11:]; cur == prev {
			t.Errorf("the status line was printed again unchanged: %q\n%s", l, out)
		} else {
			prev = cur
		}
	}

	st, err := exec.Command(cluster.Bin, "status", "--dir", dir).CombinedOutput()
	if err == nil {
		t.Errorf("epost status on the demo's folder succeeded:\n%s", st)
	}
	for _, want := range []string{"folder of an epost demo", "the demo is running", "epost status --dir " + filepath.Join(dir, "node1")} {
		if !strings.Contains(string(st), want) {
			t.Errorf("epost status --dir DEMODIR lacks %q:\n%s", want, st)
		}
	}
	if strings.Contains(string(st), "epost node run") {
		t.Errorf("epost status --dir DEMODIR advises epost node run:\n%s", st)
	}

	bob := users[1]
	pem, err := os.ReadFile(filepath.Join(bob.Node, "mail-tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("mail-tls.crt holds no certificate")
	}
	_, port, _ := net.SplitHostPort(bob.SMTP)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		c, err := smtp.Dial(net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("SMTP %s: %v", host, err)
		}
		if err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: roots}); err != nil {
			t.Errorf("STARTTLS to %s with the node's certificate trusted: %v", host, err)
		} else if cs, ok := c.TLSConnectionState(); ok {
			leaf := cs.PeerCertificates[0]
			if !slices.Contains(leaf.DNSNames, leaf.Subject.CommonName) || !slices.Contains(leaf.DNSNames, "127.0.0.1") {
				t.Errorf("certificate CN %q, DNS names %v: want a host name as CN and 127.0.0.1 among the DNS names (fetchmail 6.4)", leaf.Subject.CommonName, leaf.DNSNames)
			}
		}
		c.Close()
	}
}
