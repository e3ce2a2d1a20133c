package sim

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"epost/internal/dnsres"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/simnet"
)

// The federation's world: R rings on one simnet.Network, each a mailRun of its own (the same
// nodes as `epost sim mail`: Pastry, PAST, Scribe and POST) whose nodes are clustered around a
// site. simnet places nodes in a unit square whose distance is latency (2 ms plus up to 198 ms
// one way across the diagonal): a ring's nodes lie within SiteRadius of its site (a LAN of a
// few milliseconds), and the sites are spread over the square (a WAN of tens to 200 ms).
// Gateways (federation_gateway.go) add a second endpoint at the same place, with the same
// node id, for the global ring. DNS is a fake resolver answering at once for admission and
// after DNSLatency of virtual time for the recipients' sender checks.

type fedRun struct {
	cfg      FedConfig
	net      *simnet.Network
	rng      *rand.Rand // the world: sites, placement, users, messages, failures
	prng     *rand.Rand // the protocol's choices (which gateway of a roster)
	progress func(string)

	rings    []*fedRing
	gws      []*fedGateway
	stranger *strangerGateway
	byID     map[post.NotificationID]*simMsg // every ring's OnFiled finds messages here
	msgs     []*fedMsg
	links    map[*mailNode]*fedLink

	// What the transports would vouch for: the ring each global-ring peer's certificate
	// chain names (ring.VerifyGatewayChain), each ring's descriptor as its bundle shows it,
	// and the rings' trust anchors (their CAs).
	peerRing   map[ids.ID]ids.RingID
	foreign    map[ids.RingID]*ring.Foreign
	trust      map[ids.RingID]*post.RingTrust
	dns        fakeTXT
	domainRing map[string]ids.RingID

	offline      []*mailNode
	refusalNoted map[ids.RingID]bool
	globalBytes  uint64 // sent by the gateways on the global ring
	stats        fedStats
	sendWindow   window
	runStart     window
	failAt       time.Duration
	restBytes    float64
}

// fedStats count what the protocol did, for the fail and final lines.
type fedStats struct {
	handoffsRetried  int // node hand-offs given to another gateway (or the same one again)
	recordsRetried   int
	relaysRetried    int // gateway-to-gateway hand-offs tried again
	receiptTimeouts  int
	queued           int // hand-offs a gateway answered before the other ring had stored them
	custodyLost      int // entries a gateway had answered for and still held when it crashed
	unadmittedFrames uint64
	recordOffline    int // messages not accepted while every replica of the recipient's record was offline
	notAccepted      int
}

type fedRing struct {
	idx    int
	name   string
	domain string
	run    *mailRun
	caKey  ed25519.PrivateKey
	x, y   float64 // its site
	gws    []*fedGateway
	isGW   map[ids.ID]bool // nodes whose certificate carries the gateway role
	users  []*simUser
}

// fedMsg is one message of the run; its simMsg is what the recipient's OnFiled updates.
type fedMsg struct {
	simMsg
	inter          bool
	fromRing       *fedRing
	toRing         *fedRing
	committed      bool // intra: handed to POST; inter: sealed, handed to a gateway from then on
	notAccepted    bool // given up: the sender was told it failed
	entry          string
	handoffRetries int
	startAt        time.Duration // the send began (inter: before the recipient's record was known)
}

type window struct {
	at    time.Duration
	bytes uint64
}

func newFedRun(cfg FedConfig, progress func(string)) *fedRun {
	f := &fedRun{cfg: cfg, net: simnet.New(simnet.DefaultConfig(cfg.Seed)),
		rng: rand.New(rand.NewPCG(cfg.Seed, 0xfed)), prng: rand.New(rand.NewPCG(cfg.Seed, 0xfed2)),
		byID: map[post.NotificationID]*simMsg{}, links: map[*mailNode]*fedLink{},
		peerRing: map[ids.ID]ids.RingID{}, foreign: map[ids.RingID]*ring.Foreign{},
		trust: map[ids.RingID]*post.RingTrust{}, dns: fakeTXT{}, domainRing: map[string]ids.RingID{}, refusalNoted: map[ids.RingID]bool{}}
	f.progress = func(s string) { progress(fmt.Sprintf("t=%s %s", f.net.Elapsed().Round(time.Millisecond), s)) }
	return f
}

