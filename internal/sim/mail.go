package sim

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/appmux"
	"epost/internal/content"
	"epost/internal/glacier"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
	"epost/internal/scribe"
	"epost/internal/store"
)

// MailConfig is the `epost sim mail` experiment: POST end to end (PAST, Scribe and POST on
// every node of a simulated ring), users on random nodes, random messages between them, and a
// fraction of the recipients' nodes offline at send time that come back afterwards.
type MailConfig struct {
	Nodes    int
	Users    int
	Messages int
	Offline  float64 // fraction of the user-hosting nodes offline while messages are sent
	Seed     uint64

	SendRate     float64       // messages per virtual second
	OfflineAfter time.Duration // virtual time between the last send and the offline nodes' return
	Replicas     int
	LeafSet      int
	JoinSpacing  time.Duration
	Tick         time.Duration // pastry tick
	PastTick     time.Duration
	MinBody      int
	MaxBody      int
	Attachment   float64 // probability that a message carries one of a few shared attachments
	AttachSize   int
	Marker       string // put in every body; no store may contain it in the clear
	Post         post.Config
	// Glacier runs Glacier on every node (fragments in memory, surviving crashes like the
	// PAST store) and makes it the users' archive; GlacierN/M are its code (default 64/8),
	// Glacier its other parameters (zero: glacier.DefaultConfig).
	Glacier            bool
	GlacierN, GlacierM int
	GlacierConfig      glacier.Config
	// Stages: report, through progress, when each delivery stage was first reached (p50 and
	// p99 after the send, online recipients only): where the latency goes.
	Stages bool
	// RingName names the ring (its id is ids.RingIDOf(RingName)); "" is "sim-mail". Rings
	// that exchange mail need names of their own.
	RingName string
	// LookupFault, if set, is asked before each PAST Lookup that a node's POST makes (node:
	// the node's index); a non-nil error fails that lookup at once, as a timeout would.
	LookupFault func(node int, key ids.Key) error
	// InsertFault, if set, is asked before each PAST insert that a node's POST makes; a
	// non-nil error fails that insert at once, before anything is stored.
	InsertFault func(node int, obj past.Object) error

	// Churn, restarts, folder operations and the audit (mailchurn.go, mailfolders.go,
	// mailaudit.go). Churn is the median session of the nodes that host no user
	// (exponential sessions); an ended session is a process restart (same id and store,
	// fresh in-memory state) after an exponential downtime of median ChurnDowntime with
	// probability ChurnRestart, else a fresh node joins in its place. Churn never has more
	// than MaxDown of the nodes down at once.
	Churn         time.Duration
	ChurnRestart  float64
	ChurnDowntime time.Duration
	MaxDown       float64
	// Restarts is the number of process restarts of users' nodes, half during the sends and
	// half after: the node's PAST store, the users' received journals and head records
	// survive; POST and its users are built anew (AddUser, not Resume). They alternate a
	// crash at a random moment and a crash right after a burst of folder operations.
	Restarts int
	// FolderOps is the number of folder operations by recipients through the mail store
	// (internal/mailstore: CREATE, COPY, STORE +FLAGS), half during the sends, half after.
	// Negative: Messages/10 when Churn or Restarts is set, else none.
	FolderOps int
	// Audit restarts every user's node once more at the end, when all has settled, and then
	// checks INBOX, folders, copies and flags against every acknowledged operation. On
	// whenever Churn, Restarts or FolderOps is.
	Audit bool
	// NoHeadRecords leaves post.Config.HeadRecords nil (the writer then has only the ring
	// to go by after a restart): to show what the records protect.
	NoHeadRecords bool
}

