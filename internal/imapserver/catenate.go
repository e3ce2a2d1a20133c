package imapserver

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// CATENATE (RFC 4469): a message APPENDed from TEXT parts and from parts of messages already in
// the user's mailboxes, named by IMAP URLs (RFC 5092) of this server and user:
// [imap://user@host]/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]].

// errBadURL answers NO [BADURL url].
type errBadURL struct {
	url string
	why string
}

func (e *errBadURL) Error() string { return fmt.Sprintf("%s: %s", e.url, e.why) }

// catenate builds the message of one CATENATE list.
func (s *session) catenate(parts []imapwire.CatPart) ([]byte, error) {
	var msg []byte
	for _, p := range parts {
		var b []byte
		if p.IsText {
			b = p.Text
		} else {
			var err error
			if b, err = s.urlPart(p.URL); err != nil {
				return nil, err
			}
		}
		msg = append(msg, b...)
		if int64(len(msg)) > s.srv.cfg.AppendLimit {
			return nil, errTooBigCat
		}
	}
	return msg, nil
}

var errTooBigCat = errors.New("imapserver: the catenated message is too big")

func (s *session) urlPart(raw string) ([]byte, error) {
	bad := func(why string) error { return &errBadURL{url: raw, why: why} }
	u := raw
	if strings.HasPrefix(strings.ToLower(u), "imap://") {
		rest := u[len("imap://"):]
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return nil, bad("no mailbox in the URL")
		}
		auth := rest[:i]
		if user, _, ok := strings.Cut(auth, "@"); ok {
			user, _ = url.PathUnescape(strings.SplitN(user, ";", 2)[0])
			if !strings.EqualFold(user, s.user) {
				return nil, bad("a URL of another user")
			}
		}
		u = rest[i:]
	}
	if !strings.HasPrefix(u, "/") {
		return nil, bad("not an IMAP URL of this server")
	}
	segs := strings.Split(u[1:], "/;")
	if len(segs) < 2 {
		return nil, bad("no ;UID=")
	}
	mbox, validity, hasValidity := strings.Cut(segs[0], ";UIDVALIDITY=")
	name, err := url.PathUnescape(mbox)
	if err != nil || name == "" {
		return nil, bad("bad mailbox name")
	}
	var uid uint64
	var sec *imapwire.Section
	var offset, length int64 = 0, -1
	for _, seg := range segs[1:] {
		k, v, _ := strings.Cut(seg, "=")
		switch strings.ToUpper(k) {
		case "UID":
			uid, err = strconv.ParseUint(v, 10, 32)
			if err != nil || uid == 0 {
				return nil, bad("bad UID")
			}
		case "SECTION":
			v, _ = url.PathUnescape(v)
			if sec, err = parseSection(v); err != nil {
				return nil, bad("bad SECTION")
			}
		case "PARTIAL":
			o, l, hasLen := strings.Cut(v, ".")
			if offset, err = strconv.ParseInt(o, 10, 64); err != nil || offset < 0 {
				return nil, bad("bad PARTIAL")
			}
			if hasLen {
				if length, err = strconv.ParseInt(l, 10, 64); err != nil || length <= 0 {
					return nil, bad("bad PARTIAL")
				}
			}
		default:
			return nil, bad("unknown part " + k)
		}
	}
	if uid == 0 {
		return nil, bad("no ;UID=")
	}
	f, err := s.store.Folder(canonical(name))
	if err != nil {
		return nil, bad("no such mailbox")
	}
	if hasValidity {
		st, err := f.Status()
		if err != nil || strconv.FormatUint(uint64(st.UIDValidity), 10) != validity {
			return nil, bad("UIDVALIDITY does not match")
		}
	}
	c, err := f.Content(mailbox.UID(uid))
	if err != nil {
		return nil, bad("no such message")
	}
	raw2 := make([]byte, c.Size())
	if _, err := c.ReadAt(raw2, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	b, err := section(raw2, sec)
	if err != nil {
		return nil, bad("no such section")
	}
	if offset > 0 || length >= 0 {
		off := min(int(offset), len(b))
		end := len(b)
		if length >= 0 {
			end = min(off+int(length), len(b))
		}
		b = b[off:end]
	}
	return b, nil
}

// parseSection reads a URL's SECTION: part numbers and a specifier (HEADER, TEXT, MIME,
// HEADER.FIELDS (...) is not taken).
func parseSection(v string) (*imapwire.Section, error) {
	sec := &imapwire.Section{}
	for _, p := range strings.Split(v, ".") {
		if n, err := strconv.ParseUint(p, 10, 32); err == nil && sec.Specifier == "" {
			if n == 0 {
				return nil, errors.New("part 0")
			}
			sec.Part = append(sec.Part, uint32(n))
			continue
		}
		switch sp := strings.ToUpper(p); {
		case sec.Specifier == "" && (sp == "HEADER" || sp == "TEXT" || sp == "MIME"):
			sec.Specifier = sp
		default:
			return nil, errors.New("bad section")
		}
	}
	if sec.Specifier == "MIME" && len(sec.Part) == 0 {
		return nil, errors.New("MIME of no part")
	}
	return sec, nil
}
