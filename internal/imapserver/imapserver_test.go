package imapserver

import (
	"bufio"
	"compress/flate"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		name, pattern string
		want          bool
	}{
		{"INBOX", "*", true}, {"a/b", "%", false}, {"a/b", "a/%", true}, {"a/b/c", "a/%", false},
		{"a/b/c", "a/*", true}, {"abc", "a%c", true}, {"a/c", "a%c", false}, {"", "", true},
		{"Sent", "S*t", true}, {"Sent", "s*", false}, {"a", "a%%", true}, {"ab", "*b*", true},
	} {
		if got := match(c.name, c.pattern); got != c.want {
			t.Errorf("match(%q, %q) = %v", c.name, c.pattern, got)
		}
	}
}

// FuzzSession: any bytes from a client end in a closed session, never a panic or a hang, and
// the server keeps serving others.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"a LOGIN u p\r\nb LIST \"\" *\r\nc LOGOUT\r\n",
		"a LOGIN {1+}\r\nu {1}\r\np\r\nb LSUB \"\" %\r\n",
		"a AUTHENTICATE PLAIN\r\nAHUAcA==\r\nb CREATE x/y\r\nc LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (STATUS (MESSAGES))\r\n",
		"\"unterminated\r\n* * *\r\n\x00\x01\r\n",
		"a ENABLE UTF8=ACCEPT IMAP4rev2\r\nb STATUS INBOX (MESSAGES UIDNEXT)\r\n",
		"a LOGIN u p\r\nb APPEND INBOX {41+}\r\nSubject: Re: [x] (fwd)\r\nReferences: <a> <a>\r\n\r\nc SELECT INBOX\r\nd THREAD REFERENCES UTF-8 ALL\r\ne SORT RETURN (ALL) (REVERSE SUBJECT) UTF-8 ALL\r\n",
		"a LOGIN u p\r\nb APPEND INBOX {5+}\r\nhello\r\nc SELECT INBOX\r\nd FETCH 1:* (FLAGS BODY[] BINARY.SIZE[])\r\ne STORE 1 +FLAGS (\\Deleted x)\r\nf EXPUNGE\r\n",
		"a LOGIN u p\r\nb APPEND INBOX {60+}\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\nc SELECT INBOX\r\nd FETCH 1 (BODY[1.MIME] BINARY[1]<0.1> BODY[2.3.HEADER] BODYSTRUCTURE)\r\ne SEARCH TEXT hi\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var users mailbox.MemoryUsers
		users.Add("u", "p")
		srv, err := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler), CommandTimeout: time.Second, IdleTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(in)
		client.Write([]byte("\r\nz LOGOUT\r\n"))
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("session still running 5 s after input %q", in)
		}
		client.Close()
	})
}

// pipeConn gives a pipe a loopback address (plaintext login allowed, as on the node).
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// pipeSession runs a session on a pipe and returns a function that sends one command and
// returns all responses up to its tagged one.
func pipeSession(t *testing.T, srv *Server) func(string) string {
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	t.Cleanup(func() { client.Close() })
	br := bufio.NewReader(client)
	br.ReadString('\n')
	n := 0
	return func(s string) string {
		n++
		tag := "t" + strings.Repeat("x", n)
		go client.Write([]byte(tag + " " + s + "\r\n"))
		var out strings.Builder
		for {
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			l, err := br.ReadString('\n')
			out.WriteString(l)
			if err != nil || strings.HasPrefix(l, tag+" ") {
				return out.String()
			}
		}
	}
}

