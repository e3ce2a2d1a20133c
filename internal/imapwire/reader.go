package imapwire

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Defaults for a zero Config field.
const (
	DefaultMaxLine    = 64 * 1024
	DefaultMaxLiteral = 64 * 1024
	DefaultMaxAppend  = 64 * 1024 * 1024
	// DefaultMaxAppendMessages bounds the messages of one MULTIAPPEND.
	DefaultMaxAppendMessages = 10000

	// literalMinusMax is the largest non-synchronizing literal a client may send to a server
	// that advertises LITERAL- but not LITERAL+ (RFC 7888 section 4; RFC 9051 section 4.3).
	literalMinusMax = 4096
)

// Config sets the limits and the negotiated options of a Reader. A server changes UTF8 after
// ENABLE UTF8=ACCEPT or IMAP4rev2 succeeded; the change applies to the next command.
type Config struct {
	// MaxLine bounds one line of a command, literal data excluded (0: DefaultMaxLine).
	MaxLine int
	// MaxLiteral bounds a literal used as a string argument (0: DefaultMaxLiteral).
	MaxLiteral int64
	// MaxAppend bounds one message of APPEND, and one CATENATE TEXT part (0: DefaultMaxAppend).
	// It is the APPENDLIMIT a server advertises (RFC 7889).
	MaxAppend int64
	// MaxAppendTotal bounds the messages of one APPEND together (MULTIAPPEND, CATENATE parts):
	// a server holds them all until the command completes (0: twice MaxAppend).
	MaxAppendTotal int64
	// MaxAppendMessages bounds how many messages one APPEND carries (0: DefaultMaxAppendMessages).
	MaxAppendMessages int
	// LiteralPlus: the server advertises LITERAL+, so non-synchronizing literals of any size
	// up to the limits above are accepted. Otherwise LITERAL- applies (at most 4096 bytes).
	LiteralPlus bool
	// UTF8: UTF8=ACCEPT (RFC 6855) or IMAP4rev2 is enabled. Mailbox names are then UTF-8 on
	// the wire instead of modified UTF-7.
	UTF8 bool
}

func (c Config) maxLine() int {
	if c.MaxLine <= 0 {
		return DefaultMaxLine
	}
	return c.MaxLine
}

func (c Config) maxLiteral() int64 {
	if c.MaxLiteral <= 0 {
		return DefaultMaxLiteral
	}
	return c.MaxLiteral
}

// commandBudget bounds the continuation lines and string literals of one command.
func (c Config) commandBudget() int64 {
	return 4*int64(c.maxLine()) + 4*c.maxLiteral()
}

func (c Config) maxAppendTotal() int64 {
	if c.MaxAppendTotal <= 0 {
		return 2 * c.maxAppend()
	}
	return c.MaxAppendTotal
}

func (c Config) maxAppendMessages() int {
	if c.MaxAppendMessages <= 0 {
		return DefaultMaxAppendMessages
	}
	return c.MaxAppendMessages
}

func (c Config) maxAppend() int64 {
	if c.MaxAppend <= 0 {
		return DefaultMaxAppend
	}
	return c.MaxAppend
}

// Reader reads the client side of an IMAP connection: tagged commands, and the lines a client
// sends inside a command (AUTHENTICATE responses, the DONE that ends IDLE).
//
// A Reader is not safe for concurrent use. It reads only from the bufio.Reader it was given and
// never writes: when a synchronizing literal needs a "+" continuation, it calls Continue and
// waits for the literal's bytes only after Continue returned nil.
type Reader struct {
	Config Config
	// Continue is called when the client announced a synchronizing literal of size bytes that
	// is within the limits; the server must send a continuation request ("+ ...") and flush
	// before returning. A non-nil error aborts the command and is returned by ReadCommand.
	// If Continue is nil, no continuation is sent (useful for tests with LITERAL+ input).
	Continue func(size int64) error

	br   *bufio.Reader
	line []byte // the current line, CRLF stripped
	pos  int
	err  error  // sticky: the first problem of the current command
	cmd  string // command name, for messages
	// budget is what the current command may still take in continuation lines and string
	// literals, so that a command made of many small literals cannot grow without bound.
	// APPEND messages are not counted (MaxAppend bounds each).
	budget int64
	// appendLeft is what the messages of the APPEND being read may still take together
	// (MaxAppendTotal); parseAppend sets it.
	appendLeft int64
}

// NewReader returns a Reader of commands from br.
func NewReader(br *bufio.Reader, cfg Config) *Reader {
	return &Reader{br: br, Config: cfg}
}

