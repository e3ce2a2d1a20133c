package pastry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// ring builds a ring of n nodes on the harness, one join at a time, and lets it settle.
func ring(t *testing.T, n int) (*harness, []string) {
	h := newHarness(t)
	var names []string
	for i := range n {
		name := fmt.Sprintf("n%02d", i)
		nd := h.add(name, uint64(100+i), testConfig())
		if i == 0 {
			nd.Start(h.now, nil)
		} else {
			nd.Start(h.now, []string{names[0]})
		}
		names = append(names, name)
		h.run()
	}
	h.advance(30*time.Second, 250*time.Millisecond)
	h.exact(names)
	return h, names
}

// exact fails the test unless every node of live is ready and has exactly the leaf set the
// global truth (the ids of live) dictates.
func (h *harness) exact(live []string) {
	h.t.Helper()
	var all []ids.ID
	for _, name := range live {
		all = append(all, h.nodes[name].self.ID)
	}
	half := testConfig().LeafSetSize / 2
	for _, name := range live {
		n := h.nodes[name]
		var got []ids.ID
		for _, m := range n.LeafSet().Members() {
			got = append(got, m.ID)
		}
		slices.SortFunc(got, ids.Cmp)
		if want := truth(all, n.self.ID, half); !n.Ready() || !slices.Equal(got, want) {
			h.t.Fatalf("%s: ready=%v, leaf set of %d members differs from the %d the truth dictates", name, n.Ready(), len(got), len(want))
		}
	}
}

func without(names []string, gone string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == gone })
}

// TestLeaveIsSeenWithinOneMessage: a node that leaves is dropped by every former leaf-set
// member as soon as its leave arrives (no clock advance, no probe, nothing else delivered),
// and the leaf sets are exact at that moment: the leave carries the leaver's leaf set, which
// holds every receiver's replacement. Routing avoids the leaver at once; gossip that still
// names it does not bring it back; a restart with the same id rejoins normally.
func TestLeaveIsSeenWithinOneMessage(t *testing.T) {
	h, names := ring(t, 14)
	x := h.nodes["n05"]
	// Told: x's leaf members and routing-table entries. Others may have x in their routing
	// tables without x knowing; they learn it from x when they next send it something.
	var formerLeaf, told, unaware []string
	for _, name := range names {
		n := h.nodes[name]
		switch {
		case x.LeafSet().Contains(n.self.ID):
			formerLeaf = append(formerLeaf, name)
			told = append(told, name)
		case x.Table().entry(n.self.ID) != nil:
			told = append(told, name)
		case name != "n05" && n.Table().entry(x.self.ID) != nil:
			unaware = append(unaware, name)
		}
		h.events[name] = nil
	}
	leaf, others := x.Leave(h.now)
	if leaf != len(formerLeaf) || leaf+others != len(told) {
		t.Fatalf("told %d leaf members and %d others, want %d and %d", leaf, others, len(formerLeaf), len(told)-len(formerLeaf))
	}
	if x.Ready() || !x.Left() {
		t.Fatal("a node that left still reports itself ready")
	}
	// Deliver the leave messages only: everything they cause is held.
	h.hold = func(f frame) bool { return f.typ != "leave" }
	h.run()
	live := without(names, "n05")
	for _, name := range live {
		n := h.nodes[name]
		if n.LeafSet().Contains(x.self.ID) {
			t.Fatalf("%s still has the node that left in its leaf set", name)
		}
		if !slices.Contains(told, name) {
			continue
		}
		if n.Table().entry(x.self.ID) != nil || !n.dead.has(x.self.ID) {
			t.Fatalf("%s was told but keeps the node that left in its routing table, or not in its dead list", name)
		}
		if slices.Contains(formerLeaf, name) && !slices.ContainsFunc(h.events[name], func(e Event) bool { return e.Kind == EventLeafSetChanged }) {
			t.Fatalf("%s lost a leaf member without a leaf-set-changed event", name)
		}
	}
	h.exact(live)

	// A message for the leaver's id reaches the new root without any hop timeout.
	h.hold = nil
	h.run()
	h.nodes[formerLeaf[0]].Route(h.now, x.self.ID, []byte("after the leave"))
	h.run()
	root := closestName(h, live, x.self.ID)
	if got := delivered(h, "after the leave"); !slices.Equal(got, []string{root}) {
		t.Fatalf("message for the leaver's id delivered at %v, want once at %s", got, root)
	}

	// The node that left lingers (its hand-over grace) while others' gossip still names it and
	// routing-table probes reach it: it must not come back, and those that had it in their
	// routing table unknown to it learn of the leave from it.
	h.advance(2*DefaultConfig().TableProbeInterval, 250*time.Millisecond)
	h.exact(live)
	for _, name := range live {
		n := h.nodes[name]
		if n.LeafSet().Contains(x.self.ID) || n.Table().entry(x.self.ID) != nil {
			t.Fatalf("%s took the node that left back", name)
		}
	}
	t.Logf("%d leaf members and %d other nodes told at once; %d learned later from the node itself", len(formerLeaf), len(told)-len(formerLeaf), len(unaware))

	// A restart with the same id is a new node that joins as usual.
	r := rand.New(rand.NewPCG(555, 99))
	again := NewNode(testConfig(), x.self, r, nil)
	h.nodes["n05"] = again
	again.Start(h.now, []string{"n00"})
	h.advance(30*time.Second, 250*time.Millisecond)
	h.exact(names)
}

