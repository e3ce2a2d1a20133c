package store

import (
	"bytes"
	"testing"
	"time"

	"epost/internal/ids"
)

// The index is written only by this package, but a damaged disk can hand back anything: the
// decoders must reject garbage with an error, never panic, and round-trip what they encode.
func FuzzRecord(f *testing.F) {
	f.Add(uint8(1), uint64(7), int64(1e18), []byte("aux"), []byte{})
	f.Add(uint8(0), uint64(0), int64(0), []byte(nil), []byte{recordVersion, 0, 1})
	f.Fuzz(func(t *testing.T, typ uint8, seq uint64, exp int64, aux, garbage []byte) {
		k := ids.Key{Ring: ringA, ID: ids.Hash(aux)}
		m := Meta{Key: k, Type: typ, Seq: seq, Aux: aux, Size: int64(len(garbage)), Hash: Hash(ids.Hash(garbage))}
		if exp != 0 {
			m.Expiry = time.Unix(0, exp).UTC()
		}
		got, err := decodeRecord(k, encodeRecord(&m))
		if err != nil || got.Type != m.Type || got.Seq != m.Seq || !got.Expiry.Equal(m.Expiry) ||
			got.Size != m.Size || got.Hash != m.Hash || !bytes.Equal(got.Aux, m.Aux) {
			t.Fatalf("record round trip: %+v -> %+v, %v", m, got, err)
		}
		at, tm, err := decodeTrash(k, encodeTrash(m.Expiry, encodeRecord(&m)))
		if err != nil || tm.Seq != m.Seq || (!m.Expiry.IsZero() && !at.Equal(m.Expiry)) {
			t.Fatalf("trash round trip: %v %+v %v", at, tm, err)
		}
		// Garbage must not panic.
		decodeRecord(k, garbage)
		decodeTrash(k, garbage)
		decodePayloadEntry(m.Hash, garbage)
		decodeStats(garbage)
	})
}
