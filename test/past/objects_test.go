package past

import (
	"bufio"
	"bytes"
	"epost/test/cluster"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
)

// Helpers around "epost object": bulk inserts whose acknowledged keys are recorded line by line
// as they arrive, listings of what each node holds, and the replica check against the global
// truth (the k live nodes closest to each key).

// acked is one acknowledged insert as "epost object bulk-put" printed it.
type acked struct {
	key, sha256 string
	via         string // the node it was inserted through
}

// bulkPut runs "epost object bulk-put" through n in the background. Every acknowledged key is
// sent on out as soon as the command prints it; the result is sent on done when it exits.
type bulkRun struct {
	node   *cluster.Node
	stderr bytes.Buffer
	done   chan error
}

func bulkPut(t *testing.T, n *cluster.Node, count int, size string, seed uint64, out chan<- acked) *bulkRun {
	t.Helper()
	cmd := exec.Command(cluster.Bin, "object", "bulk-put", "--dir", n.Dir, "--count", strconv.Itoa(count), "--size", size,
		"--concurrency", "8", "--seed", strconv.FormatUint(seed, 10), "--timeout", "60s")
	r := &bulkRun{node: n, done: make(chan error, 1)}
	cmd.Stderr = &r.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 {
				out <- acked{key: f[0], sha256: f[1], via: n.Name}
			}
		}
		r.done <- cmd.Wait()
	}()
	return r
}

// held lists the keys n's store holds ("epost object held").
func held(n *cluster.Node) (map[string]bool, error) {
	out, err := cluster.RunErr("object", "held", "--dir", n.Dir, "--timeout", "10s")
	if err != nil {
		return nil, fmt.Errorf("%s: object held: %v: %s", n.Name, err, strings.TrimSpace(out))
	}
	keys := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			keys[f[0]] = true
		}
	}
	return keys, nil
}

// closest returns the k nodes of live whose ids are numerically closest to key.
func closest(key ids.ID, live []*cluster.Node, k int) []*cluster.Node {
	s := slices.Clone(live)
	slices.SortFunc(s, func(a, b *cluster.Node) int {
		switch {
		case a.ID == b.ID:
			return 0
		case ids.Closer(key, a.ID, b.ID):
			return -1
		}
		return 1
	})
	return s[:min(k, len(s))]
}

// waitReplicated polls the held listings of every live node until each of keys is held by its
// k closest live nodes, and returns how long that took.
func waitReplicated(t *testing.T, keys []string, live []*cluster.Node, k int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	parsed := make([]ids.ID, len(keys))
	for i, s := range keys {
		id, err := ids.Parse(s)
		if err != nil {
			t.Fatalf("key %q: %v", s, err)
		}
		parsed[i] = id
	}
	var missing []string
	for {
		holds := make(map[*cluster.Node]map[string]bool, len(live))
		var mu sync.Mutex
		var wg sync.WaitGroup
		var errs []error
		for _, n := range live {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h, err := held(n)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				holds[n] = h
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
		missing = missing[:0]
		under := 0
		for i, key := range keys {
			short := false
			for _, n := range closest(parsed[i], live, k) {
				if !holds[n][key] {
					short = true
					if len(missing) < 5 {
						missing = append(missing, key[:8]+" not on "+n.Name)
					}
				}
			}
			if short {
				under++
			}
		}
		if under == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %v, %d of %d objects are not on their %d closest live nodes, e.g. %s",
				timeout, under, len(keys), k, strings.Join(missing, ", "))
		}
		time.Sleep(time.Second)
	}
}

// bulkGet looks every key up through n and checks each object's SHA-256 against want.
func bulkGet(t *testing.T, n *cluster.Node, want map[string]string) {
	t.Helper()
	var keys bytes.Buffer
	for k := range want {
		keys.WriteString(k + "\n")
	}
	f := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(f, keys.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := cluster.RunErr("object", "bulk-get", "--dir", n.Dir, "--keys", f, "--concurrency", "16", "--timeout", "60s")
	if err != nil {
		t.Fatalf("bulk-get through %s: %v\n%s", n.Name, err, lastLines(out, 20))
	}
	got := 0
	for _, l := range strings.Split(out, "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 {
			continue
		}
		if w, ok := want[fs[0]]; !ok || w != fs[1] {
			t.Errorf("lookup of %s through %s returned content with SHA-256 %s, want %s", fs[0][:8], n.Name, fs[1], w)
		}
		got++
	}
	if got != len(want) {
		t.Fatalf("lookups through %s found %d of %d objects", n.Name, got, len(want))
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
