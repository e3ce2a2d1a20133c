package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
)

// Churn of the nodes that host no user, and process restarts of the users' nodes, for
// `epost sim mail` (MailConfig.Churn, Restarts).
//
// A process restart is what a real node goes through when its process dies and starts again:
// the same id and the same disk (the PAST store, the users' received journals and head
// records), and everything in memory built anew: Pastry, PAST, Scribe, POST, and each user
// started again with AddUser(fresh=false), which opens the logs from the ring and the node's
// records. (Node.Resume, which the offline nodes' return uses, keeps the old in-memory User:
// an overlay reconnect, not a restart.) Nothing here says goodbye to the ring: the overlay has
// no leave protocol, so every stop is a crash; the two kinds of users' restarts differ in when
// they strike (see userRestart).

// churnState is the churn's bookkeeping; rng draws sessions and downtimes only, so that the
// churn does not shift the other draws.
type churnState struct {
	rng  *rand.Rand
	on   bool
	down int // churned nodes down now (restarting, or waiting for their replacement)

	sessions, restarts, replaced int // ended sessions; of those, restarts and replacements
	userRestarts                 int // process restarts of users' nodes (the final round not counted)
}

// retiredStat keeps the counters of POST and PAST instances that a crash ended.
type retiredStat struct {
	postForks, pastForks  uint64
	absorbed, republished uint64 // POST: newer heads continued from; heads written back
	readRepairs           uint64 // PAST
}

func (run *mailRun) retire(mn *mailNode) {
	st := mn.post.Stats()
	run.retired.postForks += st.Forks
	run.retired.absorbed += st.Absorbed
	run.retired.republished += st.Republished
	mn.pd.With(func(n *past.Node) {
		run.retired.pastForks += n.Stats().Forks
		run.retired.readRepairs += n.Stats().ReadRepairs
	})
}

// totals sums the counters of every instance that ran (restarted ones too): the forks met
// (logs whose heads did not extend one another in POST, lookups that found two versions at
// one sequence number in PAST), and how often the writer's and the readers' recovery paths
// ran.
func (run *mailRun) totals() retiredStat {
	t := run.retired
	for _, mn := range run.nodes {
		if !mn.sn.alive {
			continue // retired when it crashed
		}
		st := mn.post.Stats()
		t.postForks += st.Forks
		t.absorbed += st.Absorbed
		t.republished += st.Republished
		mn.pd.With(func(n *past.Node) {
			t.pastForks += n.Stats().Forks
			t.readRepairs += n.Stats().ReadRepairs
		})
	}
	return t
}

func (run *mailRun) maxChurnDown() int {
	return max(1, int(run.cfg.MaxDown*float64(run.cfg.Nodes)))
}

// startChurn gives every live node without users an exponential session.
func (run *mailRun) startChurn() {
	run.churn.on = true
	for _, mn := range run.nodes {
		if len(mn.users) == 0 && mn.sn.alive {
			run.scheduleSession(mn)
		}
	}
}

func (run *mailRun) stopChurn() { run.churn.on = false }

func (run *mailRun) scheduleSession(mn *mailNode) {
	mean := float64(run.cfg.Churn) / math.Ln2
	life := time.Duration(run.churn.rng.ExpFloat64() * mean)
	run.ring.net.AfterFunc(life, func() { run.endSession(mn) })
}

// endSession crashes mn; it comes back as itself after a downtime (a process restart), or a
// fresh node joins in its place. While MaxDown of the nodes are down through churn already,
// the session is extended.
func (run *mailRun) endSession(mn *mailNode) {
	c := &run.churn
	if !c.on || !mn.sn.alive {
		return
	}
	if c.down >= run.maxChurnDown() {
		run.ring.net.AfterFunc(30*time.Second, func() { run.endSession(mn) })
		return
	}
	c.sessions++
	c.down++
	run.crash(mn)
	if c.rng.Float64() < run.cfg.ChurnRestart {
		c.restarts++
		mn.restarting = true
		down := time.Duration(c.rng.ExpFloat64() * float64(run.cfg.ChurnDowntime) / math.Ln2)
		run.ring.net.AfterFunc(down, func() {
			c.down--
			run.processRestart(mn)
			if c.on {
				run.scheduleSession(mn)
			}
		})
		return
	}
	c.replaced++
	run.ring.net.AfterFunc(time.Duration(c.rng.Int64N(int64(30*time.Second))), func() {
		c.down--
		nm := run.addNode()
		if c.on {
			run.scheduleSession(nm)
		}
	})
}

