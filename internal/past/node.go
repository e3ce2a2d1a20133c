package past

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// Config holds PAST's parameters. Zero fields take the defaults of DefaultConfig.
type Config struct {
	Ring     ids.RingID
	Replicas int // k: copies of each object (ring descriptor; default 3)

	RequestTimeout time.Duration // wait for a reply before retrying
	// StragglerWait: a lookup of a mutable object that heard from a majority of the replica
	// set waits this much longer for the rest (zero: RequestTimeout/4).
	StragglerWait time.Duration
	Retries       int           // attempts per request before giving up
	MaxLease      time.Duration // longest lease a replica grants from now

	MaintenanceInterval time.Duration // periodic replica maintenance (ePOST: 10 min)
	MaintenanceDelay    time.Duration // maintenance this long after a leaf-set change
	MaxKeysPerExchange  int           // keys offered or fetched per exchange (ePOST: 1,000)
	MaxTransferBytes    int           // payload bytes per fetch reply
	DropGrace           time.Duration // keep objects we are no longer responsible for this long
	// LossMemory: for this long after a node that would be among a key's replicas vanished
	// from the leaf set (crashed, or cut off by a partition, with its copies), a replica that
	// holds no copy of the key says so "unsettled" (settled.go). Zero: one hour.
	LossMemory time.Duration
	// Known are the nodes this one knew in the ring before it started (remembered peers).
	// Until one shows up in the leaf set, it counts as vanished at the start: a ring restarting
	// does not call an object absent whose holders are not back yet.
	Known []ids.ID
	// LeaseSlack: a lease extension that would gain less than this is not written (no
	// fsync): the object keeps a lease about as long, and its owner refreshes daily.
	// Zero: one hour.
	LeaseSlack   time.Duration
	HandoffDelay time.Duration // insert such objects into their replica set after this (zero: MaintenanceInterval/4)
	GCInterval   time.Duration // expire leases and purge the trash this often

	// LocateCacheTTL: a client that wrote a key reuses the replica set the root named for
	// this long and sends the next version straight to it (a single writer rewriting its
	// log head saves the locate round trip). Replicas refuse such hinted stores unless they
	// are among the key's k closest by their own view, and the client then locates again.
	// Zero: off.
	LocateCacheTTL time.Duration

	// Policy judges POST's object types (records need the ring CA key). Without a CA key
	// replicas refuse records.
	Policy Policy
	// Observer, if set, hears of objects this replica stored or dropped (see Observer).
	Observer Observer
}

// Observer is told what a replica's store gains and loses, so an application on the same
// node can act as a holder (POST's pending notifications). Its methods run inside the PAST
// node's step with the node locked: they must not call into PAST or the overlay, and must
// not block; queue work and do it later.
type Observer interface {
	// Stored: a new object or version was written durably (insert or maintenance).
	Stored(meta store.Meta)
	// Removed: an object left the live store (deleted by its owner, or handed off). Lease
	// expiry is not reported; check with Driver.LocalGet before acting on a remembered key.
	Removed(key ids.Key)
}

