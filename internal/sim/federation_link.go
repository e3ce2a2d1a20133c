package sim

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"epost/internal/appmux"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/multiring"
	"epost/internal/pastry"
	"epost/internal/scribe"
	"epost/internal/transport"
	"epost/internal/wire"
)

// The link between a ring's nodes and its gateways, as the simulator models it: the protocol
// of multiring.RingLink (a node asks a gateway of its ring, found through the ring's Scribe
// group "gateways", for another ring's user record, or hands it a sealed bundle, which the
// gateway answers once the other ring stored it or, after HandOffWait, once it holds it
// itself), over the ring's Pastry on simnet and on virtual time. multiring's components run
// on the wall clock, on goroutines, and behind TLS-authenticated admission, so the simulator
// speaks the same protocol with its own codec (appmux.TagDirectory on the ring's mux, as the
// daemon's RingLink), driven by the event loop.
//
// Two additions, both off with NoReceipts: a gateway acknowledges every request on receipt
// (linkTaken), so a requester takes a gateway silent for ReceiptTimeout for dead and asks
// another at once, and every answer carries the roster of the ring's gateways the answering
// gateway heard from lately (their Scribe beacons), so that the requester has others to ask
// without waiting for the Scribe tree to lose the dead one.

const (
	linkAsk    = 1
	linkTaken  = 2
	linkAnswer = 3

	askRecord  = 1
	askHandOff = 2

	stOK          = 1
	stUnknown     = 2 // no such user, or a ring not admitted
	stUnavailable = 3
	stRefused     = 4 // for good (malformed, not a gateway of the right ring)

	memberTTL  = time.Minute     // an anycast's member is used this long (RingLink, §6)
	rosterTTL  = time.Minute     // a roster heard is used this long
	excludeFor = 2 * time.Minute // a gateway that did not answer is avoided this long
	recordTTL  = 10 * time.Minute
	retryDelay = 2 * time.Second // after "no gateway could be found" or "unavailable"
	maxRoster  = 64
	maxLinkBuf = pastry.MaxPayload
)

var (
	errNoReceipt = errors.New("the gateway did not acknowledge the request")
	errNoAnswer  = errors.New("the gateway did not answer in time")
)

// rosterEntry is a gateway of one ring: its id, its address in its ring and in the global ring.
type rosterEntry struct {
	ID         ids.ID
	RingAddr   string
	GlobalAddr string
}

func writeRoster(w *wire.Writer, rs []rosterEntry) {
	w.Uvarint(uint64(len(rs)))
	for _, r := range rs {
		w.ID(r.ID)
		w.String(r.RingAddr)
		w.String(r.GlobalAddr)
	}
}

func readRoster(r *wire.Reader) []rosterEntry {
	n := r.Count(maxRoster, 3, "roster")
	out := make([]rosterEntry, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, rosterEntry{ID: r.ID(), RingAddr: r.String(64, "address"), GlobalAddr: r.String(64, "address")})
	}
	return out
}

// gatewayChoice is how a requester picks a gateway of one ring: at random among the roster
// it heard last (minus those it excluded), else the member the ring's gateway group gave
// lately, else a new anycast to the group.
type gatewayChoice struct {
	global    bool // handles are global-ring addresses (a gateway asking another ring's)
	roster    []rosterEntry
	rosterAt  time.Duration
	member    pastry.Handle
	memberTil time.Duration
	excluded  map[ids.ID]time.Duration
}

func (c *gatewayChoice) handle(r rosterEntry) pastry.Handle {
	if c.global {
		return pastry.Handle{ID: r.ID, Addr: r.GlobalAddr}
	}
	return pastry.Handle{ID: r.ID, Addr: r.RingAddr}
}

func (c *gatewayChoice) isExcluded(id ids.ID, now time.Duration) bool {
	until, ok := c.excluded[id]
	return ok && now < until
}

func (c *gatewayChoice) exclude(id ids.ID, now time.Duration) {
	if c.excluded == nil {
		c.excluded = map[ids.ID]time.Duration{}
	}
	c.excluded[id] = now + excludeFor
	if c.member.ID == id {
		c.member = pastry.Handle{}
	}
}

func (c *gatewayChoice) learn(rs []rosterEntry, now time.Duration) {
	if len(rs) == 0 {
		return
	}
	c.roster = slices.Clone(rs)
	slices.SortFunc(c.roster, func(a, b rosterEntry) int { return ids.Cmp(a.ID, b.ID) })
	c.rosterAt = now
}

// pick finds a gateway: anycast asks the group, valid checks the member it gives (the role
// its certificate carries).
func (c *gatewayChoice) pick(f *fedRun, anycast func(func(scribe.AnycastResult)) error, valid func(ids.ID) bool, cb func(pastry.Handle, error)) {
	now := f.net.Elapsed()
	if now < c.rosterAt+rosterTTL {
		var live []rosterEntry
		for _, r := range c.roster {
			if !c.isExcluded(r.ID, now) && valid(r.ID) {
				live = append(live, r)
			}
		}
		if len(live) > 0 {
			cb(c.handle(live[f.prng.IntN(len(live))]), nil)
			return
		}
	}
	if !c.member.ID.IsZero() && now < c.memberTil && !c.isExcluded(c.member.ID, now) {
		cb(c.member, nil)
		return
	}
	c.anycast(f, anycast, valid, 3, cb)
}

