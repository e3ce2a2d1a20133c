package past

import (
	"crypto/ed25519"
	"math/rand/v2"
	"testing"
	"time"
)

// A stale copy of a mutable object never answers a lookup, whether it sits on the route, on
// the asking node itself or on one replica of the set: the newest version a replica holds
// wins, and replicas that answered with an older one are repaired.
func TestLookupOfMutableReturnsNewestAndRepairs(t *testing.T) {
	const seed = 21
	r := newTestRing(t, seed, 16, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	lease := r.net.Now().Add(24 * time.Hour)
	name := []byte("epost/v1/log/INBOX")
	v1 := NewSigned(priv, r.ring, name, 1, []byte("version one"), lease)
	all := r.closest(v1.Key.ID, 16)
	client := all[12]
	if res := r.insert(client, v1); res.Err != nil {
		r.fail("insert v1: %v", res.Err)
	}
	r.net.RunFor(5 * time.Second)
	// Stale copies everywhere a reader might meet them first: the asking node, every other
	// node outside the replica set (so: on the route), and one replica.
	for _, tn := range all[3:] {
		if err := tn.st.PutIf(v1, nil); err != nil {
			r.fail("plant stale copy: %v", err)
		}
	}
	v2 := NewSigned(priv, r.ring, name, 7, []byte("version seven"), lease)
	set := all[:3]
	// Only two replicas get v2 (a quorum); the third keeps v1.
	for _, tn := range set[:2] {
		if err := tn.st.PutIf(v2, nil); err != nil {
			r.fail("put v2: %v", err)
		}
	}
	if err := set[2].st.PutIf(v1, nil); err != nil {
		r.fail("put v1: %v", err)
	}
	for i, from := range []*testNode{client, all[15], set[2]} {
		var res *LookupResult
		from.drv.LookupLatest(v1.Key, func(x LookupResult) { res = &x })
		for j := 0; j < 30 && res == nil; j++ {
			r.net.RunFor(time.Second)
		}
		if res == nil || res.Err != nil {
			r.fail("lookup %d: %+v", i, res)
		}
		if res.Object.Seq != 7 || string(res.Object.Payload) != "version seven" {
			r.fail("lookup %d from a node with a stale copy returned seq %d, want 7", i, res.Object.Seq)
		}
		if res.Replicas != 3 {
			r.fail("lookup %d asked %d replicas, want 3", i, res.Replicas)
		}
	}
	r.net.RunFor(5 * time.Second)
	if m, err := set[2].st.Meta(v1.Key); err != nil || m.Seq != 7 {
		r.fail("the stale replica was not repaired: %+v %v", m, err)
	}

	// A fork (two versions at one sequence number) is reported, and every reader picks the
	// same one.
	f1 := NewSigned(priv, r.ring, name, 9, []byte("fork a"), lease)
	f2 := NewSigned(priv, r.ring, name, 9, []byte("fork b"), lease)
	for i, tn := range set {
		obj := f1
		if i == 1 {
			obj = f2
		}
		if err := tn.st.PutIf(obj, nil); err != nil {
			r.fail("put fork: %v", err)
		}
	}
	var picked []string
	for _, from := range []*testNode{client, all[10]} {
		var res *LookupResult
		from.drv.LookupLatest(v1.Key, func(x LookupResult) { res = &x })
		for j := 0; j < 30 && res == nil; j++ {
			r.net.RunFor(time.Second)
		}
		if res == nil || res.Err != nil || !res.Fork || len(res.Versions) != 2 {
			r.fail("fork lookup: %+v", res)
		}
		picked = append(picked, string(res.Object.Payload))
	}
	if picked[0] != picked[1] {
		r.fail("two readers picked different sides of a fork: %q", picked)
	}
}

// A writer whose version is refused as stale learns the version that beat it.
func TestStaleRefusalShowsTheNewerVersion(t *testing.T) {
	const seed = 22
	r := newTestRing(t, seed, 10, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	lease := r.net.Now().Add(24 * time.Hour)
	name := []byte("epost/v1/log/Sent")
	v5 := NewSigned(priv, r.ring, name, 5, []byte("five"), lease)
	client := r.closest(v5.Key.ID, 10)[8]
	if res := r.insert(client, v5); res.Err != nil {
		r.fail("insert v5: %v", res.Err)
	}
	v3 := NewSigned(priv, r.ring, name, 3, []byte("three"), lease)
	res := r.insert(client, v3)
	if res.Err == nil || res.Newer == nil || res.Newer.Seq != 5 || string(res.Newer.Payload) != "five" {
		r.fail("stale insert: err %v, newer %+v", res.Err, res.Newer)
	}
}