// TestSelectedState: two sessions of one user on one mailbox; what each is told.
func TestSelectedState(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a, b := pipeSession(t, srv), pipeSession(t, srv)
	a("LOGIN u p")
	b("LOGIN u p")
	msg := "Subject: one\r\n\r\nbody one\r\n"
	for _, c := range []struct {
		s         func(string) string
		cmd, want string
	}{
		{a, "APPEND INBOX {" + strconv.Itoa(len(msg)) + "+}\r\n" + msg, "OK [APPENDUID "},
		{a, "SELECT INBOX", "* 1 EXISTS"},
		{b, "APPEND Later {3+}\r\nabc", "NO [TRYCREATE]"},
		{b, "CREATE Multi", "OK"},
		{b, "APPEND Multi {3+}\r\nabc (\\Seen) {3+}\r\ndef", "OK [APPENDUID "},
		{b, "STATUS Multi (MESSAGES)", "(MESSAGES 2)"},
		{a, "NOOP", "OK NOOP"},
		{b, "EXAMINE INBOX", "* 0 RECENT"}, // a claimed it: recent in one session only
		{a, "FETCH 1 (FLAGS BODY.PEEK[HEADER])", "* 1 FETCH (FLAGS (\\Recent) BODY[HEADER] {16}"},
		{a, "FETCH 1 (BODY[TEXT]<0.4>)", "BODY[TEXT]<0> {4}\r\nbody"},
		{a, "FETCH 1 (FLAGS)", "\\Seen"}, // the non-peek fetch set it
		{a, "STORE 1 +FLAGS ($Work)", "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work)"},
		{b, "NOOP", "* 1 FETCH (UID 1 FLAGS ($Work \\Seen))"},
		{a, "FETCH 2 (FLAGS)", "BAD Invalid message sequence number"},
		{a, "SEARCH KEYWORD $Work SUBJECT one", "* SEARCH 1\r\n"},
		{a, "UID SEARCH OR BODY nothing-like-this NOT SEEN", "* SEARCH\r\n"},
		{a, "SEARCH RETURN (MIN COUNT SAVE) BODY \"BODY ONE\"", ") MIN 1 COUNT 1\r\n"},
		{a, "FETCH $ (UID)", "* 1 FETCH (UID 1)"},
		{a, "SEARCH CHARSET KOI8-R ALL", "NO [BADCHARSET (UTF-8 US-ASCII)]"},
		{a, "CREATE Later", "OK"},
		{a, "UID COPY 1 Later", "OK [COPYUID "},
		{a, "UID MOVE 1 Nowhere", "NO [TRYCREATE]"},
		{a, "STORE 1 +FLAGS.SILENT (\\Deleted)", "OK STORE"},
		{a, "EXPUNGE", "* 1 EXPUNGE"},
		{b, "FETCH 1 (FLAGS)", "OK FETCH"}, // expunged meanwhile: omitted, no EXPUNGE during FETCH
		{b, "NOOP", "* 1 EXPUNGE"},
		{b, "STORE 1 +FLAGS (\\Seen)", "NO [CANNOT]"},                 // EXAMINE: read-only
		{b, "FETCH 1 (FLAGS)", "BAD Invalid message sequence number"}, // nothing left
		{a, "SELECT Later", "* 1 EXISTS"},
		{a, "UNSELECT", "OK UNSELECT"},
		{a, "FETCH 1 (FLAGS)", "BAD No mailbox selected"},
	} {
		if out := c.s(c.cmd); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in\n%s", c.cmd, c.want, out)
		}
	}
}

// TestCondstore: RFC 7162 CONDSTORE as a resynchronizing client uses it.
func TestCondstore(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a, b := pipeSession(t, srv), pipeSession(t, srv)
	a("LOGIN u p")
	b("LOGIN u p")
	for i := range 3 {
		m := "Subject: m" + strconv.Itoa(i) + "\r\n\r\nx\r\n"
		a("APPEND INBOX {" + strconv.Itoa(len(m)) + "+}\r\n" + m)
	}
	sel := a("SELECT INBOX (CONDSTORE)")
	if !strings.Contains(sel, "* OK [HIGHESTMODSEQ ") {
		t.Fatalf("SELECT (CONDSTORE):\n%s", sel)
	}
	st := b("STATUS INBOX (HIGHESTMODSEQ)")
	hi := st[strings.Index(st, "HIGHESTMODSEQ ")+len("HIGHESTMODSEQ ") : strings.Index(st, ")")]
	b("SELECT INBOX")
	b("STORE 2 +FLAGS.SILENT (\\Flagged)")
	for _, c := range []struct{ cmd, want string }{
		{"NOOP", "* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ ("},
		{"FETCH 1:* (FLAGS) (CHANGEDSINCE " + hi + ")", "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("},
		{"STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)", "OK [MODIFIED 1]"},
		{"SEARCH MODSEQ " + hi, "* SEARCH 2 3 (MODSEQ 4)"}, // at least hi: the last APPEND's and the STORE's
		{"STORE 3 +FLAGS (\\Answered)", "* 3 FETCH (FLAGS (\\Answered \\Recent) MODSEQ ("},
	} {
		if out := a(c.cmd); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in\n%s", c.cmd, c.want, out)
		}
	}
	if out := a("FETCH 1:* (FLAGS) (CHANGEDSINCE " + hi + ")"); strings.Contains(out, "* 1 FETCH") {
		t.Errorf("CHANGEDSINCE showed an unchanged message:\n%s", out)
	}
}

