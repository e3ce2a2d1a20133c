package glacier

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"epost/internal/ids"

	bolt "go.etcd.io/bbolt"
)

func openTestDiskStore(t testing.TB) (*DiskStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "glacier.db")
	s, err := OpenDiskStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// testFragments returns the fragments of objects versions 1..objects, each with its key.
func testFragments(t testing.TB, objects int) (fks []ids.ID, frs []Fragment) {
	t.Helper()
	c, _ := NewCodec(12, 3)
	for v := 1; v <= objects; v++ {
		obj := bytes.Repeat([]byte{byte(v)}, 1000+v)
		man, frags, err := NewManifest(c, testKey(uint64(v)), testRingID, []byte("agg"), uint64(v), time.Unix(2e9, 0), obj)
		if err != nil {
			t.Fatal(err)
		}
		_, proofs := merkleTree(frags)
		for i, d := range frags {
			fks = append(fks, man.FragmentKey(i))
			frs = append(frs, Fragment{Manifest: man, Index: i, Data: d, Proof: proofs[i]})
		}
	}
	return fks, frs
}

func sameFragment(a, b Fragment) bool {
	return a.Index == b.Index && bytes.Equal(a.Data, b.Data) && slices.Equal(a.Proof, b.Proof) && bytes.Equal(a.Manifest.Bytes(), b.Manifest.Bytes())
}

// contents is everything Range yields, in order, with each fragment's data read through Get
// where Range left it out (DiskStore does: walks never need the bytes).
func contents(st Store) (fks []ids.ID, frs []Fragment) {
	st.Range(func(fk ids.ID, f *Fragment) bool {
		fks = append(fks, fk)
		frs = append(frs, *f)
		return true
	})
	for i := range frs {
		if frs[i].Data == nil {
			if g, err := st.Get(fks[i]); err == nil {
				frs[i].Data = g.Data
			}
		}
	}
	return fks, frs
}

func TestDiskStoreRoundTrip(t *testing.T) {
	s, _ := openTestDiskStore(t)
	fks, frs := testFragments(t, 2)
	var total int64
	for i := range fks {
		if err := s.Put(fks[i], frs[i]); err != nil {
			t.Fatal(err)
		}
		total += int64(len(frs[i].Data))
	}
	if s.Len() != len(fks) || s.Bytes() != total {
		t.Fatalf("Len %d Bytes %d, want %d %d", s.Len(), s.Bytes(), len(fks), total)
	}
	for i, fk := range fks {
		got, err := s.Get(fk)
		if err != nil || !sameFragment(got, frs[i]) {
			t.Fatalf("Get %d: %v, fragment differs: %v", i, err, !sameFragment(got, frs[i]))
		}
	}
	if _, err := s.Get(ids.HashString("absent")); err != ErrNotFound {
		t.Fatalf("Get of an absent key: %v, want ErrNotFound", err)
	}
	// Walks give manifests and indexes and leave the bytes on disk: a maintenance round (a
	// sync request walks a node's fragments on its event loop) must not read them all.
	walked := 0
	check := func(fk ids.ID, f *Fragment) bool {
		walked++
		if f.Data != nil || f.Manifest == nil || f.Key() != fk {
			t.Fatalf("walk of %s: data %d bytes, manifest %v", fk.Short(), len(f.Data), f.Manifest != nil)
		}
		return true
	}
	s.Range(check)
	s.Ascend(fks[0], check)
	if walked != 2*len(fks) {
		t.Fatalf("walked %d fragments, want %d", walked, 2*len(fks))
	}

	// Overwrite with another object's fragment of a different size: Bytes follows.
	if err := s.Put(fks[0], frs[len(frs)-1]); err != nil {
		t.Fatal(err)
	}
	total += int64(len(frs[len(frs)-1].Data) - len(frs[0].Data))
	if got, _ := s.Get(fks[0]); !sameFragment(got, frs[len(frs)-1]) || s.Len() != len(fks) || s.Bytes() != total {
		t.Fatalf("after overwrite: Len %d Bytes %d, want %d %d", s.Len(), s.Bytes(), len(fks), total)
	}

	if err := s.Delete(fks[1]); err != nil {
		t.Fatal(err)
	}
	total -= int64(len(frs[1].Data))
	if _, err := s.Get(fks[1]); err != ErrNotFound || s.Len() != len(fks)-1 || s.Bytes() != total {
		t.Fatalf("after Delete: Get %v, Len %d Bytes %d, want %d %d", err, s.Len(), s.Bytes(), len(fks)-1, total)
	}
	// Deleting what is not held reports ErrNotFound and changes nothing, as MemStore does.
	if err, merr := s.Delete(fks[1]), NewMemStore().Delete(fks[1]); err != merr || s.Len() != len(fks)-1 || s.Bytes() != total {
		t.Fatalf("Delete of a missing key: %v (MemStore: %v), Len %d Bytes %d", err, merr, s.Len(), s.Bytes())
	}
	if err := s.Put(fks[0], Fragment{Index: 0}); err == nil {
		t.Fatal("Put without a manifest accepted")
	}
}