// build makes the rings (all joining at once, one node per ring every JoinSpacing) and their
// gateways' ring side.
func (f *fedRun) build() error {
	cfg := f.cfg
	for i := range cfg.RingSizes {
		f.rings = append(f.rings, f.newRing(i))
	}
	f.placeSites()
	most := 0
	for _, n := range cfg.RingSizes {
		most = max(most, n)
	}
	for k := 0; k < most; k++ {
		if k > 0 {
			f.net.RunFor(cfg.JoinSpacing)
		}
		for i, rr := range f.rings {
			if k < cfg.RingSizes[i] {
				f.addNode(rr)
			}
		}
	}
	for wait := 0; wait < 300 && !f.allReady(); wait++ {
		f.net.RunFor(time.Second)
	}
	if !f.allReady() {
		return fmt.Errorf("seed %d: the rings did not finish joining", cfg.Seed)
	}
	f.net.RunFor(10 * time.Second)
	for _, rr := range f.rings {
		for _, i := range f.rng.Perm(len(rr.run.nodes))[:cfg.Gateways] {
			gw := f.newGateway(rr, rr.run.nodes[i])
			rr.gws = append(rr.gws, gw)
			f.gws = append(f.gws, gw)
		}
	}
	for _, gw := range f.gws {
		gw.serveRing()
	}
	f.net.RunFor(10 * time.Second)
	f.progress(fmt.Sprintf("%d rings of %v nodes built, %d gateways in them", len(f.rings), cfg.RingSizes, len(f.gws)))
	return nil
}

func (f *fedRun) newRing(i int) *fedRing {
	cfg := f.cfg
	var seed [32]byte
	fill(f.rng, seed[:])
	caKey := ed25519.NewKeyFromSeed(seed[:])
	caPub := caKey.Public().(ed25519.PublicKey)
	ringID := ids.RingIDOfCA(caPub)
	rr := &fedRing{idx: i, name: fmt.Sprintf("ring%d", i), domain: fmt.Sprintf("ring%d.example", i), caKey: caKey, isGW: map[ids.ID]bool{}}
	mc := MailConfig{Nodes: cfg.RingSizes[i], Users: cfg.Users, Seed: cfg.Seed, Replicas: cfg.Replicas, LeafSet: cfg.LeafSet,
		Tick: cfg.Tick, PastTick: cfg.PastTick, Marker: cfg.Marker, RingName: rr.name}
	_ = mc.Validate() // fills the defaults; the values were checked by FedConfig.Validate
	mc.Post.ForeignSender = f.foreignSender(rr)
	pc := pastry.Config{Ring: ringID, LeafSetSize: cfg.LeafSet}
	sr := &simRing{net: f.net, rng: rand.New(rand.NewPCG(cfg.Seed, 0xa11ce+uint64(i)<<8)), cfg: pc, tick: cfg.Tick}
	rr.run = &mailRun{cfg: mc, ring: sr, rng: rand.New(rand.NewPCG(cfg.Seed, 0x3a11+uint64(i)<<8)), ringID: ringID,
		caPub: caPub, byID: f.byID, progress: f.progress, opRng: rand.New(rand.NewPCG(cfg.Seed, 0xf01d+uint64(i)<<8))}
	fill(rr.run.rng, rr.run.secret[:])
	desc := &ring.Descriptor{Version: ring.DescriptorVersion, Name: rr.name, RingID: ringID, Domains: []string{rr.domain}}
	f.foreign[ringID] = &ring.Foreign{Descriptor: desc}
	f.trust[ringID] = &post.RingTrust{Ring: ringID, CA: caPub}
	f.dns[strings.TrimSuffix(ring.DNSName(rr.domain), ".")] = []string{ring.DNSValue(ringID)}
	f.domainRing[rr.domain] = ringID
	return rr
}

// placeSites spreads the rings' sites over the latency space, at least spacing apart when
// that can be found.
func (f *fedRun) placeSites() {
	spacing := min(0.3, 0.6/math.Sqrt(float64(len(f.rings))))
	for i, rr := range f.rings {
		for try := 0; ; try++ {
			rr.x, rr.y = 0.05+0.9*f.rng.Float64(), 0.05+0.9*f.rng.Float64()
			ok := true
			for _, o := range f.rings[:i] {
				if math.Hypot(o.x-rr.x, o.y-rr.y) < spacing {
					ok = false
				}
			}
			if ok || try == 200 {
				break
			}
		}
	}
}