// TestQresync: a client that was away resynchronizes with one SELECT (RFC 7162 3.2.5), and
// hears of expunges as VANISHED.
func TestQresync(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a, b := pipeSession(t, srv), pipeSession(t, srv)
	a("LOGIN u p")
	b("LOGIN u p")
	for i := range 4 {
		m := "Subject: q" + strconv.Itoa(i) + "\r\n\r\nx\r\n"
		b("APPEND INBOX {" + strconv.Itoa(len(m)) + "+}\r\n" + m)
	}
	if out := a("SELECT INBOX (QRESYNC (1 1))"); !strings.Contains(out, "BAD") {
		t.Fatalf("QRESYNC without ENABLE:\n%s", out)
	}
	a("ENABLE QRESYNC")
	sel := a("SELECT INBOX")
	field := func(out, code string) string {
		i := strings.Index(out, "["+code+" ")
		rest := out[i+len(code)+2:]
		return rest[:strings.Index(rest, "]")]
	}
	validity, hi := field(sel, "UIDVALIDITY"), field(sel, "HIGHESTMODSEQ")
	a("UNSELECT")
	b("SELECT INBOX")
	b("STORE 2 +FLAGS.SILENT (\\Deleted)")
	b("EXPUNGE")
	b("STORE 1 +FLAGS.SILENT (\\Flagged)")
	out := a("SELECT INBOX (QRESYNC (" + validity + " " + hi + " 1:4))")
	for _, want := range []string{"* VANISHED (EARLIER) 2\r\n", "* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ ("} {
		if !strings.Contains(out, want) {
			t.Errorf("SELECT (QRESYNC): want %q in\n%s", want, out)
		}
	}
	b("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
	b("EXPUNGE")
	if out := a("NOOP"); !strings.Contains(out, "* VANISHED 3\r\n") || strings.Contains(out, "EXPUNGE") {
		t.Errorf("an expunge under QRESYNC:\n%s", out)
	}
	if out := a("UID FETCH 1:* (FLAGS) (CHANGEDSINCE " + hi + " VANISHED)"); !strings.Contains(out, "* VANISHED (EARLIER) 2:3\r\n") {
		t.Errorf("UID FETCH (CHANGEDSINCE VANISHED):\n%s", out)
	}
	if out := a("SELECT Sent"); !strings.Contains(out, "* OK [CLOSED]") {
		t.Errorf("no CLOSED when another mailbox is selected:\n%s", out)
	}
}

// TestIdle: a session in IDLE hears of a message another session appends, at once.
func TestIdle(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	b := pipeSession(t, srv)
	b("LOGIN u p")
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	defer client.Close()
	br := bufio.NewReader(client)
	read := func() string {
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, _ := br.ReadString('\n')
		return l
	}
	read()
	send := func(s string) { go client.Write([]byte(s)) }
	send("a LOGIN u p\r\n")
	for !strings.HasPrefix(read(), "a OK") {
	}
	send("b SELECT INBOX\r\n")
	for !strings.HasPrefix(read(), "b OK") {
	}
	send("c IDLE\r\n")
	if l := read(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	b("APPEND INBOX {3+}\r\nhi!")
	if l := read(); l != "* 1 EXISTS\r\n" {
		t.Fatalf("in IDLE after another session's APPEND: %q", l)
	}
	send("DONE\r\n")
	for l := read(); !strings.HasPrefix(l, "c OK"); l = read() {
		if l == "" {
			t.Fatal("no end of IDLE")
		}
	}
}

// TestListFamily: LIST and LSUB answers a state-tracking client checks.
func TestListFamily(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	defer client.Close()
	br := bufio.NewReader(client)
	br.ReadString('\n')
	n := 0
	cmd := func(s string) string {
		n++
		tag := "t" + strings.Repeat("x", n)
		go client.Write([]byte(tag + " " + s + "\r\n"))
		var out strings.Builder
		for {
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			l, err := br.ReadString('\n')
			out.WriteString(l)
			if err != nil || strings.HasPrefix(l, tag+" ") {
				return out.String()
			}
		}
	}
	cmd("LOGIN u p")
	cmd("CREATE work/2026")
	cmd("SUBSCRIBE work/2026")
	cmd("UNSUBSCRIBE work")
	for _, c := range []struct{ cmd, want string }{
		{`LIST "" ""`, `* LIST (\Noselect) "/" ""`},
		{`LIST "" "%"`, `* LIST (\Noselect \HasChildren) "/" work`}, // a parent only, not created
		{`LIST "" "work/%"`, `* LIST (\HasNoChildren) "/" work/2026`},
		{`LSUB "" "%"`, `* LSUB (\Noselect \HasChildren) "/" work`},
		{`LSUB "" "*"`, `* LSUB () "/" work/2026`},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"`, `* LIST (\NonExistent \HasChildren) "/" work ("CHILDINFO" ("SUBSCRIBED"))`},
		{`LIST "" "%" RETURN (SPECIAL-USE)`, `\Sent) "/" Sent`},
		{`STATUS INBOX (MESSAGES UIDNEXT)`, `* STATUS INBOX (MESSAGES 0 UIDNEXT 1)`},
		{`CREATE gone`, `OK`},
		{`SUBSCRIBE gone`, `OK`},
		{`DELETE gone`, `OK`},
		{`LIST (SUBSCRIBED) "" "gone"`, `* LIST (\NonExistent \HasNoChildren \Subscribed) "/" gone`},
		{`LSUB "" "gone"`, `* LSUB () "/" gone`},
		{`DELETE INBOX`, `NO [CANNOT]`},
		{`CREATE inbox`, `NO [ALREADYEXISTS]`},
		{`CREATE work/2026`, `NO [ALREADYEXISTS]`},
		{`AUTHENTICATE PLAIN`, `BAD Already logged in`},
	} {
		if out := cmd(c.cmd); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in\n%s", c.cmd, c.want, out)
		}
	}
	if out := cmd(`LIST "" "*"`); strings.Contains(out, `"/" gone`) {
		t.Errorf("plain LIST names a deleted mailbox:\n%s", out)
	}
}

func TestStripComments(t *testing.T) {
	for in, want := range map[string]string{
		"bob(home)@example.net (Bob)":          "bob@example.net",
		"Bob (work) <bob @ example . net>":     "Bob <bob@example.net>",
		`"a (not a comment)" <a@x.org>`:        `"a (not a comment)" <a@x.org>`,
		"x@(nested (deep) comment)example.org": "x@example.org",
		`c@d.org (with \) escaped paren)`:      "c@d.org",
	} {
		if got := stripComments(in); got != want {
			t.Errorf("stripComments(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSections: body sections of a multipart message with a message/rfc822 part, exactly as
// stored, and BINARY with the transfer encoding undone.
func TestSections(t *testing.T) {
	msg := strings.ReplaceAll(`Subject: outer
From: a@example.org
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

preamble
--b1
Content-Type: text/plain

first part
--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAEC/w==
--b1
Content-Type: message/rfc822

Subject: inner
Content-Type: multipart/alternative; boundary=b2

--b2
Content-Type: text/plain

inner text
--b2
Content-Type: text/html

<p>inner</p>
--b2--
--b1--
epilogue
`, "\n", "\r\n")
	for _, c := range []struct {
		sec  imapwire.Section
		want string
	}{
		{imapwire.Section{Part: []uint32{1}}, "first part"},
		{imapwire.Section{Part: []uint32{1}, Specifier: "MIME"}, "Content-Type: text/plain\r\n\r\n"},
		{imapwire.Section{Part: []uint32{2}}, "AAEC/w=="},
		{imapwire.Section{Part: []uint32{3}, Specifier: "HEADER"}, "Subject: inner\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"},
		{imapwire.Section{Part: []uint32{3, 1}}, "inner text"},
		{imapwire.Section{Part: []uint32{3, 2}}, "<p>inner</p>"},
		{imapwire.Section{Specifier: "HEADER.FIELDS", Fields: []string{"subject"}}, "Subject: outer\r\n\r\n"},
		{imapwire.Section{Specifier: "HEADER.FIELDS.NOT", Fields: []string{"Subject", "MIME-Version", "Content-Type"}}, "From: a@example.org\r\n\r\n"},
		{imapwire.Section{Part: []uint32{4}}, ""},
	} {
		got, err := section([]byte(msg), &c.sec)
		if err != nil && !errors.Is(err, errNoSection) {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("%+v: %q, want %q", c.sec, got, c.want)
		}
	}
	b, err := binarySection([]byte(msg), &imapwire.Section{Part: []uint32{2}})
	if err != nil || string(b) != "\x00\x01\x02\xff" {
		t.Errorf("BINARY[2] = %q %v", b, err)
	}
	single := "Subject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
	if b, err := binarySection([]byte(single), &imapwire.Section{Part: []uint32{1}}); err != nil || string(b) != "café\r\n" {
		t.Errorf("BINARY[1] of a single part = %q %v", b, err)
	}
}

func TestBaseSubject(t *testing.T) {
	for in, want := range map[string]string{
		"Re: hello":                       "hello",
		"RE: Fwd: [list] Re: hello (fwd)": "hello",
		"[fwd: Re: hello]":                "hello",
		"Fw[x]: a   b\t c":                "a b c",
		"[only a blob]":                   "[only a blob]",
		"=?utf-8?q?Re=3A_caf=C3=A9?=":     "café",
		"Re:":                             "",
		"Rebus: answer":                   "Rebus: answer",
	} {
		if got, _ := baseSubject(in); got != want {
			t.Errorf("baseSubject(%q) = %q, want %q", in, got, want)
		}
	}
	if _, reply := baseSubject("Re: x"); !reply {
		t.Error("Re: x is not seen as a reply")
	}
}

// TestSortThread: SORT by several keys and THREAD=REFERENCES/ORDEREDSUBJECT on a small
// mailbox whose answer is worked out by hand.
func TestSortThread(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a := pipeSession(t, srv)
	a("LOGIN u p")
	msgs := []string{
		"Message-ID: <1@x>\r\nFrom: Zed <z@x>\r\nSubject: Plans\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n",
		"Message-ID: <2@x>\r\nFrom: amy@x\r\nSubject: Re: Plans\r\nIn-Reply-To: <1@x>\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000\r\n\r\nx\r\n",
		"Message-ID: <3@x>\r\nFrom: Bob <b@x>\r\nSubject: Lunch\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n\r\nx\r\n",
		"Message-ID: <4@x>\r\nFrom: cat@x\r\nSubject: Re: Plans\r\nReferences: <1@x> <2@x>\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\nx\r\n",
		"Message-ID: <5@x>\r\nFrom: dan@x\r\nSubject: Re: Plans\r\nIn-Reply-To: <1@x>\r\nDate: Mon, 1 Jan 2024 13:00:00 +0000\r\n\r\nx\r\n",
	}
	for _, m := range msgs {
		a("APPEND INBOX {" + strconv.Itoa(len(m)) + "+}\r\n" + m)
	}
	a("SELECT INBOX")
	for _, c := range []struct{ cmd, want string }{
		{"SORT (DATE) UTF-8 ALL", "* SORT 3 1 2 4 5\r\n"},
		{"SORT (REVERSE DATE) UTF-8 ALL", "* SORT 5 4 2 1 3\r\n"},
		{"SORT (SUBJECT DATE) UTF-8 ALL", "* SORT 3 1 2 4 5\r\n"},
		{"SORT (FROM) UTF-8 ALL", "* SORT 2 3 4 5 1\r\n"},
		{"SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 2 3 4 5 1\r\n"}, // AMY@X, BOB, CAT@X, DAN@X, ZED
		{"SORT (SIZE) UTF-8 SUBJECT lunch", "* SORT 3\r\n"},
		{"SORT RETURN (MIN COUNT) (DATE) UTF-8 ALL", "MIN 3 COUNT 5"},
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3)(1 (2 4)(5))\r\n"},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3)(1 (2)(4)(5))\r\n"},
		{"UID THREAD REFERENCES UTF-8 FROM amy", "* THREAD (2)\r\n"},
		{"THREAD NOSUCH UTF-8 ALL", "BAD"},
	} {
		if out := a(c.cmd); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in\n%s", c.cmd, c.want, out)
		}
	}
}

// TestCompress: after COMPRESS DEFLATE both directions are raw DEFLATE (RFC 4978).
func TestCompress(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	defer client.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(client)
	br.ReadString('\n')
	go client.Write([]byte("a LOGIN u p\r\nb COMPRESS DEFLATE\r\n"))
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "b ") {
			if !strings.HasPrefix(l, "b OK") {
				t.Fatalf("COMPRESS: %q", l)
			}
			break
		}
	}
	fw, _ := flate.NewWriter(client, flate.BestSpeed)
	go func() {
		fw.Write([]byte("c LIST \"\" \"*\"\r\nd COMPRESS DEFLATE\r\n"))
		fw.Flush()
	}()
	zr := bufio.NewReader(flate.NewReader(br))
	var out strings.Builder
	for {
		l, err := zr.ReadString('\n')
		if err != nil {
			t.Fatalf("%v after %q", err, out.String())
		}
		out.WriteString(l)
		if strings.HasPrefix(l, "d ") {
			break
		}
	}
	if !strings.Contains(out.String(), "* LIST (\\HasNoChildren) \"/\" INBOX") || !strings.Contains(out.String(), "d NO [COMPRESSIONACTIVE]") {
		t.Errorf("over DEFLATE:\n%s", out.String())
	}
}

