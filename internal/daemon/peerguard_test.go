package daemon

import (
	"testing"
	"time"

	"epost/internal/ids"
)

func TestPeerGuard(t *testing.T) {
	g := newPeerGuard(MailLimits{PeerDropAfter: 3, PeerDropWindow: time.Minute, PeerCoolOff: 10 * time.Minute})
	bad, other := ids.ID{1}, ids.ID{2}
	t0 := time.Unix(1_000_000, 0)

	// Two in a window, then the window ends: the count starts again.
	for i, at := range []time.Duration{0, 30 * time.Second, 61 * time.Second, 62 * time.Second} {
		if g.badInput(bad, t0.Add(at)) {
			t.Fatalf("message %d at +%v dropped the peer", i, at)
		}
	}
	if g.badInput(other, t0.Add(62*time.Second)) || g.refusing(other, t0.Add(62*time.Second)) {
		t.Fatal("another peer's bad input counted against it")
	}
	if !g.badInput(bad, t0.Add(63*time.Second)) {
		t.Fatal("third message within the window did not drop the peer")
	}
	if g.badInput(bad, t0.Add(64*time.Second)) {
		t.Fatal("a dropped peer was dropped again")
	}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{64 * time.Second, true}, {63*time.Second + 10*time.Minute - 1, true}, {63*time.Second + 10*time.Minute, false}} {
		if got := g.refusing(bad, t0.Add(c.at)); got != c.want {
			t.Errorf("refusing at +%v = %v, want %v", c.at, got, c.want)
		}
	}
	if st := g.status(t0); st.Dropped != 1 {
		t.Errorf("status: %+v", st)
	}

	// Never drops with a negative bound.
	never := newPeerGuard(MailLimits{PeerDropAfter: -1})
	for i := range 1000 {
		if never.badInput(bad, t0.Add(time.Duration(i))) {
			t.Fatal("PeerDropAfter -1 dropped a peer")
		}
	}
}