// addNode joins a node of rr near rr's site, with PAST, Scribe and POST (mailRun.attach) and
// the link to the ring's gateways.
func (f *fedRun) addNode(rr *fedRing) *mailNode {
	r := rr.run.ring
	id := r.randomID()
	idx := len(r.nodes)
	ang, d := 2*math.Pi*f.rng.Float64(), f.cfg.SiteRadius*math.Sqrt(f.rng.Float64())
	x, y := clamp01(rr.x+d*math.Cos(ang)), clamp01(rr.y+d*math.Sin(ang))
	ep := f.net.AddNodeAt(id, fmt.Sprintf("r%d-n%d", rr.idx, idx), x, y)
	sn := &simNode{idx: idx, ep: ep, alive: true, joinAt: f.net.Elapsed()}
	bootstrap := r.nearbyBootstrap(ep)
	r.nodes = append(r.nodes, sn)
	r.startNode(sn, bootstrap)
	mn := &mailNode{sn: sn}
	rr.run.nodes = append(rr.run.nodes, mn)
	mn.st = past.NewMemStore(ep.Clock().Now, 0)
	rr.run.attach(mn)
	f.wireLink(rr, mn)
	return mn
}

func clamp01(v float64) float64 { return max(0, min(v, 0.999999)) }

func (f *fedRun) allReady() bool {
	for _, rr := range f.rings {
		if _, ready := rr.run.ring.countAlive(); ready < len(rr.run.nodes) {
			return false
		}
	}
	return true
}

// setupResult reports the rings and the latency model: the longest one-way latency between
// two nodes of one ring (LAN), and the shortest and longest between two rings' sites (WAN).
func (f *fedRun) setupResult() FedResult {
	res := FedResult{Phase: "setup"}
	nodes, ready := 0, 0
	var lan, wanMin, wanMax time.Duration
	for i, rr := range f.rings {
		a, rd := rr.run.ring.countAlive()
		nodes += a
		ready += rd
		ns := rr.run.nodes
		for j := 0; j < min(len(ns), 50); j++ {
			for k := j + 1; k < min(len(ns), 50); k++ {
				lan = max(lan, f.net.Latency(ns[j].sn.ep, ns[k].sn.ep))
			}
		}
		for _, o := range f.rings[:i] {
			l := f.net.Latency(rr.run.nodes[0].sn.ep, o.run.nodes[0].sn.ep)
			if wanMin == 0 || l < wanMin {
				wanMin = l
			}
			wanMax = max(wanMax, l)
		}
	}
	res.add("rings", float64(len(f.rings)))
	res.add("nodes", float64(nodes))
	res.add("ready", float64(ready))
	res.add("gateways", float64(len(f.gws)))
	res.add("lan_ms_max", ms(lan))
	res.add("wan_ms_min", ms(wanMin))
	res.add("wan_ms_max", ms(wanMax))
	return res
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*10) / 10 }

