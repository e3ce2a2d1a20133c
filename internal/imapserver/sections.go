package imapserver

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"epost/internal/imapwire"
	"epost/internal/mailbox"

	"github.com/emersion/go-message/textproto"
)

// Body sections (RFC 9051 section 6.4.5): exact byte ranges of the stored message, found by
// splitting it along its MIME boundaries (no re-encoding), and BINARY (RFC 3516): a part's
// content with its transfer encoding undone.

// entity is a header block and its body: a message, or a part of a multipart.
type entity struct {
	raw    []byte
	hdrEnd int // length of the header block, blank line included (0 for a part without one)
}

func newEntity(b []byte) entity { return entity{raw: b, hdrEnd: int(mailbox.HeaderSize(b))} }

func (e entity) body() []byte { return e.raw[e.hdrEnd:] }

func (e entity) header() textproto.Header {
	h, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(e.raw[:e.hdrEnd]), strings.NewReader("\r\n\r\n"))))
	if err != nil {
		return textproto.Header{}
	}
	return h
}

// mediaType is the entity's Content-Type (text/plain when absent, RFC 2045 section 5.2) and
// its parameters; def is the default (message/rfc822 inside multipart/digest).
func (e entity) mediaType(def string) (string, map[string]string) {
	h := e.header()
	v := h.Get("Content-Type")
	if v == "" {
		return def, nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "text/plain", nil
	}
	return mt, params
}

