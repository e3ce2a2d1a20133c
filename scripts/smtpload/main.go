// Command smtpload is an SMTP submission load generator: it sends N messages of about S bytes
// over C concurrent connections and prints one key=value line. It is a measurement tool for
// scripts/bench-postfix.sh (ePOST side by side with Postfix, issue 12), not part of the product
// and not run by "go test".
//
//	go run ./scripts/smtpload -addr 127.0.0.1:2525 -from a@x -to b@bench.example -n 500 -size 2k -c 4
//	go run ./scripts/smtpload -demo DIR/demo.json -n 500 -size 50k -c 16 -label epost
//
// Each connection is opened, greeted (EHLO), upgraded (STARTTLS, with -starttls) and
// authenticated (AUTH PLAIN, with -user) before the clock starts, then reused for many messages:
// MAIL FROM, RCPT TO, DATA, and RSET between messages (-rset). The submit latency of a message
// is MAIL FROM to the 250 after DATA's final dot (RFC 5321 section 4.1.1.4: the server has taken
// responsibility for the message). msgs_per_s is the messages accepted divided by the time from
// the moment every connection was ready to the last 250. A failed transaction counts as an
// error, is not retried, and its connection is replaced.
//
// Messages look like a mail client's: Date, From, To, Subject, a unique Message-ID,
// MIME-Version, User-Agent. Up to 8 KB they are text/plain; larger ones are multipart/mixed
// with a short text part and a base64 attachment filling the rest. Bodies are random per
// message, so no store can deduplicate them. -size counts the whole message (headers and
// body, CRLF line ends) as sent in DATA.
package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	addr, from, to  string
	user, password  string
	starttls        bool
	rset            bool
	n, conns, size  int
	timeout         time.Duration
	label           string
	seed            uint64
	maxConsecDrops  int
	runID           string
	fromDom, toName string
}

func main() {
	var c config
	var demo, size string
	flag.StringVar(&c.addr, "addr", "", "SMTP server HOST:PORT")
	flag.StringVar(&c.from, "from", "", "envelope and header sender")
	flag.StringVar(&c.to, "to", "", "envelope and header recipient")
	flag.StringVar(&c.user, "user", "", "AUTH PLAIN user name (no AUTH when empty)")
	flag.StringVar(&c.password, "password", "", "AUTH PLAIN password")
	flag.BoolVar(&c.starttls, "starttls", false, "STARTTLS before AUTH (the server certificate is not checked)")
	flag.BoolVar(&c.rset, "rset", true, "send RSET before every message but a connection's first")
	flag.StringVar(&demo, "demo", "", "an \"epost demo\" demo.json: send from its first user (its SMTP, STARTTLS, AUTH PLAIN) to its second; flags given override")
	flag.IntVar(&c.n, "n", 500, "messages to send")
	flag.IntVar(&c.conns, "c", 1, "concurrent connections")
	flag.StringVar(&size, "size", "2k", "message size in bytes (suffix k = 1024)")
	flag.DurationVar(&c.timeout, "timeout", time.Minute, "deadline for one connection setup or one message")
	flag.StringVar(&c.label, "label", "", "printed first as target=LABEL")
	flag.Uint64Var(&c.seed, "seed", 0, "seed for message bodies (0: from the clock)")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments %q", flag.Args())
	}
	var err error
	if c.size, err = parseSize(size); err != nil {
		fatalf("-size: %v", err)
	}
	if demo != "" {
		explicit := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
		if err := fromDemo(&c, demo, !explicit["starttls"]); err != nil {
			fatalf("-demo: %v", err)
		}
	}
	if c.addr == "" || c.from == "" || c.to == "" {
		fatalf("need -addr, -from and -to (or -demo FILE)")
	}
	if c.n < 1 || c.conns < 1 {
		fatalf("-n and -c must be at least 1")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	c.runID = strconv.FormatUint(c.seed%1e9, 36)
	c.maxConsecDrops = 5
	if _, d, ok := strings.Cut(c.from, "@"); ok {
		c.fromDom = d
	} else {
		c.fromDom = "smtpload.invalid"
	}
	c.toName, _, _ = strings.Cut(c.to, "@")
	r := run(c)
	fmt.Println(r.line(c))
	if r.firstErr != nil {
		fmt.Fprintf(os.Stderr, "smtpload: %d errors; first: %v\n", r.errors, r.firstErr)
	}
	if r.ok == 0 {
		os.Exit(1)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "smtpload: "+format+"\n", args...)
	os.Exit(2)
}

