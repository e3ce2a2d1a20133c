package past

import (
	"epost/test/cluster"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// TestInsertsSurviveCrashes: eight node processes on loopback over the real TLS transport, k = 3.
// 1,000 objects are inserted through two nodes' control sockets while two other, randomly
// chosen nodes are killed with SIGKILL. Afterwards every acknowledged insert is retrievable
// with the right content through a surviving node, and once repair has run every acknowledged
// object is on its k closest live nodes. Then one killed node restarts: its store is intact
// (it holds everything it held just before the kill), it rejoins, and no acknowledged object is
// lost.
func TestInsertsSurviveCrashes(t *testing.T) {
	began := time.Now()
	c := newCluster(t, "pasttest", 8, nil)
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x5eed))
	const k = 3 // the ring descriptor's default replication factor
	for _, n := range c.Nodes {
		n.Start()
	}
	took := c.WaitConverged(c.Nodes, 60*time.Second)
	t.Logf("8 nodes ready after %v", took.Round(time.Millisecond))

	// Insert through nodes 1 and 2; kill two of the other six.
	via := c.Nodes[:2]
	others := c.Nodes[2:]
	perm := rng.Perm(len(others))
	victims := []*cluster.Node{others[perm[0]], others[perm[1]]}
	t.Logf("inserting through %s and %s; will kill %s (%s) and %s (%s)", via[0].Name, via[1].Name,
		victims[0].Name, victims[0].ID.Short(), victims[1].Name, victims[1].ID.Short())

	const total, each = 1000, 500
	results := make(chan acked, total)
	runs := []*bulkRun{
		bulkPut(t, via[0], each, "1KiB", c.Seed+1, results),
		bulkPut(t, via[1], each, "1KiB", c.Seed+2, results),
	}
	want := map[string]string{} // acknowledged key -> SHA-256 of its content
	killAt := []int{total / 5, total / 2}
	var snapshot map[string]bool // what victims[0] held just before it was killed
	finished := 0
	insertStart := time.Now()
	for finished < len(runs) {
		select {
		case a := <-results:
			if a.key != a.sha256 {
				t.Errorf("content object %s reported with SHA-256 %s", a.key, a.sha256)
			}
			want[a.key] = a.sha256
			for i, at := range killAt {
				if len(want) == at {
					if i == 0 {
						var err error
						if snapshot, err = held(victims[0]); err != nil {
							t.Fatal(err)
						}
					}
					victims[i].Kill9()
					t.Logf("SIGKILL %s after %d acknowledged inserts (%v)", victims[i].Name, at, time.Since(insertStart).Round(time.Millisecond))
				}
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("inserts stalled at %d acknowledged", len(want))
		case err := <-runs[0].done:
			finished++
			logRun(t, runs[0], err)
			runs[0].done = nil
		case err := <-runs[1].done:
			finished++
			logRun(t, runs[1], err)
			runs[1].done = nil
		}
	}
	// Lines still buffered in the channel after both commands exited.
	for len(results) > 0 {
		a := <-results
		want[a.key] = a.sha256
	}
	t.Logf("%d of %d inserts acknowledged in %v", len(want), total, time.Since(insertStart).Round(time.Millisecond))
	if len(want) < total*9/10 {
		t.Fatalf("only %d of %d inserts acknowledged; with two of eight nodes down most inserts must still reach a majority", len(want), total)
	}
	if len(snapshot) == 0 {
		t.Fatalf("%s held nothing before it was killed", victims[0].Name)
	}

	var live []*cluster.Node
	for _, n := range c.Nodes {
		if n != victims[0] && n != victims[1] {
			live = append(live, n)
		}
	}
	took = c.WaitConverged(live, 30*time.Second)
	t.Logf("failures detected: 6 live nodes converged after %v", took.Round(time.Millisecond))

	// Every acknowledged object is retrievable, with the right content, through a survivor that
	// was not used for the inserts (lookups route through the ring like anyone else's).
	reader := others[perm[2]]
	bulkGet(t, reader, want)
	t.Logf("all %d acknowledged objects retrieved through %s", len(want), reader.Name)

	keys := make([]string, 0, len(want))
	for key := range want {
		keys = append(keys, key)
	}
	took = waitReplicated(t, keys, live, k, 60*time.Second)
	t.Logf("every acknowledged object on its %d closest live nodes %v after convergence", k, took.Round(time.Millisecond))

	// Restart the first victim: same directory, same id, same store.
	back := victims[0]
	back.Start()
	live = append(live, back)
	took = c.WaitConverged(live, 30*time.Second)
	t.Logf("%s restarted and rejoined after %v", back.Name, took.Round(time.Millisecond))
	after, err := held(back)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for key := range snapshot {
		if !after[key] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%s lost %d of the %d objects it held before SIGKILL: its store did not survive the crash", back.Name, lost, len(snapshot))
	}
	t.Logf("%s kept all %d objects it held before the kill", back.Name, len(snapshot))
	bulkGet(t, back, want)
	took = waitReplicated(t, keys, live, k, 60*time.Second)
	t.Logf("with %s back, every acknowledged object on its %d closest live nodes after %v", back.Name, k, took.Round(time.Millisecond))

	st, err := back.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Past.Replicas != k || st.Past.Objects < int64(len(snapshot)) || st.Past.BadMessages != 0 {
		t.Errorf("%s: implausible past status %+v", back.Name, st.Past)
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// logRun reports how a bulk insert command ended. A non-zero exit is expected when some
// inserts lost their quorum to the crashes; anything else (no summary) fails the test.
func logRun(t *testing.T, r *bulkRun, err error) {
	t.Helper()
	out := r.stderr.String()
	summary := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "bulk-put ") {
			summary = l
		}
	}
	if summary == "" {
		t.Fatalf("bulk-put through %s ended without a summary (%v):\n%s", r.node.Name, err, lastLines(out, 20))
	}
	t.Logf("%s: %s", r.node.Name, summary)
	if err != nil {
		t.Logf("%s: failed inserts:\n%s", r.node.Name, lastLines(out, 10))
	}
}