func TestDiskStoreReopen(t *testing.T) {
	s, path := openTestDiskStore(t)
	fks, frs := testFragments(t, 3)
	for i := range fks {
		if err := s.Put(fks[i], frs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(fks[5]); err != nil {
		t.Fatal(err)
	}
	wantLen, wantBytes := s.Len(), s.Bytes()
	wantKeys, wantFrs := contents(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(fks[0], frs[0]); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Put after Close: %v, want an error naming %s", err, path)
	}

	s2, err := OpenDiskStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Len() != wantLen || s2.Bytes() != wantBytes {
		t.Fatalf("reopened: Len %d Bytes %d, want %d %d", s2.Len(), s2.Bytes(), wantLen, wantBytes)
	}
	gotKeys, gotFrs := contents(s2)
	if len(gotKeys) != len(wantKeys) {
		t.Fatalf("reopened: %d entries, want %d", len(gotKeys), len(wantKeys))
	}
	for i := range gotKeys {
		if gotKeys[i] != wantKeys[i] || !sameFragment(gotFrs[i], wantFrs[i]) {
			t.Fatalf("reopened: entry %d differs", i)
		}
		if _, err := s2.Get(gotKeys[i]); err != nil {
			t.Fatalf("reopened: Get %d: %v", i, err)
		}
	}
}

// rawPut writes a value behind the store's back, as disk damage would.
func rawPut(t *testing.T, s *DiskStore, k, v []byte) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFragments).Put(k, v) })
	if err != nil {
		t.Fatal(err)
	}
}

func TestDiskStoreDamagedDataDropped(t *testing.T) {
	s, path := openTestDiskStore(t)
	fks, frs := testFragments(t, 1)
	for i := range 3 {
		if err := s.Put(fks[i], frs[i]); err != nil {
			t.Fatal(err)
		}
	}
	good := encodeInlineEntry(&frs[1])
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1 // the last data byte
	rawPut(t, s, fks[1][:], bad)

	_, err := s.Get(fks[1])
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Get of damaged data: %v, want ErrNotFound naming %s", err, path)
	}
	if _, err := s.Get(fks[1]); err != ErrNotFound {
		t.Fatalf("second Get: %v, want plain ErrNotFound (entry dropped)", err)
	}
	want := int64(len(frs[0].Data) + len(frs[2].Data))
	if s.Len() != 2 || s.Bytes() != want {
		t.Fatalf("after drop: Len %d Bytes %d, want 2 %d", s.Len(), s.Bytes(), want)
	}
	// A good copy fetched again is kept.
	if err := s.Put(fks[1], frs[1]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(fks[1]); err != nil || !sameFragment(got, frs[1]) {
		t.Fatalf("after re-Put: %v", err)
	}
}

