package dsn

import (
	"bytes"
	"errors"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func TestBuildAndParse(t *testing.T) {
	arrived := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	r := &Report{ReportingMTA: "gw1.acme.example", From: "mailer-daemon@acme.example", To: "alice@acme.example",
		ArrivalDate: arrived, EnvelopeID: "0123abcd", Date: arrived.Add(5 * 24 * time.Hour),
		Headers: []byte("From: alice@acme.example\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\n"),
		Recipients: []Recipient{
			{Final: "bob@example.org", Action: Failed, Status: "5.1.1", RemoteMTA: "mx.example.org", DiagnosticType: "smtp", Diagnostic: "550 5.1.1 <bob@example.org>: user unknown", LastAttempt: arrived.Add(time.Minute)},
			{Final: "carol@globex.example", Action: Failed, Status: "5.4.7", DiagnosticType: "x-epost", Diagnostic: "ring globex: not delivered in 5 days"},
		}}
	raw, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" || !strings.HasPrefix(m.Header.Get("Content-Type"), "multipart/report") || m.Header.Get("Subject") != "Undelivered Mail Returned to Sender" {
		t.Fatalf("headers: %v", m.Header)
	}
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.ReportingMTA != r.ReportingMTA || got.EnvelopeID != "0123abcd" || !got.ArrivalDate.Equal(arrived) || got.To != r.To || len(got.Recipients) != 2 {
		t.Fatalf("parsed: %+v", got)
	}
	for i, rc := range got.Recipients {
		want := r.Recipients[i]
		if rc.Final != want.Final || rc.Action != want.Action || rc.Status != want.Status || rc.RemoteMTA != want.RemoteMTA ||
			rc.DiagnosticType != want.DiagnosticType || rc.Diagnostic != want.Diagnostic || !rc.LastAttempt.Equal(want.LastAttempt) {
			t.Fatalf("recipient %d: %+v, want %+v", i, rc, want)
		}
	}
	if !bytes.Contains(got.Headers, []byte("Subject: hello")) {
		t.Fatalf("headers part: %q", got.Headers)
	}

	// A delay notice: its own subject, Will-Retry-Until, no headers part.
	r2 := &Report{ReportingMTA: "gw1.acme.example", From: "mailer-daemon@acme.example", To: "alice@acme.example",
		Recipients: []Recipient{{Final: "bob@example.org", Action: Delayed, Status: "4.4.7", Diagnostic: "451 4.7.1 try later", WillRetryUntil: arrived.Add(5 * 24 * time.Hour)}}}
	raw, err = Build(r2)
	if err != nil {
		t.Fatal(err)
	}
	got, err = Parse(raw)
	if err != nil || got.Recipients[0].Action != Delayed || !got.Recipients[0].WillRetryUntil.Equal(arrived.Add(5*24*time.Hour)) || got.Headers != nil {
		t.Fatalf("delay notice: %+v %v", got, err)
	}
	if m, _ := mail.ReadMessage(bytes.NewReader(raw)); m.Header.Get("Subject") != "Delayed Mail (still being retried)" {
		t.Fatalf("delay subject %q", m.Header.Get("Subject"))
	}
}

func TestBuildRefuses(t *testing.T) {
	ok := Recipient{Final: "bob@example.org", Action: Failed, Status: "5.1.1"}
	for name, r := range map[string]*Report{
		"null sender":   {ReportingMTA: "gw", From: "m@a", Recipients: []Recipient{ok}},
		"no recipients": {ReportingMTA: "gw", From: "m@a", To: "a@a"},
		"bad status":    {ReportingMTA: "gw", From: "m@a", To: "a@a", Recipients: []Recipient{{Final: "b@b", Action: Failed, Status: "550"}}},
		"bad action":    {ReportingMTA: "gw", From: "m@a", To: "a@a", Recipients: []Recipient{{Final: "b@b", Action: "lost", Status: "5.0.0"}}},
		"line break":    {ReportingMTA: "gw", From: "m@a", To: "a@a", Recipients: []Recipient{{Final: "b@b\r\nBcc: evil@x", Action: Failed, Status: "5.0.0"}}},
	} {
		if _, err := Build(r); err == nil {
			t.Errorf("%s: built", name)
		}
	}
}

// A multi-line SMTP reply (go-smtp joins its lines with LF) becomes one line of diagnostic,
// and cannot inject fields.
func TestMultiLineDiagnostic(t *testing.T) {
	raw, err := Build(&Report{ReportingMTA: "gw", From: "m@acme.example", To: "a@acme.example", Recipients: []Recipient{{Final: "b@gmail.example",
		Action: Failed, Status: "5.1.1", Diagnostic: "550-5.1.1 The email account that you tried to reach does not exist.\n550 5.1.1 Please try\r\nBcc: evil@x"}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Recipients[0].Diagnostic; d != "550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 Please try Bcc: evil@x" {
		t.Fatalf("diagnostic %q", d)
	}
	if bytes.Contains(raw, []byte("\r\nBcc:")) {
		t.Fatal("a field was injected")
	}
}

// A DSN in the shape Postfix sends (a comment after the status, folded diagnostic, LF line
// ends) parses too: gateways read internet MTAs' reports.
func TestParsePostfixStyle(t *testing.T) {
	raw := "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n" +
		"To: alice@acme.example\nSubject: Undelivered Mail Returned to Sender\n" +
		"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"B1\"\n\n" +
		"--B1\nContent-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\nI'm sorry.\n\n" +
		"--B1\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n" +
		"Reporting-MTA: dns; mx.example.org\nX-Postfix-Queue-ID: 4F1\nArrival-Date: Sun,  6 Dec 2026 10:00:00 +0000 (UTC)\n\n" +
		"Final-Recipient: rfc822; bob@example.org\nOriginal-Recipient: rfc822;bob@example.org\nAction: failed\nStatus: 5.1.1 (user unknown)\n" +
		"Remote-MTA: dns; inner.example.org\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.org>:\n    Recipient address rejected\n\n" +
		"--B1--\n"
	r, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	rc := r.Recipients[0]
	if r.ReportingMTA != "mx.example.org" || rc.Final != "bob@example.org" || rc.Status != "5.1.1" || rc.Action != Failed ||
		!strings.Contains(rc.Diagnostic, "Recipient address rejected") || rc.RemoteMTA != "inner.example.org" {
		t.Fatalf("parsed: %+v %+v", r, rc)
	}
	if _, err := Parse([]byte("From: a@b\nContent-Type: text/plain\n\nhi\n")); !errors.Is(err, ErrNotDSN) {
		t.Fatalf("plain message: %v", err)
	}
}
