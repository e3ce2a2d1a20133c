package imapserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"slices"
	"strings"
	"time"

	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
	imapsrv "github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Search implements imapsrv.Session (RFC 3501 section 6.4.4, RFC 9051
// section 6.4.4 with ESEARCH return options, RFC 5182 SAVE).
// Matching is case-insensitive substring matching on decoded header values
// and decoded text, as RFC 3501 requires.
func (s *session) Search(kind imapsrv.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	sel := s.sel
	if sel == nil {
		return nil, errNotSelected
	}
	list, err := sel.folder.List()
	if err != nil {
		return nil, storeError(err)
	}
	byUID := make(map[imap.UID]*mailbox.Summary, len(list))
	for i := range list {
		byUID[list[i].UID] = &list[i]
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	var matched []imap.UID
	for i, uid := range sel.uids {
		m := byUID[uid]
		if m == nil {
			continue // expunged elsewhere, not yet reported
		}
		c := &candidate{sess: s, seq: uint32(i + 1), sum: m}
		if !c.match(criteria) {
			continue
		}
		matched = append(matched, uid)
		num := uint32(i + 1)
		if kind == imapsrv.NumKindUID {
			num = uint32(uid)
			uids.AddNum(uid)
		} else {
			seqs.AddNum(num)
		}
		if data.Min == 0 {
			data.Min = num
		}
		data.Max = num
		data.Count++
	}
	if kind == imapsrv.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options.ReturnSave {
		sel.searchRes = matched
	}
	return data, nil
}

// candidate is one message under test; parsed parts load lazily.
type candidate struct {
	sess *session
	seq  uint32
	sum  *mailbox.Summary

	msg    *mailbox.Message
	raw    []byte
	header *textproto.Header
	text   *string
}

func (c *candidate) message() *mailbox.Message {
	if c.msg == nil {
		m, err := c.sess.sel.folder.Message(c.sum.UID)
		if err != nil {
			m = &mailbox.Message{Summary: *c.sum, Structure: &mailbox.Structure{Envelope: &imap.Envelope{}}}
		}
		c.msg = m
	}
	return c.msg
}

func (c *candidate) content() []byte {
	if c.raw == nil {
		c.raw = []byte{}
		if ct, err := c.sess.sel.folder.Content(c.sum.UID); err == nil {
			b := make([]byte, ct.Size())
			if _, err := ct.ReadAt(b, 0); err == nil || errors.Is(err, io.EOF) {
				c.raw = b
			}
		}
	}
	return c.raw
}

func (c *candidate) hdr() *textproto.Header {
	if c.header == nil {
		raw := c.content()
		hs := mailbox.HeaderSize(raw)
		h, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(raw[:hs]), strings.NewReader("\r\n\r\n"))))
		if err != nil {
			h = textproto.Header{}
		}
		c.header = &h
	}
	return c.header
}

var wordDecoder = mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	return r, nil // unknown charsets compare as raw bytes rather than fail
}}

func decodeHeader(v string) string {
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		return d
	}
	return v
}

// bodyText is the decoded text of every text part, for BODY and TEXT.
// Malformed MIME falls back to the raw body bytes.
func (c *candidate) bodyText() string {
	if c.text != nil {
		return *c.text
	}
	raw := c.content()
	var sb strings.Builder
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err == nil || gomessage.IsUnknownCharset(err) || gomessage.IsUnknownEncoding(err) {
		walkErr := ent.Walk(func(_ []int, e *gomessage.Entity, err error) error {
			if err != nil {
				return err
			}
			mt, _, _ := e.Header.ContentType()
			if mt == "" || strings.HasPrefix(mt, "text/") {
				b, _ := io.ReadAll(io.LimitReader(e.Body, 64<<20))
				sb.Write(b)
				sb.WriteByte('\n')
			}
			return nil
		})
		if walkErr != nil {
			sb.Reset()
		}
	}
	if sb.Len() == 0 {
		sb.Write(raw[mailbox.HeaderSize(raw):])
	}
	t := strings.ToLower(sb.String())
	c.text = &t
	return t
}

func containsFold(hay, needle string) bool {
	return strings.Contains(strings.ToLower(hay), strings.ToLower(needle))
}

func dateOnly(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// match reports whether the message meets every criterion (RFC 3501 section
// 6.4.4: criteria are ANDed).
func (c *candidate) match(cr *imap.SearchCriteria) bool {
	sel := c.sess.sel
	for _, set := range cr.SeqNum {
		if !slices.Contains(sel.resolve(set), int(c.seq-1)) {
			return false
		}
	}
	for _, set := range cr.UID {
		if !slices.Contains(sel.resolve(set), int(c.seq-1)) {
			return false
		}
	}
	flags := sel.flags(c.sum)
	for _, f := range cr.Flag {
		if !slices.ContainsFunc(flags, func(g imap.Flag) bool { return strings.EqualFold(string(f), string(g)) }) {
			return false
		}
	}
	for _, f := range cr.NotFlag {
		if slices.ContainsFunc(flags, func(g imap.Flag) bool { return strings.EqualFold(string(f), string(g)) }) {
			return false
		}
	}
	if cr.Larger > 0 && c.sum.Size <= cr.Larger {
		return false
	}
	if cr.Smaller > 0 && c.sum.Size >= cr.Smaller {
		return false
	}
	// RFC 3501: date criteria disregard time and timezone.
	if !cr.Since.IsZero() && dateOnly(c.sum.InternalDate).Before(dateOnly(cr.Since)) {
		return false
	}
	if !cr.Before.IsZero() && !dateOnly(c.sum.InternalDate).Before(dateOnly(cr.Before)) {
		return false
	}
	if !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
		sent := c.message().Structure.Envelope.Date
		if sent.IsZero() {
			return false
		}
		if !cr.SentSince.IsZero() && dateOnly(sent).Before(dateOnly(cr.SentSince)) {
			return false
		}
		if !cr.SentBefore.IsZero() && !dateOnly(sent).Before(dateOnly(cr.SentBefore)) {
			return false
		}
	}
	for _, hf := range cr.Header {
		if !c.matchHeader(hf.Key, hf.Value) {
			return false
		}
	}
	for _, b := range cr.Body {
		if !strings.Contains(c.bodyText(), strings.ToLower(b)) {
			return false
		}
	}
	for _, t := range cr.Text {
		if !strings.Contains(c.bodyText(), strings.ToLower(t)) && !c.matchAnyHeader(t) {
			return false
		}
	}
	for i := range cr.Not {
		if c.match(&cr.Not[i]) {
			return false
		}
	}
	for i := range cr.Or {
		if !c.match(&cr.Or[i][0]) && !c.match(&cr.Or[i][1]) {
			return false
		}
	}
	return true
}

// matchHeader: an empty value matches any message that has the field
// (RFC 3501 section 6.4.4, HEADER).
func (c *candidate) matchHeader(key, value string) bool {
	for f := c.hdr().FieldsByKey(key); f.Next(); {
		if value == "" || containsFold(decodeHeader(f.Value()), value) {
			return true
		}
	}
	return false
}

func (c *candidate) matchAnyHeader(value string) bool {
	for f := c.hdr().Fields(); f.Next(); {
		if containsFold(decodeHeader(f.Value()), value) {
			return true
		}
	}
	return false
}
