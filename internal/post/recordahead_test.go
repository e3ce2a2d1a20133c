package post

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/past"
	"epost/internal/wire"
)

// recordedState decrypts the head state of a record of l.
func recordedState(t *testing.T, l *logState, payload []byte) *headState {
	t.Helper()
	r := wire.NewReader(payload)
	r.U8()
	r.Bytes(256, "wrapped")
	sealed := r.Bytes(len(payload), "state")
	pt, err := open(&l.logKey, sealed, headAAD(l.key))
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeHeadState(pt)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// newRecordedLog is newSegmentLog with a signing user and head records in memory.
func newRecordedLog(t *testing.T) (*fakeStore, *User, *logState, *MemHeadRecords, *fakeClock) {
	t.Helper()
	fs, u, l := newSegmentLog()
	keys, err := identity.NewKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	heads := &MemHeadRecords{}
	u.keys, u.heads, u.records, u.addr = keys, heads, map[string]HeadRecord{}, "u@example.org"
	return fs, u, l, heads, u.n.cfg.Clock.(*fakeClock)
}

// AppendRecorded: acknowledged once a head carrying the entry is recorded on the node's disk,
// before the ring has it; while another head write is in flight, through a record of the head
// after it (never sent); behind an ordinary append, only once that append's head commits (so
// that the caller reads its entry back); each callback once, whatever the ring answers later.
func TestAppendRecorded(t *testing.T) {
	fs, u, l, heads, clock := newRecordedLog(t)
	calls := map[string]int{}
	app := func(body string, recorded bool) {
		cb := func(_ uint64, err error) {
			if err != nil {
				t.Errorf("append %s: %v", body, err)
			}
			calls[body]++
		}
		if recorded {
			u.AppendRecorded("Work", []byte(body), cb)
		} else {
			u.Append("Work", []byte(body), cb)
		}
	}
	entries := func() []string {
		es, err := u.Entries("Work", 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, string(e))
		}
		return out
	}
	recordCount := func() uint64 {
		rec, ok := heads.recs["Work"]
		if !ok {
			t.Fatal("no record")
		}
		return recordedState(t, l, rec.Payload).Count
	}

	app("f1", true)
	if calls["f1"] != 1 || len(fs.pending) != 1 {
		t.Fatalf("f1: %d callbacks with %d inserts pending, want 1 before the ring answers", calls["f1"], len(fs.pending))
	}
	app("f2", true) // the head carrying f1 is in flight
	if calls["f2"] != 1 || len(fs.pending) != 1 {
		t.Fatalf("f2: %d callbacks with %d inserts pending, want 1 from a record ahead, nothing sent", calls["f2"], len(fs.pending))
	}
	if n := recordCount(); n != 2 {
		t.Fatalf("the record ahead holds %d entries, want 2", n)
	}
	if got := entries(); !slices.Equal(got, []string{"f1", "f2"}) {
		t.Fatalf("Entries %q, want f1 f2", got)
	}

	fs.finish(0, false) // the head write fails: both go out again with the next one
	for len(clock.fs) > 0 && len(fs.pending) == 0 {
		f := clock.fs[0]
		clock.fs = clock.fs[1:]
		f()
	}
	if len(fs.pending) != 1 {
		t.Fatalf("%d inserts pending after the retry, want the next head", len(fs.pending))
	}
	fs.finish(0, true)
	if calls["f1"] != 1 || calls["f2"] != 1 || l.head.Count != 2 {
		t.Fatalf("after the retry: callbacks %v, head %d entries; want each once and 2", calls, l.head.Count)
	}

	app("m3", false) // an ordinary append in flight
	app("f4", true)  // recorded ahead, but not shown before m3 is
	if calls["f4"] != 0 || len(fs.pending) != 1 {
		t.Fatalf("f4 behind m3 in flight: %d callbacks, %d inserts pending; want 0 and 1", calls["f4"], len(fs.pending))
	}
	if n := recordCount(); n != 4 {
		t.Fatalf("the record ahead holds %d entries, want 4", n)
	}
	ahead := recordedState(t, l, heads.recs["Work"].Payload)
	if got := entries(); !slices.Equal(got, []string{"f1", "f2"}) {
		t.Fatalf("Entries %q before m3 commits, want f1 f2", got)
	}
	fs.finish(0, true) // m3's head commits; f4 is durable already: acknowledged now
	if calls["m3"] != 1 || calls["f4"] != 1 || len(fs.pending) != 1 {
		t.Fatalf("m3 committed: callbacks %v, %d inserts pending; want m3 and f4 once, f4's head in flight", calls, len(fs.pending))
	}
	fs.finish(0, true)
	if got := entries(); !slices.Equal(got, []string{"f1", "f2", "m3", "f4"}) || calls["f4"] != 1 {
		t.Fatalf("Entries %q, callbacks %v", got, calls)
	}
	// The head written after the record ahead carries the same bytes for f4: the record is
	// its ancestor, not a fork, should a restart find both.
	if l.head.Newest != ahead.Newest {
		t.Errorf("the written head's newest entry %v differs from the record ahead's %v", l.head.Newest, ahead.Newest)
	}
	if st := u.n.stats; st.LogAppendsRecorded != 3 || st.LogRecordsAhead < 2 {
		t.Errorf("stats: %d acknowledged at a record, %d records ahead; want 3 and at least 2", st.LogAppendsRecorded, st.LogRecordsAhead)
	}
}

