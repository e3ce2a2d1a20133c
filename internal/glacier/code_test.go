package glacier

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// Any m of the n fragments give the object back, for several shapes of code and sizes
// (including sizes not divisible by m, and the empty object).
func TestCodecAnyM(t *testing.T) {
	const seed = 1
	rng := rand.New(rand.NewPCG(seed, 0))
	for _, tc := range []struct{ n, m int }{{48, 5}, {12, 3}, {2, 1}, {5, 5}, {256, 64}} {
		c, err := NewCodec(tc.n, tc.m)
		if err != nil {
			t.Fatalf("seed %d: %d/%d: %v", seed, tc.n, tc.m, err)
		}
		for _, size := range []int{0, 1, 1000, 4097} {
			obj := randBytes(rng, size)
			frags, err := c.Encode(obj)
			if err != nil {
				t.Fatalf("seed %d: %d/%d size %d: %v", seed, tc.n, tc.m, size, err)
			}
			for trial := 0; trial < 5; trial++ {
				sub := make([][]byte, tc.n)
				for _, i := range rng.Perm(tc.n)[:tc.m] {
					sub[i] = frags[i]
				}
				got, err := c.Decode(sub, size)
				if err != nil || !bytes.Equal(got, obj) {
					t.Fatalf("seed %d: %d/%d size %d: decode from %d fragments: %v", seed, tc.n, tc.m, size, tc.m, err)
				}
				// Rebuild a missing fragment, data or parity, from the same m.
				for i := range sub {
					if sub[i] == nil {
						f, err := c.Rebuild(sub, size, i)
						if err != nil || !bytes.Equal(f, frags[i]) {
							t.Fatalf("seed %d: %d/%d size %d: rebuild %d: %v", seed, tc.n, tc.m, size, i, err)
						}
						break
					}
				}
				// And a parity fragment specifically, with data fragments missing.
				if tc.n > tc.m {
					f, err := c.Rebuild(sub, size, tc.n-1)
					if err != nil || !bytes.Equal(f, frags[tc.n-1]) {
						t.Fatalf("seed %d: %d/%d size %d: rebuild parity: %v", seed, tc.n, tc.m, size, err)
					}
				}
			}
			if tc.m > 1 {
				sub := make([][]byte, tc.n)
				for _, i := range rng.Perm(tc.n)[:tc.m-1] {
					sub[i] = frags[i]
				}
				if _, err := c.Decode(sub, size); !errors.Is(err, ErrTooFewFragments) {
					t.Fatalf("seed %d: %d/%d: decode from m-1 fragments: %v", seed, tc.n, tc.m, err)
				}
			}
		}
	}
	for _, bad := range [][2]int{{257, 5}, {4, 5}, {4, 0}} {
		if _, err := NewCodec(bad[0], bad[1]); err == nil {
			t.Fatalf("NewCodec(%d, %d) accepted", bad[0], bad[1])
		}
	}
}
