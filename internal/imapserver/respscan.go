package imapserver

import (
	"bytes"
	"strings"
)

// maxHeldLine bounds how much of one response line respScanner holds back
// before it gives up looking at the line and passes it through. Capability
// lines and status responses are far shorter.
const maxHeldLine = 4096

// respScanner follows the protocol engine's output line by line, passing
// literal data through untouched (RFC 9051 section 4.3: a line ending in
// "{n}" is followed by n octets that are not lines), so that the front layer
// sees the start of every response line and can rewrite capability lists.
// It is a pure state machine: feed appends what to send to out.
type respScanner struct {
	line    []byte // the current line, while short enough to hold
	passing bool   // the current line was too long and is passing through
	head    []byte // start of a passing line, for onLine
	tail    []byte // end of a passing line, for the literal marker
	literal int64  // octets of literal data still to pass
}

// feed scans p. onLine sees each complete response line (for a long line,
// only its start) and returns what to send in its place; for long lines its
// result is ignored, since they were already sent.
func (s *respScanner) feed(out, p []byte, onLine func(line []byte) []byte) []byte {
	for len(p) > 0 {
		if s.literal > 0 {
			n := min(int64(len(p)), s.literal)
			out = append(out, p[:n]...)
			s.literal -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i+1]
		}
		p = p[len(seg):]
		if !s.passing && len(s.line)+len(seg) > maxHeldLine {
			s.passing = true
			s.head = append(s.head[:0], s.line[:min(len(s.line), 64)]...)
			s.head = append(s.head, seg[:min(len(seg), 64-len(s.head))]...)
			s.tail = append(s.tail[:0], s.line...)
			out = append(out, s.line...)
			s.line = s.line[:0]
		}
		if s.passing {
			out = append(out, seg...)
			s.tail = append(s.tail, seg...)
			if len(s.tail) > 64 {
				s.tail = append(s.tail[:0], s.tail[len(s.tail)-64:]...)
			}
		} else {
			s.line = append(s.line, seg...)
		}
		if i < 0 {
			return out // line continues in a later write
		}
		var marker []byte
		if s.passing {
			onLine(s.head)
			marker = s.tail
		} else {
			out = append(out, onLine(s.line)...)
			marker = s.line
		}
		if n, _, ok := literalMarker(marker); ok {
			s.literal = n
		}
		s.line, s.passing = s.line[:0], false
	}
	return out
}

// capPolicy says how the front layer completes the engine's capability lists.
type capPolicy struct {
	startTLS      bool // STARTTLS is offered (RFC 9051 section 6.2.1)
	loginDisabled bool // no login on this connection yet (section 6.2.3)
}

// rewriteCaps rewrites the capability list in a CAPABILITY response or a
// [CAPABILITY ...] response code, adding what the engine cannot know: ID
// (RFC 2971), STARTTLS, and LOGINDISABLED in place of AUTH= where plaintext
// login is refused. Other lines are returned unchanged.
func rewriteCaps(line []byte, pol capPolicy) []byte {
	var start, end int
	switch {
	case bytes.HasPrefix(line, []byte("* CAPABILITY ")):
		start = len("* CAPABILITY ")
		end = len(bytes.TrimRight(line, "\r\n"))
	default:
		i := bytes.Index(line, []byte(" [CAPABILITY "))
		if i < 0 || !isStatusWithCaps(line[:i]) {
			return line
		}
		start = i + len(" [CAPABILITY ")
		j := bytes.IndexByte(line[start:], ']')
		if j < 0 {
			return line
		}
		end = start + j
	}
	var caps []string
	hadAuth := false
	for _, c := range strings.Fields(string(line[start:end])) {
		u := strings.ToUpper(c)
		switch {
		case u == "ID" || u == "STARTTLS" || u == "LOGINDISABLED":
			continue
		case strings.HasPrefix(u, "AUTH="):
			hadAuth = true
			if pol.loginDisabled {
				continue
			}
		}
		caps = append(caps, c)
	}
	if pol.startTLS {
		caps = append(caps, "STARTTLS")
	}
	if pol.loginDisabled && hadAuth {
		caps = append(caps, "LOGINDISABLED")
	}
	caps = append(caps, "ID")
	out := make([]byte, 0, len(line)+32)
	out = append(out, line[:start]...)
	out = append(out, strings.Join(caps, " ")...)
	return append(out, line[end:]...)
}

// isStatusWithCaps reports whether a line start is "tag OK" or "* OK" or
// "* PREAUTH", the responses that carry a [CAPABILITY] code.
func isStatusWithCaps(prefix []byte) bool {
	tag, rest, ok := bytes.Cut(prefix, []byte(" "))
	if !ok || len(tag) == 0 {
		return false
	}
	status := string(rest)
	return status == "OK" || (string(tag) == "*" && status == "PREAUTH")
}