// addUsers creates U users per ring on random nodes that are not gateways, their records
// signed by their ring's CA.
func (f *fedRun) addUsers() error {
	cfg := f.cfg
	keyRand := rand.NewChaCha8(seed2(f.rng))
	pending := 0
	var failed []string
	for k := 0; k < cfg.Users; k++ {
		for _, rr := range f.rings {
			run := rr.run
			var mn *mailNode
			for mn == nil || rr.isGW[mn.sn.ep.ID()] {
				mn = run.nodes[f.rng.IntN(len(run.nodes))]
			}
			keys, err := identity.NewKeys(keyRand)
			if err != nil {
				return err
			}
			addr := fmt.Sprintf("user%d@%s", k, rr.domain)
			nb := f.net.Now().Add(-time.Hour).Truncate(time.Second)
			rec := identity.Record{Ring: run.ringID, Address: addr, Keys: keys.Public(), Serial: uint64(k + 1), NotBefore: nb, NotAfter: nb.Add(365 * 24 * time.Hour)}
			sr, err := identity.SignRecord(rec, rr.caKey)
			if err != nil {
				return err
			}
			su := &simUser{addr: addr, keys: keys, rec: sr, node: mn}
			mn.users = append(mn.users, su)
			rr.users = append(rr.users, su)
			pending++
			mn.post.AddUser(keys, sr, true, func(u *post.User, err error) {
				pending--
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %v", addr, err))
					return
				}
				su.u = u
			})
		}
		f.net.RunFor(50 * time.Millisecond)
	}
	for wait := 0; wait < 120 && pending > 0; wait++ {
		f.net.RunFor(time.Second)
	}
	for _, rr := range f.rings {
		for _, su := range rr.users {
			if su.u == nil {
				return fmt.Errorf("seed %d: user %s could not be created %v", cfg.Seed, su.addr, failed)
			}
		}
	}
	f.net.RunFor(10 * time.Second)
	f.progress(fmt.Sprintf("%d users in each ring", cfg.Users))
	return nil
}

// takeOffline crashes a fraction of every ring's user-hosting nodes until the sends are over.
func (f *fedRun) takeOffline() {
	total := 0
	for _, rr := range f.rings {
		var hosts []*mailNode
		for _, mn := range rr.run.nodes {
			if len(mn.users) > 0 {
				hosts = append(hosts, mn)
			}
		}
		f.rng.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
		n := min(int(math.Round(f.cfg.Offline*float64(len(hosts)))), len(hosts)-1)
		for _, mn := range hosts[:n] {
			rr.run.crash(mn)
			delete(f.links, mn)
			f.offline = append(f.offline, mn)
		}
		total += len(hosts)
	}
	f.net.RunFor(time.Minute) // failure detection and tree repair settle
	f.progress(fmt.Sprintf("%d of %d user nodes offline", len(f.offline), total))
}

// returnOffline brings the offline nodes back, with their stores, a few at a time.
func (f *fedRun) returnOffline() {
	f.net.RunFor(f.cfg.OfflineAfter)
	for _, mn := range f.offline {
		rr := f.ringOf(mn)
		rr.run.restart(mn)
		f.wireLink(rr, mn)
		f.net.RunFor(100 * time.Millisecond)
	}
	f.progress(fmt.Sprintf("%d user nodes back", len(f.offline)))
}

func (f *fedRun) ringOf(mn *mailNode) *fedRing {
	for _, rr := range f.rings {
		if i := mn.sn.idx; i < len(rr.run.nodes) && rr.run.nodes[i] == mn {
			return rr
		}
	}
	panic("sim: node of no ring")
}

// foreignSender is POST's ForeignSender on rr's nodes (the daemon's directory): the sender's
// domain must name the sender's ring in DNS, and that ring must be admitted by rr's gateways,
// whose admitted bundles carry its CA.
func (f *fedRun) foreignSender(rr *fedRing) func(string, ids.RingID, func(*post.RingTrust, error)) {
	return func(from string, r ids.RingID, cb func(*post.RingTrust, error)) {
		f.net.AfterFunc(f.cfg.DNSLatency, func() {
			_, dom, _ := strings.Cut(from, "@")
			named, ok := f.domainRing[strings.ToLower(dom)]
			switch {
			case !ok || named != r:
				cb(nil, fmt.Errorf("%w: %s does not name ring %s", post.ErrForeignRefused, dom, r.Short()))
			case !rr.admits(r):
				cb(nil, fmt.Errorf("ring %s is not admitted by ring %s's gateways yet", r.Short(), rr.name))
			default:
				cb(f.trust[r], nil)
			}
		})
	}
}

// admits reports whether a live gateway of rr admitted ring r.
func (rr *fedRing) admits(r ids.RingID) bool {
	for _, gw := range rr.gws {
		if gw.alive && gw.admitted(r) {
			return true
		}
	}
	return false
}

// fakeTXT is DNS for admission: _epost names and their TXT records.
type fakeTXT map[string][]string

func (d fakeTXT) TXT(_ context.Context, name string) ([]string, time.Duration, error) {
	if txts, ok := d[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return txts, time.Hour, nil
	}
	return nil, 0, dnsres.ErrNotFound
}
