package imapsort

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Key is a SORT key (RFC 5256 section 3, RFC 5957 section 3), spelled as on the wire so that
// the parser's upper-cased atom converts directly.
type Key string

const (
	Arrival     Key = "ARRIVAL"     // internal date
	Cc          Key = "CC"          // addr-mailbox of the first Cc address
	Date        Key = "DATE"        // sent date (RFC 5256 section 2.2)
	From        Key = "FROM"        // addr-mailbox of the first From address
	Size        Key = "SIZE"        // RFC822.SIZE
	Subject     Key = "SUBJECT"     // base subject (RFC 5256 section 2.1)
	To          Key = "TO"          // addr-mailbox of the first To address
	DisplayFrom Key = "DISPLAYFROM" // display name of the first From address (RFC 5957)
	DisplayTo   Key = "DISPLAYTO"   // display name of the first To address (RFC 5957)
)

// Criterion is one sort criterion: a key, in reverse order if Reverse.
type Criterion struct {
	Key     Key
	Reverse bool
}

// ErrUnknownKey is returned for a sort key this package does not implement.
var ErrUnknownKey = errors.New("imapsort: unknown sort key")

// Sort orders msgs by criteria, the first criterion first, and returns their numbers in that
// order. Messages equal under every criterion keep mailbox order, ascending sequence numbers,
// whether or not a criterion is reversed (RFC 5256 section 3: REVERSE applies to the
// criterion that follows it, the tie-break is "the order in which they appear in the
// mailbox"). Strings compare under i;ascii-casemap; a missing address or subject is the empty
// string, which sorts first. msgs is not modified.
func Sort(msgs []Msg, criteria []Criterion, num Numbering) ([]uint32, error) {
	for _, c := range criteria {
		switch c.Key {
		case Arrival, Cc, Date, From, Size, Subject, To, DisplayFrom, DisplayTo:
		default:
			return nil, fmt.Errorf("%w %q", ErrUnknownKey, string(c.Key))
		}
	}
	// Every key is computed once per message, not once per comparison: base subjects and
	// display names decode encoded-words.
	rows := make([]sortRow, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		r := &rows[i]
		r.m = m
		for _, c := range criteria {
			switch c.Key {
			case Date:
				r.sent = m.sent()
			case Subject:
				r.subject = foldASCII(BaseSubject(m.Subject))
			case From:
				r.from = foldASCII(m.From.Mailbox)
			case To:
				r.to = foldASCII(m.To.Mailbox)
			case Cc:
				r.cc = foldASCII(m.Cc.Mailbox)
			case DisplayFrom:
				r.displayFrom = foldASCII(displayName(m.From))
			case DisplayTo:
				r.displayTo = foldASCII(displayName(m.To))
			}
		}
	}
	order := make([]*sortRow, len(rows))
	for i := range rows {
		order[i] = &rows[i]
	}
	slices.SortFunc(order, func(x, y *sortRow) int {
		for _, c := range criteria {
			var r int
			switch c.Key {
			case Arrival:
				r = x.m.InternalDate.Compare(y.m.InternalDate)
			case Date:
				r = x.sent.Compare(y.sent)
			case Size:
				r = cmp.Compare(x.m.Size, y.m.Size)
			case Subject:
				r = strings.Compare(x.subject, y.subject)
			case From:
				r = strings.Compare(x.from, y.from)
			case To:
				r = strings.Compare(x.to, y.to)
			case Cc:
				r = strings.Compare(x.cc, y.cc)
			case DisplayFrom:
				r = strings.Compare(x.displayFrom, y.displayFrom)
			case DisplayTo:
				r = strings.Compare(x.displayTo, y.displayTo)
			}
			if r != 0 {
				if c.Reverse {
					return -r
				}
				return r
			}
		}
		return cmp.Compare(x.m.Seq, y.m.Seq)
	})
	out := make([]uint32, len(order))
	for i, r := range order {
		out[i] = num.of(r.m)
	}
	return out, nil
}

// sortRow is one message with its sort keys computed (folded strings).
type sortRow struct {
	m                      *Msg
	sent                   time.Time
	subject, from, to, cc  string
	displayFrom, displayTo string
}

// displayName is the RFC 5957 section 3 sort string of an address: its display name with
// encoded-words decoded, or when that is empty the addr-spec (mailbox "@" host, or the bare
// mailbox without a host), or the empty string for no address.
func displayName(a Address) string {
	if name := decodeHeader(a.Name); name != "" {
		return name
	}
	if a.Host == "" || a.Mailbox == "" {
		return a.Mailbox
	}
	return a.Mailbox + "@" + a.Host
}
