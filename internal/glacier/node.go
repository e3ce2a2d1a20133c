package glacier

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// Config holds Glacier's parameters. N and M come from the ring descriptor; zero durations and
// counts take the defaults of DefaultConfig.
type Config struct {
	Ring ids.RingID
	N, M int // fragments per object; fragments that rebuild it (ePOST: 48/5)

	// InsertAcks is how many fragments must be acknowledged, each after its holder's durable
	// write, before an insert succeeds (ePOST: 15 of 48). Default min(n, 3m); at least m+1.
	InsertAcks     int
	RequestTimeout time.Duration // wait for replies before asking again or elsewhere
	Retries        int           // insert: resend unacknowledged fragments this often
	// InsertWindow bounds an insert's fragments sent and not yet answered: the next goes out
	// as an answer comes back, in position order (neighbouring positions have neighbouring
	// keys, so mostly one holder is busy at a time). An aggregate's n fragments (4 MB for
	// POST's) then reach the holders and their disks in a stream, not one burst that every
	// other write of the ring waits behind. Default 16; negative: all at once.
	InsertWindow int

	SyncInterval        time.Duration // maintenance round (ePOST: hourly)
	SyncDelay           time.Duration // first round after joining or a leaf-set change
	MaxRebuildsPerRound int           // fragments re-coded per round (ePOST: 100)
	MaxHandoffsPerRound int           // fragments copied from a neighbour per round (cheap)
	GoneAfter           time.Duration // an absent neighbour's positions are re-coded only after this (ePOST: 14 days)
	DropGrace           time.Duration // keep fragments outside our arc this long (hand-off time)
	GCInterval          time.Duration // drop expired fragments this often
	MaxWalk             int           // neighbours a sync request may be passed on to

	// Manifests caches verified manifests; nil: a private cache.
	Manifests *ManifestCache
}

// DefaultConfig returns ePOST's parameters where it had them.
func DefaultConfig() Config {
	return Config{
		N: 48, M: 5,
		RequestTimeout:      5 * time.Second,
		Retries:             2,
		InsertWindow:        16,
		SyncInterval:        time.Hour,
		SyncDelay:           time.Minute,
		MaxRebuildsPerRound: 100,
		MaxHandoffsPerRound: 2000,
		GoneAfter:           14 * 24 * time.Hour,
		DropGrace:           24 * time.Hour,
		GCInterval:          10 * time.Minute,
		MaxWalk:             4,
	}
}

// fill applies defaults and checks the parameters.
func (c *Config) fill() error {
	d := DefaultConfig()
	if c.N == 0 && c.M == 0 {
		c.N, c.M = d.N, d.M
	}
	if c.M < 1 || c.N < c.M || c.N > MaxFragments {
		return fmt.Errorf("glacier: fragments %d/%d: want 1 <= m <= n <= %d", c.N, c.M, MaxFragments)
	}
	if c.InsertAcks <= 0 {
		c.InsertAcks = min(c.N, 3*c.M)
	}
	switch {
	case c.InsertWindow == 0:
		c.InsertWindow = d.InsertWindow
	case c.InsertWindow < 0:
		c.InsertWindow = c.N
	}
	if c.InsertAcks > c.N {
		c.InsertAcks = c.N
	}
	if c.InsertAcks < min(c.N, c.M+1) {
		return fmt.Errorf("glacier: insert acknowledgements %d: want at least m+1 = %d", c.InsertAcks, c.M+1)
	}
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.RequestTimeout, d.RequestTimeout)
	set(&c.SyncInterval, d.SyncInterval)
	set(&c.SyncDelay, d.SyncDelay)
	set(&c.GoneAfter, d.GoneAfter)
	set(&c.DropGrace, d.DropGrace)
	set(&c.GCInterval, d.GCInterval)
	if c.Retries <= 0 {
		c.Retries = d.Retries
	}
	if c.MaxRebuildsPerRound <= 0 {
		c.MaxRebuildsPerRound = d.MaxRebuildsPerRound
	}
	if c.MaxHandoffsPerRound <= 0 {
		c.MaxHandoffsPerRound = d.MaxHandoffsPerRound
	}
	if c.MaxWalk <= 0 {
		c.MaxWalk = d.MaxWalk
	}
	if c.Manifests == nil {
		c.Manifests = NewManifestCache(0)
	}
	return nil
}

