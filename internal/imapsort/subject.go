package imapsort

import (
	"strings"
)

// BaseSubject is the base subject of a Subject header value (RFC 5256 section 2.1): encoded
// words decoded to UTF-8, white space normalized, and the reply and forward artifacts
// ("Re:", "Fwd:", "[list]" blobs, "(fwd)", "[fwd: ...]") removed. The result keeps its
// case; compare base subjects under i;ascii-casemap.
func BaseSubject(subject string) string {
	base, _ := BaseSubjectReply(subject)
	return base
}

// BaseSubjectReply is BaseSubject, and whether the subject marks a reply or a forward: THREAD
// =REFERENCES counts a message as one when extracting its base subject removed a subj-refwd
// ("Re:", "Fw:", "Fwd:" with an optional blob), a "(fwd)" trailer, or a "[fwd:" header with
// its "]" trailer (RFC 5256 section 2.1 and section 3, REFERENCES). Removing a bare blob such
// as "[list]" or white space does not count.
func BaseSubjectReply(subject string) (base string, replyOrForward bool) {
	// (1) Decode encoded-words, then tabs and continuations become spaces and runs of spaces
	// one space.
	s := packSpace(decodeHeader(subject))
	for {
		// (2) Remove subj-trailer ("(fwd)" / WSP) from the end, as often as it matches.
		for {
			if strings.HasSuffix(s, " ") {
				s = s[:len(s)-1]
			} else if len(s) >= 5 && equalFoldASCII(s[len(s)-5:], "(fwd)") {
				s = s[:len(s)-5]
				replyOrForward = true
			} else {
				break
			}
		}
		// (3) Remove subj-leader; (4) remove a subj-blob if a non-empty subj-base is left;
		// (5) repeat (3) and (4) until neither matches. Nothing ends in a space here (step 2),
		// so any text after the blob is a non-empty subj-base.
		for {
			if n, refwd := leaderLen(s); n > 0 {
				s = s[n:]
				replyOrForward = replyOrForward || refwd
			} else if n := blobLen(s); n > 0 && n < len(s) {
				s = s[n:]
			} else {
				break
			}
		}
		// (6) "[fwd:" ... "]" around the whole subject: remove both, and repeat from (2).
		if len(s) >= 6 && equalFoldASCII(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s = s[5 : len(s)-1]
			replyOrForward = true
			continue
		}
		// (7)
		return s, replyOrForward
	}
}

// leaderLen is the length of a subj-leader at the start of s, and whether it is a subj-refwd
// (with blobs before it) rather than white space (RFC 5256 section 5):
//
//	subj-leader = (*subj-blob subj-refwd) / WSP
//	subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
//
// After step (1) the only white space is a single SP.
func leaderLen(s string) (n int, refwd bool) {
	if strings.HasPrefix(s, " ") {
		return 1, false
	}
	p := 0
	for {
		b := blobLen(s[p:])
		if b == 0 {
			break
		}
		p += b
	}
	// Only the longest run of blobs can be followed by "re" or "fw": a shorter run leaves
	// a '[' next.
	switch {
	case len(s)-p >= 3 && equalFoldASCII(s[p:p+3], "fwd"):
		p += 3
	case len(s)-p >= 2 && (equalFoldASCII(s[p:p+2], "fw") || equalFoldASCII(s[p:p+2], "re")):
		p += 2
	default:
		return 0, false
	}
	for p < len(s) && s[p] == ' ' {
		p++
	}
	p += blobLen(s[p:])
	if p < len(s) && s[p] == ':' {
		return p + 1, true
	}
	return 0, false
}

// blobLen is the length of a subj-blob at the start of s, 0 if there is none:
//
//	subj-blob = "[" *BLOBCHAR "]" *WSP
//	BLOBCHAR  = %x01-5a / %x5c / %x5e-ff ; any CHAR except '[' and ']'
func blobLen(s string) int {
	if !strings.HasPrefix(s, "[") {
		return 0
	}
	i := 1
	for i < len(s) && s[i] != ']' {
		if s[i] == '[' || s[i] == 0 {
			return 0
		}
		i++
	}
	if i == len(s) {
		return 0
	}
	i++
	for i < len(s) && s[i] == ' ' {
		i++
	}
	return i
}

// packSpace turns tabs, CR and LF (what is left of folded continuation lines) into spaces
// and runs of spaces into one space (RFC 5256 section 2.1 step 1).
func packSpace(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\t' || c == '\r' || c == '\n' || c == ' ' && i+1 < len(s) && s[i+1] == ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\t' || c == '\r' || c == '\n' || c == ' ' {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		b.WriteByte(c)
	}
	return b.String()
}
