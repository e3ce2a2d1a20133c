package demo

import (
	"crypto/tls"
	"encoding/json"
	"epost/test/cluster"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// TestBenchMail measures the mail path on a demo ring (docs/bench-mail.md has the commands).
// It runs only with EPOST_BENCH_MAIL=1; EPOST_BENCH_NODES (default 5), EPOST_BENCH_MSGS
// (default 100, the latency phase), EPOST_BENCH_CONNS and EPOST_BENCH_PER_CONN (default 4 and
// 50, the throughput phase) size it. Phases:
//
//  1. latency: alice sends bob one message at a time over one SMTP connection while bob's
//     IMAP connection IDLEs; per message, MAIL FROM to the 250 (submit), the 250 to IDLE's
//     EXISTS (wake-up; negative when the recipient's node filed the message before the
//     sender's node answered 250) and MAIL FROM to EXISTS (total: the delivery latency);
//  2. throughput: EPOST_BENCH_CONNS SMTP connections send concurrently; messages per second
//     until the last 250 (every 250 follows fsynced replicas);
//  3. storage: PAST objects and payload bytes held by all nodes (replicas included) after the
//     deliveries settle, per delivered message.
func TestBenchMail(t *testing.T) {
	if os.Getenv("EPOST_BENCH_MAIL") != "1" {
		t.Skip("a measurement, not a test: run with EPOST_BENCH_MAIL=1 (see docs/bench-mail.md)")
	}
	nodes := envInt("EPOST_BENCH_NODES", 5)
	msgs := envInt("EPOST_BENCH_MSGS", 100)
	conns := envInt("EPOST_BENCH_CONNS", 4)
	perConn := envInt("EPOST_BENCH_PER_CONN", 50)
	dir := t.TempDir()
	d := &demo{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(cluster.Bin, "demo", "--dir", dir, "--nodes", strconv.Itoa(nodes), "--seed", "1")
	startDemoCmd(t, d)
	users := d.ready(dir)
	alice, bob := users[0], users[1]

	// Bob IDLEs; every EXISTS is timestamped.
	type exists struct {
		n  uint32
		at time.Time
	}
	wake := make(chan exists, 1024)
	c, err := imapclient.DialStartTLS(bob.IMAP, &imapclient.Options{
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
	if err := c.Login(bob.Address, bob.Password).Wait(); err != nil {
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

	// ~2 KB bodies, different per message: identical bodies would be stored once (convergent
	// encryption) and hide the per-message cost.
	rng := rand.New(rand.NewPCG(1, 2))
	bodyN := func() string {
		b := make([]byte, 2000)
		for i := range b {
			b[i] = 'a' + byte(rng.IntN(26))
			if i%76 == 75 {
				b[i] = '\n'
			}
		}
		return string(b)
	}
	var rmu sync.Mutex
	body := func() string {
		rmu.Lock()
		defer rmu.Unlock()
		return bodyN()
	}
	sc := dialSMTP(t, alice)
	var submit, wakeup, total []float64
	for i := range msgs {
		t0 := time.Now()
		sendOn(t, sc, alice.Address, bob.Address, fmt.Sprintf("latency %d", i), body())
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
		submit = append(submit, ms(t250.Sub(t0)))
		wakeup = append(wakeup, ms(tw.Sub(t250)))
		total = append(total, ms(tw.Sub(t0)))
	}
	sc.Quit()
	fmt.Printf("phase=latency nodes=%d messages=%d submit_p50_ms=%.1f submit_p99_ms=%.1f wake_p50_ms=%.1f wake_p99_ms=%.1f total_p50_ms=%.1f total_p99_ms=%.1f\n",
		nodes, msgs, pct(submit, .5), pct(submit, .99), pct(wakeup, .5), pct(wakeup, .99), pct(total, .5), pct(total, .99))

	before := ringStorage(t, dir, nodes)
	start := time.Now()
	var wg sync.WaitGroup
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := dialSMTP(t, alice)
			defer sc.Quit()
			for i := range perConn {
				sendOn(t, sc, alice.Address, bob.Address, fmt.Sprintf("throughput %d/%d", k, i), body())
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	sent := conns * perConn
	fmt.Printf("phase=throughput nodes=%d connections=%d messages=%d seconds=%.2f msgs_per_s=%.1f\n",
		nodes, conns, sent, el.Seconds(), float64(sent)/el.Seconds())

	// Let filing, receipts and trash settle, then count what the ring holds.
	want := have + uint32(sent)
	deadline := time.Now().Add(2 * time.Minute)
	for have < want && time.Now().Before(deadline) {
		select {
		case e := <-wake:
			have = max(have, e.n)
		case <-time.After(time.Second):
		}
	}
	if have < want {
		t.Fatalf("only %d of %d messages in bob's INBOX after 2 minutes", have, want)
	}
	idle.Close()
	time.Sleep(5 * time.Second)
	after := ringStorage(t, dir, nodes)
	objs := float64(after.objects-before.objects) / float64(sent)
	bytes := float64(after.bytes-before.bytes) / float64(sent)
	size := 2000 + 120
	fmt.Printf("phase=storage nodes=%d messages=%d message_bytes=%d objects_per_msg=%.2f bytes_per_msg=%.0f pending_left=%d\n",
		nodes, sent, size, objs, bytes, after.pending)
}

type storage struct {
	objects, bytes int64
	pending        int
}

func ringStorage(t *testing.T, dir string, nodes int) storage {
	t.Helper()
	var s storage
	for i := range nodes {
		out, err := exec.Command(cluster.Bin, "status", "--dir", filepath.Join(dir, fmt.Sprintf("node%d", i)), "--json").Output()
		if err != nil {
			t.Fatalf("status node%d: %v", i, err)
		}
		var st struct {
			Past struct{ Objects, Bytes int64 }
			Mail struct {
				PendingHeld int `json:"pending_held"`
			}
		}
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatal(err)
		}
		s.objects += st.Past.Objects
		s.bytes += st.Past.Bytes
		s.pending += st.Mail.PendingHeld
	}
	return s
}

func startDemoCmd(t *testing.T, d *demo) {
	d.cmd.Stdout, d.cmd.Stderr = nil, nil
	logf, err := os.Create(filepath.Join(t.TempDir(), "demo.out"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
}

func dialSMTP(t *testing.T, u demoUser) *smtp.Client {
	c, err := smtp.Dial(u.SMTP)
	if err != nil {
		t.Error(err)
		return nil
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Error(err)
	}
	host, _, _ := net.SplitHostPort(u.SMTP)
	if err := c.Auth(smtp.PlainAuth("", u.Address, u.Password, host)); err != nil {
		t.Error(err)
	}
	return c
}

func sendOn(t *testing.T, c *smtp.Client, from, to, subject, body string) {
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n", from, to, subject, body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(0, min(int(math.Ceil(p*float64(len(s))))-1, len(s)-1))]
}