// With the node's real head record file: nothing is acknowledged before an fsync that covers
// its record has succeeded, even when the record of the head in flight and a record ahead of
// the next are saved close together (a lower sequence number saved after a higher one is
// not written, and must not return before the higher one is on disk). Here every fsync waits,
// then fails: no callback may report success.
func TestAppendRecordedWaitsForTheFsync(t *testing.T) {
	var gate atomic.Pointer[chan struct{}]
	old := syncHeadFile
	syncHeadFile = func(*os.File) error { <-*gate.Load(); return errors.New("injected EIO") }
	var files []*FileHeadRecords
	defer func() {
		for _, h := range files {
			_ = h.Close() // waits for an fsync under way
		}
		syncHeadFile = old
	}()
	for run := range 20 {
		_, u, _ := newSegmentLog()
		keys, err := identity.NewKeys(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := OpenFileHeadRecords(filepath.Join(t.TempDir(), FileHeadRecordsName))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, h)
		block := make(chan struct{})
		gate.Store(&block)
		u.keys, u.heads, u.records, u.addr = keys, h, map[string]HeadRecord{}, "u@example.org"
		var acked atomic.Int32
		cb := func(_ uint64, err error) {
			if err == nil {
				acked.Add(1)
			}
		}
		u.AppendRecorded("Work", []byte("f1"), cb)
		u.AppendRecorded("Work", []byte("f2"), cb) // queued behind f1's head in flight
		time.Sleep(5 * time.Millisecond)
		close(block)
		time.Sleep(10 * time.Millisecond)
		if n := acked.Load(); n > 0 {
			t.Fatalf("run %d: %d entries acknowledged though every fsync of their records failed", run, n)
		}
	}
}

// With FilingBatch, a queue of recorded entries is acknowledged from a record of the next
// head while that head waits for more changes; an ordinary append arriving meanwhile goes
// out at once in the same head (one ring write for both), and the head written extends the
// record.
func TestAppendRecordedShareTheBatchedHead(t *testing.T) {
	fs, u, l, heads, clock := newRecordedLog(t)
	u.n.cfg.FilingBatch = 300 * time.Millisecond
	calls := map[string]int{}
	cb := func(body string) func(uint64, error) {
		return func(_ uint64, err error) {
			if err != nil {
				t.Errorf("append %s: %v", body, err)
			}
			calls[body]++
		}
	}
	u.AppendRecorded("Work", []byte("f1"), cb("f1"))
	u.AppendRecorded("Work", []byte("f2"), cb("f2"))
	if calls["f1"] != 1 || calls["f2"] != 1 || len(fs.pending) != 0 || len(clock.fs) != 1 {
		t.Fatalf("callbacks %v, %d inserts pending, %d timers; want f1 and f2 acknowledged, no head sent, the batch timer armed", calls, len(fs.pending), len(clock.fs))
	}
	rec := recordedState(t, l, heads.recs["Work"].Payload)
	if rec.Count != 2 {
		t.Fatalf("the record holds %d entries, want 2", rec.Count)
	}
	u.Append("Work", []byte("m3"), cb("m3"))
	if len(fs.pending) != 1 || calls["m3"] != 0 {
		t.Fatalf("%d inserts pending, m3 callbacks %d; want m3's head sent at once, unacknowledged", len(fs.pending), calls["m3"])
	}
	fs.finish(0, true)
	if calls["m3"] != 1 || calls["f1"] != 1 || calls["f2"] != 1 || l.head.Count != 3 {
		t.Fatalf("callbacks %v, head of %d entries; want each once and 3", calls, l.head.Count)
	}
	if l.locs[1] != rec.Newest {
		t.Errorf("the head written does not extend the record: entry 1 at %v, the record's newest %v", l.locs[1], rec.Newest)
	}
	for len(clock.fs) > 0 { // the batch timer (and the entries' store): no head is left to write
		f := clock.fs[0]
		clock.fs = clock.fs[1:]
		f()
	}
	for _, p := range fs.pending {
		if past.Type(p.obj.Type) == past.TypeSigned {
			t.Errorf("a head write after the batch timer, with nothing left to write")
		}
	}
	// The timer found nothing to write: the next change waits for a batch of its own again.
	u.AppendRecorded("Work", []byte("f4"), cb("f4"))
	for _, p := range fs.pending {
		if past.Type(p.obj.Type) == past.TypeSigned {
			t.Errorf("f4's head was sent at once, not batched")
		}
	}
	if calls["f4"] != 1 {
		t.Errorf("f4: %d callbacks, want 1 from its record", calls["f4"])
	}
}
