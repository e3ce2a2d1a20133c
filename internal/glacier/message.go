package glacier

import (
	"errors"
	"fmt"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/wire"
)

// Every Glacier payload starts with appTag (appmux.TagGlacier) and a version byte. Version 2:
// Merkle manifests, fragments travel with their inclusion proof.
const (
	appTag      = appmux.TagGlacier
	wireVersion = 2
)

// Bounds on decoded messages, so that a forged length or count is refused before allocating.
const (
	maxAddrLen     = 256
	maxOffers      = 1024
	maxBloomBytes  = 64 << 10
	minOfferLen    = ids.Bytes + 1 + 1 + 1
	maxMessageSize = pastry.MaxPayload
)

type msgType uint8

const (
	mStore       msgType = iota + 1 // routed to a fragment key: hold this fragment (Manifest, Index, Proof, Data)
	mStoreAck                       // holder -> inserter, after the durable write: Code
	mFetch                          // routed to a fragment key, or direct to a holder: send fragment Index of Key
	mFetchReply                     // Code; Manifest, Index, Proof, Data when found
	mSyncRequest                    // maintenance: requester's arc, offset, Bloom filter of (fragment key, version)
	mSyncOffer                      // maintenance: fragments the requester should hold and lacks
	mRenew                          // routed to a fragment key: a newer manifest of the same fragments (Manifest, Index; no data)
	mRenewAck                       // holder -> renewer, after the durable write: Code
	mLast
)

var msgTypeNames = [...]string{"?", "store", "store-ack", "fetch", "fetch-reply", "sync-request", "sync-offer", "renew", "renew-ack"}

func (t msgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("type-%d", t)
}

// code is a holder's verdict, carried in acknowledgements and replies.
type code uint8

const (
	codeOK code = iota
	codeNotFound
	codeBadManifest
	codeBadFragment
	codeWrongParams
	codeWrongRing
	codeExpired
	codeStale
	codeStoreFailed
	codeLast
)

var codeErrs = [...]error{nil, ErrNotFound, ErrBadManifest, ErrBadFragment, ErrWrongParams, ErrWrongRing, ErrExpired, ErrStale, ErrStore}

// ErrStale and ErrStore are holder verdicts: a newer version is held; the store failed.
var (
	ErrStale = errors.New("glacier: a newer version of the object is held")
	ErrStore = errors.New("glacier: holder's store failed")
)

