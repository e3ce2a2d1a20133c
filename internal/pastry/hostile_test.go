package pastry

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"epost/internal/ids"
	"epost/internal/tcp"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hostileSeed is the seed of the hostile-peer tests; each test prints it when it fails.
func hostileSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

func TestTLSRingServes(t *testing.T) {
	seed := hostileSeed(t)
	r := newTLSRing(t, seed, 6)
	r.checkLookups(rand.New(rand.NewPCG(seed, 1)), 5, 20*time.Second)
}

// victimOf picks the honest node the attacker works on.
func (r *tlsRing) victim(rng *rand.Rand) *tlsNode { return r.nodes[rng.IntN(len(r.nodes))] }

func (n *tlsNode) stats() Stats { return n.drv.Stats() }

// TestHostileMalformedFrames: a ring member sends overlay frames that do not decode, belong to
// another ring, or claim another sender. The victim refuses each one (Stats.Rejected), none
// changes its state, and the ring keeps routing.
func TestHostileMalformedFrames(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	honest := r.nodes[0]
	if honest == v {
		honest = r.nodes[1]
	}
	valid := []*message{
		{Type: mRowRequest, Row: 0},
		{Type: mLeafReply, Handles: []Handle{a.self}},
		{Type: mProbe, Seq: 1, Time: 1},
		{Type: mRoute, Seq: 1, Key: v.rn.ID, Origin: a.self, Payload: []byte("x")},
	}
	before := v.stats().Rejected
	const frames = 500
	for i := range frames {
		good := a.msg(valid[rng.IntN(len(valid))])
		var f []byte
		switch i % 6 {
		case 0: // random bytes
			f = make([]byte, 1+rng.IntN(2000))
			for j := range f {
				f[j] = byte(rng.Uint32())
			}
		case 1: // cut short
			f = good[:rng.IntN(len(good))]
		case 2: // unknown version
			f = append([]byte{wireVersion + 1}, good[1:]...)
		case 3: // another ring
			m := &message{Type: mLeafRequest, Ring: ids.HashString("other ring"), From: a.self}
			f = m.encode(nil)
		case 4: // an honest node's id as the sender: it asks the victim to drop that node
			m := &message{Type: mLeave, Ring: r.cfg.Ring, From: Handle{ID: honest.rn.ID, Addr: honest.tr.LocalAddr()}, Gone: true}
			f = m.encode(nil)
		case 5: // trailing bytes after a valid message
			f = append(good, byte(rng.Uint32()))
		}
		a.send(v, f)
	}
	deadline := time.Now().Add(20 * time.Second)
	for v.stats().Rejected-before < frames {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: victim rejected %d of %d bad frames", seed, v.stats().Rejected-before, frames)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p := r.leafProblems(); len(p) > 0 {
		t.Fatalf("seed %d: leaf sets changed by refused frames: %v", seed, p)
	}
	r.checkLookups(rng, 5, 20*time.Second)
}

// TestHostileRawBytes: a ring member completes the handshake, then writes bytes that break the
// transport's framing: an oversized length prefix, an unknown kind, a second hello, garbage.
// The victim closes that connection before allocating anything large, and keeps serving.
func TestHostileRawBytes(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	frame := func(length uint32, kind byte, payload ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return append(append(b, kind), payload...)
	}
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	garbage[0] = 0xff // a length far over the limit, whatever follows
	cases := []struct {
		name  string
		bytes []byte
	}{
		{"length 4 GiB", frame(0xffffffff, 1)},
		{"length one over the limit", frame(tcp.DefaultMaxFrame+2, 1)},
		{"zero length", frame(0, 1)},
		{"unknown kind", frame(1, 9)},
		{"second hello", frame(3, 2, 0, 1, 'x')},
		{"keepalive with a payload", frame(2, 3, 0)},
		{"garbage", garbage},
	}
	for _, c := range cases {
		conn := a.rawConn(v)
		if _, err := conn.Write(c.bytes); err != nil {
			t.Fatalf("seed %d: %s: write: %v", seed, c.name, err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("seed %d: %s: victim kept the connection open", seed, c.name)
			}
		}
	}
	st := v.tr.Stats()
	if st.FramesTooLong < 2 || st.ProtocolErrors < 4 {
		t.Errorf("seed %d: victim counted %d frames too long and %d protocol errors, want at least 2 and 4",
			seed, st.FramesTooLong, st.ProtocolErrors)
	}
	if p := r.leafProblems(); len(p) > 0 {
		t.Fatalf("seed %d: leaf sets changed: %v", seed, p)
	}
	r.checkLookups(rng, 5, 20*time.Second)
}