// DefaultConfig returns ePOST's parameters where it had them.
func DefaultConfig() Config {
	return Config{
		Replicas:            3,
		RequestTimeout:      3 * time.Second,
		Retries:             3,
		MaxLease:            60 * 24 * time.Hour, // ePOST leases were 28 days, refreshed daily
		MaintenanceInterval: 10 * time.Minute,
		MaintenanceDelay:    2 * time.Second,
		MaxKeysPerExchange:  maxKeys,
		MaxTransferBytes:    MaxObjectSize + MaxObjectSize/2,
		DropGrace:           time.Hour,
		GCInterval:          10 * time.Minute,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.Replicas <= 0 {
		c.Replicas = d.Replicas
	}
	if c.Retries <= 0 {
		c.Retries = d.Retries
	}
	if c.MaxKeysPerExchange <= 0 || c.MaxKeysPerExchange > maxKeys {
		c.MaxKeysPerExchange = d.MaxKeysPerExchange
	}
	if c.MaxTransferBytes <= 0 {
		c.MaxTransferBytes = d.MaxTransferBytes
	}
	set(&c.RequestTimeout, d.RequestTimeout)
	set(&c.MaxLease, d.MaxLease)
	set(&c.MaintenanceInterval, d.MaintenanceInterval)
	set(&c.MaintenanceDelay, d.MaintenanceDelay)
	set(&c.DropGrace, d.DropGrace)
	if c.HandoffDelay <= 0 {
		c.HandoffDelay = c.MaintenanceInterval / 4
	}
	set(&c.GCInterval, d.GCInterval)
	set(&c.LossMemory, time.Hour)
	if c.LeaseSlack <= 0 {
		c.LeaseSlack = time.Hour
	}
}

// extendLease raises key's lease (held, with meta) to expiry, unless that gains less than
// LeaseSlack: a re-insert or refresh right after the insert (a deduplicated part, the
// recipient refreshing what it just filed) then costs no write and no fsync.
func (n *Node) extendLease(key ids.Key, meta store.Meta, expiry time.Time) error {
	if !meta.Expiry.IsZero() && !expiry.IsZero() && expiry.Sub(meta.Expiry) < n.cfg.LeaseSlack {
		n.stats.LeaseSkips++
		return nil
	}
	if lz, ok := n.st.(LazyStore); ok {
		// A lost extension leaves the lease it had; the owner refreshes again in time.
		lz.UpdateExpiryLazy(key, expiry)
		return nil
	}
	_, err := n.st.UpdateExpiry(key, expiry)
	return err
}

// Quorum is the number of acknowledgements an insert to a replica set of n nodes needs: a
// majority, floor(n/2)+1. Two majorities of one replica set always share a node, so after
// two acknowledged versions of a signed object at least one replica has seen both.
func Quorum(n int) int { return n/2 + 1 }

// Outgoing is a message the driver must route (to the node responsible for Key) or send (to To).
type Outgoing struct {
	Route   bool
	Key     ids.ID
	To      pastry.Handle
	Payload []byte
	// Tail, if not nil, is the payload's end (an object's bytes): the payload is Payload
	// followed by Tail, sent without joining them (pastry.Driver.SendParts). Only direct
	// messages have one.
	Tail        []byte
	Maintenance bool // replica maintenance traffic, for statistics
	// Ack: an answer that claims a write is durable (store, refresh, delete): the driver
	// drops it if the step's commit failed, and sends the step's other messages anyway.
	Ack bool
}

// Stats are counters for measurement.
type Stats struct {
	Stored, Refused       uint64 // writes this replica accepted / refused (validation, staleness)
	Repaired              uint64 // objects obtained through maintenance
	Dropped               uint64 // objects moved to the trash after responsibility moved away
	Expired, Purged       uint64
	SyncRounds            uint64
	MaintMsgs, MaintBytes uint64 // maintenance messages and bytes sent
	BadMessages           uint64 // undecodable or unexpected messages
	// LookupMsgs counts lookup traffic where it arrives: routed lookups at every hop they
	// pass (Forward) and at the root, direct lookups, replies and read repairs.
	LookupMsgs uint64
	// ReadRepairs: newest versions this node sent to replicas that answered a lookup with
	// an older one or none; Forks: lookups that met two versions at one sequence number.
	ReadRepairs, Forks uint64
	// HandedOff: objects outside our arc inserted into their replica set (handOff).
	HandedOff uint64
	// LeaseSkips: lease extensions not written because they gained less than LeaseSlack.
	LeaseSkips uint64
	// StoreFailures: commits of the node's writes that failed (persist.go).
	StoreFailures uint64
	// Retries: requests of this node's operations sent again after RequestTimeout passed
	// without the replies they needed (a lost message, or a node too busy to answer in time).
	Retries uint64
	// Direct: inserts sent straight to a replica set this node knew (its leaf set named it,
	// or it wrote the key lately); Located: inserts that asked the key's root first.
	Direct, Located uint64
}

// Node is one node's PAST state. It is not safe for concurrent use (Driver locks it).
//
// Contract for drivers: pass every PAST payload to Deliver (routed, arrived here) or Direct,
// every leaf-set change to SetLeafSet, and call Tick periodically; after each call route or
// send everything TakeOutbox returns, in order, then run the functions TakeDone returns
// (completed operations' callbacks), outside any lock. Store writes happen inside the calls,
// before the acknowledgements they allow are put in the outbox.
type Node struct {
	cfg  Config
	self pastry.Handle
	st   Store
	rng  *rand.Rand
	now  time.Time

	left, right []pastry.Handle // leaf set snapshot, nearest first
	ready       bool
	lost        map[ids.ID]time.Time // vanished nodes, since when (LossMemory); zero: since the start
	handover    map[uint64]ids.ID    // Leave: hand-over offers not yet answered, by op: to whom

	ops    map[uint64]*op
	opQ    []uint64 // op ids in creation order, for deterministic timeout handling
	nextOp uint64

	round     uint64
	followUps int // quick extra rounds left after a leaf-set change
	nextRound time.Time
	nextGC    time.Time
	fetching  map[ids.Key]time.Time // maintenance fetches in flight, until their deadline
	located   map[ids.Key]located   // LocateCacheTTL: replica sets of keys we wrote
	notMine   map[ids.Key]time.Time // held objects outside our arc, since when
	handedOff map[ids.Key]bool      // of those, the ones inserted into their replica set

	local []localMsg // messages to ourselves, handled after the current call
	// durableLocal are acknowledgements of our own writes to ourselves: like a replica's
	// acknowledgement to another node, they may count only once the write is on disk, so the
	// driver hands them back (DeliverDurable) after the step's commit, and drops them if it
	// failed (a full disk): the insert then waits for, and counts, the other replicas alone.
	durableLocal []*message
	out          []Outgoing
	done         []func()
	stats        Stats

	skipClientCheck bool // tests: play a writer that sends what replicas must refuse
	// skipKnownReplicas: tests: locate through the root even when the leaf set names the
	// replica set (knownReplicas).
	skipKnownReplicas bool
}

type located struct {
	replicas []pastry.Handle
	until    time.Time
}

type localMsg struct {
	routed bool
	m      *message
}

// NewNode makes a PAST node for the overlay node self, persisting through st.
func NewNode(cfg Config, self pastry.Handle, st Store, rng *rand.Rand) *Node {
	cfg.fill()
	n := &Node{cfg: cfg, self: self, st: st, rng: rng, ops: make(map[uint64]*op),
		fetching: make(map[ids.Key]time.Time), lost: make(map[ids.ID]time.Time), handover: make(map[uint64]ids.ID), notMine: make(map[ids.Key]time.Time), handedOff: make(map[ids.Key]bool), located: make(map[ids.Key]located)}
	for _, id := range cfg.Known {
		if id != self.ID {
			n.lost[id] = time.Time{} // the clock starts with the first leaf set
		}
	}
	return n
}

// Config returns the node's parameters with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Stats returns the counters.
func (n *Node) Stats() Stats { return n.stats }

// TakeOutbox returns the messages to route or send and empties the outbox.
func (n *Node) TakeOutbox() []Outgoing {
	o := n.out
	n.out = nil
	return o
}

// TakeDurable returns the acknowledgements this node sent itself for its own writes; the
// driver passes them to DeliverDurable once those writes are durable, and drops them if not.
func (n *Node) TakeDurable() []*message {
	d := n.durableLocal
	n.durableLocal = nil
	return d
}

// DeliverDurable handles acknowledgements TakeDurable returned, now that the writes they
// acknowledge are on disk.
func (n *Node) DeliverDurable(now time.Time, acks []*message) {
	n.now = now
	for _, m := range acks {
		_ = n.handle(n.self, m, false)
	}
	n.flushLocal()
}

// TakeDone returns completed operations' callbacks, to be run outside locks.
func (n *Node) TakeDone() []func() {
	d := n.done
	n.done = nil
	return d
}

// SetLeafSet gives the node the overlay's current leaf set: left counter-clockwise and right
// clockwise, nearest first (pastry.LeafSet's Left and Right). It schedules maintenance.
func (n *Node) SetLeafSet(now time.Time, left, right []pastry.Handle) {
	n.now = now
	n.noteLosses(left, right)
	n.left = slices.Clone(left)
	n.right = slices.Clone(right)
	n.ready = true
	if due := now.Add(n.cfg.MaintenanceDelay); n.nextRound.IsZero() || due.Before(n.nextRound) {
		n.nextRound = due
	}
	n.followUps = 2
	n.flushLocal()
}

// Deliver handles a PAST payload routed to a key this node is the root of. origin is the node
// that routed it.
func (n *Node) Deliver(now time.Time, origin pastry.Handle, payload []byte) error {
	n.now = now
	m, err := decodeMessage(payload)
	if err != nil {
		n.stats.BadMessages++
		return err
	}
	err = n.handle(origin, m, true)
	n.flushLocal()
	return err
}

// Direct handles a PAST payload sent straight to this node by from.
func (n *Node) Direct(now time.Time, from pastry.Handle, payload []byte) error {
	n.now = now
	m, err := decodeMessage(payload)
	if err != nil {
		n.stats.BadMessages++
		return err
	}
	err = n.handle(from, m, false)
	n.flushLocal()
	return err
}

// Forward is pastry's Forward upcall for PAST payloads passing through this node: a lookup
// for an immutable object held here is answered at once (PAST without caching) and not routed
// further. A copy of a mutable object here may be stale (left from when this node was a
// replica): it never answers; the lookup goes on to the replica set (lookup.go). It reports
// whether the message should continue.
func (n *Node) Forward(now time.Time, payload []byte) bool {
	n.now = now
	m, err := decodeMessage(payload)
	if err != nil || m.Type != mLookup || m.Origin.ID.IsZero() || m.Origin.Addr == "" {
		return true
	}
	n.stats.LookupMsgs++
	obj, err := n.st.Get(m.Key)
	if err != nil || obj.Expired(now) || mutable(Type(obj.Type)) {
		return true
	}
	n.send(m.Origin, &message{Type: mLookupReply, Op: m.Op, Key: m.Key, Code: codeOK, Objects: []Object{obj}}, false)
	n.flushLocal()
	return false
}

// Tick runs timers: request timeouts, maintenance rounds, lease expiry and trash purging.
func (n *Node) Tick(now time.Time) {
	n.now = now
	n.checkOps()
	if n.ready && !now.Before(n.nextRound) {
		n.syncRound()
		n.nextRound = now.Add(jitter(n.rng, n.cfg.MaintenanceInterval))
		if n.followUps > 0 {
			// Neighbours learn of a change at different times, and one that did not yet know
			// us ignored our request: ask again once their views have settled.
			n.followUps--
			n.nextRound = now.Add(followUpDelay + jitter(n.rng, followUpDelay))
		}
	}
	if !now.Before(n.nextGC) {
		if !n.nextGC.IsZero() {
			n.collect()
		}
		n.nextGC = now.Add(jitter(n.rng, n.cfg.GCInterval))
	}
	for k, c := range n.located {
		if !now.Before(c.until) {
			delete(n.located, k) // order-independent: only forgets
		}
	}
	for k, deadline := range n.fetching {
		if now.After(deadline) {
			delete(n.fetching, k) // order-independent: only forgets
		}
	}
	n.flushLocal()
}

// collect moves expired objects to the trash and purges old trash.
func (n *Node) collect() {
	if c, err := n.st.CollectExpired(n.now); err == nil {
		n.stats.Expired += uint64(c)
	}
	if c, err := n.st.PurgeTrash(n.now); err == nil {
		n.stats.Purged += uint64(c)
	}
}

// followUpDelay spaces the extra maintenance rounds after a leaf-set change: long enough for
// neighbours' failure detection to agree (pastry probes leaf members every few seconds once
// suspicious), short against the maintenance interval.
const followUpDelay = 10 * time.Second

func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(r.Int64N(int64(d)))
}

