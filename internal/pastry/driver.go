package pastry

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Driver runs a Node on a transport and a clock: it feeds received frames and periodic ticks
// to the node, sends what the node asks to send, and hands events to the application. The same
// Driver runs under simnet (single event loop) and the real TLS transport (many goroutines);
// a mutex serialises access to the node.
type Driver struct {
	mu       sync.Mutex
	node     *Node
	tr       transport.Transport
	clock    transport.Clock
	tick     time.Duration
	timer    transport.Timer
	stopped  bool
	deferred []func()

	hopLogged   uint64    // Stats.HopLimited when the last warning went out
	hopLoggedAt time.Time // when it went out

	// OnEvent receives application events, outside the lock, in order. It may call Route and
	// Send. It must not block for long: the driver's caller (event loop or network goroutine)
	// waits for it.
	OnEvent func(Event)
	// OnReject is told about frames the node refused (bad bytes, wrong ring, spoofed sender).
	OnReject func(from transport.From, err error)
	// OnSendError is told about frames the transport refused to queue.
	OnSendError func(to Handle, err error)
	// Logger receives warnings (messages dropped at MaxHops, at most one line per
	// HopWarnInterval). Default: slog.Default().
	Logger *slog.Logger
}

// HopWarnInterval is the least time between two warnings about messages dropped at MaxHops:
// a routing loop drops thousands a second and one line says enough.
const HopWarnInterval = time.Minute

// NewDriver wires a node to a transport. Install the driver's Handle method as the
// transport's handler, then call Start.
func NewDriver(cfg Config, self Handle, rng *rand.Rand, forward Forwarder, tr transport.Transport, clock transport.Clock, tick time.Duration) *Driver {
	if tick <= 0 {
		tick = 250 * time.Millisecond
	}
	return &Driver{node: NewNode(cfg, self, rng, forward), tr: tr, clock: clock, tick: tick}
}

// Start joins through bootstrap (or starts a new ring if empty) and starts ticking.
func (d *Driver) Start(bootstrap []string) {
	d.mu.Lock()
	var bs []string
	for _, b := range bootstrap {
		if b != d.node.self.Addr {
			bs = append(bs, b)
		}
	}
	d.node.Start(d.clock.Now(), bs)
	d.timer = d.clock.AfterFunc(d.tick, d.onTick)
	d.flushLocked()
}

func (d *Driver) onTick() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.node.Tick(d.clock.Now())
	d.timer = d.clock.AfterFunc(d.tick, d.onTick)
	d.flushLocked()
}

// Handle is the transport.Handler for this node.
func (d *Driver) Handle(from transport.From, frame []byte) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	err := d.node.Step(d.clock.Now(), from, frame)
	if err != nil && d.OnReject != nil {
		f := d.OnReject
		d.mu.Unlock()
		f(from, err)
		d.mu.Lock()
	}
	d.flushLocked()
}

// Ready reports whether the node has joined.
// FoundAlone is Node.FoundAlone on the driver's node.
func (d *Driver) FoundAlone() bool {
	d.mu.Lock()
	ok := d.node.FoundAlone(d.clock.Now())
	d.flushLocked()
	return ok
}

func (d *Driver) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.node.Ready()
}

// Route sends payload to the node responsible for key.
func (d *Driver) Route(key ids.ID, payload []byte) {
	d.mu.Lock()
	d.node.Route(d.clock.Now(), key, payload)
	d.flushLocked()
}

// RouteParts sends the payload head followed by tail to the node responsible for key, without
// joining them (see Node.RouteParts).
func (d *Driver) RouteParts(key ids.ID, head, tail []byte) {
	d.mu.Lock()
	d.node.RouteParts(d.clock.Now(), key, head, tail)
	d.flushLocked()
}

// Send sends payload directly to one node. A send to this node itself is dropped: an
// application handles its own messages locally.
func (d *Driver) Send(to Handle, payload []byte) {
	d.mu.Lock()
	d.node.Send(d.clock.Now(), to, payload)
	d.flushLocked()
}

// SendParts is Send of the payload head followed by tail, without joining them (see
// Node.RouteParts). A send to this node itself is dropped, as for Send.
func (d *Driver) SendParts(to Handle, head, tail []byte) {
	d.mu.Lock()
	d.node.SendParts(d.clock.Now(), to, head, tail)
	d.flushLocked()
}

