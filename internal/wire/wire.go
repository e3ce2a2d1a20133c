// Package wire is the small binary codec shared by the overlay's messages: an append-only
// writer and a bounds-checked reader. Every decoder built on it returns an error on bad bytes
// and never panics, never allocates more than the input justifies.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"epost/internal/ids"
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("wire: malformed message")

// Writer appends encoded values to a byte slice.
type Writer struct{ B []byte }

// U8 appends one byte.
func (w *Writer) U8(v uint8) { w.B = append(w.B, v) }

// U16 appends a big-endian uint16.
func (w *Writer) U16(v uint16) { w.B = binary.BigEndian.AppendUint16(w.B, v) }

// U32 appends a big-endian uint32.
func (w *Writer) U32(v uint32) { w.B = binary.BigEndian.AppendUint32(w.B, v) }

// U64 appends a big-endian uint64.
func (w *Writer) U64(v uint64) { w.B = binary.BigEndian.AppendUint64(w.B, v) }

// I64 appends a big-endian int64.
func (w *Writer) I64(v int64) { w.U64(uint64(v)) }

// ID appends a 32-byte id.
func (w *Writer) ID(id ids.ID) { w.B = append(w.B, id[:]...) }

// Bytes appends a uvarint length and the bytes.
func (w *Writer) Bytes(b []byte) {
	w.B = binary.AppendUvarint(w.B, uint64(len(b)))
	w.B = append(w.B, b...)
}

// String appends a uvarint length and the string.
func (w *Writer) String(s string) {
	w.B = binary.AppendUvarint(w.B, uint64(len(s)))
	w.B = append(w.B, s...)
}

// Uvarint appends an unsigned varint.
func (w *Writer) Uvarint(v uint64) { w.B = binary.AppendUvarint(w.B, v) }

// Reader consumes encoded values; after the first error every read returns zero values and
// Err reports the error.
type Reader struct {
	B   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{B: b} }

// Err is the first error met, if any.
func (r *Reader) Err() error { return r.err }

// Fail records err (wrapped in ErrMalformed) unless an error is already recorded.
func (r *Reader) Fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	r.B = nil
}

// Done returns an error when bytes remain after a complete message, or an earlier error.
func (r *Reader) Done() error {
	if r.err == nil && len(r.B) != 0 {
		r.Fail("%d trailing bytes", len(r.B))
	}
	return r.err
}

func (r *Reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.B) < n {
		r.Fail("truncated %s: need %d bytes, have %d", what, n, len(r.B))
		return nil
	}
	b := r.B[:n:n]
	r.B = r.B[n:]
	return b
}

// U8 reads one byte.
func (r *Reader) U8() uint8 {
	b := r.take(1, "u8")
	if b == nil {
		return 0
	}
	return b[0]
}

// U16 reads a big-endian uint16.
func (r *Reader) U16() uint16 {
	b := r.take(2, "u16")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

// U32 reads a big-endian uint32.
func (r *Reader) U32() uint32 {
	b := r.take(4, "u32")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// U64 reads a big-endian uint64.
func (r *Reader) U64() uint64 {
	b := r.take(8, "u64")
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// I64 reads a big-endian int64.
func (r *Reader) I64() int64 { return int64(r.U64()) }

// ID reads a 32-byte id.
func (r *Reader) ID() ids.ID {
	var id ids.ID
	copy(id[:], r.take(ids.Bytes, "id"))
	return id
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 || (n > 1 && r.B[n-1] == 0) {
		// Overlong encodings are refused so that every value has exactly one encoding.
		r.Fail("bad varint")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Len reads a length prefix and checks it against max and the bytes left.
func (r *Reader) Len(max int, what string) int {
	v := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if v > uint64(max) || v > uint64(len(r.B)) {
		r.Fail("%s length %d exceeds limit %d or remaining %d", what, v, max, len(r.B))
		return 0
	}
	return int(v)
}

// Count reads an element count bounded by max and by the remaining bytes divided by the
// smallest encoded element size, so a forged count cannot make the caller allocate.
func (r *Reader) Count(max, minElem int, what string) int {
	v := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if minElem < 1 {
		minElem = 1
	}
	if v > uint64(max) || v > uint64(len(r.B)/minElem) {
		r.Fail("%s count %d exceeds limit %d or remaining bytes", what, v, max)
		return 0
	}
	return int(v)
}

// Bytes reads a length-prefixed byte string of at most max bytes (a copy, owned by the caller).
func (r *Reader) Bytes(max int, what string) []byte {
	n := r.Len(max, what)
	b := r.take(n, what)
	if b == nil {
		return nil
	}
	out := make([]byte, n)
	copy(out, b)
	return out
}

// View reads a length-prefixed byte string of at most max bytes without copying it: the
// result shares the input's memory, with its capacity cut at its end so that an append to it
// copies instead of writing into the input. Decoders use it for large fields of messages
// whose input belongs to the message alone and is never modified (a frame just read from the
// network, an encoding nobody reuses): a payload then costs no allocation and copy per layer
// of decoding.
func (r *Reader) View(max int, what string) []byte {
	n := r.Len(max, what)
	return r.take(n, what)
}

// String reads a length-prefixed string of at most max bytes.
func (r *Reader) String(max int, what string) string {
	n := r.Len(max, what)
	return string(r.take(n, what))
}
