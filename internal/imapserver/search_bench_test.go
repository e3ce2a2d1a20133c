package imapserver

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"epost/internal/mailbox"
)

// BenchmarkSearch: SEARCH over a 500-message INBOX of 4 KB messages, the searches of
// scripts/imapload's mix (a header key every message must be read for, and a flag key).
func BenchmarkSearch(b *testing.B) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, err := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	t := &testing.T{}
	s := pipeSession(t, srv)
	s("LOGIN u p")
	body := strings.Repeat("storage latency throughput test result change proposal\r\n", 70)
	for i := range 500 {
		from := "Alice <alice@demo.example>"
		if i%2 == 1 {
			from = "Carol <carol@example.net>"
		}
		msg := fmt.Sprintf("Date: Sun, 06 Dec 2026 20:00:00 +0000\r\nFrom: %s\r\nTo: Bob <bob@demo.example>\r\nSubject: [bench %d] mail ring node\r\nMessage-ID: <%d@bench.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s", from, i, i, body)
		if r := s(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg)); !strings.Contains(r, "OK") {
			b.Fatal(r)
		}
	}
	s("SELECT INBOX")
	for _, c := range []struct{ name, cmd, want string }{
		{"from", `UID SEARCH FROM "alice"`, "* SEARCH 1 3 5"},
		{"unseen", "UID SEARCH UNSEEN", "* SEARCH 1 2 3"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if r := s(c.cmd); !strings.Contains(r, c.want) {
					b.Fatal(r[:min(len(r), 200)])
				}
			}
		})
	}
}

// Header searches read only the header: a From field folded over lines, after a header longer
// than the first read, in any case, with bare LF line ends, and a message that is all header.
func TestSearchReadsHeaderOnly(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, err := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := pipeSession(t, srv)
	s("LOGIN u p")
	filler := "X-Filler: " + strings.Repeat("f", 70) + "\r\n"
	for _, msg := range []string{
		strings.Repeat(filler, 80) + "fROM: Folded\r\n  Name <folded@example.org>\r\nSubject: long\r\n\r\nbody from: nobody\r\n",
		"Subject: lf\nFrom: Plain <lf@example.org>\n\nbody\n",
		"From: Only Header <only@example.org>",
		"Subject: body only\r\n\r\nFrom: Folded\r\n",
	} {
		if r := s(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg)); !strings.Contains(r, "OK") {
			t.Fatal(r)
		}
	}
	s("SELECT INBOX")
	for _, c := range []struct{ cmd, want string }{
		{`SEARCH FROM "folded name"`, "* SEARCH 1\r\n"},
		{`SEARCH FROM "folded@example.org"`, "* SEARCH 1\r\n"},
		{`SEARCH FROM "lf@"`, "* SEARCH 2\r\n"},
		{`SEARCH FROM "only"`, "* SEARCH 3\r\n"},
		{`SEARCH FROM "nobody"`, "* SEARCH\r\n"},
		{`SEARCH SUBJECT "long" FROM "name"`, "* SEARCH 1\r\n"},
		{`SEARCH HEADER X-Filler "fff"`, "* SEARCH 1\r\n"},
	} {
		if r := s(c.cmd); !strings.Contains(r, c.want) {
			t.Errorf("%s: got %q, want %q", c.cmd, r, c.want)
		}
	}
}
