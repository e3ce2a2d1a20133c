package daemon

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// Defaults of the peer guard (MailLimits.PeerDropAfter, PeerDropWindow, PeerCoolOff).
const (
	// DefaultPeerDropAfter refused overlay messages within DefaultPeerDropWindow drop a peer.
	// An honest member sends none (they are undecodable bytes, another ring's messages, a
	// sender that is not the connection's node); a few can come from a version skew, a hundred
	// a minute is a member gone bad.
	DefaultPeerDropAfter  = 100
	DefaultPeerDropWindow = time.Minute
	// DefaultPeerCoolOff is how long a dropped peer is refused: long enough that its garbage
	// costs the node a TLS handshake every few minutes, short enough that a member repaired by
	// its operator comes back on its own.
	DefaultPeerCoolOff = 10 * time.Minute
)

// maxGuardedPeers bounds the peers whose recent bad input is remembered; past it, those whose
// window ended are forgotten, then all (forgetting only ever spares a peer).
const maxGuardedPeers = 4096

// peerGuard decides when a ring member that keeps sending what the overlay refuses is dropped:
// after `after` refused messages (or connections closed for frames that break the wire format)
// within `window` its connections are closed and it is refused, in both directions, for
// `coolOff`. The peer is the id the transport authenticated, bound to a certificate of the
// ring CA: a member cannot get another one dropped by claiming its id (such messages count
// against the member that sent them). Safe for concurrent use.
type peerGuard struct {
	after           int // <= 0: never drop
	window, coolOff time.Duration

	mu      sync.Mutex
	bad     map[ids.ID]*badInput
	refused map[ids.ID]time.Time // dropped peers, until when
	dropped uint64               // peers dropped since start
	turned  uint64               // connections of dropped peers refused since start
}

type badInput struct {
	since time.Time // start of the current window
	count int
}

func newPeerGuard(l MailLimits) *peerGuard {
	g := &peerGuard{after: l.PeerDropAfter, window: l.PeerDropWindow, coolOff: l.PeerCoolOff,
		bad: map[ids.ID]*badInput{}, refused: map[ids.ID]time.Time{}}
	if g.after == 0 {
		g.after = DefaultPeerDropAfter
	}
	if g.window <= 0 {
		g.window = DefaultPeerDropWindow
	}
	if g.coolOff <= 0 {
		g.coolOff = DefaultPeerCoolOff
	}
	return g
}

// badInput counts one refused message (or broken connection) from id at now, and reports
// whether id is to be dropped now (once: until its cool-off ends, nothing more is counted).
func (g *peerGuard) badInput(id ids.ID, now time.Time) (drop bool) {
	if g.after <= 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if until, ok := g.refused[id]; ok && now.Before(until) {
		return false
	}
	b := g.bad[id]
	if b == nil {
		if len(g.bad) >= maxGuardedPeers {
			for k, v := range g.bad {
				if now.Sub(v.since) >= g.window {
					delete(g.bad, k)
				}
			}
			if len(g.bad) >= maxGuardedPeers {
				clear(g.bad)
			}
		}
		b = &badInput{since: now}
		g.bad[id] = b
	} else if now.Sub(b.since) >= g.window {
		*b = badInput{since: now}
	}
	b.count++
	if b.count < g.after {
		return false
	}
	delete(g.bad, id)
	g.refused[id] = now.Add(g.coolOff)
	g.dropped++
	return true
}

// refusing reports whether id is dropped and cooling off at now.
func (g *peerGuard) refusing(id ids.ID, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.refused[id]
	if ok && !now.Before(until) {
		delete(g.refused, id)
		return false
	}
	return ok
}

// turnedAway counts a connection of a dropped peer refused.
func (g *peerGuard) turnedAway() {
	g.mu.Lock()
	g.turned++
	g.mu.Unlock()
}

// DroppedPeer is a ring member refused until Until for the bad input it sent.
type DroppedPeer struct {
	ID    string    `json:"id"`
	Until time.Time `json:"until"`
}

// PeerGuardStatus is the peer guard in "epost status": peers dropped since start, connections
// they were refused, and those cooling off now.
type PeerGuardStatus struct {
	Dropped    uint64        `json:"dropped"`
	TurnedAway uint64        `json:"turned_away"`
	Refusing   []DroppedPeer `json:"refusing,omitempty"`
}

func (g *peerGuard) status(now time.Time) PeerGuardStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := PeerGuardStatus{Dropped: g.dropped, TurnedAway: g.turned}
	for id, until := range g.refused {
		if now.Before(until) {
			s.Refusing = append(s.Refusing, DroppedPeer{ID: id.String(), Until: until.UTC()})
		}
	}
	sort.Slice(s.Refusing, func(i, j int) bool { return s.Refusing[i].ID < s.Refusing[j].ID })
	return s
}

// errDropped closes a dropped peer's connections.
var errDropped = errors.New("daemon: peer dropped for bad input")

// verifyPeer wraps the ring's certificate check: a dropped peer is refused until its cool-off
// ends, whichever side dials. (TLS calls it before the peer proved its key; refusing a
// certificate of a dropped peer early costs an honest node nothing, it is that peer's.)
func (n *Node) verifyPeer(verify func(*x509.Certificate) (ids.ID, error)) func(*x509.Certificate) (ids.ID, error) {
	return func(c *x509.Certificate) (ids.ID, error) {
		id, err := verify(c)
		if err == nil && n.guard.refusing(id, time.Now()) {
			n.guard.turnedAway()
			return ids.Zero, fmt.Errorf("%w: %s sent too much bad input, refused for a while", tcp.ErrPeerBarred, id.Short())
		}
		return id, err
	}
}

// badInput counts a refused overlay message against the member that sent it, and drops the
// member when it has sent too many.
func (n *Node) badInput(from transport.From, err error) {
	if from.ID.IsZero() || !n.guard.badInput(from.ID, time.Now()) {
		return
	}
	n.log.Warn("dropped a ring member for bad input: its connections are closed and it is refused until the cool-off ends",
		"peer", from.ID.Short(), "addr", from.Addr, "bad_messages", n.guard.after, "within", n.guard.window.String(),
		"cool_off", n.guard.coolOff.String(), "last_err", err)
	n.disconnect(from.ID)
}

func (n *Node) disconnect(id ids.ID) {
	n.mu.Lock()
	tr := n.tr
	n.mu.Unlock()
	if tr != nil {
		tr.Disconnect(id, errDropped)
	}
}
