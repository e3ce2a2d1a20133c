package appmux

import (
	"errors"
	"testing"

	"epost/internal/ids"
	"epost/internal/pastry"
)

type recApp struct {
	tag      byte
	forwards int
	events   []pastry.EventKind
}

func (a *recApp) Forward(key ids.ID, p []byte, next pastry.Handle) ([]byte, bool) {
	a.forwards++
	return append([]byte{a.tag, 'x'}, p[1:]...), true
}

func (a *recApp) HandleEvent(e pastry.Event) bool {
	a.events = append(a.events, e.Kind)
	return true
}

func TestMuxDispatch(t *testing.T) {
	m := New()
	a, b := &recApp{tag: 1}, &recApp{tag: 2}
	if err := m.Register(1, a); err != nil {
		t.Fatal(err)
	}
	if err := m.Register(2, b); err != nil {
		t.Fatal(err)
	}
	if err := m.Register(1, b); !errors.Is(err, ErrTagTaken) {
		t.Fatalf("duplicate tag: got %v", err)
	}
	unknown := 0
	m.OnUnknown = func(pastry.Event) { unknown++ }

	p, ok := m.Forward(ids.Zero, []byte{1, 'a'}, pastry.Handle{})
	if !ok || string(p) != "\x01xa" || a.forwards != 1 || b.forwards != 0 {
		t.Fatalf("forward to app 1: %q %v %d %d", p, ok, a.forwards, b.forwards)
	}
	for _, in := range [][]byte{nil, {9, 1}} {
		p, ok := m.Forward(ids.Zero, in, pastry.Handle{})
		if !ok || string(p) != string(in) {
			t.Fatalf("untagged payload %q must pass through, got %q %v", in, p, ok)
		}
	}
	m.OnEvent(pastry.Event{Kind: pastry.EventDirect, Payload: []byte{2}})
	m.OnEvent(pastry.Event{Kind: pastry.EventDeliver, Payload: []byte{7}})
	m.OnEvent(pastry.Event{Kind: pastry.EventDeliver})
	m.OnEvent(pastry.Event{Kind: pastry.EventLeafSetChanged})
	if len(a.events) != 1 || len(b.events) != 2 || unknown != 2 {
		t.Fatalf("events: a=%v b=%v unknown=%d", a.events, b.events, unknown)
	}
}
