// Command imapload is an IMAP load generator: C concurrent clients, each logged in and with a
// mailbox selected, run a mail client's mix of reads and writes for a while, and it prints each
// command's count, errors and p50/p90/p99 latency, the commands per second, and machine-readable
// key=value lines. With -bulk N it instead APPENDs N messages one after another on a single
// connection to a new folder (-multi K: K messages per command, RFC 3502 MULTIAPPEND). It is a measurement tool for scripts/bench-dovecot.sh (ePOST's
// IMAP side by side with Dovecot, issue 15), not part of the product and not run by "go test".
//
//	go run ./scripts/imapload -demo DIR/demo.json -c 5 -duration 30s -prefill 500
//	go run ./scripts/imapload -addr 127.0.0.1:1143 -user bob -pass secret -c 20 -n 5000
//	go run ./scripts/imapload -demo DIR/demo.json -bulk 10000
//	go run ./scripts/imapload -demo DIR/demo.json -bulk 10000 -multi 100
//
// It speaks IMAP4rev1 (RFC 3501) itself, so that the clock covers exactly one command: from
// writing the tagged command to reading its tagged response, with every untagged response in
// between read and (for literals) drained. APPEND sends its message as a synchronizing literal
// (RFC 3501 section 7.5), so its latency includes the continuation round trip, the same for
// every server. Every command answered NO or BAD, and every I/O error, is counted as an error
// of that command and printed with the first few examples; a connection that fails is replaced
// (login and SELECT again, not timed), and the command is not retried.
//
// The mix (-mix, weights) is read-heavy like a mail client's session:
//
//	fetch_env   FETCH the newest 20 messages' UID FLAGS ENVELOPE RFC822.SIZE INTERNALDATE
//	fetch_body  FETCH one random message's BODY.PEEK[]
//	search      UID SEARCH UNSEEN, or UID SEARCH FROM "alice", alternately
//	noop        NOOP (a client's poll; it also collects other sessions' changes)
//	store       STORE one random message +FLAGS or -FLAGS (\Seen or \Flagged)
//	append      APPEND a new message (about -size bytes) to the client's mailbox
//	copy        COPY one random message to the folder imapload-copies
//	expunge     STORE one random message +FLAGS.SILENT (\Deleted) (timed as STORE), then EXPUNGE
//
// Reads are FETCH, SEARCH and NOOP; writes are STORE, APPEND, COPY and EXPUNGE. append and
// expunge have equal weights by default, so the mailbox keeps about its size. By default every
// client selects one shared INBOX (-folders shared), topped up to -prefill messages before the
// clock starts; -folders per-client gives client i its own folder imapload-i, each topped up to
// -prefill.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	addr, user, pass string
	tls, starttls    bool
	clients          int
	duration         time.Duration
	ops              int
	mix              []mixEntry
	folders          string
	prefill          int
	bulk             int
	multi            int
	size             int
	timeout          time.Duration
	label            string
	seed             uint64
	rate             float64 // open loop: operations of the mix per second in all; 0: closed loop
}

type mixEntry struct {
	op     string
	weight int
}

// ops are the mix's operations, in the order they are printed.
var ops = []string{"fetch_env", "fetch_body", "search", "noop", "store", "append", "copy", "expunge"}

// commands are the timed IMAP commands, in the order they are printed.
var commands = []string{"FETCH_ENV", "FETCH_BODY", "SEARCH", "NOOP", "STORE", "APPEND", "COPY", "EXPUNGE"}

const defaultMix = "fetch_env=25,fetch_body=20,search=10,noop=10,store=15,append=8,copy=4,expunge=8"

