package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// RecordCache remembers which signed records carry a good CA signature, so that a record
// seen again (the recipient of every message, the sender of every notification) is checked
// for validity and revocation only: no signature verification and no decoding. A nil
// *RecordCache verifies everything in full. It is safe for concurrent use.
type RecordCache struct {
	mu    sync.Mutex
	limit int
	m     map[[32]byte]*Record
}

// NewRecordCache returns a cache of at most limit verified records (at least 1); when it is
// full it starts over (a record costs one more verification).
func NewRecordCache(limit int) *RecordCache {
	return &RecordCache{limit: max(1, limit), m: map[[32]byte]*Record{}}
}

// Verify is SignedRecord.Verify through the cache. The record returned is the caller's own
// copy; its key slices are shared and must not be modified.
func (c *RecordCache) Verify(s SignedRecord, caPub ed25519.PublicKey, now time.Time, revoked func(serial uint64) bool) (*Record, error) {
	if c == nil {
		return s.Verify(caPub, now, revoked)
	}
	h := sha256.New()
	h.Write(caPub)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s.Body))))
	h.Write(s.Body)
	h.Write(s.Signature)
	var k [32]byte
	h.Sum(k[:0])
	c.mu.Lock()
	r, ok := c.m[k]
	c.mu.Unlock()
	if !ok {
		var err error
		if r, err = s.verifySignature(caPub); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if len(c.m) >= c.limit {
			clear(c.m)
		}
		c.m[k] = r
		c.mu.Unlock()
	}
	// Validity and revocation depend on now and may have changed since the signature was checked.
	if err := r.checkValid(now, revoked); err != nil {
		return nil, err
	}
	cp := *r
	return &cp, nil
}
