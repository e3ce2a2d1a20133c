// Package pastry is the Pastry overlay as a state machine: messages and clock ticks go in,
// messages to send and application events come out. It never opens a socket, reads the clock
// or starts a goroutine, so the deterministic simulator and the real TLS network drive the
// same code (see Driver).
//
// Contract for drivers: feed received frames to Step and call Tick periodically (a few times a
// second), always with the current time; after each call, send every Outgoing returned by
// TakeOutbox in order and dispatch every Event returned by TakeEvents. A Node is not safe for
// concurrent use.
package pastry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// ErrWrongRing and ErrSpoofed reject messages that do not belong to this node's ring or whose
// claimed sender differs from the transport-authenticated one.
var (
	ErrWrongRing = errors.New("pastry: message for another ring")
	ErrSpoofed   = errors.New("pastry: sender id differs from the authenticated peer")
	ErrNotReady  = errors.New("pastry: node has not joined yet")
)

// Config holds the protocol parameters. Zero fields take the defaults of DefaultConfig.
type Config struct {
	Ring        ids.RingID
	LeafSetSize int // L: L/2 members on each side

	ProbeInterval  time.Duration // a leaf member not heard from for this long is probed
	ProbeTimeout   time.Duration // first probe timeout; doubles on each retry
	ProbeRetries   int           // direct probes before a member is declared dead
	IndirectProbes int           // leaf members asked to probe a suspect for us

	TableProbeInterval time.Duration // a routing-table entry not heard from for this long is probed

	HopTimeout  time.Duration // wait for a hop acknowledgement when the RTT is unknown
	MaxReroutes int           // attempts to route around failed next hops

	JoinTimeout     time.Duration // retry the join after this long without a reply
	TableInterval   time.Duration // periodic routing-table maintenance
	HealInterval    time.Duration // periodic re-join through bootstrap and once-dead nodes
	DeadRetention   time.Duration // how long a dead node is remembered for healing
	MaxDeadRemember int

	// JoinRequestEvery is how often one sender may have its join (or heal) request routed by
	// this node, after a burst of JoinRequestBurst; a joiner retries every JoinTimeout. Routed
	// join and heal messages handed on by one sender are limited to JoinForwardBurst at once
	// and one per JoinRequestEvery/JoinForwardRate after that (they are many joiners' joins).
	// Default: JoinTimeout/2, 4, 64 and 16. Refused ones are counted in Stats.RateLimited.
	JoinRequestEvery time.Duration
	JoinRequestBurst int
	JoinForwardBurst int
	JoinForwardRate  int

	// RouteEvery is how often one sender may have an application message it originated (a
	// lookup, an insert) routed by this node, after a burst of RouteBurst; messages it hands on
	// for others get 16 times the burst and the rate. Over the limit a message is acknowledged
	// and dropped (the application's retry comes later), and counted in Stats.RateLimited.
	// Default: 1ms (a thousand a second) and 1000; both far above what an honest node sends.
	RouteEvery time.Duration
	RouteBurst int
}

