package sim

import (
	"crypto/ed25519"
	"epost/internal/simnet"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
)

// StoreConfig is the `epost sim store` experiment: PAST on a simulated ring, objects inserted,
// nodes failed, replicas repaired.
type StoreConfig struct {
	Nodes       int
	Objects     int
	Fail        float64       // fraction of the nodes that fail
	FailMode    string        // sequential | random | correlated
	Churn       time.Duration // median session length for a churn phase; 0: none
	Duration    time.Duration // length of the churn phase
	Seed        uint64
	Replicas    int // k
	LeafSet     int
	JoinSpacing time.Duration
	InsertRate  float64       // inserts per virtual second
	FailSpacing time.Duration // sequential: virtual time between two failures, for repair
	RepairTime  time.Duration // virtual time allowed for repair after the failures
	Tick        time.Duration // pastry driver tick
	PastTick    time.Duration // PAST driver tick
	MinPayload  int
	MaxPayload  int
	Protocol    pastry.Config
	Past        past.Config

	// Mutable signed objects (storelookup.go): how many, rewritten at UpdateRate per
	// virtual second during churn; Lookups sequential lookups after the inserts and after
	// the churn, and LookupRate lookups per virtual second during the churn.
	Mutable    int
	UpdateRate float64
	Lookups    int
	LookupRate float64
	// Restart is the share of nodes crashed by churn that come back with their store (a
	// process restart) after an exponential Downtime (median), instead of a fresh node
	// joining in their place.
	Restart  float64
	Downtime time.Duration
}

