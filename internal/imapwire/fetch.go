package imapwire

import (
	"strings"
)

// Fetch macros, RFC 9051 section 6.4.5.
var fetchMacros = map[string][]string{
	"ALL":  {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"},
	"FAST": {"FLAGS", "INTERNALDATE", "RFC822.SIZE"},
	"FULL": {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"},
}

// parseFetch: sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP
// fetch-att) ")") [fetch-modifiers] (RFC 9051, RFC 7162 section 3.1.4 and 3.2.6).
func (r *Reader) parseFetch(uid bool) *Fetch {
	a := &Fetch{}
	r.sp()
	a.Seqs = r.seqSet(true)
	r.sp()
	if r.take('(') {
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			a.Items = append(a.Items, r.fetchAtt())
		}
		if r.ok() && len(a.Items) == 0 {
			r.syntax("expected at least one fetch item")
		}
	} else {
		for _, m := range []string{"ALL", "FAST", "FULL"} {
			if r.takeWord(m) {
				a.Macro = m
				for _, n := range fetchMacros[m] {
					a.Items = append(a.Items, FetchItem{Name: n})
				}
				break
			}
		}
		if a.Macro == "" {
			a.Items = []FetchItem{r.fetchAtt()}
		}
	}
	if r.take(' ') {
		r.need('(', "'(' of fetch modifiers")
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			switch {
			case r.takeWord("CHANGEDSINCE"):
				r.sp()
				a.ChangedSince = r.modSeq(false)
			case r.takeWord("VANISHED"):
				if !uid {
					r.failMsg(BAD, "", ErrSyntax, "VANISHED is only allowed with UID FETCH (RFC 7162 section 3.2.6)")
				}
				a.Vanished = true
			default:
				r.syntax("unknown fetch modifier (CHANGEDSINCE or VANISHED)")
			}
		}
		if r.ok() && a.Vanished && a.ChangedSince == 0 {
			r.failMsg(BAD, "", ErrSyntax, "VANISHED requires CHANGEDSINCE (RFC 7162 section 3.2.6)")
		}
	}
	return a
}

func isFetchNameChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || isDigit(c) || c == '.' || c == '-'
}

// fetchAtt reads one fetch-att.
func (r *Reader) fetchAtt() FetchItem {
	start := r.pos
	name := strings.ToUpper(r.run(isFetchNameChar))
	var it FetchItem
	switch name {
	case "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.SIZE", "RFC822.HEADER",
		"RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ", "SAVEDATE", "EMAILID", "THREADID":
		it.Name = name
	case "BODY", "BODY.PEEK":
		it.Name, it.Peek = "BODY", name == "BODY.PEEK"
		if r.peek() != '[' {
			if it.Peek {
				r.syntax("expected '[' after BODY.PEEK")
			}
			return it
		}
		it.Section = r.section(false)
		it.Partial = r.partial()
	case "BINARY", "BINARY.PEEK", "BINARY.SIZE":
		// RFC 3516 section 4.
		it.Name, it.Peek = "BINARY", name == "BINARY.PEEK"
		if name == "BINARY.SIZE" {
			it.Name = name
		}
		it.Section = r.section(true)
		if name != "BINARY.SIZE" {
			it.Partial = r.partial()
		}
	default:
		r.pos = start
		r.syntax("unknown fetch item")
	}
	return it
}

// section reads "[" section-spec "]", or with binary section-binary = "[" [section-part] "]".
func (r *Reader) section(binary bool) *Section {
	s := &Section{}
	r.need('[', "'[' of a section")
	for r.ok() && isDigit(byte(max(r.peek(), 0))) {
		s.Part = append(s.Part, r.nzNumber32("a part number"))
		if !r.take('.') {
			break
		}
		if c := r.peek(); c < '0' || c > '9' {
			break // a section-text follows
		}
	}
	if !binary && r.peek() != ']' && r.ok() {
		spec := strings.ToUpper(r.run(func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' }))
		switch spec {
		case "HEADER", "TEXT":
		case "MIME":
			if len(s.Part) == 0 {
				r.syntax("MIME needs a part number (like 1.MIME)")
			}
		case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
			r.sp()
			r.need('(', "'(' of a header field list")
			for first := true; r.ok() && !r.take(')'); first = false {
				if !first {
					r.sp()
				}
				s.Fields = append(s.Fields, r.astring("a header field name"))
			}
			if r.ok() && len(s.Fields) == 0 {
				r.syntax("expected at least one header field name")
			}
		default:
			r.syntax("unknown section (HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME)")
		}
		s.Specifier = spec
	} else if r.ok() && len(s.Part) > 0 && r.line[r.pos-1] == '.' {
		r.syntax("expected a section after '.'")
	}
	r.need(']', "']' closing the section")
	return s
}

// partial reads an optional "<" number64 "." nz-number64 ">".
func (r *Reader) partial() *Partial {
	if !r.take('<') {
		return nil
	}
	p := &Partial{}
	p.Offset = r.number64("a partial offset")
	r.need('.', "'.' in <offset.count>")
	if r.peek() == '0' {
		r.syntax("the count of <offset.count> must be at least 1")
	}
	p.Count = r.number64("a partial count")
	r.need('>', "'>' closing <offset.count>")
	return p
}

// ResponseName is how a fetch item is named in a FETCH response: without .PEEK, and with only
// the origin of a partial ("BODY[1]<0>", RFC 9051 section 7.5.2; "BINARY[5]<0>", RFC 3516).
func (it FetchItem) ResponseName() string {
	var b strings.Builder
	b.WriteString(it.Name)
	if it.Section != nil {
		it.Section.write(&b)
	}
	if it.Partial != nil {
		b.WriteString("<")
		b.WriteString(uitoa(it.Partial.Offset))
		b.WriteString(">")
	}
	return b.String()
}

// String formats the item as a client sends it.
func (it FetchItem) String() string {
	var b strings.Builder
	b.WriteString(it.Name)
	if it.Peek {
		b.WriteString(".PEEK")
	}
	if it.Section != nil {
		it.Section.write(&b)
	}
	if it.Partial != nil {
		b.WriteString("<" + uitoa(it.Partial.Offset) + "." + uitoa(it.Partial.Count) + ">")
	}
	return b.String()
}

func (s *Section) write(b *strings.Builder) {
	b.WriteByte('[')
	for i, p := range s.Part {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(uitoa(uint64(p)))
	}
	if s.Specifier != "" {
		if len(s.Part) > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Specifier)
	}
	if len(s.Fields) > 0 {
		b.WriteString(" (")
		for i, f := range s.Fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(formatAString(f, false))
		}
		b.WriteByte(')')
	}
	b.WriteByte(']')
}