// near returns an id at distance d (small) from id, clockwise if cw.
func near(id ids.ID, d uint64, cw bool) ids.ID {
	var off ids.ID
	binary.BigEndian.PutUint64(off[ids.Bytes-8:], d)
	if cw {
		return ids.Add(id, off)
	}
	return ids.Sub(id, off)
}

// TestHostileForgedHandles: a ring member gossips handles that do not exist: ids right next to
// the victim's (so that, taken at their word, they would displace its honest leaf-set
// members), some at addresses where nothing listens, some at the attacker's own address. The
// victim must never put them in its leaf set: every node there must have answered for its id
// itself. Lookups keep reaching the honest roots.
func TestHostileForgedHandles(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	forged := map[ids.ID]bool{}
	var hs []Handle
	for i := range 16 {
		id := near(v.rn.ID, 1+rng.Uint64N(1<<40), i%2 == 0)
		addr := "127.0.0.1:1" // nothing listens
		if i%4 < 2 {
			addr = a.self.Addr // the attacker, who cannot prove id
		}
		forged[id] = true
		hs = append(hs, Handle{ID: id, Addr: addr})
	}
	for range 8 { // far away: routing-table entries, not leaf members
		var id ids.ID
		binary.BigEndian.PutUint64(id[:], rng.Uint64())
		hs = append(hs, Handle{ID: id, Addr: a.self.Addr})
	}
	var frames [][]byte
	frames = append(frames,
		a.msg(&message{Type: mLeafReply, Handles: hs}),
		a.msg(&message{Type: mRowReply, Row: 0, Handles: hs}),
		a.msg(&message{Type: mJoinRows, Handles: hs}),
		a.msg(&message{Type: mJoinReply, Handles: hs}),
		a.msg(&message{Type: mAnnounceAck, Handles: hs}),
		a.msg(&message{Type: mProbe, Seq: 1, Time: 1, Flag: true, Handles: hs}),
	)
	inLeaf := func() []string {
		var bad []string
		v.drv.With(func(n *Node) {
			for _, h := range n.LeafMembers() {
				if forged[h.ID] {
					bad = append(bad, h.String())
				}
			}
		})
		return bad
	}
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		a.send(v, frames[i%len(frames)])
		time.Sleep(5 * time.Millisecond)
		if bad := inLeaf(); len(bad) > 0 {
			t.Fatalf("seed %d: victim %s took forged handles into its leaf set: %v", seed, v.rn.ID.Short(), bad)
		}
	}
	r.waitConverged(20 * time.Second)
	r.checkLookups(rng, 5, 20*time.Second)

	// A node that leaves hands its leaf set over, and its former neighbours fill the hole it
	// left from it at once. The attacker, a neighbour of w, comes back and leaves again and
	// again, each time naming fresh forged nodes next to w: at most one of them at a time gets
	// into w's leaf set, until a probe shows it is not there.
	w := r.nodes[0]
	for _, n := range r.nodes[1:] {
		if ids.Closer(a.self.ID, n.rn.ID, w.rn.ID) {
			w = n
		}
	}
	leave := func() []byte {
		var hs []Handle
		for i := range 8 {
			id := near(w.rn.ID, 1+rng.Uint64N(1<<40), i%2 == 0)
			forged[id] = true
			hs = append(hs, Handle{ID: id, Addr: a.self.Addr})
		}
		return a.msg(&message{Type: mLeave, Gone: true, Handles: hs})
	}
	most := 0
	end = time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		a.send(w, a.msg(&message{Type: mProbe, Seq: 1, Time: 1})) // back in w's leaf set
		time.Sleep(20 * time.Millisecond)
		a.send(w, leave())
		time.Sleep(20 * time.Millisecond)
		var n int
		w.drv.With(func(nd *Node) {
			for _, h := range nd.LeafMembers() {
				if forged[h.ID] {
					n++
				}
			}
		})
		most = max(most, n)
	}
	if most > 1 {
		t.Fatalf("seed %d: a neighbour leaving again and again placed %d forged members in %s's leaf set at once", seed, most, w.rn.ID.Short())
	}
	t.Logf("leaves naming forged nodes: at most %d in the leaf set at once", most)
	r.waitConverged(20 * time.Second)
	r.checkLookups(rng, 5, 20*time.Second)
}

