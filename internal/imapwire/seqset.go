package imapwire

import (
	"strconv"
	"strings"
)

// SeqRange is one element of a sequence set: Start:Stop, or a single number when Start ==
// Stop. 0 stands for "*", the largest number in use. Start may be larger than Stop (RFC 9051
// allows "4:2"); Normalize-free code should use Contains.
type SeqRange struct {
	Start, Stop uint32
}

// SeqSet is a sequence-set (RFC 9051 section 9) of message sequence numbers or UIDs, or the
// saved search result "$" (RFC 5182), which cannot be combined with other ranges.
type SeqSet struct {
	Ranges []SeqRange
	Saved  bool // "$"
}

// Contains reports whether n is in the set, with max the value of "*". It is false for "$".
func (s SeqSet) Contains(n, max uint32) bool {
	for _, r := range s.Ranges {
		a, b := r.Start, r.Stop
		if a == 0 {
			a = max
		}
		if b == 0 {
			b = max
		}
		if a > b {
			a, b = b, a
		}
		if n >= a && n <= b {
			return true
		}
	}
	return false
}

// String formats the set as on the wire.
func (s SeqSet) String() string {
	if s.Saved {
		return "$"
	}
	var b strings.Builder
	for i, r := range s.Ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(seqNum(r.Start))
		if r.Stop != r.Start {
			b.WriteByte(':')
			b.WriteString(seqNum(r.Stop))
		}
	}
	return b.String()
}

func seqNum(n uint32) string {
	if n == 0 {
		return "*"
	}
	return strconv.FormatUint(uint64(n), 10)
}

// seqSet reads sequence-set; with savedOK, "$" is allowed (RFC 5182, SEARCHRES).
func (r *Reader) seqSet(savedOK bool) SeqSet {
	if r.peek() == '$' {
		if !savedOK {
			r.syntax("'$' (the saved search result) is not allowed here")
			return SeqSet{}
		}
		r.pos++
		return SeqSet{Saved: true}
	}
	var s SeqSet
	for r.ok() {
		a := r.seqNumber()
		b := a
		if r.take(':') {
			b = r.seqNumber()
		}
		if !r.ok() {
			break
		}
		s.Ranges = append(s.Ranges, SeqRange{a, b})
		if !r.take(',') {
			break
		}
	}
	return s
}

// seqNumber reads seq-number = nz-number / "*".
func (r *Reader) seqNumber() uint32 {
	if r.take('*') {
		return 0
	}
	if c := r.peek(); c < '1' || c > '9' {
		r.syntax("expected a sequence set (like 1:5,7 or 1:*)")
		return 0
	}
	return r.number32("sequence number")
}
