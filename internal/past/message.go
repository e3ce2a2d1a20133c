package past

import (
	"errors"
	"fmt"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
	"epost/internal/wire"
)

// Every PAST payload starts with appTag (appmux.TagPast, shared with Scribe and POST on one
// Pastry node through package appmux) and a version.
const (
	appTag      = appmux.TagPast
	wireVersion = 1
)

// Bounds on decoded messages. They let the decoder refuse a forged length before allocating.
const (
	maxAddrLen     = 256
	maxHandles     = 64
	maxKeys        = 1000 // ePOST: at most 1,000 keys per maintenance exchange
	maxObjects     = 1000
	maxDetail      = 256
	maxProof       = 256
	maxBloomBytes  = 64 << 10
	maxAuxLen      = store.DefaultMaxAux
	minHandleLen   = ids.Bytes + 1
	minObjectLen   = 2*ids.Bytes + 1 + 8 + 8 + 1 + 1
	minKeySeqLen   = ids.Bytes + 1
	maxMessageSize = pastry.MaxPayload
)

type msgType uint8

// Message types. Routed ones are marked; the others are sent directly.
const (
	mLocate       msgType = iota + 1 // routed: who are the replicas of Key?
	mLocateReply                     // root -> client: Handles are the replica set
	mStore                           // client -> replica: store Object
	mStoreAck                        // replica -> client: Code after the durable write
	mLookup                          // routed or direct: send me Key
	mLookupReply                     // Code, Object if found, else the replica set in Handles
	mRefresh                         // routed (Flag: root, pass it on) or direct: extend leases
	mRefreshReply                    // root -> client: Code for Key
	mSyncRequest                     // maintenance: my arc, count, digest, Bloom filter of (key, seq)
	mSyncOffer                       // maintenance: (key, seq) on your arc your filter lacks
	mFetch                           // maintenance: send me these keys
	mFetchReply                      // maintenance: objects
	mDelete                          // routed (Flag: root, pass it on) or direct: drop Key, authorised by Proof
	mDeleteReply                     // root -> client: Code for Key
	mLast
)

var msgTypeNames = [...]string{"?", "locate", "locate-reply", "store", "store-ack", "lookup", "lookup-reply",
	"refresh", "refresh-reply", "sync-request", "sync-offer", "fetch", "fetch-reply", "delete", "delete-reply"}

func (t msgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("type-%d", t)
}

// code is a replica's verdict, carried in acknowledgements and replies.
type code uint8

const (
	codeOK code = iota
	codeWrongRing
	codeTooLarge
	codeHashMismatch
	codeBadSignature
	codeNotOwner
	codeStale
	codeExpired
	codeBadType
	codeNotFound
	codeStoreFailed
	codeConflict
	codeForbidden
	codeRevoked
	codeNoCA
	codeNotResponsible
	codeLast
)

var codeErrs = [...]error{nil, ErrWrongRing, ErrTooLarge, ErrHashMismatch, ErrBadSignature, ErrNotOwner,
	ErrStale, ErrExpired, ErrBadType, ErrNotFound, ErrStore, ErrConflict, ErrForbidden, ErrRevoked, ErrNoCA, ErrNotResponsible}

func codeOf(err error) code {
	for c := codeWrongRing; c < codeLast; c++ {
		if errors.Is(err, codeErrs[c]) {
			return c
		}
	}
	return codeStoreFailed
}

func (c code) err() error {
	if c < codeLast {
		return codeErrs[c]
	}
	return ErrStore
}

// Marks carried in fields every version of the wire format has, so that nodes of an older
// version read them as what they were (a detail text, an operation id).
const (
	// detailUnsettled is the Detail of a lookup reply "none here, and that proves little"
	// (settled.go).
	detailUnsettled = "unsettled"
	// handoverOp marks the Op of a leaving node's hand-over offers (leave.go); maintenance
	// round numbers never reach it.
	handoverOp uint64 = 1 << 63
)

// KeySeq names one version of an object: what maintenance compares.
type KeySeq struct {
	ID  ids.ID
	Seq uint64
}