// ErrNoObject is returned by a retrieve when the holder of every fragment position answered
// that it holds no fragment of the object: it was never stored, or has expired everywhere.
// A retrieve that did not hear from every position returns ErrTooFewFragments instead.
var ErrNoObject = errors.New("glacier: no fragment of the object at any position")

// ErrQuorum is returned by an insert that too few holders acknowledged.
var ErrQuorum = errors.New("glacier: too few fragments acknowledged")

// InsertResult reports an insert or a renewal: the fragments acknowledged when it completed.
type InsertResult struct {
	Acks int
	// Missing (renewal only) counts positions whose holder answered that it holds no fragment
	// of this content there; maintenance rebuilds them from the others, under the new manifest.
	Missing int
	Err     error
}

// Outgoing is a message the driver must route (to the node responsible for Key) or send.
type Outgoing struct {
	Route   bool
	Key     ids.ID
	To      pastry.Handle
	Payload []byte
	// Tail, if not nil, is the payload's end (a fragment's data): the payload is Payload
	// followed by Tail, to be routed or sent without joining them (pastry.Driver.RouteParts).
	Tail        []byte
	Maintenance bool
}

// Stats are counters for measurement.
type Stats struct {
	Stored, Refused         uint64 // fragments accepted / refused on insert
	Rebuilt, HandedOff      uint64 // fragments re-coded from m others / copied from a neighbour
	RebuildsStarted         uint64
	RebuildsAbandoned       uint64 // ran out of sources; retried next round
	SyncRounds              uint64
	MaintMsgs, MaintBytes   uint64 // maintenance messages and bytes sent (sync, offers, rebuild fetches)
	Dropped, Expired        uint64
	Renewed, RenewRefused   uint64 // manifests swapped on renewal / renewals refused or not applicable here
	Refreshed               uint64 // manifests swapped by maintenance (a renewal this node missed)
	BadMessages, BadReplies uint64
	// Placing counts this node's inserts still placing fragments: an insert reports success
	// at InsertAcks acknowledgements and keeps resending to the other positions until each
	// holder acknowledged or its retries ran out.
	Placing int
}

// Node is one node's Glacier state. It is not safe for concurrent use (Driver locks it).
//
// Contract for drivers (as past.Node): pass every Glacier payload to Deliver (routed, arrived
// here, with the key it was routed to) or Direct, every leaf-set change to SetLeafSet, call
// Tick periodically; after each call route or send everything TakeOutbox returns, then run
// the callbacks TakeDone returns, outside any lock. Store writes happen inside the calls,
// before the acknowledgements they allow are put in the outbox.
type Node struct {
	cfg   Config
	codec *Codec
	frac  []ids.ID // frac[i] = i·2^256/n
	self  pastry.Handle
	st    Store
	rng   *rand.Rand
	now   time.Time

	left, right []pastry.Handle
	ready       bool
	seen        map[ids.ID]seenNode

	ops    map[uint64]*op
	opQ    []uint64
	nextOp uint64

	rebuilds map[ids.ID]*rebuild // by fragment key
	rbByOp   map[uint64]ids.ID
	rbQ      []ids.ID // creation order, for deterministic timeouts

	round            uint64
	nextRound        time.Time
	nextGC           time.Time
	budget, handoffs int // left this round
	notMine          map[ids.ID]time.Time

	local []localMsg
	out   []Outgoing
	done  []func()
	stats Stats
}

type localMsg struct {
	routed bool
	key    ids.ID
	m      *message
}

// NewNode makes a Glacier node for the overlay node self, persisting through st.
func NewNode(cfg Config, self pastry.Handle, st Store, rng *rand.Rand) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c, err := NewCodec(cfg.N, cfg.M)
	if err != nil {
		return nil, err
	}
	frac := make([]ids.ID, cfg.N)
	for i := range frac {
		frac[i] = ids.Fraction(i, cfg.N)
	}
	return &Node{cfg: cfg, codec: c, frac: frac, self: self, st: st, rng: rng, seen: make(map[ids.ID]seenNode),
		ops: make(map[uint64]*op), rebuilds: make(map[ids.ID]*rebuild), rbByOp: make(map[uint64]ids.ID),
		notMine: make(map[ids.ID]time.Time)}, nil
}

