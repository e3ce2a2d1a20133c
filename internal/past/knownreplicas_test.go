package past

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// An insert skips the locate round trip only when the node's own leaf set names the key's
// replica set, and then it names the true one: the k live nodes closest to the key. In a
// ring smaller than the leaf set every key qualifies; in a larger one only keys well inside
// the leaf set's arc do.
func TestKnownReplicasMatchTheRing(t *testing.T) {
	for _, tc := range []struct {
		nodes        int
		wantAllKnown bool
	}{{5, true}, {8, true}, {9, false}, {40, false}} {
		seed := uint64(60 + tc.nodes)
		cfg := testConfig()
		cfg.LocateCacheTTL = 30 * time.Second // as the daemon runs
		r := newTestRing(t, seed, tc.nodes, cfg)
		rng := rand.New(rand.NewPCG(seed, 3))
		known, unknown := 0, 0
		for _, tn := range r.nodes {
			for range 200 {
				var key ids.ID
				for i := 0; i < ids.Bytes; i += 8 {
					binary.BigEndian.PutUint64(key[i:], rng.Uint64())
				}
				var hs []string
				var ok bool
				tn.drv.With(func(n *Node) {
					set, k := n.knownReplicas(key)
					ok = k
					for _, h := range set {
						hs = append(hs, h.ID.String())
					}
				})
				if !ok {
					unknown++
					continue
				}
				known++
				want := r.closest(key, testConfig().Replicas)
				if len(hs) != len(want) {
					r.fail("%d nodes: node %s names %d replicas of %s, want %d", tc.nodes, tn.ep.ID().Short(), len(hs), key.Short(), len(want))
				}
				for i, w := range want {
					if hs[i] != w.ep.ID().String() {
						r.fail("%d nodes: node %s names replica %d of %s as %.8s, the ring says %s", tc.nodes, tn.ep.ID().Short(), i, key.Short(), hs[i], w.ep.ID().Short())
					}
				}
			}
		}
		if tc.wantAllKnown && unknown > 0 {
			r.fail("%d nodes: %d of %d keys not known from the leaf set", tc.nodes, unknown, known+unknown)
		}
		if !tc.wantAllKnown && (unknown == 0 || known == 0) {
			r.fail("%d nodes: %d keys known and %d not, want some of each", tc.nodes, known, unknown)
		}
		t.Logf("%d nodes: %d keys known from the leaf set, %d located through the root", tc.nodes, known, unknown)
	}
}
