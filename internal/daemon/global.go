package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/appmux"
	"epost/internal/dnsres"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailauth"
	"epost/internal/mailqueue"
	"epost/internal/multiring"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/scribe"
	"epost/internal/smtpout"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// The global ring (DESIGN.md layer 11, docs/gateway-design.md): a gateway, a node whose
// certificate carries the gateway role, runs a second Pastry instance in ring 0 in the same
// process, on a listener of its own, over the same TLS machinery: it shows [its certificate,
// its ring's CA certificate] and checks the other gateways' chains (ring.VerifyGatewayChain),
// and multiring.Global admits only rings whose mail domains DNS (or the trust file) confirms.
// Ordinary nodes never join it. Nothing of PAST or Glacier runs there.

// GlobalLeafSet is the global ring's leaf-set size: a protocol constant, since no authority
// signs a descriptor for the global ring.
const GlobalLeafSet = 16

// globalSide is a gateway's ring-0 stack.
type globalSide struct {
	link       *multiring.Global
	sc         *scribe.Scribe                  // the global ring's gateway groups
	dir        *multiring.Directory            // other rings' user records, through their gateways
	relay      *multiring.Relay                // mail handed to and taken from other rings' gateways
	queue      *mailqueue.Queue                // what this gateway holds until the next hop has it (DATADIR/gwqueue)
	carrier    *multiring.Carrier              // works the queue's federation entries
	internet   *smtpout.Carrier                // and its internet entries
	dkim       map[string]mailauth.SignOptions // DKIM keys by mail domain (NODEDIR/gateway/dkim)
	stopScribe func()
	stopLoop   chan struct{}
	kick       chan struct{} // capacity 1: a new entry is queued, run the carrier now
	tr         *tcp.Transport
	rt         *resolvingTransport
	drv        *pastry.Driver
	cur        atomic.Pointer[pastry.Driver] // drv, for the transport's goroutines (frames may come before drv is made)
	self       pastry.Handle
	// peers remembers the global ring's members (DATADIR/global-peers.json): a gateway that
	// restarts after its bootstrap gateways are gone finds the global ring again through them
	// (nil on a private global side). saved is the last list written.
	peers *peerStore
	saved []Peer
}

// FileGlobalPeers is the global ring's remembered-peers file in a gateway's data directory.
const FileGlobalPeers = "global-peers.json"

// rememberGlobalPeers rewrites global-peers.json when the global ring's members changed.
func (n *Node) rememberGlobalPeers(gs *globalSide) {
	if gs.peers == nil {
		return
	}
	peers := snapshotPeers(gs.drv)
	if len(peers) == 0 || slices.Equal(peers, gs.saved) {
		return
	}
	if err := gs.peers.save(peers, time.Now()); err != nil {
		n.log.Warn("global ring: could not remember peers (a restart then depends on --global-bootstrap): "+err.Error(), "file", gs.peers.path)
		return
	}
	gs.saved = peers
}

// runsGlobal reports whether this node runs a global side (startGlobal): a gateway with a
// global listener, or one without, privately, for its internet queue (a ring of a version 1
// descriptor cannot federate and has none).
func (n *Node) runsGlobal() bool {
	if !ring.HasRole(n.rn.Cert, ring.RoleGateway) {
		return false
	}
	return n.opts.GlobalListen != "" || n.rn.Descriptor.Federable()
}

