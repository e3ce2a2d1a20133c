// Package simnet is an in-memory network for the overlay, driven by one deterministic event
// loop in virtual time: nodes are placed in a two-dimensional latency space (so proximity
// matters), links have latency with jitter, messages can be lost, nodes crash and recover, and
// the network can be partitioned. Frames are byte slices that the receiver decodes, so the wire
// codec is exercised and no pointers are shared between nodes.
//
// Everything runs on the goroutine that calls Run; handlers and timer functions must not block
// and must not call Run. Given the same seed and the same calls, two runs are identical.
package simnet

import (
	"math"
	"math/rand/v2"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Epoch is virtual time zero.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Config sets the network's behaviour.
type Config struct {
	Seed       uint64
	MaxLatency time.Duration // latency between opposite corners of the latency space
	MinLatency time.Duration // added to every link (access latency)
	Jitter     float64       // each message's latency varies by ±Jitter (fraction)
	Loss       float64       // probability that a message is lost
}

// DefaultConfig is a wide-area network: 2 ms to about 200 ms one way, 5% jitter, no loss.
func DefaultConfig(seed uint64) Config {
	return Config{Seed: seed, MaxLatency: 200 * time.Millisecond, MinLatency: 2 * time.Millisecond, Jitter: 0.05}
}

type event struct {
	at    int64 // virtual nanoseconds
	seq   uint64
	dst   int32 // delivery: endpoint index; -1 for a timer
	src   int32
	frame []byte
	timer *timer
}

type timer struct {
	f       func()
	ep      *Endpoint // nil: not tied to a node
	epoch   uint32
	stopped bool
}

func (t *timer) Stop() bool {
	was := !t.stopped
	t.stopped = true
	return was
}

// Stats counts what the network carried.
type Stats struct {
	Sent, Delivered, Lost, Dropped uint64 // Dropped: to a down node, unknown address or across a partition
	Bytes                          uint64
}

// Network is the simulated network and its clock.
type Network struct {
	cfg    Config
	rng    *rand.Rand
	now    int64
	seq    uint64
	events []event
	eps    []*Endpoint
	byAddr map[string]*Endpoint
	stats  Stats
}

// New makes an empty network.
func New(cfg Config) *Network {
	return &Network{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x51e7)), byAddr: make(map[string]*Endpoint)}
}

// Rand is the network's random source, for callers that need randomness in the same stream.
func (n *Network) Rand() *rand.Rand { return n.rng }

// Now is the current virtual time.
func (n *Network) Now() time.Time { return Epoch.Add(time.Duration(n.now)) }

// Elapsed is the virtual time since Epoch.
func (n *Network) Elapsed() time.Duration { return time.Duration(n.now) }

// Stats returns the counters.
func (n *Network) Stats() Stats { return n.stats }

// AfterFunc runs f after d of virtual time.
func (n *Network) AfterFunc(d time.Duration, f func()) transport.Timer {
	t := &timer{f: f}
	n.push(event{at: n.now + int64(max(d, 0)), dst: -1, timer: t})
	return t
}

// Endpoint is one node's attachment to the network; it implements transport.Transport and
// its Clock method gives timers that die with the node.
type Endpoint struct {
	net       *Network
	idx       int32
	id        ids.ID
	addr      string
	X, Y      float64 // position in the latency space, each in [0,1)
	up        bool
	epoch     uint32
	partition int
	handler   transport.Handler
}

// AddNode attaches a node at a random position. It starts up, without a handler.
func (n *Network) AddNode(id ids.ID, addr string) *Endpoint {
	return n.AddNodeAt(id, addr, n.rng.Float64(), n.rng.Float64())
}

// AddNodeAt attaches a node at a given position of the unit square.
func (n *Network) AddNodeAt(id ids.ID, addr string, x, y float64) *Endpoint {
	e := &Endpoint{net: n, idx: int32(len(n.eps)), id: id, addr: addr, X: x, Y: y, up: true}
	n.eps = append(n.eps, e)
	n.byAddr[addr] = e
	return e
}

// Lookup finds the endpoint at addr.
func (n *Network) Lookup(addr string) (*Endpoint, bool) {
	e, ok := n.byAddr[addr]
	return e, ok
}

// Latency is the one-way base latency between two endpoints (without jitter).
func (n *Network) Latency(a, b *Endpoint) time.Duration {
	if a == b {
		return 0
	}
	d := math.Hypot(a.X-b.X, a.Y-b.Y) / math.Sqrt2
	return n.cfg.MinLatency + time.Duration(d*float64(n.cfg.MaxLatency-n.cfg.MinLatency))
}

