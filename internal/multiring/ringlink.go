package multiring

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"epost/internal/appmux"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/scribe"
	"epost/internal/wire"
)

// The link between a ring's nodes and its gateways (docs/gateway-design.md §5, §6, §7.1),
// inside the ring: every node can ask a gateway of its ring for another ring's bundle (its CA,
// descriptor and revocations, as the gateway admitted it), for a user record of another ring
// (which the gateway gets through the global ring), and can hand it a sealed bundle for
// another ring, which the gateway queues durably before it confirms. Gateways form the ring's
// group "gateways" (Scribe anycast); a member that answers must carry the gateway role in the
// certificate its ring's TLS handshake showed. Nothing a gateway says is taken on trust: a
// bundle must verify and carry the id asked for (the id is its CA key's), a record must verify
// under that bundle's CA.
//
// A gateway acknowledges every question at once (linkReceipt) with the roster of its ring's
// gateways (roster.go); a node that hears no receipt within ReceiptTimeout asks another
// gateway, the same question with the same entry id (a hand-off given to two gateways lands
// on the same keys in the other ring: the notification ids were fixed at sealing).

// RingGatewayTopic is ring r's gateway group inside r.
func RingGatewayTopic(r ids.RingID) ids.Key { return scribe.NewTopic(r, "gateways") }

const (
	linkQuery   = 1
	linkAnswer  = 2 // qid, status, data, roster
	linkReceipt = 3 // qid, roster: the gateway took the question
	linkPart    = 4 // a question whose data is larger than one message, in parts (parts.go)
	linkPartAck = 5 // qid, parts received

	linkBundle   = 1
	linkRecord   = 2
	linkHandOff  = 3
	linkInternet = 4 // a message for internet addresses (plaintext: the gateway sends it by SMTP)
	linkReOffer  = 5 // a hand-off offered again by the origin, which keeps custody of it (§8.2)

	linkOK          = 1
	linkUnknown     = 2 // no such user, or a ring the gateway does not know
	linkUnavailable = 3
	linkRefused     = 4 // the hand-off was refused for good (too large, malformed)
	linkQueued      = 5 // a hand-off is held in the gateway's queue, not yet stored by the other ring

	maxLinkData = pastry.MaxPayload - 64<<10
)

// GatewaySide is what a gateway answers with (the daemon's global-ring stack).
type GatewaySide interface {
	// Bundle is an admitted ring's bundle, encoded (ring.Bundle.Encode), or false.
	Bundle(r ids.RingID) ([]byte, bool)
	LookupRecord(r ids.RingID, addr string, cb func(*identity.Record, identity.SignedRecord, error))
	// Queue passes a sealed bundle on to the other ring or stores it durably for the relay
	// (the entry id is the origin's; again says the origin offers it once more, see
	// RingLink.Offer). It may block while the message is passed on. queued says the message
	// is only in this gateway's queue; otherwise its outcome is final, and refused names the
	// recipients the other ring refused for good (address -> why).
	Queue(entry, from string, b *post.RemoteBundle, again bool) (refused map[string]string, queued bool, err error)
	// QueueInternet stores a message for internet recipients durably for outbound SMTP.
	QueueInternet(entry, from string, rcpts []string, raw []byte) error
}

// RingLinkConfig configures a RingLink.
type RingLinkConfig struct {
	Ring   ids.RingID
	Topics Topics
	Ov     Overlay
	// IsGateway says whether a peer of this ring showed the gateway role in its certificate.
	IsGateway func(node ids.ID) bool
	// Gateway is this node's gateway side, nil (or returning nil) on ordinary nodes.
	Gateway func() GatewaySide
	Now     func() time.Time
	Timeout time.Duration // per question, once a gateway acknowledged it (default 10 s)
	// ReceiptTimeout is how long a gateway may take to acknowledge a question before another
	// is asked (default DefaultReceiptTimeout).
	ReceiptTimeout time.Duration
}

