package post

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/wire"
)

// A notification tells a recipient that a message is waiting and how to read it: the parts'
// references (locations and content keys) and who sent it. The sender signs it with its
// certified signing key, with the recipient's address inside what is signed, then encrypts it
// to the recipient's HPKE key (RFC 9180 base mode does not authenticate the sender; the
// signature inside does, and cannot be re-encrypted to someone else because the recipient is
// named in it). The sender's CA-signed record travels inside, so the recipient can check the
// sender's key against the ring CA and the revocation list without a round trip.

// Limits of decoded notifications.
const (
	MaxParts        = 64
	maxNotification = 400 << 10
	notificationV   = 1 // parts stored in the ring by the sender
	notificationV2  = 2 // parts carried inside (Carried)
	// MaxCarried bounds the bytes of chunks a notification carries (Config.CarryMax is at
	// most this).
	MaxCarried        = 64 << 10
	contextNotify     = "epost/v1/post-notification"
	hpkeInfoNotify    = "epost/v1/post-notification"
	maxRecordEncoding = 2048
)

// Errors of notification handling.
var (
	ErrMalformed     = errors.New("post: malformed")
	ErrUnknownSender = errors.New("post: sender's record is not certified by the ring CA")
	ErrRevokedSender = errors.New("post: sender's record is revoked")
	ErrNotForUs      = errors.New("post: notification is addressed to someone else")
)

// NotificationID names one notification (one message to one recipient).
type NotificationID [16]byte

// Notification is the plaintext a recipient gets.
type Notification struct {
	ID           NotificationID
	From, To     string // normalized addresses
	Time         time.Time
	Size         uint64 // sum of the parts' sizes
	Parts        []content.Ref
	SenderRecord identity.SignedRecord
	// Carried, when not empty, holds the ciphertext of every chunk of Parts: the sender did
	// not store them, and the recipient stores them in the ring before its receipt (see
	// carry.go). Which chunk is which follows from its hash (its PAST key).
	Carried [][]byte

	foreign bool // the sender is of another ring (verified under its trust): parts sealed with its secret
}

func (n *Notification) encode() ([]byte, error) {
	if len(n.Parts) > MaxParts {
		return nil, fmt.Errorf("%w: %d parts, at most %d", ErrMalformed, len(n.Parts), MaxParts)
	}
	w := wire.Writer{}
	if len(n.Carried) > 0 {
		w.U8(notificationV2)
	} else {
		w.U8(notificationV)
	}
	w.B = append(w.B, n.ID[:]...)
	w.String(n.From)
	w.String(n.To)
	w.I64(n.Time.UnixNano())
	w.U64(n.Size)
	w.Uvarint(uint64(len(n.Parts)))
	for _, p := range n.Parts {
		b, err := p.MarshalBinary()
		if err != nil {
			return nil, err
		}
		w.Bytes(b)
	}
	w.Bytes(n.SenderRecord.Encode())
	if len(n.Carried) > 0 {
		w.Uvarint(uint64(len(n.Carried)))
		for _, c := range n.Carried {
			w.Bytes(c)
		}
	}
	return w.B, nil
}

func readID(r *wire.Reader) (id NotificationID) {
	for i := range id {
		id[i] = r.U8()
	}
	return id
}