// garbageValues are values that must be refused without panicking.
func garbageValues(t *testing.T) map[string][]byte {
	_, frs := testFragments(t, 1)
	good := encodeInlineEntry(&frs[0])
	g := map[string][]byte{
		"empty":          {},
		"format only":    {valueInline},
		"other format":   append([]byte{valueExternal + 1}, good[1:]...),
		"huge length":    {valueInline, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"index too high": append([]byte{valueInline, 0, 12}, good[3:]...),
		"random":         randBytes(rand.New(rand.NewPCG(9, 9)), 300),
	}
	for _, n := range []int{2, 3, 5, 40, 100, len(good) - len(frs[0].Data) - 1} {
		g[fmt.Sprintf("truncated to %d", n)] = good[:n]
	}
	return g
}

func TestDiskStoreGarbageValues(t *testing.T) {
	for name, v := range garbageValues(t) {
		t.Run(name, func(t *testing.T) {
			s, path := openTestDiskStore(t)
			fk := ids.HashString(name)
			rawPut(t, s, fk[:], v)
			rawPut(t, s, []byte("short key"), v)
			n := 0
			s.Range(func(ids.ID, *Fragment) bool { n++; return true })
			s.Ascend(fk, func(ids.ID, *Fragment) bool { n++; return true })
			if n != 0 {
				t.Fatalf("Range and Ascend yielded %d damaged entries", n)
			}
			if _, err := s.Get(fk); err != ErrNotFound {
				t.Fatalf("Get after Range dropped it: %v, want ErrNotFound", err)
			}
			// Found at open instead: dropped there, counters agree.
			rawPut(t, s, fk[:], v)
			s.Close()
			s2, err := OpenDiskStore(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if s2.Len() != 0 || s2.Bytes() != 0 {
				t.Fatalf("reopened: Len %d Bytes %d, want 0 0", s2.Len(), s2.Bytes())
			}
		})
	}
}

func TestDiskStoreGetGarbage(t *testing.T) {
	s, _ := openTestDiskStore(t)
	for name, v := range garbageValues(t) {
		fk := ids.HashString(name)
		rawPut(t, s, fk[:], v)
		if _, err := s.Get(fk); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: Get: %v, want ErrNotFound", name, err)
		}
	}
}

func FuzzDecodeDiskEntry(f *testing.F) {
	_, frs := testFragments(f, 1)
	f.Add(encodeInlineEntry(&frs[0]))
	f.Add([]byte{valueInline, 0, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		k := make([]byte, ids.Bytes)
		fr, err := decodeDiskEntry(k, v)
		if err != nil {
			return
		}
		if got := encodeInlineEntry(&fr); !bytes.Equal(got, v) {
			t.Fatalf("decoded entry re-encodes differently")
		}
		if diskDataLen(v) != int64(len(fr.Data)) {
			t.Fatal("diskDataLen disagrees with decoding")
		}
	})
}

func TestDiskStoreLocked(t *testing.T) {
	_, path := openTestDiskStore(t)
	start := time.Now()
	s2, err := OpenDiskStore(path)
	if err == nil {
		s2.Close()
		t.Fatal("a second open of a held file succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("error %q should name %s and say it is locked", err, path)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	if _, err := OpenDiskStore(filepath.Join(t.TempDir(), "no", "such", "dir", "g.db")); err == nil {
		t.Fatal("open in a missing directory succeeded")
	}
}

// ascendKeys is the keys Ascend yields from from, stopping after limit (0: no limit).
func ascendKeys(st Store, from ids.ID, limit int) []ids.ID {
	var out []ids.ID
	st.Ascend(from, func(fk ids.ID, f *Fragment) bool {
		out = append(out, fk)
		return limit == 0 || len(out) < limit
	})
	return out
}

// TestDiskStoreMatchesMemStore runs the same random operations on both stores and compares
// every observable result, Ascend from held keys, from between them, past the last key and
// before the first included.
func TestDiskStoreMatchesMemStore(t *testing.T) {
	_, frs := testFragments(t, 2)
	for seed := uint64(1); seed <= 4; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		d, _ := openTestDiskStore(t)
		m := NewMemStore()
		// A small pool of keys makes overwrites and deletions of held keys common; the extremes
		// exercise the wrap-around.
		pool := []ids.ID{{}, {0: 0xff, 31: 0xff}}
		for range 30 {
			var id ids.ID
			for i := range id {
				id[i] = byte(r.Uint32())
			}
			pool = append(pool, id)
		}
		pick := func() ids.ID { return pool[r.IntN(len(pool))] }
		for op := range 400 {
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("seed %d op %d: %s", seed, op, fmt.Sprintf(format, args...))
			}
			switch k := r.IntN(10); {
			case k < 4:
				fk, f := pick(), frs[r.IntN(len(frs))]
				if err := d.Put(fk, f); err != nil {
					fail("Put: %v", err)
				}
				m.Put(fk, f)
			case k < 6:
				fk := pick()
				if de, me := d.Delete(fk), m.Delete(fk); de != me {
					fail("Delete: %v, MemStore %v", de, me)
				}
			case k < 7:
				fk := pick()
				df, de := d.Get(fk)
				mf, me := m.Get(fk)
				if de != me || (de == nil && !sameFragment(df, mf)) {
					fail("Get: %v, MemStore %v", de, me)
				}
			default:
				from := pick()
				if r.IntN(2) == 0 {
					from = ids.Add(from, ids.ID{31: 1}) // between held keys
				}
				limit := r.IntN(4) * r.IntN(8)
				if dk, mk := ascendKeys(d, from, limit), ascendKeys(m, from, limit); !slices.Equal(dk, mk) {
					fail("Ascend(%s, %d): %d keys, MemStore %d", from.Short(), limit, len(dk), len(mk))
				}
			}
			if d.Len() != m.Len() || d.Bytes() != m.Bytes() {
				fail("Len %d Bytes %d, MemStore %d %d", d.Len(), d.Bytes(), m.Len(), m.Bytes())
			}
		}
		dk, dfs := contents(d)
		mk, mfs := contents(m)
		if !slices.Equal(dk, mk) {
			t.Fatalf("seed %d: Range keys differ", seed)
		}
		for i := range dfs {
			if !sameFragment(dfs[i], mfs[i]) {
				t.Fatalf("seed %d: Range entry %d differs", seed, i)
			}
		}
		for i := 1; i < len(dk); i++ {
			if !ids.Less(dk[i-1], dk[i]) {
				t.Fatalf("seed %d: Range out of order at %d", seed, i)
			}
		}
		// From every held key: the next key first, all others once, that key last.
		for _, fk := range dk {
			if got, want := ascendKeys(d, fk, 0), ascendKeys(m, fk, 0); !slices.Equal(got, want) || got[len(got)-1] != fk {
				t.Fatalf("seed %d: Ascend from held key %s differs or does not end there", seed, fk.Short())
			}
		}
	}
}