// TestCatenate: APPEND with CATENATE from TEXT and from a URL of a stored message (RFC 4469).
func TestCatenate(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a := pipeSession(t, srv)
	a("LOGIN u p")
	m := "Subject: orig\r\n\r\noriginal body\r\n"
	a("APPEND INBOX {" + strconv.Itoa(len(m)) + "+}\r\n" + m)
	st := a("STATUS INBOX (UIDVALIDITY)")
	v := st[strings.Index(st, "UIDVALIDITY ")+len("UIDVALIDITY ") : strings.Index(st, ")")]
	hdr := "Subject: fwd\r\n\r\n"
	for _, c := range []struct{ cmd, want string }{
		{"APPEND INBOX CATENATE (TEXT {" + strconv.Itoa(len(hdr)) + "+}\r\n" + hdr + " URL \"/INBOX;UIDVALIDITY=" + v + "/;UID=1/;SECTION=TEXT\")", "OK [APPENDUID " + v + " 2]"},
		{"APPEND INBOX CATENATE (URL \"/INBOX/;UID=9\")", "NO [BADURL /INBOX/;UID=9]"},
		{"APPEND INBOX CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=1\")", "NO [BADURL"},
		{"APPEND INBOX CATENATE (URL \"imap://other@host/INBOX/;UID=1\")", "NO [BADURL"},
		{"SELECT INBOX", "* 2 EXISTS"},
		{"FETCH 2 (BODY.PEEK[])", "{31}\r\nSubject: fwd\r\n\r\noriginal body\r\n"},
	} {
		if out := a(c.cmd); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in\n%s", c.cmd, c.want, out)
		}
	}
}