// decodeNotification parses encode's output; it never panics.
func decodeNotification(b []byte) (*Notification, error) {
	if len(b) > maxNotification {
		return nil, fmt.Errorf("%w: notification of %d bytes", ErrMalformed, len(b))
	}
	r := wire.NewReader(b)
	v := r.U8()
	if r.Err() == nil && v != notificationV && v != notificationV2 {
		return nil, fmt.Errorf("%w: notification version %d", ErrMalformed, v)
	}
	n := &Notification{ID: readID(r), From: r.String(254, "from"), To: r.String(254, "to")}
	n.Time = time.Unix(0, r.I64()).UTC()
	n.Size = r.U64()
	cnt := r.Count(MaxParts, 4, "parts")
	for i := 0; i < cnt && r.Err() == nil; i++ {
		raw := r.Bytes(maxNotification, "part")
		if r.Err() != nil {
			break
		}
		ref, err := content.UnmarshalRef(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: part %d: %v", ErrMalformed, i, err)
		}
		n.Parts = append(n.Parts, ref)
	}
	rec := r.Bytes(maxRecordEncoding, "sender record")
	if v == notificationV2 {
		cnt := r.Count(maxCarriedChunks, 1, "carried chunks")
		total := 0
		for i := 0; i < cnt && r.Err() == nil; i++ {
			c := r.Bytes(MaxCarried, "carried chunk")
			total += len(c)
			n.Carried = append(n.Carried, c)
		}
		if r.Err() == nil && (cnt == 0 || total > MaxCarried) {
			return nil, fmt.Errorf("%w: %d carried chunks of %d bytes", ErrMalformed, cnt, total)
		}
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: notification: %v", ErrMalformed, err)
	}
	sr, err := identity.DecodeSignedRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("%w: sender record: %v", ErrMalformed, err)
	}
	n.SenderRecord = sr
	var sum uint64
	for _, p := range n.Parts {
		sum += p.Size
	}
	if sum != n.Size {
		return nil, fmt.Errorf("%w: parts sum to %d bytes, size says %d", ErrMalformed, sum, n.Size)
	}
	return n, nil
}

// sealNotification signs n with the sender's keys and encrypts it to the recipient's HPKE key.
// The bundle is bound (as HPKE aad) to the ring and the notification id, which travel in clear
// next to it.
func sealNotification(n *Notification, sender *identity.Keys, ring ids.RingID, recipientEnc []byte) ([]byte, error) {
	body, err := n.encode()
	if err != nil {
		return nil, err
	}
	sig, err := identity.Sign(sender, contextNotify, body)
	if err != nil {
		return nil, err
	}
	w := wire.Writer{}
	w.Bytes(body)
	w.Bytes(sig)
	return identity.SealTo(recipientEnc, []byte(hpkeInfoNotify), w.B, notifyAAD(ring, n.ID))
}

func notifyAAD(ring ids.RingID, id NotificationID) []byte {
	b := append([]byte("epost/v1/post-notification\x00"), ring[:]...)
	return append(b, id[:]...)
}

// SenderCheck verifies a sender's record: the CA's signature, validity, revocation.
type SenderCheck struct {
	Ring    ids.RingID
	CA      ed25519.PublicKey
	Revoked func(serial uint64) bool
	Cache   *identity.RecordCache // nil: every record's signature is checked again
}

// openNotification decrypts a bundle with the recipient's keys and checks everything: the
// signature by the sender's certified key (record verified against the CA and the
// revocation list, for the sender's address), the recipient address and the id.
func openNotification(bundle []byte, id NotificationID, keys *identity.Keys, recipient string, chk *SenderCheck, now time.Time) (*Notification, error) {
	n, body, sig, err := openSealed(bundle, id, keys, recipient, chk.Ring)
	if err != nil {
		return nil, err
	}
	if err := verifySender(n, body, sig, chk, now); err != nil {
		return nil, err
	}
	return n, nil
}

// openSealed decrypts a bundle sealed for ring (the recipient's) and checks its shape, the
// recipient address and the id; the sender is not checked yet (verifySender, verifyForeign).
func openSealed(bundle []byte, id NotificationID, keys *identity.Keys, recipient string, ring ids.RingID) (n *Notification, body, sig []byte, err error) {
	pt, err := keys.Open(bundle, []byte(hpkeInfoNotify), notifyAAD(ring, id))
	if err != nil {
		return nil, nil, nil, err
	}
	r := wire.NewReader(pt)
	body = r.Bytes(maxNotification, "body")
	sig = r.Bytes(ed25519.SignatureSize, "signature")
	if err := r.Done(); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: signed notification: %v", ErrMalformed, err)
	}
	if n, err = decodeNotification(body); err != nil {
		return nil, nil, nil, err
	}
	if n.To != recipient {
		return nil, nil, nil, fmt.Errorf("%w: to %s, we are %s", ErrNotForUs, n.To, recipient)
	}
	if n.ID != id {
		return nil, nil, nil, fmt.Errorf("%w: id inside differs from the id outside", ErrMalformed)
	}
	return n, body, sig, nil
}

