package multiring

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
)

// linkWorld is one ring's nodes talking through RingLink over an in-memory overlay: frames
// are delivered on goroutines (as the daemon's event loop would), a dead node drops them.
type linkWorld struct {
	mu       sync.Mutex
	links    map[ids.ID]*RingLink
	dead     map[ids.ID]bool
	gateways map[ids.ID]bool
	asked    map[ids.ID][]string // questions each gateway took: entry ids
	anycasts int
	members  []ids.ID // what the ring's gateway group answers, in turn (the last one repeats)
}

func nodeID(i byte) ids.ID {
	var id ids.ID
	id[0], id[31] = i, i
	return id
}

func addr(id ids.ID) string { return fmt.Sprintf("10.0.0.%d:4000", id[0]) }

func newLinkWorld() *linkWorld {
	return &linkWorld{links: map[ids.ID]*RingLink{}, dead: map[ids.ID]bool{}, gateways: map[ids.ID]bool{}, asked: map[ids.ID][]string{}}
}

type linkOverlay struct {
	w    *linkWorld
	self ids.ID
}

func (o linkOverlay) Send(to pastry.Handle, payload []byte) {
	w := o.w
	w.mu.Lock()
	l, dead := w.links[to.ID], w.dead[to.ID] || w.dead[o.self]
	w.mu.Unlock()
	if l == nil || dead || to.Addr != addr(to.ID) {
		return
	}
	go l.App().HandleEvent(pastry.Event{Kind: pastry.EventDirect, Origin: pastry.Handle{ID: o.self, Addr: addr(o.self)}, Payload: payload})
}

type linkTopics struct{ w *linkWorld }

func (linkTopics) Subscribe(ids.Key, scribe.App) error { return nil }

func (t linkTopics) Anycast(topic ids.Key, _ []byte, result func(scribe.AnycastResult)) error {
	w := t.w
	w.mu.Lock()
	w.anycasts++
	m := w.members[0]
	if len(w.members) > 1 {
		w.members = w.members[1:]
	}
	w.mu.Unlock()
	go result(scribe.AnycastResult{Topic: topic, Member: pastry.Handle{ID: m, Addr: addr(m)}})
	return nil
}

// recordingSide is a gateway's side that takes every internet hand-off.
type recordingSide struct {
	w  *linkWorld
	id ids.ID
}

func (recordingSide) Bundle(ids.RingID) ([]byte, bool) { return nil, false }
func (recordingSide) LookupRecord(_ ids.RingID, _ string, cb func(*identity.Record, identity.SignedRecord, error)) {
	cb(nil, identity.SignedRecord{}, ErrRemoteUnknown)
}
func (recordingSide) Queue(string, string, *post.RemoteBundle, bool) (map[string]string, bool, error) {
	return nil, false, nil
}
func (s recordingSide) QueueInternet(entry, _ string, _ []string, _ []byte) error {
	s.w.mu.Lock()
	s.w.asked[s.id] = append(s.w.asked[s.id], entry)
	s.w.mu.Unlock()
	return nil
}

func (w *linkWorld) add(id ids.ID, gateway bool) *RingLink {
	cfg := RingLinkConfig{Topics: linkTopics{w}, Ov: linkOverlay{w, id},
		IsGateway: func(n ids.ID) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.gateways[n] }}
	if gateway {
		cfg.Gateway = func() GatewaySide { return recordingSide{w, id} }
	}
	l := NewRingLink(cfg)
	w.mu.Lock()
	w.links[id] = l
	w.gateways[id] = gateway
	w.mu.Unlock()
	return l
}

func (w *linkWorld) kill(id ids.ID) {
	w.mu.Lock()
	w.dead[id] = true
	w.mu.Unlock()
}

func (w *linkWorld) takenBy(id ids.ID) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.asked[id]...)
}

// handOff gives a message to the ring's gateways and says how long the answer took.
func handOff(t *testing.T, l *RingLink, entry string) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	l.HandOffInternet(entry, "alice@acme.example", []string{"carol@internet.example"}, []byte("Subject: hi\r\n\r\nhi\r\n"), func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("hand-off %s: %v", entry, err)
	}
	return time.Since(start)
}

// A gateway that does not acknowledge within ReceiptTimeout is replaced: the next gateway has
// the question about a second after it was asked (not after the 10 s question timeout), with
// the same entry id.
func TestReceiptTimeoutAsksNextGateway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newLinkWorld()
		node := w.add(nodeID(1), false)
		g1, g2 := nodeID(11), nodeID(12)
		w.add(g1, true)
		w.add(g2, true)
		w.kill(g1)
		w.members = []ids.ID{g1, g2} // the group still names the dead gateway first

		took := handOff(t, node, "entry-1")
		if took < DefaultReceiptTimeout || took > DefaultReceiptTimeout+100*time.Millisecond {
			t.Errorf("answered after %v, want about %v (one receipt timeout)", took, DefaultReceiptTimeout)
		}
		if got := w.takenBy(g2); len(got) != 1 || got[0] != "entry-1" {
			t.Errorf("the second gateway took %q, want [entry-1]", got)
		}
		// The silent gateway is avoided from now on: the next hand-off goes straight on.
		w.members = []ids.ID{g1, g2}
		if took := handOff(t, node, "entry-2"); took > 100*time.Millisecond {
			t.Errorf("second hand-off answered after %v: the silent gateway was asked again", took)
		}
	})
}