// readLine reads the next line into r.line. At end of input before any byte it returns io.EOF.
func (r *Reader) readLine() error {
	r.line = r.line[:0]
	r.pos = 0
	max := r.Config.maxLine()
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.line)+len(chunk) > max+2 {
			// Keep what fits, so the caller can still find the tag.
			r.line = append(r.line, chunk[:min(len(chunk), max+2-len(r.line))]...)
			return &Error{Kind: BAD, Code: "TOOBIG", Fatal: true, Err: ErrLineTooLong,
				Msg: fmt.Sprintf("command line is longer than %d bytes; closing the connection", max)}
		}
		r.line = append(r.line, chunk...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(r.line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	r.line = r.line[:len(r.line)-1]
	// A bare LF is accepted as line end (as Dovecot does); a CR anywhere else is refused by the
	// token rules (it is a CTL).
	if n := len(r.line); n > 0 && r.line[n-1] == '\r' {
		r.line = r.line[:n-1]
	}
	return nil
}

// ReadLine reads one line sent inside a command: a SASL response during AUTHENTICATE, or
// "DONE" during IDLE. The line is returned without CRLF.
func (r *Reader) ReadLine() (string, error) {
	if err := r.readLine(); err != nil {
		return "", err
	}
	return string(r.line), nil
}

// fail records the first error of the current command.
func (r *Reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *Reader) ok() bool { return r.err == nil }

// syntax records a syntax error; the message says where.
func (r *Reader) syntax(format string, args ...any) {
	if r.err != nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	r.err = &Error{Kind: BAD, Msg: r.prefix() + msg + " " + r.where(), Err: ErrSyntax}
}

// failMsg records an error whose message needs no position.
func (r *Reader) failMsg(kind Kind, code string, sentinel error, format string, args ...any) {
	if r.err != nil {
		return
	}
	r.err = &Error{Kind: kind, Code: code, Msg: r.prefix() + fmt.Sprintf(format, args...), Err: sentinel}
}

func (r *Reader) prefix() string {
	if r.cmd == "" {
		return ""
	}
	return r.cmd + ": "
}

// where describes the input at the current position.
func (r *Reader) where() string {
	if r.pos >= len(r.line) {
		return "at end of line"
	}
	rest := r.line[r.pos:]
	if len(rest) > 24 {
		return fmt.Sprintf("at %q...", rest[:24])
	}
	return fmt.Sprintf("at %q", rest)
}

func (r *Reader) eol() bool { return r.pos >= len(r.line) }

// peek returns the next byte, or -1 at end of line or after an error.
func (r *Reader) peek() int {
	if r.err != nil || r.pos >= len(r.line) {
		return -1
	}
	return int(r.line[r.pos])
}

func (r *Reader) take(c byte) bool {
	if r.peek() == int(c) {
		r.pos++
		return true
	}
	return false
}

func (r *Reader) need(c byte, what string) {
	if !r.take(c) {
		r.syntax("expected %s", what)
	}
}

func (r *Reader) sp() { r.need(' ', "a space") }

// takeWord consumes w (ASCII, case-insensitive) if it is next and is not followed by another
// atom character.
func (r *Reader) takeWord(w string) bool {
	if r.err != nil || len(r.line)-r.pos < len(w) {
		return false
	}
	if !strings.EqualFold(string(r.line[r.pos:r.pos+len(w)]), w) {
		return false
	}
	if end := r.pos + len(w); end < len(r.line) && isAtomChar(r.line[end]) {
		return false
	}
	r.pos += len(w)
	return true
}

func (r *Reader) needWord(w string) {
	if !r.takeWord(w) {
		r.syntax("expected %s", w)
	}
}

// Character classes, RFC 9051 section 9.

func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }

// isAtomChar: ATOM-CHAR, any CHAR except atom-specials.
func isAtomChar(c byte) bool {
	if c >= 0x80 || isCTL(c) {
		return false
	}
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// isAstringChar: ASTRING-CHAR = ATOM-CHAR / resp-specials.
func isAstringChar(c byte) bool { return isAtomChar(c) || c == ']' }

// isListChar: list-char = ATOM-CHAR / list-wildcards / resp-specials.
func isListChar(c byte) bool { return isAtomChar(c) || c == '%' || c == '*' || c == ']' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// run consumes the longest run of bytes in class and returns it.
func (r *Reader) run(class func(byte) bool) string {
	if r.err != nil {
		return ""
	}
	start := r.pos
	for r.pos < len(r.line) && class(r.line[r.pos]) {
		r.pos++
	}
	return string(r.line[start:r.pos])
}

// atom reads an atom; what names it in the error message.
func (r *Reader) atom(what string) string {
	a := r.run(isAtomChar)
	if a == "" {
		r.syntax("expected %s", what)
	}
	return a
}

// number reads a number of at most max.
func (r *Reader) number(max uint64, what string) uint64 {
	if r.err != nil {
		return 0
	}
	start := r.pos
	var n uint64
	for r.pos < len(r.line) && isDigit(r.line[r.pos]) {
		d := uint64(r.line[r.pos] - '0')
		if n > (max-d)/10 {
			r.pos = start
			r.syntax("%s is too large (at most %d)", what, max)
			return 0
		}
		n = n*10 + d
		r.pos++
	}
	if r.pos == start {
		r.syntax("expected %s", what)
	}
	return n
}

func (r *Reader) number32(what string) uint32 { return uint32(r.number(1<<32-1, what)) }

// nzNumber32 reads nz-number: no leading zero, not zero.
func (r *Reader) nzNumber32(what string) uint32 {
	if r.peek() == '0' {
		r.syntax("expected %s (a number from 1, without leading zeros)", what)
		return 0
	}
	return r.number32(what)
}

// number64 reads number64 (RFC 9051: 0 <= n <= 9,223,372,036,854,775,807).
func (r *Reader) number64(what string) uint64 { return r.number(1<<63-1, what) }

// literalKind says what a literal is used for, which decides its limit and error.
type literalKind int

const (
	litString literalKind = iota // a string argument: MaxLiteral, BAD
	litAppend                    // an APPEND message or CATENATE TEXT part: MaxAppend, NO [TOOBIG]
)

// literal reads a literal, {n}, {n+} or, with binaryOK, ~{n} / ~{n+} (RFC 3516 literal8),
// starting at the current position, which must be '{' or '~'. It reads the literal's bytes and
// the next line, and reports whether it was a literal8.
func (r *Reader) literal(kind literalKind, binaryOK bool, what string) (data []byte, binary bool) {
	if r.err != nil {
		return nil, false
	}
	if r.take('~') {
		if !binaryOK {
			r.pos--
			r.syntax("a literal8 (~{n}) is not allowed for %s", what)
			return nil, false
		}
		binary = true
	}
	r.need('{', "'{' of a literal")
	size := r.number64("literal size")
	nonSync := r.take('+')
	r.need('}', "'}' ending a literal's size")
	if r.err != nil {
		return nil, false
	}
	if !r.eol() {
		r.syntax("a literal's {size} must end the line")
		return nil, false
	}
	limit, code, k := r.Config.maxLiteral(), "TOOBIG", BAD
	if kind == litAppend {
		limit, k = r.Config.maxAppend(), NO
	}
	if size > uint64(limit) {
		r.failMsg(k, code, ErrLiteralTooLarge,
			"literal of %d bytes for %s is over this server's limit of %d bytes", size, what, limit)
		return nil, false
	}
	if kind == litAppend {
		if int64(size) > r.appendLeft {
			r.failMsg(NO, code, ErrLiteralTooLarge,
				"the messages of one APPEND add up to more than this server's limit of %d bytes; send them in several commands", r.Config.maxAppendTotal())
			return nil, false
		}
		r.appendLeft -= int64(size)
	}
	if kind == litString {
		if int64(size) > r.budget {
			r.failMsg(BAD, code, ErrLiteralTooLarge, "command is too large (its literals and lines add up to more than %d bytes)", r.Config.commandBudget())
			return nil, false
		}
		r.budget -= int64(size)
	}
	if nonSync && !r.Config.LiteralPlus && size > literalMinusMax {
		r.failMsg(BAD, code, ErrLiteralTooLarge,
			"non-synchronizing literal of %d bytes is over the LITERAL- limit of %d bytes (RFC 7888); send {%d} and wait for the continuation",
			size, literalMinusMax, size)
		return nil, false
	}
	if !nonSync && r.Continue != nil {
		if err := r.Continue(int64(size)); err != nil {
			r.fail(err)
			return nil, false
		}
	}
	// Read through a LimitReader: the buffer grows with the bytes that arrive, not with the
	// size the client announced.
	var buf bytes.Buffer
	if size <= 64*1024 {
		buf.Grow(int(size))
	}
	n, err := io.Copy(&buf, io.LimitReader(r.br, int64(size)))
	if err == nil && n < int64(size) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		r.fail(err)
		return nil, false
	}
	if err := r.readLine(); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.fail(err)
		return nil, false
	}
	if r.budget -= int64(len(r.line)); r.budget < 0 && kind == litString {
		r.failMsg(BAD, code, ErrLiteralTooLarge, "command is too large (its literals and lines add up to more than %d bytes)", r.Config.commandBudget())
		return nil, false
	}
	return buf.Bytes(), binary
}

