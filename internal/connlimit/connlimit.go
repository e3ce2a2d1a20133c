// Package connlimit bounds the connections a server holds from one client address: a client
// (or a guesser) cannot take every slot of a node's IMAP, SMTP or POP3 server and lock its user
// out. The servers keep their total bound as well; this is the per-address one.
package connlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// PerAddr counts open connections per remote IP address. The zero value is unusable; use New.
// Safe for concurrent use.
type PerAddr struct {
	max     int
	mu      sync.Mutex
	open    map[netip.Addr]int
	refused atomic.Uint64
}

// New returns a limiter of max connections per address; max <= 0 means no bound.
func New(max int) *PerAddr { return &PerAddr{max: max, open: map[netip.Addr]int{}} }

// Max is the bound (0: none).
func (l *PerAddr) Max() int { return max(l.max, 0) }

// Acquire takes a slot for a connection from remote; ok is false when its address already has
// Max open (the caller refuses the connection). release gives the slot back; call it once.
func (l *PerAddr) Acquire(remote net.Addr) (release func(), ok bool) {
	if l == nil || l.max <= 0 {
		return func() {}, true
	}
	a := AddrOf(remote)
	if !a.IsValid() {
		return func() {}, true
	}
	l.mu.Lock()
	if l.open[a] >= l.max {
		l.mu.Unlock()
		l.refused.Add(1)
		return nil, false
	}
	l.open[a]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if l.open[a]--; l.open[a] <= 0 {
				delete(l.open, a)
			}
			l.mu.Unlock()
		})
	}, true
}

// Refused is how many connections were refused for their address's bound.
func (l *PerAddr) Refused() uint64 {
	if l == nil {
		return 0
	}
	return l.refused.Load()
}

// AddrOf is the IP address of a connection's remote end (invalid when it has none), IPv4
// addresses mapped into IPv6 unmapped.
func AddrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

// Stats are a server's connection counters: open now, and refused for the server's total bound
// and for the per-address bound (the same for IMAP, SMTP and POP3).
type Stats struct {
	Open          int64  `json:"open"`
	RefusedTotal  uint64 `json:"refused_total"`
	RefusedByAddr uint64 `json:"refused_by_address"`
}