// TestPutGetCommands: the operator commands on a small ring: put a file and standard input,
// get them back (to stdout and to a file), a clear error for an unknown key and for a node
// that is not running, and the status lines.
func TestPutGetCommands(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "pastcli", 4, nil)
	for _, n := range c.Nodes {
		n.Start()
	}
	c.WaitConverged(c.Nodes, 60*time.Second)
	a, b := c.Nodes[0], c.Nodes[3]

	file := t.TempDir() + "/hello.txt"
	content := "hello from a file\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(cluster.Run(t, "object", "put", "--dir", a.Dir, "--file", file))
	if len(key) != 64 {
		t.Fatalf("put printed %q, want a 64-digit key", key)
	}
	if got := cluster.Run(t, "object", "get", key, "--dir", b.Dir); got != content {
		t.Fatalf("get through another node: %q, want %q", got, content)
	}
	out := t.TempDir() + "/out"
	cluster.Run(t, "object", "get", "--dir", a.Dir, "--out", out, key)
	if got, err := os.ReadFile(out); err != nil || string(got) != content {
		t.Fatalf("get --out: %q, %v", got, err)
	}

	cmd := cluster.Cmd("object", "put", "--dir", b.Dir, "-")
	cmd.Stdin = strings.NewReader("from stdin")
	o, err := cmd.Output()
	if err != nil {
		t.Fatalf("put from stdin: %v", err)
	}
	if got := cluster.Run(t, "object", "get", "--dir", a.Dir, strings.TrimSpace(string(o))); got != "from stdin" {
		t.Fatalf("get of the stdin object: %q", got)
	}

	missing := strings.Repeat("ab", 32)
	if o, err := cluster.RunErr("object", "get", "--dir", a.Dir, missing); err == nil || !strings.Contains(o, "no replica holds it") {
		t.Errorf("get of a missing key: %v, %q", err, o)
	}
	if o, err := cluster.RunErr("object", "put", "--dir", t.TempDir(), "--file", file); err == nil || !strings.Contains(o, "no node running in") {
		t.Errorf("put without a node: %v, %q", err, o)
	}
	st := cluster.Run(t, "status", "--dir", b.Dir)
	if !strings.Contains(st, "past      ") || !strings.Contains(st, "(k=3)") {
		t.Errorf("status lacks the past lines:\n%s", st)
	}
}