// startGlobal starts the ring-0 stack when this node is a gateway (runsGlobal).
// It runs under n.mu, from Start.
func (n *Node) startGlobal() error {
	o := n.opts
	private := o.GlobalListen == ""
	if private {
		// A gateway outside any federation still carries its ring's internet mail, whose
		// queue and carriers live on the global side: it runs alone, on a loopback port that
		// no other gateway is told of.
		if !ring.HasRole(n.rn.Cert, ring.RoleGateway) || !n.rn.Descriptor.Federable() {
			return nil
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("the gateway's private global side: %w", err)
		}
		o.GlobalListen = ln.Addr().String()
		ln.Close()
		o.GlobalBootstrap, o.GlobalAdvertise = nil, ""
		n.log.Info("gateway without --global-listen: no federation; its global side (the internet queue) runs privately", "listen", o.GlobalListen)
	}
	if !ring.HasRole(n.rn.Cert, ring.RoleGateway) {
		return fmt.Errorf("--global-listen: node %s is not a gateway (its certificate has no gateway role: enroll it with node init --gateway or ring enroll --gateway)", n.rn.ID.Short())
	}
	if !n.rn.Descriptor.Federable() {
		return fmt.Errorf("--global-listen: ring %q has a version %d descriptor, whose id any ring could claim: it cannot federate (create the ring anew with this epost)", n.rn.Descriptor.Name, n.rn.Descriptor.Version)
	}
	bundle, err := ring.LoadBundle(o.Dir)
	if err != nil {
		return err
	}
	advertise := o.GlobalAdvertise
	if advertise == "" {
		advertise = o.GlobalListen
	}
	gs := &globalSide{self: pastry.Handle{ID: n.rn.ID, Addr: advertise}, peers: newPeerStore(filepath.Join(n.rn.DataDir(), FileGlobalPeers), n.rn.ID)}
	book := newAddrBook()
	gs.link = multiring.NewGlobal(multiring.GlobalConfig{
		Self:      bundle,
		Admission: &multiring.Admission{Resolver: &dnsres.Resolver{Server: o.Resolver}, Trusted: o.Trusted},
		Log:       n.log.With("ring", "global"),
		Handler: func(from transport.From, frame []byte) {
			book.learn(from.Addr, from.ID)
			if drv := gs.cur.Load(); drv != nil {
				drv.Handle(from, frame)
			}
		},
	})
	creds := tls.Certificate{Certificate: [][]byte{n.rn.Cert.Raw, n.rn.Trust.CA().Raw}, PrivateKey: n.rn.Key}
	tr, err := tcp.New(tcp.Config{
		ListenAddr:        o.GlobalListen,
		AdvertiseAddr:     advertise,
		ID:                n.rn.ID,
		Certificate:       creds,
		VerifyPeerChain:   gs.link.VerifyChain,
		OnPeer:            gs.link.OnPeer,
		Handler:           gs.link.Handle,
		Logger:            n.log.With("ring", "global"),
		DialTimeout:       n.timers.DialTimeout,
		KeepaliveInterval: n.timers.Keepalive,
		ReadTimeout:       3 * n.timers.Keepalive,
		MaxBackoff:        n.timers.BootstrapMaxBackoff,
	})
	if err != nil {
		return fmt.Errorf("start the global ring's transport: %w (is something else using %s?)", err, o.GlobalListen)
	}
	gs.tr = tr
	gs.link.SetTransport(tr)
	gs.rt = &resolvingTransport{tr: tr, out: gs.link, book: book, log: n.log.With("ring", "global"),
		probe: func(ctx context.Context, addr string) (ids.ID, error) { return tr.Identify(ctx, addr) }, pending: map[string]*pendingProbe{}}
	pcfg := pastry.DefaultConfig()
	pcfg.Ring = ids.GlobalRing
	pcfg.LeafSetSize = GlobalLeafSet
	pcfg.ProbeInterval = n.timers.ProbeInterval
	pcfg.ProbeTimeout = n.timers.ProbeTimeout
	pcfg.JoinTimeout = n.timers.JoinTimeout
	pcfg.HealInterval = n.timers.HealInterval
	seed := n.seed ^ 0x676c6f62616c // "global"
	mux := appmux.New()
	gs.drv = pastry.NewDriver(pcfg, gs.self, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), mux.Forward, gs.rt, transport.RealClock{}, n.timers.Tick)
	gs.sc = scribe.New(scribe.Config{Ring: ids.GlobalRing, Now: time.Now, Rand: rand.New(rand.NewPCG(seed^0x73637269, seed))}, gs.drv)
	_ = mux.Register(appmux.TagScribe, gs.sc)
	// Other rings' gateways, as the directory and the relay learn them (their rosters), and
	// this ring's, as this gateway hears their beacons (sent with every receipt and answer).
	remotes := multiring.NewRemoteGateways()
	gs.dir = multiring.NewDirectory(multiring.DirectoryConfig{
		Ring: n.rn.Descriptor.RingID, Global: gs.link, Topics: gs.sc, Ov: gs.drv,
		Gateways: remotes, Roster: n.gatewayRoster,
		Records: func(addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
			a := n.apps.Load()
			if a == nil {
				cb(nil, identity.SignedRecord{}, errors.New("the ring's POST is not running"))
				return
			}
			a.post.LookupRecord(addr, cb)
		},
		IsUnknown: func(err error) bool { return errors.Is(err, post.ErrUnknownRecipient) },
		IsRevoked: func(err error) bool { return errors.Is(err, post.ErrRevokedRecipient) },
	})
	_ = mux.Register(appmux.TagDirectory, gs.dir.App())
	qopts := mailqueue.Options{}
	if o.QueueBackoff > 0 {
		qopts.Backoff = func(mailqueue.Kind, int) time.Duration { return o.QueueBackoff }
	}
	q, err := mailqueue.Open(filepath.Join(n.rn.DataDir(), FileGatewayQueue), qopts)
	if err != nil {
		_ = tr.Close()
		return fmt.Errorf("gateway queue: %w", err)
	}
	gs.queue = q
	gs.relay = multiring.NewRelay(multiring.RelayConfig{Ring: n.rn.Descriptor.RingID, Global: gs.link, Topics: gs.sc, Ov: gs.drv,
		Log: n.log.With("ring", "global"), Gateways: remotes, Roster: n.gatewayRoster,
		Deliver: func(b *post.RemoteBundle, cb func([]post.Result)) {
			a := n.apps.Load()
			if a == nil {
				res := make([]post.Result, len(b.Notes))
				for i, note := range b.Notes {
					res[i] = post.Result{To: note.To, Status: post.Failed, Err: errors.New("the ring's POST is not running")}
				}
				cb(res)
				return
			}
			a.post.DeliverRemote(b, cb)
		}})
	_ = mux.Register(appmux.TagRelay, gs.relay.App())
	gs.carrier = &multiring.Carrier{Queue: q, Relay: gs.relay, Log: n.log.With("ring", "global"), Now: time.Now, Report: n.reportDelivery}
	if gs.dkim, err = mailauth.LoadDKIMKeys(filepath.Join(o.Dir, DirGatewayDKIM)); err != nil {
		_ = tr.Close()
		return fmt.Errorf("the gateway's DKIM keys: %w", err)
	}
	helo := "gateway." + n.rn.Descriptor.Domains[0]
	smarthost, err := loadSmarthost(o.Dir)
	if err != nil {
		_ = tr.Close()
		return err
	}
	gs.internet = &smtpout.Carrier{Queue: q, Log: n.log.With("ring", "internet"), Now: time.Now,
		D: smtpout.New(smtpout.Config{Resolver: &dnsres.Resolver{Server: o.Resolver}, HELO: helo, Port: o.OutboundPort, Smarthost: smarthost}), Report: n.reportDelivery}
	ga := &apps{mux: mux}
	gs.drv.OnEvent = func(e pastry.Event) {
		if e.Kind == pastry.EventReady {
			n.log.Info("joined the global ring: ready", "node", n.rn.ID.Short(), "global_advertise", advertise)
		}
		n.queue.push(ga, e)
	}
	gs.drv.OnReject = func(from transport.From, err error) {
		n.log.Warn("global ring: pastry refused frame", "peer", from.ID.Short(), "addr", from.Addr, "err", err)
	}
	gs.cur.Store(gs.drv)
	n.global = gs
	n.log.Info("global ring starting", "node", n.rn.ID.Short(), "listen", o.GlobalListen, "advertise", advertise,
		"bootstrap", fmt.Sprint(o.GlobalBootstrap), "resolver", resolverName(o.Resolver))
	boot := o.GlobalBootstrap
	if private {
		gs.peers = nil
	} else {
		// Remembered members after the configured ones: the join tries each in turn, so a
		// restart finds the global ring when the gateways named by --global-bootstrap are
		// gone, and a founder (no --global-bootstrap) that restarts rejoins the ring the
		// others kept rather than found a second one. When nobody completes the join,
		// globalFounderWatch picks one gateway to found it.
		remembered, err := gs.peers.load()
		if err != nil {
			n.log.Warn("global ring: remembered peers ignored: " + err.Error())
		}
		for _, p := range remembered {
			if !slices.Contains(boot, p.Addr) && p.Addr != advertise {
				boot = append(boot, p.Addr)
			}
		}
		gs.saved = remembered
	}
	gs.drv.Start(boot)
	gs.stopLoop, gs.kick = make(chan struct{}), make(chan struct{}, 1)
	if len(boot) > 0 {
		go n.globalFounderWatch(gs, boot)
	}
	gs.stopScribe = gs.sc.RunTicker(transport.RealClock{}, time.Second)
	if err := gs.dir.Start(); err != nil {
		n.log.Warn("global ring: cannot join this ring's gateway group", "err", err)
	}
	go func() {
		t := time.NewTicker(carrierInterval)
		defer t.Stop()
		var beaconAt, peersAt time.Time
		for {
			select {
			case <-gs.stopLoop:
				return
			case <-t.C:
			case <-gs.kick:
			}
			if now := time.Now(); now.Sub(beaconAt) >= multiring.BeaconInterval {
				beaconAt = now
				n.beacon(gs)
			}
			if now := time.Now(); now.Sub(peersAt) >= n.timers.PeersSave {
				peersAt = now
				n.rememberGlobalPeers(gs)
			}
			gs.carrier.RunOnce(context.Background())
			gs.internet.RunOnce(context.Background())
		}
	}()
	return nil
}

