// Package scribe builds topic trees on Pastry for multicast and anycast, after Castro,
// Druschel, Kermarrec and Rowstron, "Scribe: a large-scale and decentralized
// application-level multicast infrastructure" (IEEE JSAC 20(8), 2002), and the anycast of
// Castro et al., "Scalable application-level anycast for highly dynamic groups" (NGC 2003).
// POST uses it for presence (one topic per user, to which the user's node subscribes) and
// multiring for gateway groups (anycast to any gateway of a ring).
//
// A topic's tree is the union of the Pastry routes from its members to the topic id; the
// root is the live node numerically closest to the id (the paper's rendezvous point).
// Scribe is a state machine in the style of the pastry package: it reacts to Pastry events,
// to the Forward upcall and to Tick, and asks its Overlay to route and send. It never reads
// the clock, starts goroutines or touches the network itself, and it never trusts a peer:
// every message is decoded by a bounds-checked codec, and bad bytes are counted and dropped.
//
// Wiring, with other applications on the same Pastry node (see package appmux):
//
//	mux := appmux.New()
//	var sc *scribe.Scribe
//	drv := pastry.NewDriver(pcfg, self, rng, mux.Forward, tr, clock, tick)
//	drv.OnEvent = mux.OnEvent
//	sc = scribe.New(scribe.Config{Ring: pcfg.Ring, Now: clock.Now, Rand: rng2}, drv)
//	mux.Register(appmux.TagScribe, sc)
//	stop := sc.RunTicker(clock, time.Second)
//
// Presence, the way POST uses it: the recipient's node subscribes to the user's topic,
// NewTopic(ring, "presence:"+address), with an App whose AnycastAccept files the
// notification carried in the payload and returns true. A sender anycasts the notification
// to that topic: the result names the node that took it, or says ErrNoMember (the user is
// offline; keep the notification replicated for later). No one polls.
//
// Protocol, per topic and node: a SUBSCRIBE routed toward the topic grafts each node on its
// route as a forwarder until it meets the tree (Forward); the receiving parent acknowledges
// with its depth. Each child sends its parent one heartbeat per HeartbeatInterval for all
// topics they share, and the parent answers with its depth per topic; a child whose parent
// is silent for ParentTimeout re-subscribes (Pastry routes around the dead node), a parent
// drops children silent for ChildTimeout, and a depth beyond MaxDepth reveals a loop, which
// the child breaks by re-subscribing. On every leaf-set change each node checks whether it
// has become, or stopped being, the node closest to its topics and re-anchors the tree.
//
// Locking: Scribe has one mutex. It is never held while calling the Overlay or an App, so the
// lock order is always "pastry driver, then scribe" (Forward runs inside the driver's lock).
package scribe

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/transport"
)

// Errors returned by the API and reported to anycast result callbacks.
var (
	ErrWrongRing      = errors.New("scribe: topic belongs to another ring")
	ErrTooLarge       = errors.New("scribe: payload exceeds scribe.MaxPayload")
	ErrNoMember       = errors.New("scribe: no member accepted the anycast")
	ErrAnycastTimeout = errors.New("scribe: anycast got no answer in time")
	ErrSearchLimit    = errors.New("scribe: anycast searched too many nodes")
)

// NewTopic names a topic of ring: its id is a domain-separated hash of name, so that topic
// ids never collide with other kinds of keys (PAST objects, node ids).
func NewTopic(ring ids.RingID, name string) ids.Key {
	return ids.Key{Ring: ring, ID: ids.HashString("epost-scribe-topic:" + name)}
}

// App receives a subscribed topic's traffic. Its methods run outside Scribe's and Pastry's
// locks, in the driver's event context (the simnet loop or a network goroutine): they may
// call Scribe and the driver, and must not block.
type App interface {
	// Deliver is called once per multicast message of the topic.
	Deliver(topic ids.Key, payload []byte)
	// AnycastAccept offers an anycast to this member; true accepts it and ends the search.
	AnycastAccept(topic ids.Key, payload []byte) bool
}

// AnycastResult is what an anycast's origin learns. Exactly one result reaches the callback.
type AnycastResult struct {
	Topic    ids.Key
	Member   pastry.Handle // the member that accepted, when Err is nil
	Searched int           // tree nodes the search visited
	Err      error         // nil, ErrNoMember, ErrSearchLimit or ErrAnycastTimeout
}

// Overlay is what Scribe needs from Pastry; *pastry.Driver implements it.
type Overlay interface {
	Route(key ids.ID, payload []byte)
	Send(to pastry.Handle, payload []byte)
	Defer(f func())
	Self() pastry.Handle
	With(f func(n *pastry.Node))
}

