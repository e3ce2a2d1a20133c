package past

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// Every replica must refuse bad writes on its own: the client here skips its own check (a
// malicious or buggy writer), and each of the k replicas must answer with the reason.
func TestEveryReplicaRejectsBadWrites(t *testing.T) {
	const seed = 11
	r := newTestRing(t, seed, 10, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	now := r.net.Now()
	lease := now.Add(24 * time.Hour)
	client := r.nodes[3]
	client.node.skipClientCheck = true

	good := NewSigned(priv, r.ring, []byte("inbox-head"), 2, []byte("version two"), lease)
	if res := r.insert(client, good); res.Err != nil {
		r.fail("valid signed insert: %v", res.Err)
	}

	content := NewContent(r.ring, []byte("real bytes"), lease)
	mismatched := content
	mismatched.Payload = []byte("other bytes")

	forged := NewSigned(priv, r.ring, []byte("inbox-head"), 3, []byte("forged"), lease)
	forged.Aux = append([]byte(nil), forged.Aux...)
	forged.Aux[len(forged.Aux)-1] ^= 1 // last byte of the signature

	_, stranger, _ := ed25519.GenerateKey(rngReader{rng})
	strangerObj := NewSigned(stranger, r.ring, []byte("inbox-head"), 9, []byte("not yours"), lease)
	strangerObj.Key = good.Key // a stranger's valid signature over the owner's key

	replay := NewSigned(priv, r.ring, []byte("inbox-head"), 1, []byte("version one"), lease)
	sameSeq := NewSigned(priv, r.ring, []byte("inbox-head"), 2, []byte("a different version two"), lease)

	otherRing := NewContent(ids.RingIDOf("elsewhere"), []byte("real bytes"), lease)

	cases := []struct {
		name string
		obj  Object
		want error
	}{
		{"content bytes do not match key", mismatched, ErrHashMismatch},
		{"forged signature", forged, ErrBadSignature},
		{"stranger's signature", strangerObj, ErrNotOwner},
		{"replayed older head", replay, ErrStale},
		{"same sequence number, other payload", sameSeq, ErrStale},
		{"key of another ring", otherRing, ErrWrongRing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := r.insert(client, c.obj)
			if res.Err == nil || res.Acked != 0 {
				r.fail("%s: insert succeeded (%d acks)", c.name, res.Acked)
			}
			if c.want == ErrWrongRing {
				// The root refuses to name replicas for another ring's key.
				if !errors.Is(res.Err, ErrWrongRing) {
					r.fail("%s: got %v, want %v", c.name, res.Err, c.want)
				}
				return
			}
			if res.Replicas != 3 || len(res.Refusals) != 3 {
				r.fail("%s: %d replicas, %d refusals, want 3 and 3: %v", c.name, res.Replicas, len(res.Refusals), res.Err)
			}
			for _, ref := range res.Refusals {
				if !errors.Is(ref.Err, c.want) {
					r.fail("%s: replica %s said %v, want %v", c.name, ref.Replica, ref.Err, c.want)
				}
			}
			if !errors.Is(res.Err, c.want) {
				r.fail("%s: result %v does not wrap %v", c.name, res.Err, c.want)
			}
		})
	}
	// The good version survived everywhere.
	for _, tn := range r.closest(good.Key.ID, 3) {
		got, err := tn.st.Get(good.Key)
		if err != nil || got.Seq != 2 || string(got.Payload) != "version two" {
			r.fail("replica %s holds %v seq %d %q", tn.ep.ID().Short(), err, got.Seq, got.Payload)
		}
	}
	if r.holders(mismatched.Key) != 0 {
		r.fail("a replica stored the mismatched content object")
	}
	// A newer version is accepted.
	if res := r.insert(client, NewSigned(priv, r.ring, []byte("inbox-head"), 3, []byte("three"), lease)); res.Err != nil {
		r.fail("seq 3: %v", res.Err)
	}
}