// Validate checks the flags and fills defaults.
func (c *MailConfig) Validate() error {
	if c.Nodes < 2 || c.Users < 2 {
		return errors.New("--nodes and --users must be at least 2")
	}
	if c.Messages < 0 {
		return errors.New("--messages must not be negative")
	}
	if c.Offline < 0 || c.Offline >= 1 {
		return errors.New("--offline must be a fraction in [0, 1)")
	}
	if c.SendRate <= 0 {
		c.SendRate = 100
	}
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = 30 * time.Second
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.LeafSet == 0 {
		c.LeafSet = 24
	}
	if c.JoinSpacing <= 0 {
		c.JoinSpacing = 20 * time.Millisecond
	}
	if c.Tick <= 0 {
		c.Tick = 500 * time.Millisecond
	}
	if c.PastTick <= 0 {
		c.PastTick = 250 * time.Millisecond
	}
	if c.MinBody <= 0 {
		c.MinBody = 512
	}
	if c.MaxBody < c.MinBody {
		c.MaxBody = max(4<<10, c.MinBody)
	}
	if c.Attachment < 0 || c.Attachment > 1 {
		return errors.New("attachment probability must be in [0, 1]")
	}
	if c.AttachSize <= 0 {
		c.AttachSize = 64 << 10
	}
	if c.Glacier {
		if c.GlacierN == 0 && c.GlacierM == 0 {
			c.GlacierN, c.GlacierM = 64, 8
		}
		if c.GlacierM < 1 || c.GlacierN < c.GlacierM || c.GlacierN > glacier.MaxFragments {
			return fmt.Errorf("glacier fragments %d/%d: want 1 <= m <= n <= %d", c.GlacierN, c.GlacierM, glacier.MaxFragments)
		}
	}
	if c.Marker == "" {
		c.Marker = "EPOST-SIM-PLAINTEXT-MARKER"
	}
	if c.Churn < 0 || c.Restarts < 0 {
		return errors.New("--churn and --restarts must not be negative")
	}
	if c.FolderOps < 0 { // automatic
		c.FolderOps = 0
		if c.Churn > 0 || c.Restarts > 0 {
			c.FolderOps = c.Messages / 10
		}
	}
	if c.ChurnRestart < 0 || c.ChurnRestart > 1 {
		return errors.New("--churn-restart must be a fraction in [0, 1]")
	}
	if c.ChurnDowntime <= 0 {
		c.ChurnDowntime = 2 * time.Minute
	}
	if c.MaxDown <= 0 {
		c.MaxDown = 0.05
	}
	if c.MaxDown >= 1 {
		return errors.New("--max-down must be a fraction in (0, 1)")
	}
	if c.Churn > 0 || c.Restarts > 0 || c.FolderOps > 0 {
		c.Audit = true
	}
	return nil
}

// MailResult is one phase's summary. latency: send to filed, for recipients online at send
// time; pickup: from the recipient node's return (its overlay node ready again) to filed.
type MailResult struct {
	Phase      string
	Messages   int
	Filed      int
	Duplicates int
	Lost       int
	LatP50     float64
	LatP99     float64
	PickupP99  float64
	Refused    int // sends not accepted
	Leaks      int // stores holding the plaintext marker (final phase)
	Objects    int // live PAST objects in all stores (final phase)
	// Audit is the end-of-run check (MailConfig.Audit): in the final phase it replaces
	// filed, duplicates and lost with what the recipients' INBOX logs hold after the final
	// restart (lost: accepted and absent; duplicates: extra copies of one notification).
	Audit *MailAudit
	final bool
}

func (r MailResult) String() string {
	s := fmt.Sprintf("phase=%s messages=%d filed=%d duplicates=%d lost=%d latency_p50_ms=%.0f latency_p99_ms=%.0f pickup_p99_ms=%.0f",
		r.Phase, r.Messages, r.Filed, r.Duplicates, r.Lost, r.LatP50, r.LatP99, r.PickupP99)
	if r.final {
		s += fmt.Sprintf(" not_accepted=%d plaintext_leaks=%d objects=%d", r.Refused, r.Leaks, r.Objects)
	}
	if r.Audit != nil {
		s += " " + r.Audit.String()
	}
	return s
}

type mailNode struct {
	sn      *simNode
	st      *past.MemStore
	gst     *glacier.MemStore // nil without Glacier
	gd      *glacier.Driver
	pd      *past.Driver
	sc      *scribe.Scribe
	post    *post.Node
	stopSc  func()
	users   []*simUser
	journal map[string]*post.MemJournal     // the users' received journals: on "disk", they survive crashes
	heads   map[string]*post.MemHeadRecords // the users' head records: on "disk" too
	offline bool
	backs   []time.Duration // when its overlay node was ready again, after each return
	// restarting: down for a process restart (or churned), back soon; gen counts the
	// node's POST instances, so that callbacks of an old one are recognised.
	restarting bool
	doomed     bool // a crash for a restart is scheduled
	gen        int
	known      []ids.ID // its leaf set when it last went down (a daemon's peers.json)
}

