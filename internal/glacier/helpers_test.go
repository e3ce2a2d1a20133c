package glacier

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
)

var testRingID = ids.RingIDOf("glacier-test")

func testKey(seed uint64) ed25519.PrivateKey {
	s := sha256.Sum256(fmt.Appendf(nil, "owner %d", seed))
	return ed25519.NewKeyFromSeed(s[:])
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testRing is a small Glacier ring on simnet, built through the real join protocol, plus the
// global knowledge tests judge by.
type testRing struct {
	t     *testing.T
	seed  uint64
	net   *simnet.Network
	rng   *rand.Rand
	cfg   Config
	nodes []*testNode
}

type testNode struct {
	ep    *simnet.Endpoint
	pd    *pastry.Driver
	st    *MemStore
	drv   *Driver
	alive bool
}

func testConfig() Config {
	c := DefaultConfig()
	c.Ring = testRingID
	c.N, c.M = 12, 3
	c.SyncInterval = time.Minute
	c.SyncDelay = 10 * time.Second
	c.GoneAfter = 10 * time.Minute
	c.RequestTimeout = 3 * time.Second
	return c
}

func newTestRing(t *testing.T, seed uint64, n int, cfg Config) *testRing {
	t.Helper()
	r := &testRing{t: t, seed: seed, net: simnet.New(simnet.DefaultConfig(seed)), rng: rand.New(rand.NewPCG(seed, 7)), cfg: cfg}
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

func (r *testRing) add() *testNode {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		v := r.rng.Uint64()
		for b := 0; b < 8; b++ {
			id[i+b] = byte(v >> (8 * b))
		}
	}
	ep := r.net.AddNode(id, fmt.Sprintf("g%d", len(r.nodes)))
	pc := pastry.DefaultConfig()
	pc.Ring = r.cfg.Ring
	pc.LeafSetSize = 8
	self := pastry.Handle{ID: id, Addr: ep.LocalAddr()}
	pd := pastry.NewDriver(pc, self, rand.New(rand.NewPCG(r.rng.Uint64(), 1)), nil, ep, ep.Clock(), 250*time.Millisecond)
	st := NewMemStore()
	node, err := NewNode(r.cfg, self, st, rand.New(rand.NewPCG(r.rng.Uint64(), 2)))
	if err != nil {
		r.t.Fatalf("seed %d: %v", r.seed, err)
	}
	tn := &testNode{ep: ep, pd: pd, st: st, drv: NewDriver(node, pd, ep.Clock(), time.Second), alive: true}
	pd.OnEvent = tn.drv.HandleEvent
	ep.SetHandler(pd.Handle)
	var bs []string
	if len(r.nodes) > 0 {
		bs = []string{r.nodes[0].ep.LocalAddr()}
	}
	r.nodes = append(r.nodes, tn)
	tn.drv.Start()
	pd.Start(bs)
	if pd.Ready() {
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

// holders counts, for each fragment index of object key, the live nodes holding it.
func (r *testRing) holders(key ids.ID) []int {
	out := make([]int, r.cfg.N)
	for _, tn := range r.nodes {
		if !tn.alive {
			continue
		}
		tn.st.Range(func(fk ids.ID, f *Fragment) bool {
			if f.Manifest.Key() == key {
				out[f.Index]++
			}
			return true
		})
	}
	return out
}

func (r *testRing) liveNode() *testNode {
	for {
		tn := r.nodes[r.rng.IntN(len(r.nodes))]
		if tn.alive {
			return tn
		}
	}
}

// insert encodes and inserts one object from a live node and waits for the result.
func (r *testRing) insert(name string, obj []byte) (*Manifest, InsertResult) {
	r.t.Helper()
	c, _ := NewCodec(r.cfg.N, r.cfg.M)
	man, frags, err := NewManifest(c, testKey(r.seed), r.cfg.Ring, []byte(name), 1, r.net.Now().Add(30*24*time.Hour), obj)
	if err != nil {
		r.t.Fatalf("seed %d: %v", r.seed, err)
	}
	var res *InsertResult
	r.liveNode().drv.Insert(man, frags, func(ir InsertResult) { res = &ir })
	for i := 0; i < 100 && res == nil; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if res == nil {
		r.t.Fatalf("seed %d: insert %s never completed", r.seed, name)
	}
	r.net.RunFor(5 * time.Second)
	return man, *res
}

func (r *testRing) retrieve(key ids.ID) ([]byte, error) {
	r.t.Helper()
	var obj []byte
	var rerr error
	done := false
	r.liveNode().drv.Retrieve(key, func(b []byte, _ *Manifest, err error) { obj, rerr, done = b, err, true })
	for i := 0; i < 600 && !done; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if !done {
		r.t.Fatalf("seed %d: retrieve never completed", r.seed)
	}
	return obj, rerr
}
