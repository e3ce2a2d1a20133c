package imapsort

import (
	"time"
)

// Address is the first address of an address header (From, To or Cc), as an IMAP ENVELOPE
// carries it (RFC 3501 section 7.4.2): the zero Address means the header is missing or holds
// no mailbox. A server fills it from the first address that is not a group marker.
type Address struct {
	Name    string // addr-name: the display name, unquoted, RFC 2047 encoded-words allowed
	Mailbox string // addr-mailbox: the local part
	Host    string // addr-host: the domain
}

// Msg is what SORT and THREAD need of one message. Header values are raw (unfolded or not,
// encoded-words left in); the package decodes what it compares.
type Msg struct {
	Seq          uint32    // message sequence number: the tie-breaker of every ordering
	UID          uint32    //
	InternalDate time.Time // ARRIVAL, and the sent date when Date is zero
	Size         int64     // RFC822.SIZE
	// Date is the Date header, parsed; the zero time when the header is missing or cannot be
	// parsed, in which case the internal date stands in (RFC 5256 section 2.2).
	Date       time.Time
	Subject    string
	From       Address
	To         Address
	Cc         Address
	MessageID  string // the Message-ID header
	InReplyTo  string // the In-Reply-To header
	References string // the References header
}

// sent is the sent date of RFC 5256 section 2.2. time.Time compares instants, so the
// time-zone adjustment to UTC the RFC asks for is implicit.
func (m *Msg) sent() time.Time {
	if m.Date.IsZero() {
		return m.InternalDate
	}
	return m.Date
}

// Numbering says which number identifies a message in a result: sequence numbers for SORT
// and THREAD, UIDs for UID SORT and UID THREAD.
type Numbering uint8

const (
	SeqNums Numbering = iota
	UIDs
)

func (n Numbering) of(m *Msg) uint32 {
	if n == UIDs {
		return m.UID
	}
	return m.Seq
}

// foldASCII maps a-z to A-Z and leaves every other byte alone: the i;ascii-casemap collation
// (RFC 4790 section 9.2). Two folded strings then compare with strings.Compare.
func foldASCII(s string) string {
	i := 0
	for i < len(s) && !('a' <= s[i] && s[i] <= 'z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// equalFoldASCII reports whether a and b are equal under i;ascii-casemap.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
