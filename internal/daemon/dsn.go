package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"
	"time"

	"epost/internal/dsn"
	"epost/internal/identity"
	"epost/internal/mailqueue"
	"epost/internal/post"
)

// Delivery reports (RFC 3464, docs/gateway-design.md §8.3): when a gateway gives up on
// recipients of a queued message (a permanent refusal, or its deadline passed), or they are
// still undelivered after the policy's delay_warn, the sender hears of it in the INBOX: the
// gateway files a DSN through POST as its own identity, once per entry and action (the
// notification id is derived from them, so a report sent again after a crash is filed once).

var enhancedRE = regexp.MustCompile(`\b([245])\.(\d{1,3})\.(\d{1,3})\b`)

// reportDelivery sends the sender of entry h a DSN for rcpts ("failed" or "delayed").
func (n *Node) reportDelivery(ctx context.Context, h mailqueue.Header, rcpts []mailqueue.RcptState, action string, body []byte) error {
	from, err := identity.NormalizeAddress(h.From)
	if err != nil || len(rcpts) == 0 {
		return nil // no report to the null path or a malformed one
	}
	domain := "localhost"
	if len(n.rn.Descriptor.Domains) > 0 {
		domain = n.rn.Descriptor.Domains[0]
	}
	host := n.opts.MXHostname
	if host == "" {
		host = "gateway." + domain
	}
	pol, _ := n.gwPolicy.current(n, false)
	rep := &dsn.Report{ReportingMTA: host, From: "mailer-daemon@" + domain, To: from, ArrivalDate: h.Created, EnvelopeID: h.ID}
	if i := bytes.Index(body, []byte("\r\n\r\n")); i >= 0 {
		rep.Headers = body[:i+2]
	} else if i := bytes.Index(body, []byte("\n\n")); i >= 0 {
		rep.Headers = body[:i+1]
	}
	for _, r := range rcpts {
		rc := dsn.Recipient{Final: r.Addr, Action: action, Diagnostic: r.Detail, DiagnosticType: "x-epost"}
		if m := enhancedRE.FindString(r.Detail); m != "" && (action == dsn.Failed) == (m[0] != '4') {
			rc.Status = m
		}
		if strings.Contains(r.Detail, " said ") {
			rc.DiagnosticType = "smtp"
			if _, rest, ok := strings.Cut(r.Detail, " said "); ok {
				rc.Diagnostic = rest
			}
			if mta, _, ok := strings.Cut(r.Detail, " said "); ok {
				rc.RemoteMTA = mta
			}
		}
		switch {
		case rc.Status != "":
		case action == dsn.Delayed:
			rc.Status = "4.4.1" // no answer from the destination yet
		case strings.HasPrefix(r.Detail, "expired"):
			rc.Status = "5.4.7" // delivery time expired
		default:
			rc.Status = "5.0.0"
		}
		if action == dsn.Delayed && pol != nil {
			rc.WillRetryUntil = h.Deadline
		}
		if rc.Diagnostic == "" {
			rc.Diagnostic = "no further detail"
		}
		rep.Recipients = append(rep.Recipients, rc)
	}
	msg, err := dsn.Build(rep)
	if err != nil {
		return err
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "epost/v1/dsn\x00%s\x00%s", h.ID, action)
	for _, r := range rcpts {
		fmt.Fprintf(sum, "\x00%s", r.Addr)
	}
	var nid post.NotificationID
	copy(nid[:], sum.Sum(nil))
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	unknown, err := n.deliverAs(ctx, []string{from}, []post.NotificationID{nid}, msg)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		n.log.Warn("delivery report dropped: the sender is not a user of the ring", "entry", h.ID, "sender", from)
		return nil
	}
	n.log.Info("delivery report filed", "entry", h.ID, "sender", from, "action", action, "recipients", len(rcpts))
	return nil
}