// Validate checks the flags and fills defaults.
func (c *StoreConfig) Validate() error {
	if c.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if c.Objects < 0 {
		return errors.New("--objects must not be negative")
	}
	if err := checkFailure(c.Fail, &c.FailMode, "sequential", "random", "correlated"); err != nil {
		return err
	}
	if c.Churn < 0 || c.Duration < 0 {
		return errors.New("--churn and --duration must not be negative")
	}
	if c.Churn > 0 && c.Duration == 0 {
		c.Duration = time.Hour
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 || c.Replicas > 12 {
		return errors.New("--replicas must be between 1 and 12 (at most half the leaf set)")
	}
	if c.LeafSet == 0 {
		c.LeafSet = 24
	}
	if c.LeafSet < 2*c.Replicas || c.LeafSet%2 != 0 {
		return errors.New("--leafset must be even and at least twice --replicas")
	}
	if c.JoinSpacing <= 0 {
		c.JoinSpacing = 10 * time.Millisecond
	}
	if c.InsertRate <= 0 {
		c.InsertRate = 500
	}
	if c.FailSpacing <= 0 {
		c.FailSpacing = 10 * time.Second
	}
	if c.RepairTime <= 0 {
		c.RepairTime = 2 * time.Minute
	}
	if c.Tick <= 0 {
		c.Tick = 500 * time.Millisecond
	}
	if c.PastTick <= 0 {
		c.PastTick = time.Second
	}
	if c.MinPayload <= 0 {
		c.MinPayload = 1 << 10
	}
	if c.MaxPayload < c.MinPayload {
		c.MaxPayload = max(4<<10, c.MinPayload)
	}
	if c.Mutable < 0 || c.Lookups < 0 || c.UpdateRate < 0 || c.LookupRate < 0 {
		return errors.New("--mutable, --lookups, --update-rate and --lookup-rate must not be negative")
	}
	if c.Restart < 0 || c.Restart > 1 {
		return errors.New("--restart must be a fraction in [0, 1]")
	}
	if c.Downtime <= 0 {
		c.Downtime = 2 * time.Minute
	}
	return nil
}

// StoreResult is one phase's summary.
//
// lost: objects that no live node holds (live store, not trash), by the simulator's global
// knowledge. under_replicated: objects for which fewer than min(k, live nodes) of the k live
// nodes numerically closest to the key (the replica set a perfect overlay would choose) hold a
// live copy; copies on other nodes do not count. replicas_avg: live copies per object, on any
// live node. bytes_per_node: payload bytes in each live node's store. maintenance bytes: PAST
// maintenance messages sent during the phase, per live node per virtual second.
type StoreResult struct {
	Phase           string
	Nodes           int
	Objects         int
	Lost            int
	UnderReplicated int
	ReplicasAvg     float64
	BytesP50        int64
	BytesP99        int64
	MaintBytesPerS  float64
	PredictedLost   float64 // printed when HasPrediction
	HasPrediction   bool
	InsertsFailed   int // printed for the insert phase
	insertPhase     bool
}

func (r StoreResult) String() string {
	s := fmt.Sprintf("phase=%s nodes=%d objects=%d lost=%d under_replicated=%d replicas_avg=%.2f bytes_per_node_p50=%d bytes_per_node_p99=%d maintenance_bytes_per_node_per_s=%.1f",
		r.Phase, r.Nodes, r.Objects, r.Lost, r.UnderReplicated, r.ReplicasAvg, r.BytesP50, r.BytesP99, r.MaintBytesPerS)
	if r.HasPrediction {
		s += fmt.Sprintf(" predicted_lost=%.1f", r.PredictedLost)
	}
	if r.insertPhase {
		s += fmt.Sprintf(" inserts_failed=%d", r.InsertsFailed)
	}
	return s
}

type storeRun struct {
	cfg     StoreConfig
	ring    *simRing
	rng     *rand.Rand
	peers   []*simPast // by simNode.idx
	objects []ids.Key
	failed  int // inserts that reported an error
	pending int // inserts not yet answered
	ringID  ids.RingID

	owner    ed25519.PrivateKey // owner of the mutable objects
	mutables []*mutableObj
}

type simPast struct {
	sn  *simNode
	st  *past.MemStore
	drv *past.Driver
}

// RunStore runs the experiment, writing one summary line per phase to out; progress gets
// human notes (with wall times: not deterministic).
func RunStore(cfg StoreConfig, out io.Writer, progress func(string)) ([]StoreResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	pc := cfg.Protocol
	pc.LeafSetSize = cfg.LeafSet
	run := &storeRun{cfg: cfg, ring: newSimRing(cfg.Seed, pc, cfg.Tick), rng: rand.New(rand.NewPCG(cfg.Seed, 0x5707e)), ringID: pc.Ring}
	// Lookups are answered on the route, as on a real node (daemon: appmux's Forward).
	run.ring.forward = func(sn *simNode, key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
		if sn.idx < len(run.peers) && run.peers[sn.idx] != nil && run.peers[sn.idx].sn == sn {
			return run.peers[sn.idx].drv.Forward(key, payload, next)
		}
		return payload, true
	}
	var results []StoreResult
	emit := func(r StoreResult) {
		results = append(results, r)
		fmt.Fprintln(out, r.String())
	}
	start := time.Now()

	m := run.mark()
	for i := 0; i < cfg.Nodes; i++ {
		if i > 0 {
			run.ring.net.RunFor(cfg.JoinSpacing)
		}
		run.addNode()
		if (i+1)%1000 == 0 {
			progress(fmt.Sprintf("joined %d/%d", i+1, cfg.Nodes))
		}
	}
	for wait := 0; wait < 300; wait++ {
		if _, ready := run.ring.countAlive(); ready == len(run.ring.nodes) {
			break
		}
		run.ring.net.RunFor(time.Second)
	}
	run.ring.net.RunFor(10 * time.Second)
	emit(run.measure("build", m))
	progress(fmt.Sprintf("built %d nodes in %s wall", cfg.Nodes, time.Since(start).Round(time.Millisecond)))

	m = run.mark()
	run.insertAll()
	res := run.measure("insert", m)
	res.insertPhase, res.InsertsFailed = true, run.failed+run.pending
	emit(res)
	progress(fmt.Sprintf("inserted %d objects (%d failed), %s wall", cfg.Objects, run.failed+run.pending, time.Since(start).Round(time.Millisecond)))
	if cfg.Mutable > 0 {
		run.insertMutable(cfg.Mutable)
		progress(fmt.Sprintf("inserted %d mutable objects, %s wall", cfg.Mutable, time.Since(start).Round(time.Millisecond)))
	}
	lookups := func(phase string) {
		if cfg.Lookups > 0 {
			fmt.Fprintln(out, run.lookupPhase(phase).String())
		}
	}
	lookups("lookup")

	if cfg.Fail > 0 {
		m = run.mark()
		run.fail(progress)
		res := run.measure("fail", m)
		run.predict(&res)
		emit(res)
		progress(fmt.Sprintf("failures done, %s wall", time.Since(start).Round(time.Millisecond)))
		m = run.mark()
		run.ring.net.RunFor(cfg.RepairTime)
		res = run.measure("repair", m)
		run.predict(&res)
		emit(res)
		progress(fmt.Sprintf("repair done, %s wall", time.Since(start).Round(time.Millisecond)))
	}
	if cfg.Churn > 0 {
		m = run.mark()
		traffic := run.churnTraffic(run.ring.net.Elapsed() + cfg.Duration)
		run.churn(progress)
		emit(run.measure("churn", m))
		if cfg.LookupRate > 0 || cfg.UpdateRate > 0 {
			fmt.Fprintln(out, run.concurrentResult(traffic, "churn-lookup").String())
		}
		lookups("lookup-after-churn")
		m = run.mark()
		run.ring.net.RunFor(cfg.RepairTime)
		emit(run.measure("churn-repair", m))
		lookups("lookup-after-repair")
	}
	return results, nil
}

// predict adds the independent-failure prediction fail^k × objects for random failures.
func (run *storeRun) predict(r *StoreResult) {
	if run.cfg.FailMode == "sequential" {
		return
	}
	r.HasPrediction = true
	r.PredictedLost = math.Pow(run.cfg.Fail, float64(run.cfg.Replicas)) * float64(len(run.objects))
}

// addNode joins a node and attaches a PAST instance with an in-memory store to it.
func (run *storeRun) addNode() *simPast {
	sn := run.ring.addNode()
	sp := &simPast{sn: sn, st: past.NewMemStore(sn.ep.Clock().Now, 0)}
	run.attach(sp)
	for len(run.peers) <= sn.idx {
		run.peers = append(run.peers, nil)
	}
	run.peers[sn.idx] = sp
	return sp
}

// attach builds a PAST node on sp's (new) pastry driver, over sp's store.
func (run *storeRun) attach(sp *simPast) {
	sn := sp.sn
	clock := sn.ep.Clock()
	pcfg := run.cfg.Past
	pcfg.Ring = run.ringID
	pcfg.Replicas = run.cfg.Replicas
	node := past.NewNode(pcfg, sn.drv.Self(), sp.st, rand.New(rand.NewPCG(run.rng.Uint64(), uint64(sn.idx))))
	sp.drv = past.NewDriver(node, sn.drv, clock, run.cfg.PastTick)
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		sp.drv.HandleEvent(e)
	}
	sp.drv.Start()
	if sn.ready { // the founder is ready at once, before we could listen
		sp.drv.HandleEvent(pastry.Event{Kind: pastry.EventReady})
	}
}

