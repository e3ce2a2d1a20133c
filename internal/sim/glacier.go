package sim

import (
	"crypto/ed25519"
	"crypto/sha256"
	"epost/internal/ring"
	"epost/internal/simnet"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/pastry"
)

// GlacierConfig is the `epost sim glacier` experiment: Glacier on a simulated ring, objects
// erasure-coded and inserted, a large fraction of the nodes failed at once, fragments rebuilt.
type GlacierConfig struct {
	Nodes        int
	Objects      int
	Fail         float64 // fraction of the nodes failed at once after the inserts
	FailMode     string  // random | correlated
	N, M         int     // fragments; fragments that rebuild an object
	Seed         uint64
	MinSize      int // object bytes
	MaxSize      int
	LeafSet      int
	JoinSpacing  time.Duration
	InsertRate   float64       // objects inserted per virtual second
	SyncInterval time.Duration // Glacier maintenance round
	GoneAfter    time.Duration // absent this long: positions re-coded
	MaxRebuilds  int           // per node per round
	RepairTime   time.Duration // longest virtual time allowed for repair
	Steady       time.Duration // if > 0, a failure-free phase of this length after the inserts (maintenance traffic at rest)
	Sample       int           // objects retrieved through the protocol after repair
	Tick         time.Duration // pastry driver tick
	GlacierTick  time.Duration
	Protocol     pastry.Config
}

// Validate checks the flags and fills defaults.
func (c *GlacierConfig) Validate() error {
	if c.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if c.Objects < 0 {
		return errors.New("--objects must not be negative")
	}
	if err := checkFailure(c.Fail, &c.FailMode, "random", "correlated"); err != nil {
		return err
	}
	if c.N == 0 && c.M == 0 {
		c.N, c.M = ring.DefaultFragmentsTotal, ring.DefaultFragmentsNeeded
	}
	if c.M < 1 || c.N < c.M || c.N > glacier.MaxFragments {
		return fmt.Errorf("--fragments %d/%d: want N/M with 1 <= M <= N <= %d", c.N, c.M, glacier.MaxFragments)
	}
	if c.MinSize <= 0 {
		c.MinSize = 1 << 10
	}
	if c.MaxSize < c.MinSize {
		c.MaxSize = max(2<<10, c.MinSize)
	}
	if c.MaxSize > glacier.MaxObjectSize {
		return fmt.Errorf("--max-size must be at most %d", glacier.MaxObjectSize)
	}
	if c.LeafSet == 0 {
		c.LeafSet = 24
	}
	if c.LeafSet < 2 || c.LeafSet%2 != 0 {
		return errors.New("--leafset must be an even number of at least 2")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.JoinSpacing, 10*time.Millisecond)
	def(&c.SyncInterval, 3*time.Minute)
	def(&c.GoneAfter, 10*time.Minute)
	def(&c.RepairTime, 4*time.Hour)
	def(&c.Tick, 500*time.Millisecond)
	def(&c.GlacierTick, time.Second)
	if c.InsertRate <= 0 {
		c.InsertRate = 500
	}
	if c.MaxRebuilds <= 0 {
		c.MaxRebuilds = 100
	}
	if c.Sample < 0 {
		c.Sample = 0
	}
	return nil
}

// GlacierResult is one phase's summary, judged with the simulator's global knowledge.
//
// restorable: objects with at least m valid fragments on live nodes, each of them also
// decoded from m of those fragments and checked against the manifest's hash (decoded counts
// the successes, so restorable == decoded demonstrates it); lost = objects - restorable.
// full: objects with all n fragments on live nodes. overhead: fragment bytes on live nodes /
// object bytes; overhead_manifests adds the manifest and inclusion proof stored with every fragment.
// predicted_loss: objects × P[Binomial(n, 1-fail) < m]. repair_bytes: maintenance bytes sent
// during the phase (sync requests, offers, rebuild fetches and replies).
type GlacierResult struct {
	Phase             string
	Nodes             int
	Objects           int
	Lost              int
	Restorable        int
	Decoded           int
	Full              int
	Overhead          float64
	OverheadManifests float64
	PredictedLoss     float64
	RepairBytes       uint64
	Rebuilt           uint64
	MaintPerNodeHour  float64 // maintenance bytes per live node per virtual hour
	InsertsFailed     int     // insert phase
	RecoveryTime      time.Duration
	Retrieved, Sample int // repair phase: objects retrieved through the protocol
	phase             string
}