// An inserting node checks its object's shape but leaves the proofs (content hash,
// signature) to the replicas (Node.checkOwn): a forged object it is asked to insert is sent,
// every replica refuses it, and none stores it; a shape error is refused before anything
// is sent.
func TestReplicasCheckProofsTheWriterSkips(t *testing.T) {
	const seed = 13
	r := newTestRing(t, seed, 10, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	lease := r.net.Now().Add(24 * time.Hour)
	client := r.nodes[4]

	mismatched := NewContent(r.ring, []byte("real bytes"), lease)
	mismatched.Payload = []byte("other bytes")
	forged := NewSigned(priv, r.ring, []byte("head"), 1, []byte("forged"), lease)
	forged.Aux = append([]byte(nil), forged.Aux...)
	forged.Aux[len(forged.Aux)-1] ^= 1
	for _, c := range []struct {
		obj  Object
		want error
	}{{mismatched, ErrHashMismatch}, {forged, ErrBadSignature}} {
		res := r.insert(client, c.obj)
		if res.Err == nil || res.Acked != 0 || !errors.Is(res.Err, c.want) {
			r.fail("insert of an object failing %v: %v (%d acks)", c.want, res.Err, res.Acked)
		}
		if len(res.Refusals) != 3 {
			r.fail("%v: %d refusals, want one from each replica", c.want, len(res.Refusals))
		}
		if n := r.holders(c.obj.Key); n != 0 {
			r.fail("%v: %d replicas stored it", c.want, n)
		}
	}

	expired := NewContent(r.ring, []byte("late"), r.net.Now().Add(-time.Second))
	if res := r.insert(client, expired); !errors.Is(res.Err, ErrExpired) || res.Replicas != 0 {
		r.fail("an expired object: %v, %d replicas asked; want ErrExpired before sending", res.Err, res.Replicas)
	}
}

func TestInsertQuorum(t *testing.T) {
	const seed = 12
	r := newTestRing(t, seed, 12, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)

	// One replica down (and not yet noticed): two of three acknowledge, which is a majority.
	obj := NewContent(r.ring, randomPayload(rng, 2000), lease)
	set := r.closest(obj.Key.ID, 3)
	r.crash(set[2])
	client := r.closest(obj.Key.ID, 12)[8]
	res := r.insert(client, obj)
	if res.Err != nil || res.Acked != 2 || res.Needed != 2 {
		r.fail("one replica down: acked %d needed %d err %v", res.Acked, res.Needed, res.Err)
	}

	// Two replicas down: the root still names them, only it acknowledges.
	obj2 := NewContent(r.ring, randomPayload(rng, 2000), lease)
	set = r.closest(obj2.Key.ID, 3)
	r.crash(set[1])
	r.crash(set[2])
	client = r.closest(obj2.Key.ID, 10)[7]
	res = r.insert(client, obj2)
	if res.Err == nil || !errors.Is(res.Err, ErrQuorum) || res.Acked != 1 || res.Needed != 2 {
		r.fail("two replicas down: acked %d needed %d err %v", res.Acked, res.Needed, res.Err)
	}
	t.Logf("seed %d: %v", seed, res.Err)
	if Quorum(3) != 2 || Quorum(4) != 3 || Quorum(5) != 3 || Quorum(1) != 1 {
		t.Fatal("Quorum is not floor(n/2)+1")
	}
}

func TestLookupFallback(t *testing.T) {
	const seed = 13
	r := newTestRing(t, seed, 12, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	obj := NewContent(r.ring, randomPayload(rng, 3000), lease)
	client := r.closest(obj.Key.ID, 12)[9]
	if res := r.insert(client, obj); res.Err != nil {
		r.fail("insert: %v", res.Err)
	}
	r.net.RunFor(5 * time.Second)
	set := r.closest(obj.Key.ID, 3)

	// The root lost its copy: it names the others and the client asks them.
	if err := set[0].st.Delete(obj.Key); err != nil {
		r.fail("delete at root: %v", err)
	}
	got, err := r.lookup(client, obj.Key)
	if err != nil || got.Key != obj.Key || string(got.Payload) != string(obj.Payload) {
		r.fail("lookup with root lacking the object: %v", err)
	}

	// The nearest replica is down: the route goes around it.
	r.crash(set[0])
	got, err = r.lookup(client, obj.Key)
	if err != nil || string(got.Payload) != string(obj.Payload) {
		r.fail("lookup with root down: %v", err)
	}

	// A key nobody holds.
	if _, err := r.lookup(client, ids.Key{Ring: r.ring, ID: ids.HashString("nothing")}); !errors.Is(err, ErrNotFound) {
		r.fail("lookup of missing key: %v", err)
	}
}

func TestLeaseExpiryTrashPurgeAndRefresh(t *testing.T) {
	const seed = 14
	r := newTestRing(t, seed, 8, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	now := r.net.Now()
	short := NewContent(r.ring, randomPayload(rng, 500), now.Add(10*time.Minute))
	kept := NewContent(r.ring, randomPayload(rng, 500), now.Add(10*time.Minute))
	client := r.nodes[1]
	for _, o := range []Object{short, kept} {
		if res := r.insert(client, o); res.Err != nil {
			r.fail("insert: %v", res.Err)
		}
	}
	var refreshErr error = errors.New("pending")
	client.drv.Refresh([]ids.Key{kept.Key}, now.Add(5*time.Hour), func(err error) { refreshErr = err })
	r.net.RunFor(10 * time.Second)
	if refreshErr != nil {
		r.fail("refresh: %v", refreshErr)
	}
	r.net.RunFor(20 * time.Minute)
	if n := r.holders(short.Key); n != 0 {
		r.fail("expired object still live on %d nodes", n)
	}
	if n := r.holders(kept.Key); n != 3 {
		r.fail("refreshed object live on %d nodes, want 3", n)
	}
	trashed := 0
	for _, tn := range r.nodes {
		if _, ok := tn.st.trash[short.Key]; ok {
			trashed++
		}
	}
	if trashed != 3 {
		r.fail("expired object in %d trashes, want 3", trashed)
	}
	r.net.RunFor(90 * time.Minute) // past the trash grace of one hour
	for _, tn := range r.nodes {
		if _, ok := tn.st.trash[short.Key]; ok {
			r.fail("trash not purged on %s", tn.ep.ID().Short())
		}
	}
	if _, err := r.lookup(client, short.Key); !errors.Is(err, ErrNotFound) {
		r.fail("lookup of expired object: %v", err)
	}
}

func TestMaintenanceRestoresReplicasAfterFailure(t *testing.T) {
	const seed = 15
	r := newTestRing(t, seed, 16, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	var objs []Object
	for i := 0; i < 60; i++ {
		o := NewContent(r.ring, randomPayload(rng, 1000+rng.IntN(3000)), lease)
		objs = append(objs, o)
		r.nodes[rng.IntN(len(r.nodes))].drv.Insert(o, nil)
		r.net.RunFor(50 * time.Millisecond)
	}
	r.net.RunFor(10 * time.Second)
	r.crash(r.nodes[5])
	r.crash(r.nodes[9])
	r.net.RunFor(3 * time.Minute)
	for _, o := range objs {
		for _, tn := range r.closest(o.Key.ID, 3) {
			if !tn.st.Has(o.Key) {
				r.fail("object %s missing on replica %s after repair", o.Key, tn.ep.ID().Short())
			}
		}
	}
}

func TestHandoverOnJoin(t *testing.T) {
	const seed = 16
	r := newTestRing(t, seed, 10, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	var objs []Object
	for i := 0; i < 80; i++ {
		o := NewContent(r.ring, randomPayload(rng, 800), lease)
		objs = append(objs, o)
		r.nodes[rng.IntN(len(r.nodes))].drv.Insert(o, nil)
		r.net.RunFor(50 * time.Millisecond)
	}
	r.net.RunFor(10 * time.Second)
	for i := 0; i < 4; i++ {
		r.add()
		r.net.RunFor(2 * time.Second)
	}
	r.net.RunFor(time.Minute)
	gotNew := 0
	for _, o := range objs {
		for _, tn := range r.closest(o.Key.ID, 3) {
			if !tn.st.Has(o.Key) {
				r.fail("object %s missing on replica %s after joins", o.Key, tn.ep.ID().Short())
			}
			for _, nn := range r.nodes[10:] {
				if nn == tn {
					gotNew++
				}
			}
		}
	}
	if gotNew == 0 {
		r.fail("the new nodes took over no objects")
	}
	// After the drop grace, former replicas hand their copies to the trash: k copies remain.
	r.net.RunFor(10 * time.Minute)
	dropped := uint64(0)
	for _, tn := range r.nodes {
		dropped += tn.node.Stats().Dropped
	}
	for _, o := range objs {
		if n := r.holders(o.Key); n != 3 {
			r.fail("object %s on %d nodes after the drop grace, want 3 (dropped %d)", o.Key, n, dropped)
		}
	}
	if dropped == 0 {
		r.fail("no former replica dropped anything")
	}
}

type rngReader struct{ r *rand.Rand }

func (r rngReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r.r.Uint32())
	}
	return len(b), nil
}
