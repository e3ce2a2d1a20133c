package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/appmux"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailqueue"
	"epost/internal/multiring"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
	"epost/internal/simnet"
	"epost/internal/transport"
	"epost/internal/wire"
)

// A gateway, as the simulator models it: a node of its ring (PAST, Scribe and POST like the
// others, no users) that also runs a second Pastry node in the global ring (ring id 0, same
// node id, an endpoint of its own at the same place) with Scribe and the relay and directory
// protocols of multiring, and nothing else: no PAST, no Glacier. The global endpoint admits
// frames only from gateways of rings that multiring.Admission admitted (DNS through the fake
// resolver); the ring a peer belongs to is what its certificate chain would prove.
//
// The daemon's rules for custody (docs/gateway-design.md §0): a gateway answers a node's
// hand-off once a gateway of the destination ring answered that the message is stored there
// (post.Node.DeliverRemote, quorum-acknowledged), or after HandOffWait with the message in its
// own queue, which then tries again with mailqueue's backoff until the other ring has it. A
// gateway that dies before it answered has taken nothing: the node hands the message to
// another gateway, and the recipient files each notification id once.

const (
	relayDeliver = 1
	relayTaken   = 2
	relayResult  = 3

	dirQuery  = 1
	dirTaken  = 2
	dirAnswer = 3

	rcptDelivered = 1
	rcptUnknown   = 2
	rcptRevoked   = 3
	rcptFailed    = 4

	beaconEvery    = 5 * time.Second
	beaconLive     = 3*beaconEvery + time.Second
	globalLeafSet  = 16 // daemon.GlobalLeafSet
	fastRelayTries = 3  // relay retries without backoff (another gateway of the other ring)
)

type fedGateway struct {
	f  *fedRun
	rr *fedRing
	mn *mailNode

	gep      *simnet.Endpoint
	gdrv     *pastry.Driver
	gsc      *scribe.Scribe
	stopGsc  func()
	ready    bool
	alive    bool
	joinedAt time.Duration
	diedAt   time.Duration

	adm       *multiring.Admission
	decisions map[ids.RingID]multiring.Decision
	heard     map[ids.ID]heardGateway // gateways of its ring, from their beacons
	remote    map[ids.RingID]*gatewayChoice
	handling  map[string]*gwEntry // hand-offs being passed on or held, by entry id
	done      map[string]bool     // entries the other ring has
	nextQID   uint64
	dirs      map[uint64]*dirPending
	unknown   uint64 // global-ring payloads for an application the global mux does not run
	bytesOut  uint64
}

type heardGateway struct {
	entry rosterEntry
	at    time.Duration
}

// gwEntry is a hand-off this gateway took from a node of its ring.
type gwEntry struct {
	id       string
	dest     ids.RingID
	bundle   []byte
	waiters  []linkWaiter
	answered bool // a node heard OK: this gateway holds it from then on
	queued   bool // answered before the other ring had it
	attempts int
	fast     int
	peer     ids.ID // the other ring's gateway being asked
	took     bool   // it acknowledged the relay
	timers   []transport.Timer
	retry    transport.Timer
}

type linkWaiter struct {
	node pastry.Handle
	qid  uint64
}

type dirPending struct {
	peer           ids.ID
	receipt, final transport.Timer
	cb             func(status byte, data []byte, roster []rosterEntry, err error)
}

// newGateway gives mn the gateway role and a global-ring endpoint (not started yet).
func (f *fedRun) newGateway(rr *fedRing, mn *mailNode) *fedGateway {
	gw := &fedGateway{f: f, rr: rr, mn: mn, alive: true, decisions: map[ids.RingID]multiring.Decision{},
		heard: map[ids.ID]heardGateway{}, remote: map[ids.RingID]*gatewayChoice{}, handling: map[string]*gwEntry{},
		done: map[string]bool{}, dirs: map[uint64]*dirPending{}}
	rr.isGW[mn.sn.ep.ID()] = true
	sep := mn.sn.ep
	gw.gep = f.net.AddNodeAt(sep.ID(), "g-"+sep.LocalAddr(), sep.X, sep.Y)
	f.peerRing[sep.ID()] = rr.run.ringID
	gw.adm = &multiring.Admission{Resolver: f.dns, Now: gw.gep.Clock().Now}
	return gw
}