// RingLink is one node's side of the in-ring link. Register App under appmux.TagDirectory on
// the ring's mux; a gateway also calls Serve.
type RingLink struct {
	cfg RingLinkConfig

	choice  gatewayChoice
	beacons *Beacons // this ring's gateways, as a gateway hears their beacons

	mu      sync.Mutex
	nextQID uint64
	pending map[uint64]*linkPending
	parts   assembler // questions arriving in parts (a gateway)
}

// linkQuestion is one question, asked of one gateway after another.
type linkQuestion struct {
	what        byte
	r           ids.RingID
	addr, entry string
	data        []byte
	cb          func(status byte, data []byte, err error)
	tried       map[ids.ID]bool // touched only by the attempts, one after the other
}

type linkPending struct {
	q              *linkQuestion
	to             ids.ID
	receipt, final *time.Timer
	parts          *partSender // the data going in parts, nil when it fits in the query
}

// NewRingLink makes the link.
func NewRingLink(cfg RingLinkConfig) *RingLink {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.ReceiptTimeout <= 0 {
		cfg.ReceiptTimeout = DefaultReceiptTimeout
	}
	return &RingLink{cfg: cfg, pending: map[uint64]*linkPending{}, beacons: NewBeacons(cfg.Now)}
}

// Serve joins the ring's gateway group (gateways only), where it hears the other gateways'
// beacons.
func (l *RingLink) Serve() error {
	return l.cfg.Topics.Subscribe(RingGatewayTopic(l.cfg.Ring), linkMember{l})
}

// linkMember is a gateway in its ring's group: it takes every anycast, and notes beacons.
type linkMember struct{ l *RingLink }

func (m linkMember) Deliver(_ ids.Key, payload []byte) {
	if e, ok := decodeBeacon(payload); ok {
		m.l.beacons.Heard(e) // a hint: whoever is picked from it is checked by the role table
	}
}

func (linkMember) AnycastAccept(ids.Key, []byte) bool { return true }

// multicaster is the part of Scribe beacons need.
type multicaster interface {
	Multicast(topic ids.Key, payload []byte) error
}

// Beacon tells the ring's other gateways that this one (self) is alive; a gateway calls it
// every BeaconInterval.
func (l *RingLink) Beacon(self RosterEntry) error {
	l.beacons.SetSelf(self)
	mc, ok := l.cfg.Topics.(multicaster)
	if !ok {
		return errors.New("multiring: the ring's Scribe cannot multicast")
	}
	return mc.Multicast(RingGatewayTopic(l.cfg.Ring), encodeBeacon(self))
}

// Roster is the ring's gateways this gateway heard from lately, itself first.
func (l *RingLink) Roster() []RosterEntry { return l.beacons.Roster() }

// ask puts a question to a gateway of the ring and hands cb the answer. A gateway silent for
// ReceiptTimeout is replaced by another (at most maxAttempts in all); one that acknowledged
// but did not answer within Timeout fails the question (the caller asks again later).
func (l *RingLink) ask(what byte, r ids.RingID, addr, entry string, data []byte, cb func(status byte, data []byte, err error)) {
	l.attempt(&linkQuestion{what: what, r: r, addr: addr, entry: entry, data: data, cb: cb, tried: map[ids.ID]bool{}}, nil)
}