// anycast asks the group, at most tries times while the member it gives is excluded or not a
// gateway (§6: such a member is skipped and the anycast repeated).
func (c *gatewayChoice) anycast(f *fedRun, anycast func(func(scribe.AnycastResult)) error, valid func(ids.ID) bool, tries int, cb func(pastry.Handle, error)) {
	err := anycast(func(res scribe.AnycastResult) {
		now := f.net.Elapsed()
		switch {
		case res.Err != nil:
			cb(pastry.Handle{}, fmt.Errorf("%w: the gateway group: %v", multiring.ErrRemoteUnavailable, res.Err))
		case !valid(res.Member.ID) || c.isExcluded(res.Member.ID, now):
			if tries > 1 {
				c.anycast(f, anycast, valid, tries-1, cb)
				return
			}
			cb(pastry.Handle{}, fmt.Errorf("%w: the gateway group gave only gateways that did not answer", multiring.ErrRemoteUnavailable))
		default:
			c.member, c.memberTil = res.Member, now+memberTTL
			cb(res.Member, nil)
		}
	})
	if err != nil {
		cb(pastry.Handle{}, fmt.Errorf("%w: %v", multiring.ErrRemoteUnavailable, err))
	}
}

// fedLink is a node's side of the link: its questions to its ring's gateways.
type fedLink struct {
	f       *fedRun
	rr      *fedRing
	mn      *mailNode
	choice  gatewayChoice
	nextQID uint64
	pending map[uint64]*linkPending
	records map[string]cachedRemote
}

type linkPending struct {
	gw             ids.ID
	receipt, final transport.Timer
	cb             func(status byte, data []byte, err error)
}

type cachedRemote struct {
	rec   *identity.Record
	until time.Duration
}

func (f *fedRun) link(mn *mailNode) *fedLink {
	fl := f.links[mn]
	if fl == nil {
		fl = &fedLink{f: f, rr: f.ringOf(mn), mn: mn, pending: map[uint64]*linkPending{}, records: map[string]cachedRemote{}}
		f.links[mn] = fl
	}
	return fl
}

// wireLink puts the link's frames (TagDirectory on the ring's mux) before mn's applications;
// again after every restart, which builds them anew.
func (f *fedRun) wireLink(rr *fedRing, mn *mailNode) {
	drv := mn.sn.drv
	prev := drv.OnEvent
	drv.OnEvent = func(e pastry.Event) {
		if e.Kind == pastry.EventDirect && len(e.Payload) > 1 && e.Payload[0] == appmux.TagDirectory {
			f.onLinkFrame(rr, mn, e.Origin, e.Payload[1:])
			return
		}
		prev(e)
	}
}

func (f *fedRun) onLinkFrame(rr *fedRing, mn *mailNode, from pastry.Handle, b []byte) {
	r := wire.NewReader(b)
	switch r.U8() {
	case linkAsk:
		qid, what, dest := r.U64(), r.U8(), r.ID()
		addr := r.String(254, "address")
		entry := r.String(64, "entry")
		data := r.Bytes(maxLinkBuf, "data")
		if r.Done() != nil {
			return
		}
		if gw := rr.gatewayOn(mn); gw != nil && gw.alive {
			gw.serveLink(from, qid, what, dest, addr, entry, data)
		}
	case linkTaken:
		qid := r.U64()
		roster := readRoster(r)
		if r.Done() == nil && f.links[mn] != nil {
			f.links[mn].onTaken(from, qid, roster)
		}
	case linkAnswer:
		qid, status := r.U64(), r.U8()
		data := r.Bytes(maxLinkBuf, "data")
		roster := readRoster(r)
		if r.Done() == nil && f.links[mn] != nil {
			f.links[mn].onAnswer(from, qid, status, data, roster)
		}
	}
}

// ask sends a question to a gateway of the ring; cb gets its answer, or an error when none
// could be found or the one asked stayed silent (it is then avoided for a while).
func (fl *fedLink) ask(what byte, dest ids.RingID, addr, entry string, data []byte, cb func(status byte, data []byte, err error)) {
	f := fl.f
	mn := fl.mn
	anycast := func(res func(scribe.AnycastResult)) error {
		return mn.sc.Anycast(multiring.RingGatewayTopic(fl.rr.run.ringID), []byte{appmux.TagDirectory, 0}, res)
	}
	fl.choice.pick(f, anycast, func(id ids.ID) bool { return fl.rr.isGW[id] }, func(gw pastry.Handle, err error) {
		if err != nil {
			cb(0, nil, err)
			return
		}
		fl.nextQID++
		qid := fl.nextQID
		p := &linkPending{gw: gw.ID, cb: cb}
		fl.pending[qid] = p
		clock := mn.sn.ep.Clock()
		if !f.cfg.NoReceipts {
			p.receipt = clock.AfterFunc(f.cfg.ReceiptTimeout, func() {
				if fl.take(qid) != nil {
					f.stats.receiptTimeouts++
					fl.choice.exclude(gw.ID, f.net.Elapsed())
					cb(0, nil, errNoReceipt)
				}
			})
		}
		p.final = clock.AfterFunc(f.cfg.HandOffTimeout, func() {
			if fl.take(qid) != nil {
				fl.choice.exclude(gw.ID, f.net.Elapsed())
				cb(0, nil, errNoAnswer)
			}
		})
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(linkAsk)
		w.U64(qid)
		w.U8(what)
		w.ID(dest)
		w.String(addr)
		w.String(entry)
		w.Bytes(data)
		mn.sn.drv.Send(gw, w.B)
	})
}