// globalFounderWatch covers the global ring's members all restarting (or its founder gone for
// good): each joins through the others, which are only joining too, and none would ever be
// ready. It has no founder to fall back on (every gateway but the first names a bootstrap), so
// after a few join timeouts without success the gateway asks who of its candidates answers:
// when none does, or its own id is the lowest among those that do, it founds the global ring
// alone (pastry.Driver.FoundAlone: the others' join retries then reach it, and the periodic heal
// through the bootstrap list merges any ring founded elsewhere).
func (n *Node) globalFounderWatch(gs *globalSide, boot []string) {
	limit := 4 * n.timers.JoinTimeout
	for {
		select {
		case <-gs.stopLoop:
			return
		case <-time.After(limit):
		}
		if gs.drv.Ready() {
			return
		}
		lowest := true
		answered := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, addr := range boot {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), n.timers.DialTimeout)
				defer cancel()
				id, err := gs.tr.Identify(ctx, addr)
				if err != nil {
					return
				}
				mu.Lock()
				answered++
				if bytes.Compare(id[:], n.rn.ID[:]) < 0 {
					lowest = false
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if !lowest || gs.drv.Ready() {
			continue
		}
		if gs.drv.FoundAlone() {
			n.log.Warn(fmt.Sprintf("global ring: no join completed in %v and no gateway with a lower id answered (%d of %d answered): founding the global ring anew; the others join this gateway",
				limit, answered, len(boot)))
			return
		}
	}
}