// message is the decoded form of every PAST message; which fields are used depends on Type.
type message struct {
	Type    msgType
	Op      uint64 // client operation id or maintenance round, echoed in replies
	Key     ids.Key
	Code    code
	Flag    bool   // refresh: pass on to replicas; sync-offer: more keys remain; lookup: direct
	Detail  string // human-readable reason next to Code
	Origin  pastry.Handle
	Handles []pastry.Handle
	Expiry  int64 // refresh: new lease (unix ns, 0 = none)
	Objects []Object
	Keys    []KeySeq
	Proof   []byte // delete: the owner's authorisation
	Hint    bool   // store: sent to a cached replica set without a locate; refuse if not a replica
	// Sync request.
	Arc    store.Arc
	Count  uint64
	Digest uint64
	Salt   uint64
	Bloom  []byte
}

func writeHandle(w *wire.Writer, h pastry.Handle) {
	w.ID(h.ID)
	w.String(h.Addr)
}

func readHandle(r *wire.Reader) pastry.Handle {
	id := r.ID()
	return pastry.Handle{ID: id, Addr: r.String(maxAddrLen, "address")}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

func writeObject(w *wire.Writer, o *Object) {
	w.B = append(w.B, writeObjectHead(w, o)...)
}

// writeObjectHead writes o up to its payload's length and returns the payload, which follows.
func writeObjectHead(w *wire.Writer, o *Object) []byte {
	w.ID(o.Key.Ring)
	w.ID(o.Key.ID)
	w.U8(o.Type)
	w.U64(o.Seq)
	w.I64(unixNano(o.Expiry))
	w.Bytes(o.Aux)
	w.Uvarint(uint64(len(o.Payload)))
	return o.Payload
}

// minTail is the smallest payload worth handing to the overlay as a frame's separate tail
// instead of copying it behind the message's header.
const minTail = 4 << 10

func readObject(r *wire.Reader) Object {
	var o Object
	o.Key.Ring = r.ID()
	o.Key.ID = r.ID()
	o.Type = r.U8()
	o.Seq = r.U64()
	o.Expiry = fromUnixNano(r.I64())
	o.Aux = r.Bytes(maxAuxLen, "aux")
	if len(o.Aux) == 0 {
		o.Aux = nil
	}
	// Not copied out of the message (wire.Reader.View): a received message's bytes are its
	// alone, and the store copies what it keeps.
	o.Payload = r.View(MaxObjectSize, "payload")
	return o
}

// encode appends the message to buf.
func (m *message) encode(buf []byte) []byte {
	head, tail := m.encodeParts(buf)
	return append(head, tail...)
}

// writeObjects writes a message's objects, which end it, and returns the last one's payload
// when it is large enough to go without a copy as the frame's tail (see encodeParts).
func writeObjects(w *wire.Writer, objs []Object) (tail []byte) {
	w.Uvarint(uint64(len(objs)))
	for i := range objs {
		if i < len(objs)-1 || len(objs[i].Payload) < minTail {
			writeObject(w, &objs[i])
			continue
		}
		tail = writeObjectHead(w, &objs[i])
	}
	return tail
}

// encodeParts is encode cut in front of the last object's payload when that is large (a
// 50 KB chunk on its way to a replica or a reader): head is the message up to it, tail the
// payload itself, so that the overlay sends it behind the head without copying it
// (pastry.Driver.SendParts). Otherwise tail is nil and head is the whole message.
func (m *message) encodeParts(buf []byte) (head, tail []byte) {
	w := wire.Writer{B: buf}
	w.U8(appTag)
	w.U8(wireVersion)
	w.U8(uint8(m.Type))
	w.U64(m.Op)
	switch m.Type {
	case mLocate:
		w.ID(m.Key.Ring)
		w.ID(m.Key.ID)
		w.U8(b2u(m.Flag))
	case mLocateReply, mLookup, mLookupReply, mStoreAck, mRefreshReply, mDeleteReply:
		w.ID(m.Key.Ring)
		w.ID(m.Key.ID)
		w.U8(uint8(m.Code))
		w.U8(b2u(m.Flag))
		w.String(m.Detail)
		writeHandle(&w, m.Origin)
		w.Uvarint(uint64(len(m.Handles)))
		for _, h := range m.Handles {
			writeHandle(&w, h)
		}
		tail = writeObjects(&w, m.Objects)
	case mStore, mFetchReply:
		w.U8(b2u(m.Flag) | b2u(m.Hint)<<1)
		tail = writeObjects(&w, m.Objects)
	case mRefresh:
		w.ID(m.Key.Ring)
		w.ID(m.Key.ID)
		w.U8(b2u(m.Flag))
		w.I64(m.Expiry)
	case mDelete:
		w.ID(m.Key.Ring)
		w.ID(m.Key.ID)
		w.U8(b2u(m.Flag))
		w.Bytes(m.Proof)
	case mSyncRequest:
		w.ID(m.Arc.Ring)
		w.ID(m.Arc.From)
		w.ID(m.Arc.To)
		w.U64(m.Count)
		w.U64(m.Digest)
		w.U64(m.Salt)
		w.Bytes(m.Bloom)
	case mSyncOffer, mFetch:
		w.ID(m.Key.Ring)
		w.U8(b2u(m.Flag))
		w.Uvarint(uint64(len(m.Keys)))
		for _, k := range m.Keys {
			w.ID(k.ID)
			w.Uvarint(k.Seq)
		}
	}
	return w.B, tail
}

// decodeMessage parses a PAST payload. It never panics and allocates no more than the input
// justifies.
func decodeMessage(b []byte) (*message, error) {
	if len(b) > maxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", wire.ErrMalformed, len(b))
	}
	r := wire.NewReader(b)
	if tag := r.U8(); tag != appTag {
		return nil, fmt.Errorf("%w: not a PAST message (tag %d)", wire.ErrMalformed, tag)
	}
	if v := r.U8(); v != wireVersion {
		return nil, fmt.Errorf("%w: PAST wire version %d, want %d", wire.ErrMalformed, v, wireVersion)
	}
	m := &message{Type: msgType(r.U8()), Op: r.U64()}
	switch m.Type {
	case mLocate:
		m.Key.Ring, m.Key.ID = r.ID(), r.ID()
		m.Flag = readBool(r)
	case mLocateReply, mLookup, mLookupReply, mStoreAck, mRefreshReply, mDeleteReply:
		m.Key.Ring, m.Key.ID = r.ID(), r.ID()
		m.Code = code(r.U8())
		m.Flag = readBool(r)
		m.Detail = r.String(maxDetail, "detail")
		m.Origin = readHandle(r)
		n := r.Count(maxHandles, minHandleLen, "handles")
		for i := 0; i < n && r.Err() == nil; i++ {
			m.Handles = append(m.Handles, readHandle(r))
		}
		m.Objects = readObjects(r, 1)
	case mStore, mFetchReply:
		f := r.U8()
		if f > 3 {
			r.Fail("store flags %d", f)
		}
		m.Flag, m.Hint = f&1 != 0, f&2 != 0
		m.Objects = readObjects(r, maxObjects)
	case mRefresh:
		m.Key.Ring, m.Key.ID = r.ID(), r.ID()
		m.Flag = readBool(r)
		m.Expiry = r.I64()
	case mDelete:
		m.Key.Ring, m.Key.ID = r.ID(), r.ID()
		m.Flag = readBool(r)
		m.Proof = r.Bytes(maxProof, "proof")
	case mSyncRequest:
		m.Arc = store.Arc{Ring: r.ID(), From: r.ID(), To: r.ID()}
		m.Count, m.Digest, m.Salt = r.U64(), r.U64(), r.U64()
		m.Bloom = r.Bytes(maxBloomBytes, "bloom filter")
	case mSyncOffer, mFetch:
		m.Key.Ring = r.ID()
		m.Flag = readBool(r)
		n := r.Count(maxKeys, minKeySeqLen, "keys")
		if n > 0 {
			m.Keys = make([]KeySeq, 0, n)
		}
		for i := 0; i < n && r.Err() == nil; i++ {
			m.Keys = append(m.Keys, KeySeq{ID: r.ID(), Seq: r.Uvarint()})
		}
	default:
		return nil, fmt.Errorf("%w: unknown PAST message type %d", wire.ErrMalformed, m.Type)
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	if m.Code >= codeLast {
		return nil, fmt.Errorf("%w: unknown code %d", wire.ErrMalformed, m.Code)
	}
	return m, nil
}

func readObjects(r *wire.Reader, max int) []Object {
	n := r.Count(max, minObjectLen, "objects")
	var out []Object
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, readObject(r))
	}
	return out
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func readBool(r *wire.Reader) bool {
	v := r.U8()
	if v > 1 {
		r.Fail("bool %d", v)
	}
	return v == 1
}