// crashUserNode kills a user's node for a process restart: its users' in-memory state
// (post.User, the open mail store) is gone; the disk (store, journals, head records) stays.
// hard also loses what the node sent and the network still carries, as when a process dies
// before its socket buffers drain (simnet delivers a crashed sender's frames otherwise): the
// entries a head carries inline, whose own inserts had just been sent, then exist only in
// that head and the node's record.
func (run *mailRun) crashUserNode(mn *mailNode, hard bool) {
	for _, su := range mn.users {
		su.u = nil
		su.mail.ms, su.mail.logs = nil, nil
	}
	mn.restarting, mn.doomed = true, false
	run.crash(mn)
	if hard {
		mn.sn.ep.SetPartition(hardCrashPartition) // frames in flight from it are dropped
	}
	mn.gen++
}

// hardCrashPartition holds a hard-crashed node until it restarts (every other node is in
// partition 0).
const hardCrashPartition = -1

// processRestart brings mn back as a new process over its disk: same id, same PAST store,
// journals and head records; fresh Pastry, PAST, Scribe and POST. Once the overlay node is
// ready, each user is started again from the ring and the node's records.
func (run *mailRun) processRestart(mn *mailNode) {
	r := run.ring
	sn := mn.sn
	// The daemon remembers its peers on disk and tells PAST of them at the start.
	// (A node that went down again before it was ready keeps what it knew before.)
	if left, right, ok := sn.drv.ReadyLeafSet(); ok {
		mn.known = mn.known[:0]
		for _, h := range append(left, right...) {
			mn.known = append(mn.known, h.ID)
		}
	}
	sn.ep.SetPartition(0)
	sn.ep.Recover()
	sn.alive = true
	r.dirty = true
	r.startNode(sn, r.nearbyBootstrap(sn.ep))
	run.attach(mn)
	mn.gen++
	gen := mn.gen
	mn.post.RebuildHolderIndex()
	ready := false
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		if e.Kind != pastry.EventReady || ready {
			return
		}
		ready = true
		mn.offline, mn.restarting = false, false
		mn.backs = append(mn.backs, r.net.Elapsed())
		for _, su := range mn.users {
			run.startUser(su, gen)
		}
	}
}

// startUser starts su on its node's current POST instance (gen), as a restarted daemon does:
// AddUser with fresh=false opens the logs, never creates them. A failed start is retried.
func (run *mailRun) startUser(su *simUser, gen int) {
	mn := su.node
	mn.post.AddUser(su.keys, su.rec, false, func(u *post.User, err error) {
		if mn.gen != gen {
			return // the node went down again meanwhile
		}
		if err != nil {
			run.progress(fmt.Sprintf("restart of %s: %v; retrying", su.addr, err))
			run.ring.net.AfterFunc(5*time.Second, func() {
				if mn.gen == gen && mn.sn.alive {
					run.startUser(su, gen)
				}
			})
			return
		}
		su.u = u
	})
}

// userUp says whether every user of mn is started and the node is not on its way down.
func (mn *mailNode) userUp() bool {
	if !mn.sn.alive || mn.offline || mn.restarting {
		return false
	}
	for _, su := range mn.users {
		if su.u == nil {
			return false
		}
	}
	return true
}

// userDowntime is how long a user's node stays down for a restart: 5 s plus an exponential
// of mean 15 s.
func (run *mailRun) userDowntime() time.Duration {
	return 5*time.Second + time.Duration(run.opRng.ExpFloat64()*float64(15*time.Second))
}

