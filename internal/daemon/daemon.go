package daemon

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/appmux"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/mailstore"
	"epost/internal/multiring"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/store"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// Timers are the protocol and runtime intervals. Zero fields take the defaults (DefaultTimers);
// tests shorten them so that joins and failure detection take seconds, not minutes.
type Timers struct {
	Tick          time.Duration // pastry driver tick
	ProbeInterval time.Duration // pastry: probe a leaf member not heard from for this long
	ProbeTimeout  time.Duration // pastry: first probe timeout, doubling per retry
	JoinTimeout   time.Duration // pastry: retry the join after this long without a reply
	HealInterval  time.Duration // pastry: periodic re-join through bootstrap and once-dead nodes

	BootstrapBackoff    time.Duration // first wait after no bootstrap candidate answered
	BootstrapMaxBackoff time.Duration // the wait doubles up to this
	DialTimeout         time.Duration // bootstrap probe and tcp connect

	Keepalive time.Duration // tcp keepalive; the read timeout is three of these
	PeersSave time.Duration // peers.json is rewritten at most this often
	// LeaveGrace bounds how long a clean stop keeps serving the neighbours' hand-over fetches
	// after telling them it leaves (at most MaxLeaveGrace; see leave.go).
	LeaveGrace time.Duration

	PastTick             time.Duration // PAST driver tick (request timeouts are checked on it)
	PastRequestTimeout   time.Duration // PAST: wait for a reply this long before retrying
	PastMaintenance      time.Duration // PAST: periodic replica maintenance round
	PastMaintenanceDelay time.Duration // PAST: maintenance this long after a leaf-set change
	PastDropGrace        time.Duration // PAST: keep objects no longer ours this long
	PastGC               time.Duration // PAST: expire leases and purge the trash this often

	// POST; zero keeps post.DefaultConfig's value (these have no defaults of their own here).
	PostHolderDelay time.Duration // a holder offers a still-held notification itself after this
	PostRetryDelay  time.Duration // filing or opening a log that failed is retried after this
	// PostOnlineInterval: a user's node re-announces the user online this often, the safety
	// net that has holders push mail whose first announcement they missed.
	PostOnlineInterval time.Duration

	GlacierTick           time.Duration // Glacier driver tick (request timeouts, rounds, expiry)
	GlacierRequestTimeout time.Duration // Glacier: wait for fragment replies this long
	GlacierSync           time.Duration // Glacier: maintenance round (ePOST: hourly)
	GlacierSyncDelay      time.Duration // Glacier: first round after a leaf-set change
	GlacierGoneAfter      time.Duration // Glacier: re-code an absent node's fragments after this (ePOST: 14 days)
	ArchiveFlush          time.Duration // POST: an object waits at most this long for its aggregate

	// Submit bounds how long an SMTP submission waits for the ring (a quorum of replicas)
	// before it answers 451 (default loginTimeout); tests shorten it.
	Submit time.Duration
}

// DefaultTimers are the production values.
func DefaultTimers() Timers {
	p := pastry.DefaultConfig()
	pc := past.DefaultConfig()
	gc := glacier.DefaultConfig()
	return Timers{
		Tick:                250 * time.Millisecond,
		ProbeInterval:       p.ProbeInterval,
		ProbeTimeout:        p.ProbeTimeout,
		JoinTimeout:         p.JoinTimeout,
		HealInterval:        p.HealInterval,
		BootstrapBackoff:    time.Second,
		BootstrapMaxBackoff: 30 * time.Second,
		DialTimeout:         5 * time.Second,
		Keepalive:           tcp.DefaultKeepaliveInterval,
		PeersSave:           3 * time.Second,
		LeaveGrace:          2 * time.Second,

		PastTick:             250 * time.Millisecond,
		PastRequestTimeout:   pc.RequestTimeout,
		PastMaintenance:      pc.MaintenanceInterval,
		PastMaintenanceDelay: pc.MaintenanceDelay,
		PastDropGrace:        pc.DropGrace,
		PastGC:               pc.GCInterval,

		GlacierTick:           time.Second,
		GlacierRequestTimeout: gc.RequestTimeout,
		GlacierSync:           gc.SyncInterval,
		GlacierSyncDelay:      gc.SyncDelay,
		GlacierGoneAfter:      gc.GoneAfter,
		ArchiveFlush:          post.DefaultConfig().ArchiveFlush,
		Submit:                loginTimeout,
	}
}

