package glacier

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// RenewManifest re-signs the same content under a higher version and a later expiry, and
// refuses another key, a version that does not grow and a lease that does not.
func TestRenewManifest(t *testing.T) {
	c, _ := NewCodec(12, 3)
	owner := testKey(1)
	exp := time.Unix(2e9, 0)
	old, _, err := NewManifest(c, owner, testRingID, []byte("n"), 4, exp, []byte("hello world"))
	if err != nil {
		t.Fatal(err)
	}
	oldBytes := old.Bytes()
	for _, tc := range []struct {
		name    string
		priv    ed25519.PrivateKey
		version uint64
		expiry  time.Time
		ok      bool
	}{
		{"renewal", owner, 5, exp.Add(time.Hour), true},
		{"version jump", owner, 100, exp.Add(time.Nanosecond), true},
		{"other key", testKey(2), 5, exp.Add(time.Hour), false},
		{"truncated key", owner[:10], 5, exp.Add(time.Hour), false},
		{"same version", owner, 4, exp.Add(time.Hour), false},
		{"lower version", owner, 3, exp.Add(time.Hour), false},
		{"same expiry", owner, 5, exp, false},
		{"earlier expiry", owner, 5, exp.Add(-time.Hour), false},
	} {
		m, err := RenewManifest(old, tc.priv, tc.version, tc.expiry)
		if !tc.ok {
			if err == nil {
				t.Errorf("%s: renewed, want an error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		v, err := NewManifestCache(0).Verified(m.Bytes())
		switch {
		case err != nil:
			t.Errorf("%s: renewed manifest does not verify: %v", tc.name, err)
		case !v.SameContent(old) || v.Key() != old.Key() || v.Version != tc.version || v.Expiry != tc.expiry.UnixNano():
			t.Errorf("%s: renewed manifest %+v differs from old %+v beyond version and expiry", tc.name, v, old)
		}
	}
	if !bytes.Equal(old.Bytes(), oldBytes) {
		t.Fatalf("RenewManifest modified the old manifest")
	}
}

// A renewal sends n manifests and no fragment data.
func TestRenewSendsNoData(t *testing.T) {
	cfg := testConfig()
	self := pastry.Handle{ID: ids.ID{1}, Addr: "self"}
	node, err := NewNode(cfg, self, NewMemStore(), rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	obj := randBytes(rand.New(rand.NewPCG(3, 4)), 60000)
	man, frags, err := NewManifest(node.Codec(), testKey(1), cfg.Ring, []byte("r"), 1, now.Add(time.Hour), obj)
	if err != nil {
		t.Fatal(err)
	}
	man2, err := RenewManifest(man, testKey(1), 2, now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bytesOf := func(out []Outgoing) (total int) {
		for _, o := range out {
			total += len(o.Payload) + len(o.Tail)
		}
		return total
	}
	node.Insert(now, man, frags, func(InsertResult) {})
	insertBytes := bytesOf(node.TakeOutbox())
	node.Renew(now, man2, func(InsertResult) {})
	out := node.TakeOutbox()
	if len(out) != cfg.N {
		t.Fatalf("renewal sent %d messages, want %d", len(out), cfg.N)
	}
	seen := make([]bool, cfg.N)
	for _, o := range out {
		m, err := decodeMessage(o.Payload)
		if err != nil || m.Type != mRenew || len(m.Data) != 0 || !bytes.Equal(m.RawMan, man2.Bytes()) {
			t.Fatalf("renewal message: %v %+v", err, m)
		}
		if !o.Route || o.Key != man2.FragmentKey(int(m.Index)) || seen[m.Index] {
			t.Fatalf("renewal of position %d routed to %s", m.Index, o.Key)
		}
		seen[m.Index] = true
		if len(o.Payload) > len(man2.Bytes())+16 {
			t.Fatalf("renewal message of %d bytes for a manifest of %d", len(o.Payload), len(man2.Bytes()))
		}
	}
	renewBytes := bytesOf(out)
	t.Logf("insert %d bytes, renewal %d bytes (object %d)", insertBytes, renewBytes, len(obj))
	if renewBytes*10 > insertBytes {
		t.Fatalf("renewal %d bytes is not much cheaper than the insert's %d", renewBytes, insertBytes)
	}
}

// renew runs a renewal from a live node and waits for its result.
func (r *testRing) renew(man *Manifest) InsertResult {
	r.t.Helper()
	var res *InsertResult
	r.liveNode().drv.Renew(man, func(ir InsertResult) { res = &ir })
	for i := 0; i < 200 && res == nil; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if res == nil {
		r.t.Fatalf("seed %d: renewal never completed", r.seed)
	}
	return *res
}

// insertMan inserts an encoded object and waits for the result.
func (r *testRing) insertMan(man *Manifest, frags [][]byte) InsertResult {
	r.t.Helper()
	var res *InsertResult
	r.liveNode().drv.Insert(man, frags, func(ir InsertResult) { res = &ir })
	for i := 0; i < 100 && res == nil; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if res == nil {
		r.t.Fatalf("seed %d: insert never completed", r.seed)
	}
	r.net.RunFor(5 * time.Second)
	return *res
}

func (r *testRing) retrieveMan(key ids.ID) ([]byte, *Manifest, error) {
	r.t.Helper()
	var obj []byte
	var man *Manifest
	var rerr error
	done := false
	r.liveNode().drv.Retrieve(key, func(b []byte, m *Manifest, err error) { obj, man, rerr, done = b, m, err, true })
	for i := 0; i < 600 && !done; i++ {
		r.net.RunFor(100 * time.Millisecond)
	}
	if !done {
		r.t.Fatalf("seed %d: retrieve never completed", r.seed)
	}
	return obj, man, rerr
}

// held is every live node's fragment of object key, by index.
func (r *testRing) held(key ids.ID) map[int][]heldFragment {
	out := make(map[int][]heldFragment)
	for _, tn := range r.nodes {
		if !tn.alive {
			continue
		}
		tn.drv.With(func(*Node) {
			tn.st.Range(func(fk ids.ID, f *Fragment) bool {
				if f.Manifest.Key() == key {
					out[f.Index] = append(out[f.Index], heldFragment{tn, fk, *f})
				}
				return true
			})
		})
	}
	return out
}

type heldFragment struct {
	tn *testNode
	fk ids.ID
	f  Fragment
}

func (r *testRing) statsSum(f func(Stats) uint64) (sum uint64) {
	for _, tn := range r.nodes {
		tn.drv.With(func(n *Node) { sum += f(n.Stats()) })
	}
	return sum
}

// Renewal swaps every holder's manifest for the new version, keeps the data, costs far less
// than the object, and is idempotent; a stale or forged manifest is refused.
func TestRenew(t *testing.T) {
	const seed = 21
	cfg := testConfig()
	r := newTestRing(t, seed, 30, cfg)
	obj := randBytes(r.rng, 60000)
	before := r.net.Stats().Bytes
	man, res := r.insert("renew", obj)
	if res.Err != nil {
		t.Fatalf("seed %d: insert: %v", seed, res.Err)
	}
	insertBytes := r.net.Stats().Bytes - before
	v1 := r.held(man.Key())

	man2, err := RenewManifest(man, testKey(r.seed), 2, man.ExpiryTime().Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	before = r.net.Stats().Bytes
	res = r.renew(man2)
	renewBytes := r.net.Stats().Bytes - before // includes the overlay's own traffic meanwhile
	if res.Err != nil || res.Acks < cfg.InsertAcks || res.Missing != 0 {
		t.Fatalf("seed %d: renewal: %+v", seed, res)
	}
	r.net.RunFor(5 * time.Second)
	t.Logf("seed %d: insert %d bytes on the network, renewal %d (object %d)", seed, insertBytes, renewBytes, len(obj))
	if renewBytes >= uint64(len(obj)) {
		t.Fatalf("seed %d: renewal moved %d bytes, more than the %d-byte object", seed, renewBytes, len(obj))
	}
	if got := r.statsSum(func(s Stats) uint64 { return s.Renewed }); got != uint64(cfg.N) {
		t.Fatalf("seed %d: %d manifests swapped, want %d", seed, got, cfg.N)
	}
	v2 := r.held(man.Key())
	for i := range cfg.N {
		if len(v2[i]) != 1 || len(v1[i]) != 1 {
			t.Fatalf("seed %d: fragment %d held %d times before, %d after the renewal", seed, i, len(v1[i]), len(v2[i]))
		}
		h := v2[i][0]
		if h.tn != v1[i][0].tn || h.f.Manifest.Version != 2 || !bytes.Equal(h.f.Data, v1[i][0].f.Data) || h.f.Manifest.CheckFragment(i, h.f.Data, h.f.Proof) != nil {
			t.Fatalf("seed %d: fragment %d after the renewal: version %d, data kept %v", seed, i, h.f.Manifest.Version, bytes.Equal(h.f.Data, v1[i][0].f.Data))
		}
	}
	got, gotMan, err := r.retrieveMan(man.Key())
	if err != nil || !bytes.Equal(got, obj) || gotMan.Version != 2 {
		t.Fatalf("seed %d: retrieve after renewal: err %v, equal %v, manifest %+v", seed, err, bytes.Equal(got, obj), gotMan)
	}

	// The same renewal again: acknowledged, nothing rewritten.
	if res := r.renew(man2); res.Err != nil || res.Acks < cfg.InsertAcks {
		t.Fatalf("seed %d: repeated renewal: %+v", seed, res)
	}
	if got := r.statsSum(func(s Stats) uint64 { return s.Renewed }); got != uint64(cfg.N) {
		t.Fatalf("seed %d: a repeated renewal rewrote: %d swaps, want %d", seed, got, cfg.N)
	}

	// Refused: the old version (stale), a manifest the owner did not sign, one bound to
	// another owner (its positions hold nothing).
	forged := *man2
	forged.Version, forged.Expiry = 3, man2.Expiry+1
	forged.Sig = ed25519.Sign(testKey(r.seed+1), forged.signedBytes())
	c, _ := NewCodec(cfg.N, cfg.M)
	other, _, err := NewManifest(c, testKey(r.seed+1), cfg.Ring, []byte("renew"), 3, man2.ExpiryTime().Add(time.Hour), obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		man  *Manifest
		want error
	}{
		{"lower version", man, ErrStale},
		{"forged signature", &forged, ErrBadManifest},
		{"other owner", other, ErrNotFound},
	} {
		res := r.renew(tc.man)
		if !errors.Is(res.Err, ErrQuorum) || !errors.Is(res.Err, tc.want) || res.Acks != 0 {
			t.Fatalf("seed %d: %s: %+v, want ErrQuorum with %v", seed, tc.name, res, tc.want)
		}
		r.net.RunFor(5 * time.Second)
		for i, hs := range r.held(man.Key()) {
			for _, h := range hs {
				if h.f.Manifest.Version != 2 {
					t.Fatalf("seed %d: %s: fragment %d now at version %d", seed, tc.name, i, h.f.Manifest.Version)
				}
			}
		}
	}
}

// A holder that lost its fragment answers not-found and gets it back through maintenance
// under the new manifest; a holder that missed the renewal (still at version 1) is brought to
// version 2 by maintenance, whose Bloom filters compare (fragment key, version).
func TestRenewThenMaintenance(t *testing.T) {
	const seed = 22
	cfg := testConfig()
	r := newTestRing(t, seed, 30, cfg)
	obj := randBytes(r.rng, 5000)
	man, res := r.insert("renew-maint", obj)
	if res.Err != nil {
		t.Fatalf("seed %d: insert: %v", seed, res.Err)
	}
	held := r.held(man.Key())
	lost, missed := held[0][0], held[1][0]
	lost.tn.drv.With(func(*Node) {
		if err := lost.tn.st.Delete(lost.fk); err != nil {
			t.Fatal(err)
		}
	})
	man2, err := RenewManifest(man, testKey(r.seed), 2, man.ExpiryTime().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if res := r.renew(man2); res.Err != nil || res.Acks < cfg.InsertAcks {
		t.Fatalf("seed %d: renewal with one position lost: %+v", seed, res)
	}
	r.net.RunFor(5 * time.Second) // the renewal reported at the quorum; let the rest answer
	renewed, refused := r.statsSum(func(s Stats) uint64 { return s.Renewed }), r.statsSum(func(s Stats) uint64 { return s.RenewRefused })
	if renewed != uint64(cfg.N-1) || refused == 0 { // refused once per (re)send to the lost position
		t.Fatalf("seed %d: renewal with one position lost: %d swapped, %d refused; want %d and some", seed, renewed, refused, cfg.N-1)
	}
	// Put version 1 back at position 1, as if its holder had missed the renewal.
	missed.tn.drv.With(func(*Node) {
		if err := missed.tn.st.Put(missed.fk, missed.f); err != nil {
			t.Fatal(err)
		}
	})
	r.net.RunFor(cfg.SyncDelay + 3*cfg.SyncInterval)
	after := r.held(man.Key())
	for i := range cfg.N {
		if len(after[i]) == 0 {
			t.Fatalf("seed %d: fragment %d missing after maintenance", seed, i)
		}
		for _, h := range after[i] {
			if h.f.Manifest.Version != 2 || h.f.Manifest.CheckFragment(i, h.f.Data, h.f.Proof) != nil {
				t.Fatalf("seed %d: fragment %d after maintenance: version %d, valid %v", seed, i, h.f.Manifest.Version, h.f.Manifest.CheckFragment(i, h.f.Data, h.f.Proof) == nil)
			}
		}
	}
	if h := after[0][0]; h.tn != lost.tn {
		t.Fatalf("seed %d: fragment 0 rebuilt elsewhere than at its holder", seed)
	} else if !bytes.Equal(h.f.Data, lost.f.Data) || !slices.Equal(h.f.Proof, lost.f.Proof) || !bytes.Equal(h.f.Manifest.Bytes(), man2.Bytes()) {
		t.Fatalf("seed %d: rebuilt fragment 0 differs from what the inserter sent (data %v, proof %v)", seed, bytes.Equal(h.f.Data, lost.f.Data), slices.Equal(h.f.Proof, lost.f.Proof))
	}
	if got, gotMan, err := r.retrieveMan(man.Key()); err != nil || !bytes.Equal(got, obj) || gotMan.Version != 2 {
		t.Fatalf("seed %d: retrieve after maintenance: err %v, equal %v", seed, err, bytes.Equal(got, obj))
	}
	// The holder that missed the renewal only swapped its manifest (one fetch, no decode);
	// the lost fragment 0 was the one rebuild.
	if refreshed, rebuilt := r.statsSum(func(s Stats) uint64 { return s.Refreshed }), r.statsSum(func(s Stats) uint64 { return s.Rebuilt }); refreshed != 1 || rebuilt != 1 {
		t.Fatalf("seed %d: maintenance refreshed %d manifests and rebuilt %d fragments, want 1 and 1", seed, refreshed, rebuilt)
	}
}

// Holders collect fragments by the renewed manifest's expiry: after the first lease ends and
// before the second does, the object is still held and retrievable (an object that was not
// renewed is gone); after the second, it is gone too.
func TestRenewExtendsLease(t *testing.T) {
	const seed = 23
	cfg := testConfig()
	cfg.GCInterval = time.Minute
	cfg.SyncInterval = 5 * time.Minute
	r := newTestRing(t, seed, 20, cfg)
	c, _ := NewCodec(cfg.N, cfg.M)
	now := r.net.Now()
	obj := randBytes(r.rng, 4000)
	man, frags, err := NewManifest(c, testKey(r.seed), cfg.Ring, []byte("leased"), 1, now.Add(20*time.Minute), obj)
	if err != nil {
		t.Fatal(err)
	}
	ctl, ctlFrags, err := NewManifest(c, testKey(r.seed), cfg.Ring, []byte("not renewed"), 1, now.Add(20*time.Minute), obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []struct {
		m *Manifest
		f [][]byte
	}{{man, frags}, {ctl, ctlFrags}} {
		if res := r.insertMan(in.m, in.f); res.Err != nil {
			t.Fatalf("seed %d: insert: %v", seed, res.Err)
		}
	}
	man2, err := RenewManifest(man, testKey(r.seed), 2, now.Add(45*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res := r.renew(man2); res.Err != nil {
		t.Fatalf("seed %d: renewal: %+v", seed, res)
	}
	r.net.RunFor(now.Add(30 * time.Minute).Sub(r.net.Now()))
	if h := r.holders(ctl.Key()); h[0]+h[1]+h[2] != 0 {
		t.Fatalf("seed %d: an object whose lease ended is still held: %v", seed, h)
	}
	for i, h := range r.holders(man.Key()) {
		if h == 0 {
			t.Fatalf("seed %d: fragment %d dropped before the renewed lease ended", seed, i)
		}
	}
	if got, _, err := r.retrieveMan(man.Key()); err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("seed %d: retrieve between the two expiries: err %v", seed, err)
	}
	r.net.RunFor(25 * time.Minute)
	for i, h := range r.holders(man.Key()) {
		if h != 0 {
			t.Fatalf("seed %d: fragment %d still held after the renewed lease ended", seed, i)
		}
	}
}
