package glacier

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
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

// Decoding from ever new combinations of fragments must not retain memory (reedsolomon's
// inversion cache kept one matrix per combination, without bound).
func TestDecodeRetainsNothing(t *testing.T) {
	const seed = 71
	c, err := NewCodec(64, 8)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	obj := randBytes(r, 4000)
	frags, err := c.Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	decode := func() {
		got := make([][]byte, len(frags))
		for _, i := range r.Perm(len(frags))[:8] {
			got[i] = frags[i]
		}
		if out, err := c.Decode(got, len(obj)); err != nil || !bytes.Equal(out, obj) {
			t.Fatalf("seed %d: decode: %v", seed, err)
		}
	}
	for range 100 {
		decode()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 3000 {
		decode()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c) // the codec (and any cache in it) must be alive when measured
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Fatalf("seed %d: 3,000 decodes from random fragment sets retained %d bytes", seed, grew)
	}
}