func (fl *fedLink) take(qid uint64) *linkPending {
	p := fl.pending[qid]
	if p == nil {
		return nil
	}
	delete(fl.pending, qid)
	if p.receipt != nil {
		p.receipt.Stop()
	}
	p.final.Stop()
	return p
}

func (fl *fedLink) onTaken(from pastry.Handle, qid uint64, roster []rosterEntry) {
	p := fl.pending[qid]
	if p == nil || p.gw != from.ID {
		return
	}
	if p.receipt != nil {
		p.receipt.Stop()
		p.receipt = nil
	}
	fl.choice.learn(roster, fl.f.net.Elapsed())
}

func (fl *fedLink) onAnswer(from pastry.Handle, qid uint64, status byte, data []byte, roster []rosterEntry) {
	p := fl.pending[qid]
	if p == nil || p.gw != from.ID {
		return
	}
	fl.take(qid)
	fl.choice.learn(roster, fl.f.net.Elapsed())
	p.cb(status, data, nil)
}

// after runs fn on the node's clock (it dies with the node).
func (fl *fedLink) after(d time.Duration, fn func()) { fl.mn.sn.ep.Clock().AfterFunc(d, fn) }

// remoteRecord finds addr's record in ring dest through a gateway, verified under dest's CA
// (the trust its bundle carries), and keeps it recordTTL. Failures other than "no such user"
// are retried until it is found.
func (fl *fedLink) remoteRecord(dest ids.RingID, addr string, cb func(*identity.Record, error)) {
	f := fl.f
	if c, ok := fl.records[addr]; ok && f.net.Elapsed() < c.until {
		cb(c.rec, nil)
		return
	}
	fl.ask(askRecord, dest, addr, "", nil, func(status byte, data []byte, err error) {
		var rec *identity.Record
		if err == nil {
			switch status {
			case stOK:
				var sr identity.SignedRecord
				sr, err = identity.DecodeSignedRecord(data)
				if err == nil {
					rec, err = sr.Verify(f.trust[dest].CA, f.net.Now(), nil)
				}
				if err == nil && (rec.Ring != dest || rec.Address != addr) {
					err = fmt.Errorf("asked for %s of ring %s, got %s of ring %s", addr, dest.Short(), rec.Address, rec.Ring.Short())
				}
			case stUnknown:
				cb(nil, fmt.Errorf("%w: %s", multiring.ErrRemoteUnknown, addr))
				return
			default:
				err = fmt.Errorf("%w: %s", multiring.ErrRemoteUnavailable, addr)
			}
		}
		if err != nil {
			f.stats.recordsRetried++
			fl.after(retryAfter(err), func() { fl.remoteRecord(dest, addr, cb) })
			return
		}
		fl.records[addr] = cachedRemote{rec: rec, until: f.net.Elapsed() + recordTTL}
		cb(rec, nil)
	})
}

// handOff gives a sealed bundle to a gateway of the ring until one answers for it: m is
// accepted (the sender's 250) when a gateway says the other ring has it, or that it holds
// it itself. The same entry id and bundle go to every gateway tried.
func (fl *fedLink) handOff(m *fedMsg, bundle []byte) {
	f := fl.f
	fl.ask(askHandOff, m.toRing.run.ringID, m.from.addr, m.entry, bundle, func(status byte, detail []byte, err error) {
		switch {
		case err == nil && status == stOK:
			m.accepted, m.result, m.acceptedAt = true, true, f.net.Elapsed()
		case err == nil && status == stRefused:
			m.result, m.notAccepted = true, true
			f.progress(fmt.Sprintf("message %d refused by a gateway: %s", m.n, detail))
		default:
			if err == nil {
				err = fmt.Errorf("%w: the gateway could not pass it on: %s", multiring.ErrRemoteUnavailable, detail)
			}
			m.handoffRetries++
			f.stats.handoffsRetried++
			fl.after(retryAfter(err), func() { fl.handOff(m, bundle) })
		}
	})
}

// retryAfter: a gateway that stayed silent is replaced at once; when none could be found or
// the one asked could not help, wait a little.
func retryAfter(err error) time.Duration {
	if errors.Is(err, errNoReceipt) || errors.Is(err, errNoAnswer) {
		return 0
	}
	return retryDelay
}