// Config returns the parameters with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Codec is the ring's erasure code.
func (n *Node) Codec() *Codec { return n.codec }

// Stats returns the counters.
func (n *Node) Stats() Stats {
	s := n.stats
	for _, o := range n.ops {
		if o.insert != nil && !o.insert.renew {
			s.Placing++
		}
	}
	return s
}

// TakeOutbox returns the messages to route or send and empties the outbox.
func (n *Node) TakeOutbox() []Outgoing {
	o := n.out
	n.out = nil
	return o
}

// TakeDone returns completed operations' callbacks, to be run outside locks.
func (n *Node) TakeDone() []func() {
	d := n.done
	n.done = nil
	return d
}

// Deliver handles a Glacier payload routed to key, which this node is the root of.
func (n *Node) Deliver(now time.Time, origin pastry.Handle, key ids.ID, payload []byte) error {
	n.now = now
	m, err := decodeMessage(payload)
	if err != nil {
		n.stats.BadMessages++
		return err
	}
	n.handle(origin, key, m, true)
	n.flushLocal()
	return nil
}

// Direct handles a Glacier payload sent straight to this node by from.
func (n *Node) Direct(now time.Time, from pastry.Handle, payload []byte) error {
	n.now = now
	m, err := decodeMessage(payload)
	if err != nil {
		n.stats.BadMessages++
		return err
	}
	n.handle(from, ids.Zero, m, false)
	n.flushLocal()
	return nil
}

func (n *Node) handle(from pastry.Handle, key ids.ID, m *message, routed bool) {
	switch m.Type {
	case mStore:
		n.onStore(from, key, m, routed)
	case mStoreAck:
		n.onStoreAck(m)
	case mFetch:
		n.onFetch(from, m)
	case mFetchReply:
		n.onFetchReply(from, m)
	case mSyncRequest:
		n.onSyncRequest(m)
	case mSyncOffer:
		n.onSyncOffer(from, m)
	case mRenew:
		n.onRenew(from, key, m, routed)
	case mRenewAck:
		n.onRenewAck(m)
	default:
		n.stats.BadMessages++
	}
}

// send queues m for h; messages to ourselves are handled locally.
func (n *Node) send(h pastry.Handle, m *message, maint bool) {
	if h.ID == n.self.ID {
		n.local = append(n.local, localMsg{m: m})
		return
	}
	p := m.encode()
	if maint {
		n.stats.MaintMsgs++
		n.stats.MaintBytes += uint64(len(p))
	}
	n.out = append(n.out, Outgoing{To: h, Payload: p, Maintenance: maint})
}

// route queues m for the node responsible for key.
func (n *Node) route(key ids.ID, m *message, maint bool) {
	p, tail := m.encodeParts()
	if maint {
		n.stats.MaintMsgs++
		n.stats.MaintBytes += uint64(len(p) + len(tail))
	}
	n.out = append(n.out, Outgoing{Route: true, Key: key, Payload: p, Tail: tail, Maintenance: maint})
}

// flushLocal handles messages this node sent itself. Routed messages are not short-cut: the
// overlay delivers them here when we are the root.
func (n *Node) flushLocal() {
	for i := 0; i < len(n.local); i++ {
		l := n.local[i]
		n.handle(n.self, l.key, l.m, l.routed)
	}
	n.local = n.local[:0]
}

// checkManifest verifies raw through the cache and applies this ring's rules.
func (n *Node) checkManifest(raw []byte) (*Manifest, error) {
	if raw == nil {
		return nil, ErrBadManifest
	}
	man, err := n.cfg.Manifests.Verified(raw)
	if err != nil {
		return nil, err
	}
	switch {
	case man.Ring != n.cfg.Ring:
		return nil, ErrWrongRing
	case int(man.N) != n.cfg.N || int(man.M) != n.cfg.M:
		return nil, ErrWrongParams
	case man.Expiry <= n.now.UnixNano():
		return nil, ErrExpired
	}
	return man, nil
}