func (t Timers) withDefaults() Timers {
	d := DefaultTimers()
	for _, f := range []struct{ p, d *time.Duration }{
		{&t.Tick, &d.Tick}, {&t.ProbeInterval, &d.ProbeInterval}, {&t.ProbeTimeout, &d.ProbeTimeout},
		{&t.JoinTimeout, &d.JoinTimeout}, {&t.HealInterval, &d.HealInterval},
		{&t.BootstrapBackoff, &d.BootstrapBackoff}, {&t.BootstrapMaxBackoff, &d.BootstrapMaxBackoff},
		{&t.DialTimeout, &d.DialTimeout}, {&t.Keepalive, &d.Keepalive}, {&t.PeersSave, &d.PeersSave},
		{&t.LeaveGrace, &d.LeaveGrace},
		{&t.PastTick, &d.PastTick}, {&t.PastRequestTimeout, &d.PastRequestTimeout},
		{&t.PastMaintenance, &d.PastMaintenance}, {&t.PastMaintenanceDelay, &d.PastMaintenanceDelay},
		{&t.PastDropGrace, &d.PastDropGrace}, {&t.PastGC, &d.PastGC},
		{&t.GlacierTick, &d.GlacierTick}, {&t.GlacierRequestTimeout, &d.GlacierRequestTimeout},
		{&t.GlacierSync, &d.GlacierSync}, {&t.GlacierSyncDelay, &d.GlacierSyncDelay},
		{&t.GlacierGoneAfter, &d.GlacierGoneAfter}, {&t.ArchiveFlush, &d.ArchiveFlush},
		{&t.Submit, &d.Submit},
	} {
		if *f.p <= 0 {
			*f.p = *f.d
		}
	}
	if t.BootstrapMaxBackoff < t.BootstrapBackoff {
		t.BootstrapMaxBackoff = t.BootstrapBackoff
	}
	t.LeaveGrace = min(t.LeaveGrace, MaxLeaveGrace)
	return t
}

// Options configure a Node.
type Options struct {
	Dir       string       // enrolled node directory
	Logger    *slog.Logger // nil discards logs
	Timers    Timers
	Advertise string // address peers dial; default the config's listen address
	// Seed seeds the overlay's randomness (jitter, probe targets); 0 picks a random seed, which
	// is logged so that a run can be replayed as far as the network allows.
	Seed uint64
	// NoControl skips the control socket (in-process rings that query Status directly).
	NoControl bool
	// ImplicitTLS are optional extra listeners speaking TLS from the first byte (RFC 8314),
	// next to the config's STARTTLS ones; "" leaves one off. They start only when the node
	// has users.
	ImplicitTLS MailAddrs

	// The global ring (global.go), for a node whose certificate carries the gateway role:
	// GlobalListen starts it ("" leaves this node out of it); GlobalAdvertise is the address
	// other gateways dial (default GlobalListen); GlobalBootstrap names gateways of other rings
	// to join through (none: this gateway founds the global ring). Resolver is the DNS server
	// (HOST:PORT) admission asks for _epost records ("" the system's); Trusted lists the rings
	// of a closed federation's trust file.
	GlobalListen    string
	GlobalAdvertise string
	GlobalBootstrap []string
	Resolver        string
	Trusted         []multiring.TrustedRing
	// OutboundPort is the port a gateway delivers internet mail to (0: 25; tests set another).
	OutboundPort int
	// MX, on a gateway, serves SMTP for the internet on HOST:PORT (mx.go; "" leaves it off).
	// MXHostname is its name in greetings and trace fields (default: the ring's first
	// domain); MXCert and MXKey the operator's certificate for STARTTLS (default: the
	// node's mail certificate).
	MX, MXHostname string
	MXCert, MXKey  string
	// QueueBackoff, when set, replaces the gateway queue's retry schedule with a fixed wait
	// (tests).
	QueueBackoff time.Duration
	// HandOffWait, on a gateway, is how long it holds its answer to a node's hand-off while it
	// passes the message to the other ring (0: DefaultHandOffWait); CustodyTimeout, on a
	// sending node, how long it waits before it offers a message a gateway only queued to a
	// gateway again (0: DefaultCustodyTimeout). Tests shorten both.
	HandOffWait, CustodyTimeout time.Duration
	// MailLimits bound the IMAP, SMTP and POP3 servers' connections (zero: each server's
	// default).
	MailLimits MailLimits
}

