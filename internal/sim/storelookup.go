package sim

import (
	"crypto/ed25519"
	"fmt"
	"math"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
)

// Mutable objects and lookups in `epost sim store`: a share of the objects are signed
// objects (TypeSigned, one owner), rewritten with a growing sequence number while the ring
// churns, and lookups from random live nodes check what a reader gets, against what the
// writer had acknowledged when the lookup started (global knowledge):
//
//   - stale: a version older than the newest acknowledged one came back (a reader that
//     opened a log from it would lose what the newer head named);
//   - missing: nothing came back for an object that was acknowledged;
//   - latency and PAST messages per lookup (routed hops, replies, direct asks and read
//     repairs, counted where they arrive).

// mutableObj is one signed object of the experiment and its writer's state.
type mutableObj struct {
	key    ids.Key
	name   []byte
	seq    uint64 // last version written (acknowledged or not: the writer never reuses one)
	acked  uint64 // newest version a quorum acknowledged
	writes int    // writes in flight
}

// LookupResult is a lookup phase's summary.
type LookupResult struct {
	Phase            string
	Lookups          int
	Mutable          int // lookups of mutable objects
	Stale            int // mutable lookups that returned an older version than acknowledged
	Missing          int // lookups that found nothing although the object was acknowledged
	LatP50, LatP99   float64
	MutP50, MutP99   float64 // latency of mutable lookups alone
	MsgsPerLookup    float64
	MutMsgsPerLookup float64
	Writes, Failed   int // mutable writes during the phase, and those not acknowledged
}

func (r LookupResult) String() string {
	return fmt.Sprintf("phase=%s lookups=%d mutable=%d stale=%d missing=%d latency_p50_ms=%.1f latency_p99_ms=%.1f mutable_p50_ms=%.1f mutable_p99_ms=%.1f msgs_per_lookup=%.2f mutable_msgs_per_lookup=%.2f writes=%d writes_failed=%d",
		r.Phase, r.Lookups, r.Mutable, r.Stale, r.Missing, r.LatP50, r.LatP99, r.MutP50, r.MutP99, r.MsgsPerLookup, r.MutMsgsPerLookup, r.Writes, r.Failed)
}

// lookupTally gathers lookups and writes of one phase.
type lookupTally struct {
	all, mut         []time.Duration
	stale, missing   int
	msgs, mutMsgs    uint64
	writes, failed   int
	content, mutable int
	// concurrent: lookups overlapped (churn phase), so messages are counted for the whole
	// phase (from msgsAt) and not split between content and mutable lookups.
	concurrent bool
	msgsAt     uint64
}

func (run *storeRun) ownerKey() ed25519.PrivateKey {
	if run.owner == nil {
		seed := make([]byte, ed25519.SeedSize)
		for i := range seed {
			seed[i] = byte(run.rng.Uint32())
		}
		run.owner = ed25519.NewKeyFromSeed(seed)
	}
	return run.owner
}

// insertMutable makes the experiment's mutable objects: version 1 of each, written like a
// content object at InsertRate.
func (run *storeRun) insertMutable(count int) {
	r := run.ring
	interval := time.Duration(float64(time.Second) / run.cfg.InsertRate)
	for i := 0; i < count; i++ {
		mo := &mutableObj{name: fmt.Appendf(nil, "sim/mutable/%d", i)}
		mo.key = past.SignedKey(run.ringID, run.ownerKey().Public().(ed25519.PublicKey), mo.name)
		run.mutables = append(run.mutables, mo)
		run.write(mo, nil)
		r.net.RunFor(interval)
	}
	for wait := 0; wait < 60 && run.writesInFlight() > 0; wait++ {
		r.net.RunFor(time.Second)
	}
}

func (run *storeRun) writesInFlight() int {
	n := 0
	for _, mo := range run.mutables {
		n += mo.writes
	}
	return n
}

// write stores the next version of mo from a random live node (the single writer's node may
// be any: the writer keeps its sequence number, as a log's writer does on its disk).
func (run *storeRun) write(mo *mutableObj, t *lookupTally) {
	mo.seq++
	seq := mo.seq
	size := run.cfg.MinPayload + run.rng.IntN(run.cfg.MaxPayload-run.cfg.MinPayload+1)
	obj := past.NewSigned(run.ownerKey(), run.ringID, mo.name, seq, randomBytes(run.rng, size), run.ring.net.Now().Add(28*24*time.Hour))
	mo.writes++
	if t != nil {
		t.writes++
	}
	run.randomLive().drv.Insert(obj, func(res past.InsertResult) {
		mo.writes--
		if res.Err != nil {
			if t != nil {
				t.failed++
			}
			return
		}
		mo.acked = max(mo.acked, seq)
	})
}

// lookupMsgs is the number of lookup messages that arrived at any node so far.
func (run *storeRun) lookupMsgs() uint64 {
	var total uint64
	for _, sp := range run.peers {
		sp.drv.With(func(n *past.Node) { total += n.Stats().LookupMsgs })
	}
	return total
}