// userRestart restarts one random user's node whose users are all up. Restarts alternate two
// kinds: a crash at a random moment in the next 3 s (whatever is in flight: filings, head
// writes, sends), and a hard crash right after a burst of 3 to 6 folder operations by the
// node's users returned (their newest log entries then live only in the heads' inline tails
// and the node's records: what the reopened log must restore).
func (run *mailRun) userRestart() {
	var cands []*mailNode
	for _, mn := range run.nodes {
		if len(mn.users) > 0 && mn.userUp() && !mn.doomed {
			cands = append(cands, mn)
		}
	}
	if len(cands) == 0 {
		return
	}
	mn := cands[run.opRng.IntN(len(cands))]
	kind := run.churn.userRestarts % 2
	run.churn.userRestarts++
	down := run.userDowntime()
	restartLater := func() {
		run.ring.net.AfterFunc(down, func() { run.processRestart(mn) })
	}
	if kind == 0 {
		delay := time.Duration(run.opRng.Int64N(int64(3 * time.Second)))
		mn.doomed = true // no other restart picks it meanwhile; its users keep working
		gen := mn.gen
		run.ring.net.AfterFunc(delay, func() {
			if mn.gen != gen || !mn.sn.alive {
				mn.doomed = false
				return
			}
			run.crashUserNode(mn, false)
			restartLater()
		})
		return
	}
	burst := 3 + run.opRng.IntN(4)
	for i := 0; i < burst; i++ {
		run.folderOpOn(mn.users[run.opRng.IntN(len(mn.users))])
	}
	if !mn.sn.alive || mn.restarting {
		return // it went down during the burst (churn does not touch users' nodes; defensive)
	}
	run.crashUserNode(mn, true)
	restartLater()
}

// activityPlan spreads folder operations and users' restarts evenly over steps.
type activityPlan struct {
	ops, restarts []int // per step
}

func (run *mailRun) planActivity(steps, ops, restarts int) activityPlan {
	p := activityPlan{ops: make([]int, steps), restarts: make([]int, steps)}
	if steps == 0 {
		return p
	}
	for k := 0; k < ops; k++ {
		p.ops[int((float64(k)+0.5)*float64(steps)/float64(ops))]++
	}
	for k := 0; k < restarts; k++ {
		p.restarts[int((float64(k)+0.5)*float64(steps)/float64(restarts))]++
	}
	return p
}

// activity runs step i of a plan: its folder operations, then its restarts.
func (run *mailRun) activity(p activityPlan, i int) {
	if i >= len(p.ops) {
		return
	}
	for k := 0; k < p.ops[i]; k++ {
		run.folderStep()
	}
	for k := 0; k < p.restarts[i]; k++ {
		run.userRestart()
	}
}

// settle waits until churn has stopped bringing nodes down and back and every user's node is
// up with its users started, then lets maintenance run.
func (run *mailRun) settle() {
	r := run.ring
	for wait := 0; wait < 600; wait++ {
		up := run.churn.down == 0
		for _, su := range run.users {
			if su.u == nil || !su.node.sn.alive {
				up = false
			}
		}
		if up {
			break
		}
		r.net.RunFor(time.Second)
	}
	r.net.RunFor(2 * time.Minute)
	run.progress(fmt.Sprintf("settled: %d churn sessions ended (%d restarts, %d replaced)", run.churn.sessions, run.churn.restarts, run.churn.replaced))
}

// restartAllUsers gives every user's node a final process restart, a few nodes at a time,
// so that the audit reads every log as reopened from the ring and the node's records.
func (run *mailRun) restartAllUsers() {
	r := run.ring
	var hosts []*mailNode
	for _, mn := range run.nodes {
		if len(mn.users) > 0 {
			hosts = append(hosts, mn)
		}
	}
	batch := run.maxChurnDown()
	for i := 0; i < len(hosts); i += batch {
		part := hosts[i:min(i+batch, len(hosts))]
		for _, mn := range part {
			run.crashUserNode(mn, false)
		}
		r.net.RunFor(10 * time.Second)
		for _, mn := range part {
			run.processRestart(mn)
		}
		for wait := 0; wait < 300; wait++ {
			up := true
			for _, mn := range part {
				up = up && mn.userUp()
			}
			if up {
				break
			}
			r.net.RunFor(time.Second)
		}
		r.net.RunFor(5 * time.Second)
	}
	r.net.RunFor(time.Minute)
	run.progress(fmt.Sprintf("final restart of %d users' nodes done", len(hosts)))
}
