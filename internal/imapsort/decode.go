package imapsort

import (
	"bytes"
	"io"
	"mime"
	"strings"
	"unicode/utf8"
)

// decodeHeader decodes RFC 2047 encoded-words to UTF-8 (RFC 5256 section 2.1 step 1 and
// RFC 5957's display names). mime.WordDecoder knows UTF-8, US-ASCII and ISO-8859-1; charsets
// converts Windows-1252 and ISO-8859-15, the others most seen in mail headers without a
// table-driven converter in the module. Text in any other charset is kept as its raw
// bytes: ordering stays deterministic, which is what SORT needs, even if it is not the
// order a reader of that charset expects.
func decodeHeader(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	d, err := wordDecoder.DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
}

var wordDecoder = mime.WordDecoder{CharsetReader: charsetReader}

func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	high := highHalf[strings.ToLower(charset)]
	if high == nil {
		return r, nil
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(raw)+len(raw)/2)
	for _, c := range raw {
		if c < 0x80 {
			out = append(out, c)
			continue
		}
		out = utf8.AppendRune(out, high(c))
	}
	return bytes.NewReader(out), nil
}

// highHalf maps the bytes 0x80-0xFF of single-byte charsets to runes.
var highHalf = map[string]func(byte) rune{
	"windows-1252": cp1252,
	"cp1252":       cp1252,
	"iso-8859-15":  latin9,
	"latin-9":      latin9,
}

// cp1252Low is Windows-1252 at 0x80-0x9F; the rest of the high half is ISO-8859-1.
var cp1252Low = [32]rune{
	'€', 0x81, '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', 0x8D, 'Ž', 0x8F,
	0x90, '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', 0x9D, 'ž', 'Ÿ',
}

func cp1252(c byte) rune {
	if c < 0xA0 {
		return cp1252Low[c-0x80]
	}
	return rune(c)
}

// latin9 is ISO-8859-15: ISO-8859-1 with eight positions replaced.
func latin9(c byte) rune {
	switch c {
	case 0xA4:
		return '€'
	case 0xA6:
		return 'Š'
	case 0xA8:
		return 'š'
	case 0xB4:
		return 'Ž'
	case 0xB8:
		return 'ž'
	case 0xBC:
		return 'Œ'
	case 0xBD:
		return 'œ'
	case 0xBE:
		return 'Ÿ'
	}
	return rune(c)
}