func (rr *fedRing) gatewayOn(mn *mailNode) *fedGateway {
	for _, gw := range rr.gws {
		if gw.mn == mn {
			return gw
		}
	}
	return nil
}

// serveRing joins the ring's gateway group and starts the beacons.
func (gw *fedGateway) serveRing() {
	_ = gw.mn.sc.Subscribe(multiring.RingGatewayTopic(gw.rr.run.ringID), gwRingMember{gw})
	gw.heard[gw.id()] = heardGateway{entry: gw.entry()}
	gw.beacon()
}

func (gw *fedGateway) id() ids.ID { return gw.mn.sn.ep.ID() }

func (gw *fedGateway) entry() rosterEntry {
	return rosterEntry{ID: gw.id(), RingAddr: gw.mn.sn.ep.LocalAddr(), GlobalAddr: gw.gep.LocalAddr()}
}

func (gw *fedGateway) clock() transport.Clock { return gw.mn.sn.ep.Clock() }

// beacon tells the ring's other gateways this one is alive (Scribe multicast on the group).
func (gw *fedGateway) beacon() {
	if !gw.alive {
		return
	}
	if !gw.f.cfg.NoReceipts {
		var w wire.Writer
		writeRoster(&w, []rosterEntry{gw.entry()})
		_ = gw.mn.sc.Multicast(multiring.RingGatewayTopic(gw.rr.run.ringID), w.B)
	}
	gw.clock().AfterFunc(beaconEvery, gw.beacon)
}

// roster is the gateways of its ring this gateway heard from lately, itself first.
func (gw *fedGateway) roster() []rosterEntry {
	if gw.f.cfg.NoReceipts {
		return nil
	}
	now := gw.f.net.Elapsed()
	out := []rosterEntry{gw.entry()}
	for _, h := range gw.heard {
		if h.entry.ID != gw.id() && now-h.at < beaconLive {
			out = append(out, h.entry)
		}
	}
	slices.SortFunc(out[1:], func(a, b rosterEntry) int { return ids.Cmp(a.ID, b.ID) })
	return out
}

type gwRingMember struct{ gw *fedGateway }

func (m gwRingMember) Deliver(_ ids.Key, payload []byte) {
	r := wire.NewReader(payload)
	rs := readRoster(r)
	if r.Done() != nil {
		return
	}
	for _, e := range rs {
		if m.gw.rr.isGW[e.ID] {
			m.gw.heard[e.ID] = heardGateway{entry: e, at: m.gw.f.net.Elapsed()}
		}
	}
}

func (m gwRingMember) AnycastAccept(ids.Key, []byte) bool { return m.gw.alive }

// startGlobal starts the gateway's global-ring node: Pastry with Scribe, the relay and the
// directory on its mux, behind admission.
func (gw *fedGateway) startGlobal(bootstrap []string) {
	f := gw.f
	self := pastry.Handle{ID: gw.id(), Addr: gw.gep.LocalAddr()}
	mux := appmux.New()
	mux.OnUnknown = func(pastry.Event) { gw.unknown++ }
	clock := gw.gep.Clock()
	pc := pastry.Config{Ring: ids.GlobalRing, LeafSetSize: globalLeafSet}
	gw.gdrv = pastry.NewDriver(pc, self, rand.New(rand.NewPCG(f.rng.Uint64(), 0x676c6f62)), mux.Forward, globalPort{gw}, clock, f.cfg.Tick)
	gw.gsc = scribe.New(scribe.Config{Ring: ids.GlobalRing, Now: clock.Now, Rand: rand.New(rand.NewPCG(f.rng.Uint64(), 0x73637269))}, gw.gdrv)
	_ = mux.Register(appmux.TagScribe, gw.gsc)
	_ = mux.Register(appmux.TagRelay, gwGlobalApp{gw, appmux.TagRelay})
	_ = mux.Register(appmux.TagDirectory, gwGlobalApp{gw, appmux.TagDirectory})
	gw.gdrv.OnEvent = func(e pastry.Event) {
		if e.Kind == pastry.EventReady && !gw.ready {
			gw.ready = true
			gw.joinedAt = f.net.Elapsed()
			_ = gw.gsc.Subscribe(multiring.GatewayTopic(gw.rr.run.ringID), gwGlobalMember{gw})
		}
		mux.OnEvent(e)
	}
	gw.gep.SetHandler(func(from transport.From, frame []byte) {
		r, ok := f.peerRing[from.ID]
		if !ok || !gw.admitted(r) {
			f.stats.unadmittedFrames++
			return
		}
		gw.gdrv.Handle(from, frame)
	})
	gw.gdrv.Start(bootstrap)
	gw.stopGsc = gw.gsc.RunTicker(clock, time.Second)
}

