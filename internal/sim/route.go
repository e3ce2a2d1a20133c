package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/simnet"
)

// RouteConfig is the `epost sim route` experiment.
type RouteConfig struct {
	Nodes       int
	Lookups     int
	Fail        float64       // fraction of nodes failed at once after the lookups phase
	FailMode    string        // "random" or "correlated" (a contiguous region of the latency space)
	Churn       time.Duration // median session length; 0: no churn phase
	Duration    time.Duration // length of the churn phase
	LeafSet     int
	Seed        uint64
	JoinSpacing time.Duration // virtual time between two joins while building
	LookupRate  float64       // lookups issued per virtual second
	RepairTime  time.Duration // virtual time allowed for repair after a failure
	Tick        time.Duration // driver tick
	Protocol    pastry.Config // zero fields take pastry's defaults
}

// Validate checks the flags and fills defaults.
func (c *RouteConfig) Validate() error {
	if c.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if c.Lookups < 0 {
		return errors.New("--lookups must not be negative")
	}
	if err := checkFailure(c.Fail, &c.FailMode, "random", "correlated"); err != nil {
		return err
	}
	if c.Churn < 0 || c.Duration < 0 {
		return errors.New("--churn and --duration must not be negative")
	}
	if c.Churn > 0 && c.Duration == 0 {
		c.Duration = 1 * time.Hour
	}
	if c.LeafSet == 0 {
		c.LeafSet = 24
	}
	if c.LeafSet < 2 || c.LeafSet%2 != 0 {
		return errors.New("--leafset must be an even number of at least 2")
	}
	if c.JoinSpacing <= 0 {
		c.JoinSpacing = 10 * time.Millisecond
	}
	if c.LookupRate <= 0 {
		c.LookupRate = 1000
	}
	if c.RepairTime <= 0 {
		c.RepairTime = 2 * time.Minute
	}
	if c.Tick <= 0 {
		c.Tick = 250 * time.Millisecond
	}
	return nil
}

type lookup struct {
	key       ids.ID
	src       *simNode
	issued    time.Duration
	delivered bool
	correct   bool
	hops      int
	latency   time.Duration
	direct    time.Duration
}

// RouteResult is one phase's summary.
type RouteResult struct {
	Phase          string
	Nodes          int
	Lookups        int
	Delivered      float64
	Correct        float64
	AvgHops        float64
	P99Hops        int
	AvgLatencyMs   float64
	Stretch        float64
	MsgsPerNodeSec float64
	BytesPerNodeS  float64
	LeafSetsOK     float64
}

func (r RouteResult) String() string {
	return fmt.Sprintf("phase=%s nodes=%d lookups=%d delivered=%.2f correct=%.2f avg_hops=%.2f p99_hops=%d avg_latency_ms=%.1f stretch=%.2f msgs_per_node_per_s=%.2f bytes_per_node_per_s=%.0f leafsets_ok=%.2f",
		r.Phase, r.Nodes, r.Lookups, r.Delivered, r.Correct, r.AvgHops, r.P99Hops, r.AvgLatencyMs, r.Stretch, r.MsgsPerNodeSec, r.BytesPerNodeS, r.LeafSetsOK)
}

type routeRun struct {
	cfg     RouteConfig
	ring    *simRing
	lookups []*lookup
}

// RunRoute runs the experiment and writes one summary line per phase to out. progress, if not
// nil, receives human-oriented progress notes (not deterministic: wall time).
func RunRoute(cfg RouteConfig, out io.Writer, progress func(string)) ([]RouteResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	pc := cfg.Protocol
	pc.LeafSetSize = cfg.LeafSet
	run := &routeRun{cfg: cfg, ring: newSimRing(cfg.Seed, pc, cfg.Tick)}
	run.ring.onDeliver = run.onDeliver
	var results []RouteResult
	emit := func(r RouteResult) {
		results = append(results, r)
		fmt.Fprintln(out, r.String())
	}

	start := time.Now()
	emit(run.build(progress))
	progress(fmt.Sprintf("built %d nodes in %s wall", cfg.Nodes, time.Since(start).Round(time.Millisecond)))

	emit(run.lookupPhase("lookups", cfg.Lookups))
	if cfg.Fail > 0 {
		run.fail()
		emit(run.lookupPhase("after-failure", cfg.Lookups))
		mark := run.mark()
		run.ring.net.RunFor(cfg.RepairTime)
		progress(fmt.Sprintf("repair: %s virtual, %.2f msgs/node/s", cfg.RepairTime, mark.rate(run).msgs))
		emit(run.lookupPhase("after-repair", cfg.Lookups))
	}
	if cfg.Churn > 0 {
		emit(run.churn(progress))
	}
	return results, nil
}