// accept stores fragment idx of man, with its inclusion proof, durably, keeping the highest
// version.
func (n *Node) accept(man *Manifest, idx int, data []byte, proof [][32]byte) error {
	if err := man.CheckFragment(idx, data, proof); err != nil {
		return err
	}
	return n.acceptChecked(man, idx, data, proof)
}

// acceptChecked is accept of a fragment already checked against man's root.
func (n *Node) acceptChecked(man *Manifest, idx int, data []byte, proof [][32]byte) error {
	fk := FragmentKey(man.Key(), idx, n.cfg.N)
	if old, err := n.st.Get(fk); err == nil {
		if old.Manifest.Version >= man.Version {
			if old.Manifest.Version == man.Version {
				return nil // a retry or a second copy: idempotent
			}
			return ErrStale
		}
	}
	if err := n.st.Put(fk, Fragment{Manifest: man, Index: idx, Data: data, Proof: proof}); err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	delete(n.notMine, fk)
	return nil
}

// onStore: an inserter's fragment, routed to its fragment key.
func (n *Node) onStore(from pastry.Handle, key ids.ID, m *message, routed bool) {
	err := func() error {
		man, err := n.checkManifest(m.RawMan)
		if err != nil {
			return err
		}
		if int(m.Index) >= n.cfg.N || (routed && FragmentKey(man.Key(), int(m.Index), n.cfg.N) != key) {
			return fmt.Errorf("%w: routed to the wrong key", ErrBadFragment)
		}
		if n.ownFragment(from, man, m) {
			return n.acceptChecked(man, int(m.Index), m.Data, m.Proof)
		}
		return n.accept(man, int(m.Index), m.Data, m.Proof)
	}()
	if err != nil {
		n.stats.Refused++
	} else {
		n.stats.Stored++
	}
	n.send(from, &message{Type: mStoreAck, Op: m.Op, Index: m.Index, Code: codeOf(err)}, false)
}

// ownFragment reports whether m is a fragment of one of this node's own inserts, byte for
// byte the one it encoded, with the proof it computed from the manifest's root: a node holding
// positions of its own aggregates does not hash them a second time (a comparison costs a
// fraction of a hash).
func (n *Node) ownFragment(from pastry.Handle, man *Manifest, m *message) bool {
	if from.ID != n.self.ID {
		return false
	}
	o := n.ops[m.Op]
	if o == nil || o.insert == nil || o.insert.renew || o.insert.man.FragRoot != man.FragRoot || !o.insert.man.SameContent(man) {
		return false
	}
	i := int(m.Index)
	return i < len(o.insert.frags) && i < len(o.insert.proofs) &&
		bytes.Equal(m.Data, o.insert.frags[i]) && slices.Equal(m.Proof, o.insert.proofs[i])
}

// onFetch answers with the fragment we hold, whoever asks: fragments are ciphertext (POST
// encrypts before anything reaches Glacier) and every reader needs m of them.
func (n *Node) onFetch(from pastry.Handle, m *message) {
	reply := &message{Type: mFetchReply, Op: m.Op, Index: m.Index, Maint: m.Maint, Code: codeNotFound}
	if int(m.Index) < n.cfg.N {
		if f, err := n.st.Get(FragmentKey(m.Key, int(m.Index), n.cfg.N)); err == nil && f.Manifest.Expiry > n.now.UnixNano() {
			reply.Code, reply.Manifest, reply.Data, reply.Proof = codeOK, f.Manifest, f.Data, f.Proof
		}
	}
	n.send(from, reply, m.Maint)
}

func (n *Node) onFetchReply(from pastry.Handle, m *message) {
	if fk, ok := n.rbByOp[m.Op]; ok {
		n.onRebuildReply(fk, m)
		return
	}
	if o := n.ops[m.Op]; o != nil && o.retrieve != nil {
		n.onRetrieveReply(o, m)
		return
	}
	n.stats.BadReplies++ // late or unsolicited
}

