package imapserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"epost/internal/imapwire"
	"epost/internal/mailbox"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// SEARCH (RFC 9051 section 6.4.4, with ESEARCH's RETURN options and RFC 5182 SAVE).
// Matching is case-insensitive substring matching on decoded header values and decoded text;
// address fields also match the addresses as parsed (comments and quoting removed).

func (s *session) search(tag string, uid bool, a *imapwire.Search) {
	v := s.sel
	if cs := strings.ToUpper(a.Charset); cs != "" && cs != "UTF-8" && cs != "US-ASCII" {
		s.no(tag, "BADCHARSET (UTF-8 US-ASCII)", "Only UTF-8 and US-ASCII searches")
		return
	}
	if !s.checkReturn(tag, a.Return) {
		return
	}
	list, err := v.folder.List()
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	byUID := make(map[mailbox.UID]*mailbox.Summary, len(list))
	for i := range list {
		byUID[list[i].UID] = &list[i]
	}
	var nums []uint32
	var matched []mailbox.UID
	usesModSeq := hasOp(a.Key, "MODSEQ")
	if usesModSeq {
		s.enableCondstore()
	}
	var highest uint64
	var buf []byte // one header at a time: a candidate is done with it before the next
	var contents []mailbox.Content
	if cr, ok := v.folder.(mailbox.ContentsReader); ok && readsContent(a.Key) {
		contents, _ = cr.Contents(v.uids) // without them each candidate reads its own
	}
	for i, u := range v.uids {
		m := byUID[u]
		if m == nil {
			continue // expunged elsewhere, not yet reported
		}
		c := &candidate{s: s, seq: uint32(i + 1), sum: m, buf: &buf}
		if i < len(contents) {
			c.ct, c.ctRead = contents[i], true
		}
		if !c.match(a.Key) {
			continue
		}
		matched = append(matched, u)
		highest = max(highest, m.ModSeq)
		if uid {
			nums = append(nums, uint32(u))
		} else {
			nums = append(nums, uint32(i+1))
		}
	}
	if a.Return == nil {
		w := s.w.StartUntagged().Atom("SEARCH")
		for _, n := range nums {
			w.Number(uint64(n))
		}
		if usesModSeq && len(nums) > 0 {
			// RFC 7162 section 3.1.5: the highest mod-sequence of the messages found.
			w.Open().Atom("MODSEQ").Number(highest).Close()
		}
		w.End()
		s.sync(false)
		s.ok(tag, "SEARCH completed")
		return
	}
	r := a.Return
	if r.Save {
		v.saved = matched
	}
	all := !r.Min && !r.Max && !r.Count && !r.Save && r.Partial == nil || r.All
	w := s.w.StartUntagged().Atom("ESEARCH").Open().Atom("TAG").String(tag).Close()
	if uid {
		w.Atom("UID")
	}
	if len(nums) > 0 {
		if r.Min {
			w.Atom("MIN").Number(uint64(nums[0]))
		}
		if r.Max {
			w.Atom("MAX").Number(uint64(nums[len(nums)-1]))
		}
		if all {
			w.Atom("ALL").Atom(compress(nums))
		}
	}
	if r.Count {
		w.Atom("COUNT").Number(uint64(len(nums)))
	}
	if r.Partial != nil {
		s.writePartial(r.Partial, nums)
	}
	if usesModSeq && len(nums) > 0 {
		w.Atom("MODSEQ").Number(highest)
	}
	w.End()
	if r.Update {
		s.startContext(tag, uid, a.Key, matched)
	}
	s.sync(false)
	s.ok(tag, "SEARCH completed")
}

// compress writes numbers as a sequence set in the order given, runs of ascending consecutive
// numbers as ranges: 1:3,7 from ascending numbers, 7,3:5,1 from a SORT result (RFC 5267
// section 3.2: a range expands in increasing order, so a descending run stays a list).
func compress(nums []uint32) string {
	var b strings.Builder
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(nums[i]), 10))
		if j > i {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(nums[j]), 10))
		}
		i = j + 1
	}
	return b.String()
}

// candidate is one message under test; its parsed parts load lazily.
type candidate struct {
	s   *session
	seq uint32
	sum *mailbox.Summary

	msg    *mailbox.Message
	raw    []byte
	head   []byte  // the top-level header, read alone unless raw was loaded first
	buf    *[]byte // if set, head is read into this buffer, shared by the candidates of one search
	ct     mailbox.Content
	ctRead bool // ct was read for the whole search (nil: the message cannot be read)
	header *textproto.Header
	text   *string
}

