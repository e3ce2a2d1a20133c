package sim

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/simnet"
)

// joinGlobal starts the gateways' global-ring nodes, each joining through the nearest one
// already there, then lets a ring nobody confirms knock: every gateway decides about every
// ring, and the stranger stays outside.
func (f *fedRun) joinGlobal() {
	for i, gw := range f.gws {
		var bootstrap []string
		if i > 0 {
			best := f.gws[0]
			for _, o := range f.gws[:i] {
				if o.ready && f.net.Latency(o.gep, gw.gep) < f.net.Latency(best.gep, gw.gep) {
					best = o
				}
			}
			bootstrap = []string{best.gep.LocalAddr()}
		}
		gw.startGlobal(bootstrap)
		f.net.RunFor(200 * time.Millisecond)
	}
	for wait := 0; wait < 120 && !f.globalReady(); wait++ {
		f.net.RunFor(time.Second)
	}
	f.stranger = f.newStranger()
	f.net.RunFor(30 * time.Second)
	for _, gw := range f.gws {
		for _, r := range f.askedRings() {
			gw.admitted(r)
		}
	}
	f.runStart = window{at: f.net.Elapsed(), bytes: f.globalBytes}
}

func (f *fedRun) globalReady() bool {
	for _, gw := range f.gws {
		if !gw.ready {
			return false
		}
	}
	return true
}

// askedRings is every ring whose gateways came to the global ring: the federation's and the
// stranger's.
func (f *fedRun) askedRings() []ids.RingID {
	var out []ids.RingID
	for _, rr := range f.rings {
		out = append(out, rr.run.ringID)
	}
	if f.stranger != nil {
		out = append(out, f.stranger.ring)
	}
	return out
}

// strangerGateway is a gateway of a ring whose descriptor claims ring0's domain: DNS names
// ring0 there, so admission refuses it and its frames never reach the global overlay.
type strangerGateway struct {
	ring ids.RingID
	ep   *simnet.Endpoint
	drv  *pastry.Driver
}

func (f *fedRun) newStranger() *strangerGateway {
	var seed [32]byte
	fill(f.rng, seed[:])
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	s := &strangerGateway{ring: ids.RingIDOfCA(pub)}
	f.foreign[s.ring] = &ring.Foreign{Descriptor: &ring.Descriptor{Version: ring.DescriptorVersion, Name: "stranger",
		RingID: s.ring, Domains: []string{f.rings[0].domain}}}
	id := f.rings[0].run.ring.randomID()
	s.ep = f.net.AddNode(id, "stranger")
	f.peerRing[id] = s.ring
	s.drv = pastry.NewDriver(pastry.Config{Ring: ids.GlobalRing, LeafSetSize: globalLeafSet}, pastry.Handle{ID: id, Addr: "stranger"},
		rand.New(rand.NewPCG(f.rng.Uint64(), 1)), nil, s.ep, s.ep.Clock(), f.cfg.Tick)
	s.ep.SetHandler(s.drv.Handle)
	s.drv.Start([]string{f.gws[0].gep.LocalAddr()})
	return s
}

