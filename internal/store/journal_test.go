package store

import (
	"bytes"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
)

// TestOverlayMatchesModel drives random puts, deletes, expiries, restores and purges through
// the overlay with checkpoints at random moments (a tiny CheckpointBytes) and compares every
// read path with a plain map after each step, including after reopening without Close (the
// journal replayed) and with it.
func TestOverlayMatchesModel(t *testing.T) { testOverlayModel(t, -1) }

// TestValueLogMatchesModel is TestOverlayMatchesModel with most payloads in the value log
// (values.go): checkpoints retire journal files into segments, releases empty them, mostly
// dead ones are compacted, and reopening (after a crash or not) finds every value again.
func TestValueLogMatchesModel(t *testing.T) {
	defer func(n int64) { compactMinBytes = n }(compactMinBytes)
	compactMinBytes = 1 << 10
	testOverlayModel(t, 200)
}

func testOverlayModel(t *testing.T, valueLogMin int) {
	var retired, dropped, compactions int
	defer func() {
		if valueLogMin > 0 && (retired == 0 || dropped == 0 || compactions == 0) {
			t.Errorf("the value log retired %d segments, dropped %d, compacted %d: some path went untested", retired, dropped, compactions)
		}
	}()
	seed := testSeed(t, 21)
	r := rand.New(rand.NewPCG(seed, 3))
	dir := t.TempDir()
	c := &clock{now: t0}
	opts := Options{Now: c.Now, Logger: quietLog, TrashGrace: time.Hour, CheckpointBytes: 2 << 10, ValueLogMin: valueLogMin}
	// Background checkpoints in several parts, so that crashes land between them too.
	defer func(p int, d time.Duration) { checkpointPart, checkpointPause = p, d }(checkpointPart, checkpointPause)
	checkpointPart, checkpointPause = 300, time.Millisecond
	defer func(g int64) { maxCheckpointGrowth = g }(maxCheckpointGrowth)
	maxCheckpointGrowth = 1 // checkpoints at 2 KB, however large the index grows
	open := func() *Store {
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	}
	s := open()
	defer func() { s.Close() }()
	live := map[ids.Key]Object{}
	var keys []ids.Key
	pick := func() ids.Key {
		if len(keys) == 0 || r.IntN(3) == 0 {
			k := ids.Key{Ring: []ids.RingID{ringA, ringB}[r.IntN(2)], ID: randID(r)}
			keys = append(keys, k)
			return k
		}
		return keys[r.IntN(len(keys))]
	}
	for step := range 1500 {
		switch op := r.IntN(10); {
		case op < 5:
			k := pick()
			o := Object{Meta: Meta{Key: k, Seq: uint64(step), Expiry: t0.Add(time.Duration(1+r.IntN(100)) * time.Minute)},
				Payload: randBytes(r, r.IntN(600))}
			if err := s.Put(o); err != nil {
				t.Fatalf("step %d put: %v", step, err)
			}
			live[k] = o
		case op < 7:
			k := pick()
			err := s.Delete(k)
			if _, ok := live[k]; ok != (err == nil) {
				t.Fatalf("step %d delete %s: %v (live %v)", step, k, err, ok)
			}
			delete(live, k)
		case op < 8:
			c.advance(time.Duration(r.IntN(5)) * time.Minute)
			n, err := s.CollectExpired(c.Now())
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			for k, o := range live {
				if !o.Expiry.After(c.Now()) {
					delete(live, k)
					want++
				}
			}
			if n != want {
				t.Fatalf("step %d: collected %d expired, model has %d", step, n, want)
			}
		case op < 9:
			if _, err := s.PurgeTrash(c.Now().Add(2 * time.Hour)); err != nil {
				t.Fatal(err)
			}
		default:
			s.vlog.mu.Lock()
			retired, dropped, compactions = retired+s.vlog.retired, dropped+s.vlog.dropped, compactions+s.vlog.compactions
			s.vlog.mu.Unlock()
			switch r.IntN(3) {
			case 0: // a crash: reopen without Close
				crash(s)
			default:
				s.Close()
			}
			s = open()
			if rep := s.Repairs(); len(rep.Fixed) != 0 || len(rep.Damaged) != 0 {
				t.Fatalf("step %d: repair after reopen: %+v", step, rep)
			}
		}
		checkModel(t, step, s, live)
	}
}

