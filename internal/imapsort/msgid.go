package imapsort

import "strings"

// msgIDs appends to dst the Message IDs in a Message-ID, In-Reply-To or References header
// value, normalized, in order; first stops after one. A Message ID is a msg-id of RFC 5322
// section 3.6.4, "<" id-left "@" id-right ">", and its normal form drops the brackets, the
// white space and comments that the obsolete syntax allows inside them, and the quoting of a
// quoted id-left, so that <"01KF8JCEOCBS0045PS"@xxx.yyy.com> and <01KF8JCEOCBS0045PS@xxx.yyy.com>
// are one ID, as RFC 5256 section 3 (REFERENCES) requires. Comparisons stay case-sensitive.
// Comments and quoted strings outside brackets (the phrases of obsolete In-Reply-To values)
// are skipped; bracketed text without an "@" with text on both sides is not a Message ID.
func msgIDs(dst []string, v string, first bool) []string {
	var id []byte
	for i := 0; i < len(v); {
		switch v[i] {
		case '(':
			i = skipComment(v, i)
		case '"':
			i = skipQuoted(v, i)
		case '<':
			id = id[:0]
			closed := false
			i++
		inner:
			for i < len(v) {
				switch c := v[i]; c {
				case '>':
					i++
					closed = true
					break inner
				case '<': // "<<a@b>": start again at the inner bracket
					id = id[:0]
					i++
				case '(':
					i = skipComment(v, i)
				case ' ', '\t', '\r', '\n':
					i++
				case '"':
					i++
					for i < len(v) && v[i] != '"' {
						if v[i] == '\\' && i+1 < len(v) {
							i++
						}
						id = append(id, v[i])
						i++
					}
					i++
				default:
					id = append(id, c)
					i++
				}
			}
			if !closed {
				return dst
			}
			if at := strings.LastIndexByte(string(id), '@'); at > 0 && at < len(id)-1 {
				dst = append(dst, string(id))
				if first {
					return dst
				}
			}
		default:
			i++
		}
	}
	return dst
}

// skipComment returns the index after the comment that starts at v[i] == '(' (RFC 5322
// section 3.2.2: nested, with quoted-pairs), or len(v) if it does not end.
func skipComment(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(v)
}

// skipQuoted returns the index after the quoted string that starts at v[i] == '"', or len(v).
func skipQuoted(v string, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(v)
}
