package scribe

import (
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
)

// fakeOverlay records what Scribe asks Pastry to do, so the state machine can be driven by
// hand, one message at a time.
type fakeOverlay struct {
	self     pastry.Handle
	routes   []*message
	sends    map[ids.ID][]*message
	deferred []func()
	closest  bool // whether this node is closest to every key
}

func (f *fakeOverlay) Route(key ids.ID, p []byte) { f.routes = append(f.routes, mustDecode(p)) }
func (f *fakeOverlay) Send(to pastry.Handle, p []byte) {
	f.sends[to.ID] = append(f.sends[to.ID], mustDecode(p))
}
func (f *fakeOverlay) Defer(fn func())              { f.deferred = append(f.deferred, fn) }
func (f *fakeOverlay) Self() pastry.Handle          { return f.self }
func (f *fakeOverlay) With(fn func(n *pastry.Node)) {}

func (f *fakeOverlay) flush() {
	d := f.deferred
	f.deferred = nil
	for _, fn := range d {
		fn()
	}
}

func mustDecode(p []byte) *message {
	m, err := decode(testTag, p)
	if err != nil {
		panic(err) // our own encoder produced it: a bug in the test subject
	}
	return m
}

type machine struct {
	t   *testing.T
	ov  *fakeOverlay
	s   *Scribe
	now time.Time
}

func newMachine(t *testing.T) *machine {
	m := &machine{t: t, now: simnet.Epoch}
	m.ov = &fakeOverlay{self: handle("self"), sends: map[ids.ID][]*message{}}
	cfg := testScribeConfig()
	cfg.Tag = testTag
	cfg.Now = func() time.Time { return m.now }
	cfg.Rand = rand.New(rand.NewPCG(1, 2))
	m.s = New(cfg, m.ov)
	return m
}

func handle(name string) pastry.Handle { return pastry.Handle{ID: ids.HashString(name), Addr: name} }

func (m *machine) direct(from pastry.Handle, msg *message) {
	if !m.s.HandleEvent(pastry.Event{Kind: pastry.EventDirect, Origin: from, Payload: msg.encode(testTag)}) {
		m.t.Fatalf("%s not taken as a scribe message", msg.Type)
	}
}

func (m *machine) lastSent(to pastry.Handle) *message {
	l := m.ov.sends[to.ID]
	if len(l) == 0 {
		m.t.Fatalf("nothing sent to %s", to.Addr)
	}
	return l[len(l)-1]
}

var topicT = NewTopic(testRingID, "machine")

func TestForwardGraftsAndStops(t *testing.T) {
	m := newMachine(t)
	a, b, next := handle("a"), handle("b"), handle("next")
	sub := &message{Type: mSubscribe, Topic: topicT.ID, Child: a}

	// First subscribe through a node outside the tree: it adopts a and goes on as itself.
	out, ok := m.s.Forward(topicT.ID, sub.encode(testTag), next)
	if !ok {
		t.Fatal("subscribe through a node outside the tree must go on")
	}
	if got := mustDecode(out); got.Child.ID != m.ov.self.ID {
		t.Fatalf("forwarded subscribe names child %s, want this node", got.Child.Addr)
	}
	m.ov.flush()
	if ack := m.lastSent(a); ack.Type != mSubscribeAck {
		t.Fatalf("a got %s, want subscribe-ack", ack.Type)
	}
	// A second one stops here: the node is already in the tree (pending counts).
	if _, ok := m.s.Forward(topicT.ID, (&message{Type: mSubscribe, Topic: topicT.ID, Child: b}).encode(testTag), next); ok {
		t.Fatal("subscribe reaching a tree node must stop there")
	}
	m.ov.flush()
	st, _ := m.s.State(topicT)
	if len(st.Children) != 2 || !st.Pending {
		t.Fatalf("state %+v, want pending with two children", st)
	}
	// The parent's ack attaches us.
	m.direct(next, &message{Type: mSubscribeAck, Topic: topicT.ID, Depth: 2})
	st, _ = m.s.State(topicT)
	if st.Parent.ID != next.ID || st.Pending || st.Depth != 3 {
		t.Fatalf("state %+v, want attached to next at depth 3", st)
	}
	// Our parent re-subscribing through us must not be adopted (a two-node loop).
	out, ok = m.s.Forward(topicT.ID, (&message{Type: mSubscribe, Topic: topicT.ID, Child: next}).encode(testTag), handle("other"))
	if !ok || mustDecode(out).Child.ID != next.ID {
		t.Fatal("our parent's subscribe must pass through unchanged")
	}
	// Other applications' payloads and garbage are not scribe's business / dropped.
	if out, ok := m.s.Forward(topicT.ID, []byte{0x7f, 1, 2}, next); !ok || len(out) != 3 {
		t.Fatal("foreign payload must pass through")
	}
	if _, ok := m.s.Forward(topicT.ID, []byte{testTag, 1, 99}, next); ok {
		t.Fatal("malformed scribe payload must be dropped")
	}
	if m.s.Stats().Rejected != 1 {
		t.Fatalf("rejected = %d, want 1", m.s.Stats().Rejected)
	}
}