func (r GlacierResult) String() string {
	s := fmt.Sprintf("phase=%s nodes=%d objects=%d lost=%d restorable=%d decoded=%d full=%d overhead=%.2f overhead_manifests=%.2f predicted_loss=%.3g repair_bytes=%d rebuilt=%d maint_bytes_per_node_per_h=%.0f",
		r.Phase, r.Nodes, r.Objects, r.Lost, r.Restorable, r.Decoded, r.Full, r.Overhead, r.OverheadManifests, r.PredictedLoss, r.RepairBytes, r.Rebuilt, r.MaintPerNodeHour)
	switch r.Phase {
	case "insert":
		s += fmt.Sprintf(" inserts_failed=%d", r.InsertsFailed)
	case "repair":
		rt := "none"
		if r.RecoveryTime > 0 {
			rt = r.RecoveryTime.String()
		}
		s += fmt.Sprintf(" recovery_time=%s retrieved=%d/%d", rt, r.Retrieved, r.Sample)
	}
	return s
}

type glacierRun struct {
	cfg     GlacierConfig
	ring    *simRing
	rng     *rand.Rand
	peers   []*simGlacier
	cache   *glacier.ManifestCache
	codec   *glacier.Codec
	owner   ed25519.PrivateKey
	objects []simObject
	byKey   map[ids.ID]int
	logical int64
	failed  int
	pending int
}

type simObject struct {
	key      ids.ID
	size     int
	hash     [32]byte
	manBytes int
}

type simGlacier struct {
	sn  *simNode
	st  *glacier.MemStore
	drv *glacier.Driver
}

// RunGlacier runs the experiment, writing one summary line per phase to out; progress gets
// human notes (with wall times: not deterministic).
func RunGlacier(cfg GlacierConfig, out io.Writer, progress func(string)) ([]GlacierResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	pc := cfg.Protocol
	pc.LeafSetSize = cfg.LeafSet
	codec, err := glacier.NewCodec(cfg.N, cfg.M)
	if err != nil {
		return nil, err
	}
	seed := sha256.Sum256(fmt.Appendf(nil, "sim glacier owner %d", cfg.Seed))
	run := &glacierRun{cfg: cfg, ring: newSimRing(cfg.Seed, pc, cfg.Tick), rng: rand.New(rand.NewPCG(cfg.Seed, 0x61ac1e)),
		cache: glacier.NewManifestCache(2*cfg.Objects + 1024), codec: codec, owner: ed25519.NewKeyFromSeed(seed[:]),
		byKey: make(map[ids.ID]int)}
	var results []GlacierResult
	emit := func(r GlacierResult) {
		results = append(results, r)
		fmt.Fprintln(out, r.String())
	}
	start := time.Now()
	note := func(s string) { progress(fmt.Sprintf("%s, %s wall", s, time.Since(start).Round(time.Millisecond))) }

	m := run.mark()
	for i := 0; i < cfg.Nodes; i++ {
		if i > 0 {
			run.ring.net.RunFor(cfg.JoinSpacing)
		}
		run.addNode()
		if (i+1)%1000 == 0 {
			note(fmt.Sprintf("joined %d/%d", i+1, cfg.Nodes))
		}
	}
	for wait := 0; wait < 300; wait++ {
		if _, ready := run.ring.countAlive(); ready == len(run.ring.nodes) {
			break
		}
		run.ring.net.RunFor(time.Second)
	}
	run.ring.net.RunFor(10 * time.Second)
	emit(run.measure("build", m, 0))
	note(fmt.Sprintf("built %d nodes", cfg.Nodes))

	m = run.mark()
	run.insertAll()
	res := run.measure("insert", m, 0)
	res.InsertsFailed = run.failed + run.pending
	emit(res)
	note(fmt.Sprintf("inserted %d objects (%d failed)", cfg.Objects, run.failed+run.pending))

	if cfg.Steady > 0 {
		m = run.mark()
		// In sync-interval steps, so that long phases show progress; the events run are the
		// same as in one step.
		for left := cfg.Steady; left > 0; {
			d := min(left, cfg.SyncInterval)
			run.ring.net.RunFor(d)
			left -= d
			maint, _ := run.counters()
			el := run.ring.net.Elapsed() - m.at
			note(fmt.Sprintf("steady: %s virtual, %d maintenance bytes, %.0f per node per virtual hour",
				el.Round(time.Second), maint-m.maint, float64(maint-m.maint)/el.Hours()/float64(max(1, m.nodes))))
		}
		emit(run.measure("steady", m, 0))
		note("steady phase done")
	}
	if cfg.Fail > 0 {
		m = run.mark()
		run.fail()
		emit(run.measure("fail", m, cfg.Fail))
		note("failures done")
		m = run.mark()
		res := run.repair(note)
		emit(res)
		note("repair done")
	}
	return results, nil
}

