package mailbox

import (
	"testing"
)

// TestEnvelopeGroups: RFC 5322 groups keep their markers in ENVELOPE (RFC 3501 section 7.4.2),
// plain lists around them stay, and quoted colons are not groups.
func TestEnvelopeGroups(t *testing.T) {
	raw := "From: a@example.org\r\nTo: x@example.org, Team: b@example.org, Carol <c@example.org>;, \"Odd: name\" <d@example.org>\r\nCc: undisclosed-recipients:;\r\n\r\nbody\r\n"
	env := Parse([]byte(raw)).Envelope
	want := []Address{
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
	if len(env.Cc) != 2 || env.Cc[0].Mailbox != "undisclosed-recipients" || env.Cc[1] != (Address{}) {
		t.Errorf("Cc = %+v", env.Cc)
	}
}

// TestEnvelopeRoutes: a source-routed address (RFC 5322 obs-route) keeps its mailbox and host
// (the route is dropped: addr-adl NIL), and one malformed address does not hide the others.
func TestEnvelopeRoutes(t *testing.T) {
	raw := "From: a@example.org\r\nTo: Bob <@relay.example,@b.example:bob@example.org>, carol@example.org\r\nCc: ok@example.org, <<broken>>, dave@example.org\r\n\r\nbody\r\n"
	env := Parse([]byte(raw)).Envelope
	want := []Address{{Name: "Bob", Mailbox: "bob", Host: "example.org"}, {Mailbox: "carol", Host: "example.org"}}
	if len(env.To) != 2 || env.To[0] != want[0] || env.To[1] != want[1] {
		t.Errorf("To = %+v, want %+v", env.To, want)
	}
	if len(env.Cc) != 2 || env.Cc[0].Mailbox != "ok" || env.Cc[1].Mailbox != "dave" {
		t.Errorf("Cc = %+v, want ok and dave", env.Cc)
	}
}
