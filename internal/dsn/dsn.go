// Package dsn builds and parses delivery status notifications (RFC 3464), the reports a
// sender gets when mail for another ring or the internet could not be delivered (failed) or is
// late (delayed): a multipart/report message (RFC 6522) with a text part for people, a
// message/delivery-status part for programs, and, when the reporter saw them, the original
// message's header fields (text/rfc822-headers).
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"time"
)

// Actions (RFC 3464 section 2.3.3).
const (
	Failed    = "failed"
	Delayed   = "delayed"
	Delivered = "delivered"
	Relayed   = "relayed"
	Expanded  = "expanded"
)

// Recipient is one recipient's report.
type Recipient struct {
	Final          string    // Final-Recipient address (rfc822 type)
	Original       string    // Original-Recipient, when it differs; "" omits it
	Action         string    // Failed, Delayed, ...
	Status         string    // enhanced status code, e.g. "5.1.1" (RFC 3463)
	RemoteMTA      string    // dns name of the MTA that answered, "" omits it
	DiagnosticType string    // "smtp" for an SMTP reply, "x-epost" for ring-internal reasons
	Diagnostic     string    // the reply or reason
	LastAttempt    time.Time // zero omits it
	WillRetryUntil time.Time // delayed reports only; zero omits it
}

// Report is a whole DSN.
type Report struct {
	ReportingMTA string // dns name of the reporting gateway (Reporting-MTA: dns; ...)
	From         string // the report's sender, e.g. "mailer-daemon@acme.example"
	To           string // the original sender (never the null path: no DSN is sent to it)
	ArrivalDate  time.Time
	EnvelopeID   string // Original-Envelope-Id, "" omits it
	Recipients   []Recipient
	// Headers of the original message (text/rfc822-headers), nil when the reporter never saw
	// them (a gateway of a federated message sees ciphertext only).
	Headers []byte
	Date    time.Time // the report's Date; zero means now
}

var statusRE = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// Build renders r as an RFC 5322 message.
func Build(r *Report) ([]byte, error) {
	if r.To == "" {
		return nil, errors.New("dsn: no report goes to the null reverse path")
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: a report needs recipients")
	}
	action := r.Recipients[0].Action
	rcpts := make([]Recipient, len(r.Recipients))
	for i, rc := range r.Recipients {
		// Multi-line SMTP replies arrive with line breaks inside: one line of text each.
		rc.Diagnostic, rc.RemoteMTA = oneLine(rc.Diagnostic), oneLine(rc.RemoteMTA)
		rcpts[i] = rc
		if !statusRE.MatchString(rc.Status) {
			return nil, fmt.Errorf("dsn: status %q of %s: want class.subject.detail (RFC 3463)", rc.Status, rc.Final)
		}
		switch rc.Action {
		case Failed, Delayed, Delivered, Relayed, Expanded:
		default:
			return nil, fmt.Errorf("dsn: action %q of %s", rc.Action, rc.Final)
		}
		if rc.Action == Failed {
			action = Failed
		}
		if hasCRLF(rc.Final, rc.Original, rc.DiagnosticType) {
			return nil, fmt.Errorf("dsn: a field of %s has a line break", rc.Final)
		}
	}
	if hasCRLF(r.ReportingMTA, r.From, r.To, r.EnvelopeID) {
		return nil, errors.New("dsn: a field has a line break")
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)

	// Part 1: for people.
	var text bytes.Buffer
	subject := "Undelivered Mail Returned to Sender"
	if action == Failed {
		fmt.Fprintf(&text, "This is the mail system at %s.\r\n\r\nYour message could not be delivered to one or more recipients.\r\nIt was not delivered and will not be retried.\r\n\r\n", r.ReportingMTA)
	} else if action == Delayed {
		subject = "Delayed Mail (still being retried)"
		fmt.Fprintf(&text, "This is the mail system at %s.\r\n\r\nYour message has not been delivered yet to one or more recipients.\r\nNothing needs to be done: delivery is being retried.\r\n\r\n", r.ReportingMTA)
	} else {
		subject = "Successful Mail Delivery Report"
		fmt.Fprintf(&text, "This is the mail system at %s.\r\n\r\nYour message was delivered to the recipients below (or passed on to a system that does not report further).\r\n\r\n", r.ReportingMTA)
	}
	for _, rc := range rcpts {
		fmt.Fprintf(&text, "<%s>: %s (%s)", rc.Final, rc.Action, rc.Status)
		if rc.Diagnostic != "" {
			fmt.Fprintf(&text, ": %s", rc.Diagnostic)
		}
		if !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&text, "; retried until %s", rc.WillRetryUntil.UTC().Format(time.RFC1123Z))
		}
		text.WriteString("\r\n")
	}
	pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Description": {"Notification"}})
	if err != nil {
		return nil, err
	}
	pw.Write(text.Bytes())

	// Part 2: for programs.
	var st bytes.Buffer
	fmt.Fprintf(&st, "Reporting-MTA: dns; %s\r\n", r.ReportingMTA)
	if r.EnvelopeID != "" {
		fmt.Fprintf(&st, "Original-Envelope-Id: %s\r\n", r.EnvelopeID)
	}
	if !r.ArrivalDate.IsZero() {
		fmt.Fprintf(&st, "Arrival-Date: %s\r\n", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range rcpts {
		st.WriteString("\r\n")
		if rc.Original != "" {
			fmt.Fprintf(&st, "Original-Recipient: rfc822; %s\r\n", rc.Original)
		}
		fmt.Fprintf(&st, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", rc.Final, rc.Action, rc.Status)
		if rc.RemoteMTA != "" {
			fmt.Fprintf(&st, "Remote-MTA: dns; %s\r\n", rc.RemoteMTA)
		}
		if rc.Diagnostic != "" {
			typ := rc.DiagnosticType
			if typ == "" {
				typ = "smtp"
			}
			fmt.Fprintf(&st, "Diagnostic-Code: %s; %s\r\n", typ, rc.Diagnostic)
		}
		if !rc.LastAttempt.IsZero() {
			fmt.Fprintf(&st, "Last-Attempt-Date: %s\r\n", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&st, "Will-Retry-Until: %s\r\n", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	if pw, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"message/delivery-status"}, "Content-Description": {"Delivery report"}}); err != nil {
		return nil, err
	}
	pw.Write(st.Bytes())

	// Part 3: what the reporter saw of the message.
	if len(r.Headers) > 0 {
		if pw, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/rfc822-headers"}, "Content-Description": {"Undelivered Message Headers"}}); err != nil {
			return nil, err
		}
		pw.Write(bytes.TrimRight(r.Headers, "\r\n"))
		pw.Write([]byte("\r\n"))
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}

	var msg bytes.Buffer
	domain := r.ReportingMTA
	if _, d, ok := strings.Cut(r.From, "@"); ok {
		domain = d
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	fmt.Fprintf(&msg, "From: Mail Delivery System <%s>\r\n", r.From)
	fmt.Fprintf(&msg, "To: <%s>\r\n", r.To)
	fmt.Fprintf(&msg, "Subject: %s\r\n", subject)
	fmt.Fprintf(&msg, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&msg, "Message-ID: <dsn.%s@%s>\r\n", hex.EncodeToString(id[:]), domain)
	msg.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&msg, "Content-Type: %s\r\n\r\n", mime.FormatMediaType("multipart/report", map[string]string{"report-type": "delivery-status", "boundary": mw.Boundary()}))
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}

// oneLine joins the lines of s with spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
}