// crash stops s as a crash would, without a checkpoint: a background checkpoint either
// finished before the index closed or fails (its frozen layer is then only in the journal).
func crash(s *Store) {
	s.closeOnce.Do(func() { close(s.closing) })
	s.db.Close()
	s.ckpt.Wait()
	s.journal.f.Close()
}

func checkModel(t *testing.T, step int, s *Store, live map[ids.Key]Object) {
	t.Helper()
	var want []ids.Key
	for k := range live {
		want = append(want, k)
	}
	var got []ids.Key
	for _, ring := range []ids.RingID{ringA, ringB} {
		for m, err := range s.Range(WholeRing(ring)) {
			if err != nil {
				t.Fatalf("step %d range: %v", step, err)
			}
			got = append(got, m.Key)
		}
	}
	cmp := func(a, b ids.Key) int { return bytes.Compare(encodeKey(a), encodeKey(b)) }
	slices.SortFunc(want, cmp)
	if !slices.IsSortedFunc(got, func(a, b ids.Key) int {
		if a.Ring != b.Ring {
			return 0
		}
		return cmp(a, b)
	}) {
		t.Fatalf("step %d: Range is out of order", step)
	}
	slices.SortFunc(got, cmp)
	if !slices.Equal(got, want) {
		t.Fatalf("step %d: Range has %d objects, model %d", step, len(got), len(want))
	}
	for k, o := range live {
		g, err := s.Get(k)
		if err != nil || !bytes.Equal(g.Payload, o.Payload) || g.Seq != o.Seq {
			t.Fatalf("step %d get %s: %v", step, k, err)
		}
	}
	st := mustStats(t, s)
	if st.Objects != int64(len(live)) {
		t.Fatalf("step %d: stats count %d, model %d", step, st.Objects, len(live))
	}
	var sum int64
	for _, ring := range []ids.RingID{ringA, ringB} {
		su, err := s.Summarize(WholeRing(ring))
		if err != nil {
			t.Fatal(err)
		}
		sum += su.Count
	}
	if sum != int64(len(live)) {
		t.Fatalf("step %d: Summarize counts %d, model %d", step, sum, len(live))
	}
}

// TestJournalTornTail cuts the journal inside its last record: Open keeps every record before
// it and drops the torn one.
func TestJournalTornTail(t *testing.T) {
	dir, s, a, b := openWithTwo(t)
	var err error
	off := s.journal.off
	crash(s)
	if err := os.Truncate(s.journalPath(), off-3); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _ := s.Has(a); !ok {
		t.Fatal("the record before the torn one was lost")
	}
	if ok, _ := s.Has(b); ok {
		t.Fatal("the torn record was applied")
	}
	if st := mustStats(t, s); st.Objects != 1 {
		t.Fatalf("stats count %d objects, want 1", st.Objects)
	}
}

