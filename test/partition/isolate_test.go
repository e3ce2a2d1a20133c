package partition

import (
	"testing"
	"time"
)

// TestIsolateUserNode cuts one user's node off the ring (its link down: it reaches nobody
// and nobody reaches it, the test's mail client included) while the other users keep mailing
// that user (half of their messages), then restores the link: the node rejoins, everything
// that got a 250 arrives exactly once, and the user's INBOX keeps its UIDs in order (a new
// message never below a UID seen before, none reused). The isolation lasts half of
// -partition.split.
func TestIsolateUserNode(t *testing.T) {
	requireNetns(t)
	begin := time.Now()
	nw := newNetwork(t, 9)
	r := newRing(t, nw, map[string]int{"alice": 1, "bob": 2, "carol": 3, "dave": 5, "erin": 6, "frank": 7})
	erin := r.users[4]
	if erin.name != "erin" {
		t.Fatalf("users in unexpected order: %s", erin.name)
	}

	obs := startObserver(r, 3*time.Second)
	w := startWorkload(r, *flagRate)
	w.setFavor(erin)
	time.Sleep(8 * time.Second)

	w.setPhase("isolated")
	cutAt := time.Now()
	nw.Isolate(erin.home.idx)
	rest := without(r.all(), erin.home.idx)
	took, p := r.waitLeafSets(45*time.Second, rest)
	if p != "" {
		t.Fatalf("seed %d: 45 s after %s was isolated the others' leaf sets still list it:%s", r.seed, erin.home.Name, p)
	}
	t.Logf("%s isolated; the others' leaf sets dropped it after %v", erin.home.Name, took.Round(100*time.Millisecond))
	time.Sleep(time.Until(cutAt.Add(*flagSplit / 2)))

	w.setPhase("rejoining")
	nw.Reconnect(erin.home.idx)
	took, leafProblems := r.waitLeafSets(90*time.Second, r.all())
	if leafProblems != "" {
		t.Errorf("seed %d: leaf sets not exact 90 s after %s's link came back:%s", r.seed, erin.home.Name, leafProblems)
	} else {
		t.Logf("link back after %v; leaf sets exact %v later", time.Since(cutAt).Round(time.Second)-took.Round(time.Second), took.Round(100*time.Millisecond))
	}
	w.setPhase("after")
	time.Sleep(8 * time.Second)
	subs := w.finish()
	tracks := obs.finish()
	t.Logf("workload: %s; observer: %d IMAP reads failed", phases(subs), obs.errs)
	if e := firstErrors(subs, 8); e != "" {
		t.Logf("submission errors:%s", e)
	}
	toErin := 0
	for _, s := range subs {
		if s.to == erin && s.result == acked {
			toErin++
		}
	}

	res, waited := auditUntil(r, subs, tracks, 90*time.Second)
	t.Logf("delivery (250 to first seen in INBOX): %s", res.latencies())
	t.Logf("%d acknowledged messages to erin; audit waited %v for mail still on its way; whole test %v", toErin, waited.Round(time.Second), time.Since(begin).Round(time.Second))
	res.log(t)
	if !res.clean() || leafProblems != "" {
		t.Fatalf("seed %d: the ring did not withstand the isolation of %s:\n%s%s", r.seed, erin.home.Name, res.line(), res.details(20))
	}
}

// without is idx less i.
func without(idx []int, i int) []int {
	var out []int
	for _, x := range idx {
		if x != i {
			out = append(out, x)
		}
	}
	return out
}
