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
	"epost/internal/ring"
	"epost/internal/scribe"
	"epost/internal/wire"
)

// The directory between rings (docs/gateway-design.md §5.2): a gateway of ring A asks the
// gateways of ring B, on the global ring, for a user record of B. The question goes to B's
// gateway group (the Scribe topic "gateways:<B>" in the global ring: anycast, and the member
// that accepts must be a gateway the TLS handshake showed to be of ring B); that gateway looks
// the record up in its own ring's PAST and answers with the signed record. The asker trusts no
// gateway: it verifies the record under B's CA and revocations, from the bundle B showed when
// it was admitted, and checks that it is the record asked for. A forged or wrongly signed
// answer counts as "unavailable" (ask again), never as "no such user".
//
// B's gateway acknowledges the question at once (dirReceipt), and its receipt and answer
// carry the roster of B's gateways (roster.go): a gateway of B silent for ReceiptTimeout is
// replaced by another, picked from that roster when there is one.

// Directory answers.
const (
	DirOK          = 1
	DirUnknown     = 2 // ring B has no such user
	DirRevoked     = 3
	DirUnavailable = 4 // B's gateway could not tell (its ring did not answer in time)
)

// Errors of remote lookups.
var (
	ErrRemoteUnknown     = errors.New("multiring: no such user in that ring")
	ErrRemoteRevoked     = errors.New("multiring: that user's record is revoked")
	ErrRemoteUnavailable = errors.New("multiring: that ring's gateways did not answer")
	ErrNotAdmitted       = errors.New("multiring: that ring is not admitted to the global ring here")
)

const (
	dirQuery   = 1
	dirAnswer  = 2 // qid, status, record, roster
	dirReceipt = 3 // qid, roster

	whatRecord = 1

	maxRecordWire = 4096
)

// GatewayTopic is ring r's gateway group in the global ring.
func GatewayTopic(r ids.RingID) ids.Key {
	return scribe.NewTopic(ids.GlobalRing, "gateways:"+r.String())
}

// Topics is what the directory needs from the global ring's Scribe; *scribe.Scribe has it.
type Topics interface {
	Subscribe(topic ids.Key, app scribe.App) error
	Anycast(topic ids.Key, payload []byte, result func(scribe.AnycastResult)) error
}

// Overlay is what the directory needs from the global ring's Pastry driver.
type Overlay interface {
	Send(to pastry.Handle, payload []byte)
}

// DirectoryConfig configures a Directory.
type DirectoryConfig struct {
	Ring   ids.RingID // this gateway's ring
	Global *Global    // admitted rings' trust, and which ring each peer is of
	Topics Topics
	Ov     Overlay
	// Records looks a user up in this gateway's own ring (post.Node.LookupRecord).
	Records func(addr string, cb func(*identity.Record, identity.SignedRecord, error))
	// IsUnknown and IsRevoked classify Records' errors.
	IsUnknown, IsRevoked func(error) bool
	Now                  func() time.Time
	Timeout              time.Duration // per question, once acknowledged (default 5 s)
	// ReceiptTimeout is how long the gateway asked may take to acknowledge before another is
	// asked (default DefaultReceiptTimeout).
	ReceiptTimeout time.Duration
	// Roster is this ring's gateways heard lately (RingLink.Roster), sent with every receipt
	// and answer; nil sends none.
	Roster func() []RosterEntry
	// Gateways is the choice of other rings' gateways, shared with the Relay (nil: its own).
	Gateways *RemoteGateways
}

// Directory is a gateway's side of the inter-ring directory. Register it (its App) on the
// global ring's mux under appmux.TagDirectory, then call Start.
type Directory struct {
	cfg DirectoryConfig

	mu      sync.Mutex
	nextQID uint64
	pending map[uint64]*dirPending
}

type dirPending struct {
	to             ids.ID // the gateway asked
	q              *dirQuestion
	receipt, final *time.Timer // receipt is nil once acknowledged
}

// dirQuestion is one lookup, asked of one gateway of ring after another.
type dirQuestion struct {
	ring  ids.RingID
	addr  string
	cb    func(*identity.Record, identity.SignedRecord, error)
	tried map[ids.ID]bool // touched only by the attempts, one after the other
}

// NewDirectory makes the directory.
func NewDirectory(cfg DirectoryConfig) *Directory {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReceiptTimeout <= 0 {
		cfg.ReceiptTimeout = DefaultReceiptTimeout
	}
	if cfg.Gateways == nil {
		cfg.Gateways = NewRemoteGateways()
	}
	return &Directory{cfg: cfg, pending: map[uint64]*dirPending{}}
}

// Start joins this ring's gateway group in the global ring.
func (d *Directory) Start() error {
	return d.cfg.Topics.Subscribe(GatewayTopic(d.cfg.Ring), groupMember{})
}

// groupMember accepts every anycast to the group: a gateway answers for its ring.
type groupMember struct{}

func (groupMember) Deliver(ids.Key, []byte) {}

