package daemon

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/appmux"
	"epost/internal/content"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/mailstore"
	"epost/internal/multiring"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
	"epost/internal/store"
	"epost/internal/transport"
)

// Applications on the overlay.
//
// Every application shares the node's one pastry.Driver through appmux: the driver's Forwarder
// is the mux's Forward (it runs inside Pastry's Step, on the transport's delivery goroutine, and
// must stay quick), and its OnEvent hands events to an appQueue whose single worker goroutine
// passes them to the mux. The worker exists because applications write to disk when a message
// arrives (a PAST replica fsyncs an object before acknowledging it) and tcp's Handler must not
// block: a stalled Handler stalls every connection's reader, Pastry's probes included, and the
// node would be declared dead by its neighbours while it waits for its disk.
//
// To add an application: build it in newApps next to PAST, Scribe and POST, register it under
// its appmux tag before the overlay starts, give apps a field for it, and stop it in apps.stop.
//
// POST's callbacks (PAST replies, Scribe deliveries) run on the worker goroutine or on timer
// goroutines; the mail servers wait for them through blocking wrappers (mailstore's waiter,
// mail.go's await) on their own connection goroutines, never on the worker.

// FileStore is the object store's directory inside the node's data directory.
const FileStore = "store"

// apps are the applications running on one pastry.Driver. A founder that founds its ring anew
// replaces its driver (see founderWatch), and with it the apps; the store outlives them.
type apps struct {
	mux        *appmux.Mux
	past       *past.Driver
	scribe     *scribe.Scribe      // appmux.TagScribe: presence topics for POST
	stopScribe func()              // ends Scribe's ticker
	post       *post.Node          // appmux.TagPost: mail delivery and the local users' logs
	glacier    *glacier.Driver     // appmux.TagGlacier: erasure-coded fragments; POST's archive
	link       *multiring.RingLink // appmux.TagDirectory: this ring's nodes and its gateways
}

// observerShim lets PAST be built before the POST node it reports stored and dropped objects
// to (POST's holder index of pending notifications).
type observerShim struct{ n atomic.Pointer[post.Node] }

func (o *observerShim) Stored(m store.Meta) {
	if n := o.n.Load(); n != nil {
		n.Stored(m)
	}
}

func (o *observerShim) Removed(k ids.Key) {
	if n := o.n.Load(); n != nil {
		n.Removed(k)
	}
}

// openStore opens the node's durable object store (DATADIR/store). Every write the store
// acknowledges has been fsynced, which is what lets a PAST replica acknowledge an insert.
func (n *Node) openStore() (*store.Store, error) {
	dir := filepath.Join(n.rn.DataDir(), FileStore)
	st, err := store.Open(dir, store.Options{Logger: n.log})
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w (is another epost process using this node directory? Otherwise move the store aside and let replica maintenance refill it)", dir, err)
	}
	r := st.Repairs()
	if r.TempFiles > 0 || r.Orphans > 0 || len(r.Fixed) > 0 || len(r.Damaged) > 0 {
		n.log.Warn("object store repaired at open (debris of a crash)", "store", dir,
			"temp_files", r.TempFiles, "orphan_payloads", r.Orphans, "fixed", len(r.Fixed), "damaged", len(r.Damaged))
	}
	// A damaged copy would look held to replica maintenance, which would then never fetch a
	// good one: drop it, and the neighbours' offers bring the object back.
	for _, dmg := range r.Damaged {
		if dmg.InTrash {
			continue
		}
		if err := st.Delete(dmg.Key); err != nil {
			n.log.Warn("could not drop damaged object", "key", dmg.Key.Full(), "err", err)
		} else {
			n.log.Warn("dropped damaged object; replica maintenance will fetch a good copy", "key", dmg.Key.Full(), "cause", dmg.Err)
		}
	}
	return st, nil
}