// Tick runs timers: request timeouts, maintenance rounds, expiry.
func (n *Node) Tick(now time.Time) {
	n.now = now
	n.checkOps()
	n.checkRebuilds()
	if n.ready && !now.Before(n.nextRound) {
		n.syncRound()
		n.nextRound = now.Add(jitter(n.rng, n.cfg.SyncInterval))
	}
	if !now.Before(n.nextGC) {
		if !n.nextGC.IsZero() {
			n.collect()
		}
		n.nextGC = now.Add(jitter(n.rng, n.cfg.GCInterval))
	}
	n.flushLocal()
}

// collect drops fragments whose manifest's lease is over.
func (n *Node) collect() {
	var gone []ids.ID
	now := n.now.UnixNano()
	n.st.Range(func(fk ids.ID, f *Fragment) bool {
		if f.Manifest.Expiry <= now {
			gone = append(gone, fk)
		}
		return true
	})
	for _, fk := range gone {
		if n.st.Delete(fk) == nil {
			n.stats.Expired++
		}
	}
}

// jitter spreads d over [d/2, 3d/2) so that nodes do not act in lockstep.
func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(r.Int64N(int64(d)))
}

// op is a client operation in flight.
type op struct {
	id       uint64
	deadline time.Time
	tries    int
	insert   *insertOp
	retrieve *retrieveOp
}

type insertOp struct {
	man      *Manifest
	frags    [][]byte
	proofs   [][][32]byte // by position, computed from frags
	acked    []bool
	waiting  []bool // sent and not answered since (an insert's window: Config.InsertWindow)
	inflight int    // positions waiting
	next     int    // positions below next have been sent at least once
	acks     int
	refused  int
	firstErr error
	cb       func(InsertResult)
	reported bool

	// A renewal sends the manifest alone. Refusals are counted once per position (a resend
	// may draw the same answer again, or an OK once maintenance has restored the fragment).
	renew   bool
	refusal []code // by position: codeOK while no refusal is counted
	missing int    // refusals that were codeNotFound
}

// Insert stores the fragments of the object man describes (frags from NewManifest): each is
// routed to its fragment key, and the insert succeeds once InsertAcks holders acknowledged a
// durable write. The operation keeps collecting acknowledgements (and resends the rest) after
// it reported, so that as many positions as possible are filled; maintenance fills the others.
// Insert computes each fragment's inclusion proof from frags; frags that do not lead to the
// manifest's root fail the insert with ErrBadFragment before anything is sent.
func (n *Node) Insert(now time.Time, man *Manifest, frags [][]byte, cb func(InsertResult)) {
	n.now = now
	if len(frags) != n.cfg.N || int(man.N) != n.cfg.N || int(man.M) != n.cfg.M {
		n.done = append(n.done, func() { cb(InsertResult{Err: ErrWrongParams}) })
		return
	}
	root, proofs := merkleTree(frags)
	if root != man.FragRoot {
		n.done = append(n.done, func() {
			cb(InsertResult{Err: fmt.Errorf("%w: the fragments are not the manifest's", ErrBadFragment)})
		})
		return
	}
	n.insert(man, frags, proofs, cb)
}

// InsertEncoded is Insert for an object from Encode, whose proofs were computed with its
// manifest's root: the fragments are not hashed again.
func (n *Node) InsertEncoded(now time.Time, e *Encoded, cb func(InsertResult)) {
	n.now = now
	if e.proofs == nil {
		n.Insert(now, e.Manifest, e.Frags, cb) // not from Encode
		return
	}
	if len(e.Frags) != n.cfg.N || len(e.proofs) != n.cfg.N || int(e.Manifest.N) != n.cfg.N || int(e.Manifest.M) != n.cfg.M {
		n.done = append(n.done, func() { cb(InsertResult{Err: ErrWrongParams}) })
		return
	}
	n.insert(e.Manifest, e.Frags, e.proofs, cb)
}

func (n *Node) insert(man *Manifest, frags [][]byte, proofs [][][32]byte, cb func(InsertResult)) {
	n.nextOp++
	o := &op{id: n.nextOp, deadline: n.now.Add(n.cfg.RequestTimeout),
		insert: &insertOp{man: man, frags: frags, proofs: proofs, acked: make([]bool, n.cfg.N), waiting: make([]bool, n.cfg.N), cb: cb}}
	n.ops[o.id] = o
	n.opQ = append(n.opQ, o.id)
	n.sendFragments(o)
	n.flushLocal()
}

