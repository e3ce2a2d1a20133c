// Package mailauth checks where internet mail comes from, for the gateway's inbound MX
// (docs/gateway-design.md §7.4): SPF for the envelope sender and the client's address (RFC
// 7208), DKIM signatures (RFC 6376), and DMARC (RFC 7489) for the domain of the From field,
// with the results written as an Authentication-Results field (RFC 8601). It also signs
// outbound mail with DKIM. Every DNS question goes to the gateway's configured resolver.
package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"epost/internal/dnsres"
)

// DMARC outcomes.
const (
	Pass      = "pass"
	Fail      = "fail"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
)

// DKIMResult is one signature's verdict.
type DKIMResult struct {
	Domain string // d=
	Result string // pass, fail, temperror, permerror
	Reason string
}

// Result is everything the checks found.
type Result struct {
	SPF       spf.Result
	SPFDomain string // the domain SPF was checked for: the envelope sender's, or HELO's for the null path
	DKIM      []DKIMResult
	// DMARC for the From domain: Pass, Fail, None (no policy), TempError, PermError.
	DMARC       string
	DMARCPolicy dmarc.Policy // the policy that applies (the subdomain policy for a subdomain)
	FromDomain  string
	Reason      string // why DMARC failed, or what was wrong with the From field
	// BadFrom: the message has no single, parseable From address, so DMARC cannot be
	// evaluated for the domain it claims (RFC 7489 section 6.6.1): such mail is refused, or
	// a forger could dodge a p=reject policy by breaking the field.
	BadFrom bool
}

// Reject reports whether the message should be refused: DMARC asks to reject it (p=reject and
// a failure), or its From field cannot be evaluated.
func (r *Result) Reject() bool {
	return r.BadFrom || r.DMARC == Fail && r.DMARCPolicy == dmarc.PolicyReject
}

// Quarantine reports whether DMARC asks to quarantine it.
func (r *Result) Quarantine() bool { return r.DMARC == Fail && r.DMARCPolicy == dmarc.PolicyQuarantine }

// Checker runs the checks with one resolver.
type Checker struct {
	Resolver *dnsres.Resolver
}

// Check examines a message received from ip, which said helo and gave mailFrom ("" for the
// null reverse path) as its envelope sender.
func (c *Checker) Check(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) *Result {
	nr := dnsres.NetResolver{R: c.Resolver}
	r := &Result{}
	r.SPFDomain = helo
	if _, d, ok := strings.Cut(mailFrom, "@"); ok {
		r.SPFDomain = d
	}
	r.SPF, _ = spf.CheckHostWithSender(ip, helo, mailFrom, spf.WithResolver(nr), spf.WithContext(ctx))

	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: nr.TXTFunc(ctx), MaxVerifications: 5})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		r.DKIM = append(r.DKIM, DKIMResult{Result: PermError, Reason: err.Error()})
	}
	for _, v := range verifs {
		d := DKIMResult{Domain: v.Domain, Result: Pass}
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			d.Result, d.Reason = TempError, v.Err.Error()
		case dkim.IsPermFail(v.Err):
			d.Result, d.Reason = PermError, v.Err.Error()
		default:
			d.Result, d.Reason = Fail, v.Err.Error()
		}
		r.DKIM = append(r.DKIM, d)
	}

	from, err := fromDomain(msg)
	if err != nil {
		r.DMARC, r.Reason, r.BadFrom = PermError, err.Error(), true
		return r
	}
	r.FromDomain = from
	c.dmarc(ctx, nr, r)
	return r
}

// fromDomain is the domain of the message's single From address (RFC 7489 section 6.6.1).
func fromDomain(msg []byte) (string, error) {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg)))
	h, err := tr.ReadMIMEHeader()
	if err != nil {
		// A malformed header (a line without a colon, say) would hide the fields after it.
		return "", fmt.Errorf("header: %v", err)
	}
	froms := h.Values("From")
	if len(froms) != 1 {
		return "", fmt.Errorf("%d From fields", len(froms))
	}
	addrs, err := mail.ParseAddressList(froms[0])
	if err != nil || len(addrs) != 1 {
		return "", fmt.Errorf("From field %q: one address wanted", froms[0])
	}
	_, d, ok := strings.Cut(addrs[0].Address, "@")
	if !ok || d == "" {
		return "", fmt.Errorf("From address %q has no domain", addrs[0].Address)
	}
	return strings.ToLower(strings.TrimSuffix(d, ".")), nil
}

// orgDomain is a domain's organizational domain (public suffix plus one label).
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	a, b = strings.ToLower(strings.TrimSuffix(a, ".")), strings.ToLower(strings.TrimSuffix(b, "."))
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}