type simUser struct {
	addr string
	keys *identity.Keys
	rec  identity.SignedRecord
	node *mailNode
	u    *post.User // nil while its node is down for a process restart
	mail userMail   // the folder operations' state (mailfolders.go)
}

type simMsg struct {
	n          int // index: the body carries " Marker n "
	from, to   *simUser
	sentAt     time.Duration
	offline    bool // recipient offline at send time
	id         post.NotificationID
	accepted   bool
	result     bool // send answered
	filedAt    time.Duration
	acceptedAt time.Duration
	filed      int
	stages     [16]time.Duration // first time each post.Stage was reached, +1ns so zero means never
}

type mailRun struct {
	cfg    MailConfig
	ring   *simRing
	rng    *rand.Rand
	ringID ids.RingID
	caPub  ed25519.PublicKey
	secret content.Secret
	nodes  []*mailNode // by simNode.idx
	users  []*simUser
	msgs   []*simMsg
	byID   map[post.NotificationID]*simMsg
	dups   int

	progress func(string)
	churn    churnState  // mailchurn.go
	ops      []folderOp  // folder operations acknowledged (mailfolders.go)
	opRng    *rand.Rand  // folder operations and users' restarts
	retired  retiredStat // counters of POST and PAST instances gone with a crash
}

// observerShim lets PAST be built before the POST node it reports to.
type observerShim struct{ n *post.Node }

func (o *observerShim) Stored(m store.Meta) {
	if o.n != nil {
		o.n.Stored(m)
	}
}

func (o *observerShim) Removed(k ids.Key) {
	if o.n != nil {
		o.n.Removed(k)
	}
}

