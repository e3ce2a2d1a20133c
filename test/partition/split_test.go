package partition

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestSplitFiveFour splits a 9-node ring 5/4 while six users (three on each side) mail each
// other and flag messages, holds the split (-partition.split, 60 s by default), heals it and
// audits: every message that got a 250 is in its recipient's INBOX exactly once, every flag
// that got an OK is there, no INBOX was seen to fork (UIDVALIDITY, UIDs, vanished messages;
// and no node logged a FORK), and every leaf set is exact again. The split must show: each
// side's leaf sets hold only that side's nodes. With -soak D the ring is split again (a new
// random 5/4 grouping each time) and healed until D has passed.
func TestSplitFiveFour(t *testing.T) {
	requireNetns(t)
	begin := time.Now()
	nw := newNetwork(t, 9)
	// alice, bob, carol on nodes 2-4 (side A: nodes 1-5); dave, erin, frank on nodes 6-8
	// (side B: nodes 6-9). Node 1 founded the ring and serves no user.
	r := newRing(t, nw, map[string]int{"alice": 1, "bob": 2, "carol": 3, "dave": 5, "erin": 6, "frank": 7})
	t.Logf("ring ready %v after the start", time.Since(begin).Round(time.Second))

	obs := startObserver(r, 3*time.Second)
	w := startWorkload(r, *flagRate)
	time.Sleep(10 * time.Second)

	a, b := []int{0, 1, 2, 3, 4}, []int{5, 6, 7, 8}
	var leafProblems string
	soakEnd := time.Now().Add(*flagSoak)
	for cycle := 1; ; cycle++ {
		w.setPhase(fmt.Sprintf("split%d", cycle))
		splitAt := time.Now()
		nw.Split(a, b)
		took, p := r.waitLeafSets(45*time.Second, a, b)
		if p != "" {
			t.Fatalf("seed %d: cycle %d: 45 s after the split the leaf sets do not show it (each side should hold only its own nodes):%s", r.seed, cycle, p)
		}
		t.Logf("cycle %d: split %v | %v: each side's leaf sets hold only its own nodes after %v", cycle, names(a), names(b), took.Round(100*time.Millisecond))
		time.Sleep(time.Until(splitAt.Add(*flagSplit)))

		w.setPhase(fmt.Sprintf("heal%d", cycle))
		nw.HealAll()
		took, leafProblems = r.waitLeafSets(90*time.Second, r.all())
		if leafProblems != "" {
			t.Errorf("seed %d: cycle %d: leaf sets not exact 90 s after the heal:%s", r.seed, cycle, leafProblems)
			break
		}
		t.Logf("cycle %d: healed after %v split; leaf sets exact %v after the heal", cycle, time.Since(splitAt).Round(time.Second)-took.Round(time.Second), took.Round(100*time.Millisecond))
		if *flagSoak == 0 || time.Now().After(soakEnd) {
			break
		}
		time.Sleep(10 * time.Second)
		perm := r.rng.Perm(len(r.nodes))
		a, b = slices.Sorted(slices.Values(perm[:5])), slices.Sorted(slices.Values(perm[5:]))
	}
	w.setPhase("after")
	time.Sleep(10 * time.Second)
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
		t.Fatalf("seed %d: the ring did not withstand the split:\n%s%s", r.seed, res.line(), res.details(20))
	}
	if res.acked == 0 {
		t.Fatalf("seed %d: no submission was acknowledged; the workload did not run", r.seed)
	}
}

// names is node indexes as node names (node1 is index 0).
func names(idx []int) string {
	s := ""
	for k, i := range idx {
		if k > 0 {
			s += ","
		}
		s += fmt.Sprintf("%d", i+1)
	}
	return "nodes " + s
}
