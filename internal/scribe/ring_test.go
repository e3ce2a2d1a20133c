package scribe

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
)

var seedFlag = flag.Uint64("seed", 1, "seed of the simulated scribe tests")

var testRingID = ids.RingIDOf("scribe-test")

// testRing is a Pastry ring with Scribe on every node, on simnet (the pattern of
// internal/sim's simRing, which is unexported).
type testRing struct {
	t     *testing.T
	seed  uint64
	net   *simnet.Network
	rng   *rand.Rand
	pcfg  pastry.Config
	scfg  Config
	nodes []*testNode
}

type testNode struct {
	idx      int
	ep       *simnet.Endpoint
	drv      *pastry.Driver
	sc       *Scribe
	alive    bool
	ready    bool
	stopTick func()
}

// testScribeConfig is tuned for quick repair in tests: a 2 s heartbeat, so a failed parent
// is replaced within about 7 s plus the time Pastry takes to route around it.
func testScribeConfig() Config {
	return Config{Ring: testRingID, HeartbeatInterval: 2 * time.Second, SubscribeTimeout: 3 * time.Second, AnycastTimeout: 10 * time.Second}
}

func newTestRing(t *testing.T, salt uint64, n int) *testRing {
	seed := *seedFlag*1000 + salt
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reproduce with: go test ./internal/scribe -run '^%s$' -seed %d", t.Name(), *seedFlag)
			t.Logf("seed=%d (ring seed %d)", *seedFlag, seed)
		}
	})
	r := &testRing{
		t:    t,
		seed: seed,
		net:  simnet.New(simnet.DefaultConfig(seed)),
		rng:  rand.New(rand.NewPCG(seed, 0x5c1b)),
		pcfg: pastry.Config{Ring: testRingID},
		scfg: testScribeConfig(),
	}
	for i := 0; i < n; i++ {
		r.addNode(r.randomID())
		r.net.RunFor(20 * time.Millisecond)
	}
	r.settle(30 * time.Second)
	if ready := r.countReady(); ready != n {
		t.Fatalf("only %d of %d nodes ready", ready, n)
	}
	return r
}

func (r *testRing) randomID() ids.ID {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		binary.BigEndian.PutUint64(id[i:], r.rng.Uint64())
	}
	return id
}

func (r *testRing) addNode(id ids.ID) *testNode {
	idx := len(r.nodes)
	ep := r.net.AddNode(id, fmt.Sprintf("n%d", idx))
	tn := &testNode{idx: idx, ep: ep, alive: true}
	var bootstrap []string
	if live := r.liveNodes(); len(live) > 0 {
		bootstrap = []string{live[r.rng.IntN(len(live))].ep.LocalAddr()}
	}
	r.nodes = append(r.nodes, tn)

	self := pastry.Handle{ID: ep.ID(), Addr: ep.LocalAddr()}
	mux := appmux.New()
	tn.drv = pastry.NewDriver(r.pcfg, self, rand.New(rand.NewPCG(r.rng.Uint64(), uint64(idx))), mux.Forward, ep, ep.Clock(), 250*time.Millisecond)
	cfg := r.scfg
	cfg.Now = ep.Clock().Now
	cfg.Rand = rand.New(rand.NewPCG(r.rng.Uint64(), uint64(idx)+1))
	tn.sc = New(cfg, tn.drv)
	if err := mux.Register(appmux.TagScribe, tn.sc); err != nil {
		r.t.Fatal(err)
	}
	tn.drv.OnEvent = func(e pastry.Event) {
		if e.Kind == pastry.EventReady {
			tn.ready = true
		}
		mux.OnEvent(e)
	}
	ep.SetHandler(tn.drv.Handle)
	tn.drv.Start(bootstrap)
	tn.stopTick = tn.sc.RunTicker(ep.Clock(), 500*time.Millisecond)
	return tn
}

// crash kills a node without goodbye: its timers stop and frames to it vanish.
func (r *testRing) crash(tn *testNode) {
	tn.alive = false
	tn.stopTick()
	tn.sc.Stop()
	tn.drv.Stop()
	tn.ep.Crash()
}

func (r *testRing) settle(d time.Duration) { r.net.RunFor(d) }

func (r *testRing) liveNodes() []*testNode {
	var out []*testNode
	for _, tn := range r.nodes {
		if tn.alive && tn.ready {
			out = append(out, tn)
		}
	}
	return out
}

func (r *testRing) countReady() int { return len(r.liveNodes()) }