func (run *glacierRun) addNode() *simGlacier {
	sn := run.ring.addNode()
	clock := sn.ep.Clock()
	st := glacier.NewMemStore()
	gc := glacier.DefaultConfig()
	gc.Ring = run.ring.cfg.Ring
	gc.N, gc.M = run.cfg.N, run.cfg.M
	gc.SyncInterval = run.cfg.SyncInterval
	gc.SyncDelay = run.cfg.SyncInterval / 2
	gc.GoneAfter = run.cfg.GoneAfter
	gc.DropGrace = 2 * run.cfg.RepairTime
	gc.MaxRebuildsPerRound = run.cfg.MaxRebuilds
	gc.Manifests = run.cache
	node, err := glacier.NewNode(gc, sn.drv.Self(), st, rand.New(rand.NewPCG(run.rng.Uint64(), uint64(sn.idx))))
	if err != nil {
		panic(err) // parameters were validated; not peer input
	}
	sg := &simGlacier{sn: sn, st: st, drv: glacier.NewDriver(node, sn.drv, clock, run.cfg.GlacierTick)}
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		sg.drv.HandleEvent(e)
	}
	run.peers = append(run.peers, sg)
	sg.drv.Start()
	if sn.ready {
		sg.drv.HandleEvent(pastry.Event{Kind: pastry.EventReady})
	}
	return sg
}

func (run *glacierRun) randomLive() *simGlacier {
	return randomLive(run.rng, run.peers, func(sg *simGlacier) *simNode { return sg.sn })
}

// insertAll erasure-codes and inserts the objects from random live nodes at InsertRate, then
// lets the remaining acknowledgements arrive.
func (run *glacierRun) insertAll() {
	r := run.ring
	interval := time.Duration(float64(time.Second) / run.cfg.InsertRate)
	expiry := r.net.Now().Add(60 * 24 * time.Hour)
	for i := 0; i < run.cfg.Objects; i++ {
		size := run.cfg.MinSize + run.rng.IntN(run.cfg.MaxSize-run.cfg.MinSize+1)
		obj := randomBytes(run.rng, size)
		man, frags, err := glacier.NewManifest(run.codec, run.owner, r.cfg.Ring, fmt.Appendf(nil, "aggregate-%d", i), 1, expiry, obj)
		if err != nil {
			panic(err) // sizes were validated
		}
		run.byKey[man.Key()] = len(run.objects)
		run.objects = append(run.objects, simObject{key: man.Key(), size: size, hash: man.ObjectHash, manBytes: len(man.Bytes())})
		run.logical += int64(size)
		run.pending++
		run.randomLive().drv.Insert(man, frags, func(res glacier.InsertResult) {
			run.pending--
			if res.Err != nil {
				run.failed++
			}
		})
		r.net.RunFor(interval)
	}
	for wait := 0; wait < 60 && run.pending > 0; wait++ {
		r.net.RunFor(time.Second)
	}
	r.net.RunFor(20 * time.Second)
}

