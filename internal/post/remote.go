package post

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/wire"
)

// Mail between rings (docs/gateway-design.md §7). A user of ring A writing to users of ring B
// seals the message for B on A's side: the parts are encrypted with A's convergence secret but
// for B's ring id (their locations are keys of ring B, and B's aad binds them), and each
// recipient's notification is signed by the sender and sealed to the recipient with B's ring
// id in its aad. The result, a RemoteBundle, is all ciphertext but the recipients' addresses:
// gateways carry it without reading it. In ring B, a gateway's DeliverRemote stores the chunks
// and each recipient's pending notification in B's PAST, as a local sender's node would, and
// pushes them; from there POST delivers as within a ring.
//
// The recipient's node cannot verify a sender of ring A with its own CA. Config.ForeignSender
// (the daemon's directory) names ring A's trust for the sender's address, checking that the
// address's domain belongs to ring A (DNS), so that no other ring's CA speaks for A's users;
// the record is then checked under A's CA and revocations. Parts sealed with A's secret are
// read with no secret in B (the key commitment still fixes each chunk's one plaintext):
// Filed.Foreign says so.

// RingTrust is another ring's trust anchor, from its verified bundle (ring.VerifyBundle).
type RingTrust struct {
	Ring    ids.RingID
	CA      ed25519.PublicKey
	Revoked func(serial uint64) bool
}

// RemoteNote is one recipient's sealed notification in a RemoteBundle.
type RemoteNote struct {
	To     string // normalized address in the destination ring
	ID     NotificationID
	Sealed []byte
}

// RemoteBundle is a message for users of another ring.
type RemoteBundle struct {
	Dest   ids.RingID
	Chunks [][]byte // the ciphertext of every chunk of the parts, keyed in Dest
	Notes  []RemoteNote
}

const (
	remoteBundleV    = 1
	maxRemoteNotes   = 100
	maxRemoteChunk   = content.MaxChunk
	maxRemoteChunks  = 4096
	maxRemoteSealed  = maxNotification + 1024
	MaxRemoteBundle  = 64 << 20 // bytes of chunks a bundle may carry
	remoteFiledFlags = 1        // Filed flags: the parts are sealed with another ring's secret
)

// Encode is the bundle's wire form.
func (b *RemoteBundle) Encode() []byte {
	var w wire.Writer
	w.U8(remoteBundleV)
	w.ID(b.Dest)
	w.Uvarint(uint64(len(b.Chunks)))
	for _, c := range b.Chunks {
		w.Bytes(c)
	}
	w.Uvarint(uint64(len(b.Notes)))
	for _, n := range b.Notes {
		w.String(n.To)
		w.B = append(w.B, n.ID[:]...)
		w.Bytes(n.Sealed)
	}
	return w.B
}

// DecodeRemoteBundle parses Encode's output, within the bounds; it never panics.
func DecodeRemoteBundle(data []byte) (*RemoteBundle, error) {
	r := wire.NewReader(data)
	if v := r.U8(); r.Err() == nil && v != remoteBundleV {
		return nil, fmt.Errorf("%w: remote bundle version %d", ErrMalformed, v)
	}
	b := &RemoteBundle{Dest: r.ID()}
	total := 0
	cnt := r.Count(maxRemoteChunks, 1, "chunks")
	for i := 0; i < cnt && r.Err() == nil; i++ {
		c := r.Bytes(maxRemoteChunk, "chunk")
		total += len(c)
		b.Chunks = append(b.Chunks, c)
	}
	cnt = r.Count(maxRemoteNotes, 20, "notes")
	for i := 0; i < cnt && r.Err() == nil; i++ {
		n := RemoteNote{To: r.String(254, "recipient"), ID: readID(r)}
		n.Sealed = r.Bytes(maxRemoteSealed, "sealed notification")
		b.Notes = append(b.Notes, n)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: remote bundle: %v", ErrMalformed, err)
	}
	if total > MaxRemoteBundle || len(b.Notes) == 0 {
		return nil, fmt.Errorf("%w: remote bundle of %d chunk bytes for %d recipients", ErrMalformed, total, len(b.Notes))
	}
	return b, nil
}