// MailLimits are connection bounds applied to each of the node's mail servers: in total and
// per client IP address. Zero keeps the server's default, negative means no bound.
type MailLimits struct {
	MaxConns, MaxConnsPerAddr int
	// Login are the login guard's lock thresholds (zero fields: mailstore's defaults).
	Login mailstore.LoginLimits
	// PasswordChecks bounds the password checks (64 MiB Argon2id each) run at once, and
	// PasswordWait how long a login waits for one (zero: identity's defaults, 1 and 30 s).
	PasswordChecks int
	PasswordWait   time.Duration
	// MaxPeerConns bounds inbound node-to-node connections, handshakes included (zero:
	// tcp.DefaultMaxInbound).
	MaxPeerConns int
	// A ring member that sends PeerDropAfter overlay messages the node refuses (or frames that
	// break the wire format, each closing a connection) within PeerDropWindow is disconnected
	// and refused for PeerCoolOff (peerguard.go; zero: the defaults there, 100 a minute and 10
	// minutes; a negative PeerDropAfter never drops).
	PeerDropAfter  int
	PeerDropWindow time.Duration
	PeerCoolOff    time.Duration
}

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("daemon: node stopped")

// Node is one running ePOST node. Start and Stop may be called from any goroutine; Status is
// safe for concurrent use.
type Node struct {
	opts   Options
	log    *slog.Logger
	rn     *ring.Node
	timers Timers

	started time.Time
	seed    uint64

	mu      sync.Mutex // guards tr, drv, ctl, stopped
	tr      *tcp.Transport
	rt      *resolvingTransport
	drv     *pastry.Driver
	ctl     net.Listener
	stopped bool

	self        pastry.Handle
	global      *globalSide // the global ring, on a gateway; guarded by mu
	roles       sync.Map    // node id -> bool: the peer's certificate carries the gateway role
	trusts      sync.Map    // ring id -> cachedTrust: other rings' trust, for foreign senders
	foreigns    sync.Map    // ring id -> cachedForeign: other rings' bundles, for sending to them
	records     sync.Map    // "ring/address" -> cachedRecord: other rings' users, verified
	custodyOnce sync.Once
	cust        *custody // mail for other rings that a gateway only queued (custody.go)
	locMu       sync.Mutex
	loc         *LocalityStatus               // the last locality count (Status)
	cur         atomic.Pointer[pastry.Driver] // n.drv, for the transport handler without n.mu
	apps        atomic.Pointer[apps]          // the applications on n.drv
	store       *store.Store                  // opened by Start, closed by Stop
	frags       *glacier.DiskStore            // Glacier's fragments; opened by Start, closed by Stop
	mail        *mailUsers                    // the node's users (NODEDIR/users)
	servers     *mailServers                  // IMAP/SMTP/POP3, when the node has users; guarded by mu
	mx          *mxSide                       // the inbound MX, on a gateway with --mx; guarded by mu
	gwid        *gatewayID                    // the gateway's POST identity (set by Start)
	gwPolicy    policyCache                   // the gateway policy in force (NODEDIR/policy.json)
	queue       *appQueue
	disk        diskHealth // failed writes of the node's stores (diskhealth.go)
	ops         opCounters
	book        *addrBook
	guard       *peerGuard // ring members dropped for bad input (peerguard.go)
	peers       *peerStore
	leafDirty   atomic.Bool
	joined      atomic.Bool   // the driver has been started (joining or ready)
	stop        chan struct{} // closed by Stop; ends the bootstrap and saver goroutines
	wg          sync.WaitGroup

	// outboxWaiting says why the outbox's next message waits (outbox.go), for Status.
	outboxWaiting atomic.Pointer[string]
}

