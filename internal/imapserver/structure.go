package imapserver

import (
	"errors"
	"mime"
	"slices"
	"strings"
	"time"

	"epost/internal/mailbox"
)

// ENVELOPE and BODYSTRUCTURE (RFC 9051 section 7.5.2), written from the store's parse cache.

func (s *session) nstring(v string) {
	if v == "" {
		s.w.NIL()
		return
	}
	s.w.String(s.wire(v))
}

// wire keeps a header value 7-bit for a client that did not enable UTF-8: decoded text is
// encoded again as an RFC 2047 word (what a client without UTF8=ACCEPT expects to decode).
func (s *session) wire(v string) string {
	if s.w.UTF8 || ascii(v) {
		return v
	}
	return mime.QEncoding.Encode("utf-8", v)
}

func (s *session) writeAddresses(list []mailbox.Address) {
	if len(list) == 0 {
		s.w.NIL()
		return
	}
	s.w.Open()
	for i, a := range list {
		if i > 0 {
			s.w.Join() // env-to = "(" 1*address ")": no space between addresses
		}
		s.w.Open()
		s.nstring(a.Name)
		s.w.NIL() // source route (adl): obsolete
		s.nstring(a.Mailbox)
		s.nstring(a.Host)
		s.w.Close()
	}
	s.w.Close()
}

func (s *session) writeEnvelope(e *mailbox.Envelope) {
	if e == nil {
		e = &mailbox.Envelope{}
	}
	s.w.Open()
	if e.Date.IsZero() {
		s.w.NIL()
	} else {
		s.w.String(e.Date.Format(time.RFC1123Z))
	}
	s.nstring(e.Subject)
	from := e.From
	sender, replyTo := e.Sender, e.ReplyTo
	// RFC 9051 7.5.2: sender and reply-to default to from.
	if len(sender) == 0 {
		sender = from
	}
	if len(replyTo) == 0 {
		replyTo = from
	}
	for _, l := range [][]mailbox.Address{from, sender, replyTo, e.To, e.Cc, e.Bcc} {
		s.writeAddresses(l)
	}
	if len(e.InReplyTo) == 0 {
		s.w.NIL()
	} else {
		s.w.String(strings.Join(wrapIDs(e.InReplyTo), " "))
	}
	if e.MessageID == "" {
		s.w.NIL()
	} else {
		s.w.String("<" + strings.Trim(e.MessageID, "<>") + ">")
	}
	s.w.Close()
}

func wrapIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = "<" + strings.Trim(id, "<>") + ">"
	}
	return out
}

func (s *session) writeParams(p map[string]string) {
	if len(p) == 0 {
		s.w.NIL()
		return
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s.w.Open()
	for _, k := range keys {
		v := p[k]
		if !s.w.UTF8 && !ascii(v) {
			// A decoded RFC 2231 value goes back to its extended form for a client without
			// UTF-8, as the message had it: NAME* "utf-8''%XX..." (RFC 2231 section 4).
			s.w.String(strings.ToUpper(k) + "*").String("utf-8''" + percentEncode(v))
			continue
		}
		s.w.String(strings.ToUpper(k)).String(v)
	}
	s.w.Close()
}

func ascii(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return false
		}
	}
	return true
}

// percentEncode writes v's bytes as RFC 2231 attribute-char or %XX.
func percentEncode(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c > 0x20 && c < 0x7f && !strings.ContainsRune("*'%()<>@,;:\\\"/[]?=", rune(c)) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func (s *session) writeDisposition(d *mailbox.Disposition) {
	if d == nil {
		s.w.NIL()
		return
	}
	s.w.Open().String(strings.ToUpper(d.Value))
	s.writeParams(d.Params)
	s.w.Close()
}

func (s *session) writeLanguage(l []string) {
	switch len(l) {
	case 0:
		s.w.NIL()
	case 1:
		s.w.String(l[0])
	default:
		s.w.Open()
		for _, x := range l {
			s.w.String(x)
		}
		s.w.Close()
	}
}

var errBadStructure = errors.New("imapserver: unknown body structure")

// writeBodyStructure writes BODYSTRUCTURE (extended) or BODY (basic) data.
func (s *session) writeBodyStructure(bs mailbox.BodyStructure, extended bool) error {
	switch b := bs.(type) {
	case *mailbox.SinglePart:
		s.w.Open().String(strings.ToUpper(b.Type)).String(strings.ToUpper(b.Subtype))
		s.writeParams(b.Params)
		s.nstring(b.ID)
		s.nstring(b.Description)
		enc := b.Encoding
		if enc == "" {
			enc = "7BIT"
		}
		s.w.String(strings.ToUpper(enc)).Number(uint64(b.Size))
		switch {
		case b.MessageRFC822 != nil:
			s.writeEnvelope(b.MessageRFC822.Envelope)
			inner := b.MessageRFC822.BodyStructure
			if inner == nil {
				inner = &mailbox.SinglePart{Type: "text", Subtype: "plain", Text: &mailbox.TextInfo{}}
			}
			if err := s.writeBodyStructure(inner, extended); err != nil {
				return err
			}
			s.w.Number(uint64(max(b.MessageRFC822.NumLines, 0)))
		case b.Text != nil:
			s.w.Number(uint64(max(b.Text.NumLines, 0)))
		}
		if extended {
			s.w.NIL() // MD5
			var ext mailbox.SinglePartExt
			if b.Extended != nil {
				ext = *b.Extended
			}
			s.writeDisposition(ext.Disposition)
			s.writeLanguage(ext.Language)
			s.nstring(ext.Location)
		}
		s.w.Close()
	case *mailbox.MultiPart:
		s.w.Open()
		if len(b.Children) == 0 {
			// RFC 9051: a multipart has at least one part; show an empty text part.
			s.writeBodyStructure(&mailbox.SinglePart{Type: "text", Subtype: "plain", Text: &mailbox.TextInfo{}}, extended)
		}
		for i, c := range b.Children {
			if i > 0 {
				s.w.Join()
			}
			if err := s.writeBodyStructure(c, extended); err != nil {
				return err
			}
		}
		s.w.String(strings.ToUpper(b.Subtype))
		if extended {
			var ext mailbox.MultiPartExt
			if b.Extended != nil {
				ext = *b.Extended
			}
			s.writeParams(ext.Params)
			s.writeDisposition(ext.Disposition)
			s.writeLanguage(ext.Language)
			s.nstring(ext.Location)
		}
		s.w.Close()
	default:
		return errBadStructure
	}
	return nil
}
