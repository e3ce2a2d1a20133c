package imapwire

import (
	"bytes"
	"strings"
)

// parseAppend: APPEND SP mailbox 1*append-message, append-message = [SP flag-list]
// [SP date-time] SP (literal / literal8 / CATENATE (...) / UTF8 (literal8)) (RFC 9051 6.3.12,
// RFC 3502 MULTIAPPEND, RFC 4469 CATENATE, RFC 3516 BINARY, RFC 6855 UTF8).
func (r *Reader) parseAppend() *Append {
	a := &Append{}
	r.appendLeft = r.Config.maxAppendTotal()
	r.sp()
	a.Mailbox = r.mailbox()
	for r.ok() && r.take(' ') {
		if len(a.Messages) == r.Config.maxAppendMessages() {
			r.failMsg(NO, "LIMIT", ErrLiteralTooLarge, "more than %d messages in one APPEND; send them in several commands", len(a.Messages))
			break
		}
		var m AppendMessage
		if r.peek() == '(' {
			m.Flags = r.flagList()
			r.sp()
		}
		if r.peek() == '"' {
			m.Date = r.dateTime()
			r.sp()
		}
		switch c := r.peek(); {
		case c == '{' || c == '~':
			m.Data, m.Binary = r.literal(litAppend, true, "the message")
		case r.takeWord("CATENATE"):
			r.sp()
			m.Catenate = r.catenate()
		case r.takeWord("UTF8"):
			r.sp()
			r.need('(', "'(' after UTF8")
			if r.peek() != '~' {
				r.syntax("UTF8 takes a literal8 (~{n})")
			}
			m.Data, _ = r.literal(litAppend, true, "the message")
			m.UTF8 = true
			r.need(')', "')' after the UTF8 literal")
		default:
			r.syntax("expected the message as a literal ({size}), or CATENATE")
		}
		if r.ok() && !m.Binary && m.Catenate == nil && bytes.IndexByte(m.Data, 0) >= 0 {
			// A literal carries CHAR8, which excludes NUL (RFC 9051 section 9); literal8 does not.
			r.failMsg(BAD, "", ErrSyntax, "message holds a NUL byte, which a literal cannot carry; send it as a literal8 (~{n})")
		}
		a.Messages = append(a.Messages, m)
	}
	if r.ok() && len(a.Messages) == 0 {
		r.syntax("expected a message")
	}
	return a
}

// catenate reads "(" cat-part *(SP cat-part) ")", cat-part = "TEXT" SP literal / "URL" SP
// astring (RFC 4469 section 5).
func (r *Reader) catenate() []CatPart {
	r.need('(', "'(' of CATENATE parts")
	parts := []CatPart{}
	var total int64
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		var p CatPart
		word := strings.ToUpper(r.atom("TEXT or URL"))
		r.sp()
		switch word {
		case "TEXT":
			p.IsText = true
			p.Text, p.Binary = r.literal(litAppend, true, "a CATENATE TEXT part")
			total += int64(len(p.Text))
			if total > r.Config.maxAppend() && r.ok() {
				r.failMsg(NO, "TOOBIG", ErrLiteralTooLarge, "CATENATE parts add up to more than %d bytes", r.Config.maxAppend())
			}
		case "URL":
			p.URL = r.astring("an IMAP URL")
		default:
			if r.ok() {
				r.syntax("a CATENATE part is TEXT or URL")
			}
		}
		parts = append(parts, p)
	}
	if r.ok() && len(parts) == 0 {
		r.syntax("CATENATE needs at least one part")
	}
	return parts
}
