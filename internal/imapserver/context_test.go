package imapserver

import (
	"bufio"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// taggedSession is pipeSession with the tag chosen by the caller (tag reuse is what RFC 5267
// section 4.3 refuses).
func taggedSession(t *testing.T, srv *Server) func(tag, cmd string) string {
	client, server := net.Pipe()
	go newSession(srv, pipeConn{server}, pipeConn{server}, false).run()
	t.Cleanup(func() { client.Close() })
	br := bufio.NewReader(client)
	br.ReadString('\n')
	return func(tag, cmd string) string {
		go client.Write([]byte(tag + " " + cmd + "\r\n"))
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

func msgN(i int) string { return "Subject: m" + strconv.Itoa(i) + "\r\n\r\nbody\r\n" }

// before reports whether a occurs in out, and before b.
func before(out, a, b string) bool {
	i, j := strings.Index(out, a), strings.Index(out, b)
	return i >= 0 && j > i
}

// TestContextSearch: RFC 5267 UPDATE contexts: ADDTO after EXISTS, REMOVEFROM before EXPUNGE,
// flag changes by either session, CANCELUPDATE, tag reuse, NOUPDATE.
func TestContextSearch(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a, b := taggedSession(t, srv), pipeSession(t, srv)
	a("a0", "LOGIN u p")
	b("LOGIN u p")
	for i := 1; i <= 3; i++ {
		b(appendCmd("INBOX", msgN(i)))
	}
	b("SELECT INBOX")
	b("STORE 1 +FLAGS (\\Flagged)")
	if out := a("a1", "SELECT INBOX"); !strings.Contains(out, "* 3 EXISTS") {
		t.Fatal(out)
	}
	if out := a("a1", "CAPABILITY"); !strings.Contains(out, " CONTEXT=SEARCH") {
		t.Fatal(out)
	}
	steps := []struct {
		s         func(string) string
		cmd, want string
		order     [2]string // order[0] before order[1] when set
	}{
		{func(c string) string { return a("u1", c) }, "UID SEARCH RETURN (UPDATE) FLAGGED", "* ESEARCH (TAG \"u1\") UID ALL 1\r\n", [2]string{}},
		{func(c string) string { return a("s1", c) }, "SEARCH RETURN (UPDATE COUNT) UNFLAGGED", "* ESEARCH (TAG \"s1\") COUNT 2\r\n", [2]string{}},
		// Another session adds a flagged message: ADDTO after the EXISTS.
		{b, appendCmd("INBOX", "Subject: new\r\n\r\nx\r\n"), "OK", [2]string{}},
		{b, "STORE 4 +FLAGS (\\Flagged)", "OK", [2]string{}},
		{func(c string) string { return a("a2", c) }, "NOOP", "* ESEARCH (TAG \"u1\") UID ADDTO (0 4)\r\n", [2]string{"* 4 EXISTS", "ADDTO (0 4)"}},
		// This session's own STORE: the FETCH, then the update.
		{func(c string) string { return a("a3", c) }, "STORE 2 +FLAGS (\\Flagged)", "* ESEARCH (TAG \"u1\") UID ADDTO (0 2)\r\n", [2]string{"* 2 FETCH", "ADDTO (0 2)"}},
		{func(c string) string { return a("a4", c) }, "NOOP", "", [2]string{}},
		{func(c string) string { return a("a5", c) }, "STORE 1 -FLAGS (\\Flagged)", "* ESEARCH (TAG \"u1\") UID REMOVEFROM (0 1)\r\n* ESEARCH (TAG \"s1\") ADDTO (0 1)\r\n", [2]string{}},
		// An expunge elsewhere: REMOVEFROM before the EXPUNGE, in pre-expunge numbers.
		{b, "STORE 2 +FLAGS (\\Deleted)", "OK", [2]string{}},
		{b, "EXPUNGE", "OK", [2]string{}},
		{func(c string) string { return a("a6", c) }, "NOOP", "* ESEARCH (TAG \"u1\") UID REMOVEFROM (0 2)\r\n", [2]string{"REMOVEFROM (0 2)", "* 2 EXPUNGE"}},
		{func(c string) string { return a("u1", c) }, "SEARCH RETURN (UPDATE) ALL", "u1 BAD", [2]string{}},
		{func(c string) string { return a("a7", c) }, "CANCELUPDATE \"u1\" \"s1\"", "a7 OK", [2]string{}},
		{b, "STORE 1 +FLAGS (\\Flagged)", "OK", [2]string{}},
		{func(c string) string { return a("a8", c) }, "NOOP", "* 1 FETCH", [2]string{}},
		{func(c string) string { return a("a9", c) }, "CANCELUPDATE u1", "a9 BAD", [2]string{}},
	}
	for _, st := range steps {
		out := st.s(st.cmd)
		if !strings.Contains(out, st.want) {
			t.Fatalf("%q: want %q in\n%s", st.cmd, st.want, out)
		}
		if st.order[0] != "" && !before(out, st.order[0], st.order[1]) {
			t.Fatalf("%q: want %q before %q in\n%s", st.cmd, st.order[0], st.order[1], out)
		}
		if st.cmd == "NOOP" && st.want == "* 1 FETCH" && strings.Contains(out, "ESEARCH") {
			t.Fatalf("update after CANCELUPDATE:\n%s", out)
		}
	}
	// NOUPDATE beyond the bound; the search is still answered.
	for i := 0; i < maxContexts; i++ {
		a("c"+strconv.Itoa(i), "UID SEARCH RETURN (UPDATE) ALL")
	}
	out := a("over", "UID SEARCH RETURN (UPDATE COUNT) ALL")
	if !strings.Contains(out, "* NO [NOUPDATE \"over\"]") || !strings.Contains(out, "COUNT 3") || !strings.Contains(out, "over OK") {
		t.Fatalf("over the bound:\n%s", out)
	}
	// UNSELECT ends every context: a new one may use an old tag.
	a("x", "UNSELECT")
	a("x", "SELECT INBOX")
	if out := a("c0", "UID SEARCH RETURN (UPDATE) ALL"); !strings.Contains(out, "c0 OK") {
		t.Fatalf("after UNSELECT:\n%s", out)
	}
}

// TestPartial: the PARTIAL return option (RFC 5267 section 4.4, with RFC 9394's negative
// ranges).
func TestPartial(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	c := pipeSession(t, srv)
	c("LOGIN u p")
	for i := 1; i <= 5; i++ {
		c(appendCmd("INBOX", msgN(i)))
	}
	c("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"SEARCH RETURN (PARTIAL 2:3) ALL", " PARTIAL (2:3 2:3)\r\n"},
		{"UID SEARCH RETURN (PARTIAL 4:2) ALL", " UID PARTIAL (4:2 2:4)\r\n"},
		{"SEARCH RETURN (PARTIAL -1:-2) ALL", " PARTIAL (-1:-2 4:5)\r\n"},
		{"SEARCH RETURN (PARTIAL 4:100) ALL", " PARTIAL (4:100 4:5)\r\n"},
		{"SEARCH RETURN (PARTIAL 6:9) ALL", " PARTIAL (6:9 NIL)\r\n"},
		{"SEARCH RETURN (PARTIAL 1:2 COUNT) 2:4", " COUNT 3 PARTIAL (1:2 2:3)\r\n"},
		{"SEARCH RETURN (PARTIAL 1:2 ALL) ALL", " BAD "},
	} {
		if out := c(tc.cmd); !strings.Contains(out, tc.want) {
			t.Errorf("%q: want %q in\n%s", tc.cmd, tc.want, out)
		}
	}
}
