package sim

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func smallGlacierConfig(seed uint64, mode string) GlacierConfig {
	return GlacierConfig{Nodes: 60, Objects: 150, Fail: 0.6, FailMode: mode, N: 24, M: 4, Seed: seed,
		JoinSpacing: 50 * time.Millisecond, SyncInterval: 2 * time.Minute, GoneAfter: 5 * time.Minute,
		RepairTime: 2 * time.Hour, Sample: 20}
}

// The same seed gives the same summary lines, and a 60% failure loses nothing and is repaired
// back to all n fragments.
func TestGlacierDeterministicAndRepairs(t *testing.T) {
	const seed = 5
	run := func() (string, []GlacierResult) {
		var out bytes.Buffer
		res, err := RunGlacier(smallGlacierConfig(seed, "random"), &out, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		return out.String(), res
	}
	a, res := run()
	b, _ := run()
	if a != b {
		t.Fatalf("seed %d: two runs differ:\n%s\n---\n%s", seed, a, b)
	}
	if n := strings.Count(a, "\n"); n != 4 {
		t.Fatalf("seed %d: %d summary lines, want 4:\n%s", seed, n, a)
	}
	last := res[len(res)-1]
	if last.Lost != 0 || last.Decoded != last.Objects || last.Full != last.Objects || last.Retrieved != last.Sample {
		t.Fatalf("seed %d: repair incomplete:\n%s", seed, a)
	}
	t.Logf("seed %d:\n%s", seed, a)
}

func TestBinomialBelow(t *testing.T) {
	if p := BinomialBelow(2, 0.5, 1); p != 0.25 {
		t.Fatalf("P[Bin(2,.5) < 1] = %v, want 0.25", p)
	}
	if p := BinomialBelow(48, 0.4, 5); p < 1e-7 || p > 1e-5 {
		t.Fatalf("P[Bin(48,.4) < 5] = %v, want about 1e-6", p)
	}
}