// ringSent is the frames the honest nodes have sent in all.
func (r *tlsRing) ringSent() uint64 {
	var s uint64
	for _, n := range r.nodes {
		s += n.stats().Sent
	}
	return s
}

// flood sends frames made by mk to victim from a goroutine, as fast as the victim takes them,
// until the returned stop function is called; stop returns how many it sent. flood returns
// once at least least frames are under way, so that what the caller does next happens during
// the flood.
func (a *attacker) flood(victim *tlsNode, least int, mk func(i int) []byte) (stop func() int) {
	a.r.t.Helper()
	quit, done := make(chan struct{}), make(chan int)
	var sent atomic.Int64
	go func() {
		i := 0
		defer func() { done <- i }()
		for ; ; i++ {
			sent.Store(int64(i))
			f := mk(i)
			for a.tr.Send(victim.rn.ID, victim.tr.LocalAddr(), f) != nil {
				select {
				case <-quit:
					return
				case <-time.After(time.Millisecond): // back-pressure: the victim reads no faster
				}
			}
			select {
			case <-quit:
				return
			default:
			}
		}
	}()
	stop = func() int {
		close(quit)
		return <-done
	}
	for deadline := time.Now().Add(30 * time.Second); sent.Load() < int64(least); {
		if time.Now().After(deadline) {
			stop()
			a.r.t.Fatalf("seed %d: the flood sent %d frames in 30s", a.r.seed, sent.Load())
		}
		time.Sleep(time.Millisecond)
	}
	return stop
}