func (c *candidate) message() *mailbox.Message {
	if c.msg == nil {
		m, err := c.s.sel.folder.Message(c.sum.UID)
		if err != nil || m.Structure == nil || m.Structure.Envelope == nil {
			m = &mailbox.Message{Summary: *c.sum, Structure: &mailbox.Structure{Envelope: &mailbox.Envelope{}}}
		}
		c.msg = m
	}
	return c.msg
}

func (c *candidate) content() []byte {
	if c.raw == nil {
		c.raw = []byte{}
		if ct, err := c.getContent(); err == nil {
			b := make([]byte, ct.Size())
			if _, err := ct.ReadAt(b, 0); err == nil || errors.Is(err, io.EOF) {
				c.raw = b
			}
		}
	}
	return c.raw
}

// getContent returns the message's content: the one read for the whole search, or its own.
func (c *candidate) getContent() (mailbox.Content, error) {
	if c.ctRead {
		if c.ct == nil {
			return nil, mailbox.ErrNoMessage
		}
		return c.ct, nil
	}
	return c.s.sel.folder.Content(c.sum.UID)
}

// readsContent reports whether a search key reads messages' headers or bodies.
func readsContent(k *imapwire.SearchKey) bool {
	for _, op := range []string{"FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER", "BODY", "TEXT"} {
		if hasOp(k, op) {
			return true
		}
	}
	return false
}

// headerBytes returns the message's top-level header, with the empty line that ends it. Unless
// the whole message was read already, it reads only the start of the message, enough to hold
// the header: a header search does not copy every message's body.
func (c *candidate) headerBytes() []byte {
	if c.head != nil {
		return c.head
	}
	if c.raw != nil {
		c.head = c.raw[:mailbox.HeaderSize(c.raw)]
		return c.head
	}
	c.head = []byte{}
	ct, err := c.getContent()
	if err != nil {
		return c.head
	}
	size := ct.Size()
	for n := min(size, 4096); ; n = min(size, 4*n) {
		var b []byte
		if c.buf != nil {
			if int64(cap(*c.buf)) < n {
				*c.buf = make([]byte, n)
			}
			b = (*c.buf)[:n]
		} else {
			b = make([]byte, n)
		}
		if _, err := ct.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
			return c.head
		}
		if hs := mailbox.HeaderSize(b); hs < n || n == size {
			c.head = b[:hs]
			return c.head
		}
	}
}

// fields returns the values of the header fields named key (in any case), in order, each
// unfolded (RFC 5322 section 2.2.3: a line break followed by white space is removed). It
// scans the raw header instead of parsing all of it, which a search of one field over a
// whole mailbox would do for every message.
func (c *candidate) fields(key string) []string {
	var out []string
	head := c.headerBytes()
	in := false // the field being read is one of key's
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i+1], head[i+1:]
		} else {
			head = nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if in {
				out[len(out)-1] += strings.TrimRight(string(line), "\r\n")
			}
			continue
		}
		in = false
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !strings.EqualFold(strings.TrimRight(string(line[:colon]), " \t"), key) {
			continue
		}
		in = true
		out = append(out, strings.TrimRight(string(line[colon+1:]), "\r\n"))
	}
	for i, v := range out {
		out[i] = strings.TrimSpace(v)
	}
	return out
}

func (c *candidate) hdr() *textproto.Header {
	if c.header == nil {
		head := c.headerBytes()
		h, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(head), strings.NewReader("\r\n\r\n"))))
		if err != nil {
			h = textproto.Header{}
		}
		c.header = &h
	}
	return c.header
}

var wordDecoder = mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) {
	return r, nil // unknown charsets compare as raw bytes rather than fail
}}

func decodeHeader(v string) string {
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		return d
	}
	return v
}

// bodyText is the decoded text of every text part, lower case, for BODY and TEXT.
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

func (c *candidate) hasFlag(f string) bool {
	return slices.ContainsFunc(c.s.shownFlags(c.sum), func(g mailbox.Flag) bool { return strings.EqualFold(f, string(g)) })
}

