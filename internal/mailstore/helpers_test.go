package mailstore

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"epost/internal/appmux"
	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
	"epost/internal/simnet"
	"epost/internal/store"
)

// A small ring on simnet with PAST, Scribe and POST on every node, in the manner of
// internal/sim's mail experiment (copied down to what these tests need). Everything runs on
// the test's goroutine: store operations wait by driving the virtual network (Config.Drive).

type testWorld struct {
	t      *testing.T
	seed   uint64
	net    *simnet.Network
	rng    *rand.Rand
	ring   ids.RingID
	caKey  ed25519.PrivateKey
	secret content.Secret
	nodes  []*testNode
}

type testNode struct {
	ep   *simnet.Endpoint
	drv  *pastry.Driver
	st   *past.MemStore
	pd   *past.Driver
	sc   *scribe.Scribe
	post *post.Node
	// onFiled is what the daemon would install as post.Node.OnFiled.
	onFiled func(post.Filed)
}

type testUser struct {
	addr string
	keys *identity.Keys
	rec  identity.SignedRecord
	node *testNode
	u    *post.User
}

type observerShim struct{ n *post.Node }

func (o *observerShim) Stored(m store.Meta) {
	if o.n != nil {
		o.n.Stored(m)
	}
}

func (o *observerShim) Removed(k ids.Key) {
	if o.n != nil {
		o.n.Removed(k)
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newTestWorld(t *testing.T, seed uint64, n int) *testWorld {
	t.Helper()
	w := &testWorld{t: t, seed: seed, net: simnet.New(simnet.DefaultConfig(seed)), rng: rand.New(rand.NewPCG(seed, 0x6d61)),
		ring: ids.RingIDOf("mailstore-test")}
	var s [32]byte
	w.fill(s[:])
	w.caKey = ed25519.NewKeyFromSeed(s[:])
	w.fill(w.secret[:])
	for i := 0; i < n; i++ {
		w.net.RunFor(20 * time.Millisecond)
		w.addNode()
	}
	w.net.RunFor(30 * time.Second)
	for i, tn := range w.nodes {
		if !tn.drv.Ready() {
			w.fail("node %d not ready after build", i)
		}
	}
	return w
}

func (w *testWorld) fill(b []byte) {
	for i := range b {
		b[i] = byte(w.rng.Uint32())
	}
}

func (w *testWorld) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed %d: %s", w.seed, fmt.Sprintf(format, args...))
}

func (w *testWorld) addNode() *testNode {
	var id ids.ID
	for i := 0; i < ids.Bytes; i += 8 {
		binary.BigEndian.PutUint64(id[i:], w.rng.Uint64())
	}
	idx := len(w.nodes)
	ep := w.net.AddNode(id, fmt.Sprintf("n%d", idx))
	tn := &testNode{ep: ep}
	w.nodes = append(w.nodes, tn)
	clock := ep.Clock()
	self := pastry.Handle{ID: id, Addr: ep.LocalAddr()}
	tn.drv = pastry.NewDriver(pastry.Config{Ring: w.ring, LeafSetSize: 8}, self, rand.New(rand.NewPCG(w.seed, uint64(idx))), nil, ep, clock, 500*time.Millisecond)
	mux := appmux.New()
	tn.drv.SetForwarder(mux.Forward)
	tn.st = past.NewMemStore(clock.Now, 0)
	obs := &observerShim{}
	pcfg := past.DefaultConfig()
	pcfg.Ring = w.ring
	pcfg.Replicas = 3
	pcfg.Policy = past.Policy{CA: w.caKey.Public().(ed25519.PublicKey)}
	pcfg.Observer = obs
	pcfg.LocateCacheTTL = 30 * time.Second
	pn := past.NewNode(pcfg, self, tn.st, rand.New(rand.NewPCG(w.rng.Uint64(), uint64(idx))))
	tn.pd = past.NewDriver(pn, tn.drv, clock, 250*time.Millisecond)
	tn.sc = scribe.New(scribe.Config{Ring: w.ring, Now: clock.Now, Rand: rand.New(rand.NewPCG(w.rng.Uint64(), uint64(idx)))}, tn.drv)
	var prs [32]byte
	w.fill(prs[:])
	pc := post.Config{Ring: w.ring, CA: w.caKey.Public().(ed25519.PublicKey), Secret: w.secret, Clock: clock,
		Rand: rand.NewChaCha8(prs), HolderDelay: 10 * time.Second, Log: slog.New(slog.NewTextHandler(testLogWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	tn.post = post.New(pc, tn.pd, tn.sc, tn.drv)
	obs.n = tn.post
	tn.post.OnFiled = func(f post.Filed) {
		if tn.onFiled != nil {
			tn.onFiled(f)
		}
	}
	_ = mux.Register(appmux.TagPast, tn.pd.App())
	_ = mux.Register(appmux.TagScribe, tn.sc)
	_ = mux.Register(appmux.TagPost, tn.post.App())
	tn.drv.OnEvent = mux.OnEvent
	ep.SetHandler(tn.drv.Handle)
	tn.pd.Start()
	tn.sc.RunTicker(clock, time.Second)
	var boot []string
	if idx > 0 {
		boot = []string{w.nodes[0].ep.LocalAddr()}
	}
	tn.drv.Start(boot)
	return tn
}

// crash stops a node for good.
func (w *testWorld) crash(tn *testNode) {
	tn.post.Stop()
	tn.pd.Stop()
	tn.sc.Stop()
	tn.drv.Stop()
	tn.ep.Crash()
}

// drive is Config.Drive for stores in this world.
func (w *testWorld) drive() { w.net.RunFor(10 * time.Millisecond) }

// runUntil drives the network until done or d of virtual time passed.
func (w *testWorld) runUntil(d time.Duration, done func() bool) bool {
	for end := w.net.Elapsed() + d; !done(); {
		if w.net.Elapsed() >= end {
			return false
		}
		w.net.RunFor(50 * time.Millisecond)
	}
	return true
}

// newUser makes keys and a CA-signed record for addr.
func (w *testWorld) newUser(addr string, serial uint64) *testUser {
	var s [32]byte
	w.fill(s[:])
	keys, err := identity.NewKeys(rand.NewChaCha8(s))
	if err != nil {
		w.fail("%v", err)
	}
	nb := w.net.Now().Add(-time.Hour).Truncate(time.Second)
	sr, err := identity.SignRecord(identity.Record{Ring: w.ring, Address: addr, Keys: keys.Public(), Serial: serial, NotBefore: nb, NotAfter: nb.Add(30 * 24 * time.Hour)}, w.caKey)
	if err != nil {
		w.fail("%v", err)
	}
	return &testUser{addr: addr, keys: keys, rec: sr}
}

// start brings the user's POST session up on node tn (fresh: first start).
func (w *testWorld) start(tu *testUser, tn *testNode, fresh bool) {
	w.t.Helper()
	tu.node = tn
	var done bool
	var err error
	tn.post.AddUser(tu.keys, tu.rec, fresh, func(u *post.User, e error) {
		done, err, tu.u = true, e, u
	})
	if !w.runUntil(2*time.Minute, func() bool { return done }) || err != nil {
		w.fail("start %s: done=%v err=%v", tu.addr, done, err)
	}
	w.net.RunFor(2 * time.Second)
}
