package post

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/store"
	"epost/internal/transport"
)

type fakeTimer struct{}

func (fakeTimer) Stop() bool { return true }

type fakeClock struct{ fs []func() }

func (c *fakeClock) Now() time.Time { return time.Unix(1e9, 0) }
func (c *fakeClock) AfterFunc(d time.Duration, f func()) transport.Timer {
	c.fs = append(c.fs, f)
	return fakeTimer{}
}

type pendingIns struct {
	obj past.Object
	cb  func(past.InsertResult)
}

type fakeStore struct {
	objs    map[ids.ID]past.Object
	pending []pendingIns
}

func (s *fakeStore) Insert(obj past.Object, cb func(past.InsertResult)) {
	s.pending = append(s.pending, pendingIns{obj, cb})
}
func (s *fakeStore) InsertDedupe(obj past.Object, cb func(past.InsertResult)) { s.Insert(obj, cb) }
func (s *fakeStore) Lookup(key ids.Key, cb func(past.Object, error)) {
	if o, ok := s.objs[key.ID]; ok {
		cb(o, nil)
		return
	}
	cb(past.Object{}, fmt.Errorf("fake: %w", past.ErrNotFound))
}
func (s *fakeStore) LookupLatest(key ids.Key, cb func(past.LookupResult))     {}
func (s *fakeStore) Refresh(keys []ids.Key, expiry time.Time, cb func(error)) {}
func (s *fakeStore) Delete(key ids.Key, proof []byte, cb func(error))         {}
func (s *fakeStore) LocalGet(key ids.Key) (past.Object, bool)                 { return past.Object{}, false }
func (s *fakeStore) LocalMetas(t past.Type) []store.Meta                      { return nil }

// finish completes pending insert i: ok stores it.
func (s *fakeStore) finish(i int, ok bool) {
	p := s.pending[i]
	s.pending = append(s.pending[:i:i], s.pending[i+1:]...)
	if ok {
		s.objs[p.obj.Key.ID] = p.obj
		p.cb(past.InsertResult{})
	} else {
		p.cb(past.InsertResult{Err: errors.New("fake: timeout")})
	}
}

// newSegmentLog is a user with one open, empty log "Work" on a store whose inserts the test
// completes (EntryBatch 8, no retries).
func newSegmentLog() (*fakeStore, *User, *logState) {
	fs := &fakeStore{objs: map[ids.ID]past.Object{}}
	cfg := Config{Clock: &fakeClock{}, Rand: rand.Reader, EntryBatch: 8, MaxFilingRetries: 1}
	cfg.fill()
	u := &User{n: &Node{cfg: cfg, st: fs}, logs: map[string]*logState{}}
	var hk ids.Key
	hk.ID[0] = 7
	l := &logState{name: "Work", key: hk, loaded: true}
	rand.Read(l.logKey[:])
	u.logs["Work"] = l
	return fs, u, l
}

// An earlier segment's insert fails for good while a later one is still in flight: the next
// store must not put the entries on both sides of the one in flight into one segment (replay
// would find the chain broken inside it), and the next head replays.
func TestEntrySegmentsHoldConsecutiveEntries(t *testing.T) {
	fs, u, l := newSegmentLog()
	hk := l.key
	prev := ids.ID{}
	add := func(k int) {
		for range k {
			i := uint64(len(l.locs))
			ct, err := sealEntry(&l.logKey, rand.Reader, hk, i, prev, []byte(fmt.Sprint("body", i)))
			if err != nil {
				t.Fatal(err)
			}
			prev = ids.Hash(ct)
			if len(l.tail) == 0 {
				l.tailFrom = i
			}
			l.tail = append(l.tail, ct)
			l.locs = append(l.locs, prev)
			l.bodies = append(l.bodies, []byte(fmt.Sprint("body", i)))
			l.head.Count, l.head.Newest = i+1, prev
		}
	}
	add(8)
	u.storeEntries(l, false) // segment A: 0-7
	add(8)
	u.storeEntries(l, false) // segment B: 8-15
	fs.finish(0, false)      // A fails for good; B still in flight
	add(8)
	u.storeEntries(l, false) // 0-7 and 16-23: one segment
	t.Logf("pending inserts: %d", len(fs.pending))
	for len(fs.pending) > 0 {
		fs.finish(0, true)
	}
	st := l.head
	st.Inline, st.InlineFrom = l.tail, l.tailFrom
	st.Segs = l.headSegsLocked(st.Count, 0, nil)
	t.Logf("tail %d entries from %d; the head names %d segments", len(l.tail), l.tailFrom, len(st.Segs))
	var gotErr error
	done := false
	u.replay(&l.logKey, hk, &st, false, nil, func(b [][]byte, _ []ids.ID, _ uint64, err error) {
		gotErr, done = err, true
	})
	if !done {
		t.Fatal("replay did not finish")
	}
	if gotErr != nil {
		t.Fatalf("replay of the next head fails: %v", gotErr)
	}
}

// A segment in flight while a merge replaces the log with a fork that shares only part of
// it: its acknowledgement must not take the shared entries out of the tail, since no head
// can name a segment whose newest entry is not in the chain; the next head replays.
func TestEntrySegmentOfAMergedAwayChainIsNotNamed(t *testing.T) {
	fs, u, l := newSegmentLog()
	hk := l.key
	chain := func(from uint64, prev ids.ID, k int, tag string) ([][]byte, []ids.ID) {
		var cts [][]byte
		var locs []ids.ID
		for i := from; i < from+uint64(k); i++ {
			ct, _ := sealEntry(&l.logKey, rand.Reader, hk, i, prev, []byte(fmt.Sprint(tag, i)))
			prev = ids.Hash(ct)
			cts, locs = append(cts, ct), append(locs, prev)
		}
		return cts, locs
	}
	e, el := chain(0, ids.ID{}, 8, "e")
	l.tail, l.tailFrom, l.locs = e, 0, el
	l.head = headState{Count: 8, Newest: el[7]}
	u.storeEntries(l, false) // S: e0-e7, in flight
	// The merge: the other writer's fork keeps e0-e3 and adds f4-f9 (applyLoadedLocked).
	f, fl := chain(4, el[3], 6, "f")
	l.tail = append(slices.Clone(e[:4]), f...)
	l.tailFrom, l.acked = 0, nil
	l.locs = append(slices.Clone(el[:4]), fl...)
	l.esegs = nil
	l.head = headState{Count: 10, Newest: fl[5]}
	u.storeEntries(l, true) // f4-f9
	for len(fs.pending) > 0 {
		fs.finish(0, true)
	}
	st := l.head
	st.Inline, st.InlineFrom = l.tail, l.tailFrom
	st.Segs = l.headSegsLocked(st.Count, 0, nil)
	t.Logf("tail %d entries from %d; head names %d segments", len(l.tail), l.tailFrom, len(st.Segs))
	var gotErr error
	u.replay(&l.logKey, hk, &st, false, nil, func(b [][]byte, _ []ids.ID, _ uint64, err error) { gotErr = err })
	if gotErr != nil {
		t.Fatalf("replay of the next head fails: %v", gotErr)
	}
}