// newApps builds the applications for the overlay driver pd and registers them with mux,
// which must be pd's Forwarder. They start at once; their events arrive through n.queue.
func (n *Node) newApps(mux *appmux.Mux, pd *pastry.Driver, seed uint64) *apps {
	d := n.rn.Descriptor
	cfg := past.DefaultConfig()
	cfg.Ring = d.RingID
	cfg.Replicas = d.Replicas
	cfg.RequestTimeout = n.timers.PastRequestTimeout
	cfg.MaintenanceInterval = n.timers.PastMaintenance
	cfg.MaintenanceDelay = n.timers.PastMaintenanceDelay
	cfg.DropGrace = n.timers.PastDropGrace
	cfg.GCInterval = n.timers.PastGC
	if caPub, ok := n.rn.Trust.CA().PublicKey.(ed25519.PublicKey); ok {
		cfg.Policy.CA = caPub // replicas accept CA-signed user records (POST)
	}
	cfg.Policy.Revoked = n.rn.Trust.IsRecordRevoked
	obs := &observerShim{}
	cfg.Observer = obs
	// A client that wrote a key (a log head, a pending notification) rewrites it at the
	// replicas it found, without another route to the root, for this long.
	cfg.LocateCacheTTL = 30 * time.Second
	// The nodes of the ring before this start: until they are back, "not found" proves
	// little (a user's record whose holders are still starting is not "no such user").
	if rem, err := n.peers.load(); err == nil {
		for _, p := range rem {
			cfg.Known = append(cfg.Known, p.ID)
		}
	}
	rng := rand.New(rand.NewPCG(seed^0x7061737421, seed))
	pn := past.NewNode(cfg, n.self, n.store, rng)
	pdrv := past.NewDriver(pn, pd, transport.RealClock{}, n.timers.PastTick)
	pdrv.OnReject = func(from pastry.Handle, err error) {
		n.log.Debug("past: refused message", "peer", from.ID.Short(), "err", err)
	}
	pdrv.Async = true
	pdrv.OnStoreError = func(err error) {
		n.log.Error("past: writing to the object store failed; the acknowledgements that depended on it were not sent", "err", err)
		n.storeFailed("object store", err)
	}
	sc := scribe.New(scribe.Config{Ring: d.RingID, Now: time.Now,
		Rand: rand.New(rand.NewPCG(seed^0x73637269, seed))}, pd)
	gdrv, err := n.newGlacier(pd, seed)
	if err != nil {
		// The descriptor was verified at start; its n/m are checked there too.
		panic(fmt.Sprintf("daemon: glacier: %v", err))
	}
	pc := n.postConfig()
	pc.Archive = gdrv
	pst := post.New(pc, pdrv, sc, pd)
	obs.n.Store(pst)
	pst.OnFiled = n.mail.onFiled
	a := &apps{mux: mux, past: pdrv, scribe: sc, post: pst, glacier: gdrv}
	// Registration cannot fail on a fresh mux with distinct tags.
	_ = mux.Register(appmux.TagPast, pdrv.App())
	_ = mux.Register(appmux.TagScribe, sc)
	_ = mux.Register(appmux.TagPost, pst.App())
	_ = mux.Register(appmux.TagGlacier, gdrv.App())
	a.link = multiring.NewRingLink(multiring.RingLinkConfig{Ring: d.RingID, Topics: sc, Ov: pd,
		IsGateway: n.isGatewayPeer, Gateway: n.gatewaySide})
	_ = mux.Register(appmux.TagDirectory, a.link.App())
	if n.runsGlobal() {
		if err := a.link.Serve(); err != nil {
			n.log.Warn("cannot join this ring's gateway group", "err", err)
		}
	}
	mux.OnUnknown = func(e pastry.Event) { n.queue.unknown.Add(1) }
	pdrv.Start()
	gdrv.Start()
	a.stopScribe = sc.RunTicker(transport.RealClock{}, time.Second)
	// Users already online on a replaced driver (a founder founding its ring anew) move to the
	// new POST node; their logs and received sets live on in their post.User.
	pst.RebuildHolderIndex()
	if old := n.apps.Load(); old != nil {
		n.mail.resumeAll(old.post, pst)
	}
	return a
}

// postConfig is POST's configuration on this node: the ring's CA and revocations, the ring's
// convergence secret, the wall clock, and per user in the user's directory a durable received
// journal (a notification counts as filed once it is on this node's disk; the INBOX head
// write and the receipt follow) and the record of the last head written per log (the writer
// never opens a log from an older one).
func (n *Node) postConfig() post.Config {
	pc := post.DefaultConfig()
	pc.Ring = n.rn.Descriptor.RingID
	if caPub, ok := n.rn.Trust.CA().PublicKey.(ed25519.PublicKey); ok {
		pc.CA = caPub
	}
	pc.Revoked = n.rn.Trust.IsRecordRevoked
	pc.Secret = content.Secret(n.rn.ConvergenceKey)
	pc.Clock = transport.RealClock{}
	pc.Rand = crand.Reader
	pc.Log = n.log
	if n.timers.PostHolderDelay > 0 {
		pc.HolderDelay = n.timers.PostHolderDelay
	}
	if n.timers.PostRetryDelay > 0 {
		pc.RetryDelay = n.timers.PostRetryDelay
	}
	if n.timers.PostOnlineInterval > 0 {
		pc.OnlineInterval = n.timers.PostOnlineInterval
	}
	pc.ArchiveFlush = n.timers.ArchiveFlush
	pc.ArchiveFile = func(addr string) string {
		return filepath.Join(post.UserDir(n.opts.Dir, addr), FileArchiveState)
	}
	pc.Journals = func(addr string) (post.Journal, error) {
		return post.OpenFileJournal(filepath.Join(post.UserDir(n.opts.Dir, addr), post.FileReceivedJournal))
	}
	pc.ForeignSender = n.foreignSender
	pc.HeadRecords = func(addr string) (post.HeadRecords, error) {
		return post.OpenFileHeadRecords(filepath.Join(post.UserDir(n.opts.Dir, addr), post.FileHeadRecordsName))
	}
	// A disk that went back in time: INBOX gets a new UIDVALIDITY.
	pc.RewoundInbox = mailstore.RewoundEntry()
	return pc
}

