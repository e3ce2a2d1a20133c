package glacier

import (
	"bytes"
	"testing"
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
}
