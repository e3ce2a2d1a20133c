package imapwire

import (
	"bufio"
	"slices"
	"strings"
	"testing"
)

func TestParseCancelUpdate(t *testing.T) {
	for _, c := range []struct {
		in   string
		tags []string // nil: BAD
	}{
		{`a CANCELUPDATE "B01"` + "\r\n", []string{"B01"}},
		{`a CANCELUPDATE "B01" "x.2"` + "\r\n", []string{"B01", "x.2"}},
		{"a CANCELUPDATE\r\n", nil},
		{"a CANCELUPDATE B01\r\n", nil},
		{`a CANCELUPDATE "a b"` + "\r\n", nil},
		{`a CANCELUPDATE "B01" ` + "\r\n", nil},
	} {
		r := NewReader(bufio.NewReader(strings.NewReader(c.in)), Config{})
		cmd, err := r.ReadCommand()
		if c.tags == nil {
			if err == nil {
				t.Errorf("%q: parsed as %#v", c.in, cmd.Args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got := cmd.Args.(*CancelUpdate).Tags; !slices.Equal(got, c.tags) {
			t.Errorf("%q: tags %q", c.in, got)
		}
		if out := string(cmd.Format(false)); out != c.in {
			t.Errorf("%q formats as %q", c.in, out)
		}
	}
}
