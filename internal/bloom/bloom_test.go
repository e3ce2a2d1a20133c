package bloom

import (
	"math/rand/v2"
	"testing"

	"epost/internal/ids"
)

func TestNoFalseNegativesAndFewFalsePositives(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 5000
	f := New(n, 42, 1<<20)
	var in []ids.ID
	for i := 0; i < n; i++ {
		var id ids.ID
		for j := range id {
			id[j] = byte(r.Uint32())
		}
		in = append(in, id)
		f.Add(id, uint64(i))
	}
	for i, id := range in {
		if !f.Has(id, uint64(i)) {
			t.Fatalf("false negative for pair %d", i)
		}
	}
	fp := 0
	for i, id := range in {
		if f.Has(id, uint64(i)+1) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.03 {
		t.Fatalf("false-positive rate %.3f, want about 0.01", rate)
	}
	if (&Filter{}).Has(in[0], 0) {
		t.Fatal("an empty filter must hold nothing")
	}
}
