package glacier

import (
	"encoding/binary"

	"epost/internal/ids"
)

// bloom is a Bloom filter over (fragment key, version) pairs, salted per maintenance round so
// that a false positive (a missing fragment the filter claims is held) hits a different
// fragment next round.
//
// Positions come from a cheap 64-bit mix rather than SHA-256 (past's filter): a holder tests
// every fragment it holds against each request, thousands per round. Fragment keys derive from
// SHA-256 object keys, so they are already uniform; the salt, fresh each round, keeps an owner
// who grinds names from making its own fragments collide for long, and that could only hurt
// its own objects.
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
	return &bloom{bits: make([]byte, min(nbytes, maxBloomBytes)), salt: salt}
}

func mix64(x uint64) uint64 { // splitmix64's finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (b *bloom) positions(id ids.ID, version uint64, f func(bit uint64) bool) bool {
	a := binary.BigEndian.Uint64(id[0:]) ^ binary.BigEndian.Uint64(id[16:])
	c := binary.BigEndian.Uint64(id[8:]) ^ binary.BigEndian.Uint64(id[24:])
	h1 := mix64(a ^ b.salt ^ mix64(version))
	h2 := mix64(c^b.salt^0x9e3779b97f4a7c15) | 1
	m := uint64(len(b.bits)) * 8
	for i := uint64(0); i < bloomHashes; i++ {
		if !f((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (b *bloom) add(id ids.ID, version uint64) {
	b.positions(id, version, func(bit uint64) bool {
		b.bits[bit/8] |= 1 << (bit % 8)
		return true
	})
}

func (b *bloom) has(id ids.ID, version uint64) bool {
	if len(b.bits) == 0 {
		return false
	}
	return b.positions(id, version, func(bit uint64) bool { return b.bits[bit/8]&(1<<(bit%8)) != 0 })
}