func (n *Node) handle(from pastry.Handle, m *message, routed bool) error {
	switch m.Type {
	case mLocate:
		n.onLocate(from, m)
	case mLocateReply:
		n.onLocateReply(from, m)
	case mStore:
		n.onStore(from, m)
	case mStoreAck:
		n.onStoreAck(from, m)
	case mLookup:
		n.stats.LookupMsgs++
		n.onLookup(from, m, routed)
	case mLookupReply:
		n.stats.LookupMsgs++
		n.onLookupReply(from, m)
	case mRefresh:
		n.onRefresh(from, m, routed)
	case mRefreshReply:
		n.onRefreshReply(from, m)
	case mSyncRequest:
		n.onSyncRequest(from, m)
	case mSyncOffer:
		n.onSyncOffer(from, m)
	case mFetch:
		n.onFetch(from, m)
	case mFetchReply:
		n.onFetchReply(from, m)
	case mDelete:
		n.onDelete(from, m, routed)
	case mDeleteReply:
		n.onDeleteReply(from, m)
	default:
		n.stats.BadMessages++
		return fmt.Errorf("past: unexpected %s", m.Type)
	}
	return nil
}

// send queues m for h; messages to ourselves are handled locally (the overlay does not send
// to self).
func (n *Node) send(h pastry.Handle, m *message, maint bool) {
	if h.ID == n.self.ID {
		if m.Type == mStoreAck && m.Code == codeOK {
			n.durableLocal = append(n.durableLocal, m)
			return
		}
		n.local = append(n.local, localMsg{m: m})
		return
	}
	p, tail := m.encodeParts(nil)
	if maint {
		n.stats.MaintMsgs++
		n.stats.MaintBytes += uint64(len(p) + len(tail))
	}
	ack := m.Type == mStoreAck || m.Type == mRefreshReply || m.Type == mDeleteReply
	n.out = append(n.out, Outgoing{To: h, Payload: p, Tail: tail, Maintenance: maint, Ack: ack})
}

