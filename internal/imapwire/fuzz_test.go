package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// FuzzParseCommand feeds arbitrary bytes to a Reader. It must never panic or hang, every
// command it accepts must format to text that parses to the same command, and formatting
// must be a fixpoint.
func FuzzParseCommand(f *testing.F) {
	for _, s := range rfcExamples {
		f.Add([]byte(lit(s)))
	}
	for _, s := range []string{
		"a LOGIN \"unterminated\r\nb NOOP\r\n",
		"a LOGIN {999999999}\r\n",
		"a APPEND INBOX {5000+}\r\n",
		"a UID FETCH x FLAGS\r\n",
		"a SEARCH NOT NOT NOT NOT (OR ALL (NOT ALL))\r\n",
		"a LIST \"\" \"\"\r\n",
		"a FETCH 1 BINARY.PEEK[5]<0.7>\r\n",
		"a LOGIN ~{1+}\r\nx y\r\n",
		"a SELECT \"&Jjo-!\" (QRESYNC (1 2 1:* (1 2)))\r\n",
		"\x01a NOOP\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A watchdog: a hang becomes a crash, which the fuzzer records with its input.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				panic(fmt.Sprintf("hang on %q", data))
			}
		}()
		cfg := Config{MaxLine: 2048, MaxLiteral: 4096, MaxAppend: 8192}
		if len(data) > 0 && data[0] == 1 {
			cfg.UTF8, cfg.LiteralPlus = true, true
			data = data[1:]
		}
		r := NewReader(bufio.NewReader(bytes.NewReader(data)), cfg)
		r.Continue = func(int64) error { return nil }
		for i := 0; i <= len(data); i++ {
			cmd, err := r.ReadCommand()
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Fatal {
					return
				}
				if e.Kind != BAD && e.Kind != NO || e.Msg == "" {
					t.Fatalf("error without a usable answer: %#v", e)
				}
				continue
			}
			out := cmd.Format(cfg.UTF8)
			c2 := cfg
			c2.LiteralPlus, c2.MaxLine = true, 1<<20
			r2 := NewReader(bufio.NewReader(bytes.NewReader(out)), c2)
			again, err := r2.ReadCommand()
			if err != nil {
				t.Fatalf("%q formats to %q, which does not parse: %v", data, out, err)
			}
			if out2 := again.Format(cfg.UTF8); !bytes.Equal(out, out2) {
				t.Fatalf("%q: format not a fixpoint:\n%q\n%q", data, out, out2)
			}
		}
		t.Fatalf("more commands than bytes")
	})
}

// FuzzWriterString: whatever string the Writer sends, the Reader reads back unchanged, and
// a NUL byte is never sent.
func FuzzWriterString(f *testing.F) {
	for _, s := range []string{"", "NIL", "a b", `q"\`, "cr\rlf\n", "Grüße", "\xff", "a\x00b", "}\r\n"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, utf8 bool) {
		var buf bytes.Buffer
		w := NewWriter(bufio.NewWriter(&buf))
		w.UTF8 = utf8
		w.StartTagged("a").Atom("LOGIN").AString(s).String(s).End()
		err := w.Flush()
		if bytes.IndexByte([]byte(s), 0) >= 0 {
			if !errors.Is(err, ErrNUL) || bytes.IndexByte(buf.Bytes(), 0) >= 0 {
				t.Fatalf("%q: sent %q, %v", s, buf.Bytes(), err)
			}
			return
		}
		r := NewReader(bufio.NewReader(&buf), Config{UTF8: utf8, MaxLiteral: 1 << 20})
		r.Continue = func(int64) error { return nil }
		cmd, err := r.ReadCommand()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if l := cmd.Args.(*Login); l.Username != s || l.Password != s {
			t.Fatalf("%q: read back %q, %q", s, l.Username, l.Password)
		}
	})
}
