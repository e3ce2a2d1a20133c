package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// 50 KB payloads go to the value log: checkpoints move only their entries into index.db, the
// values survive Close, a crash and reopening, and once they are purged their segments go.
func TestValueLogKeepsValuesOutOfIndex(t *testing.T) {
	seed := testSeed(t, 5)
	r := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	c := &clock{now: t0}
	opts := Options{Now: c.Now, TrashGrace: time.Minute, CheckpointBytes: 256 << 10}
	defer func(g int64) { maxCheckpointGrowth = g }(maxCheckpointGrowth)
	maxCheckpointGrowth = 1 // checkpoints every 256 KiB, however large the index grows
	s := openTest(t, dir, opts)
	var objs []Object
	for i := range 60 {
		o := Object{Meta: Meta{Key: keyOf(ringA, fmt.Sprint(i))}, Payload: randBytes(r, 50<<10)}
		mustPut(t, s, o)
		objs = append(objs, o)
	}
	for _, o := range objs {
		checkObject(t, s, o)
	}
	s.Close()
	// 3 MB of payloads; index.db holds their entries only.
	db, err := bolt.Open(dir+"/index.db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > 1<<20 {
			return fmt.Errorf("index.db uses %d bytes after 60 values of 50 KB", tx.Size())
		}
		return tx.Bucket(bucketPayload).ForEach(func(k, v []byte) error {
			if p, err := decodePayloadEntry(Hash(k), v); err != nil || p.loc != inLog {
				return fmt.Errorf("payload %x is not in the value log (%v)", k, err)
			}
			return nil
		})
	})
	db.Close()
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	s = openTest(t, dir, opts)
	if rep := s.Repairs(); len(rep.Damaged) != 0 || len(rep.Fixed) != 0 {
		t.Fatalf("seed %d: reopen repaired %+v", seed, rep)
	}
	for _, o := range objs {
		checkObject(t, s, o)
	}
	// More puts, then a crash: the journal's values are found again after the replay.
	for i := range 10 {
		o := Object{Meta: Meta{Key: keyOf(ringB, fmt.Sprint(i))}, Payload: randBytes(r, 40<<10)}
		mustPut(t, s, o)
		objs = append(objs, o)
	}
	crash(s)
	s = openTest(t, dir, opts)
	for _, o := range objs {
		checkObject(t, s, o)
	}
	segs, _ := os.ReadDir(s.vlog.dir)
	if len(segs) == 0 {
		t.Fatalf("seed %d: no segment in %s", seed, s.vlog.dir)
	}
	// Delete and purge everything: every segment goes.
	for _, o := range objs {
		if err := s.Delete(o.Key); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(time.Hour)
	if _, err := s.PurgeTrash(c.Now()); err != nil {
		t.Fatal(err)
	}
	// The journal file holding the purge's record is the current one; a checkpoint retires
	// the others, which nothing points into any more.
	if err := checkpointNow(s); err != nil {
		t.Fatal(err)
	}
	if segs, _ := os.ReadDir(s.vlog.dir); len(segs) != 0 {
		t.Fatalf("seed %d: %d segments left after every value was purged", seed, len(segs))
	}
}

// A segment cut short is damage that Open reports, and Get refuses the values it lost.
func TestValueLogDamage(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	a := Object{Meta: Meta{Key: keyOf(ringA, "a")}, Payload: randBytes(rand.New(rand.NewPCG(1, 1)), 30<<10)}
	mustPut(t, s, a)
	s.Close()
	segs, err := os.ReadDir(s.vlog.dir)
	if err != nil || len(segs) != 1 {
		t.Fatalf("want one segment after Close, have %d (%v)", len(segs), err)
	}
	path := s.vlog.dir + "/" + segs[0].Name()
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if rep := s.Repairs(); len(rep.Damaged) != 1 || rep.Damaged[0].Key != a.Key {
		t.Fatalf("repair: %+v, want the object damaged", rep)
	}
	if _, err := s.Get(a.Key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get of a cut value: %v", err)
	}
	// A good copy put again heals it, as a payload file is rewritten.
	mustPut(t, s, a)
	checkObject(t, s, a)
}

// checkpointNow runs the foreground checkpoint as Close does: after any background checkpoint
// has finished (checkpoint may not run beside one; the race detector caught a test that did).
func checkpointNow(s *Store) error {
	s.ckpt.Wait()
	return s.exclusive(s.checkpoint)
}