// route queues m for the node responsible for key. It is joined (no Tail): PAST's Forward
// upcall reads routed messages whole, also at their origin.
func (n *Node) route(key ids.ID, m *message) {
	n.out = append(n.out, Outgoing{Route: true, Key: key, Payload: m.encode(nil)})
}

// flushLocal handles messages this node sent itself, until none are left.
func (n *Node) flushLocal() {
	for i := 0; i < len(n.local); i++ {
		_ = n.handle(n.self, n.local[i].m, n.local[i].routed)
	}
	n.local = n.local[:0]
}

// replicaSet is the k nodes closest to key among the leaf set and self, closest first (the
// same rule as pastry.Node.ReplicaSet, on our snapshot).
func (n *Node) replicaSet(key ids.ID) []pastry.Handle {
	cands := make([]pastry.Handle, 0, len(n.left)+len(n.right)+1)
	cands = append(cands, n.self)
	seen := map[ids.ID]bool{n.self.ID: true}
	for _, side := range [2][]pastry.Handle{n.right, n.left} {
		for _, h := range side {
			if !seen[h.ID] {
				seen[h.ID] = true
				cands = append(cands, h)
			}
		}
	}
	slices.SortFunc(cands, func(a, b pastry.Handle) int {
		if a.ID == b.ID {
			return 0
		}
		if ids.Closer(key, a.ID, b.ID) {
			return -1
		}
		return 1
	})
	return cands[:min(n.cfg.Replicas, len(cands))]
}

