package multiring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/mailqueue"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
	"epost/internal/wire"
)

// The relay between gateways (docs/gateway-design.md §9), first version: a gateway of ring A
// hands a queued federation entry (a post.RemoteBundle) to a gateway of its destination ring
// B in one direct message on the global ring; B's gateway stores it in B's PAST (DeliverRemote)
// and answers, per recipient, only once the chunks and that recipient's pending notification
// are quorum-stored there: the entry is durable at the next hop before A marks it delivered.
// A hand-off repeated after a crash or a lost answer lands on the same keys (the notification
// ids were fixed when the message was sealed), so the recipient files it once. Bundles larger
// than one overlay message (MaxRelayBundle) go in parts (parts.go), up to MaxLarge.
//
// B's gateway acknowledges a hand-off as soon as it decoded it (relayReceipt), and its
// receipt and result carry the roster of B's gateways (roster.go): a gateway of B silent for
// ReceiptTimeout is replaced by another, which is given the same entry and bundle.

// MaxRelayBundle bounds a bundle handed off in one message; larger ones go in parts.
const MaxRelayBundle = pastry.MaxPayload - 64<<10

const (
	relayDeliver = 1
	relayResult  = 2 // entry, results, roster
	relayReceipt = 3 // entry, roster
	relayPart    = 4 // entry, total, index, count, piece: a bundle larger than one message (parts.go)
	relayPartAck = 5 // entry, parts received

	rcptDelivered = 1
	rcptUnknown   = 2
	rcptRevoked   = 3
	rcptFailed    = 4 // temporary

	maxRelayText = 512
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	Ring    ids.RingID
	Global  *Global
	Topics  Topics
	Ov      Overlay
	Deliver func(b *post.RemoteBundle, cb func([]post.Result)) // this ring's POST (DeliverRemote)
	Timeout time.Duration                                      // per hand-off, once acknowledged (default 30 s)
	Log     *slog.Logger
	// ReceiptTimeout is how long the gateway given a hand-off may take to acknowledge it
	// before another is tried (default DefaultReceiptTimeout).
	ReceiptTimeout time.Duration
	// Roster is this ring's gateways heard lately (RingLink.Roster), sent with every receipt
	// and result; nil sends none.
	Roster func() []RosterEntry
	// Gateways is the choice of other rings' gateways, shared with the Directory (nil: its
	// own).
	Gateways *RemoteGateways
	Now      func() time.Time
}

// Relay hands bundles to other rings' gateways and takes theirs.
type Relay struct {
	cfg     RelayConfig
	mu      sync.Mutex
	pending map[string]*relayPending // by entry id
	stats   RelayStats
	parts   assembler // bundles arriving in parts
}

// RelayStats count hand-offs, for status.
type RelayStats struct {
	HandoffsOut, HandoffsIn uint64
	BytesOut, BytesIn       uint64
}

type relayPending struct {
	to             ids.ID
	q              *relayQuestion
	receipt, final *time.Timer // receipt is nil once acknowledged
	parts          *partSender // the bundle going in parts, nil when it fits in one message
}

// relayQuestion is one hand-off, tried with one gateway of dest after another.
type relayQuestion struct {
	entry  string
	dest   ids.RingID
	bundle []byte
	cb     func(map[string]mailqueue.RcptState, error)
	tried  map[ids.ID]bool // touched only by the attempts, one after the other
}

// NewRelay makes the relay; register App under appmux.TagRelay on the global ring's mux.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ReceiptTimeout <= 0 {
		cfg.ReceiptTimeout = DefaultReceiptTimeout
	}
	if cfg.Gateways == nil {
		cfg.Gateways = NewRemoteGateways()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Relay{cfg: cfg, pending: map[string]*relayPending{}}
}

// Stats returns the counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// HandOff gives entry's bundle to a gateway of dest; cb gets each recipient's state
// (Delivered, Failed for good, or Pending to retry), or err when no gateway of dest took it.
func (r *Relay) HandOff(entry string, dest ids.RingID, bundle []byte, cb func(map[string]mailqueue.RcptState, error)) {
	if len(bundle) > MaxLarge {
		cb(nil, fmt.Errorf("multiring: a bundle of %d bytes is larger than a hand-off carries (%d)", len(bundle), MaxLarge))
		return
	}
	if r.cfg.Global.foreignTrust(dest) == nil {
		cb(nil, fmt.Errorf("%w: ring %s", ErrNotAdmitted, dest.Short()))
		return
	}
	r.attempt(&relayQuestion{entry: entry, dest: dest, bundle: bundle, cb: cb, tried: map[ids.ID]bool{}}, nil)
}