// fail crashes the configured fraction at once: at random, or the nodes nearest to a random
// point of the latency space (a site going dark; see routeRun.fail).
func (run *glacierRun) fail() {
	r := run.ring
	var alive []*simGlacier
	for _, sg := range run.peers {
		if sg.sn.alive {
			alive = append(alive, sg)
		}
	}
	k := int(math.Round(run.cfg.Fail * float64(len(alive))))
	for _, sg := range pickVictims(alive, k, run.cfg.FailMode == "correlated", run.rng, func(sg *simGlacier) *simnet.Endpoint { return sg.sn.ep }) {
		sg.drv.Stop()
		r.crash(sg.sn)
	}
	r.net.RunFor(time.Minute)
}

// repair runs maintenance until every object has all n fragments on live nodes again (or as
// many as there are live nodes), or RepairTime has passed, and then retrieves a sample of
// objects through the protocol.
func (run *glacierRun) repair(note func(string)) GlacierResult {
	r := run.ring
	m := run.mark()
	began := r.net.Elapsed()
	// Every position has a live responsible node (a node may hold several positions of one
	// object when few survive), so the goal is always all n.
	target := run.cfg.N
	var recovered time.Duration
	step := run.cfg.SyncInterval
	for r.net.Elapsed()-began < run.cfg.RepairTime {
		r.net.RunFor(step)
		full, _ := run.fullCount(target)
		var st glacier.Stats
		for _, sg := range run.peers {
			sg.drv.With(func(n *glacier.Node) {
				s := n.Stats()
				st.RebuildsStarted += s.RebuildsStarted
				st.RebuildsAbandoned += s.RebuildsAbandoned
				st.Rebuilt += s.Rebuilt
				st.HandedOff += s.HandedOff
				st.BadReplies += s.BadReplies
			})
		}
		note(fmt.Sprintf("repair: %s virtual, %d/%d objects with %d fragments; rebuilds started %d abandoned %d done %d, handed off %d, bad replies %d",
			(r.net.Elapsed() - began).Round(time.Second), full, len(run.objects), target, st.RebuildsStarted, st.RebuildsAbandoned, st.Rebuilt, st.HandedOff, st.BadReplies))
		if full == len(run.objects) {
			recovered = r.net.Elapsed() - began
			break
		}
	}
	// Demonstrate retrieval through the overlay for a sample.
	sample := min(run.cfg.Sample, len(run.objects))
	ok, pending := 0, sample
	for i := 0; i < sample; i++ {
		o := run.objects[run.rng.IntN(len(run.objects))]
		run.randomLive().drv.Retrieve(o.key, func(obj []byte, man *glacier.Manifest, err error) {
			pending--
			if err == nil && sha256.Sum256(obj) == o.hash {
				ok++
			}
		})
		r.net.RunFor(20 * time.Millisecond)
	}
	for wait := 0; wait < 60 && pending > 0; wait++ {
		r.net.RunFor(time.Second)
	}
	res := run.measure("repair", m, run.cfg.Fail)
	res.RecoveryTime = recovered
	res.Retrieved, res.Sample = ok, sample
	return res
}

// fullCount counts objects with at least target distinct fragments on live nodes.
func (run *glacierRun) fullCount(target int) (int, []int) {
	have := make([]int, len(run.objects))
	seen := make([][]uint64, len(run.objects))
	for _, sg := range run.peers {
		if !sg.sn.alive {
			continue
		}
		sg.st.Range(func(fk ids.ID, f *glacier.Fragment) bool {
			i, ok := run.byKey[f.Manifest.Key()]
			if !ok {
				return true
			}
			if seen[i] == nil {
				seen[i] = make([]uint64, (run.cfg.N+63)/64)
			}
			if w, b := f.Index/64, uint64(1)<<(f.Index%64); seen[i][w]&b == 0 {
				seen[i][w] |= b
				have[i]++
			}
			return true
		})
	}
	full := 0
	for _, h := range have {
		if h >= target {
			full++
		}
	}
	return full, have
}