// match evaluates one search key (an AND of its Sub for "AND").
func (c *candidate) match(k *imapwire.SearchKey) bool {
	v := c.s.sel
	switch k.Op {
	case "AND":
		for _, sub := range k.Sub {
			if !c.match(sub) {
				return false
			}
		}
		return true
	case "OR":
		return c.match(k.Sub[0]) || c.match(k.Sub[1])
	case "NOT":
		return !c.match(k.Sub[0])
	case "ALL":
		return true
	case "SEQSET":
		if k.Seq.Saved {
			return slices.Contains(v.saved, c.sum.UID)
		}
		return k.Seq.Contains(c.seq, uint32(len(v.uids)))
	case "UID":
		if k.Seq.Saved {
			return slices.Contains(v.saved, c.sum.UID)
		}
		var max uint32
		if n := len(v.uids); n > 0 {
			max = uint32(v.uids[n-1])
		}
		return k.Seq.Contains(uint32(c.sum.UID), max)
	case "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "RECENT":
		return c.hasFlag(`\` + k.Op)
	case "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN":
		return !c.hasFlag(`\` + k.Op[2:])
	case "NEW":
		return c.hasFlag(`\Recent`) && !c.hasFlag(`\Seen`)
	case "OLD":
		return !c.hasFlag(`\Recent`)
	case "KEYWORD":
		return c.hasFlag(k.Str)
	case "UNKEYWORD":
		return !c.hasFlag(k.Str)
	case "LARGER":
		return uint64(c.sum.Size) > k.Num
	case "SMALLER":
		return uint64(c.sum.Size) < k.Num
	case "BEFORE":
		return dateOnly(c.sum.InternalDate).Before(dateOnly(k.Date))
	case "ON":
		return dateOnly(c.sum.InternalDate).Equal(dateOnly(k.Date))
	case "SINCE":
		return !dateOnly(c.sum.InternalDate).Before(dateOnly(k.Date))
	case "SENTBEFORE", "SENTON", "SENTSINCE":
		sent := c.message().Structure.Envelope.Date
		if sent.IsZero() {
			sent = c.sum.InternalDate // RFC 5256 section 2.2 rule, used for SENT* as Dovecot does
		}
		d, q := dateOnly(sent), dateOnly(k.Date)
		switch k.Op {
		case "SENTBEFORE":
			return d.Before(q)
		case "SENTON":
			return d.Equal(q)
		}
		return !d.Before(q)
	case "YOUNGER":
		return time.Since(c.sum.InternalDate) <= time.Duration(k.Num)*time.Second
	case "OLDER":
		return time.Since(c.sum.InternalDate) > time.Duration(k.Num)*time.Second
	case "FROM", "TO", "CC", "BCC", "SUBJECT":
		return c.matchHeader(k.Op, k.Str)
	case "HEADER":
		return c.matchHeader(k.Field, k.Str)
	case "BODY":
		return strings.Contains(c.bodyText(), strings.ToLower(k.Str))
	case "TEXT":
		return strings.Contains(c.bodyText(), strings.ToLower(k.Str)) || c.matchAnyHeader(k.Str)
	case "MODSEQ":
		return c.sum.ModSeq >= k.Num
	}
	return false // EMAILID, THREADID, SAVED*: not kept by the store
}

// matchHeader: an empty value matches any message that has the field (RFC 9051 6.4.4). An
// address field also matches on its parsed addresses, so that comments and quoting in the
// field do not hide an address.
func (c *candidate) matchHeader(key, value string) bool {
	addr := slices.Contains([]string{"FROM", "TO", "CC", "BCC", "SENDER", "REPLY-TO"}, strings.ToUpper(key))
	for _, v := range c.fields(key) {
		d := decodeHeader(v)
		if value == "" || containsFold(d, value) {
			return true
		}
		if addr {
			bare := stripComments(v)
			if containsFold(bare, value) {
				return true
			}
			if list, err := (&mail.AddressParser{WordDecoder: &wordDecoder}).ParseList(bare); err == nil {
				for _, a := range list {
					if containsFold(a.Name+" <"+a.Address+">", value) {
						return true
					}
				}
			}
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

// stripComments removes RFC 5322 comments (nested parentheses, outside quoted strings) from
// an address field and the spaces they leave around "@" and ".", so that
// "bob (home) @ example.net (Bob)" reads "bob@example.net".
func stripComments(v string) string {
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && i+1 < len(v) && (quoted || depth > 0):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(v[i+1])
			}
			i++
		case quoted:
			b.WriteByte(c)
			if c == '"' {
				quoted = false
			}
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '"':
			quoted = true
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	out := strings.Join(strings.Fields(b.String()), " ")
	for _, sep := range []string{"@", "."} {
		out = strings.ReplaceAll(out, " "+sep, sep)
		out = strings.ReplaceAll(out, sep+" ", sep)
	}
	return out
}

func hasOp(k *imapwire.SearchKey, op string) bool {
	if k == nil {
		return false
	}
	if k.Op == op {
		return true
	}
	for _, sub := range k.Sub {
		if hasOp(sub, op) {
			return true
		}
	}
	return false
}
