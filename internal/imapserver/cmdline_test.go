package imapserver

import (
	"strings"
	"testing"
)

func TestCommandStart(t *testing.T) {
	for _, tc := range []struct {
		line, tag, name string
		ok              bool
	}{
		{"a1 NOOP\r\n", "a1", "NOOP", true},
		{"a uid fetch 1 (FLAGS)\r\n", "a", "UID FETCH", true},
		{"a ID NIL\n", "a", "ID", true},
		{"a ID{3}\r\n", "a", "ID", true},
		{"a UID\r\n", "a", "UID", false},
		{"a\r\n", "a", "", false},
		{"\r\n", "", "", false},
		{"* NOOP\r\n", "", "", false},
		{"GET / HTTP/1.1\r\n", "GET", "/", true},
	} {
		tag, name, ok := commandStart([]byte(tc.line))
		if tag != tc.tag || name != tc.name || ok != tc.ok {
			t.Errorf("%q: %q %q %v", tc.line, tag, name, ok)
		}
	}
}

func TestLiteralMarker(t *testing.T) {
	for _, tc := range []struct {
		line    string
		n       int64
		nonSync bool
		ok      bool
	}{
		{"a LOGIN {5}\r\n", 5, false, true},
		{"a LOGIN {5+}\r\n", 5, true, true},
		{"a APPEND INBOX (~{12}\n", 12, false, true},
		{"a LOGIN {5} \r\n", 5, false, true},
		{"a LOGIN {}\r\n", 0, false, false},
		{"a LOGIN {+}\r\n", 0, false, false},
		{"a LOGIN 5}\r\n", 0, false, false},
		{"a LOGIN \"{5}\"\r\n", 0, false, false},
		{"{0}\r\n", 0, false, true},
		{"a X {99999999999999999999999}\r\n", 1<<63 - 1, false, true},
	} {
		n, nonSync, ok := literalMarker([]byte(tc.line))
		if n != tc.n || nonSync != tc.nonSync || ok != tc.ok {
			t.Errorf("%q: %d %v %v", tc.line, n, nonSync, ok)
		}
	}
}

func TestParseIDArgs(t *testing.T) {
	for _, tc := range []struct {
		pieces []cmdPiece
		want   string // fields as k=v; "err" for an error
	}{
		{[]cmdPiece{{text: []byte(" NIL")}}, ""},
		{[]cmdPiece{{text: []byte(" nil")}}, ""},
		{[]cmdPiece{{text: []byte(` ("Name" "imaplib" "x" NIL)`)}}, "name=imaplib"},
		{[]cmdPiece{{text: []byte(` ("a" "q\"uote")`)}}, `a=q"uote`},
		{[]cmdPiece{{text: []byte(` ()`)}}, ""},
		{[]cmdPiece{{text: []byte(` ("k" `)}, {text: []byte("lit val"), isLit: true}, {text: []byte(`)`)}}, "k=lit val"},
		{[]cmdPiece{{text: []byte(` (`)}, {text: []byte("k"), isLit: true}, {text: []byte(` "v")`)}}, "k=v"},
		{[]cmdPiece{{text: []byte(``)}}, "err"},
		{[]cmdPiece{{text: []byte(` ("k")`)}}, "err"},
		{[]cmdPiece{{text: []byte(` ("k" "v"`)}}, "err"},
		{[]cmdPiece{{text: []byte(` ("k" "v") x`)}}, "err"},
		{[]cmdPiece{{text: []byte(` NILX`)}}, "err"},
		{[]cmdPiece{{text: []byte(` ("k" "v\x")`)}}, "err"},
		{[]cmdPiece{{text: []byte(" (" + strings.TrimSpace(strings.Repeat(`"k" "v" `, 30)) + ")")}}, "k=v"},
		{[]cmdPiece{{text: []byte(" (" + strings.TrimSpace(strings.Repeat(`"k" "v" `, 31)) + ")")}}, "err"},
	} {
		fields, err := parseIDArgs(tc.pieces)
		got := ""
		if err != nil {
			got = "err"
		}
		for k, v := range fields {
			if v != "" {
				got = k + "=" + v
			}
		}
		if got != tc.want {
			t.Errorf("%v: got %q (%v), want %q", tc.pieces, got, err, tc.want)
		}
	}
}

func TestRewriteCaps(t *testing.T) {
	for _, tc := range []struct {
		line string
		pol  capPolicy
		want string
	}{
		{"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n", capPolicy{}, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready\r\n"},
		{"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n", capPolicy{startTLS: true, loginDisabled: true}, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED ID] ready\r\n"},
		{"* CAPABILITY IMAP4rev1 IDLE\r\n", capPolicy{loginDisabled: true}, "* CAPABILITY IMAP4rev1 IDLE ID\r\n"},
		{"a1 OK [CAPABILITY IMAP4rev2 MOVE] Logged in\r\n", capPolicy{}, "a1 OK [CAPABILITY IMAP4rev2 MOVE ID] Logged in\r\n"},
		{"* 1 FETCH (FLAGS ())\r\n", capPolicy{}, "* 1 FETCH (FLAGS ())\r\n"},
		{"a NO [CAPABILITY X] no\r\n", capPolicy{}, "a NO [CAPABILITY X] no\r\n"},
		{"* OK [CAPABILITY X\r\n", capPolicy{}, "* OK [CAPABILITY X\r\n"},
	} {
		if got := string(rewriteCaps([]byte(tc.line), tc.pol)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestRespScannerLiterals: lines inside literals are not seen as response
// lines, long lines pass through, and split writes change nothing.
func TestRespScannerLiterals(t *testing.T) {
	long := "* SEARCH" + strings.Repeat(" 1", 3000) + "\r\n"
	in := "* 1 FETCH (BODY[] {24}\r\n* CAPABILITY IMAP4rev1\r\n)\r\n" + long + "* 2 FETCH (BODY[] {0}\r\n)\r\na OK done\r\n"
	var lines []string
	onLine := func(l []byte) []byte {
		lines = append(lines, string(l[:min(len(l), 12)]))
		return l
	}
	for _, step := range []int{1, 7, len(in)} {
		lines = nil
		var s respScanner
		var out []byte
		for i := 0; i < len(in); i += step {
			out = s.feed(out, []byte(in[i:min(i+step, len(in))]), onLine)
		}
		if string(out) != in {
			t.Errorf("step %d: output differs", step)
		}
		want := []string{"* 1 FETCH (B", ")\r\n", "* SEARCH 1 1", "* 2 FETCH (B", ")\r\n", "a OK done\r\n"}
		if strings.Join(lines, "|") != strings.Join(want, "|") {
			t.Errorf("step %d: lines %q", step, lines)
		}
	}
}
