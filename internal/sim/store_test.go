package sim

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func smallStoreConfig(seed uint64, mode string) StoreConfig {
	return StoreConfig{Nodes: 60, Objects: 400, Fail: 0.2, FailMode: mode, Seed: seed, Replicas: 3,
		JoinSpacing: 50 * time.Millisecond, FailSpacing: 20 * time.Second, RepairTime: 2 * time.Minute}
}

// The same seed gives the same summary lines.
func TestStoreDeterministic(t *testing.T) {
	const seed = 5
	run := func() string {
		var out bytes.Buffer
		if _, err := RunStore(smallStoreConfig(seed, "random"), &out, nil); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		return out.String()
	}
	a, b := run(), run()
	if a != b {
		t.Fatalf("seed %d: two runs differ:\n%s\n---\n%s", seed, a, b)
	}
	if n := strings.Count(a, "\n"); n != 4 {
		t.Fatalf("seed %d: %d summary lines, want 4:\n%s", seed, n, a)
	}
	if !strings.Contains(a, "predicted_lost=") {
		t.Fatalf("seed %d: random mode lacks the prediction:\n%s", seed, a)
	}
}

// Failures one at a time, with repair in between, lose nothing and leave every object on its
// k closest live nodes.
func TestStoreSequentialFailuresLoseNothing(t *testing.T) {
	const seed = 6
	var out bytes.Buffer
	res, err := RunStore(smallStoreConfig(seed, "sequential"), &out, nil)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	last := res[len(res)-1]
	if last.Lost != 0 || last.UnderReplicated != 0 || res[1].InsertsFailed != 0 {
		t.Fatalf("seed %d: %s", seed, out.String())
	}
	t.Logf("seed %d:\n%s", seed, out.String())
}
