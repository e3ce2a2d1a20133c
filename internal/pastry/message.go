package pastry

import (
	"fmt"

	"epost/internal/ids"
	"epost/internal/wire"
)

// Wire format of every overlay message (version 1), big-endian:
//
//	version u8 | type u8 | ring id [32] | sender id [32] | sender addr (uvarint len + bytes) |
//	sender flags u8 (bit 0: the sender is ready; bit 1: the sender has left the ring) | body
//
// The body depends on the type; see encode. The sender's id must equal the id the transport
// authenticated; Step rejects the message otherwise.
const wireVersion = 1

// Limits that bound what a peer can make us allocate.
const (
	maxAddrLen   = 255
	maxHandles   = 2048
	MaxPayload   = 2 << 20 // a routed or direct application payload
	minHandleLen = ids.Bytes + 1
)

// MaxHops is how many hops a routed message may make before it is dropped. Pastry needs about
// log16(N) hops, a few more around failed nodes; only a routing loop (inconsistent leaf sets,
// or a bug such as the one InRange had) comes near. The hop count travels in the message
// (one byte, so the limit must stay below 256).
const MaxHops = 64

type msgType uint8

const (
	mJoinRequest   msgType = iota + 1 // joiner -> bootstrap: please route my join (Flag: heal only)
	mRoute                            // a message routed by key, hop by hop
	mHopAck                           // next hop -> previous hop: got route message Seq
	mJoinRows                         // node on the join path -> joiner: routing-table rows
	mJoinReply                        // node closest to the joiner's id -> joiner: its leaf set
	mAnnounce                         // joiner -> its leaf set and table: I exist
	mAnnounceAck                      // leaf member -> joiner: noted; here is my leaf set
	mProbe                            // liveness probe and RTT measurement (Handles: leaf set, sometimes)
	mProbeReply                       // answer to a probe (Handles: leaf set, sometimes)
	mIndirectProbe                    // ask a leaf member to probe Origin for us
	mIndirectReply                    // result of an indirect probe (Flag: alive)
	mRowRequest                       // ask for routing-table row Row
	mRowReply                         // routing-table row Row
	mLeafRequest                      // ask for the leaf set
	mLeafReply                        // the leaf set
	mDirect                           // application payload sent to one node
	mLeave                            // the sender leaves the ring (Handles: its leaf set, for repair)
	mTypeLimit
)

var msgTypeNames = [...]string{"?", "join-request", "route", "hop-ack", "join-rows", "join-reply",
	"announce", "announce-ack", "probe", "probe-reply", "indirect-probe", "indirect-reply",
	"row-request", "row-reply", "leaf-request", "leaf-reply", "direct", "leave"}

func (t msgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("type-%d", t)
}

// Route kinds.
const (
	kindApp  = 0 // application message: Deliver at the destination
	kindJoin = 1 // join: Origin is the joiner
	kindHeal = 2 // partition healing: like a join, but only the leaf set is wanted
)

// message is the decoded form of every overlay message; which fields are used depends on Type.
type message struct {
	Type    msgType
	Ring    ids.ID
	From    Handle
	Ready   bool     // the sender has joined; a joining node gets no deliveries yet
	Gone    bool     // the sender has left the ring and only finishes its hand-over
	Seq     uint64   // route message id, probe sequence, request nonce
	Time    int64    // probe send time (nanoseconds of the sender's clock), echoed in the reply
	Key     ids.ID   // route key
	Origin  Handle   // route origin, joiner, or target of an indirect probe
	Hops    uint8    // hops so far
	Kind    uint8    // route kind
	Row     uint8    // routing-table row
	Flag    bool     // heal (join-request), alive (indirect-reply), leaf set attached (probe)
	Handles []Handle // leaf set or table rows
	Payload []byte
	// PayloadTail, on a message this node routes in parts (Node.RouteParts), is the payload's
	// end: the payload is Payload followed by PayloadTail, and encodeParts hands it to the
	// transport behind the frame instead of copying it. Never set on a decoded message.
	PayloadTail []byte
}

// payload is the whole application payload (Payload and PayloadTail joined: a copy if the
// message was routed in parts).
func (m *message) payload() []byte {
	if len(m.PayloadTail) == 0 {
		return m.Payload
	}
	p := make([]byte, 0, len(m.Payload)+len(m.PayloadTail))
	return append(append(p, m.Payload...), m.PayloadTail...)
}

func writeHandle(w *wire.Writer, h Handle) {
	w.ID(h.ID)
	w.String(h.Addr)
}

func readHandle(r *wire.Reader) Handle {
	id := r.ID()
	return Handle{ID: id, Addr: r.String(maxAddrLen, "address")}
}

func writeHandles(w *wire.Writer, hs []Handle) {
	w.Uvarint(uint64(len(hs)))
	for _, h := range hs {
		writeHandle(w, h)
	}
}

func readHandles(r *wire.Reader) []Handle {
	n := r.Count(maxHandles, minHandleLen, "handles")
	if n == 0 {
		return nil
	}
	hs := make([]Handle, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		hs = append(hs, readHandle(r))
	}
	return hs
}

func (m *message) encode(buf []byte) []byte {
	head, tail := m.encodeParts(buf)
	return append(head, tail...)
}

