package glacier

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
)

// Insert places every fragment at its key, reports success after the quorum, and any m of
// them give the object back through the overlay.
func TestInsertRetrieve(t *testing.T) {
	const seed = 11
	r := newTestRing(t, seed, 30, testConfig())
	obj := randBytes(r.rng, 3000)
	man, res := r.insert("a", obj)
	if res.Err != nil || res.Acks < r.cfg.InsertAcks {
		t.Fatalf("seed %d: insert: %+v", seed, res)
	}
	for i, h := range r.holders(man.Key()) {
		if h != 1 {
			t.Fatalf("seed %d: fragment %d held %d times, want once", seed, i, h)
		}
	}
	got, err := r.retrieve(man.Key())
	if err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("seed %d: retrieve: err %v, equal %v", seed, err, bytes.Equal(got, obj))
	}
}

// A fragment lost with its crashed holder is rebuilt by maintenance once the holder counts as
// gone, and not before: an absence shorter than GoneAfter re-codes nothing.
func TestRebuildOnlyAfterGone(t *testing.T) {
	const seed = 12
	cfg := testConfig()
	r := newTestRing(t, seed, 30, cfg)
	man, res := r.insert("b", randBytes(r.rng, 2000))
	if res.Err != nil {
		t.Fatalf("seed %d: insert: %v", seed, res.Err)
	}
	// Crash the holder of fragment 0.
	fk := man.FragmentKey(0)
	var victim *testNode
	for _, tn := range r.nodes {
		if _, err := tn.st.Get(fk); err == nil {
			victim = tn
		}
	}
	if victim == nil {
		t.Fatalf("seed %d: nobody holds fragment 0", seed)
	}
	orig, _ := victim.st.Get(fk)
	r.crash(victim)
	r.net.RunFor(cfg.GoneAfter / 2)
	if h := r.holders(man.Key()); h[0] != 0 {
		t.Fatalf("seed %d: fragment 0 re-coded after %s, before GoneAfter %s", seed, cfg.GoneAfter/2, cfg.GoneAfter)
	}
	var rebuilt uint64
	for _, tn := range r.nodes {
		tn.drv.With(func(n *Node) { rebuilt += n.Stats().Rebuilt })
	}
	if rebuilt != 0 {
		t.Fatalf("seed %d: %d fragments re-coded while the holder was merely absent", seed, rebuilt)
	}
	r.net.RunFor(cfg.GoneAfter + 3*cfg.SyncInterval)
	h := r.holders(man.Key())
	for i, c := range h {
		if c == 0 {
			t.Fatalf("seed %d: fragment %d still missing after GoneAfter: %v", seed, i, h)
		}
	}
	// The re-coded fragment is indistinguishable from the inserter's: same data, same proof,
	// same manifest.
	for _, tn := range r.nodes {
		if f, err := tn.st.Get(fk); tn.alive && err == nil {
			if !bytes.Equal(f.Data, orig.Data) || !slices.Equal(f.Proof, orig.Proof) || !bytes.Equal(f.Manifest.Bytes(), orig.Manifest.Bytes()) {
				t.Fatalf("seed %d: rebuilt fragment 0 differs from the inserter's", seed)
			}
		}
	}
}

// A retrieve tells "nobody has it" (every position answered none: ErrNoObject) from "some
// holders are silent" (ErrTooFewFragments), and prefers the newest version it meets.
func TestRetrieveAbsenceAndVersions(t *testing.T) {
	const seed = 13
	cfg := testConfig()
	r := newTestRing(t, seed, 30, cfg)
	_, err := r.retrieve(ObjectKey(cfg.Ring, testKey(r.seed).Public().(ed25519.PublicKey), []byte("never stored")))
	if !errors.Is(err, ErrNoObject) {
		t.Fatalf("seed %d: retrieve of a never stored object: %v, want ErrNoObject", seed, err)
	}
	man, res := r.insert("c", randBytes(r.rng, 2000))
	if res.Err != nil {
		t.Fatalf("seed %d: insert: %v", seed, res.Err)
	}
	// Version 2 with other content reaches only some positions; a reader meeting both takes 2.
	c, _ := NewCodec(cfg.N, cfg.M)
	v2 := randBytes(r.rng, 2500)
	man2, frags2, err := NewManifest(c, testKey(r.seed), cfg.Ring, []byte("c"), 2, r.net.Now().Add(30*24*time.Hour), v2)
	if err != nil {
		t.Fatal(err)
	}
	v1 := r.held(man.Key())
	done := false
	r.liveNode().drv.Insert(man2, frags2, func(InsertResult) { done = true })
	for i := 0; i < 100 && !done; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	r.net.RunFor(5 * time.Second)
	for i := 0; i < cfg.N; i += 4 { // a quarter of the positions keep version 1
		h := v1[i][0]
		h.tn.drv.With(func(*Node) {
			if err := h.tn.st.Put(h.fk, h.f); err != nil {
				t.Fatal(err)
			}
		})
	}
	for i := 0; i < 5; i++ {
		if got, err := r.retrieve(man2.Key()); err != nil || !bytes.Equal(got, v2) {
			t.Fatalf("seed %d: retrieve after version 2: err %v, got version 2: %v", seed, err, bytes.Equal(got, v2))
		}
	}
	// Silence every holder but m-1: too few, and not "absent".
	kept := 0
	for _, tn := range r.nodes {
		held := false
		tn.st.Range(func(fk ids.ID, f *Fragment) bool {
			held = held || f.Manifest.Key() == man.Key()
			return !held
		})
		if !held {
			continue
		}
		if kept < cfg.M-1 {
			kept++
			continue
		}
		r.crash(tn)
	}
	_, err = r.retrieve(man.Key())
	if !errors.Is(err, ErrTooFewFragments) || errors.Is(err, ErrNoObject) {
		t.Fatalf("seed %d: retrieve with %d of %d holders left: %v, want ErrTooFewFragments", seed, kept, cfg.M, err)
	}
}

