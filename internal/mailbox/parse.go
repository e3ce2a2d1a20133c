package mailbox

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// maxParseDepth bounds MIME nesting so that a hostile message cannot make
// the parser recurse without end.
const maxParseDepth = 32

// Parse computes the parse cache of a raw message: ENVELOPE and BODYSTRUCTURE
// (RFC 3501 section 7.4.2) and the header length. It never fails: malformed
// MIME yields the best structure that can be read, and anything unreadable is
// described as text/plain, so that a message is never refused for its form.
func Parse(raw []byte) (s *Structure) {
	hsize := HeaderSize(raw)
	defer func() {
		// Defence in depth: go-message is not ours, and a panic on one
		// message must not take the node down.
		if recover() != nil {
			s = &Structure{
				Envelope:      &Envelope{},
				BodyStructure: fallbackPart(int64(len(raw)) - hsize),
				HeaderSize:    hsize,
			}
		}
	}()
	h := readHeader(raw[:hsize])
	return &Structure{
		Envelope:      envelope(h),
		BodyStructure: bodyStructure(h, bytes.NewReader(raw[hsize:]), "", 0),
		HeaderSize:    hsize,
	}
}

// HeaderSize returns the length of the top-level header including the empty
// line that ends it (RFC 5322 section 2.1), accepting bare LF line ends. A
// message without an empty line is all header.
func HeaderSize(raw []byte) int64 {
	if len(raw) > 0 && raw[0] == '\n' {
		return 1
	}
	if len(raw) > 1 && raw[0] == '\r' && raw[1] == '\n' {
		return 2
	}
	for i := 0; i < len(raw); i++ {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		// i is a line end; an empty line follows if the next line is
		// "\n" or "\r\n".
		rest := raw[i+1:]
		if len(rest) > 0 && rest[0] == '\n' {
			return int64(i + 2)
		}
		if len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n' {
			return int64(i + 3)
		}
	}
	return int64(len(raw))
}

func readHeader(b []byte) textproto.Header {
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(b), strings.NewReader("\r\n\r\n")))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return textproto.Header{}
	}
	return h
}

// envelope builds an ENVELOPE. Subject and address names keep their raw
// RFC 2047 encoded form, as RFC 3501 section 7.4.2 expects (clients decode).
func envelope(h textproto.Header) *Envelope {
	mh := mail.Header{Header: gomessage.Header{Header: h}}
	date, _ := mh.Date()
	if !date.IsZero() {
		date = date.Round(time.Second)
	}
	inReplyTo, _ := mh.MsgIDList("In-Reply-To")
	messageID, _ := mh.MessageID()
	env := &Envelope{
		Date:      date,
		Subject:   unfold(h.Get("Subject")),
		From:      addressList(mh, "From"),
		Sender:    addressList(mh, "Sender"),
		ReplyTo:   addressList(mh, "Reply-To"),
		To:        addressList(mh, "To"),
		Cc:        addressList(mh, "Cc"),
		Bcc:       addressList(mh, "Bcc"),
		InReplyTo: inReplyTo,
		MessageID: messageID,
	}
	// RFC 3501 section 7.4.2: sender and reply-to default to from.
	if len(env.Sender) == 0 {
		env.Sender = env.From
	}
	if len(env.ReplyTo) == 0 {
		env.ReplyTo = env.From
	}
	return env
}

func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "")
	return strings.ReplaceAll(s, "\n", "")
}

func addressList(mh mail.Header, key string) []Address {
	raw := unfold(mh.Get(key))
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	var l []Address
	for _, seg := range splitGroups(raw) {
		if seg.group {
			// RFC 3501 section 7.4.2: a group is a start marker (the name as mailbox, no
			// host), its members, and an end marker (all NIL).
			l = append(l, Address{Mailbox: decodeWords(seg.name)})
		}
		if strings.TrimSpace(seg.list) != "" {
			for _, a := range parseAddresses(seg.list) {
				mbox, host, ok := strings.Cut(a.Address, "@")
				if !ok {
					continue
				}
				l = append(l, Address{Name: sevenBit(a.Name), Mailbox: mbox, Host: host})
			}
		}
		if seg.group {
			l = append(l, Address{})
		}
	}
	return l
}

// obsRoute is an RFC 5322 obs-route at the start of an angle-addr ("<@relay.example:"),
// which net/mail does not parse; ENVELOPE's addr-adl may be NIL (RFC 9051 section 7.5.2), so
// the route is dropped and the address kept.
var obsRoute = regexp.MustCompile(`<\s*@[^<>:"]*:`)

