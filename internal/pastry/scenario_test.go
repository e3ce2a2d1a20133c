package pastry

import (
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/transport"
)

// harness delivers frames between state machines by hand, so a test can hold, drop or reorder
// exactly the messages it wants: the scripted-scenario style of etcd's raft tests.
type harness struct {
	t      *testing.T
	now    time.Time
	nodes  map[string]*Node
	order  []string
	queue  []frame
	events map[string][]Event
	// drop, when set, decides whether a frame vanishes (a crash or a broken link).
	drop func(f frame) bool
	// hold, when set, keeps matching frames in the queue until it says otherwise.
	hold func(f frame) bool
}

type frame struct {
	from, to Handle
	typ      string
	bytes    []byte
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nodes: map[string]*Node{}, events: map[string][]Event{}}
}

func (h *harness) add(name string, seed uint64, cfg Config) *Node {
	r := rand.New(rand.NewPCG(seed, 99))
	n := NewNode(cfg, Handle{ID: randID(r), Addr: name}, r, nil)
	h.nodes[name] = n
	h.order = append(h.order, name)
	return n
}

func (h *harness) collect() {
	for _, name := range h.order {
		n := h.nodes[name]
		for _, o := range n.TakeOutbox() {
			h.queue = append(h.queue, frame{from: n.self, to: o.To, typ: o.Type, bytes: append(o.Frame, o.Tail...)})
		}
		h.events[name] = append(h.events[name], n.TakeEvents()...)
	}
}

// run delivers queued frames (and the frames they cause) until only held ones remain.
func (h *harness) run() {
	h.collect()
	for progress := true; progress; {
		progress = false
		var kept []frame
		q := h.queue
		h.queue = nil
		for _, f := range q {
			if h.hold != nil && h.hold(f) {
				kept = append(kept, f)
				continue
			}
			progress = true
			dst, ok := h.nodes[f.to.Addr]
			if !ok || (h.drop != nil && h.drop(f)) {
				continue
			}
			if err := dst.Step(h.now, transport.From{ID: f.from.ID, Addr: f.from.Addr}, f.bytes); err != nil {
				h.t.Fatalf("%s -> %s %s: %v", f.from.Addr, f.to.Addr, f.typ, err)
			}
			h.collect()
		}
		h.queue = append(kept, h.queue...)
	}
}

// advance moves time forward in ticks of step, delivering messages after each tick.
func (h *harness) advance(d, step time.Duration) {
	for end := h.now.Add(d); h.now.Before(end); {
		h.now = h.now.Add(step)
		for _, name := range h.order {
			h.nodes[name].Tick(h.now)
		}
		h.run()
	}
}

func testConfig() Config {
	return Config{LeafSetSize: 8, ProbeInterval: 10 * time.Second, ProbeTimeout: 500 * time.Millisecond, ProbeRetries: 3, HealInterval: 20 * time.Second}
}

func TestJoinIsConfirmedByTheLeafSet(t *testing.T) {
	h := newHarness(t)
	a := h.add("a", 1, testConfig())
	a.Start(h.now, nil)
	if !a.Ready() {
		t.Fatal("the first node of a ring is ready at once")
	}
	b := h.add("b", 2, testConfig())
	b.Start(h.now, []string{"a"})
	h.run()
	if !b.Ready() || !a.LeafSet().Contains(b.self.ID) || !b.LeafSet().Contains(a.self.ID) {
		t.Fatal("b did not join a")
	}
	// c joins, but b's confirmation is held back: c must not be ready, and must not deliver.
	c := h.add("c", 3, testConfig())
	h.hold = func(f frame) bool { return f.typ == "announce-ack" && f.from.Addr == "b" }
	c.Start(h.now, []string{"a"})
	h.run()
	if c.Ready() {
		t.Fatal("c became ready before every leaf member confirmed it")
	}
	c.Route(h.now, c.self.ID, []byte("to c"))
	h.run()
	for _, e := range h.events["c"] {
		if e.Kind == EventDeliver {
			t.Fatal("c delivered before it was ready")
		}
	}
	h.hold = nil
	h.run()
	if !c.Ready() {
		t.Fatal("c not ready after b's confirmation arrived")
	}
	var delivered int
	for _, e := range h.events["c"] {
		if e.Kind == EventDeliver && string(e.Payload) == "to c" {
			delivered++
		}
	}
	if delivered != 1 {
		t.Fatalf("the message held during the join was delivered %d times, want 1", delivered)
	}
	for _, n := range []*Node{a, b, c} {
		if n.LeafSet().Size() != 2 {
			t.Fatalf("%s has %d leaf members, want 2", n.self.Addr, n.LeafSet().Size())
		}
	}
}