// DefaultConfig returns the parameters ePOST shipped with, adjusted where measurement said so.
func DefaultConfig() Config {
	return Config{
		LeafSetSize:        24,
		ProbeInterval:      20 * time.Second,
		ProbeTimeout:       800 * time.Millisecond,
		ProbeRetries:       3,
		IndirectProbes:     3,
		TableProbeInterval: 90 * time.Second,
		HopTimeout:         time.Second,
		MaxReroutes:        10,
		JoinTimeout:        5 * time.Second,
		TableInterval:      15 * time.Minute,
		HealInterval:       5 * time.Minute,
		DeadRetention:      24 * time.Hour,
		MaxDeadRemember:    64,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.LeafSetSize <= 0 {
		c.LeafSetSize = d.LeafSetSize
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	if c.ProbeRetries <= 0 {
		c.ProbeRetries = d.ProbeRetries
	}
	if c.IndirectProbes < 0 {
		c.IndirectProbes = 0
	} else if c.IndirectProbes == 0 {
		c.IndirectProbes = d.IndirectProbes
	}
	if c.TableProbeInterval <= 0 {
		c.TableProbeInterval = d.TableProbeInterval
	}
	if c.HopTimeout <= 0 {
		c.HopTimeout = d.HopTimeout
	}
	if c.MaxReroutes <= 0 {
		c.MaxReroutes = d.MaxReroutes
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = d.JoinTimeout
	}
	if c.TableInterval <= 0 {
		c.TableInterval = d.TableInterval
	}
	if c.HealInterval <= 0 {
		c.HealInterval = d.HealInterval
	}
	if c.DeadRetention <= 0 {
		c.DeadRetention = d.DeadRetention
	}
	if c.MaxDeadRemember <= 0 {
		c.MaxDeadRemember = d.MaxDeadRemember
	}
	if c.JoinRequestEvery <= 0 {
		c.JoinRequestEvery = c.JoinTimeout / 2
	}
	if c.JoinRequestBurst <= 0 {
		c.JoinRequestBurst = 4
	}
	if c.JoinForwardBurst <= 0 {
		c.JoinForwardBurst = 64
	}
	if c.JoinForwardRate <= 0 {
		c.JoinForwardRate = 16
	}
	if c.RouteEvery <= 0 {
		c.RouteEvery = time.Millisecond
	}
	if c.RouteBurst <= 0 {
		c.RouteBurst = 1000
	}
}

// Forwarder is the application's Forward upcall: called on every node a routed message passes
// through (not at its destination) with the next hop chosen. It may return a modified payload,
// or false to drop the message. It runs inside Step and must not call back into the Node.
type Forwarder func(key ids.ID, payload []byte, next Handle) ([]byte, bool)

// EventKind says what an Event reports.
type EventKind uint8

// Events handed to the application by TakeEvents.
const (
	EventDeliver        EventKind = iota + 1 // a routed message arrived at its destination
	EventDirect                              // a direct message arrived
	EventLeafSetChanged                      // the leaf set changed
	EventReady                               // the node finished joining
	EventNodeFailed                          // a node was declared dead (Origin)
)

// Event is an application upcall, queued by the node and dispatched by the driver.
type Event struct {
	Kind    EventKind
	Key     ids.ID // EventDeliver: the key routed to
	Payload []byte
	Origin  Handle // EventDeliver: the node that routed it; EventDirect: the sender
	Hops    int
}

// Outgoing is a frame the driver must send.
type Outgoing struct {
	To    Handle
	Frame []byte
	// Tail, if not nil, is the frame's end: the frame is Frame followed by Tail. It is the
	// message's payload, not copied behind the header (see transport.PartsSender).
	Tail []byte
	Type string // message type, for statistics
}

// Stats are counters for measurement. Dropped counts every routed message given up here;
// HopLimited counts those of them dropped for reaching MaxHops (a routing loop somewhere).
// Unverified counts handles learned second-hand and dropped unprobed because too many were
// being verified (see considerCandidates): a peer gossiping forged handles. RateLimited counts
// join and heal requests, routed joins and heals, and routed application messages refused by
// the per-sender limits (Config.JoinRequestEvery, Config.RouteEvery): a peer flooding the
// ring with joins or lookups.
type Stats struct {
	Sent, Received, SentBytes, Rejected uint64
	Rerouted, Dropped                   uint64
	HopLimited                          uint64
	Unverified                          uint64
	RateLimited                         uint64
}

// HopLimitDrop describes the last routed message dropped at MaxHops, for the log.
type HopLimitDrop struct {
	Key    ids.ID
	Origin Handle // the node that routed it
	From   Handle // the node that handed it to us
	Kind   uint8  // route kind (application, join, heal)
}

type pendingHop struct {
	m        *message
	next     ids.ID
	deadline time.Time
	tries    int
}

type deadNode struct {
	h  Handle
	at time.Time
}

type joinPhase uint8

const (
	phaseIdle      joinPhase = iota // not started
	phaseJoining                    // join request sent, waiting for the leaf set
	phaseAnnounced                  // announced, waiting for leaf members to confirm
	phaseReady
	phaseLeft // Leave was called: the node is gone (see leave.go)
)

// Node is one Pastry node's protocol state.
type Node struct {
	cfg     Config
	self    Handle
	rng     *rand.Rand
	forward Forwarder
	now     time.Time

	leaf  *LeafSet
	table *RoutingTable
	peers map[ids.ID]*peer // liveness of leaf members and suspects

	phase       joinPhase
	bootstrap   []string
	joinTries   int
	joinAt      time.Time // when the current join attempt times out
	awaitingAck map[ids.ID]bool
	buffered    []*message // deliveries held until ready

	leafVer      uint64
	leafCheckAt  time.Time // next examination of leaf members' probe timers
	tableCheckAt time.Time // next examination of routing-table entries' liveness
	dead         deadList
	pending      map[uint64]*pendingHop
	pendingQ     []uint64            // pending keys in send order, so timeouts are handled deterministically
	suspects     []ids.ID            // suspected nodes outside the leaf set, in suspicion order
	nSuspected   int                 // peers whose suspected flag is set
	joining      map[ids.ID]struct{} // nodes heard from that have not finished joining
	seq          uint64
	nextRT       time.Time
	nextHeal     time.Time
	indirect     []indirectReq        // indirect probes we run for others
	measured     map[ids.ID]time.Time // candidates probed for RTT, to contest a table slot once
	verifying    map[ids.ID]time.Time // second-hand handles probed before they are added
	filled       map[ids.ID]struct{}  // leaf members a leaver named (refill) not heard from yet
	joinLimit    senderLimit          // join and heal requests per sender
	forwardLimit senderLimit          // routed joins and heals per sender (the previous hop)
	routeLimit   senderLimit          // routed application messages a sender originated
	relayLimit   senderLimit          // routed application messages a sender hands on

	out    []Outgoing
	events []Event
	stats  Stats
	// lastHopLimit is the last message dropped at MaxHops (see Stats.HopLimited).
	lastHopLimit HopLimitDrop
	buf          []byte
}

type indirectReq struct {
	seq       uint64
	requester Handle
	target    ids.ID
	deadline  time.Time
	probeSeq  uint64
}

// NewNode makes a node that has not joined yet. rng must be seeded by the caller.
func NewNode(cfg Config, self Handle, rng *rand.Rand, forward Forwarder) *Node {
	cfg.fill()
	return &Node{
		cfg:         cfg,
		self:        self,
		rng:         rng,
		forward:     forward,
		leaf:        NewLeafSet(self.ID, cfg.LeafSetSize),
		table:       NewRoutingTable(self.ID),
		peers:       make(map[ids.ID]*peer),
		awaitingAck: make(map[ids.ID]bool),
		dead:        deadList{byID: make(map[ids.ID]int)},
		pending:     make(map[uint64]*pendingHop),
		measured:    make(map[ids.ID]time.Time),
		verifying:   make(map[ids.ID]time.Time),
		filled:      make(map[ids.ID]struct{}),
		joining:     make(map[ids.ID]struct{}),
		joinLimit:   newSenderLimit(cfg.JoinRequestEvery, cfg.JoinRequestBurst),
		// A forwarder hands on many joiners' joins: a larger burst, a higher rate.
		forwardLimit: newSenderLimit(cfg.JoinRequestEvery/time.Duration(cfg.JoinForwardRate), cfg.JoinForwardBurst),
		routeLimit:   newSenderLimit(cfg.RouteEvery, cfg.RouteBurst),
		relayLimit:   newSenderLimit(cfg.RouteEvery/relayRate, relayRate*cfg.RouteBurst),
	}
}

// Self is this node's handle.
func (n *Node) Self() Handle { return n.self }

// Ready reports whether the node has joined and its leaf set has confirmed it.
func (n *Node) Ready() bool { return n.phase == phaseReady }

// LeafSet exposes the leaf set (read only).
func (n *Node) LeafSet() *LeafSet { return n.leaf }

// Table exposes the routing table (read only).
func (n *Node) Table() *RoutingTable { return n.table }

// Stats returns the counters.
func (n *Node) Stats() Stats { return n.stats }

// LastHopLimitDrop describes the last routed message dropped at MaxHops; it is zero if none was.
func (n *Node) LastHopLimitDrop() HopLimitDrop { return n.lastHopLimit }

// TakeOutbox returns the frames to send and empties the outbox.
func (n *Node) TakeOutbox() []Outgoing {
	o := n.out
	n.out = nil
	return o
}

// TakeEvents returns the pending application events and empties the queue.
func (n *Node) TakeEvents() []Event {
	e := n.events
	n.events = nil
	return e
}

// Start begins the join through the bootstrap addresses, or forms a new ring if there are none.
func (n *Node) Start(now time.Time, bootstrap []string) {
	n.now = now
	n.bootstrap = bootstrap
	n.nextRT = now.Add(jitter(n.rng, n.cfg.TableInterval))
	n.nextHeal = now.Add(jitter(n.rng, n.cfg.HealInterval))
	if len(bootstrap) == 0 {
		n.becomeReady()
		return
	}
	n.phase = phaseJoining
	n.sendJoinRequest()
}

func (n *Node) sendJoinRequest() {
	addr := n.bootstrap[n.joinTries%len(n.bootstrap)]
	n.joinTries++
	n.joinAt = n.now.Add(n.cfg.JoinTimeout)
	n.send(Handle{Addr: addr}, &message{Type: mJoinRequest})
}

// FoundAlone makes a node whose join has not completed ready on its own, as the founder of a
// ring of one, keeping its bootstrap list for the periodic heal (which merges it with any ring
// those nodes are in). It is for a whole ring restarting where every node waits to join through
// another one; the caller decides who founds (one node only, say the lowest id among those that
// answer). It reports whether the node changed phase.
func (n *Node) FoundAlone(now time.Time) bool {
	if n.phase != phaseJoining {
		return false
	}
	n.now = now
	n.becomeReady()
	// Heal soon: another node may have founded the ring too, or the ring may be up after all.
	n.nextHeal = now.Add(2 * n.cfg.JoinTimeout)
	return true
}

func (n *Node) becomeReady() {
	if n.phase == phaseReady {
		return
	}
	n.phase = phaseReady
	n.events = append(n.events, Event{Kind: EventReady})
	// Tell the leaf set at once that deliveries may come here now (every message carries
	// the ready flag; a probe is the smallest).
	n.eachLeaf(func(h Handle) { n.probe(h, false) })
	held := n.buffered
	n.buffered = nil
	for _, m := range held {
		n.routeMsg(m)
	}
}

func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(r.Int64N(int64(d)))
}

// send encodes m and queues it for h.
func (n *Node) send(h Handle, m *message) {
	m.Ring = n.cfg.Ring
	m.From = n.self
	m.Ready = n.phase == phaseReady
	m.Gone = n.phase == phaseLeft
	head, tail := m.encodeParts(make([]byte, 0, 96+len(m.Handles)*48))
	n.stats.Sent++
	n.stats.SentBytes += uint64(len(head) + len(tail))
	n.out = append(n.out, Outgoing{To: h, Frame: head, Tail: tail, Type: m.Type.String()})
}

// Route sends payload towards the live node numerically closest to key. A node that left
// routes nothing.
func (n *Node) Route(now time.Time, key ids.ID, payload []byte) {
	n.now = now
	if n.phase == phaseLeft {
		n.stats.Dropped++
		return
	}
	n.seq++
	n.routeMsg(&message{Type: mRoute, Seq: n.seq, Key: key, Origin: n.self, Kind: kindApp, Payload: payload})
}

// RouteParts is Route of the payload head followed by tail, without joining them: the frame
// goes to the transport in two parts (transport.PartsSender), so a large tail (a Glacier
// fragment) is not copied behind a small head. Delivered here, the parts are joined. At this
// node, the Forward upcall sees the head only and must return it unchanged (an application
// routing in parts has nothing to rewrite at its own node); at later hops it sees the whole
// payload, as for Route. A head must carry the application's tag (appmux).
func (n *Node) RouteParts(now time.Time, key ids.ID, head, tail []byte) {
	n.now = now
	if n.phase == phaseLeft {
		n.stats.Dropped++
		return
	}
	n.seq++
	n.routeMsg(&message{Type: mRoute, Seq: n.seq, Key: key, Origin: n.self, Kind: kindApp, Payload: head, PayloadTail: tail})
}

// Send delivers payload to one node directly (EventDirect there). A node that left may still
// send, for its applications' hand-over.
func (n *Node) Send(now time.Time, to Handle, payload []byte) {
	n.now = now
	n.send(to, &message{Type: mDirect, Payload: payload})
}

// SendParts is Send of the payload head followed by tail, without joining them (see
// RouteParts).
func (n *Node) SendParts(now time.Time, to Handle, head, tail []byte) {
	n.now = now
	n.send(to, &message{Type: mDirect, Payload: head, PayloadTail: tail})
}

// Step processes one received frame.
func (n *Node) Step(now time.Time, from transport.From, frame []byte) error {
	n.now = now
	m, err := decodeMessage(frame)
	if err != nil {
		n.stats.Rejected++
		return err
	}
	if m.Ring != n.cfg.Ring {
		n.stats.Rejected++
		return fmt.Errorf("%w: %s from %s", ErrWrongRing, m.Ring.Short(), m.From)
	}
	if !from.ID.IsZero() && from.ID != m.From.ID {
		n.stats.Rejected++
		return fmt.Errorf("%w: claims %s, is %s", ErrSpoofed, m.From.ID.Short(), from.ID.Short())
	}
	if m.From.ID == n.self.ID || m.From.ID.IsZero() {
		n.stats.Rejected++
		return fmt.Errorf("pastry: message claims our own or an empty id")
	}
	if from.Addr != "" && m.From.Addr == "" {
		m.From.Addr = from.Addr
	}
	n.stats.Received++
	if n.phase == phaseLeft {
		n.stepLeft(m)
		return nil
	}
	if m.Gone || m.Type == mLeave {
		return n.stepGone(from, m)
	}
	n.heard(m.From, m.Ready)
	switch m.Type {
	case mJoinRequest:
		if n.phase == phaseReady && !n.joinLimit.allow(m.From.ID, now) {
			n.stats.RateLimited++
			return nil
		}
		n.onJoinRequest(m)
	case mRoute:
		n.send(m.From, &message{Type: mHopAck, Seq: m.Seq})
		if !n.allowRoute(m, now) {
			// Acknowledged all the same, as at the hop limit.
			n.stats.RateLimited++
			return nil
		}
		if m.Hops >= MaxHops {
			// Acknowledged all the same: the sender must not take us for dead and re-route.
			n.stats.Dropped++
			n.stats.HopLimited++
			n.lastHopLimit = HopLimitDrop{Key: m.Key, Origin: m.Origin, From: m.From, Kind: m.Kind}
			return nil
		}
		m.Hops++
		n.seq++
		m.Seq = n.seq
		n.routeMsg(m)
	case mHopAck:
		if p, ok := n.pending[m.Seq]; ok && p.next == m.From.ID {
			delete(n.pending, m.Seq)
		}
	case mJoinRows:
		n.considerCandidates(m.Handles)
	case mJoinReply:
		n.onJoinReply(m)
	case mAnnounce:
		if m.Flag {
			n.send(m.From, &message{Type: mAnnounceAck, Handles: n.leafWithSelf()})
		}
	case mAnnounceAck:
		n.considerCandidates(m.Handles)
		if n.awaitingAck[m.From.ID] {
			delete(n.awaitingAck, m.From.ID)
			n.checkJoined()
		}
	case mProbe:
		n.onProbe(m)
	case mProbeReply:
		n.onProbeReply(m)
	case mIndirectProbe:
		n.onIndirectProbe(m)
	case mIndirectReply:
		n.onIndirectReply(m)
	case mRowRequest:
		n.send(m.From, &message{Type: mRowReply, Row: m.Row, Handles: n.table.Row(int(m.Row))})
	case mRowReply:
		n.considerCandidates(m.Handles)
	case mLeafRequest:
		n.send(m.From, &message{Type: mLeafReply, Handles: n.leafWithSelf()})
	case mLeafReply:
		n.considerCandidates(m.Handles)
	case mDirect:
		n.events = append(n.events, Event{Kind: EventDirect, Payload: m.Payload, Origin: m.From})
	}
	return nil
}

// relayRate is how many times more routed application messages a sender may hand on for
// others than originate itself (Config.RouteEvery).
const relayRate = 16

// allowRoute applies the per-sender limits to a routed message from its previous hop: joins
// and heals by Config.JoinRequestEvery, application messages by Config.RouteEvery (the ones
// the sender originated, and more generously the ones it hands on; a sender that names
// someone else as the origin of its own lookups gets the larger allowance, no more).
func (n *Node) allowRoute(m *message, now time.Time) bool {
	switch {
	case m.Kind != kindApp:
		return n.forwardLimit.allow(m.From.ID, now)
	case m.Origin.ID == m.From.ID:
		return n.routeLimit.allow(m.From.ID, now)
	default:
		return n.relayLimit.allow(m.From.ID, now)
	}
}

func (n *Node) leafWithSelf() []Handle {
	return append(n.leaf.Members(), n.self)
}

// heard records that h is alive: it answered or sent us something.
func (n *Node) heard(h Handle, ready bool) {
	if len(n.dead.list) > 0 {
		n.dead.remove(h.ID)
	}
	if len(n.verifying) > 0 {
		delete(n.verifying, h.ID)
	}
	if len(n.filled) > 0 {
		delete(n.filled, h.ID)
	}
	if ready {
		if len(n.joining) > 0 {
			delete(n.joining, h.ID)
		}
	} else {
		n.joining[h.ID] = struct{}{}
	}
	if p, ok := n.peers[h.ID]; ok {
		p.lastHeard = n.now
		p.tries = 0
		p.probeSeq = 0
		p.h.Addr = h.Addr
		if p.suspected {
			n.setSuspected(p, false)
			if !n.leaf.Contains(h.ID) {
				delete(n.peers, h.ID)
			}
		}
	}
	n.add(h, 0, true)
	if e := n.table.entry(h.ID); e != nil {
		e.heard = n.now
		e.probeAt = time.Time{}
	}
}

// add offers h to the leaf set and, when it was heard from itself (direct), to the routing
// table. A node learned second-hand (direct=false) that we have declared dead is ignored until
// it is heard from itself.
func (n *Node) add(h Handle, rtt time.Duration, direct bool) {
	if h.ID == n.self.ID || h.ID.IsZero() || h.Addr == "" {
		return
	}
	if !direct {
		if len(n.dead.list) > 0 && n.dead.has(h.ID) {
			return
		}
		if n.suspected(h.ID) {
			return
		}
	}
	if n.leaf.WouldAdd(h.ID) && n.leaf.Add(h) {
		n.leafChanged()
		p, ok := n.peers[h.ID]
		if !ok {
			p = &peer{h: h}
			n.peers[h.ID] = p
		}
		if direct {
			p.lastHeard = n.now
		}
		if n.phase == phaseAnnounced && !n.awaitingAck[h.ID] {
			n.announce(h, p)
		}
	}
	if direct {
		n.table.Consider(h, rtt)
	}
}

func (n *Node) leafChanged() {
	n.leafVer++
	n.leafCheckAt = time.Time{} // verify new members at the next tick
	n.events = append(n.events, Event{Kind: EventLeafSetChanged})
}

// considerCandidates adds nodes learned from others; slots already taken are contested by
// measuring the candidate's RTT (proximity neighbour selection).
//
// A ready node takes no one into its leaf set on another node's word: any ring member can
// gossip handles, and forged ones (ids that are not in the ring, or the gossiper's own address
// under ids it does not own) would displace honest leaf members, corrupting replica sets and
// the choice of a key's root. A handle that would enter the leaf set is probed instead; the
// transport authenticates the id that answers, and the answer (heard) adds it. A joining node
// still takes its first leaf set as given: its announce verifies each member.
//
// The routing table takes no one on another node's word either, joining or ready: a forged
// row (ids that do not exist, or real ids at the gossiper's address) would draw the messages
// for a whole range of keys to a node that drops them or to nowhere, each costing a hop
// timeout, and a known id's address would be replaced by a false one. A handle for an empty
// slot is probed like a leaf candidate, one for a taken slot is measured (probed for its RTT),
// and either enters the table only when its answer proves the id (heard, onProbeReply); the
// address of an entry changes only when that node itself says so.
func (n *Node) considerCandidates(hs []Handle) {
	budget := n.cfg.LeafSetSize + ids.Base // leaf-set probes for one message's handles
	tableBudget := 4 * ids.Base            // routing-table probes for one message's handles
	for _, h := range hs {
		if h.ID == n.self.ID || h.ID.IsZero() || h.Addr == "" {
			continue
		}
		if len(n.dead.list) > 0 && n.dead.has(h.ID) {
			// Someone alive lists a node we declared dead: after a partition this is how the
			// halves find each other again. Probe it; its answer brings it back.
			n.recheck(h)
			continue
		}
		if n.leaf.WouldAdd(h.ID) {
			// The table takes it too once it answered: the announce of a joining node, the
			// probe of a ready one.
			if n.phase != phaseReady {
				n.add(h, 0, false)
			} else if budget > 0 && n.verify(h) {
				budget--
			}
			continue
		}
		occ, _, ok := n.table.SlotOccupant(h.ID)
		switch {
		case ok && occ.ID == h.ID, tableBudget == 0:
		case !ok:
			if n.verify(h) {
				tableBudget--
			}
		default:
			if n.measure(h) {
				tableBudget--
			}
		}
	}
}

// maxVerifying bounds the second-hand handles being verified at once (see considerCandidates),
// so that gossip cannot make this node dial without limit.
const maxVerifying = 256

// verify probes a handle learned second-hand, at most once per probe interval per id, and
// reports whether it sent a probe.
func (n *Node) verify(h Handle) bool {
	if at, ok := n.verifying[h.ID]; ok && n.now.Sub(at) < n.cfg.ProbeInterval {
		return false
	}
	if len(n.verifying) >= maxVerifying {
		for id, at := range n.verifying {
			if n.now.Sub(at) >= n.cfg.ProbeInterval {
				delete(n.verifying, id)
			}
		}
		if len(n.verifying) >= maxVerifying {
			n.stats.Unverified++
			return false
		}
	}
	n.verifying[h.ID] = n.now
	n.probe(h, false)
	return true
}

// measure probes a candidate for a taken table slot, at most once per table interval, so
// that gossip cannot turn into a probe storm, and reports whether it sent a probe.
func (n *Node) measure(h Handle) bool {
	if at, ok := n.measured[h.ID]; ok && n.now.Sub(at) < n.cfg.TableInterval {
		return false
	}
	if len(n.measured) >= 4096 {
		clear(n.measured) // forget old measurements rather than grow without bound
	}
	n.measured[h.ID] = n.now
	n.probe(h, false)
	return true
}

// recheck probes a node we declared dead that others still list, at most once per probe
// interval per node.
func (n *Node) recheck(h Handle) {
	if at, ok := n.measured[h.ID]; ok && n.now.Sub(at) < n.cfg.ProbeInterval {
		return
	}
	if len(n.measured) >= 4096 {
		clear(n.measured)
	}
	n.measured[h.ID] = n.now
	n.probe(h, false)
}

// probe sends a probe to h; the reply measures RTT and proves liveness.
func (n *Node) probe(h Handle, withLeaf bool) uint64 {
	n.seq++
	m := &message{Type: mProbe, Seq: n.seq, Time: n.now.UnixNano()}
	if withLeaf {
		m.Flag = true
		m.Handles = n.leafWithSelf()
	}
	n.send(h, m)
	return n.seq
}

func (n *Node) onProbe(m *message) {
	if m.Flag {
		n.considerCandidates(m.Handles)
	}
	r := &message{Type: mProbeReply, Seq: m.Seq, Time: m.Time}
	if p, ok := n.peers[m.From.ID]; ok && n.leaf.Contains(m.From.ID) && p.leafVerAck != n.leafVer {
		r.Flag = true
		r.Handles = n.leafWithSelf()
		p.leafVerAck = n.leafVer
	}
	n.send(m.From, r)
}

func (n *Node) onProbeReply(m *message) {
	rtt := n.now.Sub(time.Unix(0, m.Time))
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	if p, ok := n.peers[m.From.ID]; ok {
		p.rtt = rtt
	}
	n.table.Consider(m.From, rtt)
	if m.Flag {
		n.considerCandidates(m.Handles)
	}
	kept := n.indirect[:0]
	for _, req := range n.indirect {
		if req.probeSeq == m.Seq && req.target == m.From.ID {
			n.send(req.requester, &message{Type: mIndirectReply, Seq: req.seq, Key: req.target, Flag: true})
			continue
		}
		kept = append(kept, req)
	}
	n.indirect = kept
}

func (n *Node) onIndirectProbe(m *message) {
	if len(n.indirect) > 256 {
		return // bounded work for others
	}
	ps := n.probe(m.Origin, false)
	n.indirect = append(n.indirect, indirectReq{seq: m.Seq, requester: m.From, target: m.Origin.ID, deadline: n.now.Add(2 * n.cfg.ProbeTimeout), probeSeq: ps})
}

func (n *Node) onIndirectReply(m *message) {
	if !m.Flag {
		return
	}
	if p, ok := n.peers[m.Key]; ok {
		// Alive as seen from another member: a path problem, not a failure.
		p.lastHeard = n.now
		p.tries = 0
		p.probeSeq = 0
		p.indirect = 0
		if p.suspected {
			n.setSuspected(p, false)
		}
	}
}

// Awaiting lists the leaf members whose confirmation a joining node still waits for.
func (n *Node) Awaiting() []ids.ID {
	var out []ids.ID
	for _, h := range n.leaf.Members() {
		if n.awaitingAck[h.ID] {
			out = append(out, h.ID)
		}
	}
	return out
}

// Phase is the join phase, for diagnostics.
func (n *Node) Phase() int { return int(n.phase) }

// ReplicaSet returns up to k nodes, this node included, numerically closest to key among the
// leaf set, closest first; suspected nodes are left out, as routing leaves them out. It is
// meaningful only when InRange(key): replication layers (PAST) store an object on the k
// nodes closest to its key.
func (n *Node) ReplicaSet(key ids.ID, k int) []Handle {
	cands := n.leaf.Members()
	kept := cands[:0]
	for _, h := range cands {
		if !n.suspected(h.ID) {
			kept = append(kept, h)
		}
	}
	cands = append(kept, n.self)
	slices.SortFunc(cands, func(a, b Handle) int {
		if a.ID == b.ID {
			return 0
		}
		if ids.Closer(key, a.ID, b.ID) {
			return -1
		}
		return 1
	})
	return cands[:min(k, len(cands))]
}

// IsClosest reports whether this node is where a message for key would be delivered now:
// the root of key, by the same rule routing uses.
func (n *Node) IsClosest(key ids.ID) bool {
	_, local := n.nextHop(key, ids.Zero)
	return local
}

// InRange reports whether key falls within the leaf set's range, so that this node can tell
// which nodes are responsible for it.
func (n *Node) InRange(key ids.ID) bool { return n.leaf.InRange(key) }

// LeafMembers returns every leaf-set member once (a copy).
func (n *Node) LeafMembers() []Handle { return n.leaf.Members() }
