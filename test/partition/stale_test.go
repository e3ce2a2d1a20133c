package partition

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// snapshotAge is how much older than the moment of its stop dave's restored disk is.
const snapshotAge = 30 * time.Second

// quietBeforeKill is how long before the kill whose disk is rolled back the observer stops
// changing flags in dave's INBOX: a flag change acknowledged on the node's own disk reaches
// the ring within post.FilingBatch (300 ms) and one head write.
const quietBeforeKill = 2 * time.Second

// TestStaleDisk stops two users' nodes with SIGKILL while the other users keep mailing them
// and flagging their own messages (the two users' mail clients cannot reach their nodes), keeps
// them down for -partition.stale (60 s by default: with the harness's fast timers the ring has
// re-replicated their objects many times over by then; the scenario, a node that comes
// back after 20 minutes, is -partition.stale 20m), then starts them again from disk:
//   - erin's node from its own disk as the kill left it;
//   - dave's node from a copy of its directory taken 30 s before the kill (a truly stale
//     disk: mail was filed into dave's INBOX and flags were set after the copy, so the folder
//     logs on the ring are newer than the heads the node remembers, and its replicas are older
//     than their replica sets').
//
// Both must rejoin (leaf sets exact), and the audit must find everything that got a 250 in
// its recipient's INBOX exactly once, every flag that got an OK before the stop still set, and
// no fork: no UID reused, no new message below a UID seen before, no message vanished (the
// observer read dave's INBOX between the copy and the kill, so a node that served the stale
// copy's view of the folder would show as one), and UIDVALIDITY unchanged, except dave's,
// which must change once after the restart: the node finds the ring's INBOX newer than its
// own record, so UIDs it showed from its journal just before the kill (the observer reads
// right before it) may be given to other messages (docs/consistency.md, "A disk that goes
// back in time"). The observer stops changing flags quietBeforeKill before that kill: a flag
// change acknowledged on the node's own disk alone in the last moments before a kill is, by
// design, lost with that disk.
func TestStaleDisk(t *testing.T) {
	requireNetns(t)
	begin := time.Now()
	nw := newNetwork(t, 9)
	r := newRing(t, nw, map[string]int{"alice": 1, "bob": 2, "carol": 3, "dave": 5, "erin": 6, "frank": 7})
	dave, erin := r.users[3], r.users[4]
	if dave.name != "dave" || erin.name != "erin" {
		t.Fatalf("users in unexpected order: %s, %s", dave.name, erin.name)
	}
	dn, en := dave.home, erin.home

	obs := startObserver(r, 3*time.Second)
	w := startWorkload(r, *flagRate)
	time.Sleep(8 * time.Second)

	// The copy is taken with the node killed, so that it is what a crash would leave on disk
	// (a copy of a running node's directory could hold a torn file no crash leaves).
	w.setPhase("snapshot")
	snapAt := time.Now()
	_, flagsAtSnap := seenCount(obs, dave)
	dn.Kill9()
	snap := filepath.Join(t.TempDir(), "snapshot")
	if err := copyTree(dn.Dir, snap); err != nil {
		t.Fatalf("copying %s aside: %v", dn.Dir, err)
	}
	dn.Start()
	t.Logf("%s (dave's) directory copied aside, node restarted", dn.Name)
	if took, p := r.waitLeafSets(60*time.Second, r.all()); p != "" {
		t.Fatalf("seed %d: leaf sets not exact 60 s after %s's restart:%s", r.seed, dn.Name, p)
	} else {
		t.Logf("leaf sets exact %v after the restart", took.Round(100*time.Millisecond))
	}
	w.setPhase("since-snapshot")
	time.Sleep(time.Until(snapAt.Add(snapshotAge - quietBeforeKill)))
	// The observer changes no flag in dave's INBOX for the last quietBeforeKill: a
	// rolled-back disk loses the flag changes the node acknowledged on its own disk alone and
	// had not yet written to the ring (docs/consistency.md, "A disk that goes back in time"),
	// and this test checks everything else. Its reads, and mail to dave, go on up to the kill.
	obs.hold(dave)
	time.Sleep(time.Until(snapAt.Add(snapshotAge)))
	seenBefore, flagsBefore := seenCount(obs, dave)
	// A read right before the kill: it sees messages filed in the last moments, shown from
	// dave's journal before the ring has them; the copy forgets them and they are filed
	// again after the restart, after INBOX's new UIDVALIDITY.
	readErr := obs.readNow(dave)
	shown, _ := seenCount(obs, dave)

	w.setPhase("down")
	downAt := time.Now()
	dn.Kill9()
	en.Kill9()
	obs.release(dave)
	sinceSnap := newSince(obs, dave, snapAt)
	t.Logf("%s (dave) and %s (erin) killed; since the copy dave's INBOX showed %d new messages (of %d) and %d flags were set in it (of %d); with a read just before the kill, %d (%v)",
		dn.Name, en.Name, sinceSnap, seenBefore, flagsBefore-flagsAtSnap, flagsBefore, shown, readErr)
	rest := without(without(r.all(), dn.idx), en.idx)
	if took, p := r.waitLeafSets(45*time.Second, rest); p != "" {
		t.Fatalf("seed %d: 45 s after the kills the others' leaf sets still list them:%s", r.seed, p)
	} else {
		t.Logf("the others' leaf sets dropped them after %v", took.Round(100*time.Millisecond))
	}
	time.Sleep(time.Until(downAt.Add(*flagStale)))

	changed, err := changedFiles(snap, dn.Dir)
	if err != nil {
		t.Fatalf("comparing the copy with %s: %v", dn.Dir, err)
	}
	if len(changed) == 0 {
		t.Fatalf("seed %d: %s's directory is as it was when copied: the restored disk would not be stale", r.seed, dn.Name)
	}
	t.Logf("%d files of %s changed since the copy (the restore rolls them back): %s", len(changed), dn.Name, strings.Join(changed[:min(len(changed), 12)], " "))
	if err := os.RemoveAll(dn.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(snap, dn.Dir); err != nil {
		t.Fatal(err)
	}
	w.setPhase("rejoining")
	restartAt := time.Now()
	obs.expectRewind(dave, restartAt, downAt.Add(-quietBeforeKill))
	dn.Start()
	en.Start()
	t.Logf("after %v down: %s started from the copy (%v older than its kill), %s from its own disk",
		time.Since(downAt).Round(time.Second), dn.Name, downAt.Sub(snapAt).Round(time.Second), en.Name)
	took, leafProblems := r.waitLeafSets(90*time.Second, r.all())
	if leafProblems != "" {
		t.Errorf("seed %d: leaf sets not exact 90 s after the restarts:%s", r.seed, leafProblems)
	} else {
		t.Logf("leaf sets exact %v after the restarts", took.Round(100*time.Millisecond))
	}
	w.setPhase("after")
	time.Sleep(8 * time.Second)
	subs := w.finish()
	tracks := obs.finish()
	t.Logf("workload: %s; observer: %d IMAP reads failed", phases(subs), obs.errs)
	if e := firstErrors(subs, 8); e != "" {
		t.Logf("submission errors:%s", e)
	}
	held := map[*user]int{}
	for _, s := range subs {
		if s.phase == "down" && s.result == acked {
			held[s.to]++
		}
	}
	t.Logf("acknowledged while their nodes were down: %d messages to dave, %d to erin", held[dave], held[erin])

	rewound := tracks[dave].rewound
	if rewound.IsZero() {
		t.Errorf("seed %d: dave's INBOX kept its UIDVALIDITY %d after the restart from the old disk: the node did not notice that its disk went back in time", r.seed, tracks[dave].uidValidity)
	} else {
		t.Logf("dave's INBOX showed a new UIDVALIDITY (%d) %v after the restart from the old disk", tracks[dave].uidValidity, rewound.Sub(restartAt).Round(100*time.Millisecond))
	}
	res, waited := auditUntil(r, subs, tracks, 90*time.Second)
	t.Logf("delivery (250 to first seen in INBOX): %s", res.latencies())
	t.Logf("audit waited %v for mail still on its way; whole test %v", waited.Round(time.Second), time.Since(begin).Round(time.Second))
	res.log(t)
	if !res.clean() || leafProblems != "" {
		t.Fatalf("seed %d: the ring did not withstand the stale disks:\n%s%s", r.seed, res.line(), res.details(20))
	}
	if held[dave] == 0 || held[erin] == 0 || sinceSnap == 0 {
		t.Fatalf("seed %d: the scenario did not happen: %d messages to dave and %d to erin acknowledged while down, %d new in dave's INBOX since the copy",
			r.seed, held[dave], held[erin], sinceSnap)
	}
}

// seenCount is how many workload messages the observer has seen in u's INBOX, and how many
// it has flagged there with OK.
func seenCount(o *observer, u *user) (msgs, flags int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.tracks[u].seen), len(o.tracks[u].flagged)
}

// newSince counts the messages the observer first saw in u's INBOX after t.
func newSince(o *observer, u *user, t time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, at := range o.tracks[u].seen {
		if at.After(t) {
			n++
		}
	}
	return n
}

// copyTree copies the directory src to dst (which must not exist): directories, regular files
// and symbolic links, with their modes; sockets and other special files are left out (a killed
// node's control socket is stale anyway).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case d.Type().IsRegular():
			return copyFile(p, to, info.Mode().Perm())
		}
		return nil
	})
}

// changedFiles lists the regular files (relative paths) that differ between the trees old and
// cur: added, removed, or with other contents.
func changedFiles(old, cur string) ([]string, error) {
	files := func(root string) (map[string][]byte, error) {
		m := map[string][]byte{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			m[rel] = b
			return nil
		})
		return m, err
	}
	a, err := files(old)
	if err != nil {
		return nil, err
	}
	b, err := files(cur)
	if err != nil {
		return nil, err
	}
	var out []string
	for p, x := range b {
		if y, ok := a[p]; !ok || !bytes.Equal(x, y) {
			out = append(out, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			out = append(out, p+" (removed)")
		}
	}
	slices.Sort(out)
	return out, nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
