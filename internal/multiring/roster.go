package multiring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/scribe"
	"epost/internal/wire"
)

// Receipts and rosters (as `epost sim federation` first had them, BENCHMARKS.md). A gateway
// acknowledges every question and hand-off the moment it takes it, so an asker that hears
// nothing for ReceiptTimeout (1 s) takes that gateway for dead and asks another at once,
// rather than after the question's own timeout (10 s at a node, 5 s per directory question,
// 30 s per relay). Receipts and answers carry the roster of the answering gateway's ring: the
// gateways of that ring it heard a beacon from lately (Scribe multicast on the ring's group
// "gateways"). The asker picks its next gateway from that roster, so it need not wait for the
// Scribe tree to forget a dead member. A roster is a hint, never proof: a gateway picked from
// it is reached over the authenticated transport (which dials only the node id named), and
// its receipt and answer count only when the role table (the gateway role in its ring
// certificate, or in the global ring the ring its chain proved) says it is a gateway of that
// ring.

const (
	// DefaultReceiptTimeout is how long an asker waits for a gateway's receipt.
	DefaultReceiptTimeout = time.Second
	// BeaconInterval is how often a gateway tells its ring's other gateways it is alive.
	BeaconInterval = 5 * time.Second

	beaconLive  = 3*BeaconInterval + time.Second // a gateway whose beacon is older is left out of rosters
	rosterTTL   = time.Minute                    // a roster heard is used this long
	memberTTL   = time.Minute                    // so is a member the group gave (§6)
	excludeFor  = 2 * time.Minute                // a gateway that stayed silent is avoided this long
	maxRoster   = 64
	maxAttempts = 3 // gateways asked per question before the asker hears of the failure
)

// RosterEntry is one gateway of a ring: its node id and its addresses in its ring and in the
// global ring ("" when it runs none).
type RosterEntry struct {
	ID         ids.ID
	RingAddr   string
	GlobalAddr string
}

func writeRoster(w *wire.Writer, rs []RosterEntry) {
	if len(rs) > maxRoster {
		rs = rs[:maxRoster]
	}
	w.Uvarint(uint64(len(rs)))
	for _, r := range rs {
		w.ID(r.ID)
		w.String(r.RingAddr)
		w.String(r.GlobalAddr)
	}
}

func readRoster(r *wire.Reader) []RosterEntry {
	n := r.Count(maxRoster, ids.Bytes+2, "roster")
	out := make([]RosterEntry, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, RosterEntry{ID: r.ID(), RingAddr: r.String(256, "address"), GlobalAddr: r.String(256, "address")})
	}
	return out
}

// readRosterTail reads the roster that ends a message, if there is one (an empty tail is an
// empty roster).
func readRosterTail(r *wire.Reader) []RosterEntry {
	if r.Err() != nil || len(r.B) == 0 {
		return nil
	}
	return readRoster(r)
}

// Beacons is a gateway's view of its ring's gateways: itself, and those whose beacon it heard
// within the last three intervals. Safe for concurrent use.
type Beacons struct {
	mu    sync.Mutex
	self  RosterEntry
	heard map[ids.ID]heardBeacon
	now   func() time.Time
}

type heardBeacon struct {
	e  RosterEntry
	at time.Time
}

// NewBeacons makes the view; now is the clock (time.Now when nil).
func NewBeacons(now func() time.Time) *Beacons {
	if now == nil {
		now = time.Now
	}
	return &Beacons{heard: map[ids.ID]heardBeacon{}, now: now}
}

// SetSelf names this gateway (its addresses may change while it runs).
func (b *Beacons) SetSelf(e RosterEntry) {
	b.mu.Lock()
	b.self = e
	b.mu.Unlock()
}

// Self is this gateway's entry.
func (b *Beacons) Self() RosterEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.self
}

// Heard notes another gateway's beacon.
func (b *Beacons) Heard(e RosterEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.ID == b.self.ID || e.ID.IsZero() {
		return
	}
	b.heard[e.ID] = heardBeacon{e: e, at: b.now()}
}

// Roster is this gateway first, then the others heard lately, by id.
func (b *Beacons) Roster() []RosterEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var out []RosterEntry
	if !b.self.ID.IsZero() {
		out = append(out, b.self)
	}
	start := len(out)
	for id, h := range b.heard {
		if now.Sub(h.at) >= beaconLive {
			delete(b.heard, id)
			continue
		}
		out = append(out, h.e)
	}
	slices.SortFunc(out[start:], func(x, y RosterEntry) int { return ids.Cmp(x.ID, y.ID) })
	return out
}

func encodeBeacon(e RosterEntry) []byte {
	var w wire.Writer
	writeRoster(&w, []RosterEntry{e})
	return w.B
}

func decodeBeacon(b []byte) (RosterEntry, bool) {
	r := wire.NewReader(b)
	rs := readRoster(r)
	if r.Done() != nil || len(rs) != 1 {
		return RosterEntry{}, false
	}
	return rs[0], true
}

// gatewayChoice is how an asker picks a gateway of one ring: at random among the last roster
// it heard (minus the gateways it excluded), preferring those the role table already
// vouches for; else the member the ring's gateway group gave lately; else a new anycast to
// the group (§6: a member that fails the check, or is excluded, is skipped and the anycast
// repeated, at most 3 times). Safe for concurrent use.
type gatewayChoice struct {
	global bool // handles are global-ring addresses (another ring's gateways)

	mu          sync.Mutex
	roster      []RosterEntry
	rosterAt    time.Time
	member      pastry.Handle
	memberUntil time.Time
	excluded    map[ids.ID]time.Time
}

