package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/store"
)

// PAST operations for the control socket: what "epost object" asks of the node. They run on
// the control connection's goroutine and wait for PAST's callbacks, which arrive on the
// application queue's worker (or PAST's timer); every wait also ends when the node stops.

// ErrNodeStopping is returned by operations interrupted by Stop.
var ErrNodeStopping = errors.New("daemon: node is stopping; the operation's outcome is unknown")

// opCounters count the PAST operations started through this node (client side).
type opCounters struct {
	inserts, insertsFailed atomic.Uint64
	lookups, lookupsFailed atomic.Uint64
}

// ObjectResult is one object operation's outcome, as the control socket reports it.
type ObjectResult struct {
	Key    string `json:"key"`              // 64 hex digits (the ring is the node's)
	SHA256 string `json:"sha256,omitempty"` // of the payload inserted or retrieved
	Size   int    `json:"size"`
	Type   uint8  `json:"type,omitempty"`
	Acked  int    `json:"acked,omitempty"`  // insert: replicas that acknowledged
	Needed int    `json:"needed,omitempty"` // insert: the quorum
	// Replicas is the size of the replica set the key's root named (insert).
	Replicas int     `json:"replicas,omitempty"`
	Millis   float64 `json:"ms"`
	Error    string  `json:"error,omitempty"`
	Data     []byte  `json:"data,omitempty"` // get: the payload (base64 in JSON)
}

// pastReady returns the current PAST driver once the node has joined; before that an insert
// would only time out.
func (n *Node) pastReady() (*past.Driver, error) {
	a := n.apps.Load()
	if a == nil || !n.Ready() {
		return nil, fmt.Errorf("node has not joined the ring yet (see epost status --dir %s): retry once it is ready", n.opts.Dir)
	}
	return a.past, nil
}

// InsertContent stores payload as a content-hash object (key = SHA-256 of the payload) on its
// k replicas and waits for the outcome. The error says how many replicas acknowledged.
func (n *Node) InsertContent(payload []byte, lease time.Duration) (ObjectResult, error) {
	pd, err := n.pastReady()
	if err != nil {
		return ObjectResult{}, err
	}
	if len(payload) > past.MaxObjectSize {
		return ObjectResult{}, fmt.Errorf("object is %d bytes, more than PAST's %d: split it", len(payload), past.MaxObjectSize)
	}
	done := make(chan ObjectResult, 1)
	n.insertAsync(pd, payload, lease, func(r ObjectResult) { done <- r })
	select {
	case r := <-done:
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-n.stop:
		return ObjectResult{}, ErrNodeStopping
	}
}

// insertAsync starts an insert; cb runs exactly once, on PAST's goroutine, and must not block.
func (n *Node) insertAsync(pd *past.Driver, payload []byte, lease time.Duration, cb func(ObjectResult)) {
	if lease <= 0 {
		lease = defaultLease
	}
	obj := past.NewContent(n.rn.Descriptor.RingID, payload, time.Now().Add(lease))
	sum := sha256.Sum256(payload)
	start := time.Now()
	n.ops.inserts.Add(1)
	pd.Insert(obj, func(res past.InsertResult) {
		r := ObjectResult{Key: obj.Key.ID.String(), SHA256: hex.EncodeToString(sum[:]), Size: len(payload),
			Type: uint8(past.TypeContent), Acked: res.Acked, Needed: res.Needed, Replicas: res.Replicas,
			Millis: msSince(start)}
		if res.Err != nil {
			n.ops.insertsFailed.Add(1)
			r.Error = explainInsert(res)
		}
		cb(r)
	})
}

// explainInsert turns a failed insert into a sentence with the replica count and advice.
func explainInsert(res past.InsertResult) string {
	switch {
	case res.Replicas == 0:
		return fmt.Sprintf("insert not acknowledged: %v (the key's root never answered: is the ring converged? see epost status)", res.Err)
	case res.Acked < res.Needed:
		var why []string
		for _, r := range res.Refusals {
			if errors.Is(r.Err, past.ErrTimeout) {
				why = append(why, r.Replica.ID.Short()+": no answer")
			} else {
				why = append(why, r.Replica.ID.Short()+" refused: "+r.Err.Error())
			}
		}
		return fmt.Sprintf("insert not acknowledged: %d of %d replicas acknowledged, %d needed (%s); the object may be partly stored: insert it again",
			res.Acked, res.Replicas, res.Needed, strings.Join(why, "; "))
	}
	return "insert failed: " + res.Err.Error()
}