// admitted asks admission about ring r (the decision is kept until it runs out).
func (gw *fedGateway) admitted(r ids.RingID) bool {
	now := gw.gep.Clock().Now()
	d, ok := gw.decisions[r]
	if !ok || !now.Before(d.Until) {
		fr := gw.f.foreign[r]
		if fr == nil {
			return false
		}
		d = gw.adm.Check(context.Background(), fr)
		if !d.Admitted && !gw.f.refusalNoted[r] {
			gw.f.refusalNoted[r] = true
			gw.f.progress(fmt.Sprintf("gateway %s of %s: %s", gw.id().Short(), gw.rr.name, d))
		}
		gw.decisions[r] = d
	}
	return d.Admitted
}

// globalPort is the gateway's global-ring transport: its own endpoint, counted.
type globalPort struct{ gw *fedGateway }

func (p globalPort) LocalAddr() string { return p.gw.gep.LocalAddr() }
func (p globalPort) Close() error      { return p.gw.gep.Close() }
func (p globalPort) Send(to ids.ID, addr string, frame []byte) error {
	p.gw.bytesOut += uint64(len(frame))
	p.gw.f.globalBytes += uint64(len(frame))
	return p.gw.gep.Send(to, addr, frame)
}

type gwGlobalMember struct{ gw *fedGateway }

func (gwGlobalMember) Deliver(ids.Key, []byte)              {}
func (m gwGlobalMember) AnycastAccept(ids.Key, []byte) bool { return m.gw.alive }

// gwGlobalApp is the relay (TagRelay) or the directory (TagDirectory) on the global mux.
type gwGlobalApp struct {
	gw  *fedGateway
	tag byte
}

func (gwGlobalApp) Forward(_ ids.ID, payload []byte, _ pastry.Handle) ([]byte, bool) {
	return payload, true
}

func (a gwGlobalApp) HandleEvent(e pastry.Event) bool {
	if e.Kind != pastry.EventDirect || len(e.Payload) < 2 || e.Payload[0] != a.tag || !a.gw.alive {
		return false
	}
	r := wire.NewReader(e.Payload[1:])
	if a.tag == appmux.TagRelay {
		a.gw.onRelay(e.Origin, r)
	} else {
		a.gw.onDir(e.Origin, r)
	}
	return true
}

// crash stops the gateway for good: both its nodes, with what its queue holds.
func (gw *fedGateway) crash() {
	f := gw.f
	gw.alive = false
	gw.diedAt = f.net.Elapsed()
	for _, e := range gw.handling {
		if e.answered {
			f.stats.custodyLost++
		}
	}
	gw.rr.run.crash(gw.mn)
	if gw.gdrv != nil {
		gw.gsc.Stop()
		gw.stopGsc()
		gw.gdrv.Stop()
	}
	gw.gep.Crash()
}

// serveLink answers a node of its ring.
func (gw *fedGateway) serveLink(from pastry.Handle, qid uint64, what byte, dest ids.RingID, addr, entry string, data []byte) {
	if !gw.f.cfg.NoReceipts {
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(linkTaken)
		w.U64(qid)
		writeRoster(&w, gw.roster())
		gw.mn.sn.drv.Send(from, w.B)
	}
	switch what {
	case askRecord:
		gw.lookupRemote(dest, addr, fastRelayTries, func(status byte, rec []byte) { gw.answerLink(from, qid, status, rec) })
	case askHandOff:
		gw.takeHandOff(from, qid, entry, data)
	default:
		gw.answerLink(from, qid, stRefused, []byte("unknown question"))
	}
}