type mark struct {
	at           time.Duration
	sent, bytes  uint64
	nodesAtStart int
}

type rates struct{ msgs, bytes float64 }

func (run *routeRun) mark() mark {
	st := run.ring.net.Stats()
	alive, _ := run.ring.countAlive()
	return mark{at: run.ring.net.Elapsed(), sent: st.Sent, bytes: st.Bytes, nodesAtStart: alive}
}

func (m mark) rate(run *routeRun) rates {
	st := run.ring.net.Stats()
	secs := (run.ring.net.Elapsed() - m.at).Seconds()
	alive, _ := run.ring.countAlive()
	nodes := float64(alive+m.nodesAtStart) / 2
	if secs <= 0 || nodes == 0 {
		return rates{}
	}
	return rates{msgs: float64(st.Sent-m.sent) / secs / nodes, bytes: float64(st.Bytes-m.bytes) / secs / nodes}
}

func (run *routeRun) build(progress func(string)) RouteResult {
	r := run.ring
	m := run.mark()
	for i := 0; i < run.cfg.Nodes; i++ {
		if i > 0 {
			r.net.RunFor(run.cfg.JoinSpacing)
		}
		r.addNode()
		if (i+1)%5000 == 0 {
			progress(fmt.Sprintf("joined %d/%d", i+1, run.cfg.Nodes))
		}
	}
	// Let the last joins finish, then a little settling.
	for wait := 0; wait < 300; wait++ {
		if _, ready := r.countAlive(); ready == len(r.nodes) {
			break
		}
		r.net.RunFor(time.Second)
	}
	r.net.RunFor(10 * time.Second)
	alive, _ := r.countAlive()
	rt := m.rate(run)
	return RouteResult{Phase: "build", Nodes: alive, MsgsPerNodeSec: rt.msgs, BytesPerNodeS: rt.bytes, LeafSetsOK: r.leafSetAccuracy()}
}

func (run *routeRun) onDeliver(sn *simNode, e pastry.Event) {
	if len(e.Payload) != 8 {
		return
	}
	i := binary.BigEndian.Uint64(e.Payload)
	if i >= uint64(len(run.lookups)) {
		return
	}
	l := run.lookups[i]
	if l.delivered {
		return // a duplicate after a re-route; the first delivery counts
	}
	l.delivered = true
	l.hops = e.Hops
	l.latency = run.ring.net.Elapsed() - l.issued
	l.correct = run.ring.closestLive(l.key) == sn.ep.ID()
	l.direct = run.ring.net.Latency(l.src.ep, sn.ep)
}

// issue starts one lookup from a random live ready node.
func (run *routeRun) issue() {
	r := run.ring
	live := r.liveIDs()
	if len(live) == 0 {
		return
	}
	var src *simNode
	for src == nil || !src.alive || !src.ready {
		src = r.nodes[r.rng.IntN(len(r.nodes))]
	}
	l := &lookup{key: r.randomID(), src: src, issued: r.net.Elapsed()}
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(len(run.lookups)))
	run.lookups = append(run.lookups, l)
	src.drv.Route(l.key, p[:])
}

func (run *routeRun) lookupPhase(name string, count int) RouteResult {
	r := run.ring
	m := run.mark()
	first := len(run.lookups)
	interval := time.Duration(float64(time.Second) / run.cfg.LookupRate)
	for i := 0; i < count; i++ {
		run.issue()
		r.net.RunFor(interval)
	}
	run.drain(first, 60*time.Second)
	res := run.summarize(name, run.lookups[first:])
	rt := m.rate(run)
	res.MsgsPerNodeSec, res.BytesPerNodeS = rt.msgs, rt.bytes
	res.LeafSetsOK = r.leafSetAccuracy()
	return res
}

