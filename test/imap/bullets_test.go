package imap_test

import (
	"fmt"
	"strings"
	"testing"
)

// Two bullets of issue 15's outside run that the ratchet does not hold: ENVELOPE of a
// source-routed address (RFC 5322 obs-route) keeps its mailbox and host (the parse cache in
// internal/mailbox dropped the whole address list, for both engines), and BODY[1] of a part
// with a NUL byte never reaches the client as a plain literal holding the NUL (RFC 9051
// section 4.3: CHAR8 excludes NUL; the go-imap engine sent one, imapserver dropped the connection).
func TestIssue15Bullets(t *testing.T) {
	cases := []struct {
		name string
		run  func(r *rawConn) error
	}{
		{"envelope-source-route", func(r *rawConn) error {
			if err := r.appendMsg("INBOX", "Subject: route\nFrom: a@example.org\nTo: Bob <@relay.example:bob@example.org>\n\nx\n"); err != nil {
				return err
			}
			r.cmd("SELECT INBOX")
			out, err := r.cmd("UID FETCH * (ENVELOPE)")
			if err != nil {
				return err
			}
			return expect(out, `\(\("Bob" (NIL|"@relay\.example") "bob" "example\.org"\)\)`)
		}},
		{"body-part-with-nul", func(r *rawConn) error {
			msg := "Subject: nul\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\nA\x00B\r\n--b1--\r\n"
			out, err := r.cmd(fmt.Sprintf("APPEND INBOX ~{%d}", len(msg)), msg)
			if err != nil {
				return err
			}
			if !strings.Contains(out, " OK") {
				return fmt.Errorf("APPEND of a literal8 with a NUL: %s", out)
			}
			r.cmd("SELECT INBOX")
			out, err = r.cmd("UID FETCH * (BODY.PEEK[1])")
			if err != nil {
				return err
			}
			if i := strings.IndexByte(out, 0); i >= 0 {
				return fmt.Errorf("a NUL byte reached the client in a BODY[1] response:\n%q", out)
			}
			return expect(out, `(BODY\[1\] |NO|OK \[UNKNOWN-CTE\])`)
		}},
	}
	forEngines(t, func(t *testing.T, engine string) {
		for _, c := range cases {
			s := start(t, engine, serverConfig{}, false)
			r, err := dialRaw(t, s.addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.login(); err != nil {
				t.Fatal(err)
			}
			err = c.run(r)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
	})
}