func (groupMember) AnycastAccept(ids.Key, []byte) bool { return true }

// LookupRecord asks ring r's gateways for addr's record and verifies it under r's trust.
func (d *Directory) LookupRecord(r ids.RingID, addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	if d.cfg.Global.foreignTrust(r) == nil {
		cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: ring %s", ErrNotAdmitted, r.Short()))
		return
	}
	d.attempt(&dirQuestion{ring: r, addr: addr, cb: cb, tried: map[ids.ID]bool{}}, nil)
}

// isGatewayOf: the global ring's role table (the ring a peer's chain proved) says node is a
// gateway of ring r.
func (g *Global) isGatewayOf(r ids.RingID) func(ids.ID) bool {
	return func(node ids.ID) bool {
		got, ok := g.PeerRing(node)
		return ok && got == r
	}
}

// attempt asks the next gateway of q.ring: a gateway silent for ReceiptTimeout is replaced
// (at most maxAttempts in all); one that acknowledged but did not answer in Timeout fails
// the lookup.
func (d *Directory) attempt(q *dirQuestion, last error) {
	if last != nil && len(q.tried) >= maxAttempts {
		q.cb(nil, identity.SignedRecord{}, last)
		return
	}
	r := q.ring
	choice := d.cfg.Gateways.cs.of(r)
	anycast := func(res func(scribe.AnycastResult)) error {
		return d.cfg.Topics.Anycast(GatewayTopic(r), []byte{appmux.TagDirectory, 0}, res)
	}
	choice.pick(d.cfg.Now, q.tried, d.cfg.Global.isGatewayOf(r), anycast, func(to pastry.Handle, err error) {
		if err != nil {
			if last != nil {
				err = fmt.Errorf("%w (after: %v)", err, last)
			}
			q.cb(nil, identity.SignedRecord{}, fmt.Errorf("ring %s's gateways: %w", r.Short(), err))
			return
		}
		q.tried[to.ID] = true
		d.mu.Lock()
		d.nextQID++
		qid := d.nextQID
		p := &dirPending{to: to.ID, q: q}
		d.pending[qid] = p
		p.receipt = time.AfterFunc(d.cfg.ReceiptTimeout, func() {
			if d.takeUnacknowledged(qid) != nil {
				choice.exclude(to.ID, d.cfg.Now())
				d.attempt(q, fmt.Errorf("%w: ring %s's gateway %s did not acknowledge within %v", ErrRemoteUnavailable, r.Short(), to.ID.Short(), d.cfg.ReceiptTimeout))
			}
		})
		p.final = time.AfterFunc(d.cfg.Timeout, func() {
			if d.take(qid) != nil {
				choice.exclude(to.ID, d.cfg.Now())
				q.cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: ring %s's gateway %s did not answer in %v", ErrRemoteUnavailable, r.Short(), to.ID.Short(), d.cfg.Timeout))
			}
		})
		d.mu.Unlock()
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(dirQuery)
		w.U64(qid)
		w.U8(whatRecord)
		w.String(q.addr)
		d.cfg.Ov.Send(to, w.B)
	})
}

// take removes and returns a pending question (nil if it was answered or timed out).
func (d *Directory) take(qid uint64) *dirPending {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pending[qid]
	if p == nil {
		return nil
	}
	delete(d.pending, qid)
	if p.receipt != nil {
		p.receipt.Stop()
	}
	p.final.Stop()
	return p
}

// takeUnacknowledged removes a pending question whose receipt has not come.
func (d *Directory) takeUnacknowledged(qid uint64) *dirPending {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pending[qid]
	if p == nil || p.receipt == nil {
		return nil
	}
	delete(d.pending, qid)
	p.final.Stop()
	return p
}

func (d *Directory) roster() []RosterEntry {
	if d.cfg.Roster == nil {
		return nil
	}
	return d.cfg.Roster()
}

// App is the directory's appmux application.
func (d *Directory) App() appmux.App { return dirApp{d} }

type dirApp struct{ d *Directory }

func (dirApp) Forward(_ ids.ID, payload []byte, _ pastry.Handle) ([]byte, bool) { return payload, true }

func (a dirApp) HandleEvent(e pastry.Event) bool {
	if e.Kind != pastry.EventDirect || len(e.Payload) < 2 || e.Payload[0] != appmux.TagDirectory {
		return false
	}
	r := wire.NewReader(e.Payload[1:])
	switch r.U8() {
	case dirQuery:
		qid := r.U64()
		what := r.U8()
		addr := r.String(254, "address")
		if r.Done() != nil || what != whatRecord {
			return true
		}
		a.d.answer(e.Origin, qid, addr)
	case dirReceipt:
		qid := r.U64()
		roster := readRosterTail(r)
		if r.Done() == nil {
			a.d.onReceipt(e.Origin, qid, roster)
		}
	case dirAnswer:
		qid := r.U64()
		status := r.U8()
		rec := r.Bytes(maxRecordWire, "record")
		roster := readRosterTail(r)
		if r.Done() != nil {
			return true
		}
		a.d.onAnswer(e.Origin, qid, status, rec, roster)
	}
	return true
}

