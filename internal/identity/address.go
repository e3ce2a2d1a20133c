package identity

import (
	"fmt"
	"strings"

	"epost/internal/ids"
)

// Address limits from RFC 5321 section 4.5.3.1 (local part 64 octets, domain 255, path 256,
// which leaves 254 octets for the address itself, per RFC 3696 errata 1690).
const (
	MaxAddressLen = 254
	maxLocalLen   = 64
	maxDomainLen  = 253
	maxLabelLen   = 63
)

// NormalizeAddress returns the canonical form of an email address: surrounding space removed,
// lower-cased, checked to be a plain addr-spec "local@domain".
//
// Accepted: a dot-atom local part (RFC 5322 section 3.2.3: letters, digits and
// !#$%&'*+-/=?^_`{|}~, dots only between atoms) and a domain of one or more host-name labels
// (letters, digits, inner hyphens; RFC 1035 section 2.3.1, relaxed by RFC 1123 to allow a
// leading digit). Rejected on purpose: display names, quoted local parts, comments, address
// literals ([192.0.2.1]), a trailing dot, and non-ASCII (internationalized domains must be
// given in their A-label "xn--" form; SMTPUTF8 mailboxes are not supported).
//
// Lower-casing the local part departs from RFC 5321, which lets a host treat it as case
// sensitive; every ePOST ring treats addresses case-insensitively so that "Alice@x" and
// "alice@x" can never be two identities.
func NormalizeAddress(address string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(address))
	if len(a) == 0 || len(a) > MaxAddressLen {
		return "", fmt.Errorf("%w: %q: length %d not in 1..%d", ErrBadAddress, address, len(a), MaxAddressLen)
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return "", fmt.Errorf("%w: %q has no '@domain'", ErrBadAddress, address)
	}
	local, domain := a[:at], a[at+1:]
	if err := checkLocal(local); err != nil {
		return "", fmt.Errorf("%w: %q: %s", ErrBadAddress, address, err)
	}
	if err := checkDomain(domain); err != nil {
		return "", fmt.Errorf("%w: %q: %s", ErrBadAddress, address, err)
	}
	return a, nil
}

type addrError string

func (e addrError) Error() string { return string(e) }

func checkLocal(s string) error {
	if len(s) == 0 || len(s) > maxLocalLen {
		return addrError(fmt.Sprintf("local part length %d not in 1..%d", len(s), maxLocalLen))
	}
	prevDot := true // a leading dot is as bad as a double dot
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if prevDot {
				return addrError("local part has a leading or doubled dot")
			}
			prevDot = true
			continue
		case isAtext(c):
		default:
			return addrError(fmt.Sprintf("character %q not allowed in the local part", c))
		}
		prevDot = false
	}
	if prevDot {
		return addrError("local part ends with a dot")
	}
	return nil
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func checkDomain(s string) error {
	if len(s) == 0 || len(s) > maxDomainLen {
		return addrError(fmt.Sprintf("domain length %d not in 1..%d", len(s), maxDomainLen))
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > maxLabelLen {
			return addrError(fmt.Sprintf("domain label %q length not in 1..%d", label, maxLabelLen))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return addrError(fmt.Sprintf("domain label %q starts or ends with '-'", label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return addrError(fmt.Sprintf("character %q not allowed in the domain", c))
			}
		}
	}
	return nil
}

// recordKeyLabel separates record keys from every other hash of an address.
const recordKeyLabel = "epost/v1/identity-record-key\x00"

// RecordKey is where a user's SignedRecord is published in the ring: the ring-qualified hash of
// a domain-separated, normalized address. An address that does not normalize is hashed in its
// trimmed, lower-cased form; no CA ever signs a record for it, so a lookup simply finds nothing.
func RecordKey(ring ids.RingID, address string) ids.Key {
	a, err := NormalizeAddress(address)
	if err != nil {
		a = strings.ToLower(strings.TrimSpace(address))
	}
	return ids.Key{Ring: ring, ID: ids.Hash([]byte(recordKeyLabel + a))}
}