// recordRing is the ring a signed record claims (unverified: which trust to verify it under).
func recordRing(sr identity.SignedRecord) (ids.RingID, error) {
	rec, err := identity.DecodeRecord(sr.Body)
	if err != nil {
		return ids.RingID{}, fmt.Errorf("%w: sender record: %v", ErrMalformed, err)
	}
	return rec.Ring, nil
}

// verifySender checks a notification's sender under this ring's CA and revocations.
func verifySender(n *Notification, body, sig []byte, chk *SenderCheck, now time.Time) error {
	rec, err := chk.Cache.Verify(n.SenderRecord, chk.CA, now, chk.Revoked)
	switch {
	case errors.Is(err, identity.ErrRevoked):
		return fmt.Errorf("%w: %s: %v", ErrRevokedSender, n.From, err)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrUnknownSender, n.From, err)
	}
	if rec.Address != n.From || rec.Ring != chk.Ring {
		return fmt.Errorf("%w: record is for %s, notification claims %s", ErrUnknownSender, rec.Address, n.From)
	}
	if err := identity.Verify(rec.Keys.Signing, contextNotify, body, sig); err != nil {
		return fmt.Errorf("%w: signature of %s: %v", ErrUnknownSender, n.From, err)
	}
	return nil
}

// Filed is what the recipient's INBOX log holds for a message, and what OnFiled reports.
type Filed struct {
	User    string // recipient (local user)
	ID      NotificationID
	From    string
	Time    time.Time // the sender's time
	Size    uint64
	Parts   []content.Ref
	FiledAt time.Time
	// Foreign: the sender is of another ring, whose secret sealed the parts; read them with
	// GetForeign (no convergence check). Entry version 2 carries it.
	Foreign bool
}

const (
	filedV  = 1
	filedV2 = 2 // flags byte after the version
)

// EncodeFiled is the INBOX entry body of a filed message.
func EncodeFiled(f *Filed) []byte {
	w := wire.Writer{}
	if f.Foreign {
		w.U8(filedV2)
		w.U8(remoteFiledFlags)
	} else {
		w.U8(filedV)
	}
	w.B = append(w.B, f.ID[:]...)
	w.String(f.From)
	w.I64(f.Time.UnixNano())
	w.I64(f.FiledAt.UnixNano())
	w.U64(f.Size)
	w.Uvarint(uint64(len(f.Parts)))
	for _, p := range f.Parts {
		b, _ := p.MarshalBinary() // parts come from a decoded, validated notification
		w.Bytes(b)
	}
	return w.B
}

// DecodeFiled parses an INBOX entry body.
func DecodeFiled(b []byte) (*Filed, error) {
	r := wire.NewReader(b)
	v := r.U8()
	if r.Err() == nil && v != filedV && v != filedV2 {
		return nil, fmt.Errorf("%w: filed entry version %d", ErrMalformed, v)
	}
	var flags uint8
	if v == filedV2 {
		if flags = r.U8(); r.Err() == nil && flags&^remoteFiledFlags != 0 {
			return nil, fmt.Errorf("%w: filed entry flags %#x", ErrMalformed, flags)
		}
	}
	f := &Filed{ID: readID(r), From: r.String(254, "from"), Foreign: flags&remoteFiledFlags != 0}
	f.Time = time.Unix(0, r.I64()).UTC()
	f.FiledAt = time.Unix(0, r.I64()).UTC()
	f.Size = r.U64()
	cnt := r.Count(MaxParts, 4, "parts")
	for i := 0; i < cnt && r.Err() == nil; i++ {
		raw := r.Bytes(maxNotification, "part")
		if r.Err() != nil {
			break
		}
		ref, err := content.UnmarshalRef(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: part %d: %v", ErrMalformed, i, err)
		}
		f.Parts = append(f.Parts, ref)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: filed entry: %v", ErrMalformed, err)
	}
	return f, nil
}
