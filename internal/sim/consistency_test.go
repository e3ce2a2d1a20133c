package sim

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
)

// Deterministic reproductions of issue 11: acknowledged log entries lost after churn and a
// PROCESS restart of the writer's node. A process restart keeps what is on the node's disk
// (its PAST store and its users' received journals) and nothing in memory: the node gets a
// fresh overlay node, PAST, Scribe and POST node, and each user is started anew with
// AddUser(fresh=false), not Resume. The tests check outcomes only: every append that got a
// success callback is in the log exactly once, after every restart, and also when the log is
// read from the ring alone.

// consistencyCase is one log of one scenario under one seed.
type consistencyCase struct {
	log  string
	seed uint64
}

// runCases runs scenario once per case, as subtests named after the log.
func runCases(t *testing.T, cases []consistencyCase, scenario func(t *testing.T, log string, seed uint64)) {
	for _, tc := range cases {
		t.Run(tc.log, func(t *testing.T) { scenario(t, tc.log, tc.seed) })
	}
}

// Issue 11, first loss, through a copy on the writer's own node: a stale head copy, a
// writer restart and a refused head write.
//
// The writer's node W is the 4th closest to the log head: when two of the head's three
// replicas crash it becomes a replica and stores the head; when they come back it is not a
// replica any more and keeps that version (until PAST's DropGrace). After more appends W
// restarts as a process and opens the log. Today W's own stale copy answers the lookup
// (past.Node.Forward runs on the origin too), the log opens from the old head, the next head
// write is refused as stale ("sequence N is not above the stored M"), the writer retries with
// seq+1 on the same stale state until it passes the stored sequence and overwrites the newer
// head: the entries in between are gone from the ring for good.
func TestConsistencyStaleReplicaWriterRestart(t *testing.T) {
	runCases(t, []consistencyCase{{post.InboxLog, 1101}, {"Work", 1102}}, staleReplicaScenario)
}

// Issue 11, first loss, through the root: the root of the log head misses one head write
// (its store message is lost; the other two replicas acknowledge) and keeps the older
// version; no leaf set changes, so nothing repairs it before the next periodic maintenance
// round. The writer's node, near the head but never one of its replicas, restarts as a
// process; its lookup goes straight to the root, which today answers alone from its stale
// copy (past onLookup), so the log opens without the last entry, and the next head write,
// refused by the two up-to-date replicas and accepted by the root, is retried with seq+1
// until it overwrites the newer head.
func TestConsistencyStaleRootWriterRestart(t *testing.T) {
	runCases(t, []consistencyCase{{post.InboxLog, 1105}, {"Work", 1106}}, staleRootScenario)
}

// Issue 11, second loss: the inline tail. The writer's process dies right after a head
// write was acknowledged and before the entries it carries inline were stored on their own
// (their inserts die with the process). It restarts, opens the log from that head and
// appends more. Today OpenLog does not restore the inline tail, the next head drops those
// entries, they exist nowhere, and the replay after the next restart fails for good
// ("replay log INBOX: entry N: past lookup …: object not found").
func TestConsistencyInlineTailWriterRestart(t *testing.T) {
	runCases(t, []consistencyCase{{post.InboxLog, 1103}, {"Work", 1104}}, inlineTailScenario)
}

func staleReplicaScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 1
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	r1, r2, wn := order[0], order[1], order[3]
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, log, key)
	t.Logf("seed %d: head %s of %s: writer n%d (rank 3), replicas n%d n%d n%d", seed, key, log, wn.sn.idx, r1.sn.idx, r2.sn.idx, order[2].sn.idx)
	lg := &ledger{name: log}
	net := w.run.ring.net

	w.appendN(u, lg, "A", 3)
	// Two of the three replicas die: W (rank 3) and rank 4 take over the head.
	w.run.crash(r1)
	w.run.crash(r2)
	net.RunFor(time.Minute)
	w.appendN(u, lg, "B", 4)
	t.Logf("seed %d: after B, two replicas down: %s", seed, w.headCopies(key))
	// They come back with their disks and are the replica set again; W is not.
	w.run.restart(r1)
	w.run.restart(r2)
	net.RunFor(time.Minute)
	w.appendN(u, lg, "C", 6)
	net.RunFor(10 * time.Second)
	t.Logf("seed %d: after C: %s", seed, w.headCopies(key))
	w.checkLedger(u, lg, "before the writer's restart")

	w.restartWriter(wn, u, log, key, "restart 1")
	// Appends after the restart (today: refused as stale, retried with seq+1 until one
	// passes the stored sequence).
	if w.checkLedger(u, lg, "after restart 1") >= 0 {
		w.appendN(u, lg, "D", 2)
	}
	net.RunFor(10 * time.Second)
	t.Logf("seed %d: after D: %s", seed, w.headCopies(key))
	w.restartWriter(wn, u, log, key, "restart 2")
	w.checkLedger(u, lg, "after restart 2")
	w.readFromRing(u, wn, lg, key)
}

func staleRootScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 3
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	// The writer's node is near the head (the key lies in its leaf set's range, so its
	// lookups go straight to the root) but never one of its replicas.
	root, wn := order[0], order[6]
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, log, key)
	t.Logf("seed %d: head %s of %s: writer n%d (rank 6), root n%d", seed, key, log, wn.sn.idx, root.sn.idx)
	lg := &ledger{name: log}
	net := w.run.ring.net

	net.RunFor(2 * time.Minute) // the ring's join-time maintenance rounds are over
	w.appendN(u, lg, "A", 3)
	// The next head write goes straight to the replica set the writer located
	// (LocateCacheTTL). The root is cut off for that instant only: its store message is
	// lost and nothing else.
	root.sn.ep.SetPartition(1)
	w.appendOne(u, lg, log+" B 0", func() { root.sn.ep.SetPartition(0) })
	net.RunFor(20 * time.Second)
	t.Logf("seed %d: the root missed one head write: %s", seed, w.headCopies(key))
	w.checkLedger(u, lg, "before the writer's restart")

	w.restartWriter(wn, u, log, key, "restart 1")
	if w.checkLedger(u, lg, "after restart 1") >= 0 {
		w.appendN(u, lg, "C", 2)
	}
	net.RunFor(10 * time.Second)
	t.Logf("seed %d: after C: %s", seed, w.headCopies(key))
	w.restartWriter(wn, u, log, key, "restart 2")
	w.checkLedger(u, lg, "after restart 2")
	w.readFromRing(u, wn, lg, key)
}

func inlineTailScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 2
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	wn := order[len(order)-1] // far from the head: no copy of it on the writer's node
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, log, key)
	lg := &ledger{name: log}
	net := w.run.ring.net

	w.appendN(u, lg, "A", 4)
	net.RunFor(10 * time.Second) // these are stored on their own

	// A burst; the process dies at the acknowledgement of its last head write, while the
	// entries' own inserts are in flight.
	const burst = 3
	crashed := false
	for i := 0; i < burst; i++ {
		body := fmt.Sprintf("%s B %d", log, i)
		last := i == burst-1
		u.u.Append(log, []byte(body), func(_ uint64, err error) {
			if err != nil {
				lg.failed++
				return
			}
			lg.acked = append(lg.acked, body)
			if last && !crashed {
				crashed = true
				w.run.crash(wn)
			}
		})
	}
	w.wait(time.Minute, func() bool { return crashed })
	if !crashed {
		w.fail("the burst was never acknowledged")
	}
	t.Logf("seed %d: writer n%d died with %d entries acknowledged; head copies: %s", seed, wn.sn.idx, len(lg.acked), w.headCopies(key))

	w.restartWriter(wn, u, log, key, "restart 1")
	if w.checkLedger(u, lg, "after restart 1") >= 0 {
		w.appendN(u, lg, "C", 2)
	}
	net.RunFor(30 * time.Second)
	w.restartWriter(wn, u, log, key, "restart 2")
	// Once more: a restart must not make a readable log unreadable later.
	if w.checkLedger(u, lg, "after restart 2") >= 0 {
		w.appendN(u, lg, "D", 1)
		w.restartWriter(wn, u, log, key, "restart 3")
		w.checkLedger(u, lg, "after restart 3")
	}
	w.readFromRing(u, wn, lg, key)
}