func (n *Node) sendFragments(o *op) {
	in := o.insert
	if in.renew {
		for i := range n.cfg.N {
			if !in.acked[i] {
				n.route(in.man.FragmentKey(i), &message{Type: mRenew, Op: o.id, Index: uint16(i), Manifest: in.man}, false)
			}
		}
		return
	}
	// A timeout: what was sent and is not acknowledged goes again (lost, or refused).
	for i := range in.next {
		if !in.acked[i] {
			n.sendFragment(o, i)
		}
	}
	n.fillWindow(o)
}

// fillWindow sends further positions while fewer than InsertWindow are waiting.
func (n *Node) fillWindow(o *op) {
	in := o.insert
	for in.inflight < n.cfg.InsertWindow && in.next < len(in.frags) {
		n.sendFragment(o, in.next)
		in.next++
	}
}

func (n *Node) sendFragment(o *op, i int) {
	in := o.insert
	if !in.waiting[i] {
		in.waiting[i] = true
		in.inflight++
	}
	n.route(in.man.FragmentKey(i), &message{Type: mStore, Op: o.id, Index: uint16(i), Manifest: in.man, Proof: in.proofs[i], Data: in.frags[i]}, false)
}

// answered notes the holder's answer for position i: one less waiting, one more may go.
func (n *Node) answered(o *op, i int) {
	in := o.insert
	if in.waiting[i] {
		in.waiting[i] = false
		in.inflight--
	}
	n.fillWindow(o)
}

func (n *Node) onStoreAck(m *message) {
	o := n.ops[m.Op]
	if o == nil || o.insert == nil || o.insert.renew || int(m.Index) >= n.cfg.N {
		n.stats.BadReplies++
		return
	}
	in := o.insert
	if in.acked[m.Index] {
		return
	}
	n.answered(o, int(m.Index))
	if m.Code != codeOK {
		in.refused++
		if in.firstErr == nil {
			in.firstErr = m.Code.err()
		}
		if n.cfg.N-in.refused < n.cfg.InsertAcks {
			n.reportInsert(o)
		}
		return
	}
	in.acked[m.Index] = true
	in.acks++
	if in.acks >= n.cfg.InsertAcks {
		n.reportInsert(o)
	}
	if in.acks == n.cfg.N {
		n.finish(o)
	}
}

func (n *Node) reportInsert(o *op) {
	in := o.insert
	if in.reported {
		return
	}
	in.reported = true
	res := InsertResult{Acks: in.acks, Missing: in.missing}
	if in.acks < n.cfg.InsertAcks {
		res.Err = fmt.Errorf("%w: %d of %d needed", ErrQuorum, in.acks, n.cfg.InsertAcks)
		if in.firstErr != nil {
			res.Err = fmt.Errorf("%w: %d of %d needed (holder said: %w)", ErrQuorum, in.acks, n.cfg.InsertAcks, in.firstErr)
		}
	}
	cb := in.cb
	n.done = append(n.done, func() { cb(res) })
}

// Renew extends the lease of an object already stored: man (from RenewManifest) is routed,
// without fragment data, to each of the object's n fragment keys, and every holder of a
// fragment of the same content swaps its manifest and acknowledges after the durable write.
// Success, retries and ErrQuorum are as for Insert; InsertResult.Missing counts positions
// whose holder had no fragment of this content (maintenance rebuilds them under man).
// Cost: n manifests (about 220 bytes each, whatever n) instead of n fragments.
func (n *Node) Renew(now time.Time, man *Manifest, cb func(InsertResult)) {
	n.now = now
	if int(man.N) != n.cfg.N || int(man.M) != n.cfg.M {
		n.done = append(n.done, func() { cb(InsertResult{Err: ErrWrongParams}) })
		return
	}
	n.nextOp++
	o := &op{id: n.nextOp, deadline: now.Add(n.cfg.RequestTimeout), insert: &insertOp{man: man, renew: true,
		acked: make([]bool, n.cfg.N), refusal: make([]code, n.cfg.N), cb: cb}}
	n.ops[o.id] = o
	n.opQ = append(n.opQ, o.id)
	n.sendFragments(o)
	n.flushLocal()
}