// attempt gives the hand-off to the next gateway of q.dest: one silent for ReceiptTimeout is
// replaced (at most maxAttempts in all); one that acknowledged but did not answer within
// Timeout fails the hand-off (the carrier tries again later).
func (r *Relay) attempt(q *relayQuestion, last error) {
	if last != nil && len(q.tried) >= maxAttempts {
		q.cb(nil, last)
		return
	}
	dest := q.dest
	choice := r.cfg.Gateways.cs.of(dest)
	anycast := func(res func(scribe.AnycastResult)) error {
		return r.cfg.Topics.Anycast(GatewayTopic(dest), []byte{appmux.TagRelay, 0}, res)
	}
	choice.pick(r.cfg.Now, q.tried, r.cfg.Global.isGatewayOf(dest), anycast, func(to pastry.Handle, err error) {
		if err != nil {
			if last != nil {
				err = fmt.Errorf("%w (after: %v)", err, last)
			}
			q.cb(nil, fmt.Errorf("ring %s's gateways: %w", dest.Short(), err))
			return
		}
		q.tried[to.ID] = true
		r.send(to, q, choice)
	})
}

func (r *Relay) send(to pastry.Handle, q *relayQuestion, choice *gatewayChoice) {
	entry := q.entry
	r.mu.Lock()
	if old := r.pending[entry]; old != nil { // a hand-off still waiting: this one replaces it
		if old.receipt != nil {
			old.receipt.Stop()
		}
		old.final.Stop()
		delete(r.pending, entry)
		if old.q != q {
			defer old.q.cb(nil, errors.New("multiring: superseded by a new hand-off of the same entry"))
		}
	}
	p := &relayPending{to: to.ID, q: q}
	r.pending[entry] = p
	p.receipt = time.AfterFunc(r.cfg.ReceiptTimeout, func() {
		if r.takeUnacknowledged(entry, p) {
			choice.exclude(to.ID, r.cfg.Now())
			r.attempt(q, fmt.Errorf("%w: gateway %s did not acknowledge within %v", ErrRemoteUnavailable, to.ID.Short(), r.cfg.ReceiptTimeout))
		}
	})
	p.final = time.AfterFunc(r.cfg.Timeout, func() {
		if r.take(entry, to.ID) != nil {
			choice.exclude(to.ID, r.cfg.Now())
			q.cb(nil, fmt.Errorf("%w: gateway %s did not confirm within %v", ErrRemoteUnavailable, to.ID.Short(), r.cfg.Timeout))
		}
	})
	r.stats.HandoffsOut++
	r.stats.BytesOut += uint64(len(q.bundle))
	if len(q.bundle) > MaxRelayBundle {
		p.parts = newPartSender(q.bundle, func(idx, n int, piece []byte) {
			var w wire.Writer
			w.U8(appmux.TagRelay)
			w.U8(relayPart)
			w.String(entry)
			w.Uvarint(uint64(len(q.bundle)))
			w.Uvarint(uint64(idx))
			w.Uvarint(uint64(n))
			w.Bytes(piece)
			r.cfg.Ov.Send(to, w.B)
		})
	}
	r.mu.Unlock()
	if p.parts != nil {
		p.parts.start()
		return
	}
	var w wire.Writer
	w.U8(appmux.TagRelay)
	w.U8(relayDeliver)
	w.String(entry)
	w.Bytes(q.bundle)
	r.cfg.Ov.Send(to, w.B)
}

// onPartAck: the gateway has `have` parts of the bundle; it is alive, so the timeouts start
// again, and the next parts go.
func (r *Relay) onPartAck(from ids.ID, entry string, have int) {
	r.mu.Lock()
	p := r.pending[entry]
	if p == nil || p.to != from || p.parts == nil {
		r.mu.Unlock()
		return
	}
	if p.receipt != nil {
		p.receipt.Reset(r.cfg.ReceiptTimeout)
	}
	p.final.Reset(r.cfg.Timeout)
	ps := p.parts
	r.mu.Unlock()
	ps.ack(have)
}

func (r *Relay) take(entry string, from ids.ID) *relayPending {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[entry]
	if p == nil || p.to != from {
		return nil
	}
	delete(r.pending, entry)
	if p.receipt != nil {
		p.receipt.Stop()
	}
	p.final.Stop()
	return p
}

// takeUnacknowledged removes p, still pending for entry and not acknowledged.
func (r *Relay) takeUnacknowledged(entry string, p *relayPending) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending[entry] != p || p.receipt == nil {
		return false
	}
	delete(r.pending, entry)
	p.final.Stop()
	return true
}