// closestLive is the global truth: the live node numerically closest to key.
func (r *testRing) closestLive(key ids.ID) *testNode {
	live := r.liveNodes()
	slices.SortFunc(live, func(a, b *testNode) int {
		if ids.Closer(key, a.ep.ID(), b.ep.ID()) {
			return -1
		}
		if ids.Closer(key, b.ep.ID(), a.ep.ID()) {
			return 1
		}
		return 0
	})
	return live[0]
}

// treeNodes are the live nodes holding state for topic.
func (r *testRing) treeNodes(topic ids.Key) map[*testNode]TopicState {
	out := map[*testNode]TopicState{}
	for _, tn := range r.liveNodes() {
		if st, ok := tn.sc.State(topic); ok {
			out[tn] = st
		}
	}
	return out
}

// scribeSent sums the Scribe messages live nodes have sent.
func (r *testRing) scribeSent() uint64 {
	var n uint64
	for _, tn := range r.liveNodes() {
		n += tn.sc.Stats().Sent
	}
	return n
}

// member is a test App that counts deliveries by payload.
type member struct {
	node   *testNode
	got    map[string]int
	accept bool
	offers int
}

func (m *member) Deliver(_ ids.Key, p []byte) { m.got[string(p)]++ }

func (m *member) AnycastAccept(_ ids.Key, p []byte) bool {
	m.offers++
	return m.accept
}

func (r *testRing) subscribe(topic ids.Key, nodes []*testNode) []*member {
	var ms []*member
	for _, tn := range nodes {
		m := &member{node: tn, got: map[string]int{}}
		if err := tn.sc.Subscribe(topic, m); err != nil {
			r.t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

// pick returns k distinct random live nodes.
func (r *testRing) pick(k int) []*testNode {
	live := r.liveNodes()
	r.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	return live[:k]
}

// multicastAndCheck multicasts count messages from random live nodes and checks that every
// live member in want got each exactly once and that unsubscribed members got none.
func (r *testRing) multicastAndCheck(topic ids.Key, label string, count int, want, unwanted []*member) {
	r.t.Helper()
	var sent []string
	for i := 0; i < count; i++ {
		src := r.pick(1)[0]
		p := fmt.Sprintf("%s-%d", label, i)
		if err := src.sc.Multicast(topic, []byte(p)); err != nil {
			r.t.Fatal(err)
		}
		sent = append(sent, p)
		r.net.RunFor(200 * time.Millisecond)
	}
	// Pastry may take a few seconds to route around nodes that crashed recently (hop
	// timeouts, then reroutes), so allow for that before counting.
	r.net.RunFor(15 * time.Second)
	bad := 0
	for _, m := range want {
		if !m.node.alive {
			continue
		}
		for _, p := range sent {
			if m.got[p] != 1 {
				bad++
				if bad <= 5 {
					st, _ := m.node.sc.State(topic)
					r.t.Errorf("%s: member n%d got %q %d times (state %+v)", label, m.node.idx, p, m.got[p], st)
				}
			}
		}
	}
	for _, m := range unwanted {
		for _, p := range sent {
			if m.got[p] != 0 {
				r.t.Errorf("%s: unsubscribed n%d got %q", label, m.node.idx, p)
			}
		}
	}
	if bad > 5 {
		r.t.Errorf("%s: %d missing or duplicate deliveries in all", label, bad)
	}
}

// treeWhole reports whether every live member's chain of parents leads, through live nodes
// that agree they are parent and child, to the live node closest to the topic.
func (r *testRing) treeWhole(topic ids.Key, members []*member) bool {
	byID := map[ids.ID]*testNode{}
	for _, tn := range r.liveNodes() {
		byID[tn.ep.ID()] = tn
	}
	root := r.closestLive(topic.ID)
	for _, m := range members {
		if !m.node.alive {
			continue
		}
		tn := m.node
		for hops := 0; ; hops++ {
			st, ok := tn.sc.State(topic)
			if !ok || hops > 64 {
				return false
			}
			if st.Root {
				if tn != root {
					return false
				}
				break
			}
			p := byID[st.Parent.ID]
			if p == nil {
				return false
			}
			pst, ok := p.sc.State(topic)
			if !ok || !slices.ContainsFunc(pst.Children, func(h pastry.Handle) bool { return h.ID == tn.ep.ID() }) {
				return false
			}
			tn = p
		}
	}
	return true
}

// awaitWhole runs the network until the tree is whole again and returns how long that took.
func (r *testRing) awaitWhole(topic ids.Key, members []*member, limit time.Duration) (time.Duration, bool) {
	start := r.net.Elapsed()
	for r.net.Elapsed()-start < limit {
		if r.treeWhole(topic, members) {
			return r.net.Elapsed() - start, true
		}
		r.net.RunFor(250 * time.Millisecond)
	}
	return limit, false
}