// RunMail runs the experiment, writing one summary line per phase to out.
func RunMail(cfg MailConfig, out io.Writer, progress func(string)) ([]MailResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	pc := pastry.Config{Ring: ids.RingIDOf(cfg.ringName()), LeafSetSize: cfg.LeafSet}
	run := &mailRun{cfg: cfg, ring: newSimRing(cfg.Seed, pc, cfg.Tick), rng: rand.New(rand.NewPCG(cfg.Seed, 0x3a11)),
		ringID: pc.Ring, byID: map[post.NotificationID]*simMsg{},
		opRng: rand.New(rand.NewPCG(cfg.Seed, 0xf01d)), churn: churnState{rng: rand.New(rand.NewPCG(cfg.Seed, 0xc4a2))}}
	var seed [32]byte
	fill(run.rng, seed[:])
	caKey := ed25519.NewKeyFromSeed(seed[:])
	run.caPub = caKey.Public().(ed25519.PublicKey)
	fill(run.rng, run.secret[:])
	run.progress = func(s string) { progress(fmt.Sprintf("t=%s %s", run.ring.net.Elapsed().Round(time.Millisecond), s)) }
	var results []MailResult
	emit := func(r MailResult) {
		results = append(results, r)
		fmt.Fprintln(out, r.String())
	}
	r := run.ring

	for i := 0; i < cfg.Nodes; i++ {
		if i > 0 {
			r.net.RunFor(cfg.JoinSpacing)
		}
		run.addNode()
	}
	for wait := 0; wait < 300; wait++ {
		if _, ready := r.countAlive(); ready == len(r.nodes) {
			break
		}
		r.net.RunFor(time.Second)
	}
	r.net.RunFor(10 * time.Second)
	progress(fmt.Sprintf("ring of %d nodes built", cfg.Nodes))

	// Users on random nodes, keys from the seeded generator, records signed by the CA.
	keyRand := rand.NewChaCha8(seed2(run.rng))
	pending := 0
	for i := 0; i < cfg.Users; i++ {
		mn := run.nodes[run.rng.IntN(len(run.nodes))]
		keys, err := identity.NewKeys(keyRand)
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("user%d@sim.example", i)
		nb := r.net.Now().Add(-time.Hour).Truncate(time.Second)
		rec := identity.Record{Ring: run.ringID, Address: addr, Keys: keys.Public(), Serial: uint64(i + 1), NotBefore: nb, NotAfter: nb.Add(365 * 24 * time.Hour)}
		sr, err := identity.SignRecord(rec, caKey)
		if err != nil {
			return nil, err
		}
		su := &simUser{addr: addr, keys: keys, rec: sr, node: mn}
		mn.users = append(mn.users, su)
		run.users = append(run.users, su)
		pending++
		mn.post.AddUser(keys, sr, true, func(u *post.User, err error) {
			pending--
			if err != nil {
				progress(fmt.Sprintf("user %s: %v", addr, err))
				return
			}
			su.u = u
		})
		r.net.RunFor(50 * time.Millisecond)
	}
	for wait := 0; wait < 120 && pending > 0; wait++ {
		r.net.RunFor(time.Second)
	}
	for _, su := range run.users {
		if su.u == nil {
			return nil, fmt.Errorf("seed %d: user %s could not be created", cfg.Seed, su.addr)
		}
	}
	r.net.RunFor(10 * time.Second)
	progress(fmt.Sprintf("%d users created", cfg.Users))

	// Take a fraction of the user-hosting nodes offline.
	var hosts []*mailNode
	for _, mn := range run.nodes {
		if len(mn.users) > 0 {
			hosts = append(hosts, mn)
		}
	}
	run.rng.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	nOff := int(math.Round(cfg.Offline * float64(len(hosts))))
	if nOff >= len(hosts) {
		nOff = len(hosts) - 1
	}
	offline := hosts[:nOff]
	for _, mn := range offline {
		run.crash(mn)
	}
	r.net.RunFor(time.Minute) // failure detection and tree repair settle
	progress(fmt.Sprintf("%d of %d user nodes offline", nOff, len(hosts)))
	if cfg.Churn > 0 {
		run.startChurn()
	}
	during := run.planActivity(cfg.Messages, cfg.FolderOps/2, cfg.Restarts/2)

	// Messages from online users to anyone.
	var senders []*simUser
	for _, su := range run.users {
		if !su.node.offline {
			senders = append(senders, su)
		}
	}
	interval := time.Duration(float64(time.Second) / cfg.SendRate)
	attachments := make([][]byte, 4)
	for i := range attachments {
		attachments[i] = make([]byte, cfg.AttachSize)
		fill(run.rng, attachments[i])
	}
	mark := r.net.Elapsed()
	for i := 0; i < cfg.Messages; i++ {
		from := senders[run.rng.IntN(len(senders))]
		for tries := 0; from.u == nil && tries < 100; tries++ {
			from = senders[run.rng.IntN(len(senders))] // its node is down for a restart
		}
		if from.u == nil {
			r.net.RunFor(interval)
			run.activity(during, i)
			continue
		}
		to := run.users[run.rng.IntN(len(run.users))]
		for to == from {
			to = run.users[run.rng.IntN(len(run.users))]
		}
		body := make([]byte, cfg.MinBody+run.rng.IntN(cfg.MaxBody-cfg.MinBody+1))
		for j := range body {
			body[j] = 'a' + byte(run.rng.IntN(26))
		}
		copy(body[len(body)/3:], fmt.Sprintf(" %s %d ", cfg.Marker, i))
		parts := [][]byte{body}
		if run.rng.Float64() < cfg.Attachment {
			parts = append(parts, attachments[run.rng.IntN(len(attachments))])
		}
		m := &simMsg{n: i, from: from, to: to, sentAt: r.net.Elapsed(), offline: to.node.offline}
		fill(run.rng, m.id[:])
		run.byID[m.id] = m
		run.msgs = append(run.msgs, m)
		from.u.SendWithIDs([]string{to.addr}, []post.NotificationID{m.id}, parts, func(res []post.Result) {
			m.result = true
			m.acceptedAt = r.net.Elapsed()
			if res[0].Status == post.Accepted {
				m.accepted = true
			} else {
				progress(fmt.Sprintf("send %d to %s: %s %v", i, to.addr, res[0].Status, res[0].Err))
			}
		})
		r.net.RunFor(interval)
		run.activity(during, i)
	}
	for wait := 0; wait < 60 && !run.allAnswered(); wait++ {
		r.net.RunFor(time.Second)
	}
	r.net.RunFor(20 * time.Second)
	emit(run.measure("send", func(m *simMsg) bool { return !m.offline }))
	if cfg.Stages {
		progress(run.stageReport())
	}
	progress(fmt.Sprintf("sent %d messages in %s virtual", cfg.Messages, r.net.Elapsed()-mark))

	// The offline nodes come back.
	r.net.RunFor(cfg.OfflineAfter)
	for _, mn := range offline {
		run.restart(mn)
		r.net.RunFor(2 * time.Second)
	}
	r.net.RunFor(2 * time.Minute)
	emit(run.measure("return", func(m *simMsg) bool { return m.offline }))
	var audit *MailAudit
	if cfg.Audit {
		steps := cfg.FolderOps - cfg.FolderOps/2 + cfg.Restarts - cfg.Restarts/2
		after := run.planActivity(steps, cfg.FolderOps-cfg.FolderOps/2, cfg.Restarts-cfg.Restarts/2)
		for i := 0; i < steps; i++ {
			run.activity(after, i)
			r.net.RunFor(time.Second)
		}
		progress(fmt.Sprintf("%d folder operations acknowledged, %d restarts of users' nodes", len(run.ops), run.churn.userRestarts))
		run.stopChurn()
		run.settle()
		run.restartAllUsers()
		audit = run.audit()
	}
	res := run.measure("total", func(*simMsg) bool { return true })
	res.final = true
	res.Leaks, res.Objects = run.scanStores()
	if audit != nil {
		res.Audit = audit
		res.Filed, res.Duplicates, res.Lost = audit.filed, audit.dups, audit.lost
	}
	emit(res)
	return results, nil
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func seed2(r *rand.Rand) (s [32]byte) {
	fill(r, s[:])
	return s
}

func (run *mailRun) allAnswered() bool {
	for _, m := range run.msgs {
		if !m.result {
			return false
		}
	}
	return true
}

// addNode joins a node and attaches PAST, Scribe and POST to it through one appmux.
func (run *mailRun) addNode() *mailNode {
	sn := run.ring.addNode()
	mn := &mailNode{sn: sn}
	for len(run.nodes) <= sn.idx {
		run.nodes = append(run.nodes, nil)
	}
	run.nodes[sn.idx] = mn
	clock := sn.ep.Clock()
	mn.st = past.NewMemStore(clock.Now, 0)
	if run.cfg.Glacier {
		mn.gst = glacier.NewMemStore()
	}
	run.attach(mn)
	return mn
}

// attach builds the applications on mn's (new) pastry driver; the store survives restarts.
func (run *mailRun) attach(mn *mailNode) {
	sn := mn.sn
	clock := sn.ep.Clock()
	mux := appmux.New()
	sn.drv.SetForwarder(mux.Forward)
	obs := &observerShim{}
	pcfg := past.DefaultConfig()
	pcfg.Ring = run.ringID
	pcfg.Replicas = run.cfg.Replicas
	pcfg.Policy = past.Policy{CA: run.caPub}
	pcfg.Observer = obs
	pcfg.LocateCacheTTL = 30 * time.Second
	pcfg.Known = mn.known
	pn := past.NewNode(pcfg, sn.drv.Self(), mn.st, rand.New(rand.NewPCG(run.rng.Uint64(), uint64(sn.idx))))
	mn.pd = past.NewDriver(pn, sn.drv, clock, run.cfg.PastTick)
	mn.sc = scribe.New(scribe.Config{Ring: run.ringID, Now: clock.Now, Rand: rand.New(rand.NewPCG(run.rng.Uint64(), uint64(sn.idx)))}, sn.drv)
	pc := run.cfg.Post
	pc.Ring, pc.CA, pc.Secret, pc.Clock = run.ringID, run.caPub, run.secret, clock
	pc.Rand = rand.NewChaCha8(seed2(run.rng))
	if pc.HolderDelay == 0 {
		pc.HolderDelay = 10 * time.Second
	}
	if run.cfg.Stages {
		pc.Trace = func(id post.NotificationID, s post.Stage) {
			if m := run.byID[id]; m != nil && int(s) < len(m.stages) && m.stages[s] == 0 {
				m.stages[s] = run.ring.net.Elapsed() + 1
			}
		}
	}
	pc.Journals = func(addr string) (post.Journal, error) {
		if mn.journal == nil {
			mn.journal = map[string]*post.MemJournal{}
		}
		if mn.journal[addr] == nil {
			mn.journal[addr] = &post.MemJournal{}
		}
		return mn.journal[addr], nil
	}
	if !run.cfg.NoHeadRecords {
		pc.HeadRecords = func(addr string) (post.HeadRecords, error) {
			if mn.heads == nil {
				mn.heads = map[string]*post.MemHeadRecords{}
			}
			if mn.heads[addr] == nil {
				mn.heads[addr] = &post.MemHeadRecords{}
			}
			return mn.heads[addr], nil
		}
	}
	if run.cfg.Glacier {
		gc := run.cfg.GlacierConfig
		gc.Ring, gc.N, gc.M = run.ringID, run.cfg.GlacierN, run.cfg.GlacierM
		gn, err := glacier.NewNode(gc, sn.drv.Self(), mn.gst, rand.New(rand.NewPCG(run.rng.Uint64(), uint64(sn.idx))))
		if err != nil {
			panic(err) // checked by Validate
		}
		mn.gd = glacier.NewDriver(gn, sn.drv, clock, run.cfg.PastTick)
		pc.Archive = mn.gd
	}
	var pst post.Store = mn.pd
	if run.cfg.LookupFault != nil || run.cfg.InsertFault != nil {
		fs := &faultyStore{Store: mn.pd}
		if f := run.cfg.LookupFault; f != nil {
			fs.fail = func(k ids.Key) error { return f(sn.idx, k) }
		}
		if f := run.cfg.InsertFault; f != nil {
			fs.failInsert = func(o past.Object) error { return f(sn.idx, o) }
		}
		pst = fs
	}
	mn.post = post.New(pc, pst, mn.sc, sn.drv)
	obs.n = mn.post
	mn.post.OnFiled = run.onFiled(mn)
	_ = mux.Register(appmux.TagPast, mn.pd.App())
	_ = mux.Register(appmux.TagScribe, mn.sc)
	_ = mux.Register(appmux.TagPost, mn.post.App())
	if mn.gd != nil {
		_ = mux.Register(appmux.TagGlacier, mn.gd.App())
	}
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		mux.OnEvent(e)
	}
	mn.pd.Start()
	mn.stopSc = mn.sc.RunTicker(clock, time.Second)
	if mn.gd != nil {
		mn.gd.Start()
		if sn.ready {
			mn.gd.HandleEvent(pastry.Event{Kind: pastry.EventReady})
		}
	}
	if sn.ready {
		mn.pd.HandleEvent(pastry.Event{Kind: pastry.EventReady})
		mn.sc.HandleEvent(pastry.Event{Kind: pastry.EventReady})
	}
}

