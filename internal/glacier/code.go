package glacier

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// MaxFragments is the largest n this package accepts. reedsolomon v1.12.4 builds classic
// Vandermonde codes over GF(2^8), which allow at most 256 data+parity shards; above 256 it
// switches to Leopard codes over GF(2^16) (up to 65,536 shards, but shard sizes must be
// multiples of 64 bytes and Split/Join are unsupported). Glacier's n is a per-ring constant
// far below 256, so we stay with the GF(2^8) codes and refuse more.
const MaxFragments = 256

// ErrTooFewFragments is returned when fewer than m valid fragments are at hand.
var ErrTooFewFragments = errors.New("glacier: fewer than m fragments")

// Codec erasure-codes objects into n fragments of which any m rebuild the object: fragments
// 0..m-1 are the object itself cut into m equal pieces (zero-padded), m..n-1 are parity.
// A Codec is safe for concurrent use.
type Codec struct {
	n, m int
	enc  reedsolomon.Encoder
}

// NewCodec returns a codec for n fragments, any m of which suffice (1 <= m <= n <= 256).
func NewCodec(n, m int) (*Codec, error) {
	if m < 1 || n < m || n > MaxFragments {
		return nil, fmt.Errorf("glacier: fragments %d/%d: want 1 <= m <= n <= %d", n, m, MaxFragments)
	}
	// No inversion cache: reedsolomon caches the inverted matrix of every combination of
	// fragments it decoded from, without bound, and Glacier's readers and rebuilders draw
	// random combinations (C(64, 8) of them): the cache grew a simulated node to gigabytes.
	// Inverting an m×m matrix costs microseconds next to decoding the object.
	enc, err := reedsolomon.New(m, n-m, reedsolomon.WithInversionCache(false))
	if err != nil {
		return nil, fmt.Errorf("glacier: reedsolomon %d/%d: %w", n, m, err)
	}
	return &Codec{n: n, m: m, enc: enc}, nil
}

// N is the number of fragments; M the number that rebuild the object.
func (c *Codec) N() int { return c.n }

// M is the number of fragments that rebuild the object.
func (c *Codec) M() int { return c.m }

// FragmentSize is the size of each fragment of an object of size bytes.
func FragmentSize(size, m int) int {
	if size <= 0 {
		return 1 // reedsolomon wants non-empty shards; an empty object is one zero byte per shard
	}
	return (size + m - 1) / m
}

// Encode cuts obj into n fragments. Each fragment is its own allocation, so that keeping one
// does not keep the others alive.
func (c *Codec) Encode(obj []byte) ([][]byte, error) {
	fs := FragmentSize(len(obj), c.m)
	frags := make([][]byte, c.n)
	for i := range frags {
		frags[i] = make([]byte, fs)
		if i < c.m && i*fs < len(obj) {
			copy(frags[i], obj[i*fs:])
		}
	}
	if err := c.enc.Encode(frags); err != nil {
		return nil, fmt.Errorf("glacier: encode: %w", err)
	}
	return frags, nil
}

// shards checks that frags has n entries of which at least m are present (non-nil) and all
// present ones are fs bytes long, and returns a copy of the slice that reedsolomon may fill.
func (c *Codec) shards(frags [][]byte, fs int) ([][]byte, error) {
	if len(frags) != c.n {
		return nil, fmt.Errorf("glacier: %d fragment slots, want %d", len(frags), c.n)
	}
	have := 0
	out := make([][]byte, c.n)
	for i, f := range frags {
		if f == nil {
			continue
		}
		if len(f) != fs {
			return nil, fmt.Errorf("glacier: fragment %d is %d bytes, want %d", i, len(f), fs)
		}
		out[i] = f
		have++
	}
	if have < c.m {
		return nil, fmt.Errorf("%w: %d of %d", ErrTooFewFragments, have, c.m)
	}
	return out, nil
}

// Decode rebuilds an object of size bytes from frags (n slots, nil where missing, at least m
// present). It does not check the result; callers compare it with the manifest's hash.
func (c *Codec) Decode(frags [][]byte, size int) ([]byte, error) {
	fs := FragmentSize(size, c.m)
	sh, err := c.shards(frags, fs)
	if err != nil {
		return nil, err
	}
	if err := c.enc.ReconstructData(sh); err != nil {
		return nil, fmt.Errorf("glacier: decode: %w", err)
	}
	obj := make([]byte, 0, c.m*fs)
	for i := 0; i < c.m; i++ {
		obj = append(obj, sh[i]...)
	}
	return obj[:max(size, 0)], nil
}

// Rebuild recomputes only fragment idx from at least m others (frags: n slots, nil where
// missing), without materialising the other missing fragments: maintenance replaces one lost
// fragment at the cost of reading m.
func (c *Codec) Rebuild(frags [][]byte, size, idx int) ([]byte, error) {
	if idx < 0 || idx >= c.n {
		return nil, fmt.Errorf("glacier: fragment index %d out of range [0,%d)", idx, c.n)
	}
	fs := FragmentSize(size, c.m)
	sh, err := c.shards(frags, fs)
	if err != nil {
		return nil, err
	}
	if sh[idx] != nil {
		return sh[idx], nil
	}
	// Parity fragment i is row i of the code applied to the m data fragments, so those must
	// be at hand: the missing ones are recovered too (they are the decoded object; no other
	// parity fragment is computed). reedsolomon v1.12.4's ReconstructSome crashes on a
	// missing, unrequired data shard when it is asked for parity, so we require them.
	required := make([]bool, c.n)
	required[idx] = true
	if idx >= c.m {
		for i := 0; i < c.m; i++ {
			required[i] = sh[i] == nil
		}
	}
	if err := c.enc.ReconstructSome(sh, required); err != nil {
		return nil, fmt.Errorf("glacier: rebuild fragment %d: %w", idx, err)
	}
	return sh[idx], nil
}