// lookup asks for key from a random live node, and records how it went once it answers.
// want is the newest acknowledged version at the start (0: a content object).
func (run *storeRun) lookup(key ids.Key, want uint64, t *lookupTally, done func()) {
	start := run.ring.net.Elapsed()
	before := run.lookupMsgs()
	run.randomLive().drv.Lookup(key, func(obj past.Object, err error) {
		lat := run.ring.net.Elapsed() - start
		var msgs uint64
		if !t.concurrent {
			msgs = run.lookupMsgs() - before
		}
		t.all = append(t.all, lat)
		t.msgs += msgs
		switch {
		case err != nil:
			t.missing++
		case want > 0 && obj.Seq < want:
			t.stale++
		}
		if want > 0 {
			t.mut = append(t.mut, lat)
			t.mutMsgs += msgs
			t.mutable++
		} else {
			t.content++
		}
		done()
	})
}

// lookupPhase runs Lookups lookups one after another (so that each one's messages can be
// counted alone), half of them of mutable objects when there are any.
func (run *storeRun) lookupPhase(phase string) LookupResult {
	t := &lookupTally{}
	for i := 0; i < run.cfg.Lookups; i++ {
		run.lookupOne(t)
		run.ring.net.RunFor(10 * time.Millisecond)
	}
	return t.result(phase)
}

// lookupOne looks up a random object and runs the network until it answers (or a minute).
func (run *storeRun) lookupOne(t *lookupTally) {
	answered := false
	key, want := run.pickLookup()
	run.lookup(key, want, t, func() { answered = true })
	for end := run.ring.net.Elapsed() + time.Minute; !answered && run.ring.net.Elapsed() < end; {
		run.ring.net.RunFor(5 * time.Millisecond)
	}
}

// pickLookup chooses a content object or (half the time, if any) a mutable one that has an
// acknowledged version, with the version a correct read must reach.
func (run *storeRun) pickLookup() (ids.Key, uint64) {
	if len(run.mutables) > 0 && (len(run.objects) == 0 || run.rng.IntN(2) == 0) {
		for try := 0; try < 16; try++ {
			mo := run.mutables[run.rng.IntN(len(run.mutables))]
			if mo.acked > 0 {
				return mo.key, mo.acked
			}
		}
	}
	if len(run.objects) == 0 {
		return run.mutables[0].key, run.mutables[0].acked
	}
	return run.objects[run.rng.IntN(len(run.objects))], 0
}

// concurrentResult is result for a phase whose lookups overlapped: messages are those of the
// whole phase.
func (run *storeRun) concurrentResult(t *lookupTally, phase string) LookupResult {
	t.msgs = run.lookupMsgs() - t.msgsAt
	return t.result(phase)
}

func (t *lookupTally) result(phase string) LookupResult {
	res := LookupResult{Phase: phase, Lookups: len(t.all), Mutable: t.mutable, Stale: t.stale, Missing: t.missing,
		Writes: t.writes, Failed: t.failed}
	res.LatP50, res.LatP99 = percentilesMs(t.all)
	res.MutP50, res.MutP99 = percentilesMs(t.mut)
	if len(t.all) > 0 {
		res.MsgsPerLookup = float64(t.msgs) / float64(len(t.all))
	}
	if t.concurrent {
		return res
	}
	if t.mutable > 0 {
		res.MutMsgsPerLookup = float64(t.mutMsgs) / float64(t.mutable)
	}
	return res
}

func percentilesMs(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := min(len(s)-1, max(0, int(math.Ceil(q*float64(len(s))))-1))
		return float64(s[i]) / float64(time.Millisecond)
	}
	return at(0.50), at(0.99)
}

// churnTraffic runs, during the churn phase, mutable rewrites at UpdateRate and lookups at
// LookupRate (concurrently, so messages are not counted per lookup), and reports them.
func (run *storeRun) churnTraffic(end time.Duration) *lookupTally {
	t := &lookupTally{concurrent: true, msgsAt: run.lookupMsgs()}
	r := run.ring
	if len(run.mutables) == 0 {
		return t
	}
	if run.cfg.UpdateRate > 0 {
		var next func()
		next = func() {
			if r.net.Elapsed() >= end {
				return
			}
			mo := run.mutables[run.rng.IntN(len(run.mutables))]
			if mo.writes == 0 { // a single writer: one version at a time
				run.write(mo, t)
			}
			r.net.AfterFunc(time.Duration(run.rng.ExpFloat64()*float64(time.Second)/run.cfg.UpdateRate), next)
		}
		r.net.AfterFunc(0, next)
	}
	if run.cfg.LookupRate > 0 {
		var next func()
		next = func() {
			if r.net.Elapsed() >= end {
				return
			}
			key, want := run.pickLookup()
			run.lookup(key, want, t, func() {})
			r.net.AfterFunc(time.Duration(run.rng.ExpFloat64()*float64(time.Second)/run.cfg.LookupRate), next)
		}
		r.net.AfterFunc(0, next)
	}
	return t
}
