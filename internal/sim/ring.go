// Package sim runs the overlay at scale on simnet and measures it: the experiments behind
// `epost sim`. It alone has global knowledge (who is alive, which node is truly closest to a
// key); the protocol under test never sees it.
package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
	"epost/internal/transport"
)

// simRing is a ring of Pastry nodes on simnet plus the simulator's global view.
type simRing struct {
	net   *simnet.Network
	rng   *rand.Rand
	cfg   pastry.Config
	tick  time.Duration
	nodes []*simNode
	live  []ids.ID // sorted ids of live, ready nodes (global truth)
	dirty bool     // live needs rebuilding

	onDeliver func(sn *simNode, e pastry.Event)
	onForward func(sn *simNode, payload []byte, next pastry.Handle) // diagnostics
	// forward, if set, is the applications' Forward upcall on sn (PAST answers lookups on
	// the route, as it does on a real node).
	forward func(sn *simNode, key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool)
	rejects uint64
}

type simNode struct {
	idx     int
	ep      *simnet.Endpoint
	drv     *pastry.Driver
	alive   bool
	ready   bool
	readyAt time.Duration
	joinAt  time.Duration
	diedAt  time.Duration
}

func newSimRing(seed uint64, cfg pastry.Config, tick time.Duration) *simRing {
	net := simnet.New(simnet.DefaultConfig(seed))
	return &simRing{net: net, rng: rand.New(rand.NewPCG(seed, 0xa11ce)), cfg: cfg, tick: tick}
}

func (r *simRing) randomID() ids.ID {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		binary.BigEndian.PutUint64(id[i:], r.rng.Uint64())
	}
	return id
}

// addNode creates a node at a random place in the latency space and starts its join through
// a nearby live node (or founds the ring when there is none).
func (r *simRing) addNode() *simNode {
	id := r.randomID()
	idx := len(r.nodes)
	ep := r.net.AddNode(id, fmt.Sprintf("n%d", idx))
	sn := &simNode{idx: idx, ep: ep, alive: true, joinAt: r.net.Elapsed()}
	bootstrap := r.nearbyBootstrap(ep)
	r.nodes = append(r.nodes, sn)
	r.startNode(sn, bootstrap)
	return sn
}

func (r *simRing) startNode(sn *simNode, bootstrap []string) {
	self := pastry.Handle{ID: sn.ep.ID(), Addr: sn.ep.LocalAddr()}
	nodeRng := rand.New(rand.NewPCG(r.rng.Uint64(), uint64(sn.idx)))
	var fwd pastry.Forwarder
	switch {
	case r.forward != nil:
		fwd = func(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
			return r.forward(sn, key, payload, next)
		}
	case r.onForward != nil:
		fwd = func(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
			r.onForward(sn, payload, next)
			return payload, true
		}
	}
	sn.drv = pastry.NewDriver(r.cfg, self, nodeRng, fwd, sn.ep, sn.ep.Clock(), r.tick)
	sn.drv.OnEvent = func(e pastry.Event) {
		switch e.Kind {
		case pastry.EventReady:
			sn.ready = true
			sn.readyAt = r.net.Elapsed()
			r.dirty = true
		case pastry.EventDeliver:
			if r.onDeliver != nil {
				r.onDeliver(sn, e)
			}
		}
	}
	sn.drv.OnReject = func(transport.From, error) { r.rejects++ }
	sn.ep.SetHandler(sn.drv.Handle)
	sn.drv.Start(bootstrap)
}

// crash kills a node: no goodbye, its timers stop, frames to it vanish.
func (r *simRing) crash(sn *simNode) {
	sn.alive = false
	sn.diedAt = r.net.Elapsed()
	sn.ready = false
	sn.drv.Stop()
	sn.ep.Crash()
	r.dirty = true
}

// leave stops a node cleanly: it tells its leaf set and routing table it is gone (see
// pastry.Node.Leave) and lingers for grace, answering nothing, before its endpoint goes down.
func (r *simRing) leave(sn *simNode, grace time.Duration) (leaf, others int) {
	sn.alive = false
	sn.diedAt = r.net.Elapsed()
	sn.ready = false
	r.dirty = true
	leaf, others = sn.drv.Leave()
	r.net.AfterFunc(grace, func() {
		sn.drv.Stop()
		sn.ep.Crash()
	})
	return leaf, others
}

// nearbyBootstrap picks, among a sample of live ready nodes, the one closest in latency: a
// newcomer joins through a nearby node, as Pastry assumes.
func (r *simRing) nearbyBootstrap(to *simnet.Endpoint) []string {
	var best *simNode
	var bestLat time.Duration
	if len(r.nodes) == 0 {
		return nil
	}
	for try := 0; try < 64; try++ {
		c := r.nodes[r.rng.IntN(len(r.nodes))]
		if !c.alive || !c.ready || c.ep == to {
			continue
		}
		if lat := r.net.Latency(c.ep, to); best == nil || lat < bestLat {
			best, bestLat = c, lat
		}
	}
	if best == nil {
		for _, c := range r.nodes {
			if c.alive && c.ready && c.ep != to {
				best = c
				break
			}
		}
	}
	if best == nil {
		return nil
	}
	return []string{best.ep.LocalAddr()}
}

