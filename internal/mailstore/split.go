package mailstore

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"slices"
	"strings"

	"epost/internal/mailbox"

	"github.com/emersion/go-message/textproto"
)

// Splitting a message for storage. A message is stored as consecutive pieces whose
// concatenation is exactly the bytes received (mailbox: "served byte for byte"). The body of
// every large leaf MIME part (RFC 2046 section 5.1.1: the bytes after the part's header, up
// to but excluding the line break that belongs to the next boundary delimiter) is a piece of
// its own, so an attachment sent to many people, or many times, becomes the same content
// object and is stored once per ring (convergent encryption). Everything between those bodies
// (the top-level header, boundary lines, part headers, small text parts) is kept together:
// it differs per message anyway, and one object for it costs less than one per header.
//
// Malformed MIME (a multipart without a closing delimiter or without parts, nesting beyond
// maxSplitDepth) is never "repaired": the whole message becomes a single piece.

const (
	// minSplitPart is the smallest leaf body stored as a piece of its own.
	minSplitPart = 1024
	// maxSplitParts bounds the bodies cut out, so that the pieces fit a POST notification
	// (post.MaxParts = 64 >= 2*maxSplitParts+1); the largest bodies win.
	maxSplitParts = 31
	maxSplitDepth = 32
)

type span struct{ start, end int }

// splitMessage returns the pieces of raw; they alias raw.
func splitMessage(raw []byte) [][]byte {
	if len(raw) == 0 {
		return nil
	}
	var leaves []span
	if !collectLeaves(raw, 0, 0, &leaves) {
		return [][]byte{raw}
	}
	var big []span
	for _, l := range leaves {
		if l.end-l.start >= minSplitPart {
			big = append(big, l)
		}
	}
	if len(big) > maxSplitParts {
		slices.SortStableFunc(big, func(a, b span) int { return (b.end - b.start) - (a.end - a.start) })
		big = big[:maxSplitParts]
	}
	slices.SortFunc(big, func(a, b span) int { return a.start - b.start })
	var pieces [][]byte
	at := 0
	for _, b := range big {
		if b.start > at {
			pieces = append(pieces, raw[at:b.start])
		}
		pieces = append(pieces, raw[b.start:b.end])
		at = b.end
	}
	if at < len(raw) {
		pieces = append(pieces, raw[at:])
	}
	return pieces
}

// collectLeaves appends the body spans of the leaf parts of the entity ent (which starts at
// offset base of the message); it reports false for malformed multipart structure.
func collectLeaves(ent []byte, base, depth int, out *[]span) bool {
	hs := int(mailbox.HeaderSize(ent))
	mt, params, err := mime.ParseMediaType(headerField(ent[:hs], "Content-Type"))
	if err != nil || !strings.HasPrefix(strings.ToLower(mt), "multipart/") {
		*out = append(*out, span{base + hs, base + len(ent)})
		return true
	}
	if depth >= maxSplitDepth || params["boundary"] == "" {
		return false
	}
	parts, ok := multipartSpans(ent[hs:], params["boundary"])
	if !ok {
		return false
	}
	for _, p := range parts {
		if !collectLeaves(ent[hs+p.start:hs+p.end], base+hs+p.start, depth+1, out) {
			return false
		}
	}
	return true
}

// headerField reads one field of a header block; "" when absent or unreadable.
func headerField(h []byte, key string) string {
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(h), strings.NewReader("\r\n\r\n")))
	th, err := textproto.ReadHeader(br)
	if err != nil {
		return ""
	}
	return th.Get(key)
}

// multipartSpans finds the body parts of a multipart body (RFC 2046 section 5.1.1): a
// delimiter line is "--" boundary at the start of a line, optionally followed by "--" (the
// close delimiter) and linear white space; the line break before it belongs to it. ok is
// false without a close delimiter or without any part.
func multipartSpans(body []byte, boundary string) (parts []span, ok bool) {
	delim := []byte("--" + boundary)
	partStart := -1
	for lineStart := 0; lineStart < len(body); {
		eol := bytes.IndexByte(body[lineStart:], '\n')
		next := len(body)
		if eol >= 0 {
			next = lineStart + eol + 1
		}
		line := body[lineStart:next]
		if rest, isDelim := bytes.CutPrefix(line, delim); isDelim {
			closing := bytes.HasPrefix(rest, []byte("--"))
			if closing {
				rest = rest[2:]
			}
			if len(bytes.TrimRight(rest, " \t\r\n")) == 0 {
				if partStart >= 0 {
					end := lineStart
					// The line break before the delimiter is part of the delimiter.
					if end > partStart && body[end-1] == '\n' {
						end--
						if end > partStart && body[end-1] == '\r' {
							end--
						}
					}
					parts = append(parts, span{partStart, end})
				}
				if closing {
					return parts, len(parts) > 0
				}
				partStart = next
			}
		}
		lineStart = next
	}
	return nil, false
}