func (gw *fedGateway) answerLink(to pastry.Handle, qid uint64, status byte, data []byte) {
	if !gw.alive {
		return
	}
	var w wire.Writer
	w.U8(appmux.TagDirectory)
	w.U8(linkAnswer)
	w.U64(qid)
	w.U8(status)
	w.Bytes(data)
	writeRoster(&w, gw.roster())
	gw.mn.sn.drv.Send(to, w.B)
}

// takeHandOff: pass the bundle straight to a gateway of its ring, and answer the node once
// that ring has it, or after HandOffWait with the entry held here.
func (gw *fedGateway) takeHandOff(from pastry.Handle, qid uint64, entry string, data []byte) {
	f := gw.f
	if gw.done[entry] {
		gw.answerLink(from, qid, stOK, nil)
		return
	}
	if e := gw.handling[entry]; e != nil { // the same entry again (a node that gave up on us, then came back)
		if e.answered {
			gw.answerLink(from, qid, stOK, nil)
		} else {
			e.waiters = append(e.waiters, linkWaiter{from, qid})
		}
		return
	}
	b, err := post.DecodeRemoteBundle(data)
	switch {
	case err != nil:
	case b.Dest == gw.rr.run.ringID:
		err = errors.New("a bundle for this ring itself")
	case !gw.admitted(b.Dest):
		err = fmt.Errorf("%w: ring %s", multiring.ErrNotAdmitted, b.Dest.Short())
	}
	if err != nil {
		gw.answerLink(from, qid, stRefused, []byte(err.Error()))
		return
	}
	e := &gwEntry{id: entry, dest: b.Dest, bundle: data, waiters: []linkWaiter{{from, qid}}}
	gw.handling[entry] = e
	gw.clock().AfterFunc(f.cfg.HandOffWait, func() {
		if gw.handling[entry] == e && !e.answered {
			e.queued = true
			f.stats.queued++
			gw.answerWaiters(e)
		}
	})
	gw.relay(e)
}

func (gw *fedGateway) answerWaiters(e *gwEntry) {
	e.answered = true
	for _, w := range e.waiters {
		gw.answerLink(w.node, w.qid, stOK, nil)
	}
	e.waiters = nil
}

func (gw *fedGateway) choiceFor(r ids.RingID) *gatewayChoice {
	c := gw.remote[r]
	if c == nil {
		c = &gatewayChoice{global: true}
		gw.remote[r] = c
	}
	return c
}

// pickRemote finds a gateway of ring r in the global ring: its roster, else its group.
func (gw *fedGateway) pickRemote(r ids.RingID, tag byte, cb func(pastry.Handle, error)) {
	f := gw.f
	anycast := func(res func(scribe.AnycastResult)) error {
		return gw.gsc.Anycast(multiring.GatewayTopic(r), []byte{tag, 0}, res)
	}
	valid := func(id ids.ID) bool {
		pr, ok := f.peerRing[id]
		return ok && pr == r
	}
	gw.choiceFor(r).pick(f, anycast, valid, cb)
}

func (gw *fedGateway) stopTimers(e *gwEntry) {
	for _, t := range e.timers {
		t.Stop()
	}
	e.timers = nil
	e.peer = ids.Zero
}

// relay hands entry e to a gateway of its destination ring.
func (gw *fedGateway) relay(e *gwEntry) {
	f := gw.f
	e.attempts++
	gw.pickRemote(e.dest, appmux.TagRelay, func(peer pastry.Handle, err error) {
		if !gw.alive || gw.handling[e.id] != e {
			return
		}
		if err != nil {
			gw.retry(e, false)
			return
		}
		gw.stopTimers(e)
		e.peer, e.took = peer.ID, false
		silent := func() {
			if e.peer == peer.ID && gw.handling[e.id] == e {
				gw.choiceFor(e.dest).exclude(peer.ID, f.net.Elapsed())
				gw.retry(e, true)
			}
		}
		if !f.cfg.NoReceipts {
			e.timers = append(e.timers, gw.clock().AfterFunc(f.cfg.ReceiptTimeout, func() {
				if !e.took {
					f.stats.receiptTimeouts++
					silent()
				}
			}))
		}
		e.timers = append(e.timers, gw.clock().AfterFunc(f.cfg.RelayTimeout, silent))
		var w wire.Writer
		w.U8(appmux.TagRelay)
		w.U8(relayDeliver)
		w.String(e.id)
		w.Bytes(e.bundle)
		gw.gdrv.Send(peer, w.B)
	})
}

