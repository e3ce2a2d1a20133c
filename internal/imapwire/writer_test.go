package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

func written(utf8 bool, f func(w *Writer)) (string, error) {
	var buf bytes.Buffer
	w := NewWriter(bufio.NewWriter(&buf))
	w.UTF8 = utf8
	f(w)
	err := w.Flush()
	return buf.String(), err
}

func TestWriter(t *testing.T) {
	cases := []struct {
		utf8 bool
		f    func(w *Writer)
		want string
	}{
		{false, func(w *Writer) { w.StartTagged("a1").Atom("OK").Code("READ-WRITE").Text("SELECT completed").End() },
			"a1 OK [READ-WRITE] SELECT completed\r\n"},
		{false, func(w *Writer) {
			w.StartUntagged().Atom("OK").Code("UIDVALIDITY", "3857529045").Text("UIDs valid").End()
		},
			"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"},
		{false, func(w *Writer) { w.StartContinuation().Text("Ready").End() }, "+ Ready\r\n"},
		{false, func(w *Writer) { w.StartUntagged().Number(172).Atom("EXISTS").End() }, "* 172 EXISTS\r\n"},
		{false, func(w *Writer) {
			w.StartUntagged().Atom("FLAGS").Open().Atom(`\Answered`).Atom(`\Seen`).Close().End()
		}, "* FLAGS (\\Answered \\Seen)\r\n"},
		{false, func(w *Writer) { w.StartUntagged().Atom("FLAGS").Open().Close().End() }, "* FLAGS ()\r\n"},
		{false, func(w *Writer) {
			w.StartUntagged().Atom("LIST").Open().Atom(`\HasNoChildren`).Close().String("/").Mailbox("Entwürfe").End()
		}, "* LIST (\\HasNoChildren) \"/\" Entw&APw-rfe\r\n"},
		{true, func(w *Writer) {
			w.StartUntagged().Atom("LIST").Open().Close().String("/").Mailbox("Entwürfe").End()
		}, "* LIST () \"/\" \"Entwürfe\"\r\n"},
		{false, func(w *Writer) { w.StartUntagged().Atom("LIST").Open().Close().NIL().Mailbox("INBOX").End() },
			"* LIST () NIL INBOX\r\n"},
		{false, func(w *Writer) { w.String(`a "quoted" \ string`) }, `"a \"quoted\" \\ string"`},
		{false, func(w *Writer) { w.String("two\r\nlines") }, "{10}\r\ntwo\r\nlines"},
		{false, func(w *Writer) { w.String("Grüße") }, "{7}\r\nGrüße"},
		{true, func(w *Writer) { w.String("Grüße") }, "\"Grüße\""},
		{true, func(w *Writer) { w.String("bad \xff") }, "{5}\r\nbad \xff"},
		{false, func(w *Writer) { w.String("") }, `""`},
		{false, func(w *Writer) { w.AString("NIL").AString("atom").AString("") }, `"NIL" atom ""`},
		{false, func(w *Writer) { w.NString("", true).NString("x", false) }, `NIL "x"`},
		{false, func(w *Writer) { w.Binary([]byte("a\x00b")) }, "~{3}\r\na\x00b"},
		{false, func(w *Writer) { w.Binary([]byte("ab")) }, "{2}\r\nab"},
		{false, func(w *Writer) { w.Text("evil\r\n* BYE injected") }, "evil  * BYE injected"},
		{false, func(w *Writer) { w.Text("Grüße") }, "Gr??e"},
		{false, func(w *Writer) {
			it := FetchItem{Name: "BINARY", Peek: true, Section: &Section{Part: []uint32{5}}, Partial: &Partial{0, 7}}
			w.StartUntagged().Number(1).Atom("FETCH").Open().FetchItemName(it).Binary([]byte("a\x00")).Close().End()
		}, "* 1 FETCH (BINARY[5]<0> ~{2}\r\na\x00)\r\n"},
	}
	for i, c := range cases {
		got, err := written(c.utf8, c.f)
		if err != nil || got != c.want {
			t.Errorf("case %d: got %q, %v; want %q", i, got, err, c.want)
		}
	}
}

func TestWriterNUL(t *testing.T) {
	for _, f := range []func(w *Writer){
		func(w *Writer) { w.String("a\x00b") },
		func(w *Writer) { w.Literal([]byte("a\x00b")) },
	} {
		got, err := written(false, f)
		if !errors.Is(err, ErrNUL) || bytes.IndexByte([]byte(got), 0) >= 0 {
			t.Errorf("got %q, %v; want ErrNUL and no NUL sent", got, err)
		}
	}
}

// What the Writer writes as a string, the Reader reads back as the same string.
func TestWriterReaderStrings(t *testing.T) {
	for _, s := range []string{"", "x", "NIL", "a b", `q"\`, "cr\rlf\n", "Grüße", "\xff\xfe", string(bytes.Repeat([]byte("y"), 5000))} {
		for _, utf8 := range []bool{false, true} {
			got, err := written(utf8, func(w *Writer) { w.StartTagged("a").Atom("LOGIN").AString(s).AString("p").End() })
			if err != nil {
				t.Fatal(err)
			}
			got = stringsReplaceLiterals(got)
			cmd := parseOne(t, got, Config{LiteralPlus: true})
			if u := cmd.Args.(*Login).Username; u != s {
				t.Errorf("%q (utf8 %v): read back %q", s, utf8, u)
			}
		}
	}
}

// stringsReplaceLiterals turns the writer's synchronizing literals into non-synchronizing
// ones, so the reader does not wait for a continuation.
func stringsReplaceLiterals(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '}' && i+2 < len(s) && s[i+1] == '\r' && s[i+2] == '\n' {
			b.WriteString("+}")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