// defaultLease is the lease of objects inserted through the control socket without one.
const defaultLease = 30 * 24 * time.Hour

// LookupObject fetches key from the ring and checks it: a content object must hash to its key.
func (n *Node) LookupObject(key ids.Key) (ObjectResult, error) {
	pd, err := n.pastReady()
	if err != nil {
		return ObjectResult{}, err
	}
	done := make(chan ObjectResult, 1)
	n.lookupAsync(pd, key, true, func(r ObjectResult) { done <- r })
	select {
	case r := <-done:
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-n.stop:
		return ObjectResult{}, ErrNodeStopping
	}
}

// lookupAsync starts a lookup; cb runs exactly once and must not block. withData keeps the
// payload in the result.
func (n *Node) lookupAsync(pd *past.Driver, key ids.Key, withData bool, cb func(ObjectResult)) {
	start := time.Now()
	n.ops.lookups.Add(1)
	pd.Lookup(key, func(obj past.Object, err error) {
		r := ObjectResult{Key: key.ID.String(), Millis: msSince(start)}
		if err == nil {
			err = verifyObject(key, obj)
		}
		if err != nil {
			n.ops.lookupsFailed.Add(1)
			r.Error = fmt.Sprintf("lookup %s: %v", key.ID, err)
			if errors.Is(err, past.ErrNotFound) {
				r.Error += " (no replica holds it: check the key, or whether it was ever acknowledged)"
			}
			cb(r)
			return
		}
		sum := sha256.Sum256(obj.Payload)
		r.SHA256, r.Size, r.Type = hex.EncodeToString(sum[:]), len(obj.Payload), obj.Type
		if withData {
			r.Data = obj.Payload
		}
		cb(r)
	})
}

// verifyObject re-checks what a lookup returned (PAST validates too; this is the last line
// before bytes reach a user).
func verifyObject(key ids.Key, obj past.Object) error {
	if obj.Key != key {
		return fmt.Errorf("a replica answered with object %s", obj.Key.ID.Short())
	}
	if past.Type(obj.Type) == past.TypeContent && ids.Hash(obj.Payload) != key.ID {
		return past.ErrHashMismatch
	}
	return nil
}

// HeldObject is one live object in this node's own store.
type HeldObject struct {
	Key    string    `json:"key"`
	Type   uint8     `json:"type"`
	Seq    uint64    `json:"seq,omitempty"`
	Size   int64     `json:"size"`
	Expiry time.Time `json:"expiry"`
}

// Held calls f for every live object in this node's store, in key order, without touching the
// network; f returning false stops the listing.
func (n *Node) Held(f func(HeldObject) bool) error {
	n.mu.Lock()
	st := n.store
	n.mu.Unlock()
	if st == nil {
		return errors.New("the node's store is not open (node not started)")
	}
	now := time.Now()
	for meta, err := range st.Range(store.WholeRing(n.rn.Descriptor.RingID)) {
		if err != nil {
			return fmt.Errorf("list held objects: %w", err)
		}
		if meta.Expired(now) {
			continue
		}
		if !f(HeldObject{Key: meta.Key.ID.String(), Type: meta.Type, Seq: meta.Seq, Size: meta.Size, Expiry: meta.Expiry}) {
			return nil
		}
	}
	return nil
}

// ParseObjectKey reads a key as "epost object" prints it (64 hex digits) or in the full
// RING/ID form; a key of another ring is refused.
func ParseObjectKey(ring ids.RingID, s string) (ids.Key, error) {
	var k ids.Key
	var err error
	if len(s) > 2*ids.Bytes {
		k, err = ids.ParseKey(s)
	} else {
		k.Ring = ring
		k.ID, err = ids.Parse(s)
	}
	if err != nil {
		return ids.Key{}, fmt.Errorf("bad key %q: %w (want the 64 hex digits epost object put printed)", s, err)
	}
	if k.Ring != ring {
		return ids.Key{}, fmt.Errorf("key %s belongs to ring %s, this node is in ring %s", s, k.Ring.Short(), ring.Short())
	}
	return k, nil
}

// randomPayload is the size-byte payload of bulk insert i: a ChaCha8 stream seeded with the
// request's seed and i, so objects of one request differ and a run can be reproduced.
func randomPayload(seed uint64, i, size int) []byte {
	var s [32]byte
	for j := range 8 {
		s[j] = byte(seed >> (8 * j))
		s[8+j] = byte(uint64(i) >> (8 * j))
	}
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(s).Read(b) // ChaCha8.Read never fails
	return b
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