// TestDiskStoreConcurrentStatus reads Len and Bytes while fragments are written (run with -race).
func TestDiskStoreConcurrentStatus(t *testing.T) {
	s, _ := openTestDiskStore(t)
	fks, frs := testFragments(t, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				if s.Len() < 0 || s.Bytes() < 0 {
					t.Error("negative counters")
				}
			}
		}
	})
	for i := range fks {
		if err := s.Put(fks[i], frs[i]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkDiskStorePut(b *testing.B) {
	s, _ := openTestDiskStore(b)
	c, _ := NewCodec(12, 3)
	rng := rand.New(rand.NewPCG(1, 1))
	obj := randBytes(rng, 3*16<<10) // m = 3: fragments of 16 KiB
	man, frags, err := NewManifest(c, testKey(1), testRingID, []byte("bench"), 1, time.Unix(2e9, 0), obj)
	if err != nil {
		b.Fatal(err)
	}
	_, proofs := merkleTree(frags)
	f := Fragment{Manifest: man, Index: 0, Data: frags[0], Proof: proofs[0]}
	b.SetBytes(int64(len(f.Data)))
	for b.Loop() {
		var fk ids.ID
		for i := range fk {
			fk[i] = byte(rng.Uint32())
		}
		if err := s.Put(fk, f); err != nil {
			b.Fatal(err)
		}
	}
}

// Apply commits puts and deletes together, in order, and keeps the counts right; a batch
// behind the write-back overlay reads the same as the plain store.
func TestDiskStoreApply(t *testing.T) {
	s, path := openTestDiskStore(t)
	fks, frs := testFragments(t, 2)
	var ops []FragOp
	for i := range fks {
		ops = append(ops, FragOp{Key: fks[i], Put: &frs[i]})
	}
	ops = append(ops, FragOp{Key: fks[0], Delete: true}, FragOp{Key: fks[1], Put: &frs[1]}, FragOp{Key: ids.HashString("absent"), Delete: true})
	res, err := s.Apply(ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range res {
		if e != nil {
			t.Fatalf("op %d: %v", i, e)
		}
	}
	if s.Len() != len(fks)-1 {
		t.Fatalf("Len %d, want %d", s.Len(), len(fks)-1)
	}
	if _, err := s.Get(fks[0]); err != ErrNotFound {
		t.Fatalf("deleted fragment: %v", err)
	}
	s.Close()
	s2, err := OpenDiskStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, _ := contents(s2)
	if len(got) != len(fks)-1 {
		t.Fatalf("after reopening: %d fragments, want %d", len(got), len(fks)-1)
	}
	wb := newWriteBack(s2)
	if err := wb.Put(fks[0], frs[0]); err != nil {
		t.Fatal(err)
	}
	if f, err := wb.Get(fks[0]); err != nil || !sameFragment(f, frs[0]) {
		t.Fatalf("overlay read: %v", err)
	}
	own, upTo := wb.q.TakeStep()
	if err := wb.q.Persist(own, upTo); err != nil {
		t.Fatal(err)
	}
	if f, err := s2.Get(fks[0]); err != nil || !sameFragment(f, frs[0]) || s2.Len() != len(fks) {
		t.Fatalf("after persist: %v, Len %d", err, s2.Len())
	}
}

// bigFragments are the fragments of one 100 KB object, about 34 KB each.
func bigFragments(t testing.TB) (fks []ids.ID, frs []Fragment) {
	t.Helper()
	c, _ := NewCodec(12, 3)
	obj := randBytes(rand.New(rand.NewPCG(5, 5)), 100<<10)
	man, frags, err := NewManifest(c, testKey(1), testRingID, []byte("big"), 1, time.Unix(2e9, 0), obj)
	if err != nil {
		t.Fatal(err)
	}
	_, proofs := merkleTree(frags)
	for i, d := range frags {
		fks = append(fks, man.FragmentKey(i))
		frs = append(frs, Fragment{Manifest: man, Index: i, Data: d, Proof: proofs[i]})
	}
	return fks, frs
}

// allocated is the data file's allocated bytes (its blocks, not its size).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dataPath(path), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestDiskStoreDataFile: fragment data lives in the data file; deleting a fragment gives its
// blocks back; bytes flipped in the data file are caught by Get and the entry dropped.
func TestDiskStoreDataFile(t *testing.T) {
	s, path := openTestDiskStore(t)
	fks, frs := bigFragments(t)
	res, err := s.Apply(func() []FragOp {
		var ops []FragOp
		for i := range fks {
			ops = append(ops, FragOp{Key: fks[i], Put: &frs[i]})
		}
		return ops
	}())
	if err != nil || slices.ContainsFunc(res, func(e error) bool { return e != nil }) {
		t.Fatalf("apply: %v %v", err, res)
	}
	full := allocated(t, path)
	if full < int64(len(fks))*int64(len(frs[0].Data)) {
		t.Fatalf("data file holds %d bytes for %d fragments of %d", full, len(fks), len(frs[0].Data))
	}
	for _, fk := range fks[:len(fks)/2] {
		if err := s.Delete(fk); err != nil {
			t.Fatal(err)
		}
	}
	if half := allocated(t, path); half > full*3/5 {
		t.Fatalf("after deleting half the fragments the data file still holds %d of %d bytes", half, full)
	}
	// Flip a data byte of a held fragment behind the store's back.
	i := len(fks) - 1
	var off int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		dv, err := parseDiskValue(tx.Bucket(bucketFragments).Get(fks[i][:]))
		if err != nil || !dv.external {
			t.Fatalf("value of a new put: %v, external %v", err, dv.external)
		}
		off = dv.off
		return nil
	})
	b := make([]byte, 1)
	s.data.ReadAt(b, off+7)
	b[0] ^= 1
	s.data.WriteAt(b, off+7)
	if _, err := s.Get(fks[i]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of damaged data: %v, want ErrNotFound", err)
	}
	if got, err := s.Get(fks[i-1]); err != nil || !sameFragment(got, frs[i-1]) {
		t.Fatalf("Get of its neighbour: %v", err)
	}
}

// TestDiskStoreOpenReclaims: data a crash left behind (written, never committed, or
// committed away but not yet punched) is given back at Open, and the tail is cut.
func TestDiskStoreOpenReclaims(t *testing.T) {
	s, path := openTestDiskStore(t)
	fks, frs := bigFragments(t)
	for i := range fks {
		if err := s.Put(fks[i], frs[i]); err != nil {
			t.Fatal(err)
		}
	}
	held := allocated(t, path)
	// Garbage in the middle (a delete whose punch a crash prevented) and at the end (a batch
	// whose index commit never happened).
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFragments).Delete(fks[0][:]) }); err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{7}, 64<<10)
	if _, err := s.data.WriteAt(junk, s.end); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenDiskStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := allocated(t, path); got >= held {
		t.Fatalf("after reopen the data file holds %d bytes, %d before the garbage", got, held)
	}
	for i := 1; i < len(fks); i++ {
		if got, err := s2.Get(fks[i]); err != nil || !sameFragment(got, frs[i]) {
			t.Fatalf("Get %d after reopen: %v", i, err)
		}
	}
	if s2.Len() != len(fks)-1 {
		t.Fatalf("Len %d, want %d", s2.Len(), len(fks)-1)
	}
}

