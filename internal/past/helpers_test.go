package past

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
)

// testRing is a small PAST ring on simnet, built through the real join protocol, plus the
// global knowledge tests judge by.
type testRing struct {
	t     *testing.T
	seed  uint64
	net   *simnet.Network
	rng   *rand.Rand
	ring  ids.RingID
	cfg   Config
	nodes []*testNode
}

type testNode struct {
	ep    *simnet.Endpoint
	pd    *pastry.Driver
	st    *MemStore
	node  *Node
	drv   *Driver
	alive bool
}

func testConfig() Config {
	c := DefaultConfig()
	c.Ring = ids.RingIDOf("test")
	c.MaintenanceInterval = time.Minute
	c.GCInterval = 30 * time.Second
	c.DropGrace = 5 * time.Minute
	return c
}

func newTestRing(t *testing.T, seed uint64, n int, cfg Config) *testRing {
	t.Helper()
	r := &testRing{t: t, seed: seed, net: simnet.New(simnet.DefaultConfig(seed)), rng: rand.New(rand.NewPCG(seed, 7)), ring: cfg.Ring, cfg: cfg}
	for i := 0; i < n; i++ {
		r.add()
		r.net.RunFor(300 * time.Millisecond)
	}
	r.net.RunFor(30 * time.Second)
	for i, tn := range r.nodes {
		if !tn.pd.Ready() {
			t.Fatalf("seed %d: node %d not ready after build", seed, i)
		}
	}
	return r
}

// add joins one node (through the first node) with PAST attached; lookups are answered by the
// first replica on the route (the Forwarder is installed).
func (r *testRing) add() *testNode {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		binary.BigEndian.PutUint64(id[i:], r.rng.Uint64())
	}
	idx := len(r.nodes)
	ep := r.net.AddNode(id, fmt.Sprintf("n%d", idx))
	tn := &testNode{ep: ep, alive: true}
	self := pastry.Handle{ID: id, Addr: ep.LocalAddr()}
	pcfg := pastry.Config{Ring: r.ring, LeafSetSize: 8}
	fwd := func(k ids.ID, p []byte, next pastry.Handle) ([]byte, bool) { return tn.drv.Forward(k, p, next) }
	tn.pd = pastry.NewDriver(pcfg, self, rand.New(rand.NewPCG(r.seed, uint64(idx))), fwd, ep, ep.Clock(), 250*time.Millisecond)
	tn.st = NewMemStore(ep.Clock().Now, time.Hour)
	tn.node = NewNode(r.cfg, self, tn.st, rand.New(rand.NewPCG(r.seed, uint64(idx)+1000)))
	tn.drv = NewDriver(tn.node, tn.pd, ep.Clock(), time.Second)
	tn.pd.OnEvent = tn.drv.HandleEvent
	ep.SetHandler(tn.pd.Handle)
	var bs []string
	if idx > 0 {
		bs = []string{r.nodes[0].ep.LocalAddr()}
	}
	r.nodes = append(r.nodes, tn)
	tn.pd.Start(bs)
	tn.drv.Start()
	if idx == 0 {
		tn.drv.HandleEvent(pastry.Event{Kind: pastry.EventReady})
	}
	return tn
}

func (r *testRing) crash(tn *testNode) {
	tn.alive = false
	tn.drv.Stop()
	tn.pd.Stop()
	tn.ep.Crash()
}

// closest returns the k live nodes numerically closest to key, closest first.
func (r *testRing) closest(key ids.ID, k int) []*testNode {
	var live []*testNode
	for _, tn := range r.nodes {
		if tn.alive {
			live = append(live, tn)
		}
	}
	slices.SortFunc(live, func(a, b *testNode) int {
		if ids.Closer(key, a.ep.ID(), b.ep.ID()) {
			return -1
		}
		return 1
	})
	return live[:min(k, len(live))]
}

func (r *testRing) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d: %s", r.seed, fmt.Sprintf(format, args...))
}

// insert runs an insert from node `from` to completion.
func (r *testRing) insert(from *testNode, obj Object) InsertResult {
	r.t.Helper()
	var res *InsertResult
	from.drv.Insert(obj, func(x InsertResult) { res = &x })
	for i := 0; i < 60 && res == nil; i++ {
		r.net.RunFor(time.Second)
	}
	if res == nil {
		r.fail("insert %s never completed", obj.Key)
	}
	return *res
}

func (r *testRing) lookup(from *testNode, key ids.Key) (Object, error) {
	r.t.Helper()
	var (
		got  Object
		err  error
		done bool
	)
	from.drv.Lookup(key, func(o Object, e error) { got, err, done = o, e, true })
	for i := 0; i < 60 && !done; i++ {
		r.net.RunFor(time.Second)
	}
	if !done {
		r.fail("lookup %s never completed", key)
	}
	return got, err
}

// holders counts live nodes holding key.
func (r *testRing) holders(key ids.Key) int {
	n := 0
	for _, tn := range r.nodes {
		if tn.alive && tn.st.Has(key) {
			n++
		}
	}
	return n
}

func randomPayload(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
