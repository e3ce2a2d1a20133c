package multiring

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/ring"
	"epost/internal/transport"
	"epost/internal/wire"
)

// Global is a gateway's link to the global ring: it sits between the global ring's transport
// (tcp with VerifyPeerChain = VerifyChain, Handler = Handle) and the ring-0 overlay. Every
// frame carries a channel byte: chanOverlay frames go to the overlay, and only from peers
// whose ring this gateway admitted; chanAdmission frames carry the admission exchange.
//
// Admission is mutual and needs no authority: before its first overlay frame to a peer, a
// gateway sends its ring's bundle (Hello); the receiver checks that the bundle is the one of
// the CA the TLS handshake showed, then asks Admission (DNS or the trust file) and answers
// with its decision (Result), logging why a ring is refused; the refused side logs the reason
// it was given. A peer that sends overlay frames without having been admitted (this node
// restarted, or the decision ran out) is asked for its bundle again (Needed).
type Global struct {
	cfg GlobalConfig
	tr  transport.Transport

	mu      sync.Mutex
	peers   map[ids.ID]*globalPeer
	rings   map[ids.RingID]*admittedRing
	checks  map[ids.RingID]bool // admission checks in flight
	stats   GlobalStats
	stopped bool
}

// GlobalConfig configures a Global.
type GlobalConfig struct {
	Self      ring.Bundle // this gateway's ring, shown to every peer
	Admission *Admission
	// Handler receives the overlay's frames from admitted peers (the channel byte removed).
	Handler transport.Handler
	Now     func() time.Time
	Log     *slog.Logger
	// CheckTimeout bounds one admission check (its DNS questions). Zero: 10 s.
	CheckTimeout time.Duration
}

// GlobalStats count the global ring's traffic, for epost status: an operator sees that only
// inter-ring traffic crosses it.
type GlobalStats struct {
	SentFrames, SentBytes         uint64
	ReceivedFrames, ReceivedBytes uint64
	Unadmitted                    uint64 // overlay frames dropped: their sender's ring is not admitted
	Admitted, Refused             uint64 // admission decisions made about other rings
	RefusedBy                     uint64 // times a peer refused this ring
}

type globalPeer struct {
	ring     ids.RingID
	ca       *x509.Certificate
	leaf     *x509.Certificate
	admitted bool      // its ring is admitted and its own certificate is not revoked
	greeted  bool      // our Hello went out since the connection's peer last asked
	asked    time.Time // when we last sent Needed
	lastAddr string
}

type admittedRing struct {
	foreign    *ring.Foreign
	decision   Decision
	descriptor []byte // the signed descriptor the decision was made on
	raw        []byte // the encoded bundle it came in
}

// BundleOf is an admitted ring's bundle as its gateway showed it (encoded), for this ring's
// nodes, which verify it themselves.
func (g *Global) BundleOf(r ids.RingID) ([]byte, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.admittedLocked(r) || g.rings[r].raw == nil {
		return nil, false
	}
	return g.rings[r].raw, true
}

const (
	chanOverlay   = 1
	chanAdmission = 2

	admHello  = 1 // bundle
	admNeeded = 2
	admResult = 3 // admitted, seconds valid, reason

	maxReason = 512
	// askEvery: an unadmitted peer is asked for its bundle at most this often.
	askEvery = time.Minute
	// maxBundleDomains bounds the domains a ring may claim (each costs a DNS question).
	maxBundleDomains = 64
)

// NewGlobal makes the link; SetTransport gives it the transport once that exists (the
// transport needs Handle and VerifyChain first).
func NewGlobal(cfg GlobalConfig) *Global {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 10 * time.Second
	}
	return &Global{cfg: cfg, peers: map[ids.ID]*globalPeer{}, rings: map[ids.RingID]*admittedRing{}, checks: map[ids.RingID]bool{}}
}

// SetTransport sets the transport frames go out on.
func (g *Global) SetTransport(tr transport.Transport) {
	g.mu.Lock()
	g.tr = tr
	g.mu.Unlock()
}

// Close makes the link inert (the transport under it is its owner's to close).
func (g *Global) Close() error {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	return nil
}

// Stats returns the counters.
func (g *Global) Stats() GlobalStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

// Admitted reports whether the ring's gateways may use the global ring here now.
func (g *Global) Admitted(id ids.RingID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admittedLocked(id)
}

func (g *Global) admittedLocked(id ids.RingID) bool {
	r := g.rings[id]
	return r != nil && r.decision.Admitted && g.cfg.Now().Before(r.decision.Until)
}

// VerifyChain is the transport's VerifyPeerChain: a gateway certificate of some ring (its CA
// shown after it), not revoked if its ring is known, and not of a ring refused lately. It
// changes nothing: TLS calls it before the peer has proved it holds the certificate's key
// (OnPeer records the peer once it has).
func (g *Global) VerifyChain(chain []*x509.Certificate) (ids.ID, error) {
	now := g.cfg.Now()
	p, err := ring.VerifyGatewayChain(chain, now)
	if err != nil {
		return ids.Zero, err
	}
	g.mu.Lock()
	r := g.rings[p.Ring]
	g.mu.Unlock()
	if r != nil && now.Before(r.decision.Until) {
		if !r.decision.Admitted && !r.decision.Temporary {
			return ids.Zero, fmt.Errorf("global ring: ring %s (%s) was refused: %s", p.Ring.Short(), r.decision.Name, r.decision.Reason)
		}
		if r.foreign != nil {
			if _, err := r.foreign.Trust.VerifyPeer(p.Leaf, now); err != nil {
				return ids.Zero, err
			}
		}
	}
	return p.Node, nil
}

