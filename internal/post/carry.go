package post

import (
	"fmt"
	"slices"
	"time"

	"epost/internal/content"
	"epost/internal/ids"
	"epost/internal/past"
)

// Carried parts. A small message (its parts at most Config.CarryMax bytes, and at most
// MaxCarried bytes over all its recipients) is not stored in the ring by the sender: the
// encrypted chunks travel inside each recipient's notification (Notification.Carried), so the
// sender's 250 waits for one insert (the pending notification on its replicas) instead of
// two in a row (the parts, then the notification), and the replicas sync once per message
// instead of twice.
//
// The recipient's node stores the carried chunks in the ring itself, as content objects
// (the same keys and bytes the sender would have stored), and keeps them readable locally
// until they are stored. The order of durable steps keeps every promise of a normal delivery:
//
//   - the sender's 250 still means the whole message is on a quorum of replicas: the pending
//     copy holds the chunks;
//   - the recipient journals the chunks with the entry (Journal.Record), so a crash before
//     they are stored replays them from the journal;
//   - the receipt (the drop of the pending copy) is sent only after the chunks are stored
//     (afterLogged), so until then the pending copy still has them; a pending copy
//     re-delivered after the entry is logged has its chunks stored before it is dropped
//     again (a node that lost its disk between the two).
//
// The chunks are stored in batches (CarryBatch): the INBOX head write acknowledges filings
// in groups, and their chunks' inserts reach each replica together and share its fsync.

// maxCarriedChunks bounds the chunks one notification carries.
const maxCarriedChunks = MaxParts

// carryable reports whether parts of size bytes sent to recipients recipients travel inside
// the notifications.
func (n *Node) carryable(recipients int, parts [][]byte) bool {
	if n.cfg.CarryMax <= 0 || recipients < 1 {
		return false
	}
	size, chunks := 0, 0
	for _, p := range parts {
		size += len(p)
		chunks += max(1, (len(p)+n.cfg.ChunkSize-1)/n.cfg.ChunkSize)
	}
	return size <= n.cfg.CarryMax && recipients*(size+chunks*content.Overhead) <= MaxCarried && chunks <= maxCarriedChunks
}

// maxInlineTotal bounds the bytes of one message's parts that travel inside their references
// (each at most content.MaxInline): they are in every recipient's notification and INBOX entry.
const maxInlineTotal = 8 << 10

// inlineParts marks the parts of a message that is not carried which travel inside their
// references instead of being stored (content.InlineRef): the small ones, smallest first,
// within maxInlineTotal. A 50 KB mail with an attachment is five pieces (mailstore's split),
// four of them a few hundred bytes to a kilobyte: as objects each was inserted on three
// replicas, fetched by the recipient and archived on its own.
func (n *Node) inlineParts(parts [][]byte) []bool {
	inline := make([]bool, len(parts))
	order := make([]int, 0, len(parts))
	for i, p := range parts {
		if len(p) <= content.MaxInline {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(parts[a]) - len(parts[b]) })
	total := 0
	for _, i := range order {
		if total+len(parts[i]) > maxInlineTotal {
			break
		}
		total += len(parts[i])
		inline[i] = true
	}
	return inline
}

// sealParts encrypts parts as Put would, without storing them: the refs, and every chunk's
// ciphertext in order.
func (n *Node) sealParts(parts [][]byte) ([]content.Ref, [][]byte, error) {
	refs := make([]content.Ref, 0, len(parts))
	var carried [][]byte
	for _, p := range parts {
		chunks, ref, err := content.EncryptChunked(n.cfg.Secret, n.cfg.Ring, p, n.cfg.ChunkSize)
		if err != nil {
			return nil, nil, err
		}
		refs = append(refs, ref)
		for _, c := range chunks {
			carried = append(carried, c.Ciphertext)
		}
	}
	return refs, carried, nil
}