// answer serves a question from a gateway of an admitted ring.
func (d *Directory) answer(from pastry.Handle, qid uint64, addr string) {
	peerRing, ok := d.cfg.Global.PeerRing(from.ID)
	if !ok || !d.cfg.Global.Admitted(peerRing) {
		return // not a gateway of an admitted ring: no answer
	}
	var rw wire.Writer
	rw.U8(appmux.TagDirectory)
	rw.U8(dirReceipt)
	rw.U64(qid)
	writeRoster(&rw, d.roster())
	d.cfg.Ov.Send(from, rw.B)
	d.cfg.Records(addr, func(_ *identity.Record, sr identity.SignedRecord, err error) {
		status := byte(DirOK)
		switch {
		case err == nil:
		case d.cfg.IsUnknown != nil && d.cfg.IsUnknown(err):
			status = DirUnknown
		case d.cfg.IsRevoked != nil && d.cfg.IsRevoked(err):
			status = DirRevoked
		default:
			status = DirUnavailable
		}
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(dirAnswer)
		w.U64(qid)
		w.U8(status)
		if status == DirOK {
			w.Bytes(sr.Encode())
		} else {
			w.Bytes(nil)
		}
		writeRoster(&w, d.roster())
		d.cfg.Ov.Send(from, w.B)
	})
}

// onReceipt: the gateway asked took the question; its roster names its ring's others.
func (d *Directory) onReceipt(from pastry.Handle, qid uint64, roster []RosterEntry) {
	d.mu.Lock()
	p := d.pending[qid]
	if p == nil || p.to != from.ID || p.receipt == nil || !d.cfg.Global.isGatewayOf(p.q.ring)(from.ID) {
		d.mu.Unlock()
		return
	}
	p.receipt.Stop()
	p.receipt = nil
	d.mu.Unlock()
	c := d.cfg.Gateways.cs.of(p.q.ring)
	c.vouch(from.ID)
	c.learn(roster, d.cfg.Now())
}

func (d *Directory) onAnswer(from pastry.Handle, qid uint64, status byte, raw []byte, roster []RosterEntry) {
	d.mu.Lock()
	p := d.pending[qid]
	if p == nil || p.to != from.ID { // unasked, late, or from someone else: ignore
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	if !d.cfg.Global.isGatewayOf(p.q.ring)(from.ID) || d.take(qid) == nil {
		return
	}
	c := d.cfg.Gateways.cs.of(p.q.ring)
	c.vouch(from.ID)
	c.learn(roster, d.cfg.Now())
	q := p.q
	fail := func(err error) { q.cb(nil, identity.SignedRecord{}, err) }
	switch status {
	case DirUnknown:
		fail(fmt.Errorf("%w: %s", ErrRemoteUnknown, q.addr))
		return
	case DirRevoked:
		fail(fmt.Errorf("%w: %s", ErrRemoteRevoked, q.addr))
		return
	case DirOK:
	default:
		fail(fmt.Errorf("%w: ring %s could not look %s up", ErrRemoteUnavailable, q.ring.Short(), q.addr))
		return
	}
	f := d.cfg.Global.foreignTrust(q.ring)
	if f == nil {
		fail(fmt.Errorf("%w: ring %s", ErrNotAdmitted, q.ring.Short()))
		return
	}
	sr, err := identity.DecodeSignedRecord(raw)
	var rec *identity.Record
	if err == nil {
		caPub, _ := f.Trust.CA().PublicKey.(ed25519.PublicKey)
		rec, err = sr.Verify(caPub, d.cfg.Now(), f.Trust.IsRecordRevoked)
	}
	switch {
	case errors.Is(err, identity.ErrRevoked):
		fail(fmt.Errorf("%w: %s: %v", ErrRemoteRevoked, q.addr, err))
	case err != nil:
		fail(fmt.Errorf("%w: the answer for %s does not verify under ring %s's CA: %v", ErrRemoteUnavailable, q.addr, q.ring.Short(), err))
	case rec.Ring != q.ring || rec.Address != q.addr:
		fail(fmt.Errorf("%w: asked for %s of ring %s, got the record of %s of ring %s", ErrRemoteUnavailable, q.addr, q.ring.Short(), rec.Address, rec.Ring.Short()))
	default:
		q.cb(rec, sr, nil)
	}
}

// foreignTrust is an admitted ring's verified bundle (nil if it is not admitted now).
func (g *Global) foreignTrust(r ids.RingID) *ring.Foreign {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.admittedLocked(r) {
		return nil
	}
	return g.rings[r].foreign
}

// PeerRing is the ring a peer of the global ring proved membership of in its handshake.
func (g *Global) PeerRing(node ids.ID) (ids.RingID, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pe := g.peers[node]
	if pe == nil {
		return ids.RingID{}, false
	}
	return pe.ring, true
}