func main() {
	var c config
	var demo, mix string
	flag.StringVar(&c.addr, "addr", "", "IMAP server HOST:PORT")
	flag.StringVar(&c.user, "user", "", "LOGIN user name")
	flag.StringVar(&c.pass, "pass", "", "LOGIN password")
	flag.StringVar(&demo, "demo", "", "an \"epost demo\" demo.json: log in as its second user (bob) on his IMAP server; flags given override")
	flag.BoolVar(&c.tls, "tls", false, "implicit TLS (IMAPS; the server certificate is not checked)")
	flag.BoolVar(&c.starttls, "starttls", false, "STARTTLS before LOGIN (the server certificate is not checked)")
	flag.IntVar(&c.clients, "c", 5, "concurrent clients, each on its own connection")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "how long the mixed load runs (ignored with -n)")
	flag.IntVar(&c.ops, "n", 0, "run this many operations of the mix instead of -duration")
	flag.Float64Var(&c.rate, "rate", 0, "open loop: start this many operations of the mix per second in all (an expunge operation is two commands), spread evenly over the clients and in time, so that servers are compared at the same load (0: closed loop, each client starts its next operation as soon as the last is answered)")
	flag.StringVar(&mix, "mix", defaultMix, "operation weights, op=weight,... (ops: "+strings.Join(ops, " ")+")")
	flag.StringVar(&c.folders, "folders", "shared", "shared: every client on INBOX; per-client: client i on folder imapload-i")
	flag.IntVar(&c.prefill, "prefill", 500, "top every mailbox used up to this many messages before the clock starts")
	flag.IntVar(&c.bulk, "bulk", 0, "instead of the mix: APPEND this many messages on one connection to a new folder")
	flag.IntVar(&c.multi, "multi", 1, "with -bulk: send K messages per APPEND command (RFC 3502 MULTIAPPEND), as a migration tool would")
	flag.IntVar(&c.size, "size", 4096, "approximate size of an APPENDed message in bytes")
	flag.DurationVar(&c.timeout, "timeout", time.Minute, "deadline for one command or one connection setup")
	flag.StringVar(&c.label, "label", "", "printed as target=LABEL")
	flag.Uint64Var(&c.seed, "seed", 0, "seed for the mix and the messages (0: from the clock)")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments %q", flag.Args())
	}
	if demo != "" {
		if err := fromDemo(&c, demo); err != nil {
			fatalf("-demo: %v", err)
		}
	}
	if c.addr == "" || c.user == "" {
		fatalf("need -addr and -user (or -demo FILE)")
	}
	var err error
	if c.mix, err = parseMix(mix); err != nil {
		fatalf("-mix: %v", err)
	}
	if c.folders != "shared" && c.folders != "per-client" {
		fatalf("-folders: shared or per-client")
	}
	if c.clients < 1 || c.size < 256 {
		fatalf("-c must be at least 1 and -size at least 256")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	if c.label == "" {
		c.label = c.addr
	}
	if c.bulk > 0 {
		os.Exit(runBulk(c))
	}
	os.Exit(runMix(c))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "imapload: "+format+"\n", args...)
	os.Exit(2)
}

// fromDemo fills the unset connection flags from an "epost demo" demo.json (its second user).
func fromDemo(c *config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var f struct {
		Users []struct{ Address, Password, IMAP string }
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Users) < 2 {
		return fmt.Errorf("%s: want at least two users", path)
	}
	u := f.Users[1]
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.addr, u.IMAP)
	set(&c.user, u.Address)
	set(&c.pass, u.Password)
	return nil
}

func parseMix(s string) ([]mixEntry, error) {
	var m []mixEntry
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		op, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(w)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("%q: want op=weight", part)
		}
		if !slices.Contains(ops, op) {
			return nil, fmt.Errorf("unknown op %q (ops: %s)", op, strings.Join(ops, " "))
		}
		m = append(m, mixEntry{op, n})
		total += n
	}
	if total == 0 {
		return nil, errors.New("all weights are zero")
	}
	return m, nil
}

func pick(m []mixEntry, rng *rand.Rand) string {
	total := 0
	for _, e := range m {
		total += e.weight
	}
	r := rng.IntN(total)
	for _, e := range m {
		if r < e.weight {
			return e.op
		}
		r -= e.weight
	}
	return m[len(m)-1].op
}

// stats collects one command's latencies and errors.
type stats struct {
	lat    []time.Duration
	errors int
	first  []string // the first few errors
}

type recorder struct {
	mu     sync.Mutex
	cmd    map[string]*stats
	behind int64 // -rate: operations started more than one interval after their time
}