func (c *gatewayChoice) handle(e RosterEntry) pastry.Handle {
	if c.global {
		return pastry.Handle{ID: e.ID, Addr: e.GlobalAddr}
	}
	return pastry.Handle{ID: e.ID, Addr: e.RingAddr}
}

func (c *gatewayChoice) isExcludedLocked(id ids.ID, now time.Time) bool {
	until, ok := c.excluded[id]
	if ok && !now.Before(until) {
		delete(c.excluded, id)
		return false
	}
	return ok
}

// exclude avoids a gateway that stayed silent for a while.
func (c *gatewayChoice) exclude(id ids.ID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.excluded == nil {
		c.excluded = map[ids.ID]time.Time{}
	}
	c.excluded[id] = now.Add(excludeFor)
	if c.member.ID == id {
		c.member = pastry.Handle{}
	}
}

// learn keeps the roster a gateway of the ring sent (an empty one changes nothing).
func (c *gatewayChoice) learn(rs []RosterEntry, now time.Time) {
	var usable []RosterEntry
	for _, e := range rs {
		if !e.ID.IsZero() && c.handle(e).Addr != "" {
			usable = append(usable, e)
		}
	}
	if len(usable) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roster, c.rosterAt = usable, now
}

// vouch clears a gateway's exclusion: it just acknowledged or answered.
func (c *gatewayChoice) vouch(id ids.ID) {
	c.mu.Lock()
	delete(c.excluded, id)
	c.mu.Unlock()
}

// pick finds a gateway not in avoid (those already asked this question): valid says whether
// the role table vouches for a node, anycast asks the ring's gateway group. Gateways excluded
// lately are the last resort, not banned: a ring whose only gateway missed one receipt must
// not lose it for minutes.
func (c *gatewayChoice) pick(clock func() time.Time, avoid map[ids.ID]bool, valid func(ids.ID) bool, anycast func(func(scribe.AnycastResult)) error, cb func(pastry.Handle, error)) {
	now := clock()
	c.mu.Lock()
	if now.Before(c.rosterAt.Add(rosterTTL)) {
		var vouched, hinted []RosterEntry
		for _, e := range c.roster {
			switch {
			case avoid[e.ID] || c.isExcludedLocked(e.ID, now):
			case valid(e.ID):
				vouched = append(vouched, e)
			default:
				hinted = append(hinted, e)
			}
		}
		if len(vouched) == 0 {
			vouched = hinted
		}
		if len(vouched) > 0 {
			h := c.handle(vouched[rand.IntN(len(vouched))])
			c.mu.Unlock()
			cb(h, nil)
			return
		}
	}
	if m := c.member; !m.ID.IsZero() && now.Before(c.memberUntil) && !avoid[m.ID] && !c.isExcludedLocked(m.ID, now) {
		c.mu.Unlock()
		cb(m, nil)
		return
	}
	c.mu.Unlock()
	c.anycast(clock, avoid, valid, anycast, 3, cb)
}

func (c *gatewayChoice) anycast(clock func() time.Time, avoid map[ids.ID]bool, valid func(ids.ID) bool, anycast func(func(scribe.AnycastResult)) error, tries int, cb func(pastry.Handle, error)) {
	err := anycast(func(res scribe.AnycastResult) {
		if res.Err != nil {
			cb(pastry.Handle{}, fmt.Errorf("%w: no gateway of the ring answered: %v", ErrRemoteUnavailable, res.Err))
			return
		}
		now := clock()
		c.mu.Lock()
		excluded := c.isExcludedLocked(res.Member.ID, now)
		c.mu.Unlock()
		switch {
		case !valid(res.Member.ID) || avoid[res.Member.ID] || excluded && tries > 1:
			if tries > 1 {
				c.anycast(clock, avoid, valid, anycast, tries-1, cb)
				return
			}
			if avoid[res.Member.ID] {
				cb(pastry.Handle{}, fmt.Errorf("%w: the gateway group gave only gateways already asked", ErrRemoteUnavailable))
				return
			}
			cb(pastry.Handle{}, fmt.Errorf("%w: node %s answered for the gateways but is not one", ErrRemoteUnavailable, res.Member.ID.Short()))
		default:
			c.mu.Lock()
			c.member, c.memberUntil = res.Member, now.Add(memberTTL)
			c.mu.Unlock()
			cb(res.Member, nil)
		}
	})
	if err != nil {
		cb(pastry.Handle{}, fmt.Errorf("%w: %v", ErrRemoteUnavailable, err))
	}
}

// choices are an asker's gatewayChoice per ring.
type choices struct {
	global bool
	mu     sync.Mutex
	m      map[ids.RingID]*gatewayChoice
}

func (cs *choices) of(r ids.RingID) *gatewayChoice {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = map[ids.RingID]*gatewayChoice{}
	}
	c := cs.m[r]
	if c == nil {
		c = &gatewayChoice{global: cs.global}
		cs.m[r] = c
	}
	return c
}

// RemoteGateways is a gateway's choice of other rings' gateways, shared by its Directory and
// Relay (what one learns, the other uses).
type RemoteGateways struct{ cs choices }

// NewRemoteGateways makes an empty choice.
func NewRemoteGateways() *RemoteGateways { return &RemoteGateways{cs: choices{global: true}} }