func closestName(h *harness, names []string, key ids.ID) string {
	best := names[0]
	for _, name := range names[1:] {
		if ids.Closer(key, h.nodes[name].self.ID, h.nodes[best].self.ID) {
			best = name
		}
	}
	return best
}

func delivered(h *harness, payload string) []string {
	var at []string
	for _, name := range h.order {
		for _, e := range h.events[name] {
			if e.Kind == EventDeliver && string(e.Payload) == payload {
				at = append(at, name)
			}
		}
	}
	return at
}

// TestLeaveOnlyFromTheLeaver: a leave, or a hand-over message, claiming to come from another
// node is refused, whether the transport authenticated someone else or nobody.
func TestLeaveOnlyFromTheLeaver(t *testing.T) {
	h, a, b, c := threeNodeRing(t)
	forged := []*message{
		{Type: mLeave, From: c.self, Gone: true, Handles: []Handle{a.self}},
		{Type: mLeave, From: c.self},
		{Type: mDirect, From: c.self, Gone: true, Payload: []byte("x")},
	}
	for _, m := range forged {
		frame := m.encode(nil)
		for _, from := range []transport.From{{ID: a.self.ID, Addr: a.self.Addr}, {}} {
			err := b.Step(h.now, from, frame)
			if !errors.Is(err, ErrSpoofed) {
				t.Fatalf("%s claiming %s from %q: %v, want ErrSpoofed", m.Type, c.self.Addr, from.Addr, err)
			}
		}
	}
	if !b.LeafSet().Contains(c.self.ID) || b.dead.has(c.self.ID) {
		t.Fatal("a forged leave removed a node that is still there")
	}
	for _, e := range b.TakeEvents() {
		if e.Kind == EventLeafSetChanged || e.Kind == EventDirect {
			t.Fatalf("forged frames caused a %v event", e.Kind)
		}
	}
	if len(b.TakeOutbox()) != 0 {
		t.Fatal("forged frames made the node send something")
	}
	// The genuine leave, from c itself, is believed.
	h.events["b"] = nil
	c.Leave(h.now)
	h.run()
	if b.LeafSet().Contains(c.self.ID) || a.LeafSet().Contains(c.self.ID) {
		t.Fatal("c's own leave was not believed")
	}
}

// TestLeftNodeOnlyHandsOver: after Leave a node answers no probe, routes nothing and joins
// nobody, but its direct messages (the applications' hand-over) still flow both ways, and they
// do not make the receiver count it alive.
func TestLeftNodeOnlyHandsOver(t *testing.T) {
	h, a, b, c := threeNodeRing(t)
	c.Leave(h.now)
	h.run()
	for _, n := range []*Node{a, b, c} {
		n.TakeEvents()
	}
	// Probes, join requests and routed messages to the node that left go unanswered.
	a.probe(c.self, false)
	a.send(c.self, &message{Type: mJoinRequest, Flag: true})
	c.Route(h.now, a.self.ID, []byte("from the gone"))
	h.run()
	if got := delivered(h, "from the gone"); len(got) != 0 {
		t.Fatalf("a node that left routed a message (delivered at %v)", got)
	}
	// Direct messages: the hand-over.
	c.Send(h.now, a.self, []byte("offer"))
	h.run()
	a.Send(h.now, c.self, []byte("fetch"))
	h.run()
	got := func(name, payload string) bool {
		return slices.ContainsFunc(h.events[name], func(e Event) bool { return e.Kind == EventDirect && string(e.Payload) == payload })
	}
	if !got("a", "offer") || !got("c", "fetch") {
		t.Fatal("direct messages between a node that left and the ring did not flow")
	}
	if a.LeafSet().Contains(c.self.ID) || !a.dead.has(c.self.ID) {
		t.Fatal("a hand-over message made its receiver take the node that left back")
	}
	if a.Table().entry(c.self.ID) != nil {
		t.Fatal("a hand-over message put the node that left back into the routing table")
	}
}
