package ring

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The gateway policy: the organization's accept policy for internet mail (issue 14,
// docs/gateway-design.md §3.4), one document the ring CA signs, kept next to the descriptor
// in the ring directory and copied to each gateway's node directory (like revocations.json).
// A gateway without the file runs with DefaultPolicy for its ring.

// FilePolicy is the signed gateway policy in the ring and gateway node directories.
const FilePolicy = "policy.json"

const typePolicy = "gateway-policy"

// DMARC enforcement modes.
const (
	DMARCEnforce = "enforce" // p=reject failures are refused (550 5.7.1), p=quarantine ones filed to Junk
	DMARCReport  = "report"  // evaluated and recorded in Authentication-Results only
	DMARCOff     = "off"     // not evaluated
)

// SPF fail handling.
const (
	SPFTag    = "tag"    // recorded in Authentication-Results only
	SPFReject = "reject" // an SPF fail is refused at DATA (550 5.7.23)
)

// Policy is the gateway policy. Zero fields take DefaultPolicy's values when loaded.
type Policy struct {
	Version int       `json:"version"`
	Issued  time.Time `json:"issued"`
	Ring    string    `json:"ring_id"`
	// AcceptDomains are the domains the MX takes mail for: a subset of the descriptor's
	// (empty: all of them). Anything else is relaying, refused 550 5.7.1.
	AcceptDomains []string `json:"accept_domains"`
	// Postmaster is the ring user that postmaster@ each accepted domain reaches (RFC 5321
	// section 4.5.1); "" means postmaster@ must exist as a user of its own.
	Postmaster      string `json:"postmaster,omitempty"`
	MaxMessageBytes int64  `json:"max_message_bytes"`
	MaxRecipients   int    `json:"max_recipients"`
	DMARC           string `json:"dmarc"`
	SPFFail         string `json:"spf_fail"`
	// Allow and Deny are client addresses or networks (CIDR) and sender domains. Deny wins
	// over everything but Allow; an allowed client skips the rate limits and DMARC refusal.
	Allow                     []string `json:"allow,omitempty"`
	Deny                      []string `json:"deny,omitempty"`
	MaxConnsPerIP             int      `json:"max_conns_per_ip"`
	MaxMessagesPerIPPerMinute int      `json:"max_messages_per_ip_per_minute"`
	// OutboundDeadline is how long a gateway tries to deliver an outgoing message before it
	// gives up and reports the failure to the sender (RFC 5321 section 4.5.4.1: 4-5 days).
	OutboundDeadline Duration `json:"outbound_deadline"`
	// DelayWarn is when the sender hears that a message is still undelivered.
	DelayWarn Duration `json:"delay_warn"`
}

// Duration is a time.Duration written as "120h" in JSON.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultPolicy is the policy of a ring whose CA signed none: every domain of the
// descriptor, 50 MiB, DMARC enforced, SPF fails tagged, 20 connections and 600 messages a
// minute per client address, 5 days to deliver outbound mail, a delay notice after 4 hours.
func DefaultPolicy(d *Descriptor) *Policy {
	p := &Policy{Ring: d.RingID.String()}
	p.fill(d)
	return p
}

func (p *Policy) fill(d *Descriptor) {
	if len(p.AcceptDomains) == 0 {
		p.AcceptDomains = slices.Clone(d.Domains)
	}
	if p.MaxMessageBytes <= 0 {
		p.MaxMessageBytes = 50 << 20
	}
	if p.MaxRecipients <= 0 {
		p.MaxRecipients = 100
	}
	if p.DMARC == "" {
		p.DMARC = DMARCEnforce
	}
	if p.SPFFail == "" {
		p.SPFFail = SPFTag
	}
	if p.MaxConnsPerIP <= 0 {
		p.MaxConnsPerIP = 20
	}
	if p.MaxMessagesPerIPPerMinute <= 0 {
		p.MaxMessagesPerIPPerMinute = 600
	}
	if p.OutboundDeadline <= 0 {
		p.OutboundDeadline = Duration(120 * time.Hour)
	}
	if p.DelayWarn <= 0 {
		p.DelayWarn = Duration(4 * time.Hour)
	}
}

// check reports what is wrong with a filled policy of ring d.
func (p *Policy) check(d *Descriptor) error {
	if p.Ring != d.RingID.String() {
		return fmt.Errorf("policy: for ring %s, want %s", p.Ring, d.RingID)
	}
	for _, dom := range p.AcceptDomains {
		if !d.HasDomain(dom) {
			return fmt.Errorf("policy: accept_domains lists %q, which is not a domain of ring %q (%s)", dom, d.Name, strings.Join(d.Domains, ", "))
		}
	}
	if p.DMARC != DMARCEnforce && p.DMARC != DMARCReport && p.DMARC != DMARCOff {
		return fmt.Errorf("policy: dmarc %q: want enforce, report or off", p.DMARC)
	}
	if p.SPFFail != SPFTag && p.SPFFail != SPFReject {
		return fmt.Errorf("policy: spf_fail %q: want tag or reject", p.SPFFail)
	}
	for _, l := range [][]string{p.Allow, p.Deny} {
		for _, e := range l {
			if _, err := parseListEntry(e); err != nil {
				return fmt.Errorf("policy: %w", err)
			}
		}
	}
	return nil
}

