package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// ErrNUL is recorded by Writer.String for a string holding a NUL byte, which no IMAP string
// can carry outside a literal8; use Writer.Binary in a BINARY response, or encode the data.
var ErrNUL = errors.New("imapwire: string holds a NUL byte; send it with Binary (literal8) or encode it")

// maxQuoted is the longest string sent quoted; longer ones go as literals, which clients read
// without unescaping.
const maxQuoted = 1024

// Writer writes server responses. It keeps the first error (like bufio.Writer): calls after
// an error do nothing, and Flush and Err return it. Nothing is sent before Flush.
//
// A Writer builds one response at a time: StartUntagged / StartTagged / StartContinuation,
// then tokens, then End. It is not safe for concurrent use; the server's session owns it.
type Writer struct {
	// UTF8: UTF8=ACCEPT or IMAP4rev2 is enabled, so mailbox names go as UTF-8 and quoted
	// strings may hold UTF-8 (RFC 6855, RFC 9051). Otherwise names go in modified UTF-7 and
	// 8-bit strings as literals.
	UTF8 bool

	bw  *bufio.Writer
	err error
	sep bool // a space is due before the next token
}

// NewWriter returns a Writer to bw.
func NewWriter(bw *bufio.Writer) *Writer { return &Writer{bw: bw} }

// Err returns the first error.
func (w *Writer) Err() error { return w.err }

// Flush sends what was written.
func (w *Writer) Flush() error {
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err
}

func (w *Writer) raw(s string) {
	if w.err == nil {
		_, w.err = w.bw.WriteString(s)
	}
}

func (w *Writer) rawBytes(b []byte) {
	if w.err == nil {
		_, w.err = w.bw.Write(b)
	}
}

// token writes s after a space if one is due.
func (w *Writer) token(s string) *Writer {
	if w.sep {
		w.raw(" ")
	}
	w.raw(s)
	w.sep = true
	return w
}

// StartUntagged begins "* ".
func (w *Writer) StartUntagged() *Writer { w.raw("*"); w.sep = true; return w }

// StartTagged begins "<tag> ".
func (w *Writer) StartTagged(tag string) *Writer { w.raw(tag); w.sep = true; return w }

// StartContinuation begins "+ ". Follow with Text (or a base64 SASL challenge as Atom).
func (w *Writer) StartContinuation() *Writer { w.raw("+"); w.sep = true; return w }

// End ends the response with CRLF.
func (w *Writer) End() { w.raw("\r\n"); w.sep = false }

// Atom writes s as is: an atom, a number or a keyword such as OK or FLAGS. The caller ensures
// it is one.
func (w *Writer) Atom(s string) *Writer { return w.token(s) }

// Number writes a number.
func (w *Writer) Number(n uint64) *Writer { return w.token(strconv.FormatUint(n, 10)) }

// NIL writes NIL.
func (w *Writer) NIL() *Writer { return w.token("NIL") }

// Join cancels the space due before the next token: the parts of a multipart BODYSTRUCTURE
// follow each other without one (RFC 9051 body-type-mpart = 1*body SP media-subtype).
func (w *Writer) Join() *Writer { w.sep = false; return w }

// Open writes "(", Close writes ")".
func (w *Writer) Open() *Writer {
	w.token("(")
	w.sep = false
	return w
}

// Close writes ")".
func (w *Writer) Close() *Writer {
	w.raw(")")
	w.sep = true
	return w
}

// Code writes a response code "[NAME args...]" with args as atoms, e.g. Code("UIDNEXT", "4").
func (w *Writer) Code(name string, args ...string) *Writer {
	w.token("[" + name)
	for _, a := range args {
		w.raw(" " + a)
	}
	w.raw("]")
	return w
}

// Text writes human-readable resp-text: CR, LF and other controls become spaces, and 8-bit
// text becomes "?" unless UTF8 is enabled, so that text can never break the framing.
func (w *Writer) Text(s string) *Writer {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			b = append(b, ' ')
			i++
		case c < 0x80:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if w.UTF8 && r != utf8.RuneError {
				b = append(b, s[i:i+n]...)
			} else {
				b = append(b, '?')
			}
			i += n
		}
	}
	if len(b) == 0 {
		return w
	}
	return w.token(string(b))
}

