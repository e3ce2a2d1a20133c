package imap_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"epost/internal/imapserver"
	"epost/internal/mailbox"
)

// The conformance ratchet of issue 15: one case per defect an outside conformance run found
// (and per extension it found missing), each a raw protocol exchange checked against the RFC.
// Cases listed in knownBroken fail on the engine: they are reported, not failed, and a listed
// case that passes fails the test (take it off the list: the ratchet only turns one way). A
// case not listed must pass. The go-imap engine the node served before internal/imapserver failed
// 26 of the first 28; imapserver passes all of them, and the later ones (CONTEXT=SORT, NOTIFY's
// MessageNew fetch attributes), so the list is empty.
var knownBroken = map[string]string{}

// rawConn is a line-level IMAP client: it sends what it is given and reads responses whole
// (literals included) up to the tagged one.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	n  int
}

func dialRaw(t *testing.T, addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	if _, err := rc.line(); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return rc, nil
}

var literalAtEnd = regexp.MustCompile(`~?\{(\d+)\+?\}$`)

// line reads one response line with any literals it carries.
func (r *rawConn) line() (string, error) {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	for {
		l, err := r.br.ReadString('\n')
		b.WriteString(l)
		if err != nil {
			return b.String(), err
		}
		m := literalAtEnd.FindStringSubmatch(strings.TrimRight(l, "\r\n"))
		if m == nil {
			return b.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		if n > 1<<20 {
			return b.String(), fmt.Errorf("literal of %d bytes", n)
		}
		buf := make([]byte, n)
		if _, err := ioReadFull(r.br, buf); err != nil {
			return b.String(), err
		}
		b.Write(buf)
	}
}

func ioReadFull(br *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := br.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// cmd sends "TAG text" and returns every response up to and including the tagged one; on
// "+ " continuation requests it sends the next of more.
func (r *rawConn) cmd(text string, more ...string) (string, error) {
	r.n++
	tag := fmt.Sprintf("c%d", r.n)
	if _, err := fmt.Fprintf(r.c, "%s %s\r\n", tag, text); err != nil {
		return "", err
	}
	var out strings.Builder
	for {
		l, err := r.line()
		out.WriteString(l)
		if err != nil {
			return out.String(), err
		}
		if strings.HasPrefix(l, "+ ") && len(more) > 0 {
			if _, err := fmt.Fprintf(r.c, "%s\r\n", more[0]); err != nil {
				return out.String(), err
			}
			more = more[1:]
			continue
		}
		if strings.HasPrefix(l, tag+" ") {
			return out.String(), nil
		}
	}
}

// send writes bytes as they are and reads up to the line starting with tag (or the timeout).
func (r *rawConn) send(raw, tag string, wait time.Duration) (string, error) {
	if _, err := r.c.Write([]byte(raw)); err != nil {
		return "", err
	}
	var out strings.Builder
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		r.c.SetReadDeadline(deadline)
		l, err := r.br.ReadString('\n')
		out.WriteString(l)
		if err != nil {
			return out.String(), err
		}
		if strings.HasPrefix(l, tag+" ") || strings.HasPrefix(l, "* BYE") {
			return out.String(), nil
		}
	}
	return out.String(), fmt.Errorf("no answer tagged %s in %v", tag, wait)
}

func (r *rawConn) login() error {
	out, err := r.cmd(fmt.Sprintf("LOGIN %q %q", testUser, testPassword))
	if err == nil && !strings.Contains(out, " OK") {
		err = fmt.Errorf("login: %s", out)
	}
	return err
}

func (r *rawConn) appendMsg(mailbox, msg string) error {
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	out, err := r.cmd(fmt.Sprintf("APPEND %s {%d}", mailbox, len(msg)), msg)
	if err == nil && !strings.Contains(out, " OK") {
		err = fmt.Errorf("append: %s", out)
	}
	return err
}

type confCase struct {
	name string
	run  func(r *rawConn) error
	// two, when set instead of run, gets a second logged-in session on the same server.
	two func(a, b *rawConn) error
}

// expect checks that out matches the pattern (a regular expression, multi-line).
func expect(out, pattern string) error {
	if regexp.MustCompile("(?m)" + pattern).MatchString(out) {
		return nil
	}
	return fmt.Errorf("want %q in:\n%s", pattern, out)
}

func noServerBug(out string) error {
	if strings.Contains(out, "SERVERBUG") {
		return fmt.Errorf("SERVERBUG where the client erred:\n%s", out)
	}
	return nil
}

func confCases() []confCase {
	cs := []confCase{
		{name: "list-empty-pattern", run: func(r *rawConn) error {
			out, err := r.cmd(`LIST "" ""`)
			if err != nil {
				return err
			}
			return expect(out, `^\* LIST \(\\Noselect\) "/" ""\r$`)
		}},
		{name: "lsub-noselect-parent", run: func(r *rawConn) error {
			r.cmd("CREATE par/child")
			r.cmd("UNSUBSCRIBE par")
			r.cmd("SUBSCRIBE par/child")
			out, err := r.cmd(`LSUB "" "%"`)
			if err != nil {
				return err
			}
			return expect(out, `^\* LSUB \([^)]*\\Noselect[^)]*\) "/" "?par"?\r$`)
		}},
		{name: "list-subscribed-deleted", run: func(r *rawConn) error {
			r.cmd("CREATE gone")
			r.cmd("SUBSCRIBE gone")
			r.cmd("DELETE gone")
			out, err := r.cmd(`LIST (SUBSCRIBED) "" "*"`)
			if err != nil {
				return err
			}
			return expect(out, `^\* LIST \([^)]*\\NonExistent[^)]*\) "/" "?gone"?\r$`)
		}},
		{name: "recursivematch-childinfo", run: func(r *rawConn) error {
			r.cmd("CREATE top/sub")
			r.cmd("UNSUBSCRIBE top")
			r.cmd("SUBSCRIBE top/sub")
			out, err := r.cmd(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"`)
			if err != nil {
				return err
			}
			return expect(out, `^\* LIST \([^)]*\) "/" "?top"? \("CHILDINFO" \("SUBSCRIBED"\)\)\r$`)
		}},
		{name: "binary-partial-origin", run: func(r *rawConn) error {
			if err := r.appendMsg("INBOX", "Subject: bin\n\nhello world\n"); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd("FETCH 1 (BINARY.PEEK[1]<0.7>)")
			if err != nil {
				return err
			}
			return expect(out, `BINARY\[1\]<0> (~?\{7\}|"hello w")`)
		}},
		{name: "flags-after-new-keyword", run: func(r *rawConn) error {
			if err := r.appendMsg("INBOX", "Subject: kw\n\nx\n"); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd("STORE 1 +FLAGS ($Ratchet1)")
			if err != nil {
				return err
			}
			return expect(out, `^\* FLAGS \([^)]*\$Ratchet1[^)]*\)\r$`)
		}},
		{name: "examine-recent-after-append", run: func(r *rawConn) error {
			r.cmd("CREATE fresh")
			if err := r.appendMsg("fresh", "Subject: r\n\nx\n"); err != nil {
				return err
			}
			out, err := r.cmd("EXAMINE fresh")
			if err != nil {
				return err
			}
			return expect(out, `^\* 1 RECENT\r$`)
		}},
		{name: "unterminated-quoted", run: func(r *rawConn) error {
			out, err := r.send("u1 LOGIN \"abc\r\n", "u1", 3*time.Second)
			if err != nil {
				return err
			}
			return expect(out, `^u1 BAD`)
		}},
		{name: "id-max-size", run: func(r *rawConn) error {
			var b strings.Builder
			b.WriteString("ID (")
			for i := range 30 {
				if i > 0 {
					b.WriteString(" ")
				}
				fmt.Fprintf(&b, "\"field%02d\" \"%s\"", i, strings.Repeat("v", 1024))
			}
			b.WriteString(")")
			out, err := r.cmd(b.String())
			if err != nil {
				return err
			}
			return expect(out, `^c\d+ OK`)
		}},
		{name: "uid-fetch-bad-set", run: func(r *rawConn) error {
			r.cmd("SELECT INBOX")
			out, err := r.cmd("UID FETCH x (FLAGS)")
			if err != nil {
				return err
			}
			if err := noServerBug(out); err != nil {
				return err
			}
			return expect(out, `^c\d+ BAD`)
		}},
		{name: "long-line", run: func(r *rawConn) error {
			out, err := r.send("l1 NOOP "+strings.Repeat("a", 200<<10)+"\r\n", "l1", 5*time.Second)
			if e := noServerBug(out); e != nil {
				return e
			}
			if err != nil && !strings.Contains(out, "BAD") && !strings.Contains(out, "BYE") {
				return fmt.Errorf("%v: %q", err, out)
			}
			return expect(out, `(^l1 BAD|^\* BYE)`)
		}},
		{name: "huge-literal-login", run: func(r *rawConn) error {
			out, err := r.send("h1 LOGIN {999999999}\r\n", "h1", 3*time.Second)
			if err != nil {
				return err
			}
			if strings.Contains(out, `\x00`) || strings.Contains(out, "\x00") {
				return fmt.Errorf("refusal shows a NUL byte: %q", out)
			}
			return expect(out, `^h1 (BAD|NO)`)
		}},
		{name: "envelope-group", run: func(r *rawConn) error {
			if err := r.appendMsg("INBOX", "Subject: grp\nFrom: a@example.org\nTo: Team: b@example.org, c@example.org;\n\nx\n"); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd("UID FETCH * (ENVELOPE)")
			if err != nil {
				return err
			}
			return expect(out, `\(\(NIL NIL "Team" NIL\)\(NIL NIL "b" "example\.org"\)\(NIL NIL "c" "example\.org"\)\(NIL NIL NIL NIL\)\)`)
		}},
		{name: "search-from-comment", run: func(r *rawConn) error {
			if err := r.appendMsg("INBOX", "Subject: cmt\nFrom: bob(home)@example.net (Bob)\nTo: a@example.org\n\nx\n"); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd(`UID SEARCH FROM "bob@example.net"`)
			if err != nil {
				return err
			}
			return expect(out, `^\* SEARCH \d+`)
		}},
		{name: "bodystructure-2231-ascii", run: func(r *rawConn) error {
			msg := "Subject: att\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n--b1\nContent-Type: text/plain\n\nhi\n--b1\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.bin\n\nAAAA\n--b1--\n"
			if err := r.appendMsg("INBOX", msg); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd("UID FETCH * (BODYSTRUCTURE)")
			if err != nil {
				return err
			}
			for i := 0; i < len(out); i++ {
				if out[i] >= 0x80 {
					return fmt.Errorf("8-bit byte in BODYSTRUCTURE for a client without UTF-8:\n%s", out)
				}
			}
			return expect(out, `BODYSTRUCTURE`)
		}},
	}
	cs = append(cs, confCase{name: "fetch-racing-expunge", two: func(a, b *rawConn) error {
		for i := range 2 {
			if err := a.appendMsg("INBOX", fmt.Sprintf("Subject: race %d\n\nbody %d\n", i, i)); err != nil {
				return err
			}
		}
		a.cmd("SELECT INBOX")
		b.cmd("SELECT INBOX")
		b.cmd(`STORE 1 +FLAGS.SILENT (\Deleted)`)
		if out, err := b.cmd("EXPUNGE"); err != nil || !strings.Contains(out, "* 1 EXPUNGE") {
			return fmt.Errorf("second session's EXPUNGE: %v %s", err, out)
		}
		out, err := a.cmd("FETCH 1 (BODY[])")
		if err != nil {
			return err
		}
		if err := noServerBug(out); err != nil {
			return err
		}
		return expect(out, `(^\* 1 FETCH|^c\d+ NO \[EXPUNGEISSUED\]|^c\d+ OK)`)
	}})
	// RFC 5267 section 4.3.3's C01 example: a sorted context whose result was two messages gets
	// three that sort ahead of them; the preferred update is one pair, ADDTO (1 first:last).
	cs = append(cs, confCase{name: "esort-context-positions", two: func(a, b *rawConn) error {
		for _, subj := range []string{"x", "y"} {
			if err := a.appendMsg("INBOX", "Subject: "+subj+"\n\nbody\n"); err != nil {
				return err
			}
		}
		a.cmd("SELECT INBOX")
		out, err := a.cmd("UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL")
		if err != nil {
			return err
		}
		if err := expect(out, `^\* ESEARCH \(TAG "c\d+"\) UID ALL 1:2\r$`); err != nil {
			return err
		}
		for _, subj := range []string{"a", "b", "c"} {
			if err := b.appendMsg("INBOX", "Subject: "+subj+"\n\nbody\n"); err != nil {
				return err
			}
		}
		out, err = a.cmd("NOOP")
		if err != nil {
			return err
		}
		return expect(out, `(?s)^\* 5 EXISTS\r$.*^\* ESEARCH \(TAG "c\d+"\) UID ADDTO \(1 3:5\)\r$`)
	}})
	// RFC 5465 section 5.2: MessageNew with fetch attributes for the selected mailbox; a new
	// message comes with EXISTS and then a FETCH of what was asked, without setting \Seen.
	cs = append(cs, confCase{name: "notify-messagenew-fetch", two: func(a, b *rawConn) error {
		a.cmd("SELECT INBOX")
		out, err := a.cmd("NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From To)]) MessageExpunge))")
		if err != nil {
			return err
		}
		if err := expect(out, `^c\d+ OK`); err != nil {
			return err
		}
		if err := b.appendMsg("INBOX", "From: ann@example.org\nTo: bob@example.org\nSubject: s\n\nbody\n"); err != nil {
			return err
		}
		out, err = a.cmd("NOOP")
		if err != nil {
			return err
		}
		if err := expect(out, `(?s)^\* 1 EXISTS\r$.*^\* 1 FETCH \(UID 1 BODY\[HEADER\.FIELDS \(From To\)\] \{46\}\r$\nFrom: ann@example.org\r$\nTo: bob@example.org\r$`); err != nil {
			return err
		}
		out, err = a.cmd("FETCH 1 (FLAGS)")
		if err != nil {
			return err
		}
		if strings.Contains(out, `\Seen`) {
			return fmt.Errorf("the MessageNew FETCH set \\Seen:\n%s", out)
		}
		return nil
	}})
	cs = append(cs, confCase{name: "list-bad-pattern", run: func(r *rawConn) error {
		out, err := r.cmd("LIST \"\" \"a\x01b\"")
		if err != nil {
			return err
		}
		if err := noServerBug(out); err != nil {
			return err
		}
		return expect(out, `^c\d+ (OK|NO|BAD)`)
	}})
	for _, c := range []string{"CONDSTORE", "QRESYNC", "SORT", "THREAD", "ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT", "MULTIAPPEND", "CATENATE", "NOTIFY", "COMPRESS", "QUOTA"} {
		cs = append(cs, confCase{name: "capability-" + c, run: func(r *rawConn) error {
			out, err := r.cmd("CAPABILITY")
			if err != nil {
				return err
			}
			return expect(out, `^\* CAPABILITY .*\b`+regexp.QuoteMeta(c)+`[= \r]`)
		}})
	}
	return cs
}

// TestConformanceRatchet runs every case on a fresh server of the node's engine (internal/imapserver).
func TestConformanceRatchet(t *testing.T) {
	runRatchet(t, knownBroken, func() string { return startOwnEngine(t) })
}

func startOwnEngine(t *testing.T) string {
	var users mailbox.MemoryUsers
	users.Add(testUser, testPassword)
	srv, err := imapserver.New(imapserver.Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func runRatchet(t *testing.T, known map[string]string, start func() string) {
	pass, nknown := 0, 0
	for _, c := range confCases() {
		addr := start()
		r, err := dialRaw(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.login(); err != nil {
			t.Fatal(err)
		}
		if c.two != nil {
			var b *rawConn
			if b, err = dialRaw(t, addr); err != nil {
				t.Fatal(err)
			}
			if err := b.login(); err != nil {
				t.Fatal(err)
			}
			err = c.two(r, b)
			b.c.Close()
		} else {
			err = c.run(r)
		}
		r.c.Close()
		why, listed := known[c.name]
		switch {
		case err == nil && listed:
			t.Errorf("%s passes now: take it off the known-broken list (%s)", c.name, why)
		case err == nil:
			pass++
		case listed:
			nknown++
			t.Logf("known broken, issue 15: %s: %s", c.name, why)
		default:
			t.Errorf("%s: %v", c.name, err)
		}
	}
	t.Logf("conformance ratchet: %d cases pass, %d known broken (issue 15)", pass, nknown)
}