// newConsistencyWorld is a 30-node ring with POST's production snapshot interval (a
// snapshot taken soon after a loss would hide it) and POST's warnings in the test log.
func newConsistencyWorld(t *testing.T, seed uint64) *world {
	t.Helper()
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return newWorldCfg(t, seed, 30, cfg)
}

// userKeys are the keys world.addUser gives the user with this serial: the test needs them
// before the user exists, to place the user's node relative to a log head.
func userKeys(serial uint64) *identity.Keys {
	keys, _ := identity.NewKeys(rand.NewChaCha8([32]byte{byte(serial)}))
	return keys
}

// logHeadKey is where a user's log head lives (post's headKey).
func (w *world) logHeadKey(keys *identity.Keys, name string) ids.Key {
	return past.SignedKey(w.run.ringID, keys.Public().Signing, []byte("epost/v1/log/"+name))
}

// startLog creates the log unless it is INBOX (AddUser made that) and checks that its head
// is where logHeadKey says.
func (w *world) startLog(su *simUser, name string, key ids.Key) {
	w.t.Helper()
	if name != post.InboxLog {
		var err error
		done := false
		su.u.CreateLog(name, func(e error) { err, done = e, true })
		w.wait(time.Minute, func() bool { return done })
		if !done || err != nil {
			w.fail("create %s: done=%v %v", name, done, err)
		}
	}
	if h, err := su.u.Head(name); err != nil || h.Key != key {
		w.fail("head of %s is %v (%v), computed %v", name, h.Key, err, key)
	}
}

func (w *world) sortByCloseness(nodes []*mailNode, key ids.Key) {
	slices.SortFunc(nodes, func(a, b *mailNode) int {
		if ids.Closer(key.ID, a.sn.ep.ID(), b.sn.ep.ID()) {
			return -1
		}
		return 1
	})
}

// byCloseness lists the live nodes, closest to key first (the simulator's global truth: the
// first three are the key's replica set).
func (w *world) byCloseness(key ids.Key) []*mailNode {
	var out []*mailNode
	for _, mn := range w.run.nodes {
		if mn.sn.alive && mn.sn.ready {
			out = append(out, mn)
		}
	}
	w.sortByCloseness(out, key)
	return out
}

// headCopies describes every stored copy of key (diagnostics): node, rank by closeness among
// all nodes, up or down, sequence number.
func (w *world) headCopies(key ids.Key) string {
	all := slices.Clone(w.run.nodes)
	w.sortByCloseness(all, key)
	var parts []string
	for rank, mn := range all {
		if meta, err := mn.st.Meta(key); err == nil {
			state := "up"
			if !mn.sn.alive {
				state = "down"
			}
			parts = append(parts, fmt.Sprintf("n%d(rank %d, %s)=seq %d", mn.sn.idx, rank, state, meta.Seq))
		}
	}
	return strings.Join(parts, " ")
}

// ledger is what a test appended to one log and what the writer acknowledged.
type ledger struct {
	name    string
	acked   []string // bodies whose Append got a success callback
	failed  int      // Append answered with an error (need not be in the log)
	pending int      // never answered
}

// appendN appends n entries labelled label to the log, one at a time (each its own head
// write).
func (w *world) appendN(su *simUser, lg *ledger, label string, n int) {
	w.t.Helper()
	for i := 0; i < n; i++ {
		w.appendOne(su, lg, fmt.Sprintf("%s %s %d", lg.name, label, i), nil)
	}
}