// Open loads and verifies the node directory (descriptor signature, certificate chain) without
// touching the network. A certificate that peers will refuse (expired, revoked) is logged, not
// fatal: the node still starts, and its log says why nobody talks to it.
func Open(opts Options) (*Node, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rn, err := ring.LoadNode(opts.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: is %s a node directory? Make one with epost node init (or node request and node accept)", err, opts.Dir)
	}
	if err != nil {
		return nil, err
	}
	seed := opts.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	n := &Node{
		opts:   opts,
		log:    log,
		rn:     rn,
		timers: opts.Timers.withDefaults(),
		seed:   seed,
		book:   newAddrBook(),
		guard:  newPeerGuard(opts.MailLimits),
		stop:   make(chan struct{}),
		queue:  newAppQueue(),
	}
	n.peers = newPeerStore(filepath.Join(rn.DataDir(), FilePeers), rn.ID)
	if n.mail, err = newMailUsers(n); err != nil {
		return nil, err
	}
	if err := rn.CheckOwnCert(time.Now()); err != nil {
		log.Warn("own certificate will be refused by peers: "+err.Error(),
			"node", rn.ID.Short(), "fix", "re-enroll the node (epost node init, or node request and node accept)")
	}
	return n, nil
}

// ID is the node's id.
func (n *Node) ID() ids.ID { return n.rn.ID }

// Ring is the loaded node directory.
func (n *Node) Ring() *ring.Node { return n.rn }

// ControlPath is the control socket's path.
func (n *Node) ControlPath() string { return ControlPath(n.opts.Dir) }

