package pastry

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/simnet"
	"epost/internal/transport"
)

// simRing is a ring of Drivers on simnet at the default configuration (leaf set 24).
type simRing struct {
	t         *testing.T
	seed      uint64
	net       *simnet.Network
	drivers   []*Driver
	delivered map[string][]delivery // payload -> where it arrived
}

type delivery struct {
	at   ids.ID
	hops int
}

func newSimRing(t *testing.T, seed uint64, n int) *simRing {
	t.Helper()
	r := &simRing{t: t, seed: seed, net: simnet.New(simnet.DefaultConfig(seed)), delivered: map[string][]delivery{}}
	rng := rand.New(rand.NewPCG(seed, 0x51a))
	for i := range n {
		var id ids.ID
		for j := 0; j < ids.Bytes; j += 8 {
			binary.BigEndian.PutUint64(id[j:], rng.Uint64())
		}
		ep := r.net.AddNode(id, fmt.Sprintf("n%02d", i))
		self := Handle{ID: id, Addr: ep.LocalAddr()}
		d := NewDriver(Config{}, self, rand.New(rand.NewPCG(rng.Uint64(), uint64(i))), nil, ep, ep.Clock(), 250*time.Millisecond)
		d.OnEvent = func(e Event) {
			if e.Kind == EventDeliver {
				r.delivered[string(e.Payload)] = append(r.delivered[string(e.Payload)], delivery{at: id, hops: e.Hops})
			}
		}
		ep.SetHandler(d.Handle)
		var bootstrap []string
		if i > 0 {
			// Through the first node, which is ready: a node still joining ignores join
			// requests, and a joiner with a single bootstrap then retries it in vain.
			bootstrap = []string{r.drivers[0].Self().Addr}
		}
		d.Start(bootstrap)
		r.drivers = append(r.drivers, d)
		r.net.RunFor(20 * time.Millisecond)
	}
	r.net.RunFor(30 * time.Second)
	for _, d := range r.drivers {
		if !d.Ready() {
			var info string
			d.With(func(nd *Node) {
				info = fmt.Sprintf("phase %d, leaf %d, awaiting %d, joinTries %d", nd.Phase(), nd.LeafSet().Size(), len(nd.Awaiting()), nd.joinTries)
			})
			t.Fatalf("seed %d: %s did not join: %s", seed, d.Self(), info)
		}
	}
	return r
}

func (r *simRing) closest(key ids.ID) ids.ID {
	best := r.drivers[0].Self().ID
	for _, d := range r.drivers[1:] {
		if ids.Closer(key, d.Self().ID, best) {
			best = d.Self().ID
		}
	}
	return best
}

// TestSimRingRoutesToTheClosestNode routes messages from every node of rings of 13 to 25
// nodes at the default leaf-set size (24), where the leaf set's halves overlap (or, at 25,
// just meet): each must arrive once, at the node numerically closest to its key, in a few
// hops. Before InRange treated overlapping halves as covering the ring, messages went to
// the wrong node or circled between two nodes for ever (internal/sim, 20-node rings).
func TestSimRingRoutesToTheClosestNode(t *testing.T) {
	for _, n := range []int{13, 20, 24, 25} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			seed := uint64(n)
			if *routeSeed != 0 {
				seed = *routeSeed
			}
			r := newSimRing(t, seed, n)
			rng := rand.New(rand.NewPCG(seed, 0x6b65))
			want := map[string]ids.ID{}
			for i, d := range r.drivers {
				for j := range 20 {
					key := randID(rng)
					p := fmt.Sprintf("m%d.%d", i, j)
					want[p] = r.closest(key)
					d.Route(key, []byte(p))
				}
			}
			r.net.RunFor(10 * time.Second)
			var bad []string
			for p, at := range want {
				got := r.delivered[p]
				switch {
				case len(got) != 1:
					bad = append(bad, fmt.Sprintf("%s delivered %d times", p, len(got)))
				case got[0].at != at:
					bad = append(bad, fmt.Sprintf("%s delivered at %s, the closest node is %s", p, got[0].at.Short(), at.Short()))
				case got[0].hops > 4:
					bad = append(bad, fmt.Sprintf("%s took %d hops", p, got[0].hops))
				}
			}
			var hopLimited uint64
			for _, d := range r.drivers {
				hopLimited += d.Stats().HopLimited
			}
			if len(bad) > 0 || hopLimited > 0 {
				t.Fatalf("seed %d (rerun with -pastry.seed %d): %d of %d messages misrouted, %d dropped at the hop limit; first: %s",
					seed, seed, len(bad), len(want), hopLimited, strings.Join(bad[:min(3, len(bad))], "; "))
			}
		})
	}
}

// TestHopLimitDropsAndWarnsOnce hands a node route messages that have already made MaxHops
// hops: each is acknowledged (the sender must not re-route) and dropped, counted in the
// driver's stats, and the drops are logged in one warning per HopWarnInterval.
func TestHopLimitDropsAndWarnsOnce(t *testing.T) {
	const seed = 5
	r := newSimRing(t, seed, 3)
	d, peer := r.drivers[0], r.drivers[1].Self()
	var logBuf bytes.Buffer
	d.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	route := func(hops uint8, p string) {
		m := &message{Type: mRoute, Ring: ids.Zero, From: peer, Ready: true, Seq: 77, Key: d.Self().ID, Origin: peer, Hops: hops, Payload: []byte(p)}
		d.Handle(transport.From{ID: peer.ID, Addr: peer.Addr}, m.encode(nil))
	}
	for i := range 5 {
		route(MaxHops, fmt.Sprintf("looping %d", i))
	}
	route(MaxHops-1, "last hop")
	r.net.RunFor(time.Second)
	if got := d.Stats().HopLimited; got != 5 {
		t.Fatalf("seed %d: HopLimited = %d, want 5", seed, got)
	}
	if got := d.Stats().Dropped; got != 5 {
		t.Fatalf("seed %d: Dropped = %d, want 5", seed, got)
	}
	for i := range 5 {
		if len(r.delivered[fmt.Sprintf("looping %d", i)]) != 0 {
			t.Fatalf("seed %d: a message past the hop limit was delivered", seed)
		}
	}
	if got := r.delivered["last hop"]; len(got) != 1 || got[0].hops != MaxHops {
		t.Fatalf("seed %d: the message on its last allowed hop was delivered as %v, want once with %d hops", seed, got, MaxHops)
	}
	if n := strings.Count(logBuf.String(), "level=WARN"); n != 1 || !strings.Contains(logBuf.String(), "dropped=1 ") {
		t.Fatalf("seed %d: want one warning for the first drop, got:\n%s", seed, logBuf.String())
	}
	// Once the interval has passed, a tick reports the drops held back.
	r.net.RunFor(HopWarnInterval)
	if n := strings.Count(logBuf.String(), "level=WARN"); n != 2 || !strings.Contains(logBuf.String(), "dropped=4 ") {
		t.Fatalf("seed %d: want a second warning counting the 4 held back, got:\n%s", seed, logBuf.String())
	}
	route(MaxHops, "looping again")
	if n := strings.Count(logBuf.String(), "level=WARN"); n != 2 {
		t.Fatalf("seed %d: a drop right after a warning was logged at once:\n%s", seed, logBuf.String())
	}
}
