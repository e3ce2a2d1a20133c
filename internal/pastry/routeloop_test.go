package pastry

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"epost/internal/ids"
)

var routeSeed = flag.Uint64("pastry.seed", 0, "run the randomized routing tests with this seed only")

// staticRing makes n ready nodes with leaf-set size l and exact leaf sets; each other node is
// offered to a node's routing table with probability tableShare (1: as in a settled ring;
// less: the sparse tables of a young ring). The nodes come back in creation order.
func staticRing(r *rand.Rand, n, l int, tableShare float64) ([]*Node, map[ids.ID]*Node) {
	hs := make([]Handle, n)
	for i := range hs {
		hs[i] = Handle{ID: randID(r), Addr: fmt.Sprintf("n%d", i)}
	}
	list := make([]*Node, 0, n)
	byID := make(map[ids.ID]*Node, n)
	for _, h := range hs {
		nd := NewNode(Config{LeafSetSize: l}, h, rand.New(rand.NewPCG(r.Uint64(), 1)), nil)
		nd.phase = phaseReady
		for _, i := range r.Perm(n) {
			if hs[i].ID == h.ID {
				continue
			}
			nd.leaf.Add(hs[i])
			if r.Float64() < tableShare {
				nd.table.Consider(hs[i], 0)
			}
		}
		list = append(list, nd)
		byID[h.ID] = nd
	}
	return list, byID
}

func closestOf(nodes []*Node, key ids.ID) ids.ID {
	best := nodes[0].self.ID
	for _, nd := range nodes[1:] {
		if ids.Closer(key, nd.self.ID, best) {
			best = nd.self.ID
		}
	}
	return best
}

// TestNextHopNeverLoops follows every node's next-hop decision for many keys and requires
// that each walk ends, within a few hops and without visiting a node twice, at the node
// numerically closest to the key. Rings of L/2+1 to L nodes are the ones whose two leaf-set
// halves overlap: InRange answered false there for most keys, so messages were delivered to
// the wrong node or went back and forth between two nodes for ever (seen in 20-node rings
// in internal/sim; here N=13, L=24, seed 2 loops).
func TestNextHopNeverLoops(t *testing.T) {
	type tc struct {
		nodes, l int
		share    float64
	}
	var cases []tc
	for _, share := range []float64{1, 0.3} {
		for n := 2; n <= 30; n++ {
			cases = append(cases, tc{n, 24, share})
		}
		for n := 2; n <= 12; n++ {
			cases = append(cases, tc{n, 8, share})
		}
		cases = append(cases, tc{100, 8, share}, tc{300, 24, share})
	}
	seeds := []uint64{1, 2, 3}
	if *routeSeed != 0 {
		seeds = []uint64{*routeSeed}
	}
	for _, c := range cases {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("N=%d,L=%d,table=%v,seed=%d", c.nodes, c.l, c.share, seed), func(t *testing.T) {
				checkWalks(t, seed, c.nodes, c.l, c.share)
			})
		}
	}
}

func checkWalks(t *testing.T, seed uint64, n, l int, share float64) {
	r := rand.New(rand.NewPCG(seed, 0x100b))
	nodes, byID := staticRing(r, n, l, share)
	var keys []ids.ID
	for range 200 {
		keys = append(keys, randID(r))
	}
	if n <= 30 {
		// Node ids and their immediate neighbours are the edges of every arc.
		for _, nd := range nodes {
			keys = append(keys, nd.self.ID, ids.Add(nd.self.ID, ids.ID{31: 1}), ids.Sub(nd.self.ID, ids.ID{31: 1}))
		}
	}
	starts := nodes[:min(len(nodes), 30)]
	const maxHops = 8
	var loops, wrong, long int
	var example []string
	fail := func(count *int, format string, args ...any) {
		*count++
		if len(example) < 3 {
			example = append(example, fmt.Sprintf(format, args...))
		}
	}
	for _, key := range keys {
		want := closestOf(nodes, key)
		for _, cur := range starts {
			seen := map[ids.ID]bool{cur.self.ID: true}
			path := cur.self.Addr
			for hops := 0; ; hops++ {
				next, local := cur.nextHop(key, ids.Zero)
				if local {
					if cur.self.ID != want {
						fail(&wrong, "key %s ends at %s, the closest node is %s (path %s)", key.Short(), cur.self.ID.Short(), want.Short(), path)
					}
					break
				}
				path += " -> " + next.Addr
				if seen[next.ID] {
					fail(&loops, "key %s loops: %s", key.Short(), path)
					break
				}
				if hops >= maxHops {
					fail(&long, "key %s takes more than %d hops: %s", key.Short(), maxHops, path)
					break
				}
				seen[next.ID] = true
				cur = byID[next.ID]
			}
		}
	}
	if loops+wrong+long > 0 {
		t.Errorf("seed %d (rerun with -pastry.seed %d): of %d walks, %d loop, %d end at the wrong node, %d take too many hops; for example:\n%s",
			seed, seed, len(keys)*len(starts), loops, wrong, long, strings.Join(example, "\n"))
	}
}