func resolverName(s string) string {
	if s == "" {
		return "system"
	}
	return s
}

// LookupRemoteRecord asks another ring's gateways, over the global ring, for a user record,
// verified under that ring's CA (a gateway only; ErrNotGateway otherwise).
func (n *Node) LookupRemoteRecord(r ids.RingID, addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	n.mu.Lock()
	gs := n.global
	n.mu.Unlock()
	if gs == nil {
		cb(nil, identity.SignedRecord{}, ErrNotGateway)
		return
	}
	gs.dir.LookupRecord(r, addr, cb)
}

// FileSmarthost, in a gateway's node directory (0600), names a relay that takes all outgoing
// internet mail instead of the destinations' MX (smtpout.Smarthost: addr, username,
// password), when the organization sends through its provider.
const FileSmarthost = "gateway/smarthost.json"

func loadSmarthost(dir string) (*smtpout.Smarthost, error) {
	p := filepath.Join(dir, FileSmarthost)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var sh smtpout.Smarthost
	if err := json.Unmarshal(b, &sh); err != nil || sh.Addr == "" {
		return nil, fmt.Errorf("%s: want {\"addr\": \"HOST:PORT\", \"username\": ..., \"password\": ...} (%v)", p, err)
	}
	if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 && sh.Password != "" {
		return nil, fmt.Errorf("%s holds a password and others may read it: chmod 600 %s", p, p)
	}
	return &sh, nil
}

// DirGatewayDKIM holds a gateway's DKIM keys inside its node directory (epost gateway dkim).
const DirGatewayDKIM = "gateway/dkim"

// FileGatewayQueue is a gateway's queue directory inside its data directory.
const FileGatewayQueue = "gwqueue"

// carrierInterval is how often a gateway looks for queue entries due.
const carrierInterval = 500 * time.Millisecond

