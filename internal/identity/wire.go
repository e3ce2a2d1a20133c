package identity

import (
	"encoding/binary"
	"fmt"
)

// The binary encodings of this package are big-endian, fixed-width integers, fixed-size keys
// and u8-length-prefixed strings, with no optional fields and no trailing bytes, so each value
// has exactly one encoding (what is signed is exactly what is decoded).

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)       { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16)     { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32)     { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64)     { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) raw(p []byte)     { e.b = append(e.b, p...) }
func (e *encoder) str8(s string)    { e.u8(uint8(len(s))); e.b = append(e.b, s...) } // caller bounds len(s) <= 255
func (e *encoder) bytes32(p []byte) { e.u32(uint32(len(p))); e.b = append(e.b, p...) }

// decoder reads what encoder wrote. The first failure sticks in err and later reads return
// zero values, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated (need %d bytes, have %d)", ErrMalformed, n, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) str8() string { return string(d.take(int(d.u8()))) }

// bytes32 reads a u32-length-prefixed byte string of at most max bytes.
func (d *decoder) bytes32(max int) []byte {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(max) {
		d.err = fmt.Errorf("%w: field of %d bytes exceeds %d", ErrMalformed, n, max)
		return nil
	}
	return d.take(int(n))
}

// finish reports the first error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return nil
}

// clone copies p so decoded values never alias the caller's buffer.
func clone(p []byte) []byte { return append([]byte(nil), p...) }