// appendOne appends body and waits up to a minute for the answer; sent, if set, runs right
// after the Append call, before the network moves on.
func (w *world) appendOne(su *simUser, lg *ledger, body string, sent func()) {
	w.t.Helper()
	done := false
	su.u.Append(lg.name, []byte(body), func(_ uint64, err error) {
		done = true
		if err != nil {
			lg.failed++
			w.t.Logf("seed %d: append %q: %v", w.seed, body, err)
			return
		}
		lg.acked = append(lg.acked, body)
	})
	if sent != nil {
		sent()
	}
	w.wait(time.Minute, func() bool { return done })
	if !done {
		lg.pending++
		w.t.Logf("seed %d: append %q not answered within a minute", w.seed, body)
	}
}

// checkLedger reports (t.Errorf: the scenario goes on) every acknowledged entry the log lacks
// or holds more than once, as su's node sees the log now. It returns how many are lost, or -1
// when the log cannot be read at all.
func (w *world) checkLedger(su *simUser, lg *ledger, when string) int {
	w.t.Helper()
	if su.u == nil {
		w.t.Errorf("seed %d: %s: %s is not started: %d acknowledged entries of %s unreadable", w.seed, when, su.addr, len(lg.acked), lg.name)
		return -1
	}
	es, err := su.u.Entries(lg.name, 0)
	if err != nil {
		w.t.Errorf("seed %d: %s: log %s unreadable (%v): %d acknowledged entries", w.seed, when, lg.name, err, len(lg.acked))
		return -1
	}
	count := map[string]int{}
	for _, e := range es {
		count[string(e)]++
	}
	var lost, dup []string
	for _, b := range lg.acked {
		switch c := count[b]; {
		case c == 0:
			lost = append(lost, b)
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s (x%d)", b, c))
		}
	}
	if len(lost) > 0 || len(dup) > 0 {
		w.t.Errorf("seed %d: %s: log %s has %d entries; of %d acknowledged, %d lost %q, %d duplicated %q",
			w.seed, when, lg.name, len(es), len(lg.acked), len(lost), lost, len(dup), dup)
	} else {
		w.t.Logf("seed %d: %s: log %s holds all %d acknowledged entries once (%d entries)", w.seed, when, lg.name, len(lg.acked), len(es))
	}
	return len(lost)
}

// restartWriter restarts the writer's node as a process (10 s down) and opens the log again
// (AddUser opens root and INBOX; another log needs OpenLog), reporting what failed.
func (w *world) restartWriter(mn *mailNode, su *simUser, log string, key ids.Key, when string) {
	w.t.Helper()
	for _, err := range w.restartProcess(mn, 10*time.Second, 2*time.Minute) {
		w.t.Errorf("seed %d: %s: %s: %v", w.seed, when, su.addr, err)
	}
	if su.u == nil {
		return
	}
	if log != post.InboxLog {
		if err := w.openLog(su, log); err != nil {
			w.t.Errorf("seed %d: %s: %v", w.seed, when, err)
			return
		}
	}
	if h, err := su.u.Head(log); err == nil {
		w.t.Logf("seed %d: %s: opened %s at seq %d, %d entries; head copies: %s", w.seed, when, log, h.Seq, h.Count, w.headCopies(key))
	}
}