func threeNodeRing(t *testing.T) (*harness, *Node, *Node, *Node) {
	h := newHarness(t)
	a := h.add("a", 1, testConfig())
	a.Start(h.now, nil)
	b := h.add("b", 2, testConfig())
	b.Start(h.now, []string{"a"})
	h.run()
	c := h.add("c", 3, testConfig())
	c.Start(h.now, []string{"a"})
	h.run()
	if !a.Ready() || !b.Ready() || !c.Ready() {
		t.Fatal("ring did not form")
	}
	return h, a, b, c
}

func TestFailureDetectionDeclaresACrashedNodeDead(t *testing.T) {
	h, a, b, c := threeNodeRing(t)
	h.drop = func(f frame) bool { return f.to.Addr == "c" || f.from.Addr == "c" } // c crashes
	h.advance(9*time.Second, 250*time.Millisecond)
	if !a.LeafSet().Contains(c.self.ID) {
		t.Fatal("c declared dead before it was even probed")
	}
	// Probe interval, then 0.5+1+2+4 s of timeouts.
	h.advance(20*time.Second, 250*time.Millisecond)
	for _, n := range []*Node{a, b} {
		if n.LeafSet().Contains(c.self.ID) {
			t.Fatalf("%s still lists the crashed node", n.self.Addr)
		}
	}
	if !a.dead.has(c.self.ID) {
		t.Fatal("the dead node is not remembered for partition healing")
	}
	// c comes back (the cut was a partition): periodic healing re-joins the two sides.
	h.drop = nil
	h.advance(60*time.Second, 250*time.Millisecond)
	if !a.LeafSet().Contains(c.self.ID) || !b.LeafSet().Contains(c.self.ID) {
		t.Fatal("c was not taken back after it returned")
	}
}

func TestIndirectProbeSavesANodeBehindABrokenLink(t *testing.T) {
	h, a, _, c := threeNodeRing(t)
	// Only the link a<->c breaks; b can still reach both.
	h.drop = func(f frame) bool {
		return (f.from.Addr == "a" && f.to.Addr == "c") || (f.from.Addr == "c" && f.to.Addr == "a")
	}
	h.advance(60*time.Second, 250*time.Millisecond)
	if !a.LeafSet().Contains(c.self.ID) {
		t.Fatal("a declared c dead although b vouched for it through indirect probes")
	}
}

func TestHopTimeoutReroutesAroundADeadNode(t *testing.T) {
	h, a, b, c := threeNodeRing(t)
	h.drop = func(f frame) bool { return f.to.Addr == "c" }
	// Route from a to c's id: c is dead but a does not know yet. After the hop timeouts the
	// message must land on the closest live node (a or b), exactly once.
	a.Route(h.now, c.self.ID, []byte("x"))
	h.advance(6*time.Second, 100*time.Millisecond)
	got := 0
	for _, name := range []string{"a", "b"} {
		for _, e := range h.events[name] {
			if e.Kind == EventDeliver && string(e.Payload) == "x" {
				got++
			}
		}
	}
	if got != 1 {
		t.Fatalf("message delivered %d times around the dead node, want 1", got)
	}
	_ = b
}