// FileArchiveState is a user's archive state (tables of contents of the user's aggregates in
// Glacier) inside the user's directory; without it a start reads them back from Glacier.
const FileArchiveState = "archive.state"

// FileFragments is Glacier's fragment store inside the node's data directory.
const FileFragments = "glacier.db"

// openFragments opens the node's durable Glacier fragment store (DATADIR/glacier.db).
func (n *Node) openFragments() (*glacier.DiskStore, error) {
	path := filepath.Join(n.rn.DataDir(), FileFragments)
	fr, err := glacier.OpenDiskStore(path)
	if err != nil {
		return nil, fmt.Errorf("open fragment store: %w (is another epost process using this node directory? Otherwise move it aside and let Glacier maintenance refill it)", err)
	}
	return fr, nil
}

// closeStores closes the object and fragment stores after a failed start.
func (n *Node) closeStores() {
	if n.store != nil {
		_ = n.store.Close()
		n.store = nil
	}
	if n.frags != nil {
		_ = n.frags.Close()
		n.frags = nil
	}
}

// newGlacier builds Glacier with the ring's n/m on the overlay driver pd.
func (n *Node) newGlacier(pd *pastry.Driver, seed uint64) (*glacier.Driver, error) {
	d := n.rn.Descriptor
	cfg := glacier.DefaultConfig()
	cfg.Ring = d.RingID
	cfg.N, cfg.M = d.FragmentsTotal, d.FragmentsNeeded
	cfg.RequestTimeout = n.timers.GlacierRequestTimeout
	cfg.SyncInterval = n.timers.GlacierSync
	cfg.SyncDelay = n.timers.GlacierSyncDelay
	cfg.GoneAfter = n.timers.GlacierGoneAfter
	rng := rand.New(rand.NewPCG(seed^0x676c6163, seed))
	gn, err := glacier.NewNode(cfg, n.self, n.frags, rng)
	if err != nil {
		return nil, err
	}
	gd := glacier.NewDriver(gn, pd, transport.RealClock{}, n.timers.GlacierTick)
	gd.OnReject = func(from pastry.Handle, err error) {
		n.log.Debug("glacier: refused message", "peer", from.ID.Short(), "err", err)
	}
	gd.Async = true
	gd.OnStoreError = func(err error) {
		n.log.Error("glacier: writing to the fragment store failed; the acknowledgements that depended on it were not sent", "err", err)
		n.storeFailed("fragment store", err)
	}
	return gd, nil
}

// stop ends the applications' timers; events still queued for them are ignored.
func (a *apps) stop() {
	a.glacier.Stop()
	a.post.Stop()
	a.scribe.Stop()
	a.stopScribe()
	a.past.Stop()
}

// queuedEvent is an overlay event and the applications it is for.
type queuedEvent struct {
	apps *apps
	e    pastry.Event
}

// appQueue carries overlay events from the transport's delivery goroutine (and whoever else
// flushes the Pastry driver) to one worker goroutine, in order. Pushing never blocks: an
// application's own sends flush the driver and push from the worker itself, so a blocking push
// could deadlock. When the queue holds maxQueuedEvents events or maxQueuedBytes payload bytes,
// further messages are dropped and counted, as a lossy network would drop them; PAST retries
// its requests and maintenance repairs the rest. Events without a payload (ready, leaf-set
// changes) are never dropped: they are tiny and rare, and a missed one would delay repair.
type appQueue struct {
	mu     sync.Mutex
	events []queuedEvent
	bytes  int
	wake   chan struct{} // capacity 1: a pending wake-up

	dropped atomic.Uint64 // messages dropped because the queue was full
	unknown atomic.Uint64 // messages for no registered application
}

const (
	maxQueuedEvents = 16384
	maxQueuedBytes  = 128 << 20
)

func newAppQueue() *appQueue { return &appQueue{wake: make(chan struct{}, 1)} }

// push queues e for a; it never blocks.
func (q *appQueue) push(a *apps, e pastry.Event) {
	q.mu.Lock()
	if len(e.Payload) > 0 && (len(q.events) >= maxQueuedEvents || q.bytes+len(e.Payload) > maxQueuedBytes) {
		q.mu.Unlock()
		q.dropped.Add(1)
		return
	}
	q.events = append(q.events, queuedEvent{apps: a, e: e})
	q.bytes += len(e.Payload)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run hands queued events to their applications until stop closes.
func (q *appQueue) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			batch := q.events
			q.events = nil
			q.bytes = 0
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, qe := range batch {
				select {
				case <-stop:
					return
				default:
				}
				qe.apps.mux.OnEvent(qe.e)
			}
		}
	}
}

// len is the number of queued events.
func (q *appQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events)
}