// restartProcess restarts mn as a process: it crashes (unless down already), stays down for
// down, and comes back with the same id, its PAST store and its users' journals (its disk),
// but a new overlay node, PAST, Scribe and POST node; once its overlay node is ready each of
// its users is started anew with AddUser(fresh=false). It waits up to start for the users
// and returns, per user that did not start, why (in the order of mn.users).
func (w *world) restartProcess(mn *mailNode, down, start time.Duration) []error {
	w.t.Helper()
	run, r := w.run, w.run.ring
	if !mn.offline {
		run.crash(mn)
	}
	r.net.RunFor(down)
	sn := mn.sn
	sn.ep.Recover()
	sn.alive = true
	r.dirty = true
	r.startNode(sn, r.nearbyBootstrap(sn.ep))
	run.attach(mn)
	mn.post.RebuildHolderIndex()
	errs := make([]error, len(mn.users))
	for i, su := range mn.users {
		su.u = nil // the old process's memory is gone
		errs[i] = fmt.Errorf("did not start within %v of the restart", start)
	}
	left := len(mn.users)
	started := false
	prev := sn.drv.OnEvent
	sn.drv.OnEvent = func(e pastry.Event) {
		prev(e)
		if e.Kind != pastry.EventReady || started {
			return
		}
		started = true
		mn.offline = false
		mn.backs = append(mn.backs, r.net.Elapsed())
		for i, su := range mn.users {
			mn.post.AddUser(su.keys, su.rec, false, func(u *post.User, err error) {
				left--
				su.u, errs[i] = u, err
			})
		}
	}
	w.wait(start, func() bool { return started && left == 0 })
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// openLog opens a log of su's, waiting up to a minute.
func (w *world) openLog(su *simUser, name string) error {
	var err error
	done := false
	su.u.OpenLog(name, func(e error) { err, done = e, true })
	w.wait(time.Minute, func() bool { return done })
	if !done {
		return fmt.Errorf("open log %s: no answer within a minute", name)
	}
	return err
}

// readFromRing stops the writer's node and opens the user on the node farthest from the
// head, given only the user's keys (the disk-loss recovery): the ring alone must give every
// acknowledged entry too.
func (w *world) readFromRing(su *simUser, writer *mailNode, lg *ledger, key ids.Key) {
	w.t.Helper()
	if !writer.offline {
		w.run.crash(writer)
	}
	w.run.ring.net.RunFor(time.Minute)
	far := w.byCloseness(key)
	other := far[len(far)-1]
	when := fmt.Sprintf("read from the ring on n%d", other.sn.idx)
	var u *post.User
	var err error
	done := false
	other.post.AddUser(su.keys, su.rec, false, func(x *post.User, e error) { u, err, done = x, e, true })
	w.wait(2*time.Minute, func() bool { return done })
	if !done || err != nil {
		w.t.Errorf("seed %d: %s: user start done=%v %v", w.seed, when, done, err)
		return
	}
	ru := &simUser{addr: su.addr, keys: su.keys, rec: su.rec, node: other, u: u}
	if lg.name != post.InboxLog {
		if err := w.openLog(ru, lg.name); err != nil {
			w.t.Errorf("seed %d: %s: %v", w.seed, when, err)
			return
		}
	}
	w.checkLedger(ru, lg, when)
}

// The writer's record is the one complete copy: every replica of the log's head dies with its
// disk (replaced, never back) right after the writer's last acknowledged append, and the
// writer restarts. The ring has no head at all now (its entries, stored on their own, are
// still there); without the writer's own record of its last head the log could not be opened
// again (checked: with MailConfig.NoHeadRecords this test fails). With it the log opens from
// the record, is written back into the ring, and a node given only the user's keys finds
// every entry afterwards.
func TestConsistencyHeadLostFromTheRing(t *testing.T) {
	runCases(t, []consistencyCase{{post.InboxLog, 1107}, {"Work", 1108}}, headLostScenario)
}

func headLostScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 5
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	wn := order[12] // far from the head: never one of its replicas
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, log, key)
	lg := &ledger{name: log}
	net := w.run.ring.net
	w.appendN(u, lg, "A", 5)
	net.RunFor(10 * time.Second) // entries stored on their own
	for _, mn := range order[:3] {
		w.run.crash(mn)
		mn.st = past.NewMemStore(net.Now, time.Hour) // the disk is gone with it
	}
	net.RunFor(30 * time.Second)
	t.Logf("seed %d: every replica of the head died with its disk: copies now: %q", seed, w.headCopies(key))
	w.restartWriter(wn, u, log, key, "restart")
	net.RunFor(10 * time.Second)
	t.Logf("seed %d: head copies after the restart: %s", seed, w.headCopies(key))
	if w.checkLedger(u, lg, "after the restart") >= 0 {
		w.appendN(u, lg, "B", 2)
	}
	w.readFromRing(u, wn, lg, key)
}