// SetHandler installs the function that receives this endpoint's frames.
func (e *Endpoint) SetHandler(h transport.Handler) { e.handler = h }

// ID is the endpoint's node id.
func (e *Endpoint) ID() ids.ID { return e.id }

// LocalAddr implements transport.Transport.
func (e *Endpoint) LocalAddr() string { return e.addr }

// Up reports whether the node is running.
func (e *Endpoint) Up() bool { return e.up }

// Send implements transport.Transport.
func (e *Endpoint) Send(to ids.ID, addr string, frame []byte) error {
	n := e.net
	if !e.up {
		return transport.ErrClosed
	}
	n.stats.Sent++
	n.stats.Bytes += uint64(len(frame))
	dst, ok := n.byAddr[addr]
	if !ok || !dst.up || dst.partition != e.partition || (!to.IsZero() && dst.id != to) {
		n.stats.Dropped++
		return nil
	}
	if n.cfg.Loss > 0 && n.rng.Float64() < n.cfg.Loss {
		n.stats.Lost++
		return nil
	}
	lat := n.Latency(e, dst)
	if n.cfg.Jitter > 0 {
		lat = time.Duration(float64(lat) * (1 + n.cfg.Jitter*(2*n.rng.Float64()-1)))
	}
	n.push(event{at: n.now + int64(lat), dst: dst.idx, src: e.idx, frame: frame})
	return nil
}

// Close implements transport.Transport: the node crashes.
func (e *Endpoint) Close() error { e.Crash(); return nil }

// Crash stops the node: its timers never fire and frames to it are dropped.
func (e *Endpoint) Crash() {
	e.up = false
	e.epoch++
}

// Recover restarts a crashed node (its handler must be set up again by the caller).
func (e *Endpoint) Recover() { e.up = true }

// SetPartition puts the node in partition p; frames only flow within a partition.
func (e *Endpoint) SetPartition(p int) { e.partition = p }

// Clock returns a clock whose timers are cancelled when this node crashes.
func (e *Endpoint) Clock() transport.Clock { return nodeClock{e} }

type nodeClock struct{ e *Endpoint }

func (c nodeClock) Now() time.Time { return c.e.net.Now() }

func (c nodeClock) AfterFunc(d time.Duration, f func()) transport.Timer {
	t := &timer{f: f, ep: c.e, epoch: c.e.epoch}
	c.e.net.push(event{at: c.e.net.now + int64(max(d, 0)), dst: -1, timer: t})
	return t
}

// Step runs the next event; it reports false when none is left.
func (n *Network) Step() bool {
	if len(n.events) == 0 {
		return false
	}
	ev := n.pop()
	n.now = ev.at
	if ev.timer != nil {
		t := ev.timer
		if t.stopped || (t.ep != nil && (!t.ep.up || t.ep.epoch != t.epoch)) {
			return true
		}
		t.stopped = true
		t.f()
		return true
	}
	dst, src := n.eps[ev.dst], n.eps[ev.src]
	if !dst.up || dst.partition != src.partition || dst.handler == nil {
		n.stats.Dropped++
		return true
	}
	n.stats.Delivered++
	dst.handler(transport.From{ID: src.id, Addr: src.addr}, ev.frame)
	return true
}

// RunUntil processes events up to and including virtual time t (relative to Epoch), then sets
// the clock to t.
func (n *Network) RunUntil(t time.Duration) {
	for len(n.events) > 0 && n.events[0].at <= int64(t) {
		n.Step()
	}
	if int64(t) > n.now {
		n.now = int64(t)
	}
}

// RunFor advances virtual time by d.
func (n *Network) RunFor(d time.Duration) { n.RunUntil(time.Duration(n.now) + d) }

// Pending is the number of queued events.
func (n *Network) Pending() int { return len(n.events) }

// The event queue is a binary min-heap on (at, seq); seq keeps equal times in FIFO order so
// that runs are deterministic.
func (n *Network) push(ev event) {
	n.seq++
	ev.seq = n.seq
	n.events = append(n.events, ev)
	i := len(n.events) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !less(&n.events[i], &n.events[p]) {
			break
		}
		n.events[i], n.events[p] = n.events[p], n.events[i]
		i = p
	}
}

func (n *Network) pop() event {
	h := n.events
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && less(&h[r], &h[l]) {
			m = r
		}
		if !less(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	n.events = h
	return top
}

func less(a, b *event) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

// SetLoss changes the probability that a message is lost.
func (n *Network) SetLoss(p float64) { n.cfg.Loss = p }
