// Package multiring is federation (DESIGN.md layer 11): rings admitted to the global ring, the
// directory from mail domains to rings, and the gateways that carry mail between rings. See
// docs/gateway-design.md.
package multiring

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"epost/internal/dnsres"
	"epost/internal/ids"
	"epost/internal/ring"
)

// Admission: there is no authority over the global ring. Every member decides for itself
// whether another ring may take part, from what that ring shows (its bundle, checked by
// ring.VerifyBundle) and what DNS says about it: each mail domain D the ring's CA-signed
// descriptor claims must publish _epost.D TXT "v=epost1; ring=<its id>" (the id is the CA
// key's, so the record names the one CA that speaks for D), or be listed for that ring in the
// trust file of a closed federation. A ring claiming a domain nobody confirms is refused, with
// the reason; decisions are kept for the records' TTL (at least MinTTL, at most MaxTTL) and a
// temporary DNS failure is kept for RetryAfter only.

// TXTResolver is the DNS question admission asks; *dnsres.Resolver answers it.
type TXTResolver interface {
	TXT(ctx context.Context, name string) ([]string, time.Duration, error)
}

// Defaults of the Admission fields left zero.
const (
	DefaultMinTTL     = 5 * time.Minute
	DefaultMaxTTL     = time.Hour
	DefaultRetryAfter = time.Minute
)

// TrustedRing is a ring a closed federation's trust file lists with its domains.
type TrustedRing struct {
	Name    string
	RingID  ids.RingID
	Domains []string
}

// Decision is admission's answer about one ring.
type Decision struct {
	Ring     ids.RingID
	Name     string
	Admitted bool
	// Temporary: refused because DNS did not answer; asked again after RetryAfter.
	Temporary bool
	// Reason says why a ring was refused ("" when admitted), for both sides' logs.
	Reason string
	// Confirmed says how each domain was confirmed ("dns" or "trust file"), when admitted.
	Confirmed map[string]string
	Until     time.Time // when the decision is made again
}

func (d Decision) String() string {
	if d.Admitted {
		return fmt.Sprintf("ring %s (%s) admitted until %s", d.Ring.Short(), d.Name, d.Until.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("ring %s (%s) refused: %s", d.Ring.Short(), d.Name, d.Reason)
}

// Admission decides which rings the global ring admits, and remembers its decisions. It is
// safe for concurrent use.
type Admission struct {
	Resolver   TXTResolver
	Trusted    []TrustedRing // a closed federation's trust file; nil: DNS alone
	Now        func() time.Time
	MinTTL     time.Duration
	MaxTTL     time.Duration
	RetryAfter time.Duration

	mu    sync.Mutex
	cache map[ids.RingID]Decision
}

// Check decides about the ring f (a verified bundle), from the cache while its decision holds.
func (a *Admission) Check(ctx context.Context, f *ring.Foreign) Decision {
	now := a.now()
	id := f.Descriptor.RingID
	a.mu.Lock()
	if d, ok := a.cache[id]; ok && now.Before(d.Until) {
		a.mu.Unlock()
		return d
	}
	a.mu.Unlock()
	d := a.decide(ctx, f, now)
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[ids.RingID]Decision{}
	}
	a.cache[id] = d
	a.mu.Unlock()
	return d
}

// Forget drops the decision about id (a ring whose bundle changed).
func (a *Admission) Forget(id ids.RingID) {
	a.mu.Lock()
	delete(a.cache, id)
	a.mu.Unlock()
}

func (a *Admission) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func orDefault(v, d time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return d
}

func (a *Admission) decide(ctx context.Context, f *ring.Foreign, now time.Time) Decision {
	desc := f.Descriptor
	d := Decision{Ring: desc.RingID, Name: desc.Name}
	minTTL, maxTTL := orDefault(a.MinTTL, DefaultMinTTL), orDefault(a.MaxTTL, DefaultMaxTTL)
	refuse := func(temporary bool, format string, args ...any) Decision {
		d.Reason = fmt.Sprintf(format, args...)
		d.Temporary = temporary
		if temporary {
			d.Until = now.Add(orDefault(a.RetryAfter, DefaultRetryAfter))
		} else {
			d.Until = now.Add(minTTL)
		}
		return d
	}
	ttl := maxTTL
	d.Confirmed = map[string]string{}
	for _, dom := range desc.Domains {
		if a.trusted(desc.RingID, dom) {
			d.Confirmed[dom] = "trust file"
			continue
		}
		txts, t, err := a.Resolver.TXT(ctx, strings.TrimSuffix(ring.DNSName(dom), "."))
		if errors.Is(err, dnsres.ErrNotFound) {
			return refuse(false, "domain %s: no _epost TXT record in DNS and not in the trust file", dom)
		}
		if err != nil {
			return refuse(true, "domain %s: DNS did not answer (%v); asking again later", dom, err)
		}
		named, err := ring.ParseDNSRecords(txts)
		switch {
		case errors.Is(err, ring.ErrNoDNSRecord):
			return refuse(false, "domain %s: no v=epost1 TXT record at %s", dom, ring.DNSName(dom))
		case err != nil:
			return refuse(false, "domain %s: %v", dom, err)
		case named != desc.RingID:
			return refuse(false, "domain %s: its _epost TXT record names ring %s, not %s", dom, named.Short(), desc.RingID.Short())
		}
		d.Confirmed[dom] = "dns"
		ttl = min(ttl, t)
	}
	d.Admitted = true
	d.Until = now.Add(max(ttl, minTTL))
	return d
}

func (a *Admission) trusted(id ids.RingID, domain string) bool {
	for _, r := range a.Trusted {
		if r.RingID != id {
			continue
		}
		for _, x := range r.Domains {
			if strings.EqualFold(x, domain) {
				return true
			}
		}
	}
	return false
}