func (c *Checker) dmarc(ctx context.Context, nr dnsres.NetResolver, r *Result) {
	opts := &dmarc.LookupOptions{LookupTXT: nr.TXTFunc(ctx)}
	rec, err := dmarc.LookupWithOptions(r.FromDomain, opts)
	sub := false
	if errors.Is(err, dmarc.ErrNoPolicy) && orgDomain(r.FromDomain) != r.FromDomain {
		rec, err = dmarc.LookupWithOptions(orgDomain(r.FromDomain), opts)
		sub = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		r.DMARC = None
		return
	case dmarc.IsTempFail(err):
		r.DMARC, r.Reason = TempError, err.Error()
		return
	case err != nil:
		r.DMARC, r.Reason = PermError, err.Error()
		return
	}
	r.DMARCPolicy = rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		r.DMARCPolicy = rec.SubdomainPolicy
	}
	if r.SPF == spf.Pass && aligned(r.SPFDomain, r.FromDomain, rec.SPFAlignment) {
		r.DMARC = Pass
		return
	}
	for _, d := range r.DKIM {
		if d.Result == Pass && aligned(d.Domain, r.FromDomain, rec.DKIMAlignment) {
			r.DMARC = Pass
			return
		}
	}
	// Nothing passes aligned. If a check could not be made (DNS trouble), the verdict waits:
	// a temporary error, not a failure that a p=reject policy would turn into a refusal.
	temp := r.SPF == spf.TempError
	for _, d := range r.DKIM {
		temp = temp || d.Result == TempError
	}
	if temp {
		r.DMARC = TempError
		r.Reason = fmt.Sprintf("no aligned pass for %s, and a check could not be made (SPF %s; DKIM %v)", r.FromDomain, r.SPF, r.DKIM)
		return
	}
	r.DMARC = Fail
	r.Reason = fmt.Sprintf("neither SPF (%s for %s) nor a DKIM signature passes aligned with %s", r.SPF, r.SPFDomain, r.FromDomain)
}

// Header is the Authentication-Results field (with its name and CRLF) for these results,
// under the gateway's authserv-id.
func (r *Result) Header(authservID string) string {
	results := []authres.Result{&authres.SPFResult{Value: authres.ResultValue(strings.ToLower(string(r.SPF))), From: r.SPFDomain}}
	if len(r.DKIM) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range r.DKIM {
		results = append(results, &authres.DKIMResult{Value: authres.ResultValue(d.Result), Domain: d.Domain, Reason: d.Reason})
	}
	results = append(results, &authres.DMARCResult{Value: authres.ResultValue(r.DMARC), From: r.FromDomain, Reason: r.Reason})
	return "Authentication-Results: " + authres.Format(authservID, results) + "\r\n"
}

// StripAuthResults removes the Authentication-Results fields that claim authservID from the
// message's header (RFC 8601 section 5: a sender must not be able to fake our verdicts), and
// leaves everything else byte for byte. Lines may end in CRLF or a bare LF (SMTP DATA passes
// both through).
func StripAuthResults(msg []byte, authservID string) []byte {
	// The header ends at the first empty line.
	end := len(msg)
	for i := 0; i < len(msg); {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		line := msg[i : i+j+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			end = i
			break
		}
		i += j + 1
	}
	var lines [][]byte
	for rest := msg[:end]; len(rest) > 0; {
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			lines, rest = append(lines, rest), nil
			break
		}
		lines, rest = append(lines, rest[:j+1]), rest[j+1:]
	}
	var out bytes.Buffer
	for i := 0; i < len(lines); {
		// A field is its first line and the folded lines after it.
		j := i + 1
		for j < len(lines) && len(lines[j]) > 0 && (lines[j][0] == ' ' || lines[j][0] == '\t') {
			j++
		}
		field := bytes.Join(lines[i:j], nil)
		if name, value, ok := bytes.Cut(field, []byte(":")); ok && strings.EqualFold(strings.TrimSpace(string(name)), "Authentication-Results") {
			// The authserv-id is the field's first token; a field too damaged for the parser
			// still names it there.
			v := strings.Join(strings.Fields(string(value)), " ")
			id, _, err := authres.Parse(v)
			if err != nil {
				id = firstToken(v)
			}
			if strings.EqualFold(id, authservID) {
				i = j
				continue
			}
		}
		out.Write(field)
		i = j
	}
	out.Write(msg[end:])
	return out.Bytes()
}

func firstToken(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, "; \t\r\n"); i >= 0 {
		return v[:i]
	}
	return v
}

// SignOptions are a DKIM key and where its public half is published.
type SignOptions struct {
	Domain   string
	Selector string
	Key      crypto.Signer // ed25519.PrivateKey or *rsa.PrivateKey
}

// signedHeaders are the fields a signature covers (RFC 6376 section 5.4.1).
var signedHeaders = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From",
	"Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive", "Message-ID", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding"}

// oversigned are the fields a signature covers even when absent, so that nobody can add
// them on the way (RFC 6376 section 8.15); the other signedHeaders are covered only when
// present, since relays legitimately add a missing Date or Message-ID (Postfix does).
var oversigned = map[string]bool{"from": true, "reply-to": true, "subject": true, "to": true, "cc": true}

// headerKeys are the fields of signedHeaders to sign in msg.
func headerKeys(msg []byte) []string {
	present := map[string]bool{}
	for _, line := range bytes.Split(msg, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			present[strings.ToLower(strings.TrimSpace(string(name)))] = true
		}
	}
	var keys []string
	for _, h := range signedHeaders {
		if l := strings.ToLower(h); present[l] || oversigned[l] {
			keys = append(keys, h)
		}
	}
	return keys
}

// Sign returns msg with a DKIM-Signature field prepended (relaxed/relaxed canonicalization).
func Sign(msg []byte, o SignOptions) ([]byte, error) {
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{Domain: o.Domain, Selector: o.Selector, Signer: o.Key,
		Hash: crypto.SHA256, HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: headerKeys(msg)})
	if err != nil {
		return nil, fmt.Errorf("dkim sign: %w", err)
	}
	return out.Bytes(), nil
}