// SealRemote seals parts from u to recipients of another ring (recs, whose records the caller
// verified under that ring's CA), one notification per recipient with the ids given (fixed
// here, so that every copy of the bundle lands on the same pending objects: exactly once).
func (u *User) SealRemote(dest ids.RingID, recs []*identity.Record, nids []NotificationID, parts [][]byte) (*RemoteBundle, error) {
	n := u.n
	if dest == n.cfg.Ring {
		return nil, errors.New("post: SealRemote to this node's own ring")
	}
	if len(recs) == 0 || len(recs) != len(nids) || len(recs) > maxRemoteNotes {
		return nil, fmt.Errorf("post: %d recipients, %d ids (at most %d)", len(recs), len(nids), maxRemoteNotes)
	}
	if len(parts) > MaxParts {
		return nil, fmt.Errorf("%w: %d parts, at most %d", ErrMalformed, len(parts), MaxParts)
	}
	b := &RemoteBundle{Dest: dest}
	refs := make([]content.Ref, 0, len(parts))
	var size uint64
	total := 0
	for _, p := range parts {
		chunks, ref, err := content.EncryptChunked(n.cfg.Secret, dest, p, n.cfg.ChunkSize)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref)
		size += uint64(len(p))
		for _, c := range chunks {
			b.Chunks = append(b.Chunks, c.Ciphertext)
			total += len(c.Ciphertext)
		}
	}
	if total > MaxRemoteBundle {
		return nil, fmt.Errorf("post: message of %d bytes is larger than a remote bundle carries (%d)", total, MaxRemoteBundle)
	}
	for i, rec := range recs {
		if rec.Ring != dest {
			return nil, fmt.Errorf("post: record of %s is for ring %s, not %s", rec.Address, rec.Ring.Short(), dest.Short())
		}
		note := &Notification{ID: nids[i], From: u.addr, To: rec.Address, Time: n.now(), Size: size, Parts: refs, SenderRecord: u.record}
		sealed, err := sealNotification(note, u.keys, dest, rec.Keys.Encryption)
		if err != nil {
			return nil, err
		}
		b.Notes = append(b.Notes, RemoteNote{To: rec.Address, ID: nids[i], Sealed: sealed})
	}
	return b, nil
}

// DeliverRemote stores a bundle from another ring in this ring and pushes its notifications,
// on a node of the destination ring (a gateway that took the hand-off). cb gets one Result
// per note, once the chunks and that recipient's pending notification are quorum-stored
// (Accepted), or why not: an unknown or revoked recipient is permanent, anything else is
// Failed and may be retried with the same bundle (the same bytes land on the same keys).
func (n *Node) DeliverRemote(b *RemoteBundle, cb func([]Result)) {
	res := make([]Result, len(b.Notes))
	if b.Dest != n.cfg.Ring {
		for i, note := range b.Notes {
			res[i] = Result{To: note.To, ID: note.ID, Status: Failed, Err: fmt.Errorf("post: bundle for ring %s delivered in ring %s", b.Dest.Short(), n.cfg.Ring.Short())}
		}
		cb(res)
		return
	}
	lease := n.now().Add(n.cfg.ContentLease)
	var chunkErr error
	stored := newJoin(len(b.Chunks), func() {
		j := newJoin(len(b.Notes), func() { cb(res) })
		for i, note := range b.Notes {
			if chunkErr != nil {
				res[i] = Result{To: note.To, ID: note.ID, Status: Failed, Err: chunkErr}
				j.one()
				continue
			}
			n.LookupRecord(note.To, func(rec *identity.Record, _ identity.SignedRecord, err error) {
				switch {
				case errors.Is(err, ErrRevokedRecipient):
					res[i] = Result{To: note.To, ID: note.ID, Status: RevokedRecipient, Err: err}
				case errors.Is(err, ErrUnknownRecipient):
					res[i] = Result{To: note.To, ID: note.ID, Status: UnknownRecipient, Err: err}
				case err != nil:
					res[i] = Result{To: note.To, ID: note.ID, Status: Failed, Err: err}
				}
				if err != nil {
					j.one()
					return
				}
				n.storePending(rec, note.ID, note.Sealed, func(r Result) {
					n.mu.Lock()
					res[i] = r
					n.mu.Unlock()
					j.one()
				})
			})
		}
	})
	for _, c := range b.Chunks {
		obj := past.NewContent(n.cfg.Ring, c, lease)
		n.st.InsertDedupe(obj, func(r past.InsertResult) {
			if r.Err != nil {
				n.mu.Lock()
				if chunkErr == nil {
					chunkErr = fmt.Errorf("post: storing a chunk of a remote message: %w", r.Err)
				}
				n.mu.Unlock()
			}
			stored.one()
		})
	}
}

// verifyForeign checks a notification's sender against another ring's trust: the record
// carries that ring's CA signature, is valid and not revoked, names the sender's address and
// that ring, and its key signed the notification.
func verifyForeign(note *Notification, body, sig []byte, t *RingTrust, cache *identity.RecordCache, now time.Time) error {
	rec, err := cache.Verify(note.SenderRecord, t.CA, now, t.Revoked)
	switch {
	case errors.Is(err, identity.ErrRevoked):
		return fmt.Errorf("%w: %s: %v", ErrRevokedSender, note.From, err)
	case err != nil:
		return fmt.Errorf("%w: %s (ring %s): %v", ErrUnknownSender, note.From, t.Ring.Short(), err)
	}
	if rec.Address != note.From || rec.Ring != t.Ring {
		return fmt.Errorf("%w: record is for %s of ring %s, notification claims %s", ErrUnknownSender, rec.Address, rec.Ring.Short(), note.From)
	}
	if err := identity.Verify(rec.Keys.Signing, contextNotify, body, sig); err != nil {
		return fmt.Errorf("%w: signature of %s: %v", ErrUnknownSender, note.From, err)
	}
	return nil
}
