// Package bloom is the Bloom filter that replica maintenance (PAST) and fragment maintenance
// (Glacier) exchange: a set of (key, version) pairs, salted per maintenance round so that a
// false positive (a missing pair the filter claims is present) hits a different pair in the
// next round.
//
// Positions come from a cheap 64-bit mix rather than a cryptographic hash: a holder tests every
// pair it holds against each request, thousands per round. Keys are SHA-256 outputs, so they
// are already uniform; the fresh salt of each round keeps a writer who grinds keys from making
// its own objects collide for long, and that could only hurt its own objects. Filters arrive
// from peers: Has never panics, whatever Bits holds.
package bloom

import (
	"encoding/binary"

	"epost/internal/ids"
)

const (
	// BitsPerKey gives about 1% false positives with Hashes positions.
	BitsPerKey = 10
	Hashes     = 7
)

// Filter is a Bloom filter; Bits and Salt travel on the wire as they are.
type Filter struct {
	Bits []byte
	Salt uint64
}

// New sizes a filter for keys pairs, at most maxBytes long (larger sets just get more false
// positives, which the next round's salt corrects).
func New(keys int, salt uint64, maxBytes int) *Filter {
	n := max(8, (keys*BitsPerKey+7)/8)
	return &Filter{Bits: make([]byte, min(n, max(maxBytes, 8))), Salt: salt}
}

func mix64(x uint64) uint64 { // splitmix64's finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// positions calls f for each of the pair's bit positions (double hashing) until f says stop.
func (b *Filter) positions(id ids.ID, version uint64, f func(bit uint64) bool) bool {
	a := binary.BigEndian.Uint64(id[0:]) ^ binary.BigEndian.Uint64(id[16:])
	c := binary.BigEndian.Uint64(id[8:]) ^ binary.BigEndian.Uint64(id[24:])
	h1 := mix64(a ^ b.Salt ^ mix64(version))
	h2 := mix64(c^b.Salt^0x9e3779b97f4a7c15) | 1
	m := uint64(len(b.Bits)) * 8
	for i := uint64(0); i < Hashes; i++ {
		if !f((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

// Add puts (id, version) in the filter.
func (b *Filter) Add(id ids.ID, version uint64) {
	if len(b.Bits) == 0 {
		return
	}
	b.positions(id, version, func(bit uint64) bool {
		b.Bits[bit/8] |= 1 << (bit % 8)
		return true
	})
}

// Has reports whether (id, version) may be in the filter (false: certainly not).
func (b *Filter) Has(id ids.ID, version uint64) bool {
	if len(b.Bits) == 0 {
		return false
	}
	return b.positions(id, version, func(bit uint64) bool { return b.Bits[bit/8]&(1<<(bit%8)) != 0 })
}