// TestHostileJoinAndLookupFlood: a ring member sends join requests without end, then routed
// joins whose joiner is an honest node (so that every hop would answer that node), then
// lookups of its own, then lookups it claims to hand on for an honest node. Each join the
// victim takes on is routed through the ring and answered with table rows and a leaf set, so
// it takes few per sender (Config.JoinRequestEvery); lookups it takes at Config.RouteEvery
// (16 times as many handed on); the ring keeps routing during the flood.
func TestHostileJoinAndLookupFlood(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 5))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	h := r.nodes[0]
	if h == v {
		h = r.nodes[1]
	}
	cfg := v.drv.node.cfg
	cases := []struct {
		name  string
		mk    func(i int) []byte
		burst int
		every time.Duration
	}{
		{"join requests", func(i int) []byte {
			return a.msg(&message{Type: mJoinRequest, Flag: i%2 == 1})
		}, cfg.JoinRequestBurst, cfg.JoinRequestEvery},
		{"routed joins for an honest node", func(i int) []byte {
			var key ids.ID
			binary.BigEndian.PutUint64(key[:], uint64(i)*0x9e3779b97f4a7c15)
			return a.msg(&message{Type: mRoute, Seq: uint64(i + 1), Key: key, Origin: Handle{ID: h.rn.ID, Addr: h.tr.LocalAddr()},
				Kind: uint8(kindJoin + i%2)})
		}, cfg.JoinForwardBurst, cfg.JoinRequestEvery / time.Duration(cfg.JoinForwardRate)},
		{"lookups", func(i int) []byte {
			var key ids.ID
			binary.BigEndian.PutUint64(key[:], uint64(i)*0x9e3779b97f4a7c15)
			return a.msg(&message{Type: mRoute, Seq: uint64(i + 1), Key: key, Origin: a.self, Kind: kindApp, Payload: []byte("lookup")})
		}, cfg.RouteBurst, cfg.RouteEvery},
		{"lookups handed on for an honest node", func(i int) []byte {
			var key ids.ID
			binary.BigEndian.PutUint64(key[:], uint64(i)*0x9e3779b97f4a7c15)
			return a.msg(&message{Type: mRoute, Seq: uint64(i + 1), Key: key, Origin: Handle{ID: h.rn.ID, Addr: h.tr.LocalAddr()},
				Kind: kindApp, Payload: []byte("lookup")})
		}, relayRate * cfg.RouteBurst, cfg.RouteEvery / relayRate},
	}
	for _, c := range cases {
		limited0, got0 := v.stats().RateLimited, a.got.Load()
		start := time.Now()
		stop := a.flood(v, 3000, c.mk)
		r.checkLookups(rng, 3, 30*time.Second)
		count := stop()
		a.sync(v, 30*time.Second)
		elapsed := time.Since(start)
		taken := count - int(v.stats().RateLimited-limited0)
		if most := c.burst + int(elapsed/c.every) + 1; taken > most {
			t.Errorf("seed %d: %s: victim took on %d of %d in %v, want at most %d", seed, c.name, taken, count, elapsed, most)
		}
		if got := a.got.Load() - got0; got > uint64(10*taken+100) {
			t.Errorf("seed %d: %s: the attacker got %d frames back (hop acknowledgements aside) for the %d the victim took on", seed, c.name, got, taken)
		}
		t.Logf("%s: victim took on %d of %d in %v; the attacker got %d frames back", c.name, taken, count, elapsed, a.got.Load()-got0)
	}
	r.waitConverged(20 * time.Second)
	r.checkLookups(rng, 5, 20*time.Second)
}

// stateSize is how many entries the node's per-peer and per-message tables hold.
func (n *Node) stateSize() int {
	sum := 0
	for _, c := range n.stateParts() {
		sum += c
	}
	return sum
}

// stateParts is stateSize by part, printed when a test finds the node's state grown.
func (n *Node) stateParts() map[string]int {
	return map[string]int{"peers": len(n.peers), "joining": len(n.joining), "pending": len(n.pending),
		"pendingQ": len(n.pendingQ), "verifying": len(n.verifying), "measured": len(n.measured),
		"dead": len(n.dead.list), "indirect": len(n.indirect), "buffered": len(n.buffered),
		"awaitingAck": len(n.awaitingAck), "table": n.table.Len(), "leaf": n.leaf.Size(),
		"joinLimit": len(n.joinLimit.next), "forwardLimit": len(n.forwardLimit.next),
		"routeLimit": len(n.routeLimit.next), "relayLimit": len(n.relayLimit.next), "filled": len(n.filled)}
}

// TestHostileRouteFlood: a ring member floods the victim with routed messages for random keys,
// naming forged origins. Routed messages may be anyone's, so the victim forwards them, one
// frame for one (plus the hop acknowledgement), through send queues bounded by the transport;
// it keeps no state for them once acknowledged, and the ring keeps routing honest lookups.
func TestHostileRouteFlood(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 6))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	var size0 int
	var parts0 map[string]int
	v.drv.With(func(n *Node) { size0, parts0 = n.stateSize(), n.stateParts() })
	keys := rand.New(rand.NewPCG(seed, 7))
	sent0 := r.ringSent()
	stop := a.flood(v, 10000, func(i int) []byte {
		var key, origin ids.ID
		binary.BigEndian.PutUint64(key[:], keys.Uint64())
		binary.BigEndian.PutUint64(origin[:], keys.Uint64())
		return a.msg(&message{Type: mRoute, Seq: uint64(i + 1), Key: key, Origin: Handle{ID: origin, Addr: "127.0.0.1:1"},
			Payload: make([]byte, 512)})
	})
	r.checkLookups(rng, 5, 30*time.Second)
	count := stop()
	a.sync(v, 30*time.Second)
	// Once the flood is over, what it left behind drains: hop acknowledgements arrive or time
	// out. The attacker itself may have been taken into the tables (it is a ring member).
	var size int
	var parts map[string]int
	for deadline := time.Now().Add(20 * time.Second); ; {
		v.drv.With(func(n *Node) { size, parts = n.stateSize(), n.stateParts() })
		if size <= size0+8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: victim's tables hold %d entries after the flood, %d before (before %v, after %v)", seed, size, size0, parts0, parts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("route flood: %d messages; the ring sent %d frames, %d of them hop acknowledgements and %d other frames to the attacker; victim's tables %d entries before, %d after",
		count, r.ringSent()-sent0, a.acks.Load(), a.got.Load(), size0, size)
	r.waitConverged(20 * time.Second)
	r.checkLookups(rng, 5, 20*time.Second)
}