func (run *mailRun) crash(mn *mailNode) {
	run.retire(mn)
	mn.offline = true
	mn.post.Stop()
	if mn.gd != nil {
		mn.gd.Stop()
	}
	mn.pd.Stop()
	mn.sc.Stop()
	mn.stopSc()
	run.ring.crash(mn.sn)
}

// restart brings a crashed node back with the same id and store: it rejoins, and once ready
// its users are resumed from the node's local state.
func (run *mailRun) restart(mn *mailNode) {
	r := run.ring
	sn := mn.sn
	sn.ep.Recover()
	sn.alive = true
	r.dirty = true
	r.startNode(sn, r.nearbyBootstrap(sn.ep))
	run.attach(mn)
	mn.post.RebuildHolderIndex()
	resumed := false
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		if e.Kind == pastry.EventReady && !resumed {
			resumed = true
			mn.offline = false
			mn.backs = append(mn.backs, r.net.Elapsed())
			for _, su := range mn.users {
				mn.post.Resume(su.u)
			}
		}
	}
}

func (run *mailRun) onFiled(mn *mailNode) func(post.Filed) {
	return func(f post.Filed) {
		m := run.byID[f.ID]
		if m == nil {
			return
		}
		m.filed++
		if m.filed == 1 {
			m.filedAt = run.ring.net.Elapsed()
		} else {
			run.dups++
		}
	}
}