func hasCRLF(ss ...string) bool {
	for _, s := range ss {
		if strings.ContainsAny(s, "\r\n") {
			return true
		}
	}
	return false
}

// ErrNotDSN: the message is not a multipart/report of report-type delivery-status.
var ErrNotDSN = errors.New("dsn: not a delivery status notification")

// Parse reads a DSN back (ours or an internet MTA's): the per-message and per-recipient
// fields of its message/delivery-status part, and the headers part if any.
func Parse(raw []byte) (*Report, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") || params["boundary"] == "" {
		return nil, ErrNotDSN
	}
	r := &Report{}
	if d, err := mail.ParseDate(m.Header.Get("Date")); err == nil {
		r.Date = d
	}
	if a, err := mail.ParseAddress(m.Header.Get("To")); err == nil {
		r.To = a.Address
	}
	if a, err := mail.ParseAddress(m.Header.Get("From")); err == nil {
		r.From = a.Address
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	found := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		data, err := io.ReadAll(io.LimitReader(p, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			if err := parseStatus(data, r); err != nil {
				return nil, err
			}
			found = true
		case "text/rfc822-headers", "message/rfc822-headers":
			r.Headers = data
		}
	}
	if !found || len(r.Recipients) == 0 {
		return nil, fmt.Errorf("%w: no delivery-status part with recipients", ErrNotDSN)
	}
	return r, nil
}

// parseStatus reads the field groups of a delivery-status part: the first is per message,
// each following one per recipient.
func parseStatus(data []byte, r *Report) error {
	norm := strings.ReplaceAll(string(data), "\r\n", "\n")
	var groups []textproto.MIMEHeader
	for _, g := range strings.Split(strings.TrimSpace(norm), "\n\n") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(g + "\n\n"))).ReadMIMEHeader()
		if err != nil {
			return fmt.Errorf("dsn: delivery-status fields: %w", err)
		}
		groups = append(groups, h)
	}
	if len(groups) == 0 {
		return fmt.Errorf("%w: empty delivery-status part", ErrNotDSN)
	}
	h := groups[0]
	r.ReportingMTA = afterType(h.Get("Reporting-Mta"))
	r.EnvelopeID = h.Get("Original-Envelope-Id")
	if d, err := mail.ParseDate(h.Get("Arrival-Date")); err == nil {
		r.ArrivalDate = d
	}
	for _, h := range groups[1:] {
		rc := Recipient{Final: afterType(h.Get("Final-Recipient")), Original: afterType(h.Get("Original-Recipient")),
			Action: strings.ToLower(strings.TrimSpace(h.Get("Action"))), RemoteMTA: afterType(h.Get("Remote-Mta"))}
		if f := strings.Fields(h.Get("Status")); len(f) > 0 {
			rc.Status = f[0] // a comment may follow
		}
		if t, v, ok := strings.Cut(h.Get("Diagnostic-Code"), ";"); ok {
			rc.DiagnosticType, rc.Diagnostic = strings.ToLower(strings.TrimSpace(t)), strings.TrimSpace(v)
		}
		if d, err := mail.ParseDate(h.Get("Last-Attempt-Date")); err == nil {
			rc.LastAttempt = d
		}
		if d, err := mail.ParseDate(h.Get("Will-Retry-Until")); err == nil {
			rc.WillRetryUntil = d
		}
		r.Recipients = append(r.Recipients, rc)
	}
	return nil
}

// afterType is the value of a typed field ("rfc822; a@b" → "a@b").
func afterType(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(v)
}