// drain runs until every lookup since first is delivered or limit passes.
func (run *routeRun) drain(first int, limit time.Duration) {
	end := run.ring.net.Elapsed() + limit
	for run.ring.net.Elapsed() < end {
		done := true
		for _, l := range run.lookups[first:] {
			if !l.delivered {
				done = false
				break
			}
		}
		if done {
			return
		}
		run.ring.net.RunFor(500 * time.Millisecond)
	}
}

func (run *routeRun) summarize(name string, ls []*lookup) RouteResult {
	alive, _ := run.ring.countAlive()
	res := RouteResult{Phase: name, Nodes: alive, Lookups: len(ls)}
	if len(ls) == 0 {
		return res
	}
	var delivered, correct int
	var hops []int
	var lat, direct time.Duration
	for _, l := range ls {
		if !l.delivered {
			continue
		}
		delivered++
		if l.correct {
			correct++
		}
		hops = append(hops, l.hops)
		lat += l.latency
		direct += l.direct
	}
	res.Delivered = 100 * float64(delivered) / float64(len(ls))
	res.Correct = 100 * float64(correct) / float64(len(ls))
	if delivered > 0 {
		sum := 0
		for _, h := range hops {
			sum += h
		}
		res.AvgHops = float64(sum) / float64(delivered)
		slices.Sort(hops)
		res.P99Hops = hops[min(len(hops)-1, int(math.Ceil(0.99*float64(len(hops))))-1)]
		res.AvgLatencyMs = float64(lat) / float64(delivered) / float64(time.Millisecond)
		if direct > 0 {
			res.Stretch = float64(lat) / float64(direct)
		}
	}
	return res
}

// fail crashes the configured fraction of nodes at once.
func (run *routeRun) fail() {
	r := run.ring
	var alive []*simNode
	for _, sn := range r.nodes {
		if sn.alive {
			alive = append(alive, sn)
		}
	}
	k := int(math.Round(run.cfg.Fail * float64(len(alive))))
	for _, sn := range pickVictims(alive, k, run.cfg.FailMode == "correlated", r.rng, func(sn *simNode) *simnet.Endpoint { return sn.ep }) {
		r.crash(sn)
	}
}

// churn runs the ring with nodes leaving (crash) after exponentially distributed sessions of
// the given median and fresh nodes joining at the same rate, while lookups run.
func (run *routeRun) churn(progress func(string)) RouteResult {
	r := run.ring
	m := run.mark()
	mean := float64(run.cfg.Churn) / math.Ln2
	end := r.net.Elapsed() + run.cfg.Duration
	var schedule func(sn *simNode)
	schedule = func(sn *simNode) {
		life := time.Duration(r.rng.ExpFloat64() * mean)
		r.net.AfterFunc(life, func() {
			if !sn.alive || r.net.Elapsed() >= end {
				return
			}
			r.crash(sn)
			// A newcomer takes its place after a short while.
			r.net.AfterFunc(time.Duration(r.rng.Int64N(int64(30*time.Second))), func() {
				if r.net.Elapsed() >= end {
					return
				}
				schedule(r.addNode())
			})
		})
	}
	for _, sn := range r.nodes {
		if sn.alive {
			schedule(sn)
		}
	}
	first := len(run.lookups)
	count := run.cfg.Lookups
	if count == 0 {
		count = 10000
	}
	interval := run.cfg.Duration / time.Duration(count)
	for i := 0; i < count; i++ {
		run.issue()
		r.net.RunFor(interval)
		if (i+1)%(max(count/10, 1)) == 0 {
			progress(fmt.Sprintf("churn: %d/%d lookups issued", i+1, count))
		}
	}
	run.drain(first, 60*time.Second)
	res := run.summarize("churn", run.lookups[first:])
	rt := m.rate(run)
	res.MsgsPerNodeSec, res.BytesPerNodeS = rt.msgs, rt.bytes
	res.LeafSetsOK = r.leafSetAccuracy()
	return res
}
