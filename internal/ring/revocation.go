package ring

import (
	"crypto/ed25519"
	"fmt"
	"math/big"
	"strings"
	"time"

	"epost/internal/ids"
)

// RevocationList is the ring's CA-signed list of revoked certificates. It only grows, and every
// change bumps Version, so a node that learns lists from several places keeps the highest
// version and can never be rolled back to a list that forgot a revocation.
type RevocationList struct {
	Version uint64
	Issued  time.Time
	Ring    ids.RingID
	Entries []Revocation
}

// Revocation is one revoked certificate or identity. Serial revokes one certificate (node or,
// later, user record); NodeID revokes every certificate ever issued for that node key, which is
// what a stolen node needs.
type Revocation struct {
	Serial  *big.Int  // nil when the entry names a node id
	NodeID  ids.ID    // zero when the entry names a serial
	Revoked time.Time // when the CA revoked it
	Reason  string    // free text for the log, may be empty
}

type revocationListJSON struct {
	Version uint64           `json:"version"`
	Issued  time.Time        `json:"issued"`
	Ring    string           `json:"ring_id"`
	Entries []revocationJSON `json:"entries"`
}

type revocationJSON struct {
	Serial  string    `json:"serial,omitempty"`  // decimal
	NodeID  string    `json:"node_id,omitempty"` // hex
	Revoked time.Time `json:"revoked"`
	Reason  string    `json:"reason,omitempty"`
}

// IsRevoked reports whether a certificate with this serial and node id is revoked, and the
// entry that revokes it.
func (l *RevocationList) IsRevoked(serial *big.Int, node ids.ID) (Revocation, bool) {
	for _, e := range l.Entries {
		if e.Serial != nil && serial != nil && e.Serial.Cmp(serial) == 0 {
			return e, true
		}
		if !e.NodeID.IsZero() && e.NodeID == node {
			return e, true
		}
	}
	return Revocation{}, false
}

// withEntry returns a copy of l with e appended, a higher version and a new issue time.
func (l *RevocationList) withEntry(e Revocation, now time.Time) *RevocationList {
	n := &RevocationList{
		Version: l.Version + 1,
		Issued:  now.UTC().Truncate(time.Second),
		Ring:    l.Ring,
		Entries: append(append([]Revocation(nil), l.Entries...), e),
	}
	return n
}

// SignRevocations encodes l and signs it with the CA key.
func SignRevocations(caKey ed25519.PrivateKey, l *RevocationList) ([]byte, error) {
	j := revocationListJSON{Version: l.Version, Issued: l.Issued, Ring: l.Ring.String(), Entries: []revocationJSON{}}
	for _, e := range l.Entries {
		r := revocationJSON{Revoked: e.Revoked, Reason: e.Reason}
		if e.Serial != nil {
			r.Serial = e.Serial.String()
		}
		if !e.NodeID.IsZero() {
			r.NodeID = e.NodeID.String()
		}
		j.Entries = append(j.Entries, r)
	}
	return Sign(caKey, typeRevocations, j)
}

// VerifyRevocations checks the CA's signature and that the list belongs to ring.
func VerifyRevocations(caPub ed25519.PublicKey, ring ids.RingID, data []byte) (*RevocationList, error) {
	body, err := Open(caPub, typeRevocations, data)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	var j revocationListJSON
	if err := decodeStrict(body, &j); err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	r, err := ids.Parse(j.Ring)
	if err != nil {
		return nil, fmt.Errorf("revocation list: ring id: %w", err)
	}
	if r != ring {
		return nil, fmt.Errorf("revocation list: for ring %s, want %s", r.Short(), ring.Short())
	}
	l := &RevocationList{Version: j.Version, Issued: j.Issued, Ring: r}
	for i, e := range j.Entries {
		var x Revocation
		x.Revoked, x.Reason = e.Revoked, e.Reason
		if e.Serial != "" {
			s, ok := new(big.Int).SetString(e.Serial, 10)
			if !ok || s.Sign() <= 0 {
				return nil, fmt.Errorf("revocation list: entry %d: bad serial %q", i, e.Serial)
			}
			x.Serial = s
		}
		if e.NodeID != "" {
			if x.NodeID, err = ids.Parse(e.NodeID); err != nil {
				return nil, fmt.Errorf("revocation list: entry %d: %w", i, err)
			}
		}
		if x.Serial == nil && x.NodeID.IsZero() {
			return nil, fmt.Errorf("revocation list: entry %d names neither a serial nor a node id", i)
		}
		l.Entries = append(l.Entries, x)
	}
	return l, nil
}

// ParseSerial reads a certificate serial in decimal (as this package prints it) or in hex with
// a 0x prefix or colons (as openssl prints it).
func ParseSerial(s string) (*big.Int, error) {
	n := new(big.Int)
	var ok bool
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		_, ok = n.SetString(s[2:], 16)
	case strings.Contains(s, ":"):
		_, ok = n.SetString(strings.ReplaceAll(s, ":", ""), 16)
	default:
		_, ok = n.SetString(s, 10)
	}
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("serial %q: want a positive decimal number, or hex with 0x prefix", s)
	}
	return n, nil
}
