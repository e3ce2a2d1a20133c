package mailbox

import (
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestEnvelopeGroups: RFC 5322 groups keep their markers in ENVELOPE (RFC 3501 section 7.4.2),
// plain lists around them stay, and quoted colons are not groups.
func TestEnvelopeGroups(t *testing.T) {
	raw := "From: a@example.org\r\nTo: x@example.org, Team: b@example.org, Carol <c@example.org>;, \"Odd: name\" <d@example.org>\r\nCc: undisclosed-recipients:;\r\n\r\nbody\r\n"
	env := Parse([]byte(raw)).Envelope
	want := []imap.Address{
		{Mailbox: "x", Host: "example.org"},
		{Mailbox: "Team"},
		{Mailbox: "b", Host: "example.org"},
		{Name: "Carol", Mailbox: "c", Host: "example.org"},
		{},
		{Name: "Odd: name", Mailbox: "d", Host: "example.org"},
	}
	if len(env.To) != len(want) {
		t.Fatalf("To = %+v", env.To)
	}
	for i := range want {
		if env.To[i] != want[i] {
			t.Errorf("To[%d] = %+v, want %+v", i, env.To[i], want[i])
		}
	}
	if len(env.Cc) != 2 || env.Cc[0].Mailbox != "undisclosed-recipients" || env.Cc[1] != (imap.Address{}) {
		t.Errorf("Cc = %+v", env.Cc)
	}
}