// OnPeer is the transport's OnPeer: a gateway completed a handshake with the chain it
// showed. A peer of a ring admitted here is admitted at once unless its certificate is revoked.
func (g *Global) OnPeer(id ids.ID, chain []*x509.Certificate) {
	now := g.cfg.Now()
	p, err := ring.VerifyGatewayChain(chain, now)
	if err != nil || p.Node != id {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	pe := g.peers[id]
	if pe == nil || pe.ring != p.Ring {
		pe = &globalPeer{ring: p.Ring}
		g.peers[id] = pe
	}
	pe.ca, pe.leaf = p.CA, p.Leaf
	pe.greeted = false // a new connection: say who we are again
	pe.admitted = false
	if r := g.rings[p.Ring]; r != nil && r.foreign != nil && g.admittedLocked(p.Ring) {
		_, verr := r.foreign.Trust.VerifyPeer(p.Leaf, now)
		pe.admitted = verr == nil
	}
}

// Send sends an overlay frame to a peer of the global ring, with this ring's bundle first if
// the peer has not had it on this connection.
func (g *Global) Send(to ids.ID, addr string, frame []byte) error {
	g.mu.Lock()
	tr := g.tr
	pe := g.peers[to]
	hello := pe == nil || !pe.greeted
	if pe != nil {
		pe.greeted, pe.lastAddr = true, addr
	}
	if tr != nil {
		g.stats.SentFrames++
		g.stats.SentBytes += uint64(len(frame) + 1)
	}
	g.mu.Unlock()
	if tr == nil {
		return transport.ErrClosed
	}
	if hello {
		if err := tr.Send(to, addr, g.helloFrame()); err != nil {
			return err
		}
	}
	return tr.Send(to, addr, append([]byte{chanOverlay}, frame...))
}

// LocalAddr and Close let Global stand for the transport under the overlay.
func (g *Global) LocalAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tr == nil {
		return ""
	}
	return g.tr.LocalAddr()
}

func (g *Global) helloFrame() []byte {
	var w wire.Writer
	w.U8(chanAdmission)
	w.U8(admHello)
	w.Bytes(g.cfg.Self.Encode())
	return w.B
}

// Handle is the transport's Handler.
func (g *Global) Handle(from transport.From, frame []byte) {
	if len(frame) == 0 {
		return
	}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stats.ReceivedFrames++
	g.stats.ReceivedBytes += uint64(len(frame))
	pe := g.peers[from.ID]
	if pe != nil && from.Addr != "" {
		pe.lastAddr = from.Addr
	}
	switch frame[0] {
	case chanOverlay:
		if pe != nil && pe.admitted && g.admittedLocked(pe.ring) {
			g.mu.Unlock()
			g.cfg.Handler(from, frame[1:])
			return
		}
		g.stats.Unadmitted++
		ask := pe != nil && g.cfg.Now().Sub(pe.asked) >= askEvery
		if ask {
			pe.asked = g.cfg.Now()
		}
		tr := g.tr
		g.mu.Unlock()
		if ask && tr != nil {
			_ = tr.Send(from.ID, from.Addr, []byte{chanAdmission, admNeeded})
		}
	case chanAdmission:
		g.mu.Unlock()
		g.onAdmission(from, pe, frame[1:])
	default:
		g.mu.Unlock()
	}
}

func (g *Global) onAdmission(from transport.From, pe *globalPeer, msg []byte) {
	r := wire.NewReader(msg)
	switch r.U8() {
	case admHello:
		raw := r.Bytes(ring.MaxBundle, "bundle")
		if r.Done() != nil || pe == nil {
			return
		}
		go g.admit(from, pe, raw)
	case admNeeded:
		g.mu.Lock()
		if pe != nil {
			pe.greeted = false
		}
		tr := g.tr
		g.mu.Unlock()
		if tr != nil && pe != nil {
			_ = tr.Send(from.ID, from.Addr, g.helloFrame())
			g.mu.Lock()
			pe.greeted = true
			g.mu.Unlock()
		}
	case admResult:
		ok := r.U8() == 1
		_ = r.U32()
		reason := r.String(maxReason, "reason")
		if r.Done() != nil || ok {
			return
		}
		g.mu.Lock()
		g.stats.RefusedBy++
		g.mu.Unlock()
		g.cfg.Log.Warn("global ring: refused by a peer", "peer", from.ID.Short(), "addr", from.Addr, "reason", reason)
	}
}