// onReceipt: the gateway given entry took it; its roster names its ring's others.
func (r *Relay) onReceipt(from ids.ID, entry string, roster []RosterEntry) {
	r.mu.Lock()
	p := r.pending[entry]
	if p == nil || p.to != from || p.receipt == nil || !r.cfg.Global.isGatewayOf(p.q.dest)(from) {
		r.mu.Unlock()
		return
	}
	p.receipt.Stop()
	p.receipt = nil
	r.mu.Unlock()
	c := r.cfg.Gateways.cs.of(p.q.dest)
	c.vouch(from)
	c.learn(roster, r.cfg.Now())
}

func (r *Relay) roster() []RosterEntry {
	if r.cfg.Roster == nil {
		return nil
	}
	return r.cfg.Roster()
}

// App is the relay's appmux application.
func (r *Relay) App() appmux.App { return relayApp{r} }

type relayApp struct{ r *Relay }

func (relayApp) Forward(_ ids.ID, payload []byte, _ pastry.Handle) ([]byte, bool) {
	return payload, true
}

func (a relayApp) HandleEvent(e pastry.Event) bool {
	if e.Kind != pastry.EventDirect || len(e.Payload) < 2 || e.Payload[0] != appmux.TagRelay {
		return false
	}
	rd := wire.NewReader(e.Payload[1:])
	switch rd.U8() {
	case relayDeliver:
		entry := rd.String(64, "entry")
		raw := rd.Bytes(MaxRelayBundle, "bundle")
		if rd.Done() == nil {
			a.r.onDeliver(e.Origin, entry, raw)
		}
	case relayPart:
		entry := rd.String(64, "entry")
		total, idx, n := int(rd.Uvarint()), int(rd.Uvarint()), int(rd.Uvarint())
		piece := rd.Bytes(partSize, "part")
		if rd.Done() != nil {
			return true
		}
		peerRing, ok := a.r.cfg.Global.PeerRing(e.Origin.ID)
		if !ok || !a.r.cfg.Global.Admitted(peerRing) {
			return true
		}
		have, whole, err := a.r.parts.add(e.Origin.ID, entry, total, idx, n, piece, a.r.cfg.Now())
		if err != nil {
			return true
		}
		var w wire.Writer
		w.U8(appmux.TagRelay)
		w.U8(relayPartAck)
		w.String(entry)
		w.Uvarint(uint64(have))
		a.r.cfg.Ov.Send(e.Origin, w.B)
		if whole != nil {
			a.r.onDeliver(e.Origin, entry, whole)
		}
	case relayPartAck:
		entry := rd.String(64, "entry")
		have := int(rd.Uvarint())
		if rd.Done() == nil {
			a.r.onPartAck(e.Origin.ID, entry, have)
		}
	case relayReceipt:
		entry := rd.String(64, "entry")
		roster := readRosterTail(rd)
		if rd.Done() == nil {
			a.r.onReceipt(e.Origin.ID, entry, roster)
		}
	case relayResult:
		entry := rd.String(64, "entry")
		n := rd.Count(1000, 3, "results")
		states := map[string]mailqueue.RcptState{}
		for i := 0; i < n && rd.Err() == nil; i++ {
			addr := rd.String(254, "recipient")
			code := rd.U8()
			text := rd.String(maxRelayText, "text")
			st := mailqueue.RcptState{Addr: addr, State: mailqueue.Pending, Detail: text}
			switch code {
			case rcptDelivered:
				st.State = mailqueue.Delivered
			case rcptUnknown, rcptRevoked:
				st.State = mailqueue.Failed
			}
			states[addr] = st
		}
		roster := readRosterTail(rd)
		if rd.Done() != nil {
			return true
		}
		a.r.mu.Lock()
		p := a.r.pending[entry]
		a.r.mu.Unlock()
		if p == nil || !a.r.cfg.Global.isGatewayOf(p.q.dest)(e.Origin.ID) {
			return true
		}
		if p = a.r.take(entry, e.Origin.ID); p != nil {
			c := a.r.cfg.Gateways.cs.of(p.q.dest)
			c.vouch(e.Origin.ID)
			c.learn(roster, a.r.cfg.Now())
			p.q.cb(states, nil)
		}
	}
	return true
}

