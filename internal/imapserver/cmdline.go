package imapserver

import (
	"bytes"
	"strconv"
	"strings"
)

// This file holds the pure parsing the front layer (front.go) needs: where
// a command line starts and ends, its tag and name, literal markers, and the
// ID command's arguments. Nothing here does I/O.

// isAtomChar reports whether ch is an ATOM-CHAR (RFC 9051 section 9), as the
// protocol engine reads tags and command names.
func isAtomChar(ch byte) bool {
	switch ch {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return ch > 0x1f && ch != 0x7f
}

// trimEOL strips the line end. Like the protocol engine, it accepts a lone
// LF and one space before the CRLF.
func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return bytes.TrimSuffix(line, []byte(" "))
}

// commandStart returns the tag and the upper-cased command name of a command
// line ("UID FETCH" for UID commands, RFC 9051 section 6.4.9). ok is false
// when the line does not start with "tag SP name".
func commandStart(line []byte) (tag, name string, ok bool) {
	line = trimEOL(line)
	atom := func() string {
		i := 0
		for i < len(line) && isAtomChar(line[i]) {
			i++
		}
		a := string(line[:i])
		line = line[i:]
		return a
	}
	sp := func() bool {
		if len(line) > 0 && line[0] == ' ' {
			line = line[1:]
			return true
		}
		return false
	}
	tag = atom()
	if tag == "" {
		return "", "", false
	}
	if !sp() {
		return tag, "", false
	}
	name = strings.ToUpper(atom())
	if name == "" {
		return tag, "", false
	}
	if name == "UID" {
		if !sp() {
			return tag, name, false
		}
		sub := strings.ToUpper(atom())
		if sub == "" {
			return tag, name, false
		}
		name += " " + sub
	}
	return tag, name, true
}

// literalMarker reports whether a line ends with a literal's octet count,
// "{n}" (synchronizing) or "{n+}" (non-synchronizing, RFC 7888), so that n
// octets of literal data may follow the line end (RFC 9051 section 4.3).
func literalMarker(line []byte) (n int64, nonSync, ok bool) {
	line = trimEOL(line)
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0, false, false
	}
	line = line[:len(line)-1]
	if bytes.HasSuffix(line, []byte("+")) {
		nonSync = true
		line = line[:len(line)-1]
	}
	i := len(line)
	for i > 0 && line[i-1] >= '0' && line[i-1] <= '9' {
		i--
	}
	if i == len(line) || i == 0 || line[i-1] != '{' {
		return 0, false, false
	}
	n, err := strconv.ParseInt(string(line[i:]), 10, 64)
	if err != nil {
		// Too many digits for the engine as well; it will refuse the
		// command. Treat the count as huge so nothing follows unread.
		n = 1<<63 - 1
	}
	return n, nonSync, true
}

// cmdPiece is part of a command as read from the wire: a line segment (its
// literal marker and line end removed) or the data of a literal.
type cmdPiece struct {
	text  []byte
	isLit bool
}

// maxIDPairs is RFC 2971 section 3.3's limit on field-value pairs.
const maxIDPairs = 30

// idSyntaxError is the reason an ID command is refused.
type idSyntaxError string

func (e idSyntaxError) Error() string { return string(e) }

// parseIDArgs parses what follows "tag ID" (RFC 2971 section 4):
//
//	id ::= "ID" SPACE id_params_list
//	id_params_list ::= "(" #(string SPACE nstring) ")" / nil
//
// It returns the client's fields (nil for NIL); the pieces after the first
// start right after the command name.
func parseIDArgs(pieces []cmdPiece) (map[string]string, error) {
	t := idTokenizer{pieces: pieces}
	if !t.sp() {
		return nil, idSyntaxError("Syntax error: expected SP after ID")
	}
	var fields map[string]string
	switch {
	case t.nil():
	case t.special('('):
		fields = map[string]string{}
		for n := 0; !t.special(')'); n++ {
			if n > 0 && !t.sp() {
				return nil, idSyntaxError("Syntax error: expected SP or ')' in ID list")
			}
			if n >= maxIDPairs {
				return nil, idSyntaxError("Too many ID fields (RFC 2971 allows 30)")
			}
			key, ok := t.str()
			if !ok {
				return nil, idSyntaxError("Syntax error: expected an ID field name")
			}
			if !t.sp() {
				return nil, idSyntaxError("Syntax error: expected SP after an ID field name")
			}
			val, ok := t.str()
			if !ok && !t.nil() {
				return nil, idSyntaxError("Syntax error: expected an ID value or NIL")
			}
			if ok {
				fields[strings.ToLower(key)] = val
			}
		}
	default:
		return nil, idSyntaxError("Syntax error: expected a parenthesised list or NIL after ID")
	}
	if !t.end() {
		return nil, idSyntaxError("Syntax error: unexpected text after the ID list")
	}
	return fields, nil
}

// idTokenizer walks cmdPieces; a literal piece is one string token.
type idTokenizer struct {
	pieces []cmdPiece
	pos    int // in pieces[0].text when it is text
}

func (t *idTokenizer) skipEmpty() {
	for len(t.pieces) > 0 && !t.pieces[0].isLit && t.pos >= len(t.pieces[0].text) {
		t.pieces, t.pos = t.pieces[1:], 0
	}
}

func (t *idTokenizer) peek() (byte, bool) {
	t.skipEmpty()
	if len(t.pieces) == 0 || t.pieces[0].isLit {
		return 0, false
	}
	return t.pieces[0].text[t.pos], true
}

func (t *idTokenizer) special(ch byte) bool {
	if b, ok := t.peek(); ok && b == ch {
		t.pos++
		return true
	}
	return false
}

func (t *idTokenizer) sp() bool { return t.special(' ') }

func (t *idTokenizer) end() bool {
	t.skipEmpty()
	return len(t.pieces) == 0
}

func (t *idTokenizer) nil() bool {
	t.skipEmpty()
	if len(t.pieces) == 0 || t.pieces[0].isLit {
		return false
	}
	rest := t.pieces[0].text[t.pos:]
	if len(rest) >= 3 && strings.EqualFold(string(rest[:3]), "NIL") && (len(rest) == 3 || !isAtomChar(rest[3])) {
		t.pos += 3
		return true
	}
	return false
}

// str reads a quoted string or a literal (RFC 9051 section 4.3).
func (t *idTokenizer) str() (string, bool) {
	t.skipEmpty()
	if len(t.pieces) == 0 {
		return "", false
	}
	if p := t.pieces[0]; p.isLit {
		t.pieces, t.pos = t.pieces[1:], 0
		return string(p.text), true
	}
	if !t.special('"') {
		return "", false
	}
	text := t.pieces[0].text
	var sb strings.Builder
	for i := t.pos; i < len(text); i++ {
		switch ch := text[i]; ch {
		case '"':
			t.pos = i + 1
			return sb.String(), true
		case '\\':
			if i+1 < len(text) && (text[i+1] == '"' || text[i+1] == '\\') {
				i++
				sb.WriteByte(text[i])
				continue
			}
			return "", false
		default:
			sb.WriteByte(ch)
		}
	}
	return "", false
}

// quoteString encodes s as an IMAP quoted string; CR and LF, which a quoted
// string cannot hold, become spaces (the values are our own, for display).
func quoteString(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; ch {
		case '"', '\\':
			sb.WriteByte('\\')
			sb.WriteByte(ch)
		case '\r', '\n', 0:
			sb.WriteByte(' ')
		default:
			sb.WriteByte(ch)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}