func codeOf(err error) code {
	if err == nil {
		return codeOK
	}
	for c := codeNotFound; c < codeLast; c++ {
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

// Offer says: you should hold fragment Index of object Key at Version; the sender holds
// fragment SrcIndex of it.
type Offer struct {
	Key      ids.ID
	Index    uint16
	SrcIndex uint16
	Version  uint64
}

// message is the decoded form of every Glacier message; which fields are used depends on Type.
type message struct {
	Type     msgType
	Op       uint64 // operation id or maintenance round, echoed in replies
	Code     code
	Key      ids.ID // object key (fetch)
	Index    uint16
	Maint    bool       // fetch: for maintenance (a rebuild), counted as such by both sides
	Manifest *Manifest  // to encode
	RawMan   []byte     // decoded: the manifest's wire form, verified by the node through its cache
	Proof    [][32]byte // the fragment's inclusion proof; decoded: ProofLen(n) hashes for the manifest's n
	Data     []byte

	// sync-request
	Requester pastry.Handle
	From, To  ids.ID // the requester's arc (From, To]
	Offset    uint16 // the receiver holds positions Offset·2^256/n clockwise of the arc
	Want      uint16 // most offers wanted
	Hops      uint8  // walk steps so far
	Salt      uint64
	Bloom     []byte

	Offers []Offer
}

func writeHandle(w *wire.Writer, h pastry.Handle) {
	w.ID(h.ID)
	w.String(h.Addr)
}

func readHandle(r *wire.Reader) pastry.Handle {
	return pastry.Handle{ID: r.ID(), Addr: r.String(maxAddrLen, "address")}
}

func (m *message) encode() []byte {
	head, tail := m.encodeParts()
	if len(tail) == 0 {
		return head
	}
	return append(head, tail...)
}

// encodeParts is encode cut in front of the fragment data, which the messages that carry it
// end with: head is the rest (the data's length included) and tail is m.Data itself, so that
// a fragment is handed to the overlay without being copied behind its header
// (pastry.Driver.RouteParts).
func (m *message) encodeParts() (head, tail []byte) {
	w := wire.Writer{B: make([]byte, 0, 300+32*len(m.Proof)+len(m.Bloom)+len(m.Offers)*44)}
	w.U8(appTag)
	w.U8(wireVersion)
	w.U8(uint8(m.Type))
	w.Uvarint(m.Op)
	switch m.Type {
	case mStore:
		w.U16(m.Index)
		m.Manifest.Encode(&w)
		writeProof(&w, m.Proof)
		w.Uvarint(uint64(len(m.Data)))
		tail = m.Data
	case mStoreAck, mRenewAck:
		w.U16(m.Index)
		w.U8(uint8(m.Code))
	case mRenew:
		w.U16(m.Index)
		m.Manifest.Encode(&w)
	case mFetch:
		w.ID(m.Key)
		w.U16(m.Index)
		w.U8(b2u(m.Maint))
	case mFetchReply:
		w.U8(uint8(m.Code))
		w.U16(m.Index)
		w.U8(b2u(m.Maint))
		if m.Code == codeOK {
			m.Manifest.Encode(&w)
			writeProof(&w, m.Proof)
			w.Uvarint(uint64(len(m.Data)))
			tail = m.Data
		}
	case mSyncRequest:
		writeHandle(&w, m.Requester)
		w.ID(m.From)
		w.ID(m.To)
		w.U16(m.Offset)
		w.U16(m.Want)
		w.U8(m.Hops)
		w.U64(m.Salt)
		w.Bytes(m.Bloom)
	case mSyncOffer:
		w.Uvarint(uint64(len(m.Offers)))
		for _, o := range m.Offers {
			w.ID(o.Key)
			w.Uvarint(uint64(o.Index))
			w.Uvarint(uint64(o.SrcIndex))
			w.Uvarint(o.Version)
		}
	}
	return w.B, tail
}

// decodeMessage parses a Glacier payload. A manifest is only delimited (RawMan); the node
// decodes and verifies it through its cache. Fragment data and the raw manifest are not
// copied out of b (wire.Reader.View): b is the message's alone and must not be modified.
func decodeMessage(b []byte) (*message, error) {
	if len(b) > maxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", wire.ErrMalformed, len(b))
	}
	r := wire.NewReader(b)
	if tag := r.U8(); tag != appTag && r.Err() == nil {
		r.Fail("tag 0x%02x is not Glacier's", tag)
	}
	if v := r.U8(); v != wireVersion && r.Err() == nil {
		r.Fail("version %d", v)
	}
	m := &message{Type: msgType(r.U8())}
	m.Op = r.Uvarint()
	if r.Err() != nil {
		return nil, r.Err()
	}
	switch m.Type {
	case mStore:
		m.Index = r.U16()
		raw, n := skipManifest(r)
		m.RawMan, m.Proof = raw, readProof(r, n)
		m.Data = r.View(MaxObjectSize, "fragment")
	case mStoreAck, mRenewAck:
		m.Index = r.U16()
		m.Code = code(r.U8())
	case mRenew:
		m.Index = r.U16()
		m.RawMan, _ = skipManifest(r)
	case mFetch:
		m.Key = r.ID()
		m.Index = r.U16()
		m.Maint = readBool(r)
	case mFetchReply:
		m.Code = code(r.U8())
		m.Index = r.U16()
		m.Maint = readBool(r)
		if m.Code == codeOK && r.Err() == nil {
			raw, n := skipManifest(r)
			m.RawMan, m.Proof = raw, readProof(r, n)
			m.Data = r.View(MaxObjectSize, "fragment")
		}
	case mSyncRequest:
		m.Requester = readHandle(r)
		m.From = r.ID()
		m.To = r.ID()
		m.Offset = r.U16()
		m.Want = r.U16()
		m.Hops = r.U8()
		m.Salt = r.U64()
		m.Bloom = r.Bytes(maxBloomBytes, "bloom filter")
	case mSyncOffer:
		n := r.Count(maxOffers, minOfferLen, "offers")
		if r.Err() == nil {
			m.Offers = make([]Offer, n)
			for i := range m.Offers {
				o := &m.Offers[i]
				o.Key = r.ID()
				idx, src := r.Uvarint(), r.Uvarint()
				if (idx >= MaxFragments || src >= MaxFragments) && r.Err() == nil {
					r.Fail("offer index %d/%d out of range", idx, src)
				}
				o.Index, o.SrcIndex = uint16(idx), uint16(src)
				o.Version = r.Uvarint()
			}
		}
	default:
		r.Fail("unknown message type %d", m.Type)
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	if m.Code >= codeLast {
		return nil, fmt.Errorf("%w: code %d", wire.ErrMalformed, m.Code)
	}
	return m, nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func readBool(r *wire.Reader) bool {
	v := r.U8()
	if v > 1 && r.Err() == nil {
		r.Fail("bool %d", v)
	}
	return v == 1
}
