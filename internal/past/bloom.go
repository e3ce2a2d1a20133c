package past

import (
	"crypto/sha256"
	"encoding/binary"

	"epost/internal/ids"
)

// bloom is a Bloom filter over (key, seq) pairs, salted per maintenance round so that a false
// positive (a missing key the filter claims is present) is a different key in the next round.
type bloom struct {
	bits []byte
	salt uint64
}

const (
	bloomBitsPerKey = 10 // about 1% false positives with bloomHashes
	bloomHashes     = 7
)

func newBloom(keys int, salt uint64) *bloom {
	nbytes := max(8, (keys*bloomBitsPerKey+7)/8)
	nbytes = min(nbytes, maxBloomBytes)
	return &bloom{bits: make([]byte, nbytes), salt: salt}
}

// positions derives the filter positions of (id, seq) by double hashing one SHA-256.
func (b *bloom) positions(id ids.ID, seq uint64, f func(bit uint64) bool) bool {
	var buf [8 + ids.Bytes + 8]byte
	binary.BigEndian.PutUint64(buf[:], b.salt)
	copy(buf[8:], id[:])
	binary.BigEndian.PutUint64(buf[8+ids.Bytes:], seq)
	h := sha256.Sum256(buf[:])
	h1 := binary.BigEndian.Uint64(h[:8])
	h2 := binary.BigEndian.Uint64(h[8:16]) | 1
	m := uint64(len(b.bits)) * 8
	for i := uint64(0); i < bloomHashes; i++ {
		if !f((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (b *bloom) add(id ids.ID, seq uint64) {
	b.positions(id, seq, func(bit uint64) bool {
		b.bits[bit/8] |= 1 << (bit % 8)
		return true
	})
}

func (b *bloom) has(id ids.ID, seq uint64) bool {
	if len(b.bits) == 0 {
		return false
	}
	return b.positions(id, seq, func(bit uint64) bool { return b.bits[bit/8]&(1<<(bit%8)) != 0 })
}

// digestOf is one (key, seq) pair's contribution to an arc's digest: the XOR of all pairs'
// digests, with the count, tells two nodes cheaply whether they hold the same versions.
func digestOf(id ids.ID, seq uint64) uint64 {
	var buf [ids.Bytes + 8]byte
	copy(buf[:], id[:])
	binary.BigEndian.PutUint64(buf[ids.Bytes:], seq)
	h := sha256.Sum256(buf[:])
	return binary.BigEndian.Uint64(h[:8])
}