// String writes s as a quoted string, or as a literal when it holds CR, LF or 8-bit data
// (UTF-8 stays quoted when UTF8 is enabled) or is long. A NUL byte cannot be sent this way:
// the Writer records ErrNUL.
func (w *Writer) String(s string) *Writer {
	if w.err != nil {
		return w
	}
	if q, ok := quote(s, w.UTF8); ok {
		return w.token(q)
	}
	if bytes.IndexByte([]byte(s), 0) >= 0 {
		w.err = ErrNUL
		return w
	}
	w.token("{" + strconv.Itoa(len(s)) + "}\r\n")
	w.raw(s)
	return w
}

// NString writes s, or NIL when isNil.
func (w *Writer) NString(s string, isNil bool) *Writer {
	if isNil {
		return w.NIL()
	}
	return w.String(s)
}

// AString writes s as an atom when it is one (and not NIL), otherwise as String does.
func (w *Writer) AString(s string) *Writer {
	if isAtom(s, true) && !equalFoldASCII(s, "NIL") {
		return w.token(s)
	}
	return w.String(s)
}

// Mailbox writes a mailbox name: modified UTF-7 unless UTF8 is enabled.
func (w *Writer) Mailbox(name string) *Writer {
	if !w.UTF8 {
		name = EncodeMailboxUTF7(name)
	}
	return w.AString(name)
}

// Literal writes b as a literal {n}. b must not hold NUL (use Binary).
func (w *Writer) Literal(b []byte) *Writer {
	if bytes.IndexByte(b, 0) >= 0 {
		if w.err == nil {
			w.err = ErrNUL
		}
		return w
	}
	w.token("{" + strconv.Itoa(len(b)) + "}\r\n")
	w.rawBytes(b)
	return w
}

// Binary writes b as the value of a BINARY[...] fetch item (RFC 3516 section 4.3): a literal8
// ~{n} if it holds a NUL byte, else a literal.
func (w *Writer) Binary(b []byte) *Writer {
	if bytes.IndexByte(b, 0) < 0 {
		return w.Literal(b)
	}
	w.token("~{" + strconv.Itoa(len(b)) + "}\r\n")
	w.rawBytes(b)
	return w
}

// FetchItemName writes the name under which a fetch item is answered, e.g. BODY[1]<0> for
// BODY.PEEK[1]<0.7> (see FetchItem.ResponseName).
func (w *Writer) FetchItemName(it FetchItem) *Writer { return w.token(it.ResponseName()) }

// quote returns s as a quoted string if it can be one.
func quote(s string, utf8OK bool) (string, bool) {
	if len(s) > maxQuoted {
		return "", false
	}
	return quoteAny(s, utf8OK)
}

// quoteAny is quote without the length limit, for grammar that allows only quoted strings.
func quoteAny(s string, utf8OK bool) (string, bool) {
	if !utf8OK || !utf8.ValidString(s) {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return "", false
			}
		}
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case 0, '\r', '\n':
			return "", false
		case '"', '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"')), true
}

// isAtom reports whether s is a non-empty atom (astring chars if astring).
func isAtom(s string, astring bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAtomChar(s[i]) && !(astring && s[i] == ']') {
			return false
		}
	}
	return true
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 32
		}
		if 'a' <= y && y <= 'z' {
			y -= 32
		}
		if x != y {
			return false
		}
	}
	return true
}

// formatAString formats s as an astring for a command: an atom, a quoted string, or a
// non-synchronizing literal.
func formatAString(s string, utf8OK bool) string {
	if isAtom(s, true) && !equalFoldASCII(s, "NIL") {
		return s
	}
	return formatString(s, utf8OK)
}

// formatString formats s as a quoted string or a non-synchronizing literal {n+}.
func formatString(s string, utf8OK bool) string {
	if q, ok := quote(s, utf8OK); ok {
		return q
	}
	return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s
}
