package post

import (
	"fmt"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/wire"
)

// POST's own messages. They travel as direct Pastry messages (tag appmux.TagPost), as Scribe
// anycast payloads (notify) and as Scribe multicast payloads (online); the same codec reads
// all three.
const (
	postV   = 1
	mNotify = 1 // a sealed notification for Recipient, pushed by a sender or a holder
	mOnline = 2 // the recipient's node is online at Handle (signed by the recipient)
	mWhere  = 3 // anycast probe: the node hosting Recipient accepts it, and so names itself
	// mNotifyStored is mNotify pushed by the sender once the notification's parts are
	// quorum-stored: the recipient files it without asking the ring for them first. (A
	// holder's push is mNotify: its copy may have been stored before the parts, or without.)
	mNotifyStored = 4
)

type postMsg struct {
	Type      uint8
	Recipient string
	ID        NotificationID
	Sealed    []byte
	// online
	Handle pastry.Handle
	Time   int64
	Sig    []byte
}

func (m *postMsg) encode() []byte {
	w := wire.Writer{}
	w.U8(appmux.TagPost)
	w.U8(postV)
	w.U8(m.Type)
	w.String(m.Recipient)
	switch m.Type {
	case mNotify, mNotifyStored:
		w.B = append(w.B, m.ID[:]...)
		w.Bytes(m.Sealed)
	case mOnline:
		w.ID(m.Handle.ID)
		w.String(m.Handle.Addr)
		w.I64(m.Time)
		w.Bytes(m.Sig)
	}
	return w.B
}

// decodePostMsg parses a POST payload; it never panics.
func decodePostMsg(b []byte) (*postMsg, error) {
	r := wire.NewReader(b)
	if tag := r.U8(); r.Err() == nil && tag != appmux.TagPost {
		return nil, fmt.Errorf("%w: not a POST message (tag %d)", ErrMalformed, tag)
	}
	if v := r.U8(); r.Err() == nil && v != postV {
		return nil, fmt.Errorf("%w: POST version %d", ErrMalformed, v)
	}
	m := &postMsg{Type: r.U8(), Recipient: r.String(254, "recipient")}
	switch m.Type {
	case mNotify, mNotifyStored:
		m.ID = readID(r)
		m.Sealed = r.Bytes(maxNotification, "sealed notification")
	case mOnline:
		m.Handle.ID = r.ID()
		m.Handle.Addr = r.String(256, "address")
		m.Time = r.I64()
		m.Sig = r.Bytes(64, "signature")
	case mWhere:
	default:
		if r.Err() == nil {
			return nil, fmt.Errorf("%w: POST message type %d", ErrMalformed, m.Type)
		}
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m, nil
}

// onlineMessage is what the recipient signs to announce its node.
func onlineMessage(addr string, h pastry.Handle, t int64) []byte {
	w := wire.Writer{}
	w.String(addr)
	w.ID(h.ID)
	w.String(h.Addr)
	w.I64(t)
	return w.B
}

const contextOnline = "epost/v1/post-online"

var _ = ids.Zero
