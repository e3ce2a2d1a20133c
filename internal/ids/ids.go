// Package ids is ePOST's identifier space: 256-bit ids on a circle (the SHA-256 space), read as
// 64 base-16 digits (Pastry's b = 4), with numeric distance, and keys qualified by a ring id.
//
// The package is pure arithmetic; it never does I/O and never allocates on its hot paths.
package ids

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
)

// Bytes is the length of an id in bytes; Digits is its length in base-16 digits.
const (
	Bytes     = 32
	Bits      = 8 * Bytes
	DigitBits = 4
	Digits    = Bits / DigitBits
	Base      = 1 << DigitBits
)

// ErrBadID is returned when an id is parsed from text or bytes of the wrong shape.
var ErrBadID = errors.New("ids: malformed id")

// ID is a point on the circle [0, 2^256), big-endian.
type ID [Bytes]byte

// Zero is the id 0; as a ring id it names the global ring.
var Zero ID

// Hash returns the id of arbitrary bytes (SHA-256).
func Hash(b []byte) ID { return ID(sha256.Sum256(b)) }

// HashString returns the id of a string, for example a ring name.
func HashString(s string) ID { return Hash([]byte(s)) }

// FromBytes copies a 32-byte slice into an id.
func FromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != Bytes {
		return id, fmt.Errorf("%w: %d bytes, want %d", ErrBadID, len(b), Bytes)
	}
	copy(id[:], b)
	return id, nil
}

// Parse reads the 64-hex-digit form printed by String.
func Parse(s string) (ID, error) {
	var id ID
	if len(s) != 2*Bytes {
		return id, fmt.Errorf("%w: %q has %d hex digits, want %d", ErrBadID, s, len(s), 2*Bytes)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %q: %v", ErrBadID, s, err)
	}
	return id, nil
}

// String is the full lower-case hex form.
func (a ID) String() string { return hex.EncodeToString(a[:]) }

// Short is the first 8 hex digits, for logs.
func (a ID) Short() string { return hex.EncodeToString(a[:4]) }

// IsZero reports whether a is the id 0.
func (a ID) IsZero() bool { return a == Zero }

// Digit returns the i-th base-16 digit, most significant first (0 <= i < Digits).
func (a ID) Digit(i int) int {
	b := a[i>>1]
	if i&1 == 0 {
		return int(b >> 4)
	}
	return int(b & 0x0f)
}

// WithDigit returns a copy of a whose i-th digit is d.
func (a ID) WithDigit(i, d int) ID {
	if i&1 == 0 {
		a[i>>1] = a[i>>1]&0x0f | byte(d)<<4
	} else {
		a[i>>1] = a[i>>1]&0xf0 | byte(d)
	}
	return a
}

// SharedPrefix returns the number of leading base-16 digits a and b have in common (Digits if equal).
func SharedPrefix(a, b ID) int {
	for i := 0; i < Bytes; i += 8 {
		x := be64(a[i:]) ^ be64(b[i:])
		if x != 0 {
			return (i*8 + bits.LeadingZeros64(x)) / DigitBits
		}
	}
	return Digits
}

// Cmp compares a and b as unsigned integers: -1, 0 or +1.
func Cmp(a, b ID) int {
	for i := 0; i < Bytes; i += 8 {
		x, y := be64(a[i:]), be64(b[i:])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Less reports a < b as unsigned integers.
func Less(a, b ID) bool { return Cmp(a, b) < 0 }

// Add returns a + b mod 2^256.
func Add(a, b ID) ID {
	var r ID
	var carry uint64
	for i := Bytes - 8; i >= 0; i -= 8 {
		s, c := bits.Add64(be64(a[i:]), be64(b[i:]), carry)
		put64(r[i:], s)
		carry = c
	}
	return r
}

// Sub returns a - b mod 2^256.
func Sub(a, b ID) ID {
	var r ID
	var borrow uint64
	for i := Bytes - 8; i >= 0; i -= 8 {
		d, c := bits.Sub64(be64(a[i:]), be64(b[i:]), borrow)
		put64(r[i:], d)
		borrow = c
	}
	return r
}

// Clockwise is the distance going up from a to b: (b - a) mod 2^256.
func Clockwise(a, b ID) ID { return Sub(b, a) }

// Distance is the absolute distance on the circle: min(b-a, a-b) mod 2^256.
func Distance(a, b ID) ID {
	cw := Sub(b, a)
	ccw := Sub(a, b)
	if Less(ccw, cw) {
		return ccw
	}
	return cw
}

// Closer reports whether x is strictly closer to key than y on the circle; ties go to the
// smaller id so that every node agrees on one closest node.
func Closer(key, x, y ID) bool {
	c := Cmp(Distance(key, x), Distance(key, y))
	if c != 0 {
		return c < 0
	}
	return Less(x, y)
}

// Between reports whether x lies on the clockwise arc (from, to], that is 0 < x-from <= to-from.
func Between(from, x, to ID) bool {
	dx := Sub(x, from)
	if dx.IsZero() {
		return false
	}
	return Cmp(dx, Sub(to, from)) <= 0
}

// Fraction returns the id at position i/n of the circle (i*2^256/n), for 0 <= i < n <= 2^16.
// Glacier places fragment i of key K at K + Fraction(i, n).
func Fraction(i, n int) ID {
	if n <= 0 || i <= 0 {
		return Zero
	}
	// Long division of (i mod n)*2^256 by n, 64 bits at a time (the integer part wraps away).
	var r ID
	rem := uint64(i % n)
	for w := 0; w < 4; w++ {
		q, rm := bits.Div64(rem, 0, uint64(n))
		put64(r[w*8:], q)
		rem = rm
	}
	return r
}

// Float returns a's position on the circle as a fraction in [0, 1), for statistics only.
func (a ID) Float() float64 {
	return float64(be64(a[:])) / (1 << 64)
}

func be64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func put64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
	b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