func (l *RingLink) attempt(q *linkQuestion, last error) {
	if last != nil && len(q.tried) >= maxAttempts {
		q.cb(0, nil, last)
		return
	}
	anycast := func(res func(scribe.AnycastResult)) error {
		return l.cfg.Topics.Anycast(RingGatewayTopic(l.cfg.Ring), []byte{appmux.TagDirectory, 0}, res)
	}
	l.choice.pick(l.cfg.Now, q.tried, l.cfg.IsGateway, anycast, func(gw pastry.Handle, err error) {
		if err != nil {
			if last != nil {
				err = fmt.Errorf("%w (after: %v)", err, last)
			}
			q.cb(0, nil, err)
			return
		}
		q.tried[gw.ID] = true
		l.mu.Lock()
		l.nextQID++
		qid := l.nextQID
		p := &linkPending{q: q, to: gw.ID}
		l.pending[qid] = p
		p.receipt = time.AfterFunc(l.cfg.ReceiptTimeout, func() {
			if l.takeUnacknowledged(qid) != nil {
				l.choice.exclude(gw.ID, l.cfg.Now())
				l.attempt(q, fmt.Errorf("%w: gateway %s did not acknowledge within %v", ErrRemoteUnavailable, gw.ID.Short(), l.cfg.ReceiptTimeout))
			}
		})
		p.final = time.AfterFunc(l.cfg.Timeout, func() {
			if l.take(qid, gw.ID) != nil {
				l.choice.exclude(gw.ID, l.cfg.Now())
				q.cb(0, nil, fmt.Errorf("%w: gateway %s did not answer in %v", ErrRemoteUnavailable, gw.ID.Short(), l.cfg.Timeout))
			}
		})
		if len(q.data) > maxLinkData {
			p.parts = newPartSender(q.data, func(idx, n int, piece []byte) {
				var w wire.Writer
				w.U8(appmux.TagDirectory)
				w.U8(linkPart)
				w.U64(qid)
				w.U8(q.what)
				w.ID(q.r)
				w.String(q.addr)
				w.String(q.entry)
				w.Uvarint(uint64(len(q.data)))
				w.Uvarint(uint64(idx))
				w.Uvarint(uint64(n))
				w.Bytes(piece)
				l.cfg.Ov.Send(gw, w.B)
			})
		}
		l.mu.Unlock()
		if p.parts != nil {
			p.parts.start()
			return
		}
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(linkQuery)
		w.U64(qid)
		w.U8(q.what)
		w.ID(q.r)
		w.String(q.addr)
		w.String(q.entry)
		w.Bytes(q.data)
		l.cfg.Ov.Send(gw, w.B)
	})
}

// onPartAck: the gateway has `have` parts of the question's data; it is alive, so its
// timeouts start again, and the next parts go.
func (l *RingLink) onPartAck(from ids.ID, qid uint64, have int) {
	l.mu.Lock()
	p := l.pending[qid]
	if p == nil || p.to != from || p.parts == nil {
		l.mu.Unlock()
		return
	}
	if p.receipt != nil {
		p.receipt.Reset(l.cfg.ReceiptTimeout)
	}
	p.final.Reset(l.cfg.Timeout)
	ps := p.parts
	l.mu.Unlock()
	ps.ack(have)
}

// take removes a pending question answered by from.
func (l *RingLink) take(qid uint64, from ids.ID) *linkPending {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending[qid]
	if p == nil || p.to != from {
		return nil
	}
	delete(l.pending, qid)
	if p.receipt != nil {
		p.receipt.Stop()
	}
	p.final.Stop()
	return p
}

// takeUnacknowledged removes a pending question whose receipt has not come.
func (l *RingLink) takeUnacknowledged(qid uint64) *linkPending {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending[qid]
	if p == nil || p.receipt == nil {
		return nil
	}
	delete(l.pending, qid)
	p.final.Stop()
	return p
}

// onReceipt: the gateway asked took the question; its roster names the others.
func (l *RingLink) onReceipt(from ids.ID, qid uint64, roster []RosterEntry) {
	if !l.cfg.IsGateway(from) {
		return
	}
	l.mu.Lock()
	p := l.pending[qid]
	if p == nil || p.to != from || p.receipt == nil {
		l.mu.Unlock()
		return
	}
	p.receipt.Stop()
	p.receipt = nil
	l.mu.Unlock()
	l.choice.vouch(from)
	l.choice.learn(roster, l.cfg.Now())
}

