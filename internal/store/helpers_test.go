package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
)

// -store.seed overrides the randomized tests' seeds (each test prints the seed it used).
var seedFlag = flag.Uint64("store.seed", 0, "seed for randomized store tests (0: fixed defaults)")

func testSeed(t testing.TB, def uint64) uint64 {
	seed := def
	if *seedFlag != 0 {
		seed = *seedFlag
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (rerun with -store.seed=%d)", seed, seed)
		}
	})
	return seed
}

// quietLog keeps repair findings out of test output; tests check Repairs instead.
var quietLog = slog.New(slog.DiscardHandler)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable clock for Options.Now, safe to read from the store's background work
// (compaction) while a test moves it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// advance moves the clock by d and returns the new time.
func (c *clock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

func openTest(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if o.Now == nil {
		c := &clock{now: t0}
		o.Now = c.Now
	}
	if o.Logger == nil {
		o.Logger = quietLog
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	ringA = ids.RingIDOf("a.example")
	ringB = ids.RingIDOf("b.example")
)

func keyOf(ring ids.RingID, s string) ids.Key { return ids.Key{Ring: ring, ID: ids.HashString(s)} }

func randID(r *rand.Rand) ids.ID {
	var id ids.ID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	return id
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

func mustPut(t testing.TB, s *Store, o Object) {
	t.Helper()
	if err := s.Put(o); err != nil {
		t.Fatalf("Put %s: %v", o.Key, err)
	}
}

// checkObject fails unless the store returns want, payload and metadata.
func checkObject(t testing.TB, s *Store, want Object) {
	t.Helper()
	got, err := s.Get(want.Key)
	if err != nil {
		t.Fatalf("Get %s: %v", want.Key, err)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("Get %s: payload of %d bytes differs from the %d put", want.Key, len(got.Payload), len(want.Payload))
	}
	if got.Type != want.Type || got.Seq != want.Seq || !got.Expiry.Equal(want.Expiry) || !bytes.Equal(got.Aux, want.Aux) {
		t.Fatalf("Get %s: meta %+v, want type %d seq %d expiry %v aux %x", want.Key, got.Meta, want.Type, want.Seq, want.Expiry, want.Aux)
	}
	if got.Size != int64(len(want.Payload)) || got.Hash != Hash(ids.Hash(want.Payload)) {
		t.Fatalf("Get %s: size %d hash %s do not describe the payload", want.Key, got.Size, got.Hash)
	}
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if target == nil && err != nil || target != nil && !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func blobFiles(t testing.TB, s *Store) []string {
	t.Helper()
	es, err := os.ReadDir(s.blobDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func mustStats(t testing.TB, s *Store) Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}
