package past

import (
	"crypto/sha256"
	"encoding/binary"

	"epost/internal/ids"
)

// digestOf is one (key, seq) pair's contribution to an arc's digest: the XOR of all pairs'
// digests, with the count, tells two nodes cheaply whether they hold the same versions.
func digestOf(id ids.ID, seq uint64) uint64 {
	var buf [ids.Bytes + 8]byte
	copy(buf[:], id[:])
	binary.BigEndian.PutUint64(buf[ids.Bytes:], seq)
	h := sha256.Sum256(buf[:])
	return binary.BigEndian.Uint64(h[:8])
}