func TestRepairTriggers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(m *machine, parent pastry.Handle)
		leave bool // the old parent is told to forget us
	}{
		{"parent silent", func(m *machine, _ pastry.Handle) {
			m.now = m.now.Add(m.s.cfg.ParentTimeout + time.Second)
			m.s.Tick(m.now)
		}, true},
		{"not your parent", func(m *machine, p pastry.Handle) {
			m.direct(p, &message{Type: mHeartbeatAck, Acks: []topicAck{{topicT.ID, depthNotParent}}})
		}, false},
		{"loop: depth beyond max", func(m *machine, p pastry.Handle) {
			m.direct(p, &message{Type: mHeartbeatAck, Acks: []topicAck{{topicT.ID, uint8(m.s.cfg.MaxDepth)}}})
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t)
			parent := handle("parent")
			if err := m.s.Subscribe(topicT, &member{got: map[string]int{}}); err != nil {
				t.Fatal(err)
			}
			if len(m.ov.routes) != 1 || m.ov.routes[0].Type != mSubscribe {
				t.Fatalf("routes %v, want one subscribe", m.ov.routes)
			}
			m.direct(parent, &message{Type: mSubscribeAck, Topic: topicT.ID, Depth: 0})
			tc.event(m, parent)
			st, _ := m.s.State(topicT)
			if !st.Pending || !st.Parent.ID.IsZero() || len(m.ov.routes) != 2 {
				t.Fatalf("state %+v after %d routes: want a new subscribe", st, len(m.ov.routes))
			}
			left := false
			for _, x := range m.ov.sends[parent.ID] {
				left = left || x.Type == mLeave
			}
			if left != tc.leave {
				t.Fatalf("leave sent to old parent: %v, want %v", left, tc.leave)
			}
			if m.s.Stats().Repairs != 1 {
				t.Fatalf("repairs = %d", m.s.Stats().Repairs)
			}
		})
	}
}

func TestHeartbeatAnswers(t *testing.T) {
	m := newMachine(t)
	child, stranger := handle("child"), handle("stranger")
	m.s.Forward(topicT.ID, (&message{Type: mSubscribe, Topic: topicT.ID, Child: child}).encode(testTag), handle("next"))
	other := ids.HashString("unknown topic")
	m.direct(child, &message{Type: mHeartbeat, Topics: []ids.ID{topicT.ID, other}})
	ack := m.lastSent(child)
	if ack.Type != mHeartbeatAck || len(ack.Acks) != 2 || ack.Acks[0].Depth == depthNotParent || ack.Acks[1].Depth != depthNotParent {
		t.Fatalf("heartbeat answer %+v", ack)
	}
	// A child silent for ChildTimeout is dropped; with no member left the node leaves.
	m.now = m.now.Add(m.s.cfg.ChildTimeout + time.Second)
	m.s.Tick(m.now)
	if _, ok := m.s.State(topicT); ok {
		t.Fatal("forwarder without children or members must forget the topic")
	}
	// Garbage from a peer is counted, never a panic.
	for _, b := range [][]byte{{testTag}, {testTag, wireVersion}, {testTag, wireVersion, byte(mAnycast), 1}} {
		m.s.HandleEvent(pastry.Event{Kind: pastry.EventDirect, Origin: stranger, Payload: b})
	}
	if m.s.Stats().Rejected != 3 {
		t.Fatalf("rejected = %d, want 3", m.s.Stats().Rejected)
	}
}

func TestAPIRejectsBadInput(t *testing.T) {
	m := newMachine(t)
	other := NewTopic(ids.RingIDOf("elsewhere"), "x")
	if err := m.s.Subscribe(other, &member{}); err == nil {
		t.Error("subscribe to another ring's topic accepted")
	}
	if err := m.s.Multicast(topicT, make([]byte, MaxPayload+1)); err == nil {
		t.Error("oversized multicast accepted")
	}
	if err := m.s.Anycast(other, nil, nil); err == nil {
		t.Error("anycast to another ring's topic accepted")
	}
}
