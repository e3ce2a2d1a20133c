package ring

import (
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
	c := newCluster(t, "eight", 8, nil)
	for _, n := range c.nodes {
		n.start()
	}
	took := c.waitConverged(c.nodes, 60*time.Second)
	t.Logf("8 nodes ready with the expected leaf sets after %v", took.Round(time.Millisecond))

	// Kill -9 two nodes (not the bootstrap node).
	a, b := c.nodes[2], c.nodes[5]
	a.kill9()
	b.kill9()
	var rest []*node
	for _, n := range c.nodes {
		if n != a && n != b {
			rest = append(rest, n)
		}
	}
	// Detection takes about 3s with the test timers (probe interval 500ms, then probes timing out
	// after 150, 300 and 600ms, then indirect probes); 15s leaves room for a slow CI machine.
	took = c.waitConverged(rest, 15*time.Second)
	t.Logf("killed %s and %s: dropped from every leaf set after %v", a.name, b.name, took.Round(time.Millisecond))

	// Restart them: same directories, same ids.
	a.start()
	b.start()
	took = c.waitConverged(c.nodes, 30*time.Second)
	t.Logf("restarted %s and %s: rejoined after %v", a.name, b.name, took.Round(time.Millisecond))

	// Stop the bootstrap node cleanly (exit 0, control socket removed), then crash and restart
	// another node: its only configured bootstrap node is down, so it must use remembered peers.
	boot := c.nodes[0]
	boot.stop()
	rest = slices.DeleteFunc(slices.Clone(c.nodes), func(n *node) bool { return n == boot })
	c.waitConverged(rest, 30*time.Second)
	if out, err := epostErr("status", "--dir", boot.dir); err == nil ||
		!strings.Contains(out, "no node running in "+boot.dir+" (control socket missing): start it with epost node run --dir "+boot.dir) {
		t.Errorf("status of a stopped node: err %v, output %q", err, out)
	}
	x := c.nodes[4]
	if _, err := os.Stat(x.dir + "/data/peers.json"); err != nil {
		t.Fatalf("%s remembers no peers: %v", x.name, err)
	}
	x.kill9()
	x.start()
	x.waitLog(10*time.Second, "bootstrap "+boot.addr+" unreachable", "bootstrap answered, joining")
	took = c.waitConverged(rest, 30*time.Second)
	t.Logf("%s restarted with its bootstrap node down: rejoined through remembered peers after %v", x.name, took.Round(time.Millisecond))

	// Finally every node agrees: all ready, and leaf set plus self is the same set everywhere.
	var want []string
	for _, n := range rest {
		st, err := n.status()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Ready {
			t.Errorf("%s not ready", n.name)
		}
		got := append(st.SortedLeafSet(), st.NodeID)
		slices.Sort(got)
		if want == nil {
			want = got
		} else if !slices.Equal(got, want) {
			t.Errorf("%s: leaf set plus self %s differs from %s", n.name, shortIDs(got), shortIDs(want))
		}
		if st.Peers == 0 || st.RoutingTableEntries == 0 || st.Transport.FramesIn == 0 {
			t.Errorf("%s: implausible status %+v", n.name, st)
		}
	}
}

// TestBootstrapDownAtStart: a node whose bootstrap node is not up yet says so, retries with
// growing waits, and joins as soon as the bootstrap node starts.
func TestBootstrapDownAtStart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "late", 2, nil)
	boot, late := c.nodes[0], c.nodes[1]
	late.start()
	late.waitLog(10*time.Second,
		"bootstrap "+boot.addr+" unreachable: dial tcp "+boot.addr+": connect: connection refused; retrying in 250ms",
		"retrying in 500ms", "retrying in 1s")
	st, err := late.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.Phase != "starting" {
		t.Fatalf("before the bootstrap node runs: ready=%v phase=%s, want not ready, starting", st.Ready, st.Phase)
	}
	boot.start()
	took := c.waitConverged(c.nodes, 30*time.Second)
	t.Logf("joined %v after the bootstrap node started", took.Round(time.Millisecond))
}