// The roster a gateway sends with its receipt and answer lets a node skip a dead gateway the
// ring's group still names: without it, every anycast gives the dead gateway and the question
// fails.
func TestRosterSkipsDeadGateway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newLinkWorld()
		node := w.add(nodeID(1), false)
		gws := []ids.ID{nodeID(11), nodeID(12), nodeID(13)}
		for _, g := range gws {
			l := w.add(g, true)
			l.beacons.SetSelf(RosterEntry{ID: g, RingAddr: addr(g)})
		}
		// The gateways hear each other's beacons.
		for _, g := range gws {
			for _, h := range gws {
				w.links[g].beacons.Heard(RosterEntry{ID: h, RingAddr: addr(h)})
			}
		}
		dead := gws[0]
		w.members = []ids.ID{dead} // the group answers with the first gateway, now and later
		handOff(t, node, "before")
		w.kill(dead)

		for i := range 5 {
			entry := fmt.Sprintf("after-%d", i)
			took := handOff(t, node, entry)
			// At most one receipt timeout: the dead gateway may be picked once from the
			// roster before it is excluded, never twice.
			if took > DefaultReceiptTimeout+100*time.Millisecond {
				t.Errorf("%s answered after %v", entry, took)
			}
		}
		if w.anycasts != 1 {
			t.Errorf("%d anycasts to the gateway group, want 1 (the rest from the roster)", w.anycasts)
		}
		n := 0
		for _, g := range gws[1:] {
			n += len(w.takenBy(g))
		}
		if n != 5 {
			t.Errorf("the live gateways took %d hand-offs, want 5", n)
		}

		// Without the roster (a gateway of an older build), the group's dead member is all
		// the node knows: it asks it and gives up after the tries allowed.
		w2 := newLinkWorld()
		node2 := w2.add(nodeID(1), false)
		for _, g := range gws {
			w2.add(g, true)
		}
		w2.members = []ids.ID{dead}
		handOff(t, node2, "before")
		w2.kill(dead)
		done := make(chan error, 1)
		node2.HandOffInternet("after", "alice@acme.example", []string{"carol@internet.example"}, []byte("x"), func(err error) { done <- err })
		if err := <-done; !errors.Is(err, ErrRemoteUnavailable) {
			t.Errorf("without a roster: %v, want ErrRemoteUnavailable", err)
		}
	})
}

// Roster entries are hints: a node named in one answers only if the role table says it is a
// gateway; a receipt from anyone else is ignored.
func TestRosterEntryNotGatewayIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newLinkWorld()
		node := w.add(nodeID(1), false)
		g, impostor := nodeID(11), nodeID(21)
		w.add(g, true)
		w.add(impostor, true) // would answer, but its certificate carries no gateway role
		w.mu.Lock()
		w.gateways[impostor] = false
		w.mu.Unlock()
		w.members = []ids.ID{g}
		node.choice.learn([]RosterEntry{{ID: impostor, RingAddr: addr(impostor)}}, time.Now())
		took := handOff(t, node, "e")
		if took < DefaultReceiptTimeout {
			t.Errorf("answered after %v: the impostor's receipt counted", took)
		}
		if got := w.takenBy(g); len(got) != 1 {
			t.Errorf("the gateway took %q, want the hand-off", got)
		}
	})
}

func TestRosterCodec(t *testing.T) {
	rs := []RosterEntry{{ID: nodeID(1), RingAddr: "a:1", GlobalAddr: "g:1"}, {ID: nodeID(2), RingAddr: "a:2"}}
	e, ok := decodeBeacon(encodeBeacon(rs[0]))
	if !ok || e != rs[0] {
		t.Fatalf("beacon round trip: %v %v", e, ok)
	}
	for _, b := range [][]byte{nil, {1}, {2, 0}, encodeBeacon(rs[1])[:10]} {
		if _, ok := decodeBeacon(b); ok {
			t.Errorf("decodeBeacon(%x) accepted", b)
		}
	}
}

func FuzzDecodeBeacon(f *testing.F) {
	f.Add(encodeBeacon(RosterEntry{ID: nodeID(1), RingAddr: "a:1", GlobalAddr: "g:1"}))
	f.Fuzz(func(t *testing.T, b []byte) { decodeBeacon(b) })
}