// TestJournalCoveredEpochsSkipped: records of an epoch index.db already holds are not applied
// again, even if the truncate after the checkpoint was lost.
func TestJournalCoveredEpochsSkipped(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	a := keyOf(ringA, "a")
	if err := s.Put(Object{Meta: Meta{Key: a}, Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(s.journalPath())
	if err != nil || len(saved) == 0 {
		t.Fatalf("journal: %d bytes, %v", len(saved), err)
	}
	if err := checkpointNow(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := checkpointNow(s); err != nil {
		t.Fatal(err)
	}
	crash(s)
	// As if the truncate after the first checkpoint never reached the disk.
	if err := os.WriteFile(s.journalPath(), saved, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _ := s.Has(a); ok {
		t.Fatal("a covered journal record brought a deleted object back")
	}
}

// TestJournalPrevReplayedFirst: a crash while a background checkpoint was writing leaves the
// frozen layer's records in index.journal.prev and the newer ones in index.journal; Open
// replays both, the older file first, and removes the previous one.
func TestJournalPrevReplayedFirst(t *testing.T) {
	dir, s, a, b := openWithTwo(t)
	var err error
	// The rotation a freeze does, without the checkpoint that would follow it.
	if err := s.exclusive(func() error { return s.journal.rotate(s.journalPath(), s.prevJournalPath(), s.vlog) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Object{Meta: Meta{Key: b}, Payload: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	crash(s)
	if _, err := os.Stat(s.prevJournalPath()); err != nil {
		t.Fatalf("no previous journal to replay: %v", err)
	}
	s, err = Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _ := s.Has(a); ok {
		t.Fatal("the older file was replayed after the newer one: a deleted object is back")
	}
	if o, err := s.Get(b); err != nil || string(o.Payload) != "two" {
		t.Fatalf("b after replay: %q %v", o.Payload, err)
	}
	if _, err := os.Stat(s.prevJournalPath()); !os.IsNotExist(err) {
		t.Fatalf("the previous journal is still there after Open: %v", err)
	}
}

// split cuts a layer into parts that together hold every entry once, each bounded in size.
func TestLayerSplit(t *testing.T) {
	l := newLayer()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		l.set(i%numBuckets, randBytes(r, 1+r.IntN(40)), entry{v: randBytes(r, r.IntN(200)), del: i%7 == 0})
	}
	parts := l.split(1000)
	seen := 0
	for _, p := range parts {
		if p.size > 1000+40+200 {
			t.Fatalf("a part of %d bytes", p.size)
		}
		for b, m := range p.m {
			for k, e := range m {
				if o, ok := l.m[b][k]; !ok || o.del != e.del || !bytes.Equal(o.v, e.v) {
					t.Fatalf("part entry %q differs", k)
				}
				seen++
			}
		}
	}
	total := 0
	for _, m := range l.m {
		total += len(m)
	}
	if seen != total || len(parts) < 2 {
		t.Fatalf("%d parts hold %d entries of %d", len(parts), seen, total)
	}
}

// openWithTwo opens a store in a new directory and puts two objects, a and b, in it.
func openWithTwo(t *testing.T) (dir string, s *Store, a, b ids.Key) {
	t.Helper()
	dir = t.TempDir()
	s, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	a, b = keyOf(ringA, "a"), keyOf(ringA, "b")
	for _, k := range []ids.Key{a, b} {
		if err := s.Put(Object{Meta: Meta{Key: k}, Payload: []byte(k.String())}); err != nil {
			t.Fatal(err)
		}
	}
	return dir, s, a, b
}

// TestCheckpointLimitFollowsTheIndex: once index.db is larger than CheckpointBytes, a
// checkpoint waits for about that much journal (at most 4 times CheckpointBytes), so its
// rewrite of the index's pages costs no more per committed byte as the store grows.
func TestCheckpointLimitFollowsTheIndex(t *testing.T) {
	seed := testSeed(t, 5)
	r := rand.New(rand.NewPCG(seed, 9))
	c := &clock{now: t0}
	const limit = 64 << 10 // above an empty index.db's 20 KB
	s, err := Open(t.TempDir(), Options{Now: c.Now, Logger: quietLog, CheckpointBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(n int) {
		for range n {
			o := Object{Meta: Meta{Key: ids.Key{Ring: ringA, ID: randID(r)}, Seq: 1, Expiry: t0.Add(time.Hour)}, Payload: randBytes(r, 1000)}
			if err := s.Put(o); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := s.checkpointLimit(); got != limit {
		t.Fatalf("empty store: limit %d, want CheckpointBytes %d", got, limit)
	}
	put(1500) // about 1.5 MB: many checkpoints, an index of over a megabyte
	s.ckpt.Wait()
	size := s.indexSize.Load()
	if size <= maxCheckpointGrowth*limit {
		t.Fatalf("seed %d: index.db uses %d bytes after 1.5 MB of objects; the test needs more than %d", seed, size, maxCheckpointGrowth*limit)
	}
	if got := s.checkpointLimit(); got != maxCheckpointGrowth*limit {
		t.Fatalf("seed %d: index of %d bytes: limit %d, want %d × CheckpointBytes = %d", seed, size, got, maxCheckpointGrowth, maxCheckpointGrowth*limit)
	}
	// The journal now grows past CheckpointBytes before a checkpoint starts: watch its size
	// over a few more checkpoints.
	var most int64
	for range 600 {
		put(1)
		s.overMu.RLock()
		most = max(most, s.journal.off)
		s.overMu.RUnlock()
	}
	if most < 2*limit {
		t.Fatalf("seed %d: the journal reached at most %d bytes between checkpoints; want more than %d (2 × CheckpointBytes) below the raised limit", seed, most, 2*limit)
	}
}