// Start opens the control socket and the transport and begins joining in the background; it
// returns once the node is listening. Use Ready or Status to learn when it has joined.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return ErrStopped
	}
	if n.tr != nil {
		return errors.New("daemon: node already started")
	}
	n.started = time.Now()
	cfg := n.rn.Config
	d := n.rn.Descriptor
	if !n.opts.NoControl {
		ln, err := listenControl(n.opts.Dir)
		if err != nil {
			return err
		}
		n.ctl = ln
	}
	advertise := n.opts.Advertise
	if advertise == "" {
		advertise = cfg.Listen
	}
	if host, _, err := net.SplitHostPort(advertise); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			n.log.Warn("advertised address " + advertise + " is a wildcard that peers cannot dial: listen on this machine's routable address, or pass --advertise HOST:PORT")
		}
	}

	st, err := n.openStore()
	if err != nil {
		n.closeControlLocked()
		return err
	}
	n.store = st
	frags, err := n.openFragments()
	if err != nil {
		n.closeControlLocked()
		_ = st.Close()
		n.store = nil
		return err
	}
	n.frags = frags
	if err := n.startMail(); err != nil {
		n.closeControlLocked()
		n.closeStores()
		return err
	}

	n.self = pastry.Handle{ID: n.rn.ID, Addr: advertise}
	// The driver needs the transport and the transport needs a handler: the resolving wrapper
	// is made first and given the tcp transport once it exists, and the handler finds the
	// current driver through n.cur (a founder may replace its driver, see join).
	n.rt = &resolvingTransport{book: n.book, log: n.log, probe: n.probeAddr, pending: map[string]*pendingProbe{},
		barred: func(id ids.ID) bool { return n.guard.refusing(id, time.Now()) }}
	drv := n.newDriver(n.seed)
	tr, err := tcp.New(tcp.Config{
		ListenAddr:        cfg.Listen,
		AdvertiseAddr:     advertise,
		ID:                n.rn.ID,
		Certificate:       n.rn.Creds,
		VerifyPeer:        n.verifyPeer(n.rn.Trust.Verifier(time.Now)),
		OnPeer:            n.notePeer,
		OnBadFrame:        func(id ids.ID, err error) { n.badInput(transport.From{ID: id}, err) },
		Handler:           n.handle,
		Logger:            n.log,
		DialTimeout:       n.timers.DialTimeout,
		KeepaliveInterval: n.timers.Keepalive,
		ReadTimeout:       3 * n.timers.Keepalive,
		MaxBackoff:        n.timers.BootstrapMaxBackoff,
		MaxInbound:        n.opts.MailLimits.MaxPeerConns,
	})
	if err != nil {
		n.closeControlLocked()
		n.servers.close()
		n.servers = nil
		n.apps.Load().stop()
		n.closeStores()
		return fmt.Errorf("start transport: %w (is another node using %s?)", err, cfg.Listen)
	}
	if err := n.startGatewayIdentity(); err != nil {
		_ = tr.Close()
		n.closeControlLocked()
		n.servers.close()
		n.servers = nil
		n.apps.Load().stop()
		n.closeStores()
		return err
	}
	if err := n.startGlobal(); err != nil {
		_ = tr.Close()
		n.closeControlLocked()
		n.servers.close()
		n.servers = nil
		n.apps.Load().stop()
		n.closeStores()
		return err
	}
	if err := n.startMX(); err != nil {
		_ = tr.Close()
		n.global.stop()
		n.closeControlLocked()
		n.servers.close()
		n.servers = nil
		n.apps.Load().stop()
		n.closeStores()
		return err
	}
	n.rt.tr = tr
	n.tr, n.drv = tr, drv
	n.cur.Store(drv)
	n.log.Info("node starting", "node", n.rn.ID.Short(), "ring", d.Name, "ring_id", d.RingID.Short(),
		"listen", cfg.Listen, "advertise", advertise, "leaf_set", d.LeafSet, "seed", n.seed,
		"probe_interval", n.timers.ProbeInterval.String(), "control", n.controlPathIfAny())

	if n.ctl != nil {
		n.wg.Add(1)
		go n.serveControl(n.ctl)
	}
	n.wg.Add(3)
	go n.join(advertise)
	go n.savePeersLoop()
	go func() {
		defer n.wg.Done()
		n.queue.run(n.stop)
	}()
	return nil
}

func (n *Node) controlPathIfAny() string {
	if n.ctl == nil {
		return ""
	}
	return n.ControlPath()
}