type glacierMark struct {
	at      time.Duration
	maint   uint64
	rebuilt uint64
	nodes   int
}

func (run *glacierRun) counters() (maint, rebuilt uint64) {
	for _, sg := range run.peers {
		sg.drv.With(func(n *glacier.Node) {
			s := n.Stats()
			maint += s.MaintBytes
			rebuilt += s.Rebuilt
		})
	}
	return
}

func (run *glacierRun) mark() glacierMark {
	alive, _ := run.ring.countAlive()
	maint, rebuilt := run.counters()
	return glacierMark{at: run.ring.net.Elapsed(), maint: maint, rebuilt: rebuilt, nodes: alive}
}

// measure judges every object with global knowledge and decodes each restorable one from m
// fragments held by live nodes.
func (run *glacierRun) measure(phase string, m glacierMark, fail float64) GlacierResult {
	r := run.ring
	alive, _ := r.countAlive()
	res := GlacierResult{Phase: phase, Nodes: alive, Objects: len(run.objects)}
	frags := make([][][]byte, len(run.objects))
	var stored, manBytes int64
	for _, sg := range run.peers {
		if !sg.sn.alive {
			continue
		}
		sg.st.Range(func(fk ids.ID, f *glacier.Fragment) bool {
			i, ok := run.byKey[f.Manifest.Key()]
			if !ok {
				return true
			}
			stored += int64(len(f.Data))
			manBytes += int64(run.objects[i].manBytes + 32*len(f.Proof))
			if f.Manifest.CheckFragment(f.Index, f.Data, f.Proof) != nil || f.Manifest.ObjectHash != run.objects[i].hash {
				return true // never happens: holders check; counted as absent if it did
			}
			if frags[i] == nil {
				frags[i] = make([][]byte, run.cfg.N)
			}
			frags[i][f.Index] = f.Data
			return true
		})
	}
	for i, o := range run.objects {
		have := 0
		for _, f := range frags[i] {
			if f != nil {
				have++
			}
		}
		if have == run.cfg.N {
			res.Full++
		}
		if have < run.cfg.M {
			continue
		}
		res.Restorable++
		// Decode from exactly m fragments (a random choice), as a reader would.
		pick := make([][]byte, run.cfg.N)
		got := 0
		for _, j := range run.rng.Perm(run.cfg.N) {
			if frags[i][j] != nil && got < run.cfg.M {
				pick[j] = frags[i][j]
				got++
			}
		}
		obj, err := run.codec.Decode(pick, o.size)
		if err == nil && sha256.Sum256(obj) == o.hash {
			res.Decoded++
		}
	}
	res.Lost = res.Objects - res.Restorable
	if run.logical > 0 {
		res.Overhead = float64(stored) / float64(run.logical)
		res.OverheadManifests = float64(stored+manBytes) / float64(run.logical)
	}
	res.PredictedLoss = float64(len(run.objects)) * BinomialBelow(run.cfg.N, 1-fail, run.cfg.M)
	maint, rebuilt := run.counters()
	res.RepairBytes = maint - m.maint
	res.Rebuilt = rebuilt - m.rebuilt
	hours := (r.net.Elapsed() - m.at).Hours()
	nodes := float64(alive+m.nodes) / 2
	if hours > 0 && nodes > 0 {
		res.MaintPerNodeHour = float64(res.RepairBytes) / hours / nodes
	}
	return res
}

// BinomialBelow is P[X < m] for X ~ Binomial(n, p): the probability that fewer than m of n
// fragments survive when each survives independently with probability p.
func BinomialBelow(n int, p float64, m int) float64 {
	switch {
	case p >= 1:
		return 0
	case p <= 0:
		if m > 0 {
			return 1
		}
		return 0
	}
	lgN, _ := math.Lgamma(float64(n + 1))
	sum := 0.0
	for k := 0; k < m && k <= n; k++ {
		a, _ := math.Lgamma(float64(k + 1))
		b, _ := math.Lgamma(float64(n - k + 1))
		sum += math.Exp(lgN - a - b + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
	}
	return min(sum, 1)
}