// retry tries e again: at once with another gateway after one stayed silent (a few times),
// else after mailqueue's federation backoff.
func (gw *fedGateway) retry(e *gwEntry, silent bool) {
	gw.f.stats.relaysRetried++
	gw.stopTimers(e)
	if e.retry != nil {
		e.retry.Stop()
	}
	if silent && e.fast < fastRelayTries {
		e.fast++
		gw.relay(e)
		return
	}
	e.retry = gw.clock().AfterFunc(mailqueue.DefaultBackoff(mailqueue.KindFederation, e.attempts), func() {
		if gw.handling[e.id] == e {
			gw.relay(e)
		}
	})
}

func (gw *fedGateway) onRelay(from pastry.Handle, r *wire.Reader) {
	switch r.U8() {
	case relayDeliver:
		entry := r.String(64, "entry")
		raw := r.Bytes(multiring.MaxRelayBundle, "bundle")
		if r.Done() == nil {
			gw.onRelayDeliver(from, entry, raw)
		}
	case relayTaken:
		entry := r.String(64, "entry")
		roster := readRoster(r)
		if r.Done() != nil {
			return
		}
		gw.learnRemote(from, roster)
		if e := gw.handling[entry]; e != nil && e.peer == from.ID {
			e.took = true
		}
	case relayResult:
		entry := r.String(64, "entry")
		n := r.Count(1000, 2, "results")
		refused, pending := 0, 0
		for i := 0; i < n && r.Err() == nil; i++ {
			_ = r.String(254, "recipient")
			switch r.U8() {
			case rcptDelivered:
			case rcptUnknown, rcptRevoked:
				refused++
			default:
				pending++
			}
		}
		roster := readRoster(r)
		if r.Done() != nil {
			return
		}
		gw.learnRemote(from, roster)
		e := gw.handling[entry]
		if e == nil {
			return
		}
		if pending == 0 { // the other ring stored it for every recipient it knows
			gw.finish(e)
			return
		}
		if e.peer == from.ID {
			gw.retry(e, false)
		}
	}
}

func (gw *fedGateway) learnRemote(from pastry.Handle, roster []rosterEntry) {
	if r, ok := gw.f.peerRing[from.ID]; ok {
		gw.choiceFor(r).learn(roster, gw.f.net.Elapsed())
	}
}

// finish: the other ring has e; the node hears so if it is still waiting.
func (gw *fedGateway) finish(e *gwEntry) {
	gw.stopTimers(e)
	if e.retry != nil {
		e.retry.Stop()
	}
	delete(gw.handling, e.id)
	gw.done[e.id] = true
	if !e.answered {
		gw.answerWaiters(e)
	}
}

// onRelayDeliver stores a bundle from another ring's gateway in this ring (DeliverRemote) and
// answers once every recipient's notification is quorum-stored.
func (gw *fedGateway) onRelayDeliver(from pastry.Handle, entry string, raw []byte) {
	f := gw.f
	if !f.cfg.NoReceipts {
		var w wire.Writer
		w.U8(appmux.TagRelay)
		w.U8(relayTaken)
		w.String(entry)
		writeRoster(&w, gw.roster())
		gw.gdrv.Send(from, w.B)
	}
	b, err := post.DecodeRemoteBundle(raw)
	if err != nil || b.Dest != gw.rr.run.ringID {
		return
	}
	gw.mn.post.DeliverRemote(b, func(results []post.Result) {
		if !gw.alive {
			return
		}
		var w wire.Writer
		w.U8(appmux.TagRelay)
		w.U8(relayResult)
		w.String(entry)
		w.Uvarint(uint64(len(results)))
		for _, res := range results {
			code := byte(rcptFailed)
			switch res.Status {
			case post.Accepted:
				code = rcptDelivered
			case post.UnknownRecipient:
				code = rcptUnknown
			case post.RevokedRecipient:
				code = rcptRevoked
			}
			w.String(res.To)
			w.U8(code)
		}
		writeRoster(&w, gw.roster())
		gw.gdrv.Send(from, w.B)
	})
}

