package ring

import (
	"epost/test/cluster"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEightNodes: eight processes join through node 1 and converge to the leaf sets the global
// truth dictates; two killed with SIGKILL drop out of everyone's leaf set, come back with the
// same ids, and a node restarted while the bootstrap node is down rejoins through the peers it
// remembered on disk.
func TestEightNodes(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, "eight", 8, nil)
	for _, n := range c.Nodes {
		n.Start()
	}
	took := c.WaitConverged(c.Nodes, 60*time.Second)
	t.Logf("8 nodes ready with the expected leaf sets after %v", took.Round(time.Millisecond))

	// Kill -9 two nodes (not the bootstrap node).
	a, b := c.Nodes[2], c.Nodes[5]
	a.Kill9()
	b.Kill9()
	var rest []*cluster.Node
	for _, n := range c.Nodes {
		if n != a && n != b {
			rest = append(rest, n)
		}
	}
	// Detection takes about 3s with the test timers (probe interval 500ms, then probes timing out
	// after 150, 300 and 600ms, then indirect probes); 15s leaves room for a slow CI machine.
	took = c.WaitConverged(rest, 15*time.Second)
	t.Logf("killed %s and %s: dropped from every leaf set after %v", a.Name, b.Name, took.Round(time.Millisecond))

	// Restart them: same directories, same ids.
	a.Start()
	b.Start()
	took = c.WaitConverged(c.Nodes, 30*time.Second)
	t.Logf("restarted %s and %s: rejoined after %v", a.Name, b.Name, took.Round(time.Millisecond))

	// Stop the bootstrap node cleanly (exit 0, control socket removed), then crash and restart
	// another node: its only configured bootstrap node is down, so it must use remembered peers.
	boot := c.Nodes[0]
	boot.Stop()
	rest = slices.DeleteFunc(slices.Clone(c.Nodes), func(n *cluster.Node) bool { return n == boot })
	c.WaitConverged(rest, 30*time.Second)
	if out, err := cluster.RunErr("status", "--dir", boot.Dir); err == nil ||
		!strings.Contains(out, "no node running in "+boot.Dir+" (control socket missing): start it with epost node run --dir "+boot.Dir) {
		t.Errorf("status of a stopped node: err %v, output %q", err, out)
	}
	x := c.Nodes[4]
	if _, err := os.Stat(x.Dir + "/data/peers.json"); err != nil {
		t.Fatalf("%s remembers no peers: %v", x.Name, err)
	}
	x.Kill9()
	x.Start()
	x.WaitLog(10*time.Second, "bootstrap "+boot.Addr+" unreachable", "bootstrap answered, joining")
	took = c.WaitConverged(rest, 30*time.Second)
	t.Logf("%s restarted with its bootstrap node down: rejoined through remembered peers after %v", x.Name, took.Round(time.Millisecond))

	// Finally every node agrees: all ready, and leaf set plus self is the same set everywhere.
	var want []string
	for _, n := range rest {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Ready {
			t.Errorf("%s not ready", n.Name)
		}
		got := append(st.SortedLeafSet(), st.NodeID)
		slices.Sort(got)
		if want == nil {
			want = got
		} else if !slices.Equal(got, want) {
			t.Errorf("%s: leaf set plus self %s differs from %s", n.Name, cluster.ShortIDs(got), cluster.ShortIDs(want))
		}
		if st.Peers == 0 || st.RoutingTableEntries == 0 || st.Transport.FramesIn == 0 {
			t.Errorf("%s: implausible status %+v", n.Name, st)
		}
	}
}

// TestBootstrapDownAtStart: a node whose bootstrap node is not up yet says so, retries with
// growing waits, and joins as soon as the bootstrap node starts.
func TestBootstrapDownAtStart(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, "late", 2, nil)
	boot, late := c.Nodes[0], c.Nodes[1]
	late.Start()
	late.WaitLog(10*time.Second,
		"bootstrap "+boot.Addr+" unreachable: dial tcp "+boot.Addr+": connect: connection refused; retrying in 250ms",
		"retrying in 500ms", "retrying in 1s")
	st, err := late.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.Phase != "starting" {
		t.Fatalf("before the bootstrap node runs: ready=%v phase=%s, want not ready, starting", st.Ready, st.Phase)
	}
	boot.Start()
	took := c.WaitConverged(c.Nodes, 30*time.Second)
	t.Logf("joined %v after the bootstrap node started", took.Round(time.Millisecond))
}
