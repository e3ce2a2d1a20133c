package content

import (
	"encoding/binary"
	"fmt"

	"epost/internal/ids"
)

// MaxRefChunks bounds the chunks of one payload: 4096 chunks of MaxPlain bytes is just under
// 4 GiB, far beyond any mail part, and keeps an encoded Ref under 280 KiB.
const MaxRefChunks = 4096

// RefVersion is the first byte of an encoded Ref; RefVersionInline that of a Ref that holds
// its payload.
const (
	RefVersion       = 1
	RefVersionInline = 2
)

// MaxInline is the largest payload a Ref may hold itself (Inline).
const MaxInline = 4 << 10

// Ref names a whole payload: its chunks in order, the payload size and hash. A Ref holds the
// content keys, so it is as secret as the payload: it travels only inside encrypted
// notifications and folder-log entries.
//
// A small payload can travel inside its Ref instead (Inline, at most MaxInline bytes, no
// chunks): it is then stored wherever the Ref is (a folder-log entry, a notification) and
// never as objects of its own. A message's header and the boundary lines between its
// attachments are a few hundred bytes each; as chunks each was a PAST object, inserted, replicated
// three times, fetched and archived on its own.
type Ref struct {
	Ring   ids.RingID // every chunk lives in this ring
	Size   uint64     // payload bytes: the sum of the entries' lengths
	Hash   [32]byte   // PayloadHash of the payload
	Chunks []Entry
	Inline []byte // the payload itself, when it travels inside the Ref (then no Chunks)
}

// InlineRef is a Ref holding p itself; len(p) must be at most MaxInline.
func InlineRef(ring ids.RingID, p []byte) Ref {
	return Ref{Ring: ring, Size: uint64(len(p)), Hash: PayloadHash(p), Inline: append([]byte{}, p...)}
}

// Validate checks the invariants every Ref must keep: at most MaxRefChunks entries, each of
// 1..MaxPlain bytes in Ring, summing to Size; or an inline payload of Size bytes, at most
// MaxInline, and no chunks.
func (r *Ref) Validate() error {
	if r.Inline != nil {
		if len(r.Chunks) != 0 || uint64(len(r.Inline)) != r.Size || len(r.Inline) > MaxInline {
			return fmt.Errorf("%w: inline payload of %d bytes (size %d, %d chunks, at most %d bytes)", ErrMalformed, len(r.Inline), r.Size, len(r.Chunks), MaxInline)
		}
		return nil
	}
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
//
// An inline Ref is version 2: u8 version (2), 32 ring id, u64 size (0..MaxInline), 32 payload
// hash, then the size bytes of the payload.
const (
	refHeaderSize       = 1 + ids.Bytes + 8 + 32 + 4
	refEntrySize        = ids.Bytes + KeySize + 4
	refInlineHeaderSize = 1 + ids.Bytes + 8 + 32
)

// MarshalBinary encodes r; it fails only if r does not Validate.
func (r Ref) MarshalBinary() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if r.Inline != nil {
		b := make([]byte, 0, refInlineHeaderSize+len(r.Inline))
		b = append(b, RefVersionInline)
		b = append(b, r.Ring[:]...)
		b = binary.BigEndian.AppendUint64(b, r.Size)
		b = append(b, r.Hash[:]...)
		return append(b, r.Inline...), nil
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
	if len(b) > 0 && b[0] == RefVersionInline {
		if len(b) < refInlineHeaderSize || len(b)-refInlineHeaderSize > MaxInline {
			return Ref{}, fmt.Errorf("%w: inline reference of %d bytes", ErrMalformed, len(b))
		}
		var r Ref
		copy(r.Ring[:], b[1:])
		r.Size = binary.BigEndian.Uint64(b[1+ids.Bytes:])
		copy(r.Hash[:], b[1+ids.Bytes+8:])
		r.Inline = append([]byte{}, b[refInlineHeaderSize:]...)
		if err := r.Validate(); err != nil {
			return Ref{}, err
		}
		return r, nil
	}
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
