package sim

import (
	"testing"
	"time"
)

// A log's entries are stored in segments, several to one object, and the head names them: a
// restarted writer and a reader given only the user's keys get every entry back through
// them, and no entry was stored on its own.
func TestLogEntrySegments(t *testing.T) {
	const seed = 1116
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.EntryBatch = 8
	cfg.Post.SnapshotEvery = 50
	w := newWorldCfg(t, seed, 30, cfg)
	const serial = 9
	key := w.logHeadKey(userKeys(serial), "Work")
	order := w.byCloseness(key)
	wn := order[11]
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, "Work", key)
	lg := &ledger{name: "Work"}
	w.appendN(u, lg, "A", 75) // a snapshot at 50, segments above it
	w.run.ring.net.RunFor(10 * time.Second)
	st := wn.post.Stats()
	segs := u.u.EntrySegments("Work")
	h, err := u.u.Head("Work")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d: %d entries, snapshot at %d, %d entry segments stored, %d entries alone; the head names segments of %v",
		seed, h.Count, h.SnapshotIndex, st.EntrySegments, st.EntriesAlone, segs)
	if st.EntrySegments == 0 || st.EntriesAlone != 0 || len(segs) == 0 {
		t.Errorf("seed %d: want entries in segments only, and the head naming some", seed)
	}
	for _, c := range segs {
		if c < 1 || c > 8 {
			t.Errorf("seed %d: a segment of %d entries (EntryBatch 8)", seed, c)
		}
	}
	w.restartWriter(wn, u, "Work", key, "restart")
	w.checkLedger(u, lg, "after the restart")
	w.appendN(u, lg, "B", 9)
	w.run.ring.net.RunFor(10 * time.Second)
	w.readFromRing(u, wn, lg, key)
}

// A log written slowly stores small segments (one entry each here); once the head names
// snapAtSegs of them a snapshot takes them in, long before SnapshotEvery entries, so heads
// stay small.
func TestLogSmallSegmentsCallForASnapshot(t *testing.T) {
	const seed = 1117
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.EntryBatch = 1
	cfg.Post.SnapshotEvery = 500
	w := newWorldCfg(t, seed, 30, cfg)
	const serial = 10
	key := w.logHeadKey(userKeys(serial), "Work")
	wn := w.byCloseness(key)[9]
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, "Work", key)
	lg := &ledger{name: "Work"}
	w.appendN(u, lg, "A", 150)
	w.run.ring.net.RunFor(10 * time.Second)
	h, err := u.u.Head("Work")
	if err != nil {
		t.Fatal(err)
	}
	segs := u.u.EntrySegments("Work")
	t.Logf("seed %d: %d entries, snapshot at %d, %d snapshots, the head names %d segments", seed, h.Count, h.SnapshotIndex, wn.post.Stats().Snapshots, len(segs))
	if h.SnapshotIndex < 64 || len(segs) > 70 {
		t.Errorf("seed %d: want a snapshot taking the small segments in", seed)
	}
	w.readFromRing(u, wn, lg, key)
}