// onDeliver stores a bundle from a gateway of an admitted ring and answers once it is durable
// in this ring.
func (r *Relay) onDeliver(from pastry.Handle, entry string, raw []byte) {
	peerRing, ok := r.cfg.Global.PeerRing(from.ID)
	if !ok || !r.cfg.Global.Admitted(peerRing) {
		return
	}
	b, err := post.DecodeRemoteBundle(raw)
	if err != nil || b.Dest != r.cfg.Ring {
		r.cfg.Log.Warn("relay: refused a hand-off", "from", from.ID.Short(), "ring", peerRing.Short(), "entry", entry, "err", err)
		return
	}
	var rw wire.Writer
	rw.U8(appmux.TagRelay)
	rw.U8(relayReceipt)
	rw.String(entry)
	writeRoster(&rw, r.roster())
	r.cfg.Ov.Send(from, rw.B)
	r.mu.Lock()
	r.stats.HandoffsIn++
	r.stats.BytesIn += uint64(len(raw))
	r.mu.Unlock()
	r.cfg.Deliver(b, func(results []post.Result) {
		var w wire.Writer
		w.U8(appmux.TagRelay)
		w.U8(relayResult)
		w.String(entry)
		w.Uvarint(uint64(len(results)))
		for _, res := range results {
			code, text := byte(rcptFailed), ""
			switch res.Status {
			case post.Accepted:
				code = rcptDelivered
			case post.UnknownRecipient:
				code = rcptUnknown
			case post.RevokedRecipient:
				code = rcptRevoked
			}
			if res.Err != nil {
				text = res.Err.Error()
				if len(text) > maxRelayText {
					text = text[:maxRelayText]
				}
			}
			w.String(res.To)
			w.U8(code)
			w.String(text)
		}
		writeRoster(&w, r.roster())
		r.cfg.Ov.Send(from, w.B)
	})
}

// Carrier works a gateway's queue: each due federation entry is handed to its destination
// ring's gateways, and the recipients' states recorded; an entry with no recipient left
// pending is finished.
type Carrier struct {
	Queue *mailqueue.Queue
	Relay *Relay
	Log   *slog.Logger
	Now   func() time.Time
	// Report, if set, tells the sender of recipients the other ring refused for good or that
	// could not be handed over before the entry's deadline (a delivery status notification,
	// action "failed"); the entry is finished only once it returns nil, and is tried again at
	// its next turn otherwise.
	Report func(ctx context.Context, h mailqueue.Header, rcpts []mailqueue.RcptState, action string, body []byte) error
	busy   sync.Map // entry ids being handed off
}

// RunOnce starts a hand-off for every due federation entry not already under way.
func (c *Carrier) RunOnce(ctx context.Context) {
	for _, id := range c.Queue.Due(c.Now()) {
		if _, loaded := c.busy.LoadOrStore(id, true); loaded {
			continue
		}
		h, _, err := c.Queue.Get(id)
		if err != nil || h.Kind != mailqueue.KindFederation || len(h.Rcpts) == 0 {
			c.busy.Delete(id)
			continue
		}
		dest, err := ids.Parse(h.Rcpts[0].Ring)
		if err != nil {
			c.busy.Delete(id)
			continue
		}
		body, err := c.readBody(id)
		if err != nil {
			c.Log.Warn("carrier: cannot read a queued entry", "entry", id, "err", err)
			c.record(id, nil, err)
			continue
		}
		c.Relay.HandOff(id, dest, body, func(states map[string]mailqueue.RcptState, err error) {
			c.record(id, states, err)
		})
	}
}

func (c *Carrier) readBody(id string) ([]byte, error) {
	r, err := c.Queue.Body(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (c *Carrier) record(id string, states map[string]mailqueue.RcptState, err error) {
	s, aerr := c.Queue.Attempted(id, states, err)
	if aerr != nil {
		c.busy.Delete(id)
		c.Log.Warn("carrier: cannot record an attempt", "entry", id, "err", aerr)
		return
	}
	pending, outcome := s.Outcome()
	if pending > 0 {
		c.busy.Delete(id)
		if err != nil {
			c.Log.Info("carrier: hand-off to be retried", "entry", id, "attempt", s.Attempts, "next", s.Next.Format(time.RFC3339), "err", err)
		}
		return
	}
	finish := func() {
		defer c.busy.Delete(id)
		if outcome != "delivered" && c.Report != nil {
			h, _, gerr := c.Queue.Get(id)
			if gerr != nil {
				return
			}
			var failed []mailqueue.RcptState
			for _, r := range s.Rcpts {
				if r.State == mailqueue.Failed {
					failed = append(failed, r)
				}
			}
			if h.From != "" {
				// The body is a sealed bundle: no headers for the report.
				if rerr := c.Report(context.Background(), h, failed, "failed", nil); rerr != nil {
					c.Log.Warn("carrier: cannot send the delivery report yet; the entry stays", "entry", id, "err", rerr)
					return
				}
			}
		}
		if err := c.Queue.Finish(id, outcome); err != nil {
			c.Log.Warn("carrier: cannot finish an entry", "entry", id, "err", err)
		}
	}
	if outcome != "delivered" && c.Report != nil {
		go finish() // the report waits for this ring's POST: not on the caller's event loop
		return
	}
	finish()
}
