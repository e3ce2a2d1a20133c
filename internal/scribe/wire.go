package scribe

import (
	"fmt"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/wire"
)

// Wire format (version 1), carried as a Pastry payload, big-endian:
//
//	tag u8 | version u8 | type u8 | body
//
// tag is the appmux tag (Config.Tag). The body depends on the type; see encode. Every
// decoder is bounds-checked: bad bytes give an error wrapping wire.ErrMalformed.
const wireVersion = 1

// Limits that bound what a peer can make us allocate or send.
const (
	// MaxPayload is the largest application payload of a multicast or anycast. It leaves
	// room under pastry.MaxPayload for the anycast search lists.
	MaxPayload = 1 << 20

	maxAddrLen     = 255
	maxHBTopics    = 8192 // topics in one heartbeat (more are split over several messages)
	maxSearch      = 1024 // entries of an anycast's visited and to-visit lists
	minHandleLen   = ids.Bytes + 1
	depthNotParent = 255 // heartbeat ack: "I am not your parent for this topic"
	msgIDLen       = 16
)

type msgType uint8

const (
	mSubscribe     msgType = iota + 1 // routed toward the topic: Child asks to join the tree
	mSubscribeAck                     // parent -> child: you are my child (Depth: the parent's depth)
	mLeave                            // child -> parent: remove me
	mHeartbeat                        // child -> parent: I am still your child for Topics
	mHeartbeatAck                     // parent -> child: per topic, my depth or depthNotParent
	mMulticast                        // routed to the topic, then flooded over tree edges
	mAnycast                          // routed to the topic, then a depth-first search by direct sends
	mAnycastResult                    // last searched node -> origin
	mTypeLimit
)

var msgTypeNames = [...]string{"?", "subscribe", "subscribe-ack", "leave", "heartbeat",
	"heartbeat-ack", "multicast", "anycast", "anycast-result"}

func (t msgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("type-%d", t)
}

type topicAck struct {
	Topic ids.ID
	Depth uint8
}

// message is the decoded form of every Scribe message; which fields are used depends on Type.
type message struct {
	Type     msgType
	Topic    ids.ID
	Child    pastry.Handle // subscribe: the node asking to become a child (rewritten at each hop)
	Depth    uint8         // subscribe-ack: the sender's distance from the root
	Topics   []ids.ID      // heartbeat
	Acks     []topicAck    // heartbeat-ack
	MsgID    [msgIDLen]byte
	ReqID    uint64        // anycast request id, chosen by the origin
	Origin   pastry.Handle // multicast source, anycast origin
	Visited  []ids.ID      // anycast: nodes searched so far
	ToVisit  []pastry.Handle
	Accepted bool          // anycast-result
	Member   pastry.Handle // anycast-result: the member that accepted
	Searched int           // anycast-result: how many tree nodes the search visited
	Payload  []byte
}

func writeHandle(w *wire.Writer, h pastry.Handle) {
	w.ID(h.ID)
	w.String(h.Addr)
}

func readHandle(r *wire.Reader) pastry.Handle {
	id := r.ID()
	return pastry.Handle{ID: id, Addr: r.String(maxAddrLen, "address")}
}

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