// quoted reads a quoted string (the current byte is the opening quote).
func (r *Reader) quoted() string {
	r.pos++
	var b []byte
	for {
		if r.pos >= len(r.line) {
			r.syntax("unterminated quoted string (no closing '\"' before the end of the line)")
			return ""
		}
		c := r.line[r.pos]
		switch {
		case c == '"':
			r.pos++
			if !utf8.Valid(b) {
				r.syntax("quoted string holds 8-bit bytes that are not UTF-8; send them as a literal")
				return ""
			}
			return string(b)
		case c == '\\':
			r.pos++
			if r.pos >= len(r.line) || (r.line[r.pos] != '"' && r.line[r.pos] != '\\') {
				r.syntax("in a quoted string '\\' may only escape '\"' or '\\'")
				return ""
			}
			b = append(b, r.line[r.pos])
		case c == 0 || c == '\r':
			r.syntax("quoted string may not hold NUL or CR; send a literal")
			return ""
		default:
			b = append(b, c)
		}
		r.pos++
	}
}

// str reads string = quoted / literal.
func (r *Reader) str(what string) string {
	switch r.peek() {
	case '"':
		return r.quoted()
	case '{':
		data, _ := r.literal(litString, false, what)
		if bytes.IndexByte(data, 0) >= 0 {
			r.syntax("%s may not hold a NUL byte", what)
			return ""
		}
		return string(data)
	}
	r.syntax("expected %s (a quoted string or a literal)", what)
	return ""
}

// astring reads astring = 1*ASTRING-CHAR / string.
func (r *Reader) astring(what string) string {
	switch r.peek() {
	case '"', '{':
		return r.str(what)
	}
	s := r.run(isAstringChar)
	if r.peek() == '{' && strings.HasSuffix(s, "~") {
		r.pos--
		r.syntax("a literal8 (~{n}) is not allowed for %s", what)
		return ""
	}
	if s == "" && r.ok() {
		r.syntax("expected %s (an atom, a quoted string or a literal)", what)
	}
	return s
}

// nstring reads nstring = string / NIL; isNil reports NIL.
func (r *Reader) nstring(what string) (s string, isNil bool) {
	if r.takeWord("NIL") {
		return "", true
	}
	return r.str(what), false
}

// discardCommand skips what is left of a command after an error, so the next ReadCommand
// starts at the next command: the rest of the line and, if the line announced a
// non-synchronizing literal, the literal's bytes and the lines after it. It reports false if
// that cannot be done (the connection must then be closed).
func (r *Reader) discardCommand() bool {
	for {
		if bytes.HasSuffix(r.line, []byte("+}")) {
			// A non-synchronizing literal whose size cannot be read: its bytes follow, and
			// taking them for a command would let a client inject commands.
			if _, _, ok := trailingLiteral(r.line); !ok {
				return false
			}
		}
		size, nonSync, ok := trailingLiteral(r.line)
		if !ok || !nonSync {
			// A synchronizing literal was not sent "+": the client waits for our answer.
			r.line, r.pos = r.line[:0], 0
			return true
		}
		limit := r.Config.maxAppend()
		if lit := r.Config.maxLiteral(); lit > limit {
			limit = lit
		}
		if size > uint64(limit) {
			return false
		}
		if _, err := io.CopyN(io.Discard, r.br, int64(size)); err != nil {
			return false
		}
		if err := r.readLine(); err != nil {
			return false
		}
	}
}

// trailingLiteral reports whether line ends with a literal header "{n}" or "{n+}" (or ~{...}).
func trailingLiteral(line []byte) (size uint64, nonSync, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false, false
	}
	i := len(line) - 2
	if line[i] == '+' {
		nonSync = true
		i--
	}
	end := i + 1
	for i >= 0 && isDigit(line[i]) {
		i--
	}
	if i < 0 || line[i] != '{' || end-(i+1) == 0 || end-(i+1) > 19 {
		return 0, false, false
	}
	for _, c := range line[i+1 : end] {
		size = size*10 + uint64(c-'0')
	}
	return size, nonSync, true
}
