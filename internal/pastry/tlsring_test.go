package pastry

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"epost/internal/ids"
	ringca "epost/internal/ring"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// tlsRing is a ring of Drivers over the real TLS transport, each node with a certificate from
// one ring CA, for the hostile-peer tests: an attacker enrolled in the same ring talks to them
// over an ordinary authenticated connection.
type tlsRing struct {
	t     *testing.T
	seed  uint64
	ring  *ringca.Ring
	cfg   Config
	nodes []*tlsNode

	mu     sync.Mutex
	book   map[string]ids.ID // advertised address -> id, for sends to bootstrap addresses
	routed map[ids.ID]int    // routed messages the honest nodes handed to each id
	seq    atomic.Uint64
}

type tlsNode struct {
	rn  *ringca.Node
	tr  *tcp.Transport
	drv *Driver

	mu        sync.Mutex
	delivered map[string]ids.ID // payload -> where it was delivered (the node itself)
}

// hostileConfig is fast enough for a test and slow enough for two busy cores under -race.
func hostileConfig() Config {
	return Config{
		LeafSetSize:        4,
		ProbeInterval:      time.Second,
		ProbeTimeout:       200 * time.Millisecond,
		ProbeRetries:       3,
		TableProbeInterval: 3 * time.Second,
		HopTimeout:         400 * time.Millisecond,
		JoinTimeout:        time.Second,
		HealInterval:       5 * time.Second,
		// Lookups a sender originates: 50 at once, then 50 a second (16 times both handed on).
		RouteEvery: 20 * time.Millisecond,
		RouteBurst: 50,
	}
}