// accept validates obj as every replica must and stores it durably. It returns nil when the
// object (or this very version) is now stored, else why not.
func (n *Node) accept(obj Object) error {
	if err := ValidateWith(&obj, n.cfg.Ring, n.now, &n.cfg.Policy); err != nil {
		n.stats.Refused++
		return err
	}
	if Type(obj.Type) == TypeRecord && n.cfg.Policy.Revoked != nil && n.cfg.Policy.Revoked(obj.Seq) {
		n.stats.Refused++
		return ErrRevoked
	}
	// A replica grants at most MaxLease from now: leases bound how long storage is promised.
	if limit := n.now.Add(n.cfg.MaxLease); obj.Expiry.IsZero() || obj.Expiry.After(limit) {
		obj.Expiry = limit
	}
	obj.Payload = slices.Clip(obj.Payload)
	// The payload's hash, once: a content object's key is its hash, which validation checked.
	obj.Size = int64(len(obj.Payload))
	if Type(obj.Type) == TypeContent {
		obj.Hash = store.Hash(obj.Key.ID)
	} else {
		obj.Hash = hashOf(obj.Payload)
	}
	var cond store.Precondition
	if meta, err := n.st.Meta(obj.Key); err == nil {
		same := Type(obj.Type) == TypeContent ||
			(meta.Seq == obj.Seq && meta.Hash == obj.Hash && string(meta.Aux) == string(obj.Aux))
		if !same && Type(obj.Type) == TypePending {
			// Immutable, and the key binds only recipient and id: a second, different
			// notification under the same id is refused, never swapped in.
			n.stats.Refused++
			return ErrConflict
		}
		if same {
			// Content objects are immutable and a signed version resent is a retry: both only
			// extend the lease, so inserts are idempotent.
			if err := n.extendLease(obj.Key, meta, obj.Expiry); err != nil {
				return fmt.Errorf("%w: %v", ErrStore, err)
			}
			return nil
		}
	}
	if t := Type(obj.Type); t == TypeSigned || t == TypeRecord {
		cond = store.SeqGreater // atomic with the write: no rollback, even under races
	}
	if err := n.st.PutIf(obj, cond); err != nil {
		n.stats.Refused++
		if errors.Is(err, store.ErrPrecondition) {
			return fmt.Errorf("%w: %v", ErrStale, err)
		}
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	n.stats.Stored++
	if n.cfg.Observer != nil {
		n.cfg.Observer.Stored(obj.Meta)
	}
	return nil
}
