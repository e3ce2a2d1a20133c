package e2e

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"epost/internal/dnstest"
	"epost/test/cluster"
)

// TestGatewayBench measures issue 14's figures in one run (BENCHMARKS.md, "Internet mail through
// the gateway"): inbound messages/s from Postfix into the ring through the gateway's MX (each
// 250 after the ring stored the copy) against Postfix delivering the same load into a local
// Maildir; outbound messages/s from the gateway's queue to Postfix; and the latency from the
// MX's 250 to the outside MTA to bob's IMAP IDLE wake-up. Off unless EPOST_BENCH_GATEWAY=1
// (needs root and Postfix):
//
//	EPOST_BENCH_GATEWAY=1 go test ./test/e2e -run TestGatewayBench -v -timeout 30m
func TestGatewayBench(t *testing.T) {
	if os.Getenv("EPOST_BENCH_GATEWAY") == "" {
		t.Skip("a benchmark: set EPOST_BENCH_GATEWAY=1")
	}
	needPostfix(t)
	const n, conns, latN = 300, 4, 200
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
	gw.extra = append(gw.extra, "--mx", mx, "--mx-hostname", "mx.acme.example", "--outbound-port", pfPort, "--queue-backoff", "1s")
	dns.SetTXT("internet.example", time.Hour, "v=spf1 ip4:127.0.0.0/8 -all")
	dns.SetTXT("_dmarc.internet.example", time.Hour, "v=DMARC1; p=none")
	dns.SetMX("internet.example", time.Hour, "mx.internet.example:10")
	dns.SetAddrs("mx.internet.example", time.Hour, "127.0.0.1")
	// Postfix on loopback is a trusted neighbour here: no per-client rate limit for it (the
	// default, 600 messages a minute per address, would be the bottleneck).
	ringDir := filepath.Join(acme.dir, "ring")
	epost(t, "ring", "policy", "--dir", ringDir, "--set", "allow=127.0.0.0/8")
	raw, err := os.ReadFile(filepath.Join(ringDir, "policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gw.dir, "policy.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, nd := range acme.nodes {
		nd.start()
	}
	waitReady(t, acme.nodes...)
	alice, bob := "alice@acme.example", "bob@acme.example"
	countInbox(t, acme, alice, "nothing")
	countInbox(t, acme, bob, "nothing")

	rng := rand.New(rand.NewPCG(seed, 3))
	body := func() string { // ~2 KB, different per message
		b := make([]byte, 2000)
		for i := range b {
			b[i] = 'a' + byte(rng.IntN(26))
			if i%76 == 75 {
				b[i] = '\n'
			}
		}
		return strings.ReplaceAll(string(b), "\n", "\r\n")
	}
	var bodies []string
	for range n {
		bodies = append(bodies, body())
	}
	// inject sends n messages into Postfix over conns connections.
	inject := func(to, tag string) {
		var wg sync.WaitGroup
		next := make(chan int, n)
		for i := range n {
			next <- i
		}
		close(next)
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					msg := internetMessage("Carol <carol@internet.example>", to, fmt.Sprintf("%s %d", tag, i), tag+" "+bodies[i])
					if err := pf.inject("carol@internet.example", to, msg); err != nil {
						t.Errorf("inject %d: %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	mxAccepted := func() uint64 {
		out, err := exec.Command(cluster.Bin, "status", "--dir", gw.dir, "--json").Output()
		if err != nil {
			return 0
		}
		i := strings.Index(string(out), `"accepted": `)
		if i < 0 {
			return 0
		}
		var v uint64
		fmt.Sscanf(string(out[i+len(`"accepted": `):]), "%d", &v)
		return v
	}

	// Postfix to its own Maildir, then Postfix to the ring through the MX.
	start := time.Now()
	inject("carol@internet.example", "local")
	waitFor(t, 10*time.Minute, func() bool { return pf.countDelivered("local ") >= n }, func() string { return tail(pf.log) })
	local := time.Since(start)
	before := mxAccepted()
	start = time.Now()
	inject(bob, "inbound")
	waitFor(t, 10*time.Minute, func() bool { return mxAccepted() >= before+n }, func() string { return tail(gw.logPth) + "\n" + tail(pf.log) })
	inbound := time.Since(start)
	fmt.Printf("phase=inbound messages=%d conns=%d postfix_local_msgs_per_s=%.1f gateway_msgs_per_s=%.1f ratio=%.2f\n",
		n, conns, float64(n)/local.Seconds(), float64(n)/inbound.Seconds(), local.Seconds()/inbound.Seconds())

	// Outbound: n messages queued at the gateway while Postfix is down, then drained to it.
	pf.stop()
	sc := dialSMTPAs(t, acme, alice)
	for i := range n {
		msg := fmt.Sprintf("From: %s\r\nTo: carol@internet.example\r\nSubject: outbound %d\r\n\r\noutbound %s", alice, i, bodies[i])
		if err := sc.Mail(alice); err != nil {
			t.Fatal(err)
		}
		if err := sc.Rcpt("carol@internet.example"); err != nil {
			t.Fatal(err)
		}
		w, err := sc.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(msg))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	sc.Quit()
	waitFor(t, 5*time.Minute, func() bool { return gatewayQueued(t, gw) >= n }, func() string { return tail(gw.logPth) })
	start = time.Now()
	pf.start()
	waitFor(t, 10*time.Minute, func() bool { return pf.countDelivered("outbound ") >= n }, func() string { return tail(gw.logPth) + "\n" + tail(pf.log) })
	out := time.Since(start)
	fmt.Printf("phase=outbound messages=%d queue_to_postfix_msgs_per_s=%.1f\n", n, float64(n)/out.Seconds())

	// Latency: the outside MTA's 250 from the MX to bob's IDLE wake-up.
	type exists struct {
		n  uint32
		at time.Time
	}
	wake := make(chan exists, 1024)
	c, err := imapclient.DialStartTLS(acme.home[bob].imap, &imapclient.Options{
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{Mailbox: func(m *imapclient.UnilateralDataMailbox) {
			if m.NumMessages != nil {
				wake <- exists{*m.NumMessages, time.Now()}
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(bob, acme.pw[bob]).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	have := sel.NumMessages
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	var submit, wakeup, total []float64
	for i := range latN {
		msg := internetMessage("Carol <carol@internet.example>", bob, fmt.Sprintf("latency %d", i), bodies[i%n])
		t0 := time.Now()
		if err := mxSend(mx, "mta.internet.example", "carol@internet.example", []string{bob}, msg); err != nil {
			t.Fatalf("latency %d: %v", i, err)
		}
		t250 := time.Now()
		var tw time.Time
		for tw.IsZero() {
			select {
			case e := <-wake:
				if e.n > have {
					have, tw = e.n, e.at
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("message %d: no IDLE wake-up within 30 s", i)
			}
		}
		submit = append(submit, float64(t250.Sub(t0).Microseconds())/1000)
		wakeup = append(wakeup, float64(tw.Sub(t250).Microseconds())/1000)
		total = append(total, float64(tw.Sub(t0).Microseconds())/1000)
	}
	idle.Close()
	// The wake-up often comes before the 250 (negative): the copy is pushed to bob's node while
	// the MX still waits for the replicas' acknowledgements.
	fmt.Printf("phase=latency messages=%d mx_session_p50_ms=%.1f mx_session_p99_ms=%.1f mx250_to_idle_p50_ms=%.1f mx250_to_idle_p99_ms=%.1f connect_to_idle_p50_ms=%.1f connect_to_idle_p99_ms=%.1f\n",
		latN, pctl(submit, .5), pctl(submit, .99), pctl(wakeup, .5), pctl(wakeup, .99), pctl(total, .5), pctl(total, .99))
}

func pctl(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

// dialSMTPAs opens an authenticated submission session for user on their node.
func dialSMTPAs(t *testing.T, r *ring, user string) *smtp.Client {
	t.Helper()
	nd := r.home[user]
	c, err := smtp.Dial(nd.smtp)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	host := nd.smtp[:strings.LastIndex(nd.smtp, ":")]
	if err := c.Auth(smtp.PlainAuth("", user, r.pw[user], host)); err != nil {
		t.Fatal(err)
	}
	return c
}
