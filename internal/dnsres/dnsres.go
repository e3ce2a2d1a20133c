// Package dnsres answers the DNS questions mail and federation ask (TXT for _epost records,
// SPF, DKIM and DMARC; MX and addresses for delivery) from one configured server, with the
// records' TTLs, and tells a name that does not exist (a permanent answer) from a server that
// did not answer (a temporary one). The server is a node's --resolver HOST:PORT, by default
// the first nameserver of /etc/resolv.conf; tests run a local server (package dnstest).
package dnsres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrNotFound is a permanent negative answer: the name does not exist (NXDOMAIN) or has no
// records of the type asked (NODATA).
var ErrNotFound = errors.New("dnsres: no such record")

// ErrTemporary is a failure to get an answer: a timeout, a network error, SERVFAIL or a
// refusal. The question may be asked again later.
var ErrTemporary = errors.New("dnsres: temporary failure")

// Defaults for Resolver fields left zero.
const (
	DefaultTimeout = 3 * time.Second
	DefaultTries   = 2
	resolvConf     = "/etc/resolv.conf"
)

// Resolver asks one server. The zero value asks the system's first nameserver. It is safe
// for concurrent use.
type Resolver struct {
	Server  string        // HOST:PORT; "" is the first nameserver of /etc/resolv.conf, port 53
	Timeout time.Duration // per attempt
	Tries   int           // attempts per question (UDP; a truncated answer is asked again over TCP)
}

// MX is a mail exchanger.
type MX struct {
	Host       string // without the final dot
	Preference uint16
}

func (r *Resolver) server() (string, error) {
	if r.Server != "" {
		return r.Server, nil
	}
	cfg, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil || len(cfg.Servers) == 0 {
		return "", fmt.Errorf("%w: no --resolver given and no nameserver in %s", ErrTemporary, resolvConf)
	}
	return net.JoinHostPort(cfg.Servers[0], cfg.Port), nil
}

// query asks one question and returns the answer records of type qtype, and the smallest TTL
// among them.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, time.Duration, error) {
	srv, err := r.server()
	if err != nil {
		return nil, 0, err
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(4096, false)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tries := max(r.Tries, 1)
	if r.Tries == 0 {
		tries = DefaultTries
	}
	var resp *dns.Msg
	var lastErr error
	for range tries {
		c := &dns.Client{Net: "udp", Timeout: timeout}
		resp, _, lastErr = c.ExchangeContext(ctx, q, srv)
		if lastErr == nil && resp.Truncated {
			c.Net = "tcp"
			resp, _, lastErr = c.ExchangeContext(ctx, q, srv)
		}
		if lastErr == nil || ctx.Err() != nil {
			break
		}
	}
	what := dns.TypeToString[qtype] + " " + dns.Fqdn(name)
	if lastErr != nil {
		return nil, 0, fmt.Errorf("%w: %s from %s: %v", ErrTemporary, what, srv, lastErr)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, 0, fmt.Errorf("%w: %s: no such name", ErrNotFound, what)
	default:
		return nil, 0, fmt.Errorf("%w: %s from %s: %s", ErrTemporary, what, srv, dns.RcodeToString[resp.Rcode])
	}
	// Only records of the name asked count, or of the names a CNAME chain in the answer
	// leads to from it: a server must not be able to slip in records of other names.
	names := map[string]bool{strings.ToLower(dns.Fqdn(name)): true}
	for changed := true; changed; {
		changed = false
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && names[strings.ToLower(c.Hdr.Name)] && !names[strings.ToLower(c.Target)] {
				names[strings.ToLower(c.Target)] = true
				changed = true
			}
		}
	}
	var out []dns.RR
	var ttl uint32
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != qtype || !names[strings.ToLower(rr.Header().Name)] {
			continue
		}
		if len(out) == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
		out = append(out, rr)
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("%w: %s: no records of that type", ErrNotFound, what)
	}
	return out, time.Duration(ttl) * time.Second, nil
}

// TXT returns name's TXT records, each record's strings joined (RFC 7208 §3.3), and their TTL.
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, time.Duration, error) {
	rrs, ttl, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, 0, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, ttl, nil
}

// MX returns name's mail exchangers, most preferred first, and their TTL.
func (r *Resolver) MX(ctx context.Context, name string) ([]MX, time.Duration, error) {
	rrs, ttl, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, 0, err
	}
	out := make([]MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, MX{Host: strings.TrimSuffix(mx.Mx, "."), Preference: mx.Preference})
	}
	slices.SortStableFunc(out, func(a, b MX) int { return int(a.Preference) - int(b.Preference) })
	return out, ttl, nil
}

// Addrs returns name's IPv4 and IPv6 addresses (A, then AAAA) and the smaller TTL. It fails
// with ErrNotFound only when neither type has records, and with ErrTemporary when one failed
// and the other gave nothing.
func (r *Resolver) Addrs(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	var out []netip.Addr
	var ttl time.Duration
	var firstErr error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, tl, err := r.query(ctx, name, t)
		if err != nil {
			if firstErr == nil || errors.Is(err, ErrTemporary) {
				firstErr = err
			}
			continue
		}
		if len(out) == 0 || tl < ttl {
			ttl = tl
		}
		for _, rr := range rrs {
			var ip net.IP
			switch a := rr.(type) {
			case *dns.A:
				ip = a.A
			case *dns.AAAA:
				ip = a.AAAA
			}
			if addr, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, addr.Unmap())
			}
		}
	}
	if len(out) == 0 {
		return nil, 0, firstErr
	}
	return out, ttl, nil
}