func (m *message) encode(tag byte) []byte {
	w := wire.Writer{B: make([]byte, 0, 80+len(m.Payload))}
	w.U8(tag)
	w.U8(wireVersion)
	w.U8(uint8(m.Type))
	switch m.Type {
	case mSubscribe:
		w.ID(m.Topic)
		writeHandle(&w, m.Child)
	case mSubscribeAck:
		w.ID(m.Topic)
		w.U8(m.Depth)
	case mLeave:
		w.ID(m.Topic)
	case mHeartbeat:
		w.Uvarint(uint64(len(m.Topics)))
		for _, t := range m.Topics {
			w.ID(t)
		}
	case mHeartbeatAck:
		w.Uvarint(uint64(len(m.Acks)))
		for _, a := range m.Acks {
			w.ID(a.Topic)
			w.U8(a.Depth)
		}
	case mMulticast:
		w.ID(m.Topic)
		w.B = append(w.B, m.MsgID[:]...)
		writeHandle(&w, m.Origin)
		w.Bytes(m.Payload)
	case mAnycast:
		w.ID(m.Topic)
		w.U64(m.ReqID)
		writeHandle(&w, m.Origin)
		w.Uvarint(uint64(len(m.Visited)))
		for _, id := range m.Visited {
			w.ID(id)
		}
		w.Uvarint(uint64(len(m.ToVisit)))
		for _, h := range m.ToVisit {
			writeHandle(&w, h)
		}
		w.Bytes(m.Payload)
	case mAnycastResult:
		w.ID(m.Topic)
		w.U64(m.ReqID)
		w.U8(b2u(m.Accepted))
		writeHandle(&w, m.Member)
		w.Uvarint(uint64(m.Searched))
	}
	return w.B
}

// decode parses one Scribe message whose first byte is tag. It never panics and never
// allocates more than the input justifies.
func decode(tag byte, b []byte) (*message, error) {
	r := wire.NewReader(b)
	if t := r.U8(); r.Err() == nil && t != tag {
		return nil, fmt.Errorf("%w: tag 0x%02x is not scribe's 0x%02x", wire.ErrMalformed, t, tag)
	}
	if v := r.U8(); r.Err() == nil && v != wireVersion {
		return nil, fmt.Errorf("%w: scribe version %d, want %d", wire.ErrMalformed, v, wireVersion)
	}
	m := &message{Type: msgType(r.U8())}
	if r.Err() == nil && (m.Type == 0 || m.Type >= mTypeLimit) {
		return nil, fmt.Errorf("%w: unknown scribe message type %d", wire.ErrMalformed, m.Type)
	}
	switch m.Type {
	case mSubscribe:
		m.Topic = r.ID()
		m.Child = readHandle(r)
		if r.Err() == nil && (m.Child.ID.IsZero() || m.Child.Addr == "") {
			r.Fail("subscribe without a child")
		}
	case mSubscribeAck:
		m.Topic = r.ID()
		m.Depth = r.U8()
	case mLeave:
		m.Topic = r.ID()
	case mHeartbeat:
		n := r.Count(maxHBTopics, ids.Bytes, "heartbeat topics")
		m.Topics = make([]ids.ID, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			m.Topics = append(m.Topics, r.ID())
		}
	case mHeartbeatAck:
		n := r.Count(maxHBTopics, ids.Bytes+1, "heartbeat acks")
		m.Acks = make([]topicAck, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			id := r.ID()
			m.Acks = append(m.Acks, topicAck{Topic: id, Depth: r.U8()})
		}
	case mMulticast:
		m.Topic = r.ID()
		for i := range m.MsgID {
			m.MsgID[i] = r.U8()
		}
		m.Origin = readHandle(r)
		m.Payload = r.Bytes(MaxPayload, "payload")
	case mAnycast:
		m.Topic = r.ID()
		m.ReqID = r.U64()
		m.Origin = readHandle(r)
		n := r.Count(maxSearch, ids.Bytes, "visited")
		m.Visited = make([]ids.ID, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			m.Visited = append(m.Visited, r.ID())
		}
		n = r.Count(maxSearch, minHandleLen, "to-visit")
		m.ToVisit = make([]pastry.Handle, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			m.ToVisit = append(m.ToVisit, readHandle(r))
		}
		m.Payload = r.Bytes(MaxPayload, "payload")
		if r.Err() == nil && (m.Origin.ID.IsZero() || m.Origin.Addr == "") {
			r.Fail("anycast without an origin")
		}
	case mAnycastResult:
		m.Topic = r.ID()
		m.ReqID = r.U64()
		m.Accepted = readBool(r)
		m.Member = readHandle(r)
		n := r.Uvarint()
		if n > maxSearch {
			r.Fail("searched count %d exceeds %d", n, maxSearch)
		}
		m.Searched = int(n)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("scribe %s message: %w", m.Type, err)
	}
	return m, nil
}
