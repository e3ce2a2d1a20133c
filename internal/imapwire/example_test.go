package imapwire_test

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"epost/internal/imapwire"
)

// A server loop: read a command, answer errors as the *Error says, send "+" for
// synchronizing literals.
func ExampleReader_ReadCommand() {
	in := "a1 LOGIN {999999999}\r\n" +
		"a2 LOGIN \"fred secret\r\n" +
		"a3 UID FETCH x FLAGS\r\n" +
		"a4 LOGIN {4}\r\nfred secret\r\n" +
		"a5 FETCH 1 BINARY.PEEK[5]<0.7>\r\n"
	var sent strings.Builder
	out := bufio.NewWriter(&sent)
	w := imapwire.NewWriter(out)
	r := imapwire.NewReader(bufio.NewReader(strings.NewReader(in)), imapwire.Config{})
	r.Continue = func(size int64) error {
		w.StartContinuation().Text("go ahead").End()
		return w.Flush()
	}
	for {
		cmd, err := r.ReadCommand()
		var e *imapwire.Error
		if errors.As(err, &e) {
			w.StartTagged(e.ResponseTag()).Atom(string(e.Kind))
			if e.Code != "" {
				w.Code(e.Code)
			}
			w.Text(e.Msg).End()
			if e.Fatal {
				w.StartUntagged().Atom("BYE").Text("closing").End()
				break
			}
			continue
		} else if err != nil {
			break
		}
		switch a := cmd.Args.(type) {
		case *imapwire.Login:
			w.StartTagged(cmd.Tag).Atom("OK").Text("hello " + a.Username).End()
		case *imapwire.Fetch:
			w.StartUntagged().Number(1).Atom("FETCH").Open().FetchItemName(a.Items[0]).Binary([]byte("Hello, ")).Close().End()
			w.StartTagged(cmd.Tag).Atom("OK").Text("FETCH done").End()
		}
	}
	w.Flush()
	fmt.Print(strings.ReplaceAll(sent.String(), "\r\n", "\n"))
	// Output:
	// a1 BAD [TOOBIG] LOGIN: literal of 999999999 bytes for the user name is over this server's limit of 65536 bytes
	// a2 BAD LOGIN: unterminated quoted string (no closing '"' before the end of the line) at end of line
	// a3 BAD UID FETCH: expected a sequence set (like 1:5,7 or 1:*) at "x FLAGS"
	// + go ahead
	// a4 OK hello fred
	// * 1 FETCH (BINARY[5]<0> {7}
	// Hello, )
	// a5 OK FETCH done
}
