package glacier

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// benchShapes: ePOST's 48/5 and the candidates of docs/bench-glacier.md.
var benchShapes = [][2]int{{48, 5}, {64, 8}, {96, 16}, {128, 24}}

const benchSize = 1 << 20 // one aggregate of 1 MiB

func BenchmarkEncode(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("%d-%d", s[0], s[1]), func(b *testing.B) {
			c, _ := NewCodec(s[0], s[1])
			obj := randBytes(rand.New(rand.NewPCG(1, 1)), benchSize)
			b.SetBytes(benchSize)
			for b.Loop() {
				if _, err := c.Encode(obj); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode decodes from m parity fragments only (the worst case: every data fragment lost).
func BenchmarkDecode(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("%d-%d", s[0], s[1]), func(b *testing.B) {
			c, _ := NewCodec(s[0], s[1])
			obj := randBytes(rand.New(rand.NewPCG(1, 1)), benchSize)
			frags, _ := c.Encode(obj)
			b.SetBytes(benchSize)
			for b.Loop() {
				sub := make([][]byte, s[0])
				copy(sub[s[0]-s[1]:], frags[s[0]-s[1]:])
				if _, err := c.Decode(sub, benchSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRebuild re-creates one lost parity fragment from m others (maintenance's unit of
// work); bytes are the object's size, which is what must be read.
func BenchmarkRebuild(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("%d-%d", s[0], s[1]), func(b *testing.B) {
			c, _ := NewCodec(s[0], s[1])
			obj := randBytes(rand.New(rand.NewPCG(1, 1)), benchSize)
			frags, _ := c.Encode(obj)
			b.SetBytes(benchSize)
			for b.Loop() {
				sub := make([][]byte, s[0])
				copy(sub[s[0]-s[1]-1:], frags[s[0]-s[1]-1:s[0]-1])
				if _, err := c.Rebuild(sub, benchSize, s[0]-1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeForInsert is the inserter's cost for one of POST's aggregates (512,000 bytes,
// the 64/8 code): erasure coding, the fragments' Merkle tree and the manifest's signature.
// "encode" is Encode, whose proofs InsertEncoded uses; "manifest+tree" is NewManifest and the
// second tree Insert computes for the proofs (what an insert cost before Encode).
func BenchmarkEncodeForInsert(b *testing.B) {
	c, _ := NewCodec(64, 8)
	priv := testKey(1)
	obj := randBytes(rand.New(rand.NewPCG(1, 1)), 512_000)
	exp := time.Unix(1<<32, 0)
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(obj)))
		for b.Loop() {
			if _, err := Encode(c, priv, ids.RingID{}, []byte("agg"), 1, exp, obj); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("manifest+tree", func(b *testing.B) {
		b.SetBytes(int64(len(obj)))
		for b.Loop() {
			man, frags, err := NewManifest(c, priv, ids.RingID{}, []byte("agg"), 1, exp, obj)
			if err != nil {
				b.Fatal(err)
			}
			if root, _ := merkleTree(frags); root != man.FragRoot {
				b.Fatal("root")
			}
		}
	})
}