// Trust asks a gateway for ring r's bundle and verifies it: r's trust, for checking r's users.
func (l *RingLink) Trust(r ids.RingID, cb func(*ring.Foreign, error)) {
	l.ask(linkBundle, r, "", "", nil, func(status byte, data []byte, err error) {
		switch {
		case err != nil:
			cb(nil, err)
			return
		case status == linkUnknown:
			cb(nil, fmt.Errorf("%w: ring %s", ErrNotAdmitted, r.Short()))
			return
		case status != linkOK:
			cb(nil, fmt.Errorf("%w: ring %s's bundle", ErrRemoteUnavailable, r.Short()))
			return
		}
		b, err := ring.DecodeBundle(data)
		var f *ring.Foreign
		if err == nil {
			f, err = ring.VerifyBundle(b, l.cfg.Now())
		}
		if err == nil && f.Descriptor.RingID != r {
			err = fmt.Errorf("the bundle is of ring %s", f.Descriptor.RingID.Short())
		}
		if err != nil {
			cb(nil, fmt.Errorf("%w: ring %s's bundle from the gateway: %v", ErrRemoteUnavailable, r.Short(), err))
			return
		}
		cb(f, nil)
	})
}

// LookupRecord asks a gateway for addr's record in ring r, verified under f (r's trust).
func (l *RingLink) LookupRecord(f *ring.Foreign, addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	r := f.Descriptor.RingID
	l.ask(linkRecord, r, addr, "", nil, func(status byte, data []byte, err error) {
		switch {
		case err != nil:
			cb(nil, identity.SignedRecord{}, err)
			return
		case status == linkUnknown:
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s", ErrRemoteUnknown, addr))
			return
		case status != linkOK:
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s", ErrRemoteUnavailable, addr))
			return
		}
		sr, err := identity.DecodeSignedRecord(data)
		var rec *identity.Record
		if err == nil {
			caPub, _ := f.Trust.CA().PublicKey.(ed25519.PublicKey)
			rec, err = sr.Verify(caPub, l.cfg.Now(), f.Trust.IsRecordRevoked)
		}
		switch {
		case errors.Is(err, identity.ErrRevoked):
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s", ErrRemoteRevoked, addr))
		case err != nil:
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s's record does not verify under ring %s's CA: %v", ErrRemoteUnavailable, addr, r.Short(), err))
		case rec.Address != addr || rec.Ring != r:
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: asked for %s, got %s of ring %s", ErrRemoteUnavailable, addr, rec.Address, rec.Ring.Short()))
		default:
			cb(rec, sr, nil)
		}
	})
}

// ErrHandOffRefused: a gateway refused a hand-off for good.
var ErrHandOffRefused = errors.New("multiring: the gateway refused the message")

// HandOff gives a sealed bundle to a gateway of the ring, which confirms once it holds it
// durably (from is the sender, for delivery reports; entry the origin's id); refused names
// the recipients the other ring refused for good, when that was known by then.
func (l *RingLink) HandOff(entry, from string, b *post.RemoteBundle, cb func(refused map[string]string, err error)) {
	l.Offer(entry, from, b, false, func(o Outcome, err error) { cb(o.Refused, err) })
}

// Outcome is a gateway's answer to a hand-off: Queued when the message is only in its queue
// (the other ring has not stored it yet), else final, with the recipients the other ring
// refused for good.
type Outcome struct {
	Queued  bool
	Refused map[string]string
}

// Offer is HandOff with the whole answer. An origin keeps custody of a message a gateway only
// queued (docs/gateway-design.md §8.2) and offers it again (again: true) until an answer is
// final: a gateway that has it queued says so, one that finished it says how it ended, and any
// other gateway passes it on anew (the recipient's ring files each notification id once).
func (l *RingLink) Offer(entry, from string, b *post.RemoteBundle, again bool, cb func(Outcome, error)) {
	data := b.Encode()
	if len(data) > MaxLarge {
		cb(Outcome{}, fmt.Errorf("%w: %d bytes, at most %d in one hand-off", ErrHandOffRefused, len(data), MaxLarge))
		return
	}
	what := byte(linkHandOff)
	if again {
		what = linkReOffer
	}
	l.ask(what, b.Dest, from, entry, data, func(status byte, detail []byte, err error) {
		switch {
		case err != nil:
			cb(Outcome{}, err)
		case status == linkOK:
			refused, derr := decodeRefused(detail)
			if derr != nil {
				refused = nil // the outcome stands either way; the list is advice
			}
			cb(Outcome{Refused: refused}, nil)
		case status == linkQueued:
			cb(Outcome{Queued: true}, nil)
		case status == linkRefused:
			cb(Outcome{}, fmt.Errorf("%w: %s", ErrHandOffRefused, detail))
		default:
			cb(Outcome{}, fmt.Errorf("%w: the gateway could not queue it: %s", ErrRemoteUnavailable, detail))
		}
	})
}