// parseAddresses parses a mailbox list; when the list as a whole does not parse, each of its
// addresses is tried alone, so that one malformed address does not hide the others.
func parseAddresses(list string) []*mail.Address {
	list = obsRoute.ReplaceAllString(list, "<")
	if addrs, err := mail.ParseAddressList(list); err == nil {
		return addrs
	}
	var out []*mail.Address
	for _, one := range splitTopLevel(list) {
		if a, err := mail.ParseAddress(one); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// splitTopLevel cuts a list at the commas outside quoted strings, comments and angle brackets.
func splitTopLevel(v string) []string {
	var out []string
	depth, quoted, angle, start := 0, false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			i++
		case quoted:
			quoted = c != '"'
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// sevenBit re-encodes a decoded display name so that IMAP4rev1 clients get 7-bit envelopes.
func sevenBit(name string) string {
	if !isASCII(name) && utf8.ValidString(name) {
		return mime.QEncoding.Encode("utf-8", name)
	}
	return name
}

func decodeWords(s string) string {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if d, err := (&mime.WordDecoder{}).DecodeHeader(s); err == nil {
		return sevenBit(d)
	}
	return s
}

// addrSegment is a piece of an address field: a plain mailbox list, or a group (RFC 5322
// section 3.4: display-name ":" [group-list] ";").
type addrSegment struct {
	group bool
	name  string
	list  string
}

// splitGroups cuts an address field into groups and the lists between them, outside quoted
// strings, comments and angle brackets.
func splitGroups(v string) []addrSegment {
	var out []addrSegment
	depth, quoted, angle := 0, false, false
	start := 0      // of the current plain list or group name
	groupAt := -1   // index of the current group's ":" when inside a group
	var name string // the current group's name
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
		case quoted:
			quoted = c != '"'
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case angle:
		case c == ':' && groupAt < 0:
			// Everything since the last top-level comma is the group's name.
			pre := v[start:i]
			if k := strings.LastIndexByte(pre, ','); k >= 0 {
				out = append(out, addrSegment{list: pre[:k]})
				pre = pre[k+1:]
			} else if strings.TrimSpace(pre) == "" {
				continue
			}
			name, groupAt, start = pre, i, i+1
		case c == ';' && groupAt >= 0:
			out = append(out, addrSegment{group: true, name: name, list: v[start:i]})
			groupAt, start = -1, i+1
		}
	}
	if groupAt >= 0 {
		out = append(out, addrSegment{group: true, name: name, list: v[start:]})
	} else if strings.Trim(v[start:], " ,") != "" {
		out = append(out, addrSegment{list: strings.Trim(v[start:], " ,")})
	}
	for i := range out {
		out[i].list = strings.Trim(out[i].list, " ,")
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// bodyStructure describes one entity. parent is the parent's media type,
// which sets the default type (RFC 2046 section 5.1.5: parts of
// multipart/digest default to message/rfc822; everything else to text/plain
// charset=us-ascii, RFC 2045 section 5.2).
func bodyStructure(raw textproto.Header, r io.Reader, parent string, depth int) BodyStructure {
	h := gomessage.Header{Header: raw}
	mediaType, params, err := h.ContentType()
	if err != nil || !strings.Contains(mediaType, "/") {
		mediaType, params = "text/plain", map[string]string{"charset": "us-ascii"}
		if parent == "multipart/digest" {
			mediaType, params = "message/rfc822", nil
		}
	}
	typ, sub, _ := strings.Cut(mediaType, "/")
	if strings.EqualFold(typ, "text") && params["charset"] == "" {
		// RFC 2045 section 5.2: text defaults to charset us-ascii.
		if params == nil {
			params = map[string]string{}
		}
		params["charset"] = "us-ascii"
	}

	if typ == "multipart" && params["boundary"] != "" && depth < maxParseDepth {
		bs := &MultiPart{Subtype: sub}
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil || p == nil {
				break
			}
			bs.Children = append(bs.Children, bodyStructure(p.Header, p, mediaType, depth+1))
		}
		if len(bs.Children) > 0 {
			bs.Extended = &MultiPartExt{
				Params:      params,
				Disposition: disposition(h),
				Language:    language(h),
				Location:    h.Get("Content-Location"),
			}
			return bs
		}
		// RFC 3501 needs at least one child: describe an empty or
		// broken multipart as an opaque body instead.
		typ, sub = "text", "plain"
		params = map[string]string{"charset": "us-ascii"}
	}

	body, _ := io.ReadAll(r)
	enc := h.Get("Content-Transfer-Encoding")
	if enc == "" {
		enc = "7BIT"
	}
	bs := &SinglePart{
		Type:        typ,
		Subtype:     sub,
		Params:      params,
		ID:          h.Get("Content-Id"),
		Description: h.Get("Content-Description"),
		Encoding:    enc,
		Size:        uint32(len(body)),
		Extended: &SinglePartExt{
			Disposition: disposition(h),
			Language:    language(h),
			Location:    h.Get("Content-Location"),
		},
	}
	lines := int64(bytes.Count(body, []byte("\n")))
	if strings.EqualFold(typ, "text") {
		bs.Text = &TextInfo{NumLines: lines}
	}
	if strings.EqualFold(mediaType, "message/rfc822") || strings.EqualFold(mediaType, "message/global") {
		inner := HeaderSize(body)
		ih := readHeader(body[:inner])
		child := fallbackPart(int64(len(body)) - inner)
		if depth < maxParseDepth {
			child = bodyStructure(ih, bytes.NewReader(body[inner:]), "", depth+1)
		}
		bs.MessageRFC822 = &MessageRFC822{
			Envelope:      envelope(ih),
			BodyStructure: child,
			NumLines:      lines,
		}
	}
	return bs
}

func fallbackPart(size int64) BodyStructure {
	if size < 0 {
		size = 0
	}
	return &SinglePart{
		Type: "text", Subtype: "plain",
		Params:   map[string]string{"charset": "us-ascii"},
		Encoding: "7BIT",
		Size:     uint32(size),
		Text:     &TextInfo{},
	}
}

func disposition(h gomessage.Header) *Disposition {
	disp, params, err := h.ContentDisposition()
	if err != nil || disp == "" {
		return nil
	}
	return &Disposition{Value: disp, Params: params}
}

func language(h gomessage.Header) []string {
	v := h.Get("Content-Language")
	if v == "" {
		return nil
	}
	var l []string
	for _, lang := range strings.Split(v, ",") {
		if lang = strings.TrimSpace(lang); lang != "" {
			l = append(l, lang)
		}
	}
	return l
}