// onRenew: an owner's newer manifest for the fragment we hold at the key it was routed to.
// It is checked exactly as a store's manifest; the fragment we hold must be of the same
// content (the same root: its data and proof then verify against the new manifest too, so
// neither need travel again).
func (n *Node) onRenew(from pastry.Handle, key ids.ID, m *message, routed bool) {
	err := func() error {
		man, err := n.checkManifest(m.RawMan)
		if err != nil {
			return err
		}
		idx := int(m.Index)
		if idx >= n.cfg.N || (routed && FragmentKey(man.Key(), idx, n.cfg.N) != key) {
			return fmt.Errorf("%w: routed to the wrong key", ErrBadFragment)
		}
		fk := FragmentKey(man.Key(), idx, n.cfg.N)
		old, err := n.st.Get(fk)
		switch {
		case err != nil:
			return ErrNotFound
		case old.Manifest.Version > man.Version:
			return ErrStale
		case old.Index != idx || old.Manifest.Key() != man.Key() || !old.Manifest.SameContent(man):
			return ErrNotFound // not this content: maintenance rebuilds it from the renewed others
		case old.Manifest.Version == man.Version:
			return nil // a retry: idempotent
		}
		if err := n.st.Put(fk, Fragment{Manifest: man, Index: idx, Data: old.Data, Proof: old.Proof}); err != nil {
			return fmt.Errorf("%w: %v", ErrStore, err)
		}
		n.stats.Renewed++
		return nil
	}()
	if err != nil {
		n.stats.RenewRefused++
	}
	n.send(from, &message{Type: mRenewAck, Op: m.Op, Index: m.Index, Code: codeOf(err)}, false)
}

func (n *Node) onRenewAck(m *message) {
	o := n.ops[m.Op]
	if o == nil || o.insert == nil || !o.insert.renew || int(m.Index) >= n.cfg.N {
		n.stats.BadReplies++
		return
	}
	in, i := o.insert, int(m.Index)
	if in.acked[i] {
		return
	}
	if m.Code != codeOK {
		if in.refusal[i] == codeOK {
			in.refusal[i] = m.Code
			in.refused++
			if m.Code == codeNotFound {
				in.missing++
			}
		}
		if in.firstErr == nil {
			in.firstErr = m.Code.err()
		}
		if n.cfg.N-in.refused < n.cfg.InsertAcks {
			n.reportInsert(o)
		}
		return
	}
	if in.refusal[i] != codeOK { // restored since it refused
		in.refused--
		if in.refusal[i] == codeNotFound {
			in.missing--
		}
		in.refusal[i] = codeOK
	}
	in.acked[i] = true
	in.acks++
	if in.acks >= n.cfg.InsertAcks {
		n.reportInsert(o)
	}
	if in.acks == n.cfg.N {
		n.finish(o)
	}
}

func (n *Node) finish(o *op) {
	delete(n.ops, o.id)
	// opQ is cleaned lazily in checkOps.
}

// checkOps handles timeouts in creation order.
func (n *Node) checkOps() {
	keep := n.opQ[:0]
	for _, id := range n.opQ {
		o := n.ops[id]
		if o == nil {
			continue
		}
		keep = append(keep, id)
		if n.now.Before(o.deadline) {
			continue
		}
		o.tries++
		o.deadline = n.now.Add(n.cfg.RequestTimeout)
		switch {
		case o.insert != nil:
			if o.tries > n.cfg.Retries {
				n.reportInsert(o)
				delete(n.ops, id)
				keep = keep[:len(keep)-1]
				continue
			}
			n.sendFragments(o)
		case o.retrieve != nil:
			o.retrieve.outstanding = 0
			if !n.askMore(o) {
				n.failRetrieve(o, n.retrieveErr(o.retrieve))
				keep = keep[:len(keep)-1]
			}
		}
	}
	n.opQ = keep
}

type retrieveOp struct {
	key         ids.ID
	order       []int // fragment indices in the order we ask for them
	next        int
	outstanding int
	man         *Manifest
	got         [][]byte
	have        int
	notFound    int // positions whose holder answered that it has no fragment of the object
	cb          func([]byte, *Manifest, error)
}

