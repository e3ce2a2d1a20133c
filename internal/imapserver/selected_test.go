package imapserver

import (
	"strings"
	"testing"
)

// A session IDLE in a folder learns of another session's flag changes, appends and
// expunges as they happen (the incremental sync), with the right sequence numbers, and a
// NOOP after a burst of changes brings a non-idle session to the same view.
func TestIdleSeesOtherSessions(t *testing.T) {
	ts := newTestServer(t, Config{})
	a, _ := ts.dial(t, false)
	b, _ := ts.dial(t, false)
	c, _ := ts.dial(t, false)
	for _, x := range []*client{a, b, c} {
		x.login()
	}
	msg := "Subject: x\r\n\r\nbody\r\n"
	for range 3 {
		b.send("p APPEND INBOX {" + itoa(len(msg)) + "+}\r\n" + msg + "\r\n")
		if l := b.until("p "); !strings.Contains(l, "p OK") {
			t.Fatalf("append: %q", l)
		}
	}
	for _, x := range []*client{a, b, c} {
		x.send("s SELECT INBOX\r\n")
		if l := x.until("s "); !strings.Contains(l, "* 3 EXISTS") {
			t.Fatalf("select: %q", l)
		}
	}
	a.send("i IDLE\r\n")
	a.until("+ ")
	expect := func(x *client, want string) {
		t.Helper()
		if l := x.line(); !strings.HasPrefix(l, want) {
			t.Fatalf("got %q, want %q", l, want)
		}
	}
	b.send("f STORE 2 +FLAGS (\\Flagged)\r\n")
	b.until("f ")
	expect(a, "* 2 FETCH (UID 2 FLAGS (\\Flagged") // and \\Recent: a selected first
	b.send("n APPEND INBOX {" + itoa(len(msg)) + "+}\r\n" + msg + "\r\n")
	b.until("n ")
	expect(a, "* 4 EXISTS")
	if l := a.line(); !strings.HasSuffix(l, "RECENT\r\n") {
		t.Fatalf("after EXISTS: %q", l)
	}
	b.send("d STORE 1 +FLAGS (\\Deleted)\r\n")
	b.until("d ")
	expect(a, "* 1 FETCH (UID 1 FLAGS (\\Deleted")
	b.send("e EXPUNGE\r\n")
	b.until("e ")
	expect(a, "* 1 EXPUNGE")
	a.send("DONE\r\n")
	a.until("i OK")
	// c was not idle: one NOOP reports everything, in order, and leaves 3 messages.
	c.send("o NOOP\r\n")
	l := c.until("o ")
	for _, want := range []string{"* 1 EXPUNGE", "* 3 EXISTS"} {
		if !strings.Contains(l, want) {
			t.Fatalf("NOOP: %q lacks %q", l, want)
		}
	}
	for _, x := range []*client{a, c} {
		x.send("q FETCH 1:* (UID FLAGS)\r\n")
		l := x.until("q ")
		if !strings.Contains(l, "* 1 FETCH (UID 2 FLAGS (\\Flagged") || !strings.Contains(l, "* 3 FETCH (UID 4") || strings.Contains(l, "* 4 FETCH") {
			t.Fatalf("after the changes: %q", l)
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
