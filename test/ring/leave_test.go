package ring

import (
	"epost/test/cluster"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
)

// TestCleanStopLeaves: a node stopped with SIGTERM tells its neighbours it leaves, so the
// others' leaf sets drop it within a second or two. Failure detection could not do it that
// fast here: the probe interval is the production 20 s, so a silent node would be noticed
// only after 20 s and more. Before it exits it hands its objects over: every object is back
// on three nodes at once, although the neighbours' own maintenance waits 30 s after a
// leaf-set change here. The node exits with status 0, says in its log what it did, and a
// restart with the same id rejoins.
func TestCleanStopLeaves(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, "leave", 5, nil)
	c.RunFlags = append(c.RunFlags, "--probe-interval", "20s", "--probe-timeout", "800ms", "--past-maintenance-delay", "30s")
	for _, n := range c.Nodes {
		n.Start()
	}
	took := c.WaitConverged(c.Nodes, 60*time.Second)
	t.Logf("5 nodes ready with the expected leaf sets after %v", took.Round(time.Millisecond))

	var keys []string
	for _, l := range strings.Split(cluster.Run(t, "object", "bulk-put", "--dir", c.Nodes[0].Dir, "--count", "60", "--size", "2KiB", "--timeout", "60s"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			keys = append(keys, f[0])
		}
	}
	if len(keys) != 60 {
		t.Fatalf("bulk-put acknowledged %d objects, want 60", len(keys))
	}

	x := c.Nodes[2]
	rest := slices.DeleteFunc(slices.Clone(c.Nodes), func(n *cluster.Node) bool { return n == x })
	var restIDs []ids.ID
	for _, n := range rest {
		restIDs = append(restIDs, n.ID)
	}
	// Watch the others' leaf sets while x stops (Stop sends SIGTERM and waits for the exit).
	type result struct {
		after time.Duration
		last  string
	}
	done := make(chan result, 1)
	stop := make(chan struct{})
	start := time.Now()
	go func() {
		var last string
		for time.Since(start) < 30*time.Second {
			select {
			case <-stop:
				done <- result{-1, last}
				return
			default:
			}
			last = ""
			for _, n := range rest {
				st, err := n.Status()
				if err != nil {
					last += fmt.Sprintf("\n  %s: %v", n.Name, err)
					continue
				}
				want := cluster.ExpectedLeafSet(n.ID, restIDs, st.LeafSetSize)
				if got := st.SortedLeafSet(); !slices.Equal(got, want) {
					last += fmt.Sprintf("\n  %s: leaf set %s, want %s", n.Name, cluster.ShortIDs(got), cluster.ShortIDs(want))
				}
			}
			if last == "" {
				done <- result{time.Since(start), ""}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		done <- result{-1, last}
	}()
	x.Stop()
	exited := time.Since(start)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		close(stop)
		r = <-done
	}
	if r.after < 0 {
		t.Fatalf("the others still list %s 30s after its SIGTERM:%s", x.Name, r.last)
	}
	t.Logf("SIGTERM to %s: gone from every leaf set after %v; the process exited after %v",
		x.Name, r.after.Round(time.Millisecond), exited.Round(time.Millisecond))
	if r.after > 2500*time.Millisecond {
		t.Errorf("the leave took %v to reach every leaf set, want about a second", r.after)
	}
	if exited > 4*time.Second {
		t.Errorf("the clean stop took %v, want the hand-over grace (2s) and little more", exited)
	}
	log := x.Log()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "left the ring") {
			t.Logf("%s: %s", x.Name, l)
		}
	}
	if !strings.Contains(log, "msg=\"left the ring\"") || !strings.Contains(log, "leaf_members_told=4") ||
		strings.Contains(log, "keys_offered=0") {
		t.Errorf("%s's log lacks the leave line with 4 leaf members told and keys offered:\n%s", x.Name, x.LogTail(15))
	}

	// Three copies of everything among the four left, without waiting for maintenance (30 s
	// after the change; the 10 s allowed here are for "object held" on a loaded machine).
	var short []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		count := map[string]int{}
		for _, n := range rest {
			out, err := cluster.RunErr("object", "held", "--dir", n.Dir, "--timeout", "10s")
			if err != nil {
				t.Fatalf("%s: object held: %v: %s", n.Name, err, out)
			}
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					count[f[0]]++
				}
			}
		}
		short = short[:0]
		for _, k := range keys {
			if count[k] < 3 {
				short = append(short, fmt.Sprintf("%s:%d", k[:min(8, len(k))], count[k]))
			}
		}
		if len(short) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(short) > 0 {
		t.Errorf("%d objects on fewer than 3 nodes after the hand-over: %v", len(short), short)
	}
	t.Logf("after the leave: %d objects on three nodes each", len(keys)-len(short))

	// The same node id comes back.
	x.Start()
	took = c.WaitConverged(c.Nodes, 30*time.Second)
	t.Logf("%s restarted: rejoined after %v", x.Name, took.Round(time.Millisecond))
}