func (f *fedRun) admitResult() FedResult {
	res := FedResult{Phase: "admit"}
	ready := 0
	for _, gw := range f.gws {
		if gw.ready {
			ready++
		}
	}
	admitted, refused, split := 0, 0, 0
	for _, r := range f.askedRings() {
		n := 0
		for _, gw := range f.gws {
			if gw.decisions[r].Admitted {
				n++
			}
		}
		switch n {
		case len(f.gws):
			admitted++
		case 0:
			refused++
		default:
			split++
		}
	}
	strangerIn := f.stranger.drv.Ready()
	f.stranger.drv.Stop()
	f.stranger.ep.Crash()
	res.add("rings_asking", float64(len(f.askedRings())))
	res.add("admitted", float64(admitted))
	res.add("refused", float64(refused))
	if split > 0 {
		res.add("split_decisions", float64(split))
	}
	res.add("gateways_ready", float64(ready))
	res.add("refused_ring_joined", b2f(strangerIn))
	res.add("unadmitted_frames", float64(f.stats.unadmittedFrames))
	return res
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// send sends Messages messages at SendRate from random online users, a share Inter of them to
// a user of another ring; halfway through, FailGateways gateways of every ring crash.
func (f *fedRun) send() {
	cfg := f.cfg
	var senders []*simUser
	senderRing := map[*simUser]*fedRing{}
	for _, rr := range f.rings {
		for _, su := range rr.users {
			if !su.node.offline && su.u != nil {
				senders = append(senders, su)
				senderRing[su] = rr
			}
		}
	}
	interval := time.Duration(float64(time.Second) / cfg.SendRate)
	f.sendWindow = window{at: f.net.Elapsed(), bytes: f.globalBytes}
	for i := 0; i < cfg.Messages; i++ {
		if i == cfg.Messages/2 && cfg.FailGateways > 0 {
			f.failGateways()
		}
		from := senders[f.rng.IntN(len(senders))]
		m := &fedMsg{fromRing: senderRing[from]}
		m.n, m.from = i, from
		if cfg.Rings > 1 && f.rng.Float64() < cfg.Inter {
			j := f.rng.IntN(len(f.rings) - 1)
			if j >= m.fromRing.idx {
				j++
			}
			m.inter, m.toRing = true, f.rings[j]
			m.to = m.toRing.users[f.rng.IntN(len(m.toRing.users))]
		} else {
			m.toRing = m.fromRing
			for m.to == nil || m.to == from {
				m.to = m.toRing.users[f.rng.IntN(len(m.toRing.users))]
			}
		}
		m.offline = m.to.node.offline
		body := make([]byte, cfg.MinBody+f.rng.IntN(cfg.MaxBody-cfg.MinBody+1))
		for j := range body {
			body[j] = 'a' + byte(f.rng.IntN(26))
		}
		copy(body[len(body)/3:], fmt.Sprintf(" %s %d ", cfg.Marker, i))
		fill(f.rng, m.id[:])
		var entry [16]byte
		fill(f.rng, entry[:])
		m.entry = hex.EncodeToString(entry[:])
		f.byID[m.id] = &m.simMsg
		f.msgs = append(f.msgs, m)
		m.startAt = f.net.Elapsed()
		if m.inter {
			f.sendInter(m, [][]byte{body})
		} else {
			f.sendIntra(m, [][]byte{body}, 3)
		}
		f.net.RunFor(interval)
		if (i+1)%max(1, cfg.Messages/10) == 0 {
			f.progress(fmt.Sprintf("%d messages sent", i+1))
		}
	}
	for wait := 0; wait < 120 && !f.allAnswered(); wait++ {
		f.net.RunFor(time.Second)
	}
	f.net.RunFor(20 * time.Second)
}

func (f *fedRun) allAnswered() bool {
	for _, m := range f.msgs {
		if !m.result {
			return false
		}
	}
	return true
}

// sendIntra is `epost sim mail`'s send, retried (with the same id) when it was not accepted,
// as a mail client retries a 451.
func (f *fedRun) sendIntra(m *fedMsg, parts [][]byte, tries int) {
	if !m.committed {
		m.committed, m.sentAt = true, f.net.Elapsed()
	}
	m.from.u.SendWithIDs([]string{m.to.addr}, []post.NotificationID{m.id}, parts, func(res []post.Result) {
		switch {
		case res[0].Status == post.Accepted:
			m.accepted, m.result, m.acceptedAt = true, true, f.net.Elapsed()
		case tries > 1:
			f.link(m.from.node).after(5*time.Second, func() { f.sendIntra(m, parts, tries-1) })
		default:
			f.giveUp(m, fmt.Sprintf("%s %v", res[0].Status, res[0].Err))
		}
	})
}

// giveUp: the sender was told the message cannot be sent. When every replica of the
// recipient's record is on an offline node (the offline nodes are chosen without regard to
// PAST's replica sets), the recipient is unknown to its ring until they return: counted apart.
func (f *fedRun) giveUp(m *fedMsg, why string) {
	m.result, m.notAccepted = true, true
	k := identity.RecordKey(m.toRing.run.ringID, m.to.addr)
	live, offline := 0, 0
	for _, mn := range m.toRing.run.nodes {
		if _, err := mn.st.Get(k); err == nil {
			if mn.sn.alive {
				live++
			} else {
				offline++
			}
		}
	}
	if live == 0 && offline > 0 {
		f.stats.recordOffline++
	}
	if f.stats.notAccepted++; f.stats.notAccepted <= 10 {
		f.progress(fmt.Sprintf("message %d to %s not accepted: %s (its record is held by %d live and %d offline nodes)", m.n, m.to.addr, why, live, offline))
	}
}

// sendInter: the recipient's record through a gateway (RCPT time), then the message sealed
// for the other ring (the commit: latency counts from here) and handed to a gateway.
func (f *fedRun) sendInter(m *fedMsg, parts [][]byte) {
	fl := f.link(m.from.node)
	dest := m.toRing.run.ringID
	fl.remoteRecord(dest, m.to.addr, func(rec *identity.Record, err error) {
		var b *post.RemoteBundle
		if err == nil {
			b, err = m.from.u.SealRemote(dest, []*identity.Record{rec}, []post.NotificationID{m.id}, parts)
		}
		if err != nil {
			f.giveUp(m, err.Error())
			return
		}
		m.committed, m.sentAt = true, f.net.Elapsed()
		fl.handOff(m, b.Encode())
	})
}

// failGateways crashes FailGateways gateways of every ring, for good.
func (f *fedRun) failGateways() {
	f.failAt = f.net.Elapsed()
	n := 0
	for _, rr := range f.rings {
		gws := slices.Clone(rr.gws)
		f.rng.Shuffle(len(gws), func(i, j int) { gws[i], gws[j] = gws[j], gws[i] })
		for _, gw := range gws[:f.cfg.FailGateways] {
			gw.crash()
			n++
		}
	}
	f.progress(fmt.Sprintf("%d gateways crashed, %d hand-offs they had answered for still held", n, f.stats.custodyLost))
}

func (f *fedRun) failResult() FedResult {
	res := FedResult{Phase: "fail"}
	failed := 0
	for _, gw := range f.gws {
		if !gw.alive {
			failed++
		}
	}
	res.add("failed_gateways", float64(failed))
	res.add("at_s", float64(f.failAt-f.sendWindow.at)/float64(time.Second))
	res.add("handoffs_retried", float64(f.stats.handoffsRetried))
	res.add("records_retried", float64(f.stats.recordsRetried))
	res.add("relays_retried", float64(f.stats.relaysRetried))
	res.add("receipt_timeouts", float64(f.stats.receiptTimeouts))
	res.add("answered_queued", float64(f.stats.queued))
	res.add("custody_lost", float64(f.stats.custodyLost))
	return res
}

// drain runs until every accepted message is filed and no gateway holds anything (at most 15
// virtual minutes), then measures the global ring at rest for a minute.
func (f *fedRun) drain() {
	for wait := 0; wait < 180 && !f.drained(); wait++ {
		f.net.RunFor(5 * time.Second)
		if wait%12 == 11 {
			f.progress(f.drainNote())
		}
	}
	f.net.RunFor(10 * time.Second)
	f.progress("drained: " + f.drainNote())
	end := window{at: f.net.Elapsed(), bytes: f.globalBytes}
	f.net.RunFor(time.Minute)
	f.restBytes = f.bytesPerGateway(end)
}

func (f *fedRun) drained() bool {
	for _, m := range f.msgs {
		if !m.result || (m.accepted && m.filed == 0) {
			return false
		}
	}
	return f.queueLeft() == 0
}

func (f *fedRun) drainNote() string {
	unanswered, unfiled := 0, 0
	var first []string
	for _, m := range f.msgs {
		switch {
		case !m.result:
			unanswered++
		case m.accepted && m.filed == 0:
			unfiled++
		default:
			continue
		}
		if len(first) < 5 {
			first = append(first, fmt.Sprintf("%d(inter=%v offline=%v to=%s node=%s)", m.n, m.inter, m.offline, m.to.addr, m.to.node.sn.ep.ID().Short()))
		}
	}
	return fmt.Sprintf("%d messages not answered, %d accepted and not filed (%v), %d entries held by gateways", unanswered, unfiled, first, f.queueLeft())
}

func (f *fedRun) queueLeft() int {
	n := 0
	for _, gw := range f.gws {
		if gw.alive {
			n += len(gw.handling)
		}
	}
	return n
}