// restart brings a crashed node back with the same id and store (a process restart): it
// rejoins, and its store holds whatever it held when it died, stale versions included.
func (run *storeRun) restart(sp *simPast) {
	r := run.ring
	sn := sp.sn
	sn.ep.Recover()
	sn.alive = true
	r.dirty = true
	r.startNode(sn, r.nearbyBootstrap(sn.ep))
	run.attach(sp)
}

func (run *storeRun) crash(sp *simPast) {
	sp.drv.Stop()
	run.ring.crash(sp.sn)
}

// randomLive picks a live, ready node.
func (run *storeRun) randomLive() *simPast {
	return randomLive(run.rng, run.peers, func(sp *simPast) *simNode { return sp.sn })
}

// insertAll inserts the objects from random live nodes at InsertRate, then waits for answers.
func (run *storeRun) insertAll() {
	r := run.ring
	interval := time.Duration(float64(time.Second) / run.cfg.InsertRate)
	lease := r.net.Now().Add(28 * 24 * time.Hour)
	for i := 0; i < run.cfg.Objects; i++ {
		size := run.cfg.MinPayload + run.rng.IntN(run.cfg.MaxPayload-run.cfg.MinPayload+1)
		payload := randomBytes(run.rng, size)
		obj := past.NewContent(run.ringID, payload, lease)
		run.objects = append(run.objects, obj.Key)
		run.pending++
		run.randomLive().drv.Insert(obj, func(res past.InsertResult) {
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
	r.net.RunFor(5 * time.Second)
}

// fail crashes the configured fraction: one after another with FailSpacing between
// (sequential), all at once at random (random), or a region of the latency space (correlated).
func (run *storeRun) fail(progress func(string)) {
	r := run.ring
	var alive []*simPast
	for _, sp := range run.peers {
		if sp.sn.alive {
			alive = append(alive, sp)
		}
	}
	k := int(math.Round(run.cfg.Fail * float64(len(alive))))
	switch run.cfg.FailMode {
	case "sequential":
		for i := 0; i < k; i++ {
			run.crash(run.randomLive())
			r.net.RunFor(run.cfg.FailSpacing)
			if (i+1)%50 == 0 {
				progress(fmt.Sprintf("failed %d/%d", i+1, k))
			}
		}
		return
	}
	for _, sp := range pickVictims(alive, k, run.cfg.FailMode == "correlated", run.rng, func(sp *simPast) *simnet.Endpoint { return sp.sn.ep }) {
		run.crash(sp)
	}
	// Let the overlay notice before the "fail" line; repair gets its own phase.
	r.net.RunFor(time.Minute)
}

// churn crashes nodes after exponentially distributed sessions of the given median while
// fresh nodes join at the same rate.
func (run *storeRun) churn(progress func(string)) {
	r := run.ring
	mean := float64(run.cfg.Churn) / math.Ln2
	end := r.net.Elapsed() + run.cfg.Duration
	var schedule func(sp *simPast)
	schedule = func(sp *simPast) {
		life := time.Duration(run.rng.ExpFloat64() * mean)
		r.net.AfterFunc(life, func() {
			if !sp.sn.alive || r.net.Elapsed() >= end {
				return
			}
			run.crash(sp)
			if run.cfg.Restart > 0 && run.rng.Float64() < run.cfg.Restart {
				down := time.Duration(run.rng.ExpFloat64() * float64(run.cfg.Downtime) / math.Ln2)
				r.net.AfterFunc(down, func() {
					if r.net.Elapsed() >= end {
						return
					}
					run.restart(sp)
					schedule(sp)
				})
				return
			}
			r.net.AfterFunc(time.Duration(run.rng.Int64N(int64(30*time.Second))), func() {
				if r.net.Elapsed() >= end {
					return
				}
				schedule(run.addNode())
			})
		})
	}
	for _, sp := range run.peers {
		if sp.sn.alive {
			schedule(sp)
		}
	}
	for r.net.Elapsed() < end {
		r.net.RunFor(10 * time.Minute)
		progress(fmt.Sprintf("churn: %s of %s virtual", (run.cfg.Duration - (end - r.net.Elapsed())).Round(time.Second), run.cfg.Duration))
	}
}

type storeMark struct {
	at    time.Duration
	maint uint64
	nodes int
}

func (run *storeRun) maintBytes() uint64 {
	var total uint64
	for _, sp := range run.peers {
		sp.drv.With(func(n *past.Node) { total += n.Stats().MaintBytes })
	}
	return total
}

func (run *storeRun) mark() storeMark {
	alive, _ := run.ring.countAlive()
	return storeMark{at: run.ring.net.Elapsed(), maint: run.maintBytes(), nodes: alive}
}

// measure judges the objects' state with global knowledge.
func (run *storeRun) measure(phase string, m storeMark) StoreResult {
	r := run.ring
	alive, _ := r.countAlive()
	res := StoreResult{Phase: phase, Nodes: alive, Objects: len(run.objects)}
	byID := make(map[ids.ID]*past.MemStore)
	var sizes []int64
	for _, sp := range run.peers {
		if sp.sn.alive && sp.sn.ready {
			byID[sp.sn.ep.ID()] = sp.st
		}
		if sp.sn.alive {
			sizes = append(sizes, sp.st.Bytes())
		}
	}
	holders := make(map[ids.Key]int, len(run.objects))
	for _, sp := range run.peers {
		if sp.sn.alive {
			sp.st.Keys(func(k ids.Key) { holders[k]++ })
		}
	}
	live := r.liveIDs()
	k := min(run.cfg.Replicas, len(live))
	total := 0
	for _, key := range run.objects {
		h := holders[key]
		total += h
		if h == 0 {
			res.Lost++
		}
		have := 0
		for _, id := range kClosest(live, key.ID, k) {
			if st := byID[id]; st != nil && st.Has(key) {
				have++
			}
		}
		if have < k {
			res.UnderReplicated++
		}
	}
	if len(run.objects) > 0 {
		res.ReplicasAvg = float64(total) / float64(len(run.objects))
	}
	if len(sizes) > 0 {
		slices.Sort(sizes)
		res.BytesP50 = sizes[len(sizes)/2]
		res.BytesP99 = sizes[min(len(sizes)-1, int(math.Ceil(0.99*float64(len(sizes))))-1)]
	}
	secs := (r.net.Elapsed() - m.at).Seconds()
	nodes := float64(alive+m.nodes) / 2
	if secs > 0 && nodes > 0 {
		res.MaintBytesPerS = float64(run.maintBytes()-m.maint) / secs / nodes
	}
	return res
}

// kClosest returns the k ids of sorted live numerically closest to key.
func kClosest(live []ids.ID, key ids.ID, k int) []ids.ID {
	n := len(live)
	if n == 0 || k == 0 {
		return nil
	}
	i, _ := slices.BinarySearchFunc(live, key, ids.Cmp)
	cands := make([]ids.ID, 0, 2*k)
	seen := map[int]bool{}
	for d := -k; d < k; d++ {
		j := ((i+d)%n + n) % n
		if !seen[j] {
			seen[j] = true
			cands = append(cands, live[j])
		}
	}
	slices.SortFunc(cands, func(a, b ids.ID) int {
		if a == b {
			return 0
		}
		if ids.Closer(key, a, b) {
			return -1
		}
		return 1
	})
	return cands[:min(k, len(cands))]
}
