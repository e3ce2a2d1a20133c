package demo

import (
	"crypto/tls"
	"encoding/json"
	"epost/test/cluster"
	"fmt"
	"maps"
	"math"
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
//     deliveries settle, per delivered message;
//  4. with EPOST_BENCH_PRELOAD=N: N more messages to bob as fast as EPOST_BENCH_CONNS
//     connections (at least 8) go, then the latency phase again on the bigger INBOX.
//
// Around phases 1, 2 and 4 (io-latency, io-throughput, io-preload, io-latency-preloaded) it
// reads the disk counters of "epost status --json" (issue 12) before the phase and after its
// messages are filed and ioSettle has passed (lazy commits, the mail cache, the archive
// state), and prints fsyncs and bytes per delivered message, for the whole ring (the demo's
// nodes share one process, and the counters are per process) and per layer. io-idle is the
// background: the same counters over ioSettle with no mail, per second.
func TestBenchMail(t *testing.T) {
	if os.Getenv("EPOST_BENCH_MAIL") != "1" {
		t.Skip("a measurement, not a test: run with EPOST_BENCH_MAIL=1 (see docs/bench-mail.md)")
	}
	nodes := envInt("EPOST_BENCH_NODES", 5)
	msgs := envInt("EPOST_BENCH_MSGS", 100)
	conns := envInt("EPOST_BENCH_CONNS", 4)
	perConn := envInt("EPOST_BENCH_PER_CONN", 50)
	preload := envInt("EPOST_BENCH_PRELOAD", 0)
	rings := envInt("EPOST_BENCH_RINGS", 1) // 2: alice and bob in two federated rings (demo --rings 2)
	dir := t.TempDir()
	d := &demo{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(cluster.Bin, "demo", "--dir", dir, "--nodes", strconv.Itoa(nodes), "--seed", "1")
	if rings == 2 {
		d.cmd = exec.Command(cluster.Bin, "demo", "--dir", dir, "--rings", "2", "--seed", "1")
		nodes = 6
		benchRings = true
	}
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
	// latency sends n messages one at a time, each after the previous one's EXISTS.
	latency := func(phase string, n int) {
		sc := dialSMTP(t, alice)
		var submit, wakeup, total []float64
		for i := range n {
			t0 := time.Now()
			sendOn(t, sc, alice.Address, bob.Address, fmt.Sprintf("%s %d", phase, i), body())
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
		fmt.Printf("phase=%s nodes=%d messages=%d inbox=%d submit_p50_ms=%.1f submit_p99_ms=%.1f wake_p50_ms=%.1f wake_p99_ms=%.1f total_p50_ms=%.1f total_p99_ms=%.1f\n",
			phase, nodes, n, have, pct(submit, .5), pct(submit, .99), pct(wakeup, .5), pct(wakeup, .99), pct(total, .5), pct(total, .99))
	}
	// concurrent sends n messages over c connections and returns when the last 250 came.
	concurrent := func(phase string, c, n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for k := range c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := dialSMTP(t, alice)
				defer sc.Quit()
				for i := k; i < n; i += c {
					sendOn(t, sc, alice.Address, bob.Address, fmt.Sprintf("%s %d/%d", phase, k, i), body())
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	// filed waits until bob's INBOX holds want messages.
	filed := func(want uint32) {
		deadline := time.Now().Add(5 * time.Minute)
		for have < want && time.Now().Before(deadline) {
			select {
			case e := <-wake:
				have = max(have, e.n)
			case <-time.After(time.Second):
			}
		}
		if have < want {
			t.Fatalf("only %d of %d messages in bob's INBOX after 5 minutes", have, want)
		}
	}

	io0 := ringDisk(t, dir)
	time.Sleep(ioSettle)
	io1 := ringDisk(t, dir)
	printDisk("io-idle", io0, io1, ioSettle.Seconds(), "s")

	latency("latency", msgs)
	time.Sleep(ioSettle)
	io2 := ringDisk(t, dir)
	printDisk("io-latency", io1, io2, float64(msgs), "msg")

	before := ringStorage(t, dir, nodes)
	sent := conns * perConn
	el := concurrent("throughput", conns, sent)
	fmt.Printf("phase=throughput nodes=%d connections=%d messages=%d seconds=%.2f msgs_per_s=%.1f\n",
		nodes, conns, sent, el.Seconds(), float64(sent)/el.Seconds())

	// Let filing, receipts and trash settle, then count what the ring holds.
	filed(have + uint32(sent))
	idle.Close()
	time.Sleep(ioSettle)
	io3 := ringDisk(t, dir)
	printDisk(fmt.Sprintf("io-throughput connections=%d", conns), io2, io3, float64(sent), "msg")
	after := ringStorage(t, dir, nodes)
	objs := float64(after.objects-before.objects) / float64(sent)
	bytes := float64(after.bytes-before.bytes) / float64(sent)
	size := 2000 + 120
	fmt.Printf("phase=storage nodes=%d messages=%d message_bytes=%d objects_per_msg=%.2f bytes_per_msg=%.0f pending_left=%d\n",
		nodes, sent, size, objs, bytes, after.pending)

	if preload == 0 {
		return
	}
	if idle, err = c.Idle(); err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io4 := ringDisk(t, dir)
	pc := max(conns, 8)
	el = concurrent("preload", pc, preload)
	filed(have + uint32(preload))
	fmt.Printf("phase=preload nodes=%d connections=%d messages=%d inbox=%d seconds=%.2f msgs_per_s=%.1f\n",
		nodes, pc, preload, have, el.Seconds(), float64(preload)/el.Seconds())
	time.Sleep(ioSettle)
	io5 := ringDisk(t, dir)
	printDisk(fmt.Sprintf("io-preload connections=%d", pc), io4, io5, float64(preload), "msg")
	latency("latency-preloaded", msgs)
	time.Sleep(ioSettle)
	io6 := ringDisk(t, dir)
	printDisk("io-latency-preloaded", io5, io6, float64(msgs), "msg")
}

// ioSettle is how long a phase's trailing writes get before the disk counters are read: more
// than the mail cache's delay (5 s) and the store's lazy commits (1 s).
const ioSettle = 6 * time.Second

// diskSample is the "disk" object of a status (daemon.DiskStatus).
type diskSample struct {
	Layers map[string]struct{ Fsyncs, Bytes, Rewrites int64 }
	Proc   struct {
		WriteBytes int64 `json:"write_bytes"`
		Syscw      int64
	}
}

// benchRings: the bench runs the two-ring demo (nodes acme/node0-2, globex/node0-2).
var benchRings bool

// benchNodeDir is the directory of the demo's i-th node.
func benchNodeDir(dir string, i int) string {
	if benchRings {
		return filepath.Join(dir, []string{"acme", "globex"}[i/3], fmt.Sprintf("node%d", i%3))
	}
	return filepath.Join(dir, fmt.Sprintf("node%d", i))
}

// ringDisk reads the disk counters of the demo process (through node0: they are per process).
func ringDisk(t *testing.T, dir string) diskSample {
	t.Helper()
	out, err := exec.Command(cluster.Bin, "status", "--dir", benchNodeDir(dir, 0), "--json").Output()
	if err != nil {
		t.Fatalf("status node0: %v", err)
	}
	var st struct{ Disk diskSample }
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	return st.Disk
}

// printDisk prints b - a divided by per (messages, or seconds for io-idle): one phase line with
// the totals, one line per layer.
func printDisk(phase string, a, b diskSample, per float64, unit string) {
	var fs, by int64
	names := slices.Sorted(maps.Keys(b.Layers))
	for _, n := range names {
		fs += b.Layers[n].Fsyncs - a.Layers[n].Fsyncs
		by += b.Layers[n].Bytes - a.Layers[n].Bytes
	}
	count := fmt.Sprintf("msgs=%.0f", per)
	if unit == "s" {
		count = fmt.Sprintf("seconds=%.0f", per)
	}
	name, _, _ := strings.Cut(phase, " ")
	fmt.Printf("phase=%s %s fsyncs_per_%s=%.1f bytes_per_%s=%.0f proc_write_bytes_per_%s=%.0f proc_syscw_per_%s=%.1f\n",
		phase, count, unit, float64(fs)/per, unit, float64(by)/per,
		unit, float64(b.Proc.WriteBytes-a.Proc.WriteBytes)/per, unit, float64(b.Proc.Syscw-a.Proc.Syscw)/per)
	for _, n := range names {
		la, lb := a.Layers[n], b.Layers[n]
		fmt.Printf("layer=%s phase=%s fsyncs_per_%s=%.2f bytes_per_%s=%.0f rewrites=%d\n",
			n, name, unit, float64(lb.Fsyncs-la.Fsyncs)/per, unit, float64(lb.Bytes-la.Bytes)/per, lb.Rewrites-la.Rewrites)
	}
}

type storage struct {
	objects, bytes int64
	pending        int
}

func ringStorage(t *testing.T, dir string, nodes int) storage {
	t.Helper()
	var s storage
	for i := range nodes {
		out, err := exec.Command(cluster.Bin, "status", "--dir", benchNodeDir(dir, i), "--json").Output()
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
