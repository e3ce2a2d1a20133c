package sim

import (
	"bytes"
	"flag"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

var seedFlag = flag.Uint64("sim.seed", 0, "override the seed of the simulator scenario tests")

func seed(def uint64) uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	return def
}

func runRoute(t *testing.T, c RouteConfig) []RouteResult {
	t.Helper()
	var out bytes.Buffer
	res, err := RunRoute(c, &out, nil)
	if err != nil {
		t.Fatalf("seed %d: %v", c.Seed, err)
	}
	t.Logf("seed %d:\n%s", c.Seed, out.String())
	return res
}

func phase(t *testing.T, res []RouteResult, name string) RouteResult {
	t.Helper()
	for _, r := range res {
		if r.Phase == name {
			return r
		}
	}
	t.Fatalf("no phase %q", name)
	return RouteResult{}
}

func TestSameSeedSameOutput(t *testing.T) {
	c := RouteConfig{Nodes: 150, Lookups: 300, Fail: 0.2, Seed: seed(11)}
	var a, b bytes.Buffer
	if _, err := RunRoute(c, &a, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := RunRoute(c, &b, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("seed %d: two runs differ:\n%s\n---\n%s", c.Seed, a.String(), b.String())
	}
	c.Seed++
	var d bytes.Buffer
	if _, err := RunRoute(c, &d, nil); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), d.Bytes()) {
		t.Fatalf("seeds %d and %d gave identical output", c.Seed-1, c.Seed)
	}
}

func TestJoinGivesExactLeafSetsAndCorrectRouting(t *testing.T) {
	res := runRoute(t, RouteConfig{Nodes: 400, Lookups: 2000, Seed: seed(1)})
	b := phase(t, res, "build")
	if b.LeafSetsOK != 100 || b.Nodes != 400 {
		t.Fatalf("seed %d: after joins %d nodes, leaf sets ok %.2f%%", seed(1), b.Nodes, b.LeafSetsOK)
	}
	l := phase(t, res, "lookups")
	if l.Correct != 100 {
		t.Fatalf("seed %d: correct=%.2f", seed(1), l.Correct)
	}
	if l.AvgHops > 2.5 { // log16(400) ≈ 2.16
		t.Fatalf("seed %d: avg_hops=%.2f", seed(1), l.AvgHops)
	}
}

func TestFailureDetectionAndRepair(t *testing.T) {
	for _, mode := range []string{"random", "correlated"} {
		t.Run(mode, func(t *testing.T) {
			res := runRoute(t, RouteConfig{Nodes: 400, Lookups: 2000, Fail: 0.3, FailMode: mode, Seed: seed(2)})
			after := phase(t, res, "after-repair")
			if after.Correct != 100 || after.LeafSetsOK != 100 {
				t.Fatalf("seed %d: after repair correct=%.2f leafsets_ok=%.2f", seed(2), after.Correct, after.LeafSetsOK)
			}
			if f := phase(t, res, "after-failure"); f.Delivered < 99 {
				t.Fatalf("seed %d: right after the failure only %.2f%% delivered: hop-by-hop re-routing is not working", seed(2), f.Delivered)
			}
		})
	}
}

func TestChurnKeepsRoutingCorrect(t *testing.T) {
	res := runRoute(t, RouteConfig{Nodes: 200, Lookups: 2000, Churn: 10 * time.Minute, Duration: 20 * time.Minute, Seed: seed(3)})
	c := phase(t, res, "churn")
	if c.Correct < 99.5 || c.Delivered < 99.5 {
		t.Fatalf("seed %d: under churn delivered=%.2f correct=%.2f", seed(3), c.Delivered, c.Correct)
	}
}

func TestMessageLossIsSurvived(t *testing.T) {
	r := newSimRing(seed(4), pastry.Config{LeafSetSize: 16}, 250*time.Millisecond)
	for i := 0; i < 150; i++ {
		r.net.RunFor(10 * time.Millisecond)
		r.addNode()
	}
	r.net.RunFor(time.Minute)
	r.net.SetLoss(0.05)
	run := &routeRun{cfg: RouteConfig{Nodes: 150, LookupRate: 100, LeafSet: 16}, ring: r}
	r.onDeliver = run.onDeliver
	res := run.lookupPhase("lossy", 1000)
	t.Logf("seed %d: %s", seed(4), res)
	if res.Delivered < 99.9 || res.Correct < 99.5 {
		t.Fatalf("seed %d: with 5%% loss delivered=%.2f correct=%.2f", seed(4), res.Delivered, res.Correct)
	}
}

// TestPartitionHeals splits the ring in two, lets each half repair into a ring of its own,
// then reconnects the network: healing through nodes once declared dead merges them again.
func TestPartitionHeals(t *testing.T) {
	s := seed(5)
	cfg := pastry.Config{LeafSetSize: 16, HealInterval: 30 * time.Second}
	r := newSimRing(s, cfg, 250*time.Millisecond)
	for i := 0; i < 120; i++ {
		r.net.RunFor(10 * time.Millisecond)
		r.addNode()
	}
	r.net.RunFor(30 * time.Second)
	if acc := r.leafSetAccuracy(); acc != 100 {
		t.Fatalf("seed %d: leaf sets before the split %.2f%%", s, acc)
	}
	// Split by position in the latency space: west and east.
	var west []ids.ID
	for _, sn := range r.nodes {
		if sn.ep.X < 0.5 {
			sn.ep.SetPartition(1)
			west = append(west, sn.ep.ID())
		}
	}
	r.net.RunFor(3 * time.Minute)
	slices.SortFunc(west, ids.Cmp)
	for _, sn := range r.nodes {
		if sn.ep.X >= 0.5 {
			continue
		}
		want := expectedLeafSet(west, sn.ep.ID(), 8)
		var got []ids.ID
		sn.drv.With(func(n *pastry.Node) {
			for _, h := range n.LeafMembers() {
				got = append(got, h.ID)
			}
		})
		slices.SortFunc(got, ids.Cmp)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: during the split node %s does not have the west half's leaf set", s, sn.ep.ID().Short())
		}
	}
	for _, sn := range r.nodes {
		sn.ep.SetPartition(0)
	}
	r.net.RunFor(5 * time.Minute)
	if acc := r.leafSetAccuracy(); acc != 100 {
		t.Fatalf("seed %d: 5 minutes after the partition ended, only %.2f%% of leaf sets are whole again", s, acc)
	}
}
