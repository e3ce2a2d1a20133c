package mailqueue

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Summary is what a queue holds, for an operator (docs/gateway-design.md §11, issue 14 §8):
// depth and age per kind, and per destination what waits there and why.
type Summary struct {
	Kinds        map[Kind]KindSummary
	Destinations []DestSummary // most queued first, then by kind and name
}

// KindSummary is the queue's depth for one kind of entry.
type KindSummary struct {
	Entries int
	Bytes   int64     // body bytes
	Oldest  time.Time // creation time of the oldest entry (zero when none)
}

// DestSummary is one destination's share of the queue: an internet domain, or another ring.
type DestSummary struct {
	Kind Kind
	// Dest is the recipients' domain (internet) or the destination ring's id in hex
	// (federation); Domains are the recipients' domains in that ring (federation only).
	Dest    string
	Domains []string
	Queued  int // entries with recipients still pending there
	Rcpts   int // recipients pending there
	// LastError is the newest attempt's complaint about this destination: a pending
	// recipient's detail, else the attempt's error. LastAttempt is when that attempt was
	// recorded; NextAttempt the soonest retry of the destination's entries.
	LastError   string
	LastAttempt time.Time
	NextAttempt time.Time
}

// Summary summarizes the queued entries (finished ones are not counted).
func (q *Queue) Summary() Summary {
	q.mu.Lock()
	defer q.mu.Unlock()
	sum := Summary{Kinds: map[Kind]KindSummary{}}
	dests := map[[2]string]*DestSummary{}
	for _, e := range q.entries {
		ks := sum.Kinds[e.h.Kind]
		ks.Entries++
		ks.Bytes += e.h.Size
		if ks.Oldest.IsZero() || e.h.Created.Before(ks.Oldest) {
			ks.Oldest = e.h.Created
		}
		sum.Kinds[e.h.Kind] = ks
		// Per destination: this entry's pending recipients there, and the complaint about them.
		type part struct {
			rcpts   int
			detail  string
			domains []string
		}
		parts := map[string]*part{}
		var order []string
		for i, rs := range e.s.Rcpts {
			if rs.State != Pending {
				continue
			}
			dest, domain := destOf(e.h, i, rs.Addr)
			p := parts[dest]
			if p == nil {
				p = &part{}
				parts[dest] = p
				order = append(order, dest)
			}
			p.rcpts++
			if p.detail == "" {
				p.detail = rs.Detail
			}
			if domain != "" && !slices.Contains(p.domains, domain) {
				p.domains = append(p.domains, domain)
			}
		}
		for _, dest := range order {
			p := parts[dest]
			key := [2]string{string(e.h.Kind), dest}
			d := dests[key]
			if d == nil {
				d = &DestSummary{Kind: e.h.Kind, Dest: dest}
				dests[key] = d
			}
			d.Queued++
			d.Rcpts += p.rcpts
			for _, dom := range p.domains {
				if e.h.Kind == KindFederation && !slices.Contains(d.Domains, dom) {
					d.Domains = append(d.Domains, dom)
				}
			}
			if d.NextAttempt.IsZero() || e.s.Next.Before(d.NextAttempt) {
				d.NextAttempt = e.s.Next
			}
			complaint := cmp.Or(p.detail, e.s.LastError)
			if complaint != "" && (d.LastError == "" || e.s.Last.After(d.LastAttempt)) {
				d.LastError, d.LastAttempt = complaint, e.s.Last
			}
		}
	}
	for _, d := range dests {
		slices.Sort(d.Domains)
		sum.Destinations = append(sum.Destinations, *d)
	}
	slices.SortFunc(sum.Destinations, func(a, b DestSummary) int {
		return cmp.Or(cmp.Compare(b.Queued, a.Queued), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Dest, b.Dest))
	})
	return sum
}

// destOf is where the i-th recipient of an entry goes: its ring (federation) or its domain.
func destOf(h Header, i int, addr string) (dest, domain string) {
	_, domain, _ = strings.Cut(addr, "@")
	domain = strings.ToLower(domain)
	if h.Kind != KindFederation {
		return domain, domain
	}
	ring := ""
	if i < len(h.Rcpts) && h.Rcpts[i].Addr == addr {
		ring = h.Rcpts[i].Ring
	} else {
		for _, r := range h.Rcpts {
			if r.Addr == addr {
				ring = r.Ring
				break
			}
		}
	}
	return cmp.Or(ring, domain), domain
}