// TestDiskStoreReadsFormat2: a file written by an earlier release (format 2, data inline) is
// read, new puts go to the data file, and the file becomes format 3.
func TestDiskStoreReadsFormat2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "glacier.db")
	fks, frs := testFragments(t, 1)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket(bucketMeta)
		f, _ := tx.CreateBucket(bucketFragments)
		if err := m.Put(metaFormat, []byte{valueInline}); err != nil {
			return err
		}
		return f.Put(fks[0][:], encodeInlineEntry(&frs[0]))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenDiskStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(fks[0]); err != nil || !sameFragment(got, frs[0]) {
		t.Fatalf("Get of a format 2 value: %v", err)
	}
	if err := s.Put(fks[1], frs[1]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(fks[1]); err != nil || !sameFragment(got, frs[1]) {
		t.Fatalf("Get of a new value: %v", err)
	}
	if s.Len() != 2 || s.Bytes() != int64(len(frs[0].Data)+len(frs[1].Data)) {
		t.Fatalf("Len %d Bytes %d", s.Len(), s.Bytes())
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaFormat); !bytes.Equal(v, []byte{diskFormat}) {
			t.Fatalf("file format %v after open, want %d", v, diskFormat)
		}
		return nil
	})
}

// BenchmarkDiskStoreApply64K is a holder's share of POST's aggregates: batches of 13 fragments
// of 64 KB (the 64/8 code over 512,000 bytes, on a ring of five nodes), as its write-back
// commits them. cpu-ns/op is the process's CPU per fragment (system time included: the data
// file's writes and fsyncs are most of it).
func BenchmarkDiskStoreApply64K(b *testing.B) {
	const perBatch = 13
	s, _ := openTestDiskStore(b)
	c, _ := NewCodec(64, 8)
	rng := rand.New(rand.NewPCG(1, 1))
	e, err := Encode(c, testKey(1), testRingID, []byte("bench"), 1, time.Unix(2e9, 0), randBytes(rng, 512_000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(e.Frags[0])))
	ops := make([]FragOp, 0, perBatch)
	flush := func() {
		if _, err := s.Apply(ops); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		var fk ids.ID
		for j := range fk {
			fk[j] = byte(rng.Uint32())
		}
		f := Fragment{Manifest: e.Manifest, Index: i % 64, Data: e.Frags[i%64], Proof: e.proofs[i%64]}
		i++
		if ops = append(ops, FragOp{Key: fk, Put: &f}); len(ops) == perBatch {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