// TestHostileClaimsForeignID: a peer cannot act under a node id it does not own. A certificate
// signed by the ring CA that names an honest node's id over another key fails the handshake
// (the id is the hash of the key); an authenticated peer whose messages name an honest node
// as their sender has them refused (ErrSpoofed); a peer whose hello advertises an honest
// node's address gains nothing: the honest node keeps its place and its address.
func TestHostileClaimsForeignID(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 8))
	r := newTLSRing(t, seed, 6)
	v := r.victim(rng)
	var h *tlsNode // an honest leaf member of the victim
	v.drv.With(func(n *Node) {
		id := n.LeafMembers()[0].ID
		for _, x := range r.nodes {
			if x.rn.ID == id {
				h = x
			}
		}
	})

	// A CA-signed certificate for h's id, over the attacker's key.
	caKey, err := r.ring.CAKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(rng.Int64N(1<<62) + 1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{{Scheme: "epost", Host: "node",
			Path: "/" + r.cfg.Ring.String() + "/" + h.rn.ID.String()}},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, r.ring.CA, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.rn.Trust.VerifyPeer(forged, time.Now()); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Fatalf("seed %d: ring trust on a certificate naming another id: %v, want the key-hash refusal", seed, err)
	}
	refused := v.tr.Stats().RejectedHandshakes
	c, err := tls.Dial("tcp", v.tr.LocalAddr(), r.ring.Trust.TLSConfig(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, time.Now))
	if err == nil {
		// TLS 1.3: the client may finish before the server has judged its certificate.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatalf("seed %d: the victim accepted a certificate naming %s over another key", seed, h.rn.ID.Short())
	}
	for deadline := time.Now().Add(10 * time.Second); v.tr.Stats().RejectedHandshakes == refused; {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: handshake with a forged id not counted as refused", seed)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// An authenticated peer, advertising h's address, that names h as the sender.
	a := r.newAttacker(h.tr.LocalAddr())
	as := Handle{ID: h.rn.ID, Addr: h.tr.LocalAddr()}
	spoofed := []*message{
		{Type: mLeave, From: as, Gone: true},
		{Type: mProbeReply, From: as, Seq: 1},
		{Type: mAnnounce, From: as, Flag: true},
		{Type: mLeafReply, From: as, Handles: []Handle{as}},
		{Type: mRoute, From: as, Seq: 1, Key: v.rn.ID, Origin: as, Payload: []byte("spoofed")},
	}
	before := v.stats().Rejected
	for _, m := range spoofed {
		a.send(v, a.msg(m))
	}
	// And one honest message of its own, under the address it claims.
	a.send(v, a.msg(&message{Type: mProbe, Seq: 2, Time: 1}))
	for deadline := time.Now().Add(10 * time.Second); v.stats().Rejected-before < uint64(len(spoofed)); {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: victim refused %d of %d messages naming another sender", seed, v.stats().Rejected-before, len(spoofed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.drv.With(func(n *Node) {
		got, ok := n.LeafSet().Get(h.rn.ID)
		if !ok || got.Addr != h.tr.LocalAddr() {
			t.Fatalf("seed %d: victim's leaf entry for %s is %v (%v), want it at %s", seed, h.rn.ID.Short(), got, ok, h.tr.LocalAddr())
		}
	})
	r.waitConverged(20 * time.Second)
	r.checkLookups(rng, 5, 20*time.Second)
}

