package pop3server

import (
	"bufio"
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want command
		err  error
	}{
		{"STAT", command{Name: "STAT"}, nil},
		{"stat", command{Name: "STAT"}, nil},
		{"TOP 1 10", command{Name: "TOP", Args: []string{"1", "10"}}, nil},
		{"uidl  2 ", command{Name: "UIDL", Args: []string{"2"}}, nil},
		{"PASS a pass word ", command{Name: "PASS", Args: []string{"a pass word "}}, nil},
		{"PASS", command{Name: "PASS"}, nil},
		{"", command{}, errEmpty},
		{"ST", command{}, errBadKeyword},
		{"STATS", command{}, errBadKeyword},
		{"ST4T", command{}, errBadKeyword},
		{" STAT", command{}, errBadKeyword},
		{"USER a\x00b", command{}, errBadChar},
		{"USER " + strings.Repeat("x", maxLine), command{}, errTooLong},
	} {
		got, err := parseCommand(tc.line)
		if err != tc.err || (err == nil && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v, %v", tc.line, got, err, tc.want, tc.err)
		}
	}
	for _, tc := range []struct {
		s  string
		n  int
		ok bool
	}{{"1", 1, true}, {"0", 0, true}, {"123456789", 123456789, true}, {"1234567890", 0, false},
		{"-1", 0, false}, {"+1", 0, false}, {"", 0, false}, {"1a", 0, false}} {
		if n, ok := parseNumber(tc.s); n != tc.n || ok != tc.ok {
			t.Errorf("parseNumber(%q) = %d, %v", tc.s, n, ok)
		}
	}
}

// FuzzParseCommand: any line parses or fails cleanly, and a parsed
// command has a 3-4 letter upper-case keyword.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT", "TOP 1 2", "PASS x y", "uidl", "RETR 99999999999", "\xff\xfe", "LIST\t1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parseCommand(line)
		if err != nil {
			return
		}
		if len(cmd.Name) < 3 || len(cmd.Name) > 4 || strings.ToUpper(cmd.Name) != cmd.Name {
			t.Fatalf("bad keyword %q from %q", cmd.Name, line)
		}
		for _, a := range cmd.Args {
			parseNumber(a)
		}
	})
}

func render(t testing.TB, msg string, lines int) string {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeMessage(w, strings.NewReader(msg), lines); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	return b.String()
}

func TestWriteMessage(t *testing.T) {
	long := strings.Repeat("a", 40<<10) // longer than the reader's buffer
	for _, tc := range []struct {
		name, msg string
		lines     int
		want      string
	}{
		{"crlf", "A: b\r\n\r\nbody\r\n", -1, "A: b\r\n\r\nbody\r\n.\r\n"},
		{"stuffing", ".x\r\n..y\r\n.\r\nz.\r\n", -1, "..x\r\n...y\r\n..\r\nz.\r\n.\r\n"},
		{"bare lf", "A: b\n\nbody\n.dot\n", -1, "A: b\r\n\r\nbody\r\n..dot\r\n.\r\n"},
		{"no final newline", "A: b\r\n\r\nlast", -1, "A: b\r\n\r\nlast\r\n.\r\n"},
		{"empty", "", -1, ".\r\n"},
		{"bare cr kept", "a\rb\r\n", -1, "a\rb\r\n.\r\n"},
		{"cr at end", "a\r", -1, "a\r\r\n.\r\n"},
		{"top 0", "A: b\r\nC: d\r\n\r\n1\r\n2\r\n", 0, "A: b\r\nC: d\r\n\r\n.\r\n"},
		{"top 1", "A: b\r\n\r\n1\r\n.2\r\n", 1, "A: b\r\n\r\n1\r\n.\r\n"},
		{"top more than body", "A: b\r\n\r\n1\r\n", 5, "A: b\r\n\r\n1\r\n.\r\n"},
		{"top no body", "A: b\r\nC: d\r\n", 0, "A: b\r\nC: d\r\n.\r\n"},
		{"long line", long + "\r\n.b\r\n", -1, long + "\r\n..b\r\n.\r\n"},
		{"crlf across buffer edge", strings.Repeat("b", 32<<10-1) + "\r\nx\r\n", -1, strings.Repeat("b", 32<<10-1) + "\r\nx\r\n.\r\n"},
	} {
		if got := render(t, tc.msg, tc.lines); got != tc.want {
			g, w := got, tc.want
			if len(g) > 80 {
				g, w = g[len(g)-40:], w[len(w)-40:]
			}
			t.Errorf("%s: got %q, want %q", tc.name, g, w)
		}
	}
}

// FuzzWriteMessage: undoing the stuffing gives back the message with CRLF
// line ends, and the terminator appears only at the end.
func FuzzWriteMessage(f *testing.F) {
	f.Add("A: b\r\n\r\n.x\r\n", -1)
	f.Add("a\rb\n.\n\r\r\n", 1)
	f.Fuzz(func(t *testing.T, msg string, lines int) {
		out := render(t, msg, -1)
		if !strings.HasSuffix(out, ".\r\n") {
			t.Fatalf("no terminator: %q", out)
		}
		body := strings.TrimSuffix(out, ".\r\n")
		if body != "" && !strings.HasSuffix(body, "\r\n") {
			t.Fatalf("body does not end in CRLF: %q", out)
		}
		var un []string
		for _, l := range strings.SplitAfter(body, "\r\n") {
			if l == ".\r\n" {
				t.Fatalf("early terminator in %q", out)
			}
			un = append(un, strings.TrimPrefix(l, "."))
		}
		want := strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if got := strings.Join(un, ""); got != want {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
		render(t, msg, lines%50) // TOP must not fail either
	})
}