// Retrieve fetches any m valid fragments of object key, decodes them and checks the result
// against the manifest's object hash. Each fragment is checked against the newest valid
// manifest found so far (signed by the owner bound to key); fragments of older versions are
// ignored once a newer one is seen.
func (n *Node) Retrieve(now time.Time, key ids.ID, cb func(obj []byte, man *Manifest, err error)) {
	n.now = now
	n.nextOp++
	o := &op{id: n.nextOp, deadline: now.Add(n.cfg.RequestTimeout),
		retrieve: &retrieveOp{key: key, order: n.rng.Perm(n.cfg.N), got: make([][]byte, n.cfg.N), cb: cb}}
	n.ops[o.id] = o
	n.opQ = append(n.opQ, o.id)
	n.askMore(o)
	n.flushLocal()
}

// askMore asks for enough further fragments to reach m (plus one spare); false when every
// position has been asked and nothing is outstanding.
func (n *Node) askMore(o *op) bool {
	r := o.retrieve
	want := n.cfg.M - r.have + 1
	for r.outstanding < want && r.next < len(r.order) {
		i := r.order[r.next]
		r.next++
		r.outstanding++
		n.route(FragmentKey(r.key, i, n.cfg.N), &message{Type: mFetch, Op: o.id, Key: r.key, Index: uint16(i)}, false)
	}
	return r.outstanding > 0
}

func (n *Node) onRetrieveReply(o *op, m *message) {
	r := o.retrieve
	r.outstanding = max(0, r.outstanding-1)
	idx := int(m.Index)
	ok := func() bool {
		if m.Code != codeOK || idx >= n.cfg.N || r.got[idx] != nil {
			return false
		}
		man, err := n.checkManifest(m.RawMan)
		if err != nil || man.Key() != r.key {
			return false
		}
		switch {
		case r.man == nil:
			r.man = man
		case r.man.SameContent(man):
		case man.Version > r.man.Version:
			// A newer version (a mutable object: a renewed lease, a repack): start over with
			// it, so a reader does not settle for a version being replaced.
			clear(r.got)
			r.have, r.man = 0, man
		default:
			return false
		}
		return r.man.CheckFragment(idx, m.Data, m.Proof) == nil
	}()
	if !ok {
		if m.Code == codeOK {
			n.stats.BadReplies++
		} else if m.Code == codeNotFound && idx < n.cfg.N && r.got[idx] == nil {
			r.notFound++
		}
		if !n.askMore(o) {
			n.failRetrieve(o, n.retrieveErr(r))
		}
		return
	}
	r.got[idx] = m.Data
	r.have++
	if r.have < n.cfg.M {
		n.askMore(o)
		return
	}
	obj, err := n.codec.Decode(r.got, int(r.man.Size))
	if err == nil && sha256.Sum256(obj) != r.man.ObjectHash {
		err = ErrHashMismatch
	}
	delete(n.ops, o.id)
	man, cb := r.man, r.cb
	n.done = append(n.done, func() { cb(obj, man, err) })
}

// retrieveErr is the error of a retrieve that ran out of positions: ErrNoObject when every
// position's holder answered that it has nothing (the object does not exist, as far as the
// ring can tell), else ErrTooFewFragments (some holders did not answer, or too few had it).
func (n *Node) retrieveErr(r *retrieveOp) error {
	if r.notFound >= n.cfg.N && r.have == 0 && r.man == nil {
		return fmt.Errorf("%w: all %d positions answered", ErrNoObject, n.cfg.N)
	}
	return fmt.Errorf("%w: %d of %d valid, %d of %d positions had none", ErrTooFewFragments, r.have, n.cfg.M, r.notFound, n.cfg.N)
}

func (n *Node) failRetrieve(o *op, err error) {
	if _, ok := n.ops[o.id]; !ok {
		return
	}
	delete(n.ops, o.id)
	cb := o.retrieve.cb
	n.done = append(n.done, func() { cb(nil, nil, err) })
}

// sortHandles orders handles by id (deterministic iteration over sets).
func sortHandles(hs []pastry.Handle) {
	slices.SortFunc(hs, func(a, b pastry.Handle) int { return ids.Cmp(a.ID, b.ID) })
}