// HandOffInternet gives a message for internet recipients to a gateway of the ring, which
// confirms once it holds it durably and then delivers it by SMTP. The gateway sees it in
// clear: it leaves the ring's encryption.
func (l *RingLink) HandOffInternet(entry, from string, rcpts []string, raw []byte, cb func(error)) {
	var w wire.Writer
	w.String(from)
	w.Uvarint(uint64(len(rcpts)))
	for _, r := range rcpts {
		w.String(r)
	}
	w.Bytes(raw)
	if len(w.B) > MaxLarge {
		cb(fmt.Errorf("%w: %d bytes, at most %d in one hand-off", ErrHandOffRefused, len(w.B), MaxLarge))
		return
	}
	l.ask(linkInternet, ids.RingID{}, "", entry, w.B, func(status byte, detail []byte, err error) {
		switch {
		case err != nil:
			cb(err)
		case status == linkOK:
			cb(nil)
		case status == linkRefused:
			cb(fmt.Errorf("%w: %s", ErrHandOffRefused, detail))
		default:
			cb(fmt.Errorf("%w: the gateway could not queue it: %s", ErrRemoteUnavailable, detail))
		}
	})
}

func encodeRefused(m map[string]string) []byte {
	var w wire.Writer
	w.Uvarint(uint64(len(m)))
	for addr, why := range m {
		w.String(addr)
		if len(why) > maxRelayText {
			why = why[:maxRelayText]
		}
		w.String(why)
	}
	return w.B
}

func decodeRefused(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	r := wire.NewReader(b)
	n := r.Count(1000, 2, "refused")
	m := map[string]string{}
	for i := 0; i < n && r.Err() == nil; i++ {
		addr := r.String(254, "recipient")
		m[addr] = r.String(maxRelayText, "reason")
	}
	return m, r.Done()
}

// App is the link's appmux application (the ring's mux, TagDirectory).
func (l *RingLink) App() appmux.App { return linkApp{l} }

type linkApp struct{ l *RingLink }

func (linkApp) Forward(_ ids.ID, payload []byte, _ pastry.Handle) ([]byte, bool) {
	return payload, true
}

func (a linkApp) HandleEvent(e pastry.Event) bool {
	if e.Kind != pastry.EventDirect || len(e.Payload) < 2 || e.Payload[0] != appmux.TagDirectory {
		return false
	}
	r := wire.NewReader(e.Payload[1:])
	switch r.U8() {
	case linkQuery:
		qid, what, rid := r.U64(), r.U8(), r.ID()
		addr := r.String(254, "address")
		entry := r.String(64, "entry")
		data := r.Bytes(maxLinkData, "data")
		if r.Done() == nil {
			a.l.serve(e.Origin, qid, what, rid, addr, entry, data)
		}
	case linkPart:
		qid, what, rid := r.U64(), r.U8(), r.ID()
		addr := r.String(254, "address")
		entry := r.String(64, "entry")
		total, idx, n := int(r.Uvarint()), int(r.Uvarint()), int(r.Uvarint())
		piece := r.Bytes(partSize, "part")
		if r.Done() != nil || a.l.cfg.Gateway == nil || a.l.cfg.Gateway() == nil {
			return true
		}
		have, whole, err := a.l.parts.add(e.Origin.ID, fmt.Sprint(qid), total, idx, n, piece, a.l.cfg.Now())
		if err != nil {
			return true
		}
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(linkPartAck)
		w.U64(qid)
		w.Uvarint(uint64(have))
		a.l.cfg.Ov.Send(e.Origin, w.B)
		if whole != nil {
			a.l.serve(e.Origin, qid, what, rid, addr, entry, whole)
		}
	case linkPartAck:
		qid, have := r.U64(), int(r.Uvarint())
		if r.Done() == nil && a.l.cfg.IsGateway(e.Origin.ID) {
			a.l.onPartAck(e.Origin.ID, qid, have)
		}
	case linkReceipt:
		qid := r.U64()
		roster := readRosterTail(r)
		if r.Done() == nil {
			a.l.onReceipt(e.Origin.ID, qid, roster)
		}
	case linkAnswer:
		qid, status := r.U64(), r.U8()
		data := r.Bytes(maxLinkData, "data")
		roster := readRosterTail(r)
		if r.Done() == nil && a.l.cfg.IsGateway(e.Origin.ID) {
			if p := a.l.take(qid, e.Origin.ID); p != nil {
				a.l.choice.vouch(e.Origin.ID)
				a.l.choice.learn(roster, a.l.cfg.Now())
				p.q.cb(status, data, nil)
			}
		}
	}
	return true
}

