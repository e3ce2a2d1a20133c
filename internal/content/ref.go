package content

import (
	"encoding/binary"
	"fmt"

	"epost/internal/ids"
)

// MaxRefChunks bounds the chunks of one payload: 4096 chunks of MaxPlain bytes is just under
// 4 GiB, far beyond any mail part, and keeps an encoded Ref under 280 KiB.
const MaxRefChunks = 4096

// RefVersion is the first byte of an encoded Ref.
const RefVersion = 1

// Ref names a whole payload: its chunks in order, the payload size and hash. A Ref holds the
// content keys, so it is as secret as the payload: it travels only inside encrypted
// notifications and folder-log entries.
type Ref struct {
	Ring   ids.RingID // every chunk lives in this ring
	Size   uint64     // payload bytes: the sum of the entries' lengths
	Hash   [32]byte   // PayloadHash of the payload
	Chunks []Entry
}

// Validate checks the invariants every Ref must keep: at most MaxRefChunks entries, each of
// 1..MaxPlain bytes in Ring, summing to Size.
func (r *Ref) Validate() error {
	if len(r.Chunks) > MaxRefChunks {
		return fmt.Errorf("%w: %d chunks, at most %d", ErrMalformed, len(r.Chunks), MaxRefChunks)
	}
	var sum uint64
	for i, e := range r.Chunks {
		if e.Length == 0 || e.Length > MaxPlain {
			return fmt.Errorf("%w: chunk %d length %d not in 1..%d", ErrMalformed, i, e.Length, MaxPlain)
		}
		if e.Location.Ring != r.Ring {
			return fmt.Errorf("%w: chunk %d lives in ring %s, the reference in %s", ErrMalformed, i, e.Location.Ring.Short(), r.Ring.Short())
		}
		sum += uint64(e.Length)
	}
	if sum != r.Size {
		return fmt.Errorf("%w: chunk lengths sum to %d, size says %d", ErrMalformed, sum, r.Size)
	}
	return nil
}

// Encoding of a Ref, version 1 (big-endian, exactly 81 + 68·n bytes):
//
//	u8  version (1)
//	32  ring id
//	u64 size
//	32  payload hash
//	u32 n (0..MaxRefChunks)
//	n × { 32 location id, 32 content key, u32 plaintext length }
const (
	refHeaderSize = 1 + ids.Bytes + 8 + 32 + 4
	refEntrySize  = ids.Bytes + KeySize + 4
)

// MarshalBinary encodes r; it fails only if r does not Validate.
func (r Ref) MarshalBinary() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, refHeaderSize+refEntrySize*len(r.Chunks))
	b = append(b, RefVersion)
	b = append(b, r.Ring[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Size)
	b = append(b, r.Hash[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Chunks)))
	for _, e := range r.Chunks {
		b = append(b, e.Location.ID[:]...)
		b = append(b, e.Key[:]...)
		b = binary.BigEndian.AppendUint32(b, e.Length)
	}
	return b, nil
}

// UnmarshalRef decodes MarshalBinary's output, checking the exact length before allocating
// and every invariant of Validate after.
func UnmarshalRef(b []byte) (Ref, error) {
	if len(b) < refHeaderSize {
		return Ref{}, fmt.Errorf("%w: %d bytes, header alone is %d", ErrMalformed, len(b), refHeaderSize)
	}
	if b[0] != RefVersion {
		return Ref{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[0], RefVersion)
	}
	var r Ref
	p := b[1:]
	copy(r.Ring[:], p[:ids.Bytes])
	p = p[ids.Bytes:]
	r.Size = binary.BigEndian.Uint64(p)
	p = p[8:]
	copy(r.Hash[:], p[:32])
	p = p[32:]
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if n > MaxRefChunks {
		return Ref{}, fmt.Errorf("%w: %d chunks, at most %d", ErrMalformed, n, MaxRefChunks)
	}
	if len(p) != int(n)*refEntrySize {
		return Ref{}, fmt.Errorf("%w: %d bytes of entries, want %d for %d chunks", ErrMalformed, len(p), int(n)*refEntrySize, n)
	}
	if n > 0 {
		r.Chunks = make([]Entry, n)
	}
	for i := range r.Chunks {
		e := &r.Chunks[i]
		e.Location.Ring = r.Ring
		copy(e.Location.ID[:], p[:ids.Bytes])
		copy(e.Key[:], p[ids.Bytes:ids.Bytes+KeySize])
		e.Length = binary.BigEndian.Uint32(p[ids.Bytes+KeySize:])
		p = p[refEntrySize:]
	}
	if err := r.Validate(); err != nil {
		return Ref{}, err
	}
	return r, nil
}
