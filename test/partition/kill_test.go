package partition

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestKillMinority kills a random minority of a 9-node ring with SIGKILL, again and again,
// while six users mail each other and flag messages, and restarts each killed node from its
// disk a few seconds later: every 3-6 s one to three running nodes are killed (never more than
// three down at once, so a majority always runs; user's home nodes included, node 1 too) and
// each comes back 2-10 s after its kill. The churn lasts -partition.kill (or -soak, if longer);
// then every node runs again, the leaf sets must be exact, and the audit must find every
// message that got a 250 filed exactly once, no folder log forked, no flag that got an OK
// lost. A submission whose connection died before the answer to the end of DATA is uncertain
// (filed at most once), not acknowledged. All choices (when, which, how long) come from the
// seed.
func TestKillMinority(t *testing.T) {
	requireNetns(t)
	begin := time.Now()
	nw := newNetwork(t, 9)
	r := newRing(t, nw, map[string]int{"alice": 1, "bob": 2, "carol": 3, "dave": 5, "erin": 6, "frank": 7})
	t.Logf("ring ready %v after the start", time.Since(begin).Round(time.Second))

	obs := startObserver(r, 3*time.Second)
	w := startWorkload(r, *flagRate)
	time.Sleep(8 * time.Second)

	churn := max(*flagKill, *flagSoak)
	w.setPhase("churn")
	st := r.churnMinority(churn)
	t.Logf("churn for %v: %s", churn, st)

	w.setPhase("healing")
	took, leafProblems := r.waitLeafSets(90*time.Second, r.all())
	if leafProblems != "" {
		t.Errorf("seed %d: leaf sets not exact 90 s after every node ran again:%s", r.seed, leafProblems)
	} else {
		t.Logf("every node running; leaf sets exact %v after the last restart", took.Round(100*time.Millisecond))
	}
	w.setPhase("after")
	time.Sleep(8 * time.Second)
	subs := w.finish()
	tracks := obs.finish()
	t.Logf("workload: %s; observer: %d IMAP reads failed", phases(subs), obs.errs)
	if e := firstErrors(subs, 8); e != "" {
		t.Logf("submission errors:%s", e)
	}

	res, waited := auditUntil(r, subs, tracks, 90*time.Second)
	t.Logf("delivery (250 to first seen in INBOX): %s", res.latencies())
	t.Logf("audit waited %v for mail still on its way; whole test %v", waited.Round(time.Second), time.Since(begin).Round(time.Second))
	res.log(t)
	if !res.clean() || leafProblems != "" {
		t.Fatalf("seed %d: the ring did not withstand the kills:\n%s%s", r.seed, res.line(), res.details(20))
	}
	if res.acked == 0 {
		t.Fatalf("seed %d: no submission was acknowledged; the workload did not run", r.seed)
	}
}

// churnStats counts what churnMinority did.
type churnStats struct {
	kills, homeKills, rounds, maxDown int
	perNode                           []int
}

func (s churnStats) String() string {
	var per []string
	for i, n := range s.perNode {
		per = append(per, fmt.Sprintf("node%d %d", i+1, n))
	}
	return fmt.Sprintf("%d rounds, %d kills (%d of user's home nodes), at most %d nodes down at once; kills per node: %s",
		s.rounds, s.kills, s.homeKills, s.maxDown, strings.Join(per, ", "))
}

// maxDown is the most nodes churnMinority has down at once: three of nine, so five or more
// always run (a majority, and at least two of any object's three replicas' neighbours).
const maxDown = 3

// churnMinority kills and restarts nodes for d (see TestKillMinority) and returns once every
// node runs again. It runs on the test's goroutine: Kill9 and Start may fail the test.
func (r *pring) churnMinority(d time.Duration) churnStats {
	st := churnStats{perNode: make([]int, len(r.nodes))}
	homes := map[int]bool{}
	for _, u := range r.users {
		homes[u.home.idx] = true
	}
	restartAt := map[int]time.Time{} // down node -> when it comes back
	restartDue := func(now time.Time) {
		for _, i := range slices.Sorted(maps.Keys(restartAt)) {
			if !now.Before(restartAt[i]) {
				r.nodes[i].Start()
				delete(restartAt, i)
			}
		}
	}
	end := time.Now().Add(d)
	nextKill := time.Now()
	for {
		now := time.Now()
		restartDue(now)
		if now.After(end) {
			break
		}
		if !now.Before(nextKill) {
			st.rounds++
			var up []int
			for i := range r.nodes {
				if _, down := restartAt[i]; !down {
					up = append(up, i)
				}
			}
			k := min(1+r.rng.IntN(3), maxDown-len(restartAt))
			r.rng.Shuffle(len(up), func(a, b int) { up[a], up[b] = up[b], up[a] })
			for _, i := range up[:max(k, 0)] {
				r.nodes[i].Kill9()
				restartAt[i] = now.Add(2*time.Second + time.Duration(r.rng.Int64N(int64(8*time.Second))))
				st.kills++
				st.perNode[i]++
				if homes[i] {
					st.homeKills++
				}
			}
			st.maxDown = max(st.maxDown, len(restartAt))
			nextKill = now.Add(3*time.Second + time.Duration(r.rng.Int64N(int64(3*time.Second))))
		}
		next := nextKill
		for _, at := range restartAt {
			if at.Before(next) {
				next = at
			}
		}
		time.Sleep(max(time.Until(next), 10*time.Millisecond))
	}
	for len(restartAt) > 0 {
		var next time.Time
		for _, at := range restartAt {
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		time.Sleep(max(time.Until(next), 10*time.Millisecond))
		restartDue(time.Now())
	}
	return st
}