// Config holds Scribe's parameters. Zero fields take the defaults of DefaultConfig, except
// Ring, Now and Rand, which the caller supplies.
type Config struct {
	Ring ids.RingID       // the ring of the Pastry node; topics of other rings are refused
	Tag  byte             // appmux tag that starts every Scribe payload
	Now  func() time.Time // injected clock
	Rand *rand.Rand       // injected randomness (message ids, jitter); must be seeded

	// HeartbeatInterval is how often a child tells each parent it is still there (one
	// message per parent node, covering all topics). The parent answers; the answer is the
	// child's proof that the parent lives. Tree repair takes about ParentTimeout.
	HeartbeatInterval time.Duration
	ParentTimeout     time.Duration // no word from the parent for this long: re-subscribe
	ChildTimeout      time.Duration // no heartbeat from a child for this long: drop it
	SubscribeTimeout  time.Duration // first retry of an unanswered subscribe; doubles, to 8x
	AnycastTimeout    time.Duration // the origin gives up on an anycast after this long
	MaxDepth          int           // deeper than this means a loop: leave and re-subscribe
	DedupeTTL         time.Duration // multicast ids are remembered this long
	MaxDedupe         int           // and at most this many
}

// DefaultConfig returns the default parameters: repair within about 20 s of a failure at
// a cost of two small messages per tree edge (aggregated per neighbour) every 5 s.
func DefaultConfig() Config {
	return Config{
		Tag:               appmux.TagScribe,
		HeartbeatInterval: 5 * time.Second,
		ParentTimeout:     16 * time.Second,
		ChildTimeout:      20 * time.Second,
		SubscribeTimeout:  8 * time.Second,
		AnycastTimeout:    15 * time.Second,
		MaxDepth:          32,
		DedupeTTL:         10 * time.Minute,
		MaxDedupe:         1 << 16,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.Tag == 0 {
		c.Tag = d.Tag
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.ParentTimeout <= 0 {
		c.ParentTimeout = 3*c.HeartbeatInterval + c.HeartbeatInterval/5
	}
	if c.ChildTimeout <= 0 {
		c.ChildTimeout = 4 * c.HeartbeatInterval
	}
	if c.SubscribeTimeout <= 0 {
		c.SubscribeTimeout = d.SubscribeTimeout
	}
	if c.AnycastTimeout <= 0 {
		c.AnycastTimeout = d.AnycastTimeout
	}
	if c.MaxDepth <= 0 || c.MaxDepth >= depthNotParent {
		c.MaxDepth = d.MaxDepth
	}
	if c.DedupeTTL <= 0 {
		c.DedupeTTL = d.DedupeTTL
	}
	if c.MaxDedupe <= 0 {
		c.MaxDedupe = d.MaxDedupe
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// Stats are counters for measurement.
type Stats struct {
	Sent, SentBytes, Received, Rejected uint64
	SentByType                          [mTypeLimit]uint64
	Delivered                           uint64 // multicast upcalls
	Duplicates                          uint64 // multicast copies suppressed by id
	Repairs                             uint64 // re-subscriptions after a parent failed or a loop
	Reanchors                           uint64 // root changes handled
}

// topic is this node's part of one tree.
type topic struct {
	key         ids.Key
	app         App           // nil unless subscribed here
	parent      pastry.Handle // zero ID when root or pending
	parentHeard time.Time
	root        bool
	pending     bool      // a subscribe is on its way; retry at retryAt
	retryAt     time.Time //
	tries       int
	depth       uint8
	children    map[ids.ID]*child
	childOrder  []ids.ID // insertion order, for deterministic iteration
}

type child struct {
	h     pastry.Handle
	heard time.Time
}

func (t *topic) attached() bool { return t.root || !t.parent.ID.IsZero() }

func (t *topic) addChild(h pastry.Handle, now time.Time) {
	if c, ok := t.children[h.ID]; ok {
		c.heard = now
		c.h.Addr = h.Addr
		return
	}
	t.children[h.ID] = &child{h: h, heard: now}
	t.childOrder = append(t.childOrder, h.ID)
}

func (t *topic) removeChild(id ids.ID) bool {
	if _, ok := t.children[id]; !ok {
		return false
	}
	delete(t.children, id)
	for i, c := range t.childOrder {
		if c == id {
			t.childOrder = append(t.childOrder[:i], t.childOrder[i+1:]...)
			break
		}
	}
	return true
}

// neighbours are the tree edges at this node: children in order, then the parent.
func (t *topic) neighbours() []pastry.Handle {
	out := make([]pastry.Handle, 0, len(t.childOrder)+1)
	for _, id := range t.childOrder {
		out = append(out, t.children[id].h)
	}
	if !t.parent.ID.IsZero() {
		out = append(out, t.parent)
	}
	return out
}

type pendingAnycast struct {
	topic    ids.Key
	result   func(AnycastResult)
	deadline time.Time
}

// Scribe is one node's Scribe instance. It is safe for concurrent use.
type Scribe struct {
	cfg  Config
	ov   Overlay
	self pastry.Handle

	mu            sync.Mutex
	topics        map[ids.ID]*topic
	order         []ids.ID // topic ids in creation order, for deterministic iteration
	seen          dedupe
	anycasts      map[uint64]*pendingAnycast
	nextHeartbeat time.Time
	stats         Stats
	stopped       bool
}

// New makes the Scribe of the node that ov drives. Install s.Forward as (part of) the
// driver's Forwarder and feed it events through HandleEvent, for instance with an
// appmux.Mux; call Tick a few times per HeartbeatInterval (see RunTicker).
func New(cfg Config, ov Overlay) *Scribe {
	cfg.fill()
	return &Scribe{
		cfg:      cfg,
		ov:       ov,
		self:     ov.Self(),
		topics:   make(map[ids.ID]*topic),
		seen:     dedupe{ids: make(map[[msgIDLen]byte]time.Time)},
		anycasts: make(map[uint64]*pendingAnycast),
	}
}

// Stats returns the counters.
func (s *Scribe) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// TopicState describes this node's part of a tree, for status pages and tests.
type TopicState struct {
	Subscribed bool
	Root       bool
	Pending    bool
	Parent     pastry.Handle
	Children   []pastry.Handle
	Depth      int
}

// State reports this node's part of topic's tree; ok is false when the node is not in it.
func (s *Scribe) State(topic ids.Key) (st TopicState, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.topics[topic.ID]
	if !ok || topic.Ring != s.cfg.Ring {
		return TopicState{}, false
	}
	st = TopicState{Subscribed: t.app != nil, Root: t.root, Pending: t.pending, Parent: t.parent, Depth: int(t.depth)}
	for _, id := range t.childOrder {
		st.Children = append(st.Children, t.children[id].h)
	}
	return st, true
}

// Subscribe makes this node a member of topic: app receives its multicasts and is offered
// its anycasts. Subscribing again replaces the app. The tree is joined asynchronously.
func (s *Scribe) Subscribe(topic ids.Key, app App) error {
	if topic.Ring != s.cfg.Ring {
		return fmt.Errorf("subscribe %s: %w", topic, ErrWrongRing)
	}
	if app == nil {
		return fmt.Errorf("subscribe %s: nil app", topic)
	}
	var fx effects
	s.mu.Lock()
	t := s.topicLocked(topic.ID, true)
	t.app = app
	if !t.attached() && !t.pending {
		s.subscribeLocked(&fx, t)
	}
	s.mu.Unlock()
	s.run(&fx)
	return nil
}

// Unsubscribe ends this node's membership. The node stays a forwarder while it has children;
// otherwise it leaves its parent at once (the paper's unsubscribe).
func (s *Scribe) Unsubscribe(topic ids.Key) error {
	if topic.Ring != s.cfg.Ring {
		return fmt.Errorf("unsubscribe %s: %w", topic, ErrWrongRing)
	}
	var fx effects
	s.mu.Lock()
	if t, ok := s.topics[topic.ID]; ok {
		t.app = nil
		s.pruneLocked(&fx, t)
	}
	s.mu.Unlock()
	s.run(&fx)
	return nil
}

// Multicast sends payload to every member of topic. It is routed to the topic and enters
// the tree at the first tree node on the way (at the latest the root), which floods it
// along tree edges; each member's app gets it once. Delivery is best effort: a message
// sent while the tree is being repaired may miss the members being repaired.
func (s *Scribe) Multicast(topic ids.Key, payload []byte) error {
	if topic.Ring != s.cfg.Ring {
		return fmt.Errorf("multicast %s: %w", topic, ErrWrongRing)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("multicast %s: %w (%d bytes)", topic, ErrTooLarge, len(payload))
	}
	m := &message{Type: mMulticast, Topic: topic.ID, Origin: s.self, Payload: payload}
	s.mu.Lock()
	for i := 0; i < msgIDLen; i += 8 {
		v := s.cfg.Rand.Uint64()
		for j := 0; j < 8; j++ {
			m.MsgID[i+j] = byte(v >> (8 * j))
		}
	}
	t, in := s.topics[topic.ID]
	inTree := in && t.attached()
	var fx effects
	if !inTree {
		s.routeLocked(&fx, topic.ID, m)
	}
	s.mu.Unlock()
	s.run(&fx)
	if inTree {
		s.flood(m, ids.Zero)
	}
	return nil
}

// Anycast offers payload to members of topic, one at a time, until one accepts: it is
// routed toward the topic, and the first tree node reached searches the tree depth first
// (children before parent). result is called once, outside any lock, with the member that
// accepted or an error. The search is bounded (1024 nodes) and times out after
// AnycastTimeout.
func (s *Scribe) Anycast(topic ids.Key, payload []byte, result func(AnycastResult)) error {
	if topic.Ring != s.cfg.Ring {
		return fmt.Errorf("anycast %s: %w", topic, ErrWrongRing)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("anycast %s: %w (%d bytes)", topic, ErrTooLarge, len(payload))
	}
	if result == nil {
		result = func(AnycastResult) {}
	}
	s.mu.Lock()
	req := s.cfg.Rand.Uint64()
	for s.anycasts[req] != nil || req == 0 {
		req = s.cfg.Rand.Uint64()
	}
	s.anycasts[req] = &pendingAnycast{topic: topic, result: result, deadline: s.cfg.Now().Add(s.cfg.AnycastTimeout)}
	m := &message{Type: mAnycast, Topic: topic.ID, ReqID: req, Origin: s.self, Payload: payload}
	t, in := s.topics[topic.ID]
	inTree := in && t.attached()
	var fx effects
	if !inTree {
		s.routeLocked(&fx, topic.ID, m)
	}
	s.mu.Unlock()
	s.run(&fx)
	if inTree {
		s.searchAnycast(m)
	}
	return nil
}

// Stop makes the instance inert: later events, forwards and ticks are ignored.
func (s *Scribe) Stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
}

// RunTicker calls Tick every interval on clock until the returned stop function is called.
func (s *Scribe) RunTicker(clock transport.Clock, interval time.Duration) (stop func()) {
	var mu sync.Mutex
	var timer transport.Timer
	done := false
	var tick func()
	tick = func() {
		s.Tick(clock.Now())
		mu.Lock()
		defer mu.Unlock()
		if !done {
			timer = clock.AfterFunc(interval, tick)
		}
	}
	mu.Lock()
	timer = clock.AfterFunc(interval, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		timer.Stop()
	}
}

// topicLocked finds or (create) makes the state of topic id.
func (s *Scribe) topicLocked(id ids.ID, create bool) *topic {
	t, ok := s.topics[id]
	if !ok && create {
		t = &topic{key: ids.Key{Ring: s.cfg.Ring, ID: id}, children: make(map[ids.ID]*child)}
		s.topics[id] = t
		s.order = append(s.order, id)
	}
	return t
}

func (s *Scribe) deleteTopicLocked(t *topic) {
	delete(s.topics, t.key.ID)
	for i, id := range s.order {
		if id == t.key.ID {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// effects are what a locked section decided to do; run performs them after unlocking.
type effects struct {
	routes []routed
	sends  []sent
	calls  []func()
}

type routed struct {
	key     ids.ID
	payload []byte
}

type sent struct {
	to      pastry.Handle
	payload []byte
}

func (s *Scribe) routeLocked(fx *effects, key ids.ID, m *message) {
	p := m.encode(s.cfg.Tag)
	s.count(m.Type, len(p))
	fx.routes = append(fx.routes, routed{key, p})
}

func (s *Scribe) sendLocked(fx *effects, to pastry.Handle, m *message) {
	if to.ID == s.self.ID || to.ID.IsZero() {
		return // pastry does not deliver to ourselves; callers handle the local case
	}
	p := m.encode(s.cfg.Tag)
	s.count(m.Type, len(p))
	fx.sends = append(fx.sends, sent{to, p})
}

func (s *Scribe) count(t msgType, n int) {
	s.stats.Sent++
	s.stats.SentBytes += uint64(n)
	s.stats.SentByType[t]++
}

func (s *Scribe) run(fx *effects) {
	for _, r := range fx.routes {
		s.ov.Route(r.key, r.payload)
	}
	for _, x := range fx.sends {
		s.ov.Send(x.to, x.payload)
	}
	for _, f := range fx.calls {
		f()
	}
}

// dedupe remembers multicast ids, oldest first, bounded in time and number.
type dedupe struct {
	ids   map[[msgIDLen]byte]time.Time
	queue [][msgIDLen]byte
}

// add records id and reports whether it is new.
func (d *dedupe) add(id [msgIDLen]byte, now time.Time, ttl time.Duration, max int) bool {
	for len(d.queue) > 0 && (len(d.queue) >= max || now.Sub(d.ids[d.queue[0]]) > ttl) {
		delete(d.ids, d.queue[0])
		d.queue = d.queue[1:]
	}
	if _, ok := d.ids[id]; ok {
		return false
	}
	d.ids[id] = now
	d.queue = append(d.queue, id)
	return true
}