func newTLSRing(t *testing.T, seed uint64, n int) *tlsRing {
	t.Helper()
	r, err := ringca.Create(filepath.Join(t.TempDir(), "ring"), ringca.DefaultParams("hostile", "hostile.example"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tr := &tlsRing{t: t, seed: seed, ring: r, cfg: hostileConfig(), book: map[string]ids.ID{}, routed: map[ids.ID]int{}}
	tr.cfg.Ring = r.Descriptor.RingID
	for i := range n {
		var bootstrap []string
		if i > 0 {
			bootstrap = []string{tr.nodes[0].tr.LocalAddr()}
		}
		tr.start(i, bootstrap)
	}
	tr.waitConverged(60 * time.Second)
	return tr
}

// enroll makes a node identity of the ring: key, certificate, trust.
func (r *tlsRing) enroll() *ringca.Node {
	r.t.Helper()
	cfg := ringca.NodeConfig{Listen: "127.0.0.1:7000", DataDir: "data"}
	rn, err := ringca.InitNode(r.ring, filepath.Join(r.t.TempDir(), "node"), cfg, ringca.Validity{}, time.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	return rn
}

// listen starts a TLS transport for rn whose frames go to handle; advertise, if given, is the
// address its hellos claim.
func (r *tlsRing) listen(rn *ringca.Node, handle transport.Handler, advertise ...string) *tcp.Transport {
	r.t.Helper()
	tr, err := tcp.New(tcp.Config{
		ListenAddr:        "127.0.0.1:0",
		AdvertiseAddr:     strings.Join(advertise, ""),
		ID:                rn.ID,
		TLSConfig:         rn.Trust.TLSConfig(rn.Creds, time.Now),
		VerifyPeer:        rn.Trust.Verifier(time.Now),
		Handler:           handle,
		KeepaliveInterval: 2 * time.Second,
		ReadTimeout:       10 * time.Second,
		MinBackoff:        50 * time.Millisecond,
		MaxBackoff:        time.Second,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { tr.Close() })
	if len(advertise) == 0 {
		r.mu.Lock()
		r.book[tr.LocalAddr()] = rn.ID
		r.mu.Unlock()
	}
	return tr
}

func (r *tlsRing) start(i int, bootstrap []string) *tlsNode {
	rn := r.enroll()
	node := &tlsNode{rn: rn, delivered: map[string]ids.ID{}}
	var drv atomic.Pointer[Driver]
	node.tr = r.listen(rn, func(from transport.From, frame []byte) {
		if d := drv.Load(); d != nil {
			d.Handle(from, frame)
		}
	})
	self := Handle{ID: rn.ID, Addr: node.tr.LocalAddr()}
	rng := rand.New(rand.NewPCG(r.seed, uint64(i)))
	d := NewDriver(r.cfg, self, rng, nil, &bookTransport{Transport: node.tr, r: r}, transport.RealClock{}, 20*time.Millisecond)
	d.OnEvent = func(e Event) {
		if e.Kind == EventDeliver {
			node.mu.Lock()
			node.delivered[string(e.Payload)] = rn.ID
			node.mu.Unlock()
		}
	}
	drv.Store(d)
	node.drv = d
	r.t.Cleanup(d.Stop)
	d.Start(bootstrap)
	r.nodes = append(r.nodes, node)
	return node
}

// bookTransport sends frames addressed only by address (join requests to a bootstrap node)
// to the id the ring's book knows there, as the daemon's resolving transport does.
type bookTransport struct {
	*tcp.Transport
	r *tlsRing
}

func (b *bookTransport) resolve(to ids.ID, addr string) ids.ID {
	if !to.IsZero() {
		return to
	}
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	return b.r.book[addr]
}

func (b *bookTransport) Send(to ids.ID, addr string, frame []byte) error {
	b.count(to, frame)
	return b.Transport.Send(b.resolve(to, addr), addr, frame)
}

func (b *bookTransport) SendParts(to ids.ID, addr string, head, tail []byte) error {
	b.count(to, head)
	return b.Transport.SendParts(b.resolve(to, addr), addr, head, tail)
}

// count records a routed message handed to a next hop (the header's second byte is its type).
func (b *bookTransport) count(to ids.ID, head []byte) {
	if len(head) > 1 && msgType(head[1]) == mRoute && !to.IsZero() {
		b.r.mu.Lock()
		b.r.routed[to]++
		b.r.mu.Unlock()
	}
}

// routedTo is how many routed messages the honest nodes handed to id as the next hop.
func (r *tlsRing) routedTo(id ids.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routed[id]
}

// ids returns the honest nodes' ids.
func (r *tlsRing) ids() []ids.ID {
	out := make([]ids.ID, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.rn.ID
	}
	return out
}

// leafProblems lists every node whose leaf set is not exactly what the honest ring dictates,
// or that is not ready.
func (r *tlsRing) leafProblems() []string {
	all := r.ids()
	var out []string
	for _, n := range r.nodes {
		want := NewLeafSet(n.rn.ID, r.cfg.LeafSetSize)
		for _, id := range all {
			if id != n.rn.ID {
				want.Add(Handle{ID: id, Addr: "x"})
			}
		}
		var ready bool
		var got []ids.ID
		n.drv.With(func(nd *Node) {
			ready = nd.Ready()
			for _, h := range nd.LeafMembers() {
				got = append(got, h.ID)
			}
		})
		var exp []ids.ID
		for _, h := range want.Members() {
			exp = append(exp, h.ID)
		}
		slices.SortFunc(got, ids.Cmp)
		slices.SortFunc(exp, ids.Cmp)
		if !ready || !slices.Equal(got, exp) {
			out = append(out, fmt.Sprintf("%s ready=%v leaf=%s want %s", n.rn.ID.Short(), ready, shorts(got), shorts(exp)))
		}
	}
	return out
}

func shorts(xs []ids.ID) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.Short()
	}
	return out
}

// waitConverged waits until every node is ready with the leaf set the honest ring dictates.
func (r *tlsRing) waitConverged(within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p := r.leafProblems()
		if len(p) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("seed %d: leaf sets not converged after %v:\n%v", r.seed, within, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rootOf is the honest node numerically closest to key.
func (r *tlsRing) rootOf(key ids.ID) ids.ID {
	all := r.ids()
	best := all[0]
	for _, id := range all[1:] {
		if ids.Closer(key, id, best) {
			best = id
		}
	}
	return best
}

// checkLookups routes count messages from every honest node to keys drawn from rng and
// requires each to be delivered, once, at the key's honest root, within the deadline.
func (r *tlsRing) checkLookups(rng *rand.Rand, count int, within time.Duration) {
	r.t.Helper()
	want := map[string]ids.ID{}
	for _, n := range r.nodes {
		for range count {
			var key ids.ID
			for j := 0; j < ids.Bytes; j += 8 {
				binary.BigEndian.PutUint64(key[j:], rng.Uint64())
			}
			p := fmt.Sprintf("lookup-%d", r.seq.Add(1))
			want[p] = r.rootOf(key)
			n.drv.Route(key, []byte(p))
		}
	}
	r.awaitDelivered(want, within)
}

// checkKeys routes a message from every honest node to each key and requires each to be
// delivered, once, at the key's honest root, within the deadline.
func (r *tlsRing) checkKeys(keys []ids.ID, within time.Duration) {
	r.t.Helper()
	want := map[string]ids.ID{}
	for _, n := range r.nodes {
		for _, key := range keys {
			p := fmt.Sprintf("lookup-%d", r.seq.Add(1))
			want[p] = r.rootOf(key)
			n.drv.Route(key, []byte(p))
		}
	}
	r.awaitDelivered(want, within)
}

// awaitDelivered waits until each payload of want was delivered, once, at the node named.
func (r *tlsRing) awaitDelivered(want map[string]ids.ID, within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var missing, wrong []string
		for p, root := range want {
			var at ids.ID
			var found bool
			for _, n := range r.nodes {
				n.mu.Lock()
				id, ok := n.delivered[p]
				n.mu.Unlock()
				if ok {
					if found {
						wrong = append(wrong, p+" delivered twice")
					}
					at, found = id, true
				}
			}
			switch {
			case !found:
				missing = append(missing, p)
			case at != root:
				wrong = append(wrong, fmt.Sprintf("%s at %s, root %s", p, at.Short(), root.Short()))
			}
		}
		if len(wrong) > 0 {
			r.t.Fatalf("seed %d: lookups delivered at the wrong node: %v", r.seed, wrong)
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("seed %d: %d of %d lookups not delivered after %v (e.g. %s)", r.seed, len(missing), len(want), within, missing[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attacker is a node enrolled in the ring (a valid certificate) that speaks to the ring's
// nodes over its own TLS transport, sending whatever bytes it likes.
type attacker struct {
	r    *tlsRing
	rn   *ringca.Node
	tr   *tcp.Transport
	self Handle
	got  atomic.Uint64 // frames the ring sent it, hop acknowledgements aside
	acks atomic.Uint64 // hop acknowledgements the ring sent it
	// synced is the last sync probe answered (see sync).
	synced  atomic.Uint64
	syncSeq uint64
}

// newAttacker enrolls an attacker; advertise, if given, is the address its hellos claim.
func (r *tlsRing) newAttacker(advertise ...string) *attacker {
	a := &attacker{r: r, rn: r.enroll()}
	a.tr = r.listen(a.rn, func(_ transport.From, f []byte) {
		m, err := decodeMessage(f)
		switch {
		case err == nil && m.Type == mHopAck:
			a.acks.Add(1)
		case err == nil && m.Type == mProbeReply && m.Seq >= syncSeq:
			a.synced.Store(m.Seq)
		default:
			a.got.Add(1)
		}
	}, advertise...)
	a.self = Handle{ID: a.rn.ID, Addr: a.tr.LocalAddr()}
	return a
}

// msg encodes m as sent by the attacker (its own, authenticated id unless m.From is set).
func (a *attacker) msg(m *message) []byte {
	m.Ring = a.r.cfg.Ring
	if m.From.ID.IsZero() {
		m.From = a.self
	}
	m.Ready = true
	return m.encode(nil)
}

// send queues frame for victim, waiting out back-pressure (the attacker floods as fast as the
// victim reads).
func (a *attacker) send(victim *tlsNode, frame []byte) {
	a.r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := a.tr.Send(victim.rn.ID, victim.tr.LocalAddr(), frame)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			a.r.t.Fatalf("attacker cannot send to %s: %v", victim.rn.ID.Short(), err)
		}
		time.Sleep(time.Millisecond)
	}
}

// syncSeq is the first probe sequence number sync uses.
const syncSeq = 1 << 62

// sync returns once victim has processed every frame the attacker sent it so far: frames of
// one connection are handled in order, and the answer to a probe sent last comes after them.
// The probe is repeated until answered: the victim drops answers its queue to the attacker
// has no room for.
func (a *attacker) sync(victim *tlsNode, within time.Duration) {
	a.r.t.Helper()
	if a.syncSeq == 0 {
		a.syncSeq = syncSeq
	}
	first := a.syncSeq + 1
	deadline := time.Now().Add(within)
	for a.synced.Load() < first {
		if time.Now().After(deadline) {
			a.r.t.Fatalf("seed %d: victim %s did not answer the attacker's probe within %v", a.r.seed, victim.rn.ID.Short(), within)
		}
		a.syncSeq++
		a.send(victim, a.msg(&message{Type: mProbe, Seq: a.syncSeq, Time: 1}))
		for next := time.Now().Add(time.Second); a.synced.Load() < first && time.Now().Before(next); {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// rawConn opens an authenticated connection to victim, exchanges hellos by hand, and returns
// it for the caller to write arbitrary bytes on.
func (a *attacker) rawConn(victim *tlsNode) *tls.Conn {
	a.r.t.Helper()
	cfg := a.rn.Trust.TLSConfig(a.rn.Creds, time.Now)
	c, err := tls.Dial("tcp", victim.tr.LocalAddr(), cfg)
	if err != nil {
		a.r.t.Fatalf("dial %s: %v", victim.tr.LocalAddr(), err)
	}
	a.r.t.Cleanup(func() { c.Close() })
	addr := "127.0.0.1:1"
	hello := make([]byte, 0, 16)
	hello = binary.BigEndian.AppendUint32(hello, uint32(1+2+len(addr)))
	hello = append(hello, 2) // kind hello
	hello = binary.BigEndian.AppendUint16(hello, 1)
	hello = append(hello, addr...)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		a.r.t.Fatalf("write hello: %v", err)
	}
	br := bufio.NewReader(c)
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[4] != 2 {
		a.r.t.Fatalf("read hello: %v (kind %d)", err, hdr[4])
	}
	if _, err := io.ReadFull(br, make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)); err != nil {
		a.r.t.Fatalf("read hello: %v", err)
	}
	c.SetDeadline(time.Time{})
	return c
}