func (run *mailRun) measure(phase string, sel func(*simMsg) bool) MailResult {
	res := MailResult{Phase: phase}
	var lat, pick []float64
	for _, m := range run.msgs {
		if !sel(m) {
			continue
		}
		res.Messages++
		if !m.accepted {
			res.Refused++
		}
		if m.filed > 0 {
			res.Filed++
			res.Duplicates += m.filed - 1
			// A recipient whose node went down (a restart) between the send and the filing
			// picked the message up on its return: that is pickup, not latency.
			if back, ok := m.to.node.backAfter(m.sentAt); m.offline || ok && back <= m.filedAt {
				pick = append(pick, float64(m.filedAt-back)/float64(time.Millisecond))
			} else {
				lat = append(lat, float64(m.filedAt-m.sentAt)/float64(time.Millisecond))
			}
		} else {
			res.Lost++
		}
	}
	res.LatP50, res.LatP99 = pct(lat, 0.5), pct(lat, 0.99)
	res.PickupP99 = pct(pick, 0.99)
	return res
}

// stageReport gives, per delivery stage, p50 and p99 of the time from the send to that stage
// (online recipients).
func (run *mailRun) stageReport() string {
	var b bytes.Buffer
	b.WriteString("stages (ms after send, p50/p99):")
	for _, s := range post.Stages() {
		var xs []float64
		for _, m := range run.msgs {
			if !m.offline && m.stages[s] > 0 {
				xs = append(xs, float64(m.stages[s]-1-m.sentAt)/float64(time.Millisecond))
			}
		}
		fmt.Fprintf(&b, " %s=%.0f/%.0f(n=%d)", s, pct(xs, 0.5), pct(xs, 0.99), len(xs))
	}
	return b.String()
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(math.Ceil(p*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// backAfter is when the node was first ready again after t (its return from being
// offline or restarted), if it was.
func (mn *mailNode) backAfter(t time.Duration) (time.Duration, bool) {
	for _, b := range mn.backs {
		if b >= t {
			return b, true
		}
	}
	return t, false
}

// scanStores counts stores holding the plaintext marker (any node's, a dead one's too) and
// the live objects of the live nodes.
func (run *mailRun) scanStores() (leaks, objects int) {
	marker := []byte(run.cfg.Marker)
	for _, mn := range run.nodes {
		found := false
		mn.st.Keys(func(k ids.Key) {
			if mn.sn.alive {
				objects++
			}
			if o, err := mn.st.Get(k); err == nil && (bytes.Contains(o.Payload, marker) || bytes.Contains(o.Aux, marker)) {
				found = true
			}
		})
		if found {
			leaks++
		}
	}
	return leaks, objects
}

func (c *MailConfig) ringName() string {
	if c.RingName == "" {
		return "sim-mail"
	}
	return c.RingName
}

// faultyStore fails the lookups that fail says should fail (MailConfig.LookupFault) and the
// inserts that failInsert says should fail (MailConfig.InsertFault); either may be nil.
type faultyStore struct {
	post.Store
	fail       func(ids.Key) error
	failInsert func(past.Object) error
}

func (s *faultyStore) Insert(o past.Object, cb func(past.InsertResult)) {
	s.insert(o, cb, s.Store.Insert)
}

func (s *faultyStore) InsertDedupe(o past.Object, cb func(past.InsertResult)) {
	s.insert(o, cb, s.Store.InsertDedupe)
}

// insert fails o at once if failInsert says so, else hands it to next.
func (s *faultyStore) insert(o past.Object, cb func(past.InsertResult), next func(past.Object, func(past.InsertResult))) {
	if s.failInsert != nil {
		if err := s.failInsert(o); err != nil {
			cb(past.InsertResult{Err: err})
			return
		}
	}
	next(o, cb)
}

func (s *faultyStore) Lookup(k ids.Key, cb func(past.Object, error)) {
	if s.fail == nil {
		s.Store.Lookup(k, cb)
		return
	}
	if err := s.fail(k); err != nil {
		cb(past.Object{}, err)
		return
	}
	s.Store.Lookup(k, cb)
}
