package imapwire

import (
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Modified UTF-7 for mailbox names, RFC 3501 section 5.1.3: printable US-ASCII but "&" stands
// for itself; "&-" is "&"; other characters are UTF-16, in base64 with "," for "/" and no
// padding, between "&" and "-".

// ErrUTF7 is returned by DecodeMailboxUTF7 for text that is not modified UTF-7.
var ErrUTF7 = errors.New("imapwire: mailbox name is not valid modified UTF-7 (RFC 3501 section 5.1.3)")

const utf7Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"

var utf7Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(utf7Alphabet); i++ {
		t[utf7Alphabet[i]] = int8(i)
	}
	return t
}()

// EncodeMailboxUTF7 encodes a UTF-8 mailbox name in modified UTF-7. Invalid UTF-8 bytes are
// encoded as U+FFFD.
func EncodeMailboxUTF7(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c <= 0x7e {
			b.WriteByte(c)
			if c == '&' {
				b.WriteByte('-')
			}
			i++
			continue
		}
		// A run of characters outside printable ASCII, encoded as one shifted sequence.
		var units []uint16
		for i < len(s) && (s[i] < 0x20 || s[i] > 0x7e) {
			r, n := utf8.DecodeRuneInString(s[i:])
			i += n
			units = utf16.AppendRune(units, r)
		}
		b.WriteByte('&')
		var acc uint32
		bits := 0
		for _, u := range units {
			acc = acc<<16 | uint32(u)
			bits += 16
			for bits >= 6 {
				bits -= 6
				b.WriteByte(utf7Alphabet[(acc>>bits)&0x3f])
			}
		}
		if bits > 0 {
			b.WriteByte(utf7Alphabet[(acc<<(6-bits))&0x3f])
		}
		b.WriteByte('-')
	}
	return b.String()
}

// DecodeMailboxUTF7 decodes a modified UTF-7 mailbox name into UTF-8. It is strict: it refuses
// 8-bit bytes and control characters, a shifted sequence that is not closed by "-", that holds
// printable ASCII, has non-zero padding bits or a broken surrogate pair.
func DecodeMailboxUTF7(s string) (string, error) {
	if strings.IndexByte(s, '&') < 0 {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				return "", ErrUTF7
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", ErrUTF7
		}
		i++
		if c != '&' {
			b.WriteByte(c)
			continue
		}
		if i < len(s) && s[i] == '-' {
			b.WriteByte('&')
			i++
			continue
		}
		var acc uint32
		bits := 0
		var units []uint16
		for {
			if i >= len(s) {
				return "", ErrUTF7
			}
			c := s[i]
			i++
			if c == '-' {
				break
			}
			v := utf7Index[c]
			if v < 0 {
				return "", ErrUTF7
			}
			acc = acc<<6 | uint32(v)
			bits += 6
			if bits >= 16 {
				bits -= 16
				units = append(units, uint16(acc>>bits))
				acc &= 1<<bits - 1
			}
		}
		if len(units) == 0 || bits >= 6 || acc != 0 {
			return "", ErrUTF7
		}
		for j := 0; j < len(units); j++ {
			u := rune(units[j])
			switch {
			case utf16.IsSurrogate(u):
				if u >= 0xdc00 || j+1 >= len(units) {
					return "", ErrUTF7
				}
				r := utf16.DecodeRune(u, rune(units[j+1]))
				if r == utf8.RuneError {
					return "", ErrUTF7
				}
				b.WriteRune(r)
				j++
			case u >= 0x20 && u <= 0x7e:
				// Printable ASCII must represent itself.
				return "", ErrUTF7
			default:
				b.WriteRune(u)
			}
		}
	}
	return b.String(), nil
}