// TestHostileForgedRows: a ring member answers row requests, and sends join rows, leaf sets
// and probes, naming nodes that do not exist (in routing-table slots the victim has empty, at
// the attacker's address and at one where nothing listens) and honest nodes at the attacker's
// address. None of the forged nodes enters the victim's routing table, no honest entry's
// address changes, and lookups for keys in the forged slots go to honest nodes only: no
// routed message is ever handed to a forged id.
func TestHostileForgedRows(t *testing.T) {
	seed := hostileSeed(t)
	rng := rand.New(rand.NewPCG(seed, 8))
	r := newTLSRing(t, seed, 6)
	a := r.newAttacker()
	v := r.victim(rng)
	// Row 0 slots no honest node (nor the attacker) fills: a forged node there would be the
	// only candidate, taken at its word by the old table.
	taken := map[int]bool{a.self.ID.Digit(0): true}
	for _, n := range r.nodes {
		taken[n.rn.ID.Digit(0)] = true
	}
	forged := map[ids.ID]bool{}
	var hs []Handle
	for d := range ids.Base {
		if taken[d] {
			continue
		}
		for i := range 2 {
			var id ids.ID
			binary.BigEndian.PutUint64(id[:], rng.Uint64()&^(0xf<<60)|uint64(d)<<60)
			addr := a.self.Addr
			if i == 1 {
				addr = "127.0.0.1:1" // nothing listens
			}
			forged[id] = true
			hs = append(hs, Handle{ID: id, Addr: addr})
		}
	}
	if len(forged) == 0 {
		t.Skipf("seed %d: the honest nodes fill every slot of row 0", seed)
	}
	honest := map[ids.ID]string{}
	for _, n := range r.nodes {
		if n != v {
			honest[n.rn.ID] = n.tr.LocalAddr()
			hs = append(hs, Handle{ID: n.rn.ID, Addr: a.self.Addr}) // a real node, a false address
		}
	}
	frames := [][]byte{
		a.msg(&message{Type: mRowReply, Row: 0, Handles: hs}),
		a.msg(&message{Type: mJoinRows, Handles: hs}),
		a.msg(&message{Type: mJoinReply, Handles: hs}),
		a.msg(&message{Type: mLeafReply, Handles: hs}),
		a.msg(&message{Type: mProbe, Seq: 1, Time: 1, Flag: true, Handles: hs}),
	}
	check := func() {
		t.Helper()
		var bad []string
		v.drv.With(func(n *Node) {
			n.table.Each(func(h Handle, _ time.Duration) {
				if forged[h.ID] {
					bad = append(bad, "forged "+h.String())
				} else if addr, ok := honest[h.ID]; ok && h.Addr != addr {
					bad = append(bad, "honest "+h.ID.Short()+" at "+h.Addr)
				}
			})
		})
		if len(bad) > 0 {
			t.Fatalf("seed %d: victim %s's routing table took the forged rows: %v", seed, v.rn.ID.Short(), bad)
		}
	}
	unverified0 := v.stats().Unverified
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		a.send(v, frames[i%len(frames)])
		time.Sleep(5 * time.Millisecond)
		check()
	}
	a.sync(v, 30*time.Second)
	check()

	// Lookups for keys in the forged slots, from the victim (whose table the attacker worked
	// on) and from the others.
	var keys []ids.ID
	for id := range forged {
		keys = append(keys, id, ids.Add(id, ids.ID{ids.Bytes - 1: 1}))
	}
	r.checkKeys(keys, 20*time.Second)
	for id := range forged {
		if n := r.routedTo(id); n > 0 {
			t.Fatalf("seed %d: the ring handed %d routed messages to forged node %s", seed, n, id.Short())
		}
	}
	check()
	t.Logf("%d forged nodes in %d frames: none in the victim's table (%d left unprobed), no routed message to any of them",
		len(forged), len(frames), v.stats().Unverified-unverified0)
	r.waitConverged(20 * time.Second)
}
