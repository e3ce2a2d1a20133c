package imapserver

import (
	"bufio"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"epost/internal/imapwire"
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

// subjectMsg is a message whose SORT (SUBJECT) key is its subject.
func subjectMsg(subject string) string { return "Subject: " + subject + "\r\n\r\nbody\r\n" }

// TestContextSort: RFC 5267 CONTEXT=SORT: ESORT answers in the requested order (the example of
// section 3.3), PARTIAL over the sorted result, UPDATE contexts whose ADDTO and REMOVEFROM carry
// context positions (section 4.3.3's C01 example: ADDTO (1 2731:2733)), REMOVEFROM before the
// EXPUNGE, message-number contexts, tag reuse across SEARCH and SORT (the B01 example of section
// 4.3) and NOUPDATE (the B02 example of section 4.3.1).
func TestContextSort(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	a, b := taggedSession(t, srv), pipeSession(t, srv)
	a("a0", "LOGIN u p")
	b("LOGIN u p")
	// UIDs 1-3: x, y, m. Mailbox order is not subject order.
	for _, subj := range []string{"x", "y", "m"} {
		b(appendCmd("INBOX", subjectMsg(subj)))
	}
	b("SELECT INBOX")
	if out := a("a1", "CAPABILITY"); !strings.Contains(out, " CONTEXT=SORT") || !strings.Contains(out, " ESORT") {
		t.Fatal(out)
	}
	a("a2", "SELECT INBOX")
	steps := []struct {
		s         func(string) string
		cmd, want string
		order     [2]string // order[0] before order[1] when set
	}{
		// Section 3.3: RETURN () is ALL, in the requested order; a descending run stays a list.
		{func(c string) string { return a("E01", c) }, "UID SORT RETURN () (REVERSE SUBJECT) UTF-8 UNDELETED UNKEYWORD $Junk", "* ESEARCH (TAG \"E01\") UID ALL 2,1,3\r\n", [2]string{}},
		{func(c string) string { return a("p1", c) }, "UID SORT RETURN (PARTIAL 2:3) (REVERSE SUBJECT) UTF-8 ALL", "* ESEARCH (TAG \"p1\") UID PARTIAL (2:3 1,3)\r\n", [2]string{}},
		{func(c string) string { return a("p2", c) }, "SORT RETURN (PARTIAL -1:-1 COUNT) (SUBJECT) UTF-8 ALL", "* ESEARCH (TAG \"p2\") COUNT 3 PARTIAL (-1:-1 2)\r\n", [2]string{}},
		{func(c string) string { return a("p3", c) }, "SORT RETURN (PARTIAL 1:2 ALL) (SUBJECT) UTF-8 ALL", "p3 BAD", [2]string{}},
		// The live contexts: by subject (UIDs), by reverse subject (message numbers).
		{func(c string) string { return a("C01", c) }, "UID SORT RETURN (UPDATE) (SUBJECT) UTF-8 UNDELETED", "* ESEARCH (TAG \"C01\") UID ALL 3,1:2\r\n", [2]string{}},
		{func(c string) string { return a("D01", c) }, "SORT RETURN (UPDATE COUNT) (REVERSE SUBJECT) UTF-8 UNDELETED", "* ESEARCH (TAG \"D01\") COUNT 3\r\n", [2]string{}},
		// Section 4.3's B01: a tag in use by an updating SEARCH cannot start a SORT context.
		{func(c string) string { return a("B01", c) }, "UID SEARCH RETURN (UPDATE COUNT) DELETED KEYWORD $Junk", "* ESEARCH (TAG \"B01\") UID COUNT 0\r\n", [2]string{}},
		{func(c string) string { return a("B01", c) }, "SORT RETURN (UPDATE) (DATE) UTF-8 FLAGGED", "B01 BAD", [2]string{}},
		{func(c string) string { return a("C01", c) }, "UID SORT RETURN (UPDATE) (DATE) UTF-8 ALL", "C01 BAD", [2]string{}},
		// Section 4.3.3's C01 example: three new results ahead of all others, in one pair.
		{b, appendCmd("INBOX", subjectMsg("c")), "OK", [2]string{}},
		{b, appendCmd("INBOX", subjectMsg("d")), "OK", [2]string{}},
		{b, appendCmd("INBOX", subjectMsg("e")), "OK", [2]string{}},
		// C01 becomes c d e m x y (4:6,3,1:2); D01 y x m e d c (2,1,3,6,5,4).
		{func(c string) string { return a("a3", c) }, "NOOP",
			"* ESEARCH (TAG \"C01\") UID ADDTO (1 4:6)\r\n* ESEARCH (TAG \"D01\") ADDTO (4 6,5,4)\r\n", [2]string{"* 6 EXISTS", "ADDTO"}},
		// Results joining in two places: "n" after m, "a" first.
		{b, appendCmd("INBOX", subjectMsg("n")), "OK", [2]string{}},
		{b, appendCmd("INBOX", subjectMsg("a")), "OK", [2]string{}},
		// C01: a c d e m n x y; D01: y x n m e d c a.
		{func(c string) string { return a("a4", c) }, "NOOP",
			"* ESEARCH (TAG \"C01\") UID ADDTO (1 8 6 7)\r\n* ESEARCH (TAG \"D01\") ADDTO (3 7 8 8)\r\n", [2]string{}},
		// Leaving by a flag change, two adjacent results (d, e) and one apart (x): from the front,
		// each position counted after the pairs before it. C01: a c m n y; D01: y n m c a.
		{b, "UID STORE 5,6,1 +FLAGS (\\Deleted)", "OK", [2]string{}},
		{func(c string) string { return a("a5", c) }, "NOOP",
			"* ESEARCH (TAG \"C01\") UID REMOVEFROM (3 5:6 5 1)\r\n* ESEARCH (TAG \"D01\") REMOVEFROM (2 1 4 6,5)\r\n", [2]string{}},
		// Expunged elsewhere: the \Deleted ones left the results already; n (UID 7, message 7)
		// leaves with its expunge, the REMOVEFROM before the EXPUNGE in pre-expunge numbers.
		{b, "EXPUNGE", "OK", [2]string{}},
		{b, "UID MOVE 7 Trash", "OK", [2]string{}},
		{func(c string) string { return a("a6", c) }, "NOOP",
			"* ESEARCH (TAG \"C01\") UID REMOVEFROM (4 7)\r\n* ESEARCH (TAG \"D01\") REMOVEFROM (2 7)\r\n", [2]string{"REMOVEFROM (2 7)", "* 7 EXPUNGE"}},
		// No update for a change that leaves the result as it was.
		{b, "UID STORE 8 +FLAGS (\\Flagged)", "OK", [2]string{}},
		{func(c string) string { return a("a7", c) }, "NOOP", "a7 OK", [2]string{}},
		{func(c string) string { return a("a8", c) }, "CANCELUPDATE \"C01\" \"D01\"", "a8 OK", [2]string{}},
		{b, appendCmd("INBOX", subjectMsg("b")), "OK", [2]string{}},
		{func(c string) string { return a("a9", c) }, "NOOP", "EXISTS", [2]string{}},
	}
	for _, st := range steps {
		out := st.s(st.cmd)
		if !strings.Contains(out, st.want) {
			t.Fatalf("%q: want %q in\n%s", st.cmd, st.want, out)
		}
		if st.order[0] != "" && !before(out, st.order[0], st.order[1]) {
			t.Fatalf("%q: want %q before %q in\n%s", st.cmd, st.order[0], st.order[1], out)
		}
		if (st.want == "a7 OK" || st.want == "EXISTS") && strings.Contains(out, "ESEARCH") {
			t.Fatalf("%q: an update where none is due:\n%s", st.cmd, out)
		}
	}
	// Section 4.3.1's B02: over the bound the command is answered, without updates.
	for i := 0; i < maxContexts; i++ {
		a("c"+strconv.Itoa(i), "UID SEARCH RETURN (UPDATE) ALL")
	}
	out := a("B02", "UID SORT RETURN (UPDATE COUNT) (DATE) UTF-8 KEYWORD $Junk")
	if !strings.Contains(out, "* ESEARCH (TAG \"B02\") UID COUNT 0\r\n") || !strings.Contains(out, "* NO [NOUPDATE \"B02\"]") || !strings.Contains(out, "B02 OK") {
		t.Fatalf("over the bound:\n%s", out)
	}
}

// TestSortedContextRuns: the REMOVEFROM and ADDTO pairs of a sorted context, applied by a
// client as RFC 5267 sections 4.3.3 and 4.3.4 say (each pair in turn, at its position), turn the
// old result into the new one, for random results and changes.
func TestSortedContextRuns(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("EPOST_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	// Sort by size descending; ties by UID.
	order := sortOrder([]imapwire.SortCriterion{{Key: "SIZE", Reverse: true}})
	for round := 0; round < 500; round++ {
		var all []*sortMsg
		for u := 1; u <= 1+rng.IntN(30); u++ {
			all = append(all, &sortMsg{uid: mailbox.UID(u), size: int64(rng.IntN(5))})
		}
		var before, joined []*sortMsg
		gone := map[mailbox.UID]bool{}
		for _, m := range all {
			switch rng.IntN(4) {
			case 0:
				joined = append(joined, m)
			case 1:
				before = append(before, m)
				gone[m.uid] = true
			default:
				before = append(before, m)
			}
		}
		slices.SortFunc(before, order)
		kept, removals := removeFromOrder(before, gone)
		after, additions := insertIntoOrder(kept, joined, order)

		client := slices.Clone(before)
		for _, r := range removals {
			at := r.pos - 1
			if at+len(r.msgs) > len(client) || !slices.Equal(client[at:at+len(r.msgs)], r.msgs) {
				t.Fatalf("seed %d: REMOVEFROM (%d ...) does not name the results at that position", seed, r.pos)
			}
			client = slices.Delete(client, at, at+len(r.msgs))
		}
		for _, r := range additions {
			if r.pos-1 > len(client) {
				t.Fatalf("seed %d: ADDTO position %d beyond %d results", seed, r.pos, len(client))
			}
			client = slices.Insert(client, r.pos-1, r.msgs...)
		}
		want := slices.Clone(slices.DeleteFunc(slices.Clone(before), func(m *sortMsg) bool { return gone[m.uid] }))
		want = append(want, joined...)
		slices.SortFunc(want, order)
		if !slices.Equal(client, want) || !slices.Equal(after, want) {
			t.Fatalf("seed %d round %d: client has %v, server %v, want %v", seed, round, uids(client), uids(after), uids(want))
		}
	}
}

func uids(ms []*sortMsg) []mailbox.UID {
	out := make([]mailbox.UID, len(ms))
	for i, m := range ms {
		out[i] = m.uid
	}
	return out
}