// Two writers of one log (the same user started on two nodes, as after a disk-loss recovery
// while the old node still runs): they append at the same moment, so heads at one sequence
// number with different entries reach different replicas. Each writer, refused as stale, is
// shown the other's head and continues from it; where neither head extends the other (a
// fork) the other side's entries are appended again. In the end a reader finds every entry
// either writer had acknowledged, exactly once.
//
// Seeds 3002 to 3037 each failed before the merge was fixed (2026-12-06): entries a writer
// had acknowledged were lost when a merge, begun before its next head committed, was
// installed after it (3011, 3037), and entries were filed twice when the other writer had
// merged them from a refused head of ours that a replica kept (3002, 3017).
func TestConsistencyTwoWritersMerge(t *testing.T) {
	runCases(t, []consistencyCase{{"Work", 1109}, {"Work", 1110}, {"Work", 1111},
		{"Work", 3002}, {"Work", 3011}, {"Work", 3017}, {"Work", 3037}}, twoWritersScenario)
}

func twoWritersScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 6
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	a := w.addUser(order[8].sn.idx, "u@sim.example", serial)
	w.startLog(a, log, key)
	lg := &ledger{name: log}
	w.appendN(a, lg, "A", 2)
	// The same user on a second node.
	bn := order[14]
	b := &simUser{addr: a.addr, keys: a.keys, rec: a.rec, node: bn}
	done := false
	bn.post.AddUser(b.keys, b.rec, false, func(u *post.User, err error) {
		done = true
		if err != nil {
			w.fail("second writer: %v", err)
		}
		b.u = u
	})
	w.wait(time.Minute, func() bool { return done })
	if err := w.openLog(b, log); err != nil {
		w.fail("second writer: %v", err)
	}
	net := w.run.ring.net
	pending := 0
	for round := 0; round < 6; round++ {
		for _, su := range []*simUser{a, b} {
			body := fmt.Sprintf("%s n%d %d", log, su.node.sn.idx, round)
			pending++
			su.u.Append(log, []byte(body), func(_ uint64, err error) {
				pending--
				if err != nil {
					lg.failed++
					return
				}
				lg.acked = append(lg.acked, body)
			})
		}
		net.RunFor(50 * time.Millisecond)
	}
	w.wait(2*time.Minute, func() bool { return pending == 0 })
	net.RunFor(30 * time.Second)
	var forks, absorbed uint64
	for _, mn := range []*mailNode{order[8], bn} {
		st := mn.post.Stats()
		forks += st.Forks
		absorbed += st.Absorbed
	}
	t.Logf("seed %d: %d acknowledged, %d failed, %d never answered; writers continued from the other's head %d times, merged %d forks; head copies: %s",
		seed, len(lg.acked), lg.failed, pending, absorbed, forks, w.headCopies(key))
	if absorbed == 0 {
		t.Errorf("seed %d: the writers never met each other's heads: the test did not test", seed)
	}
	w.run.crash(bn) // one reader at the end: the ring alone
	w.readFromRing(a, order[8], lg, key)
}

// A true fork: the same user runs on two nodes on the two sides of a network partition, and
// each side writes the log to the replica set it sees. When the partition heals, the two
// heads share a prefix and then differ. The writers detect it (a refused write shows the other
// head, neither extends the other), log it, and merge: the entries of the losing side are
// appended again after the winner's. A reader then finds every acknowledged entry of both
// sides exactly once.
func TestConsistencyForkAfterPartition(t *testing.T) {
	runCases(t, []consistencyCase{{"Work", 1112}, {"Work", 1113}}, forkScenario)
}

func forkScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 7
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	an, bn := order[20], order[14]
	a := w.addUser(an.sn.idx, "u@sim.example", serial)
	w.startLog(a, log, key)
	lg := &ledger{name: log}
	w.appendN(a, lg, "A", 2)
	b := &simUser{addr: a.addr, keys: a.keys, rec: a.rec, node: bn}
	done := false
	bn.post.AddUser(b.keys, b.rec, false, func(u *post.User, err error) { done, b.u = true, u })
	w.wait(time.Minute, func() bool { return done })
	if b.u == nil || w.openLog(b, log) != nil {
		w.fail("second writer did not start")
	}
	net := w.run.ring.net
	side := append([]*mailNode{bn}, order[3:10]...)
	for _, mn := range side {
		mn.sn.ep.SetPartition(1)
	}
	net.RunFor(3 * time.Minute) // each side's leaf sets drop the other side
	w.appendN(a, lg, "side0", 3)
	w.appendN(b, lg, "side1", 3)
	for _, mn := range side {
		mn.sn.ep.SetPartition(0)
	}
	net.RunFor(15 * time.Minute) // partition healing, maintenance
	w.appendN(b, lg, "after-b", 1)
	w.appendN(a, lg, "after-a", 1)
	w.appendN(b, lg, "after-b2", 1)
	net.RunFor(time.Minute)
	var forks, absorbed uint64
	for _, mn := range []*mailNode{an, bn} {
		st := mn.post.Stats()
		forks += st.Forks
		absorbed += st.Absorbed
	}
	t.Logf("seed %d: %d acknowledged; writers continued from the other's head %d times, merged %d forks; head copies: %s",
		seed, len(lg.acked), absorbed, forks, w.headCopies(key))
	if forks == 0 {
		t.Errorf("seed %d: no fork was met: the test did not test", seed)
	}
	// The last writer has met every head; the other sees the last append only at its next
	// write or start (a writer does not poll).
	w.checkLedger(b, lg, "writer b, the last to write")
	w.run.crash(bn)
	w.readFromRing(a, an, lg, key)
}

// Snapshots are chains of segments merged like a binary counter: after many snapshots the
// chain stays short, a restarted writer and a reader from the ring alone get every entry
// back, and no snapshot rewrote the whole log each time.
func TestLogSnapshotSegments(t *testing.T) {
	const seed = 1114
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.SnapshotEvery = 4
	w := newWorldCfg(t, seed, 30, cfg)
	const serial = 8
	key := w.logHeadKey(userKeys(serial), "Work")
	order := w.byCloseness(key)
	wn := order[10]
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, "Work", key)
	lg := &ledger{name: "Work"}
	w.appendN(u, lg, "A", 70)
	w.run.ring.net.RunFor(10 * time.Second)
	h, err := u.u.Head("Work")
	if err != nil {
		t.Fatal(err)
	}
	segs := u.u.SnapshotSegments("Work")
	t.Logf("seed %d: %d entries, snapshot at %d in %d segments %v, %d snapshots written", seed, h.Count, h.SnapshotIndex, len(segs), segs, wn.post.Stats().Snapshots)
	if h.SnapshotIndex < 60 || len(segs) == 0 || len(segs) > 6 {
		t.Errorf("seed %d: snapshot at %d in %d segments: want a recent snapshot in a short chain", seed, h.SnapshotIndex, len(segs))
	}
	w.restartWriter(wn, u, "Work", key, "restart")
	w.checkLedger(u, lg, "after the restart")
	if got := u.u.SnapshotSegments("Work"); len(got) != len(segs) {
		t.Errorf("seed %d: the reopened log knows %d segments, the writer had %d", seed, len(got), len(segs))
	}
	w.appendN(u, lg, "B", 9)
	w.readFromRing(u, wn, lg, key)
}