// QueueFederated queues a sealed bundle for another ring in this gateway's queue, durably, and
// returns its entry id; the carrier hands it to a gateway of b.Dest. id may be the origin's
// entry id ("" makes one); an id already queued or finished here is mailqueue.ErrExists.
func (n *Node) QueueFederated(id, from string, b *post.RemoteBundle, deadline time.Time) (string, error) {
	n.mu.Lock()
	gs := n.global
	n.mu.Unlock()
	if gs == nil {
		return "", ErrNotGateway
	}
	h := mailqueue.Header{ID: id, Kind: mailqueue.KindFederation, From: from, Deadline: deadline}
	for _, note := range b.Notes {
		h.Rcpts = append(h.Rcpts, mailqueue.Rcpt{Addr: note.To, NID: hex.EncodeToString(note.ID[:]), Ring: b.Dest.String()})
	}
	st, err := gs.queue.Stage(h, b.Encode())
	if err != nil {
		return "", err
	}
	id, err = st.Commit()
	if err == nil {
		select { // hand it over now rather than at the next tick
		case gs.kick <- struct{}{}:
		default:
		}
	}
	return id, err
}

// GatewayQueue is the gateway's queue (nil on other nodes), for status and tests.
func (n *Node) GatewayQueue() *mailqueue.Queue {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.global == nil {
		return nil
	}
	return n.global.queue
}

// ErrNotGateway: the node does not run the global ring.
var ErrNotGateway = errors.New("daemon: this node is not a gateway of the global ring")

// stopGlobal stops the ring-0 stack (Stop, after the ring's own overlay).
func (gs *globalSide) stop() {
	if gs == nil {
		return
	}
	close(gs.stopLoop)
	gs.stopScribe()
	gs.sc.Stop()
	gs.drv.Stop()
	_ = gs.link.Close()
	_ = gs.tr.Close()
}

// GlobalStatus is a gateway's side of the global ring, in epost status: the rings it admitted
// and refused, and the traffic that crossed it (only inter-ring traffic ever does).
type GlobalStatus struct {
	Listen         string   `json:"listen"`
	Ready          bool     `json:"ready"`
	LeafSet        []string `json:"leaf_set"` // node ids (hex) of the global ring's leaf set
	Admitted       uint64   `json:"admitted"` // admission decisions about other rings since start
	Refused        uint64   `json:"refused"`
	RefusedBy      uint64   `json:"refused_by"` // times a peer refused this ring
	Unadmitted     uint64   `json:"unadmitted_frames"`
	SentFrames     uint64   `json:"sent_frames"`
	SentBytes      uint64   `json:"sent_bytes"`
	ReceivedFrames uint64   `json:"received_frames"`
	ReceivedBytes  uint64   `json:"received_bytes"`
	// Hand-offs of mail to and from other rings' gateways, and this gateway's queue.
	HandoffsOut  uint64 `json:"handoffs_out"`
	HandoffsIn   uint64 `json:"handoffs_in"`
	QueueEntries int    `json:"queue_entries"`
	QueueOldestS int64  `json:"queue_oldest_seconds"`
}

func (gs *globalSide) status(listen string) *GlobalStatus {
	if gs == nil {
		return nil
	}
	st := gs.link.Stats()
	s := &GlobalStatus{Listen: listen, Ready: gs.drv.Ready(), LeafSet: []string{},
		Admitted: st.Admitted, Refused: st.Refused, RefusedBy: st.RefusedBy, Unadmitted: st.Unadmitted,
		SentFrames: st.SentFrames, SentBytes: st.SentBytes, ReceivedFrames: st.ReceivedFrames, ReceivedBytes: st.ReceivedBytes}
	rs := gs.relay.Stats()
	s.HandoffsOut, s.HandoffsIn, s.QueueEntries = rs.HandoffsOut, rs.HandoffsIn, gs.queue.Len()
	if t := gs.queue.Oldest(); !t.IsZero() {
		s.QueueOldestS = int64(time.Since(t) / time.Second)
	}
	left, right, _ := gs.drv.ReadyLeafSet()
	seen := map[ids.ID]bool{}
	for _, h := range append(right, left...) {
		if !seen[h.ID] {
			seen[h.ID] = true
			s.LeafSet = append(s.LeafSet, h.ID.String())
		}
	}
	return s
}