func newRecorder() *recorder { return &recorder{cmd: map[string]*stats{}} }

func (r *recorder) get(cmd string) *stats {
	s := r.cmd[cmd]
	if s == nil {
		s = &stats{}
		r.cmd[cmd] = s
	}
	return s
}

func (r *recorder) ok(cmd string, d time.Duration) {
	r.mu.Lock()
	r.get(cmd).lat = append(r.get(cmd).lat, d)
	r.mu.Unlock()
}

func (r *recorder) fail(cmd string, err error) {
	r.mu.Lock()
	s := r.get(cmd)
	s.errors++
	if len(s.first) < 3 {
		s.first = append(s.first, err.Error())
	}
	r.mu.Unlock()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the nearest-rank percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// print writes the human table, the error examples, then one key=value line per command and a
// summary line, each starting with "RESULT ".
func (r *recorder) print(c config, kind string, elapsed time.Duration) (ok, errs int) {
	names := slices.Clone(commands)
	for k := range r.cmd {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	fmt.Printf("%-11s %8s %7s %9s %9s %9s %9s %9s\n", "command", "count", "errors", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
	var total time.Duration
	var lines []string
	for _, name := range names {
		s := r.cmd[name]
		if s == nil {
			continue
		}
		slices.Sort(s.lat)
		ok += len(s.lat)
		errs += s.errors
		var sum time.Duration
		for _, d := range s.lat {
			sum += d
		}
		total += sum
		mean := time.Duration(0)
		if len(s.lat) > 0 {
			mean = sum / time.Duration(len(s.lat))
		}
		fmt.Printf("%-11s %8d %7d %9.1f %9.1f %9.1f %9.1f %9.1f\n", name, len(s.lat), s.errors, ms(mean),
			ms(pct(s.lat, 50)), ms(pct(s.lat, 90)), ms(pct(s.lat, 99)), ms(pct(s.lat, 100)))
		lines = append(lines, fmt.Sprintf("RESULT target=%s kind=%s clients=%d cmd=%s n=%d errors=%d mean_ms=%.2f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f",
			c.label, kind, c.clients, name, len(s.lat), s.errors, ms(mean), ms(pct(s.lat, 50)), ms(pct(s.lat, 90)), ms(pct(s.lat, 99)), ms(pct(s.lat, 100))))
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(ok) / elapsed.Seconds()
	}
	fmt.Printf("%s: %d commands (%d errors) in %.1fs = %.1f commands/s\n", c.label, ok, errs, elapsed.Seconds(), rate)
	for _, name := range names {
		if s := r.cmd[name]; s != nil && s.errors > 0 {
			fmt.Printf("  %s errors, first %d of %d: %s\n", name, len(s.first), s.errors, strings.Join(s.first, " | "))
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	mean := time.Duration(0)
	if ok > 0 {
		mean = total / time.Duration(ok)
	}
	fmt.Printf("RESULT target=%s kind=%s clients=%d cmd=ALL n=%d errors=%d mean_ms=%.2f elapsed_s=%.2f cmds_per_s=%.1f offered_per_s=%g behind=%d folders=%s prefill=%d size=%d\n",
		c.label, kind, c.clients, ok, errs, ms(mean), elapsed.Seconds(), rate, c.rate, r.behind, c.folders, c.prefill, c.size)
	return ok, errs
}

// runMix prefills the mailboxes, then runs the mix on c.clients connections.
func runMix(c config) int {
	rec := newRecorder()
	clients := make([]*client, c.clients)
	var setupErr atomic.Value
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			cl, err := dial(c, mailboxOf(c, i))
			if err != nil {
				setupErr.Store(fmt.Errorf("client %d: %w", i, err))
				return
			}
			clients[i] = cl
		})
	}
	wg.Wait()
	if err, _ := setupErr.Load().(error); err != nil {
		fatalf("setup: %v", err)
	}
	// Other sessions' messages become visible at a command boundary; a NOOP shows them all.
	t0 := time.Now()
	if err := prefill(c, clients); err != nil {
		fatalf("prefill: %v", err)
	}
	for _, cl := range clients {
		if _, err := cl.cmd("NOOP"); err != nil {
			fatalf("NOOP after prefill: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "imapload: %s: %d clients ready, mailbox %s holds %d messages (prefill took %.1fs)\n",
		c.label, c.clients, mailboxOf(c, 0), clients[0].exists, time.Since(t0).Seconds())

	var next, behind atomic.Int64
	deadline := time.Now().Add(c.duration)
	start := time.Now()
	// With -rate, client i starts its k-th operation at start + (i/clients + k) * interval, or
	// at once when it is late; one started more than one interval late counts as behind (the
	// server did not keep up with the offered load).
	interval := time.Duration(0)
	if c.rate > 0 {
		interval = time.Duration(float64(c.clients) / c.rate * float64(time.Second))
	}
	for i, cl := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(c.seed, uint64(i)))
			drops := 0
			due := start.Add(interval * time.Duration(i) / time.Duration(c.clients))
			for {
				if interval > 0 {
					if wait := time.Until(due); wait > 0 {
						time.Sleep(wait)
					} else if -wait > interval {
						behind.Add(1)
					}
					due = due.Add(interval)
				}
				if c.ops > 0 {
					if next.Add(1) > int64(c.ops) {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				if cl == nil {
					var err error
					if cl, err = dial(c, mailboxOf(c, i)); err != nil {
						rec.fail("RECONNECT", err)
						if drops++; drops >= 5 {
							return
						}
						time.Sleep(time.Second)
						continue
					}
				}
				if err := cl.op(c, pick(c.mix, rng), rng, rec); err != nil {
					cl.close()
					cl = nil
					continue
				}
				drops = 0
			}
			if cl != nil {
				cl.logout()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	rec.behind = behind.Load()
	ok, errs := rec.print(c, "mix", elapsed)
	if ok == 0 || errs > ok/10 {
		return 1
	}
	return 0
}

func mailboxOf(c config, i int) string {
	if c.folders == "shared" {
		return "INBOX"
	}
	return fmt.Sprintf("imapload-%d", i)
}

// prefill tops every mailbox up to c.prefill messages, using all connections.
func prefill(c config, clients []*client) error {
	var wg sync.WaitGroup
	var firstErr atomic.Value
	if c.folders == "shared" {
		var left atomic.Int64
		left.Store(int64(c.prefill - clients[0].exists))
		for i, cl := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(c.seed^0x5eed, uint64(i)))
				for left.Add(-1) >= 0 {
					if err := cl.append(c, cl.mailbox, rng); err != nil {
						firstErr.Store(err)
						return
					}
				}
			})
		}
	} else {
		for i, cl := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(c.seed^0x5eed, uint64(i)))
				for n := cl.exists; n < c.prefill; n++ {
					if err := cl.append(c, cl.mailbox, rng); err != nil {
						firstErr.Store(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// runBulk APPENDs c.bulk messages, one after another, on one connection to a new folder: one
// message per APPEND, or c.multi per command (MULTIAPPEND, the last command takes the rest).
func runBulk(c config) int {
	c.clients = 1
	c.multi = max(1, c.multi)
	folder := fmt.Sprintf("imapload-bulk-%s", strconv.FormatUint(c.seed%1e9, 36))
	cl, err := dial(c, "")
	if err != nil {
		fatalf("setup: %v", err)
	}
	if _, err := cl.cmd("CREATE " + folder); err != nil {
		fatalf("CREATE %s: %v", folder, err)
	}
	name := "APPEND"
	if c.multi > 1 {
		name = "MULTIAPPEND"
	}
	rec := newRecorder()
	rng := rand.New(rand.NewPCG(c.seed, 0xb01c))
	start := time.Now()
	lastReport := start
	msgs, bytes := 0, 0
	for i := 0; i < c.bulk; i += c.multi {
		batch := make([][]byte, min(c.multi, c.bulk-i))
		for j := range batch {
			batch[j] = message(c, rng)
		}
		t := time.Now()
		err := cl.appendAll(folder, batch)
		if err != nil {
			rec.fail(name, err)
			if !errors.Is(err, errNo) {
				cl.close()
				if cl, err = dial(c, ""); err != nil {
					fatalf("reconnect after %d messages: %v", i, err)
				}
			}
			continue
		}
		rec.ok(name, time.Since(t))
		msgs += len(batch)
		for _, m := range batch {
			bytes += len(m)
		}
		if time.Since(lastReport) > 30*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(os.Stderr, "imapload: %s: bulk %d of %d after %.0fs\n", c.label, i+len(batch), c.bulk, time.Since(start).Seconds())
		}
	}
	elapsed := time.Since(start)
	cl.logout()
	ok, errs := rec.print(c, "bulk", elapsed)
	fmt.Printf("RESULT target=%s kind=bulk cmd=BULK folder=%s msgs=%d per_command=%d commands=%d errors=%d total_s=%.2f msgs_per_s=%.1f mb_per_s=%.2f size=%d\n",
		c.label, folder, msgs, c.multi, ok, errs, elapsed.Seconds(), float64(msgs)/elapsed.Seconds(), float64(bytes)/1e6/elapsed.Seconds(), c.size)
	if ok == 0 || errs > 0 {
		return 1
	}
	return 0
}

// op runs one operation of the mix. It returns an error only when the connection is unusable.
func (cl *client) op(c config, op string, rng *rand.Rand, rec *recorder) error {
	if cl.exists == 0 && op != "noop" && op != "append" && op != "search" {
		op = "append"
	}
	seq := 1 + rng.IntN(max(1, cl.exists))
	timed := func(name, cmd string) error {
		t := time.Now()
		_, err := cl.cmd(cmd)
		d := time.Since(t)
		if err != nil {
			rec.fail(name, err)
			if errors.Is(err, errNo) {
				return nil
			}
			return err
		}
		rec.ok(name, d)
		return nil
	}
	switch op {
	case "fetch_env":
		return timed("FETCH_ENV", fmt.Sprintf("FETCH %d:* (UID FLAGS ENVELOPE RFC822.SIZE INTERNALDATE)", max(1, cl.exists-19)))
	case "fetch_body":
		return timed("FETCH_BODY", fmt.Sprintf("FETCH %d BODY.PEEK[]", seq))
	case "search":
		cl.searches++
		if cl.searches%2 == 0 {
			return timed("SEARCH", `UID SEARCH FROM "alice"`)
		}
		return timed("SEARCH", "UID SEARCH UNSEEN")
	case "noop":
		return timed("NOOP", "NOOP")
	case "store":
		sign, fl := "+", `\Seen`
		if rng.IntN(2) == 0 {
			sign = "-"
		}
		if rng.IntN(3) == 0 {
			fl = `\Flagged`
		}
		return timed("STORE", fmt.Sprintf("STORE %d %sFLAGS (%s)", seq, sign, fl))
	case "append":
		t := time.Now()
		err := cl.append(c, cl.mailbox, rng)
		d := time.Since(t)
		if err != nil {
			rec.fail("APPEND", err)
			if errors.Is(err, errNo) {
				return nil
			}
			return err
		}
		rec.ok("APPEND", d)
		return nil
	case "copy":
		return timed("COPY", fmt.Sprintf("COPY %d imapload-copies", seq))
	case "expunge":
		if err := timed("STORE", fmt.Sprintf(`STORE %d +FLAGS.SILENT (\Deleted)`, seq)); err != nil {
			return err
		}
		return timed("EXPUNGE", "EXPUNGE")
	}
	return fmt.Errorf("unknown op %q", op)
}

// errNo marks a command the server answered NO or BAD: the connection is still usable.
var errNo = errors.New("answered")

// client is one IMAP connection in the Selected state (or Authenticated, for -bulk).
type client struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	timeout  time.Duration
	tag      int
	mailbox  string
	exists   int // the selected mailbox's size as this session knows it
	searches int
}

func dial(c config, mailbox string) (*client, error) {
	var conn net.Conn
	var err error
	host, _, _ := net.SplitHostPort(c.addr)
	tlsConf := &tls.Config{ServerName: host, InsecureSkipVerify: true}
	if c.tls {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: c.timeout}, "tcp", c.addr, tlsConf)
	} else {
		conn, err = net.DialTimeout("tcp", c.addr, c.timeout)
	}
	if err != nil {
		return nil, err
	}
	cl := &client{conn: conn, timeout: c.timeout, mailbox: mailbox}
	cl.r, cl.w = bufio.NewReaderSize(conn, 64<<10), bufio.NewWriterSize(conn, 64<<10)
	conn.SetDeadline(time.Now().Add(c.timeout))
	greeting, err := cl.line()
	if err != nil || !strings.HasPrefix(greeting, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("greeting %q: %v", greeting, err)
	}
	if c.starttls && !c.tls {
		if _, err := cl.cmd("STARTTLS"); err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
		tc := tls.Client(conn, tlsConf)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		cl.conn = tc
		cl.r, cl.w = bufio.NewReaderSize(tc, 64<<10), bufio.NewWriterSize(tc, 64<<10)
	}
	if _, err := cl.cmd("LOGIN " + quote(c.user) + " " + quote(c.pass)); err != nil {
		cl.close()
		return nil, fmt.Errorf("LOGIN: %w", err)
	}
	// The copies folder and a per-client folder may already exist: a NO is fine.
	cl.cmd("CREATE imapload-copies")
	if mailbox == "" {
		return cl, nil
	}
	if mailbox != "INBOX" {
		cl.cmd("CREATE " + mailbox)
	}
	if _, err := cl.cmd("SELECT " + mailbox); err != nil {
		cl.close()
		return nil, fmt.Errorf("SELECT %s: %w", mailbox, err)
	}
	return cl, nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (cl *client) close() { cl.conn.Close() }

func (cl *client) logout() {
	cl.conn.SetDeadline(time.Now().Add(5 * time.Second))
	cl.cmd("LOGOUT")
	cl.close()
}

// line reads one response line without its CRLF, draining any literals in it (their bytes are
// replaced by "{N}").
func (cl *client) line() (string, error) {
	var b strings.Builder
	for {
		l, err := cl.r.ReadString('\n')
		if err != nil {
			return b.String() + l, err
		}
		l = strings.TrimRight(l, "\r\n")
		b.WriteString(l)
		n, ok := literalLen(l)
		if !ok {
			return b.String(), nil
		}
		if _, err := io.CopyN(io.Discard, cl.r, n); err != nil {
			return b.String(), err
		}
	}
}

// literalLen reports whether l ends in a literal's announcement {N} and N.
func literalLen(l string) (int64, bool) {
	if !strings.HasSuffix(l, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(l[i+1:len(l)-1], "+"), 10, 64)
	return n, err == nil && n >= 0
}

// cmd sends one command and reads up to its tagged response. An answer other than OK is an
// error wrapping errNo.
func (cl *client) cmd(command string) (string, error) {
	cl.tag++
	tag := "a" + strconv.Itoa(cl.tag)
	cl.conn.SetDeadline(time.Now().Add(cl.timeout))
	cl.w.WriteString(tag + " " + command + "\r\n")
	if err := cl.w.Flush(); err != nil {
		return "", err
	}
	return cl.finish(tag, command)
}

// finish reads responses up to the tagged one, keeping track of the mailbox size.
func (cl *client) finish(tag, command string) (string, error) {
	for {
		l, err := cl.line()
		if err != nil {
			return "", fmt.Errorf("%s: %w", verb(command), err)
		}
		if rest, ok := strings.CutPrefix(l, "* "); ok {
			cl.untagged(rest)
			continue
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			if strings.HasPrefix(rest, "OK") {
				return rest, nil
			}
			return rest, fmt.Errorf("%s %w %s", verb(command), errNo, rest)
		}
		// A continuation request we did not ask for, or another tag: protocol error.
		if strings.HasPrefix(l, "+") {
			return "", fmt.Errorf("%s: unexpected continuation %q", verb(command), l)
		}
	}
}

func verb(command string) string {
	f := strings.Fields(command)
	if len(f) > 1 && f[0] == "UID" {
		return f[0] + " " + f[1]
	}
	if len(f) > 0 {
		return f[0]
	}
	return command
}

// untagged tracks "* N EXISTS" and "* N EXPUNGE" (RFC 3501 sections 7.3.1 and 7.4.1).
func (cl *client) untagged(rest string) {
	n, what, ok := strings.Cut(rest, " ")
	if !ok {
		return
	}
	v, err := strconv.Atoi(n)
	if err != nil {
		return
	}
	switch {
	case what == "EXISTS":
		cl.exists = v
	case what == "EXPUNGE":
		cl.exists = max(0, cl.exists-1)
	}
}

// append APPENDs one new message to mailbox with a synchronizing literal.
func (cl *client) append(c config, mailbox string, rng *rand.Rand) error {
	return cl.appendAll(mailbox, [][]byte{message(c, rng)})
}

// appendAll APPENDs msgs to mailbox in one command (RFC 3502 MULTIAPPEND when there are
// several), each as a synchronizing literal.
func (cl *client) appendAll(mailbox string, msgs [][]byte) error {
	cl.tag++
	tag := "a" + strconv.Itoa(cl.tag)
	cl.conn.SetDeadline(time.Now().Add(cl.timeout))
	fmt.Fprintf(cl.w, "%s APPEND %s {%d}\r\n", tag, mailbox, len(msgs[0]))
	for i, msg := range msgs {
		if err := cl.w.Flush(); err != nil {
			return err
		}
		if err := cl.continuation(tag); err != nil {
			return err
		}
		cl.w.Write(msg)
		if i+1 < len(msgs) {
			fmt.Fprintf(cl.w, " {%d}\r\n", len(msgs[i+1]))
		} else {
			cl.w.WriteString("\r\n")
		}
	}
	if err := cl.w.Flush(); err != nil {
		return err
	}
	_, err := cl.finish(tag, "APPEND")
	return err
}

// continuation waits for the "+" that lets a synchronizing literal go (RFC 3501 section 7.5).
func (cl *client) continuation(tag string) error {
	for {
		l, err := cl.line()
		if err != nil {
			return fmt.Errorf("APPEND: %w", err)
		}
		if strings.HasPrefix(l, "+") {
			return nil
		}
		if rest, ok := strings.CutPrefix(l, "* "); ok {
			cl.untagged(rest)
			continue
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return fmt.Errorf("APPEND %w %s", errNo, rest)
		}
	}
}

var words = strings.Fields(`the a of to and in for on with is that this we our from by at as be
are will it have not draft figures meeting next week report budget review please attached see
thanks regards team project update notes quarter plan status release schedule customer issue
question answer call tomorrow morning afternoon agenda minutes numbers sales support server
mail ring node storage latency throughput test result change proposal deadline friday monday`)

var msgCount atomic.Int64

// message builds a text/plain message of about c.size bytes from alice or carol, with a unique
// Message-ID and random words, so no store can deduplicate it.
func message(c config, rng *rand.Rand) []byte {
	k := msgCount.Add(1)
	now := time.Now()
	from := "Alice <alice@demo.example>"
	if rng.IntN(2) == 0 {
		from = "Carol <carol@example.net>"
	}
	var b strings.Builder
	b.Grow(c.size + 256)
	fmt.Fprintf(&b, "Date: %s\r\nFrom: %s\r\nTo: Bob <bob@demo.example>\r\n", now.Format(time.RFC1123Z), from)
	fmt.Fprintf(&b, "Subject: [imapload %d] %s\r\n", k, strings.Join(sentence(rng, 3+rng.IntN(5)), " "))
	fmt.Fprintf(&b, "Message-ID: <%d.%d.%08x@imapload.invalid>\r\n", now.UnixNano(), k, rng.Uint32())
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	for room := c.size - b.Len(); room > 2; {
		line := strings.Join(sentence(rng, 1+rng.IntN(11)), " ")
		if len(line)+2 > room {
			line = strings.Repeat("x", room-2)
		}
		b.WriteString(line)
		b.WriteString("\r\n")
		room -= len(line) + 2
	}
	return []byte(b.String())
}

func sentence(rng *rand.Rand, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = words[rng.IntN(len(words))]
	}
	return s
}