// lookupRemote asks ring r's gateways for addr's record (the directory, §5.2); cb gets the
// signed record's bytes (the node verifies it) or why not.
func (gw *fedGateway) lookupRemote(r ids.RingID, addr string, tries int, cb func(status byte, rec []byte)) {
	f := gw.f
	if !gw.admitted(r) {
		cb(stUnknown, nil)
		return
	}
	again := func(wait time.Duration) {
		if tries <= 1 {
			cb(stUnavailable, nil)
			return
		}
		gw.clock().AfterFunc(wait, func() { gw.lookupRemote(r, addr, tries-1, cb) })
	}
	gw.pickRemote(r, appmux.TagDirectory, func(peer pastry.Handle, err error) {
		if !gw.alive {
			return
		}
		if err != nil {
			again(time.Second)
			return
		}
		gw.nextQID++
		qid := gw.nextQID
		p := &dirPending{peer: peer.ID}
		gw.dirs[qid] = p
		silent := func() {
			if gw.takeDir(qid) != nil {
				gw.choiceFor(r).exclude(peer.ID, f.net.Elapsed())
				again(0)
			}
		}
		if !f.cfg.NoReceipts {
			p.receipt = gw.clock().AfterFunc(f.cfg.ReceiptTimeout, func() {
				f.stats.receiptTimeouts++
				silent()
			})
		}
		p.final = gw.clock().AfterFunc(f.cfg.DirTimeout, silent)
		p.cb = func(status byte, rec []byte, roster []rosterEntry, _ error) {
			gw.choiceFor(r).learn(roster, f.net.Elapsed())
			if status == stUnavailable {
				again(time.Second)
				return
			}
			cb(status, rec)
		}
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(dirQuery)
		w.U64(qid)
		w.String(addr)
		gw.gdrv.Send(peer, w.B)
	})
}

func (gw *fedGateway) takeDir(qid uint64) *dirPending {
	p := gw.dirs[qid]
	if p == nil {
		return nil
	}
	delete(gw.dirs, qid)
	if p.receipt != nil {
		p.receipt.Stop()
	}
	p.final.Stop()
	return p
}

func (gw *fedGateway) onDir(from pastry.Handle, r *wire.Reader) {
	switch r.U8() {
	case dirQuery:
		qid := r.U64()
		addr := r.String(254, "address")
		if r.Done() == nil {
			gw.answerDir(from, qid, addr)
		}
	case dirTaken:
		qid := r.U64()
		roster := readRoster(r)
		if p := gw.dirs[qid]; r.Done() == nil && p != nil && p.peer == from.ID {
			if p.receipt != nil {
				p.receipt.Stop()
				p.receipt = nil
			}
			gw.learnRemote(from, roster)
		}
	case dirAnswer:
		qid, status := r.U64(), r.U8()
		rec := r.Bytes(4096, "record")
		roster := readRoster(r)
		if p := gw.dirs[qid]; r.Done() == nil && p != nil && p.peer == from.ID {
			gw.takeDir(qid)
			p.cb(status, rec, roster, nil)
		}
	}
}

// answerDir looks a user of this ring up for another ring's gateway.
func (gw *fedGateway) answerDir(from pastry.Handle, qid uint64, addr string) {
	if !gw.f.cfg.NoReceipts {
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(dirTaken)
		w.U64(qid)
		writeRoster(&w, gw.roster())
		gw.gdrv.Send(from, w.B)
	}
	gw.mn.post.LookupRecord(addr, func(_ *identity.Record, sr identity.SignedRecord, err error) {
		if !gw.alive {
			return
		}
		status := byte(stOK)
		var data []byte
		switch {
		case err == nil:
			data = sr.Encode()
		case errors.Is(err, post.ErrUnknownRecipient), errors.Is(err, post.ErrRevokedRecipient):
			status = stUnknown
		default:
			status = stUnavailable
		}
		var w wire.Writer
		w.U8(appmux.TagDirectory)
		w.U8(dirAnswer)
		w.U64(qid)
		w.U8(status)
		w.Bytes(data)
		writeRoster(&w, gw.roster())
		gw.gdrv.Send(from, w.B)
	})
}