// Accepts reports whether the MX takes mail for domain.
func (p *Policy) Accepts(domain string) bool {
	for _, d := range p.AcceptDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// listEntry is an allow or deny entry: a network or a domain.
type listEntry struct {
	net    netip.Prefix
	domain string
}

func parseListEntry(s string) (listEntry, error) {
	s = strings.TrimSpace(s)
	if pf, err := netip.ParsePrefix(s); err == nil {
		return listEntry{net: pf.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return listEntry{net: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	if s == "" || strings.ContainsAny(s, " /@:") {
		return listEntry{}, fmt.Errorf("list entry %q is neither an address, a CIDR network nor a domain", s)
	}
	return listEntry{domain: strings.ToLower(strings.TrimSuffix(s, "."))}, nil
}

func matches(list []string, ip netip.Addr, domain string) bool {
	domain = strings.ToLower(domain)
	for _, s := range list {
		e, err := parseListEntry(s)
		if err != nil {
			continue
		}
		if e.net.IsValid() && ip.IsValid() && e.net.Contains(ip.Unmap()) {
			return true
		}
		if e.domain != "" && domain != "" && (domain == e.domain || strings.HasSuffix(domain, "."+e.domain)) {
			return true
		}
	}
	return false
}

// Allowed reports whether the client ip or the sender domain is on the allow list.
func (p *Policy) Allowed(ip netip.Addr, senderDomain string) bool {
	return matches(p.Allow, ip, senderDomain)
}

// Denied reports whether the client ip or the sender domain is on the deny list (and not
// on the allow list).
func (p *Policy) Denied(ip netip.Addr, senderDomain string) bool {
	return matches(p.Deny, ip, senderDomain) && !p.Allowed(ip, senderDomain)
}

// SignPolicy fills p's defaults for ring d, checks it and signs it with the CA key.
func SignPolicy(caKey ed25519.PrivateKey, d *Descriptor, p *Policy) ([]byte, error) {
	p.Ring = d.RingID.String()
	p.fill(d)
	if err := p.check(d); err != nil {
		return nil, err
	}
	return Sign(caKey, typePolicy, p)
}

// VerifyPolicy checks the CA's signature and that the policy fits ring d.
func VerifyPolicy(caPub ed25519.PublicKey, d *Descriptor, data []byte) (*Policy, error) {
	body, err := Open(caPub, typePolicy, data)
	if err != nil {
		return nil, fmt.Errorf("gateway policy: %w", err)
	}
	var p Policy
	if err := decodeStrict(body, &p); err != nil {
		return nil, fmt.Errorf("gateway policy: %w", err)
	}
	p.fill(d)
	if err := p.check(d); err != nil {
		return nil, err
	}
	return &p, nil
}

// LoadPolicy reads dir's policy.json, checked under the CA key; without the file it is
// DefaultPolicy(d) with ok false.
func LoadPolicy(dir string, caPub ed25519.PublicKey, d *Descriptor) (p *Policy, ok bool, err error) {
	raw, err := readSmall(filepath.Join(dir, FilePolicy))
	if errors.Is(err, os.ErrNotExist) {
		return DefaultPolicy(d), false, nil
	}
	if err != nil {
		return nil, false, err
	}
	p, err = VerifyPolicy(caPub, d, raw)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", filepath.Join(dir, FilePolicy), err)
	}
	return p, true, nil
}

// SetPolicyField sets one field from a key=value argument of `epost ring policy --set`.
func (p *Policy) SetPolicyField(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("--set %q: want key=value", kv)
	}
	k = strings.TrimSpace(k)
	list := func() []string {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	num := func() (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--set %s=%s: want a non-negative number", k, v)
		}
		return n, nil
	}
	dur := func() (Duration, error) {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			return 0, fmt.Errorf("--set %s=%s: want a duration such as 120h", k, v)
		}
		return Duration(d), nil
	}
	var err error
	var n int64
	switch k {
	case "accept_domains":
		p.AcceptDomains = list()
	case "postmaster":
		p.Postmaster = strings.TrimSpace(v)
	case "max_message_bytes":
		n, err = num()
		p.MaxMessageBytes = n
	case "max_recipients":
		n, err = num()
		p.MaxRecipients = int(n)
	case "dmarc":
		p.DMARC = strings.TrimSpace(v)
	case "spf_fail":
		p.SPFFail = strings.TrimSpace(v)
	case "allow":
		p.Allow = list()
	case "deny":
		p.Deny = list()
	case "max_conns_per_ip":
		n, err = num()
		p.MaxConnsPerIP = int(n)
	case "max_messages_per_ip_per_minute":
		n, err = num()
		p.MaxMessagesPerIPPerMinute = int(n)
	case "outbound_deadline":
		p.OutboundDeadline, err = dur()
	case "delay_warn":
		p.DelayWarn, err = dur()
	default:
		return fmt.Errorf("--set %s: unknown policy field (accept_domains, postmaster, max_message_bytes, max_recipients, dmarc, spf_fail, allow, deny, max_conns_per_ip, max_messages_per_ip_per_minute, outbound_deadline, delay_warn)", k)
	}
	return err
}