func parseSize(s string) (int, error) {
	mult := 1
	if t, ok := strings.CutSuffix(strings.ToLower(s), "k"); ok {
		s, mult = t, 1024
	}
	v, err := strconv.Atoi(s)
	if err != nil || v*mult < 512 {
		return 0, fmt.Errorf("%q: want bytes, at least 512 (e.g. 2048, 2k, 50k)", s)
	}
	return v * mult, nil
}

// fromDemo fills the unset flags from an "epost demo" demo.json; STARTTLS too unless -starttls
// was given.
func fromDemo(c *config, path string, startTLS bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var f struct {
		Users []struct{ Address, Password, SMTP string }
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Users) < 2 {
		return fmt.Errorf("%s: want at least two users", path)
	}
	a, b := f.Users[0], f.Users[1]
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.addr, a.SMTP)
	set(&c.from, a.Address)
	set(&c.to, b.Address)
	set(&c.user, a.Address)
	set(&c.password, a.Password)
	if startTLS {
		c.starttls = true
	}
	return nil
}

type result struct {
	ok, errors int
	bytes      int64
	elapsed    time.Duration
	cpu        time.Duration // the load generator's own CPU time while sending
	lat        []time.Duration
	firstErr   error
}

func (r *result) line(c config) string {
	var b strings.Builder
	if c.label != "" {
		fmt.Fprintf(&b, "target=%s ", c.label)
	}
	rate := 0.0
	if r.elapsed > 0 {
		rate = float64(r.ok) / r.elapsed.Seconds()
	}
	avg := int64(0)
	if r.ok > 0 {
		avg = r.bytes / int64(r.ok)
	}
	slices.Sort(r.lat)
	cpu := 0.0
	if r.ok > 0 {
		cpu = ms(r.cpu) / float64(r.ok)
	}
	fmt.Fprintf(&b, "size=%d conns=%d msgs=%d errors=%d elapsed_s=%.2f msgs_per_s=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f avg_bytes=%d client_cpu_ms_per_msg=%.2f",
		c.size, c.conns, r.ok, r.errors, r.elapsed.Seconds(), rate,
		ms(pct(r.lat, 50)), ms(pct(r.lat, 90)), ms(pct(r.lat, 99)), ms(pct(r.lat, 100)), avg, cpu)
	return b.String()
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

// run sets up every connection, then releases them together and sends c.n messages.
func run(c config) *result {
	var next atomic.Int64 // messages handed out
	var mu sync.Mutex
	res := &result{}
	fail := func(err error) {
		mu.Lock()
		res.errors++
		if res.firstErr == nil {
			res.firstErr = err
		}
		mu.Unlock()
	}
	clients := make([]*client, c.conns)
	var setup sync.WaitGroup
	for i := range clients {
		setup.Go(func() {
			cl, err := dial(c)
			if err != nil {
				fail(fmt.Errorf("connection %d: %w", i, err))
				return
			}
			clients[i] = cl
		})
	}
	setup.Wait()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	for i, cl := range clients {
		if cl == nil {
			continue
		}
		wg.Go(func() {
			rng := rand.New(rand.NewChaCha8(seedBytes(c.seed, uint64(i))))
			var lat []time.Duration
			var bytes int64
			used, drops := false, 0
			for {
				k := int(next.Add(1))
				if k > c.n {
					break
				}
				msg := message(c, k, rng)
				if cl == nil {
					var err error
					if cl, err = dial(c); err != nil {
						fail(fmt.Errorf("message %d: reconnect: %w", k, err))
						if drops++; drops >= c.maxConsecDrops {
							break
						}
						continue
					}
					used = false
				}
				d, err := cl.send(c, msg, used)
				used = true
				if err != nil {
					fail(fmt.Errorf("message %d: %w", k, err))
					cl.close()
					cl = nil
					drops++
					continue
				}
				drops = 0
				lat = append(lat, d)
				bytes += int64(len(msg))
			}
			if cl != nil {
				cl.quit()
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.ok += len(lat)
			res.bytes += bytes
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpuTime()-cpu0
	return res
}

// cpuTime is this process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func seedBytes(seed, i uint64) (b [32]byte) {
	for j := range 8 {
		b[j] = byte(seed >> (8 * j))
		b[8+j] = byte(i >> (8 * j))
	}
	return b
}

type client struct {
	conn net.Conn
	smtp *smtp.Client
}

func dial(c config) (*client, error) {
	conn, err := net.DialTimeout("tcp", c.addr, c.timeout)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(c.timeout))
	host, _, _ := net.SplitHostPort(c.addr)
	sc, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	cl := &client{conn: conn, smtp: sc}
	if err := sc.Hello("smtpload.localhost"); err != nil {
		cl.close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if c.starttls {
		if err := sc.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: true}); err != nil {
			cl.close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if c.user != "" {
		if err := sc.Auth(smtp.PlainAuth("", c.user, c.password, host)); err != nil {
			cl.close()
			return nil, fmt.Errorf("AUTH PLAIN: %w", err)
		}
	}
	return cl, nil
}

// send runs one transaction and returns MAIL FROM to the 250 after the final dot.
func (cl *client) send(c config, msg []byte, used bool) (time.Duration, error) {
	cl.conn.SetDeadline(time.Now().Add(c.timeout))
	if used && c.rset {
		if err := cl.smtp.Reset(); err != nil {
			return 0, fmt.Errorf("RSET: %w", err)
		}
	}
	t0 := time.Now()
	if err := cl.smtp.Mail(c.from); err != nil {
		return 0, fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := cl.smtp.Rcpt(c.to); err != nil {
		return 0, fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := cl.smtp.Data()
	if err != nil {
		return 0, fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return 0, fmt.Errorf("DATA body: %w", err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("end of DATA: %w", err)
	}
	return time.Since(t0), nil
}

func (cl *client) quit() {
	cl.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := cl.smtp.Quit(); err != nil {
		cl.close()
	}
}

func (cl *client) close() { cl.conn.Close() }

var words = strings.Fields(`the a of to and in for on with is that this we our from by at as be
are will it have not draft figures meeting next week report budget review please attached see
thanks regards team project update notes quarter plan status release schedule customer issue
question answer call tomorrow morning afternoon agenda minutes numbers sales support server
mail ring node storage latency throughput test result change proposal deadline friday monday`)

// message builds message k: realistic headers, then a random body filling c.size bytes.
func message(c config, k int, rng *rand.Rand) []byte {
	now := time.Now()
	var b strings.Builder
	b.Grow(c.size + 256)
	subject := strings.Join(sentence(rng, 3+rng.IntN(5)), " ")
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: Load Generator <%s>\r\n", c.from)
	if c.toName != "" {
		fmt.Fprintf(&b, "To: %s <%s>\r\n", strings.ToUpper(c.toName[:1])+c.toName[1:], c.to)
	} else {
		fmt.Fprintf(&b, "To: <%s>\r\n", c.to)
	}
	fmt.Fprintf(&b, "Subject: [smtpload %d] %s\r\n", k, subject)
	fmt.Fprintf(&b, "Message-ID: <%d.%s.%d.%08x@%s>\r\n", now.UnixNano(), c.runID, k, rng.Uint32(), c.fromDom)
	b.WriteString("MIME-Version: 1.0\r\nUser-Agent: smtpload (ePOST scripts/smtpload)\r\n")
	if c.size <= 8<<10 {
		b.WriteString("Content-Type: text/plain; charset=utf-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
		text(&b, rng, c.size-b.Len())
		return []byte(b.String())
	}
	boundary := fmt.Sprintf("=_smtpload_%016x", rng.Uint64())
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", boundary)
	b.WriteString("This is a multi-part message in MIME format.\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n", boundary)
	text(&b, rng, 1200)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/pdf; name=\"report-%d.pdf\"\r\n"+
		"Content-Disposition: attachment; filename=\"report-%d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", boundary, k, k)
	closing := fmt.Sprintf("--%s--\r\n", boundary)
	// Base64 lines of 76 characters plus CRLF carry 57 bytes each.
	room := c.size - b.Len() - len(closing)
	raw := make([]byte, max(57, room/78*57))
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 0 {
		n := min(76, len(enc))
		b.WriteString(enc[:n])
		b.WriteString("\r\n")
		enc = enc[n:]
	}
	b.WriteString(closing)
	return []byte(b.String())
}

func sentence(rng *rand.Rand, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = words[rng.IntN(len(words))]
	}
	return s
}

// text writes about room bytes of lines of words (at most 72 characters each), ending in CRLF.
func text(b *strings.Builder, rng *rand.Rand, room int) {
	for room > 2 {
		line := ""
		for {
			w := words[rng.IntN(len(words))]
			if len(line)+1+len(w) > min(72, room-2) {
				break
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		if line == "" {
			line = strings.Repeat("x", max(0, room-2))
		}
		b.WriteString(line)
		b.WriteString("\r\n")
		room -= len(line) + 2
	}
}