// EncodeInsert codes the object once (Encode's proofs are the tree Insert would compute) and
// places every fragment, each accepted by its holder against the manifest's root.
func TestEncodeInsert(t *testing.T) {
	const seed = 14
	r := newTestRing(t, seed, 30, testConfig())
	obj := randBytes(r.rng, 5000)
	c, _ := NewCodec(r.cfg.N, r.cfg.M)
	e, err := Encode(c, testKey(seed), r.cfg.Ring, []byte("e"), 1, r.net.Now().Add(24*time.Hour), obj)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	root, proofs := merkleTree(e.Frags)
	if root != e.Manifest.FragRoot || !slices.EqualFunc(proofs, e.proofs, slices.Equal) {
		t.Fatalf("seed %d: Encode's root or proofs differ from the fragments' tree", seed)
	}
	var man *Manifest
	var res *InsertResult
	r.liveNode().drv.EncodeInsert(testKey(seed), []byte("e"), 1, r.net.Now().Add(24*time.Hour), obj, func(m *Manifest, ir InsertResult) { man, res = m, &ir })
	for i := 0; i < 100 && res == nil; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if res == nil || res.Err != nil || man == nil || man.FragRoot != root {
		t.Fatalf("seed %d: EncodeInsert: %+v, manifest %v", seed, res, man)
	}
	r.net.RunFor(5 * time.Second)
	for i, h := range r.holders(man.Key()) {
		if h != 1 {
			t.Fatalf("seed %d: fragment %d held %d times, want once", seed, i, h)
		}
	}
	got, err := r.retrieve(man.Key())
	if err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("seed %d: retrieve: err %v, equal %v", seed, err, bytes.Equal(got, obj))
	}
	// An object the code cannot take reports no manifest.
	r.liveNode().drv.EncodeInsert(testKey(seed), make([]byte, MaxNameLen+1), 1, r.net.Now().Add(time.Hour), obj, func(m *Manifest, ir InsertResult) { man, res = m, &ir })
	if man != nil || res.Err == nil {
		t.Fatalf("seed %d: a name over MaxNameLen was encoded", seed)
	}
}

// An insert keeps at most InsertWindow fragments waiting for their holders, sends the next as
// answers come back, and still places every position.
func TestInsertWindow(t *testing.T) {
	const seed = 15
	cfg := testConfig()
	cfg.InsertWindow = 3
	r := newTestRing(t, seed, 30, cfg)
	c, _ := NewCodec(cfg.N, cfg.M)
	e, err := Encode(c, testKey(seed), cfg.Ring, []byte("w"), 1, r.net.Now().Add(24*time.Hour), randBytes(r.rng, 4000))
	if err != nil {
		t.Fatal(err)
	}
	var res *InsertResult
	tn := r.liveNode()
	tn.drv.InsertEncoded(e, func(ir InsertResult) { res = &ir })
	most := 0
	for i := 0; i < 200 && (res == nil || most == 0); i++ {
		tn.drv.With(func(n *Node) {
			for _, o := range n.ops {
				if o.insert != nil {
					most = max(most, o.insert.inflight)
					if o.insert.inflight > cfg.InsertWindow {
						t.Fatalf("seed %d: %d fragments waiting, window %d", seed, o.insert.inflight, cfg.InsertWindow)
					}
				}
			}
		})
		r.net.RunFor(5 * time.Millisecond)
	}
	if res == nil || res.Err != nil || most == 0 {
		t.Fatalf("seed %d: insert %+v (most waiting %d)", seed, res, most)
	}
	r.net.RunFor(5 * time.Second)
	for i, h := range r.holders(e.Manifest.Key()) {
		if h != 1 {
			t.Fatalf("seed %d: fragment %d held %d times, want once", seed, i, h)
		}
	}
}