// newDriver makes an overlay driver for this node (not started) and the applications on it
// (started, waiting for the overlay's events), and makes them current.
func (n *Node) newDriver(seed uint64) *pastry.Driver {
	d := n.rn.Descriptor
	pcfg := pastry.DefaultConfig()
	pcfg.Ring = d.RingID
	pcfg.LeafSetSize = d.LeafSet
	pcfg.ProbeInterval = n.timers.ProbeInterval
	pcfg.ProbeTimeout = n.timers.ProbeTimeout
	pcfg.JoinTimeout = n.timers.JoinTimeout
	pcfg.HealInterval = n.timers.HealInterval
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	mux := appmux.New()
	drv := pastry.NewDriver(pcfg, n.self, rng, mux.Forward, n.rt, transport.RealClock{}, n.timers.Tick)
	a := n.newApps(mux, drv, seed)
	if old := n.apps.Swap(a); old != nil {
		old.stop()
	}
	drv.OnEvent = func(e pastry.Event) {
		n.onEvent(e)
		n.queue.push(a, e)
	}
	rejects := newLogLimiter(time.Minute)
	drv.OnReject = func(from transport.From, err error) {
		// A hostile member can send refused frames without end: one line per peer a minute,
		// with the count of those not logged (status counts them all); past the guard's
		// bound it is dropped.
		if skipped, ok := rejects.allow(from.ID.Short(), time.Now()); ok {
			n.log.Warn("pastry: refused frame", "peer", from.ID.Short(), "addr", from.Addr, "err", err, "not_logged_since", skipped)
		}
		n.badInput(from, err)
	}
	drv.OnSendError = func(to pastry.Handle, err error) {
		n.log.Debug("pastry: send failed", "peer", to.ID.Short(), "addr", to.Addr, "err", err)
	}
	return drv
}

// handle is the transport handler. It learns each authenticated peer's advertised address, so
// that a later send to that address by Pastry (which knows only the address of a bootstrap
// node) reaches the right id, and hands the frame to the current driver.
func (n *Node) handle(from transport.From, frame []byte) {
	if n.guard.refusing(from.ID, time.Now()) {
		// A connection that was being set up when the peer was dropped.
		n.disconnect(from.ID)
		return
	}
	n.book.learn(from.Addr, from.ID)
	if drv := n.cur.Load(); drv != nil {
		drv.Handle(from, frame)
	}
}

func (n *Node) onEvent(e pastry.Event) {
	switch e.Kind {
	case pastry.EventReady:
		n.log.Info("joined the ring: ready", "node", n.rn.ID.Short(), "after", time.Since(n.started).Round(time.Millisecond))
		n.leafDirty.Store(true)
		go n.mail.publishAll()
	case pastry.EventLeafSetChanged:
		n.leafDirty.Store(true)
	}
}

// Ready reports whether the node has joined the ring.
func (n *Node) Ready() bool {
	n.mu.Lock()
	drv := n.drv
	n.mu.Unlock()
	return drv != nil && n.joined.Load() && drv.Ready()
}

// Stop leaves the ring: it tells the neighbours the node is going and serves their hand-over
// for at most Timers.LeaveGrace (see leave.go), then stops the overlay, saves the remembered
// peers, closes the stores and the transport and removes the control socket. It is
// idempotent.
func (n *Node) Stop() error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true // no overlay starts from now on (startOverlay, founderWatch)
	drv, tr, st, fr, ms, gs, mx := n.drv, n.tr, n.store, n.frags, n.servers, n.global, n.mx
	n.closeControlLocked()
	n.mu.Unlock()

	// Mail clients first: nothing new reaches POST once the node leaves.
	ms.close()
	mx.stop()

	// The application queue keeps running through the leave: it carries the neighbours'
	// fetches to PAST. Everything waiting on n.stop ends after it.
	n.leave(drv)
	close(n.stop)

	if drv != nil {
		drv.Stop()
	}
	gs.stop()
	if a := n.apps.Load(); a != nil {
		a.stop()
	}
	// Control requests waiting for PAST give up on n.stop, and the application queue's worker
	// ends, so nothing writes to the store once Wait returns.
	n.wg.Wait()
	n.mail.closeAll()
	if drv != nil && n.joined.Load() {
		n.savePeers(drv)
	}
	var err error
	if tr != nil {
		err = tr.Close()
	}
	if st != nil {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if fr != nil {
		if cerr := fr.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	n.log.Info("node stopped", "node", n.rn.ID.Short())
	return err
}

func (n *Node) closeControlLocked() {
	if n.ctl != nil {
		n.ctl.Close() // a Unix listener removes its socket file on Close
		n.ctl = nil
	}
}