// carriedObjects turns a notification's carried chunks into the content objects to store,
// checking that they are exactly the chunks its parts name: every chunk location is carried,
// and nothing else is. A notification without carried chunks gives none. The objects' lease
// is set when they are stored.
func carriedObjects(ring ids.RingID, parts []content.Ref, carried [][]byte) ([]past.Object, error) {
	if len(carried) == 0 {
		return nil, nil
	}
	byKey := make(map[ids.Key]past.Object, len(carried))
	for _, c := range carried {
		obj := past.NewContent(ring, c, time.Time{})
		byKey[obj.Key] = obj
	}
	var objs []past.Object
	named := map[ids.Key]bool{}
	for _, p := range parts {
		for _, e := range p.Chunks {
			obj, ok := byKey[e.Location]
			if !ok {
				return nil, fmt.Errorf("%w: chunk %s is not carried", ErrMalformed, e.Location)
			}
			if !named[e.Location] {
				named[e.Location] = true
				objs = append(objs, obj)
			}
		}
	}
	if len(named) != len(byKey) {
		return nil, fmt.Errorf("%w: %d carried chunks, the parts name %d", ErrMalformed, len(byKey), len(named))
	}
	return objs, nil
}

// holdCarried makes objs readable on this node (Get) until releaseCarried.
func (n *Node) holdCarried(objs []past.Object) {
	if len(objs) == 0 {
		return
	}
	n.mu.Lock()
	for _, o := range objs {
		c := n.carried[o.Key]
		c.payload = o.Payload
		c.holds++
		n.carried[o.Key] = c
	}
	n.mu.Unlock()
}

func (n *Node) releaseCarried(objs []past.Object) {
	if len(objs) == 0 {
		return
	}
	n.mu.Lock()
	for _, o := range objs {
		c, ok := n.carried[o.Key]
		if !ok {
			continue
		}
		if c.holds--; c.holds <= 0 {
			delete(n.carried, o.Key)
		} else {
			n.carried[o.Key] = c
		}
	}
	n.mu.Unlock()
}

// carriedPayload returns a held carried chunk.
func (n *Node) carriedPayload(key ids.Key) ([]byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.carried[key]
	return c.payload, ok
}

type carriedChunk struct {
	payload []byte
	holds   int
}

type carrySave struct {
	objs  []past.Object
	tries int
	cb    func(error)
}

// storeCarried stores objs in the ring (with the content lease from now), batched with other
// filings' chunks over CarryBatch, retrying failures up to tries times RetryDelay apart; cb
// hears nil once every object is quorum-stored, or the last error.
func (n *Node) storeCarried(objs []past.Object, tries int, cb func(error)) {
	if len(objs) == 0 {
		cb(nil)
		return
	}
	n.mu.Lock()
	n.carryQ = append(n.carryQ, carrySave{objs: objs, tries: tries, cb: cb})
	queued := 0
	for _, s := range n.carryQ {
		queued += len(s.objs)
	}
	arm := !n.carryArmed && queued < maxCarriedChunks
	flush := queued >= maxCarriedChunks
	if arm {
		n.carryArmed = true
	}
	n.mu.Unlock()
	switch {
	case flush:
		n.flushCarried()
	case arm:
		n.after(n.cfg.CarryBatch, n.flushCarried)
	}
}

// flushCarried sends every queued save's inserts at once.
func (n *Node) flushCarried() {
	n.mu.Lock()
	q := n.carryQ
	n.carryQ = nil
	n.carryArmed = false
	n.mu.Unlock()
	lease := n.now().Add(n.cfg.ContentLease)
	for _, s := range q {
		var first error
		j := newJoin(len(s.objs), func() {
			switch {
			case first == nil:
				s.cb(nil)
			case s.tries > 1:
				n.after(n.cfg.RetryDelay, func() { n.storeCarried(s.objs, s.tries-1, s.cb) })
			default:
				s.cb(first)
			}
		})
		for _, o := range s.objs {
			o.Expiry = lease
			n.st.Insert(o, func(r past.InsertResult) {
				n.mu.Lock()
				if r.Err != nil {
					n.stats.ChunksPutFailed++
					if first == nil {
						first = fmt.Errorf("post: store carried chunk %s: %w", o.Key, r.Err)
					}
				} else {
					n.stats.ChunksPut++
				}
				n.mu.Unlock()
				j.one()
			})
		}
	}
}

// cloneAll copies each slice of bs.
func cloneAll(bs [][]byte) [][]byte {
	if bs == nil {
		return nil
	}
	out := make([][]byte, len(bs))
	for i, b := range bs {
		out[i] = slices.Clone(b)
	}
	return out
}