// admit checks the bundle a peer sent and answers with the decision.
func (g *Global) admit(from transport.From, pe *globalPeer, raw []byte) {
	now := g.cfg.Now()
	b, berr := ring.DecodeBundle(raw)
	g.mu.Lock()
	ringID, ca, leaf := pe.ring, pe.ca, pe.leaf
	known := g.rings[ringID]
	inFlight := g.checks[ringID]
	sameDescriptor := berr == nil && known != nil && known.foreign != nil && bytes.Equal(known.descriptor, b.Descriptor)
	reuse := sameDescriptor && now.Before(known.decision.Until)
	if !reuse && !inFlight {
		g.checks[ringID] = true
	}
	g.mu.Unlock()
	var d Decision
	var f *ring.Foreign
	switch {
	case reuse:
		d, f = known.decision, known.foreign
		// The bundle may carry a newer revocation list (it only ever moves forward): the
		// ring's peers admitted under the older one are checked again.
		if newer, _ := f.Trust.UpdateRevocations(b.Revocations); newer {
			g.mu.Lock()
			known.raw = raw // the bundle this ring's nodes get carries the newer list too
			g.mu.Unlock()
			g.recheckPeers(ringID, f, now)
		}
	case inFlight:
		return // the first Hello's check answers; the peer asks again if it must
	default:
		var err error
		f, err = g.verifyHello(b, berr, ca, now)
		if err != nil {
			d = Decision{Ring: ringID, Reason: err.Error(), Until: now.Add(DefaultMinTTL)}
		} else {
			if known != nil && !sameDescriptor {
				g.cfg.Admission.Forget(ringID) // a new descriptor: decide on it, not on the old one
			}
			ctx, cancel := context.WithTimeout(context.Background(), g.cfg.CheckTimeout)
			d = g.cfg.Admission.Check(ctx, f)
			cancel()
		}
		g.mu.Lock()
		ar := &admittedRing{foreign: f, decision: d}
		if berr == nil {
			ar.descriptor, ar.raw = b.Descriptor, raw
		}
		g.rings[ringID] = ar
		if d.Admitted {
			g.stats.Admitted++
		} else {
			g.stats.Refused++
		}
		delete(g.checks, ringID)
		g.mu.Unlock()
		if d.Admitted {
			g.cfg.Log.Info("global ring: ring admitted", "ring", ringID.Short(), "name", d.Name, "domains", fmt.Sprint(d.Confirmed), "until", d.Until.UTC().Format(time.RFC3339))
		} else {
			g.cfg.Log.Warn("global ring: ring refused", "ring", ringID.Short(), "name", d.Name, "peer", from.ID.Short(), "reason", d.Reason)
		}
	}
	// The peer itself: its ring admitted, its certificate not revoked under the newest list.
	peerOK := d.Admitted && f != nil && f.SameCA(ca)
	if peerOK {
		if _, err := f.Trust.VerifyPeer(leaf, now); err != nil {
			peerOK = false
			d = Decision{Ring: ringID, Name: d.Name, Reason: err.Error(), Until: d.Until}
			g.cfg.Log.Warn("global ring: gateway refused", "ring", ringID.Short(), "peer", from.ID.Short(), "reason", err)
		}
	}
	g.mu.Lock()
	if cur := g.peers[from.ID]; cur == pe {
		pe.admitted = peerOK
	}
	tr := g.tr
	g.mu.Unlock()
	var w wire.Writer
	w.U8(chanAdmission)
	w.U8(admResult)
	if peerOK {
		w.U8(1)
	} else {
		w.U8(0)
	}
	w.U32(uint32(max(0, d.Until.Sub(now)/time.Second)))
	reason := d.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	w.String(reason)
	if tr != nil {
		_ = tr.Send(from.ID, from.Addr, w.B)
	}
}

// recheckPeers drops the admission of the ring's peers whose certificates f now revokes.
func (g *Global) recheckPeers(id ids.RingID, f *ring.Foreign, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for node, pe := range g.peers {
		if pe.ring != id || !pe.admitted || pe.leaf == nil {
			continue
		}
		if _, err := f.Trust.VerifyPeer(pe.leaf, now); err != nil {
			pe.admitted = false
			g.cfg.Log.Warn("global ring: gateway no longer admitted", "ring", id.Short(), "peer", node.Short(), "reason", err)
		}
	}
}

func (g *Global) doneCheck(id ids.RingID) {
	g.mu.Lock()
	delete(g.checks, id)
	g.mu.Unlock()
}

// verifyHello checks a Hello's bundle: well formed, verified, of the CA the handshake showed,
// and claiming a bounded number of domains.
func (g *Global) verifyHello(b ring.Bundle, decodeErr error, ca *x509.Certificate, now time.Time) (*ring.Foreign, error) {
	if decodeErr != nil {
		return nil, decodeErr
	}
	f, err := ring.VerifyBundle(b, now)
	if err != nil {
		return nil, err
	}
	if ca == nil || !f.SameCA(ca) {
		return nil, errors.New("the bundle's CA is not the one of the peer's TLS certificate chain")
	}
	if n := len(f.Descriptor.Domains); n > maxBundleDomains {
		return nil, fmt.Errorf("the ring claims %d mail domains, at most %d are checked", n, maxBundleDomains)
	}
	return f, nil
}