// serve answers a question on a gateway.
func (l *RingLink) serve(from pastry.Handle, qid uint64, what byte, r ids.RingID, addr, entry string, data []byte) {
	answer := func(status byte, data []byte) {
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(linkAnswer)
		w.U64(qid)
		w.U8(status)
		w.Bytes(data)
		writeRoster(&w, l.Roster())
		l.cfg.Ov.Send(from, w.B)
	}
	var gs GatewaySide
	if l.cfg.Gateway != nil {
		gs = l.cfg.Gateway()
	}
	if gs == nil {
		answer(linkUnavailable, []byte("not a gateway"))
		return
	}
	// The receipt, at once: the node waits for the answer rather than asking another gateway.
	var w wire.Writer
	w.U8(appmux.TagDirectory)
	w.U8(linkReceipt)
	w.U64(qid)
	writeRoster(&w, l.Roster())
	l.cfg.Ov.Send(from, w.B)
	switch what {
	case linkBundle:
		if b, ok := gs.Bundle(r); ok {
			answer(linkOK, b)
		} else {
			answer(linkUnknown, nil)
		}
	case linkRecord:
		gs.LookupRecord(r, addr, func(_ *identity.Record, sr identity.SignedRecord, err error) {
			switch {
			case err == nil:
				answer(linkOK, sr.Encode())
			case errors.Is(err, ErrRemoteUnknown):
				answer(linkUnknown, nil)
			case errors.Is(err, ErrNotAdmitted):
				// Not admitted here (yet: admission may be under way) says nothing of the user:
				// the sender hears "try later" (451), never "no such user" (550).
				answer(linkUnavailable, []byte(err.Error()))
			default:
				answer(linkUnavailable, []byte(err.Error()))
			}
		})
	case linkHandOff, linkReOffer:
		b, err := post.DecodeRemoteBundle(data)
		if err == nil && b.Dest == l.cfg.Ring {
			err = errors.New("a bundle for this ring itself")
		}
		if err != nil {
			answer(linkRefused, []byte(err.Error()))
			return
		}
		// Queue may wait for the message to be passed on: not on the event loop that also
		// carries the relay's answers.
		go func() {
			refused, queued, err := gs.Queue(entry, addr, b, what == linkReOffer)
			switch {
			case err != nil:
				answer(linkUnavailable, []byte(err.Error()))
			case queued:
				answer(linkQueued, nil)
			default:
				answer(linkOK, encodeRefused(refused))
			}
		}()
	case linkInternet:
		r := wire.NewReader(data)
		from := r.String(254, "from")
		n := r.Count(1000, 2, "recipients")
		var rcpts []string
		for i := 0; i < n && r.Err() == nil; i++ {
			rcpts = append(rcpts, r.String(254, "recipient"))
		}
		raw := r.Bytes(MaxLarge, "message")
		if err := r.Done(); err != nil || len(rcpts) == 0 {
			answer(linkRefused, []byte("malformed internet hand-off"))
			return
		}
		if err := gs.QueueInternet(entry, from, rcpts, raw); err != nil {
			answer(linkUnavailable, []byte(err.Error()))
			return
		}
		answer(linkOK, nil)
	default:
		answer(linkRefused, []byte("unknown question"))
	}
}