// encodeParts is encode cut in front of the payload, which every message that has one ends
// with: head holds the rest, the payload's length included, and tail is m.Payload itself (or,
// for a message routed in parts, head ends with m.Payload and tail is m.PayloadTail).
func (m *message) encodeParts(buf []byte) (head, tail []byte) {
	w := wire.Writer{B: buf}
	w.U8(wireVersion)
	w.U8(uint8(m.Type))
	w.ID(m.Ring)
	writeHandle(&w, m.From)
	w.U8(b2u(m.Ready)*flagReady | b2u(m.Gone)*flagGone)
	switch m.Type {
	case mJoinRequest:
		w.U8(b2u(m.Flag))
	case mRoute:
		w.U64(m.Seq)
		w.ID(m.Key)
		writeHandle(&w, m.Origin)
		w.U8(m.Hops)
		w.U8(m.Kind)
		tail = m.writePayloadHead(&w)
	case mHopAck:
		w.U64(m.Seq)
	case mJoinRows, mJoinReply, mAnnounceAck, mLeafReply, mLeave:
		writeHandles(&w, m.Handles)
	case mAnnounce:
		w.U8(b2u(m.Flag))
	case mLeafRequest:
	case mProbe, mProbeReply:
		w.U64(m.Seq)
		w.I64(m.Time)
		w.U8(b2u(m.Flag))
		if m.Flag {
			writeHandles(&w, m.Handles)
		}
	case mIndirectProbe:
		w.U64(m.Seq)
		writeHandle(&w, m.Origin)
	case mIndirectReply:
		w.U64(m.Seq)
		w.ID(m.Key)
		w.U8(b2u(m.Flag))
	case mRowRequest:
		w.U8(m.Row)
	case mRowReply:
		w.U8(m.Row)
		writeHandles(&w, m.Handles)
	case mDirect:
		tail = m.writePayloadHead(&w)
	}
	return w.B, tail
}

// writePayloadHead writes the payload's length and whatever of it goes in the head, and
// returns the rest.
func (m *message) writePayloadHead(w *wire.Writer) []byte {
	if len(m.PayloadTail) == 0 {
		w.Uvarint(uint64(len(m.Payload)))
		return m.Payload
	}
	w.Uvarint(uint64(len(m.Payload) + len(m.PayloadTail)))
	w.B = append(w.B, m.Payload...)
	return m.PayloadTail
}

// decodeMessage parses one overlay message. Bad bytes give an error wrapping wire.ErrMalformed.
func decodeMessage(b []byte) (*message, error) {
	r := wire.NewReader(b)
	if v := r.U8(); r.Err() == nil && v != wireVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", wire.ErrMalformed, v, wireVersion)
	}
	m := &message{Type: msgType(r.U8())}
	if r.Err() == nil && (m.Type == 0 || m.Type >= mTypeLimit) {
		return nil, fmt.Errorf("%w: unknown message type %d", wire.ErrMalformed, m.Type)
	}
	m.Ring = r.ID()
	m.From = readHandle(r)
	flags := r.U8()
	if flags&^(flagReady|flagGone) != 0 {
		r.Fail("unknown sender flags %#x", flags)
	}
	m.Ready, m.Gone = flags&flagReady != 0, flags&flagGone != 0
	switch m.Type {
	case mJoinRequest:
		m.Flag = readBool(r)
	case mRoute:
		m.Seq = r.U64()
		m.Key = r.ID()
		m.Origin = readHandle(r)
		m.Hops = r.U8()
		m.Kind = r.U8()
		m.Payload = r.View(MaxPayload, "payload") // the frame is the message's alone: no copy
		if m.Kind > kindHeal {
			r.Fail("unknown route kind %d", m.Kind)
		}
	case mHopAck:
		m.Seq = r.U64()
	case mJoinRows, mJoinReply, mAnnounceAck, mLeafReply, mLeave:
		m.Handles = readHandles(r)
	case mAnnounce:
		m.Flag = readBool(r)
	case mLeafRequest:
	case mProbe, mProbeReply:
		m.Seq = r.U64()
		m.Time = r.I64()
		m.Flag = readBool(r)
		if m.Flag {
			m.Handles = readHandles(r)
		}
	case mIndirectProbe:
		m.Seq = r.U64()
		m.Origin = readHandle(r)
	case mIndirectReply:
		m.Seq = r.U64()
		m.Key = r.ID()
		m.Flag = readBool(r)
	case mRowRequest:
		m.Row = r.U8()
		if m.Row >= ids.Digits {
			r.Fail("row %d out of range", m.Row)
		}
	case mRowReply:
		m.Row = r.U8()
		m.Handles = readHandles(r)
		if m.Row >= ids.Digits {
			r.Fail("row %d out of range", m.Row)
		}
	case mDirect:
		m.Payload = r.View(MaxPayload, "payload") // the frame is the message's alone: no copy
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("pastry %s message: %w", m.Type, err)
	}
	return m, nil
}

// Sender flags in the header.
const (
	flagReady = 1 << 0
	flagGone  = 1 << 1
)

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func readBool(r *wire.Reader) bool {
	switch r.U8() {
	case 0:
		return false
	case 1:
		return true
	}
	r.Fail("bad boolean")
	return false
}