func (r *simRing) liveIDs() []ids.ID {
	if r.dirty || r.live == nil {
		r.live = r.live[:0]
		for _, sn := range r.nodes {
			if sn.alive && sn.ready {
				r.live = append(r.live, sn.ep.ID())
			}
		}
		slices.SortFunc(r.live, ids.Cmp)
		r.dirty = false
	}
	return r.live
}

// closestLive is the live, ready node numerically closest to key: the correct destination.
func (r *simRing) closestLive(key ids.ID) ids.ID {
	live := r.liveIDs()
	if len(live) == 0 {
		return ids.Zero
	}
	i, _ := slices.BinarySearchFunc(live, key, ids.Cmp)
	a := live[i%len(live)]
	b := live[(i-1+len(live))%len(live)]
	if ids.Closer(key, a, b) {
		return a
	}
	return b
}

func (r *simRing) countAlive() (alive, ready int) {
	for _, sn := range r.nodes {
		if sn.alive {
			alive++
			if sn.ready {
				ready++
			}
		}
	}
	return
}

// leafSetAccuracy is the percentage of live ready nodes whose leaf set equals the one computed
// from the global truth.
func (r *simRing) leafSetAccuracy() float64 {
	live := r.liveIDs()
	if len(live) == 0 {
		return 0
	}
	half := r.cfg.LeafSetSize / 2
	good, total := 0, 0
	for _, sn := range r.nodes {
		if !sn.alive || !sn.ready {
			continue
		}
		total++
		want := expectedLeafSet(live, sn.ep.ID(), half)
		var got []ids.ID
		sn.drv.With(func(n *pastry.Node) {
			for _, h := range n.LeafSet().Members() {
				got = append(got, h.ID)
			}
		})
		slices.SortFunc(got, ids.Cmp)
		if slices.Equal(got, want) {
			good++
		}
	}
	return 100 * float64(good) / float64(total)
}

// expectedLeafSet is the sorted set of up to half nodes on each side of self among sorted live.
func expectedLeafSet(live []ids.ID, self ids.ID, half int) []ids.ID {
	i, found := slices.BinarySearchFunc(live, self, ids.Cmp)
	if !found {
		return nil
	}
	n := len(live)
	set := map[ids.ID]bool{}
	for k := 1; k <= half && k < n; k++ {
		set[live[(i+k)%n]] = true
		set[live[(i-k+n)%n]] = true
	}
	out := make([]ids.ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.SortFunc(out, ids.Cmp)
	return out
}

// pickVictims orders alive for a failure of k nodes at once and returns the first k: the k
// nearest to a random point of the latency space when correlated (a site going dark), else k
// at random. It draws from rng the same way for every experiment, so a seed's output is stable.
func pickVictims[T any](alive []T, k int, correlated bool, rng *rand.Rand, ep func(T) *simnet.Endpoint) []T {
	if correlated {
		cx, cy := rng.Float64(), rng.Float64()
		slices.SortStableFunc(alive, func(a, b T) int {
			ea, eb := ep(a), ep(b)
			da := math.Hypot(ea.X-cx, ea.Y-cy)
			db := math.Hypot(eb.X-cx, eb.Y-cy)
			switch {
			case da < db:
				return -1
			case da > db:
				return 1
			}
			return 0
		})
	} else {
		rng.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
	}
	return alive[:k]
}

// randomBytes draws n pseudo-random bytes from rng, eight per draw (the experiments' payloads).
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for j := 0; j < n; j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < n; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// randomLive picks a random peer whose node is alive and ready (there must be one).
func randomLive[T any](rng *rand.Rand, peers []T, node func(T) *simNode) T {
	for {
		p := peers[rng.IntN(len(peers))]
		if sn := node(p); sn.alive && sn.ready {
			return p
		}
	}
}

// checkFailure checks the --fail and --fail-mode flags every experiment shares: fail a
// fraction in [0, 1), mode one of modes (modes[0] when empty).
func checkFailure(fail float64, mode *string, modes ...string) error {
	if fail < 0 || fail >= 1 {
		return errors.New("--fail must be a fraction in [0, 1)")
	}
	if *mode == "" {
		*mode = modes[0]
	}
	if !slices.Contains(modes, *mode) {
		want := strings.Join(modes[:len(modes)-1], ", ") + " or " + modes[len(modes)-1]
		return fmt.Errorf("--fail-mode %q: want %s", *mode, want)
	}
	return nil
}
