package ring

import (
	"errors"
	"fmt"
	"strings"

	"epost/internal/ids"
)

// Federation's DNS record. Each mail domain D of a federated ring publishes
//
//	_epost.D. TXT "v=epost1; ring=<64 lower-case hex digits of the ring id>"
//
// A ring's id is its CA key's (ids.RingIDOfCA), so the record names the one CA whose
// certificates speak for D's addresses. Tags are separated by ';', whitespace around them is
// ignored, and so are tags this version does not know; the strings of one TXT record are joined
// before parsing (a TXT string is at most 255 bytes).

// DNSRecordVersion is the value of the record's "v" tag.
const DNSRecordVersion = "epost1"

// ErrNoDNSRecord: none of the TXT records is an ePOST record (the domain is not federated).
var ErrNoDNSRecord = errors.New("ring: no v=epost1 TXT record")

// DNSName is the owner name of domain's record.
func DNSName(domain string) string {
	return "_epost." + strings.TrimSuffix(strings.ToLower(domain), ".") + "."
}

// DNSValue is the TXT value naming ring id.
func DNSValue(id ids.RingID) string { return "v=" + DNSRecordVersion + "; ring=" + id.String() }

// DNSRecords are the zone-file lines a ring's administrator publishes, one per domain.
func (d *Descriptor) DNSRecords() []string {
	out := make([]string, 0, len(d.Domains))
	for _, dom := range d.Domains {
		out = append(out, fmt.Sprintf("%s TXT %q", DNSName(dom), DNSValue(d.RingID)))
	}
	return out
}

// ParseDNSRecords finds the ring id that a domain's TXT records name. Each element of txts is
// one record's strings, joined. Records without "v=epost1" are ignored (ErrNoDNSRecord when
// none is left); an ePOST record without a valid ring tag, or several naming different rings,
// is an error: the domain then confirms no ring.
func ParseDNSRecords(txts []string) (ids.RingID, error) {
	var found []ids.RingID
	for _, txt := range txts {
		tags := map[string]string{}
		for _, part := range strings.Split(txt, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue
			}
			k = strings.ToLower(strings.TrimSpace(k))
			if _, dup := tags[k]; !dup {
				tags[k] = strings.TrimSpace(v)
			}
		}
		if tags["v"] != DNSRecordVersion {
			continue
		}
		id, err := ids.Parse(tags["ring"])
		if err != nil || id == ids.GlobalRing {
			return ids.RingID{}, fmt.Errorf("ring: v=epost1 TXT record %q: ring tag must be 64 hex digits of a ring id", txt)
		}
		found = append(found, id)
	}
	if len(found) == 0 {
		return ids.RingID{}, ErrNoDNSRecord
	}
	for _, id := range found[1:] {
		if id != found[0] {
			return ids.RingID{}, fmt.Errorf("ring: v=epost1 TXT records name two rings, %s and %s", found[0].Short(), id.Short())
		}
	}
	return found[0], nil
}
