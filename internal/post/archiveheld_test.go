package post

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"epost/internal/ids"
)

func heldRecord(data []byte) []byte {
	rec := binary.AppendUvarint(nil, uint64(len(data)))
	rec = append(rec, data...)
	return binary.BigEndian.AppendUint32(rec, crc32.Checksum(data, heldCRC))
}

// A held file is read up to its first damaged record: a write torn by a crash, or a flipped
// byte, costs that record and what follows, and is reported; each member's key is the hash of
// its bytes.
func TestDecodeHeldStopsAtDamage(t *testing.T) {
	ring := ids.RingIDOf("t")
	one, two := []byte("first member"), []byte("second member")
	file := append(heldRecord(one), heldRecord(two)...)
	ms, err := decodeHeld(ring, file)
	if err != nil || len(ms) != 2 || string(ms[1].Data) != "second member" || ms[0].Key != (ids.Key{Ring: ring, ID: ids.Hash(one)}) || !ms[0].ContentHash {
		t.Fatalf("two whole records: %d members, %v", len(ms), err)
	}
	torn := file[:len(file)-3]
	if ms, err := decodeHeld(ring, torn); len(ms) != 1 || !errors.Is(err, ErrMalformed) {
		t.Fatalf("a torn last record: %d members, %v; want 1 and ErrMalformed", len(ms), err)
	}
	flipped := append([]byte(nil), file...)
	flipped[3] ^= 1
	if ms, err := decodeHeld(ring, flipped); len(ms) != 0 || !errors.Is(err, ErrMalformed) {
		t.Fatalf("a flipped byte in the first record: %d members, %v; want none and ErrMalformed", len(ms), err)
	}
}