// Defer queues f to run after the current Step or Tick has finished and the node is unlocked.
// It is meant for the Forwarder, which runs inside Step and may not call into the node: it
// can Defer work (sending a reply, routing a new message) instead. Outside a Forwarder, f runs
// after the next flush.
func (d *Driver) Defer(f func()) { d.deferred = append(d.deferred, f) }

// SetForwarder installs the Forward upcall (for applications wired after the driver is made).
func (d *Driver) SetForwarder(f Forwarder) {
	d.mu.Lock()
	d.node.forward = f
	d.mu.Unlock()
}

// Self is this node's handle.
func (d *Driver) Self() Handle { return d.node.self }

// Stats returns the node's counters.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.node.Stats()
}

// With runs f with the node locked, for inspection (status, tests).
func (d *Driver) With(f func(n *Node)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.node)
}

// ReadyLeafSet returns copies of the leaf set's two sides, and false while the node is not
// ready (a joining node's leaf set is partial; EventReady follows): what an application
// needs on EventReady and EventLeafSetChanged.
func (d *Driver) ReadyLeafSet() (left, right []Handle, ready bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.node.Ready() {
		return nil, nil, false
	}
	ls := d.node.LeafSet()
	return append([]Handle(nil), ls.Left()...), append([]Handle(nil), ls.Right()...), true
}

// Leave takes the node out of the ring (see Node.Leave) and reports how many leaf-set members
// and other nodes were told. The driver keeps running for the applications' hand-over: direct
// messages still flow until Stop.
func (d *Driver) Leave() (leaf, others int) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return 0, 0
	}
	leaf, others = d.node.Leave(d.clock.Now())
	d.flushLocked()
	return leaf, others
}

// Stop stops ticking and ignores further frames. The transport is the caller's to close.
func (d *Driver) Stop() {
	d.mu.Lock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
}

// flushLocked sends the outbox and dispatches events; it is called with d.mu held and
// releases it.
func (d *Driver) flushLocked() {
	out := d.node.TakeOutbox()
	events := d.node.TakeEvents()
	self := d.node.self.Addr
	deferred := d.deferred
	d.deferred = nil
	warn, dropped := d.hopWarningLocked()
	d.mu.Unlock()
	if dropped > 0 {
		log := d.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("pastry: routed messages dropped at the hop limit; two nodes disagree about who is closest to a key (a routing loop)",
			"dropped", dropped, "hop_limit", MaxHops, "key", warn.Key.Short(), "origin", warn.Origin.String(), "from", warn.From.String(), "kind", warn.Kind)
	}
	ps, parts := d.tr.(transport.PartsSender)
	for _, o := range out {
		if o.To.Addr == self || o.To.Addr == "" {
			continue
		}
		var err error
		switch {
		case len(o.Tail) == 0:
			err = d.tr.Send(o.To.ID, o.To.Addr, o.Frame)
		case parts:
			err = ps.SendParts(o.To.ID, o.To.Addr, o.Frame, o.Tail)
		default:
			err = d.tr.Send(o.To.ID, o.To.Addr, append(o.Frame[:len(o.Frame):len(o.Frame)], o.Tail...))
		}
		if err != nil && d.OnSendError != nil {
			d.OnSendError(o.To, err)
		}
	}
	if d.OnEvent != nil {
		for _, e := range events {
			d.OnEvent(e)
		}
	}
	for _, f := range deferred {
		f()
	}
}

// hopWarningLocked says whether a warning about messages dropped at MaxHops is due, and how
// many were dropped since the last one; it is called with d.mu held.
func (d *Driver) hopWarningLocked() (last HopLimitDrop, dropped uint64) {
	n := d.node.stats.HopLimited
	if n == d.hopLogged {
		return HopLimitDrop{}, 0
	}
	now := d.clock.Now()
	if !d.hopLoggedAt.IsZero() && now.Sub(d.hopLoggedAt) < HopWarnInterval {
		return HopLimitDrop{}, 0
	}
	dropped = n - d.hopLogged
	d.hopLogged, d.hopLoggedAt = n, now
	return d.node.lastHopLimit, dropped
}