// parts splits a multipart body along its boundary.
func (e entity) parts(boundary string) []entity {
	body := e.body()
	delim := []byte("--" + boundary)
	var starts []int // offsets of delimiter lines
	for i := 0; i+len(delim) <= len(body); {
		if (i == 0 || body[i-1] == '\n') && bytes.HasPrefix(body[i:], delim) {
			starts = append(starts, i)
			if bytes.HasPrefix(body[i+len(delim):], []byte("--")) {
				break // the close delimiter
			}
		}
		j := bytes.IndexByte(body[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	var out []entity
	for k := 0; k+1 < len(starts); k++ {
		s := starts[k]
		nl := bytes.IndexByte(body[s:], '\n')
		if nl < 0 {
			break
		}
		from, to := s+nl+1, starts[k+1]
		// The CRLF before a delimiter belongs to it (RFC 2046 section 5.1.1).
		if to > from && body[to-1] == '\n' {
			to--
			if to > from && body[to-1] == '\r' {
				to--
			}
		}
		if to < from {
			to = from
		}
		p := body[from:to]
		out = append(out, entity{raw: p, hdrEnd: partHeaderSize(p)})
	}
	return out
}

// partHeaderSize is the header length of a body part: 0 when the part starts with its blank
// line (no header).
func partHeaderSize(p []byte) int {
	if bytes.HasPrefix(p, []byte("\r\n")) {
		return 2
	}
	if bytes.HasPrefix(p, []byte("\n")) {
		return 1
	}
	return int(mailbox.HeaderSize(p))
}

var errNoSection = errors.New("imapserver: no such body section")

// section returns the bytes of a BODY[...] section of msg (sec nil: the whole message). An
// absent part yields errNoSection (the answer is then an empty string).
func section(msg []byte, sec *imapwire.Section) ([]byte, error) {
	top := newEntity(msg)
	if sec == nil {
		return msg, nil
	}
	cur, isMessage := top, true
	def := "text/plain"
	for i, n := range sec.Part {
		mt, params := cur.mediaType(def)
		switch {
		case strings.HasPrefix(mt, "multipart/"):
			kids := cur.parts(params["boundary"])
			if int(n) > len(kids) || n == 0 {
				return nil, errNoSection
			}
			def = "text/plain"
			if mt == "multipart/digest" {
				def = "message/rfc822"
			}
			cur, isMessage = kids[n-1], false
		case n == 1:
			// A non-multipart entity's part 1 is its own body.
			if isMessage {
				cur, isMessage = entity{raw: cur.raw, hdrEnd: cur.hdrEnd}, false
			}
		default:
			return nil, errNoSection
		}
		// A message/rfc822 part with more of the path to go: descend into the message.
		if i+1 < len(sec.Part) {
			if pmt, _ := cur.mediaType(def); pmt == "message/rfc822" || pmt == "message/global" {
				cur, isMessage = newEntity(cur.body()), true
				def = "text/plain"
			}
		}
	}
	spec := sec.Specifier
	if len(sec.Part) == 0 {
		switch spec {
		case "":
			return msg, nil
		case "HEADER":
			return top.raw[:top.hdrEnd], nil
		case "TEXT":
			return top.body(), nil
		case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
			return headerFields(top.raw[:top.hdrEnd], sec.Fields, spec == "HEADER.FIELDS.NOT"), nil
		}
		return nil, errNoSection
	}
	switch spec {
	case "":
		return cur.body(), nil
	case "MIME":
		return cur.raw[:cur.hdrEnd], nil
	case "HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT":
		// Of the message a message/rfc822 part holds.
		if mt, _ := cur.mediaType(def); mt != "message/rfc822" && mt != "message/global" {
			return nil, errNoSection
		}
		m := newEntity(cur.body())
		switch spec {
		case "HEADER":
			return m.raw[:m.hdrEnd], nil
		case "TEXT":
			return m.body(), nil
		}
		return headerFields(m.raw[:m.hdrEnd], sec.Fields, spec == "HEADER.FIELDS.NOT"), nil
	}
	return nil, errNoSection
}

// headerFields keeps (or, with not, drops) the named fields of a header block, in order, with
// the blank line that ends it.
func headerFields(hdr []byte, names []string, not bool) []byte {
	want := map[string]bool{}
	for _, n := range names {
		want[strings.ToLower(n)] = true
	}
	var out bytes.Buffer
	keep := false
	for _, line := range bytes.SplitAfter(hdr, []byte("\n")) {
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			continue // the blank line: added at the end
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, _ := bytes.Cut(line, []byte(":"))
			keep = want[strings.ToLower(strings.TrimSpace(string(name)))] != not
		}
		if keep {
			out.Write(line)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}

// errUnknownCTE: BINARY of a part whose transfer encoding is not one we can undo (RFC 3516
// section 4.3: NO [UNKNOWN-CTE]).
var errUnknownCTE = errors.New("imapserver: unknown content transfer encoding")

// binarySection is a part's content with its Content-Transfer-Encoding undone.
func binarySection(msg []byte, sec *imapwire.Section) ([]byte, error) {
	if sec == nil || len(sec.Part) == 0 {
		if sec != nil && sec.Specifier != "" {
			return section(msg, sec)
		}
		e := newEntity(msg)
		h := e.header()
		b, err := decodeCTE(h.Get("Content-Transfer-Encoding"), e.body())
		if err != nil {
			return nil, err
		}
		return append(append([]byte{}, e.raw[:e.hdrEnd]...), b...), nil
	}
	body, err := section(msg, &imapwire.Section{Part: sec.Part})
	if err != nil {
		return nil, err
	}
	mime, err := section(msg, &imapwire.Section{Part: sec.Part, Specifier: "MIME"})
	if err != nil {
		return nil, err
	}
	h := entity{raw: mime, hdrEnd: len(mime)}.header()
	cte := h.Get("Content-Transfer-Encoding")
	return decodeCTE(cte, body)
}

func decodeCTE(cte string, b []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
		return b, nil
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, b)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			// Lenient, as mail readers are: what decoded before the bad byte.
			return out[:n], nil
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		if err != nil && len(out) == 0 {
			return b, nil
		}
		return out, nil
	}
	return nil, errUnknownCTE
}

// withoutNUL is b with each NUL byte replaced by 0x80, for a BODY[...] or RFC822 response:
// an IMAP literal cannot carry NUL (RFC 9051 section 4.3 and 9: CHAR8 excludes it), only the
// literal8 of a BINARY response can; replacing keeps the section's size, as Dovecot does.
func withoutNUL(b []byte) []byte {
	if bytes.IndexByte(b, 0) < 0 {
		return b
	}
	out := bytes.Clone(b)
	for i, c := range out {
		if c == 0 {
			out[i] = 0x80
		}
	}
	return out
}
