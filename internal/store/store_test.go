package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
)

func TestPutGet(t *testing.T) {
	s := openTest(t, "", Options{InlineMax: 1024, MaxPayload: 64 << 10, MaxAux: 16})
	r := rand.New(rand.NewPCG(1, 0))
	cases := []struct {
		name string
		size int
		aux  []byte
		err  error
		file bool
	}{
		{name: "empty", size: 0},
		{name: "small", size: 100, aux: []byte("hdr")},
		{name: "inline max", size: 1024},
		{name: "just above inline", size: 1025, file: true},
		{name: "large", size: 40 << 10, aux: []byte("0123456789abcdef"), file: true},
		{name: "max payload", size: 64 << 10, file: true},
		{name: "payload too large", size: 64<<10 + 1, err: ErrTooLarge},
		{name: "aux too large", size: 10, aux: make([]byte, 17), err: ErrTooLarge},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Object{Meta: Meta{
				Key: keyOf(ringA, c.name), Type: uint8(i), Seq: uint64(i * 7),
				Expiry: t0.Add(time.Duration(i) * time.Hour), Aux: c.aux,
			}, Payload: randBytes(r, c.size)}
			wantErr(t, "Put", s.Put(o), c.err)
			has, err := s.Has(o.Key)
			if err != nil || has != (c.err == nil) {
				t.Fatalf("Has = %v, %v", has, err)
			}
			if c.err != nil {
				_, err := s.Get(o.Key)
				wantErr(t, "Get", err, ErrNotFound)
				_, err = s.Meta(o.Key)
				wantErr(t, "Meta", err, ErrNotFound)
				return
			}
			checkObject(t, s, o)
			m, err := s.Meta(o.Key)
			if err != nil || m.Size != int64(c.size) || m.Seq != o.Seq || !bytes.Equal(m.Aux, c.aux) {
				t.Fatalf("Meta = %+v, %v", m, err)
			}
			if got := fileExists(s.blobPath(m.Hash)); got != c.file {
				t.Fatalf("payload file exists = %v, want %v", got, c.file)
			}
		})
	}
	st := mustStats(t, s)
	if st.Objects != 6 || st.Bytes != 0+100+1024+1025+40<<10+64<<10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestReplaceReleasesOldPayload(t *testing.T) {
	s := openTest(t, "", Options{InlineMax: 1024})
	r := rand.New(rand.NewPCG(2, 0))
	k := keyOf(ringA, "k")
	large1, large2, small := randBytes(r, 5000), randBytes(r, 6000), randBytes(r, 10)
	steps := []struct {
		payload []byte
		files   int
	}{
		{large1, 1}, {large2, 1}, {small, 0}, {large1, 1}, {large1, 1}, {small, 0},
	}
	for i, st := range steps {
		o := Object{Meta: Meta{Key: k, Seq: uint64(i)}, Payload: st.payload}
		mustPut(t, s, o)
		checkObject(t, s, o)
		if n := len(blobFiles(t, s)); n != st.files {
			t.Fatalf("step %d: %d payload files, want %d", i, n, st.files)
		}
		if got := mustStats(t, s); got.Objects != 1 || got.Bytes != int64(len(st.payload)) || got.Payloads != 1 {
			t.Fatalf("step %d: stats %+v", i, got)
		}
	}
}

func TestDedupLargePayloads(t *testing.T) {
	c := &clock{now: t0}
	s := openTest(t, "", Options{InlineMax: 1024, TrashGrace: time.Hour, Now: c.Now})
	payload := randBytes(rand.New(rand.NewPCG(3, 0)), 300<<10)
	keys := []ids.Key{keyOf(ringA, "x"), keyOf(ringB, "x"), keyOf(ringA, "y")}
	for _, k := range keys {
		mustPut(t, s, Object{Meta: Meta{Key: k}, Payload: payload})
	}
	if n := len(blobFiles(t, s)); n != 1 {
		t.Fatalf("%d payload files for one distinct payload", n)
	}
	st := mustStats(t, s)
	if st.Objects != 3 || st.Bytes != 3*300<<10 || st.Payloads != 1 || st.UniqueBytes != 300<<10 {
		t.Fatalf("stats %+v", st)
	}
	// Deleting and purging all but one keeps the file; purging the last removes it.
	for i, k := range keys {
		wantErr(t, "Delete", s.Delete(k), nil)
		c.advance(2 * time.Hour)
		if _, err := s.PurgeTrash(c.Now()); err != nil {
			t.Fatal(err)
		}
		if n, want := len(blobFiles(t, s)), map[bool]int{true: 0, false: 1}[i == len(keys)-1]; n != want {
			t.Fatalf("after purging %d of %d: %d files, want %d", i+1, len(keys), n, want)
		}
		if i < len(keys)-1 {
			checkObject(t, s, Object{Meta: Meta{Key: keys[i+1]}, Payload: payload})
		}
	}
	if st := mustStats(t, s); st != (Stats{}) {
		t.Fatalf("stats after purging everything: %+v", st)
	}
}

func TestSeqPrecondition(t *testing.T) {
	s := openTest(t, "", Options{})
	k := keyOf(ringA, "head")
	cases := []struct {
		seq uint64
		err error
	}{
		{5, nil}, // nothing stored: any sequence
		{5, ErrPrecondition},
		{4, ErrPrecondition},
		{0, ErrPrecondition},
		{6, nil},
		{1 << 63, nil},
		{1<<63 - 1, ErrPrecondition},
	}
	want := uint64(0)
	for i, c := range cases {
		err := s.PutIfSeqGreater(Object{Meta: Meta{Key: k, Seq: c.seq}, Payload: []byte{byte(i)}})
		wantErr(t, "PutIfSeqGreater", err, c.err)
		if err == nil {
			want = c.seq
		}
		if m, err := s.Meta(k); err != nil || m.Seq != want {
			t.Fatalf("case %d: stored seq %d (%v), want %d", i, m.Seq, err, want)
		}
	}

	// In a batch, each object is judged on its own and later ones see earlier ones.
	k2 := keyOf(ringA, "other")
	res, err := s.PutBatch([]Object{
		{Meta: Meta{Key: k, Seq: 1}},                                      // stale
		{Meta: Meta{Key: k2, Seq: 3}},                                     // new key
		{Meta: Meta{Key: k2, Seq: 3}},                                     // same seq as the one before it in the batch
		{Meta: Meta{Key: k2, Seq: 4}},                                     // higher
		{Meta: Meta{Key: k2}, Payload: make([]byte, DefaultMaxPayload+1)}, // too large
	}, SeqGreater)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []error{ErrPrecondition, nil, ErrPrecondition, nil, ErrTooLarge} {
		wantErr(t, "PutBatch result", res[i], w)
	}
	if m, _ := s.Meta(k2); m.Seq != 4 {
		t.Fatalf("k2 seq %d, want 4", m.Seq)
	}

	// Racing writers: the highest sequence always wins and no lower one overwrites it.
	k3 := keyOf(ringB, "race")
	var wg sync.WaitGroup
	const writers = 16
	for i := 1; i <= writers; i++ {
		wg.Go(func() {
			err := s.PutIfSeqGreater(Object{Meta: Meta{Key: k3, Seq: uint64(i)}, Payload: []byte{byte(i)}})
			if err != nil && !errors.Is(err, ErrPrecondition) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if o, err := s.Get(k3); err != nil || o.Seq != writers || o.Payload[0] != writers {
		t.Fatalf("after race: seq %d payload %v (%v), want %d", o.Seq, o.Payload, err, writers)
	}
}

func TestTrashRestorePurge(t *testing.T) {
	c := &clock{now: t0}
	s := openTest(t, "", Options{InlineMax: 100, TrashGrace: 24 * time.Hour, Now: c.Now})
	r := rand.New(rand.NewPCG(4, 0))
	small := Object{Meta: Meta{Key: keyOf(ringA, "small"), Seq: 1, Aux: []byte("a")}, Payload: randBytes(r, 50)}
	large := Object{Meta: Meta{Key: keyOf(ringA, "large"), Seq: 2}, Payload: randBytes(r, 5000)}
	for _, o := range []Object{small, large} {
		mustPut(t, s, o)
	}
	ghost := keyOf(ringA, "ghost")

	type step struct {
		name  string
		do    func() error
		err   error
		live  map[ids.Key]bool
		trash int64
	}
	both := map[ids.Key]bool{small.Key: true, large.Key: true}
	onlyLarge := map[ids.Key]bool{large.Key: true}
	none := map[ids.Key]bool{}
	steps := []step{
		{"delete missing", func() error { return s.Delete(ghost) }, ErrNotFound, both, 0},
		{"restore missing", func() error { return s.Restore(small.Key) }, ErrNotFound, both, 0},
		{"delete small", func() error { return s.Delete(small.Key) }, nil, onlyLarge, 1},
		{"delete small again", func() error { return s.Delete(small.Key) }, ErrNotFound, onlyLarge, 1},
		{"restore small", func() error { return s.Restore(small.Key) }, nil, both, 0},
		{"delete both", func() error {
			return errors.Join(s.Delete(small.Key), s.Delete(large.Key))
		}, nil, none, 2},
		{"purge within grace", func() error {
			c.advance(23 * time.Hour)
			n, err := s.PurgeTrash(c.Now())
			if n != 0 {
				t.Errorf("purged %d within grace", n)
			}
			return err
		}, nil, none, 2},
		{"restore large", func() error { return s.Restore(large.Key) }, nil, onlyLarge, 1},
		{"put small anew", func() error {
			return s.Put(Object{Meta: Meta{Key: small.Key, Seq: 9}, Payload: []byte("new")})
		}, nil, both, 1},
		{"restore over live", func() error { return s.Restore(small.Key) }, ErrPrecondition, both, 1},
		{"purge after grace", func() error {
			c.advance(2 * time.Hour)
			n, err := s.PurgeTrash(c.Now())
			if n != 1 {
				t.Errorf("purged %d, want 1", n)
			}
			return err
		}, nil, both, 0},
		{"restore purged", func() error { return s.Restore(small.Key) }, ErrNotFound, both, 0},
	}
	for _, st := range steps {
		wantErr(t, st.name, st.do(), st.err)
		for _, k := range []ids.Key{small.Key, large.Key} {
			if has, _ := s.Has(k); has != st.live[k] {
				t.Fatalf("%s: Has(%s) = %v", st.name, k, has)
			}
		}
		if got := mustStats(t, s); got.TrashObjects != st.trash || got.Objects != int64(len(st.live)) {
			t.Fatalf("%s: stats %+v", st.name, got)
		}
	}
	checkObject(t, s, large)
	if _, _, err := s.Trashed(small.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Trashed after purge: %v", err)
	}
	// Trashed reports what and when.
	wantErr(t, "Delete", s.Delete(large.Key), nil)
	if m, at, err := s.Trashed(large.Key); err != nil || !at.Equal(c.Now()) || m.Seq != large.Seq {
		t.Fatalf("Trashed = %+v %v %v", m, at, err)
	}
	if _, err := s.Get(large.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of trashed: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	s := openTest(t, "", Options{TrashGrace: time.Hour})
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	k := keyOf(ringA, "leased")
	mustPut(t, s, Object{Meta: Meta{Key: k, Expiry: h(10)}})

	cases := []struct {
		name  string
		to    time.Time
		force bool
		want  time.Time
	}{
		{"extend", h(20), false, h(20)},
		{"no shorten", h(15), false, h(20)},
		{"same", h(20), false, h(20)},
		{"forever", time.Time{}, false, time.Time{}},
		{"nothing beats forever", h(99), false, time.Time{}},
		{"explicit shorten", h(5), true, h(5)},
		{"beyond year 2262 clamps", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), false, maxExpiry},
		{"explicit back", h(5), true, h(5)},
	}
	for _, c := range cases {
		var err error
		if c.force {
			err = s.SetExpiry(k, c.to)
		} else {
			var got time.Time
			got, err = s.UpdateExpiry(k, c.to)
			if err == nil && !got.Equal(c.want) {
				t.Fatalf("%s: UpdateExpiry returned %v, want %v", c.name, got, c.want)
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m, _ := s.Meta(k); !m.Expiry.Equal(c.want) {
			t.Fatalf("%s: expiry %v, want %v", c.name, m.Expiry, c.want)
		}
	}
	if _, err := s.UpdateExpiry(keyOf(ringA, "none"), h(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateExpiry of missing key: %v", err)
	}

	// Several leases; Expired lists those ended at now, earliest first; CollectExpired trashes them.
	leases := map[string]int{"a": 3, "b": 1, "c": 7, "d": 0, "e": 2}
	for name, hours := range leases {
		var exp time.Time
		if hours > 0 {
			exp = h(hours)
		}
		mustPut(t, s, Object{Meta: Meta{Key: keyOf(ringB, name), Expiry: exp}})
	}
	var order []ids.Key
	for m, err := range s.Expired(h(3)) {
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, m.Key)
	}
	want := []ids.Key{keyOf(ringB, "b"), keyOf(ringB, "e"), keyOf(ringB, "a")}
	if len(order) != len(want) {
		t.Fatalf("Expired yielded %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("Expired yielded %v, want %v", order, want)
		}
	}
	n, err := s.CollectExpired(h(3))
	if err != nil || n != 3 {
		t.Fatalf("CollectExpired = %d, %v; want 3", n, err)
	}
	for name := range leases {
		has, _ := s.Has(keyOf(ringB, name))
		if has != (name == "c" || name == "d") {
			t.Fatalf("after collection Has(%s) = %v", name, has)
		}
	}
	if st := mustStats(t, s); st.Objects != 3 || st.TrashObjects != 3 {
		t.Fatalf("stats %+v", st)
	}
	if _, at, err := s.Trashed(keyOf(ringB, "b")); err != nil || !at.Equal(h(3)) {
		t.Fatalf("expired object trashed at %v (%v), want %v", at, err, h(3))
	}
	if n, err := s.CollectExpired(h(3)); n != 0 || err != nil {
		t.Fatalf("second CollectExpired = %d, %v", n, err)
	}
	// Restore brings the lease back as it was; extending it keeps it alive.
	wantErr(t, "Restore", s.Restore(keyOf(ringB, "a")), nil)
	if _, err := s.UpdateExpiry(keyOf(ringB, "a"), h(50)); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CollectExpired(h(10)); n != 2 { // k (h5) and c (h7)
		t.Fatalf("CollectExpired(h10) = %d, want 2", n)
	}
	if n, _ := s.PurgeTrash(h(10)); n != 2 { // b, e trashed at h3 are past the 1h grace; k, c are not
		t.Fatalf("PurgeTrash = %d, want 2", n)
	}
}

func TestManyExpiredInChunks(t *testing.T) {
	s := openTest(t, "", Options{})
	n := 3*chunkSize + 7
	batch := make([]Object, n)
	for i := range batch {
		batch[i] = Object{Meta: Meta{Key: keyOf(ringA, string(rune(i))), Expiry: t0.Add(time.Duration(i) * time.Second)}}
	}
	if res, err := s.PutBatch(batch, nil); err != nil || errors.Join(res...) != nil {
		t.Fatal(err, errors.Join(res...))
	}
	count := 0
	for _, err := range s.Expired(t0.Add(time.Hour)) {
		if err != nil {
			t.Fatal(err)
		}
		count++
	}
	if count != n {
		t.Fatalf("Expired yielded %d, want %d", count, n)
	}
	if got, err := s.CollectExpired(t0.Add(time.Hour)); got != n || err != nil {
		t.Fatalf("CollectExpired = %d, %v", got, err)
	}
	if got, err := s.PurgeTrash(t0.Add(time.Hour + DefaultTrashGrace)); got != n || err != nil {
		t.Fatalf("PurgeTrash = %d, %v", got, err)
	}
	if st := mustStats(t, s); st != (Stats{}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestOpenRepairs(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{InlineMax: 100})
	r := rand.New(rand.NewPCG(5, 0))
	good := Object{Meta: Meta{Key: keyOf(ringA, "good")}, Payload: randBytes(r, 1000)}
	lost := Object{Meta: Meta{Key: keyOf(ringA, "lost")}, Payload: randBytes(r, 1000)}
	rotten := Object{Meta: Meta{Key: keyOf(ringA, "rotten")}, Payload: randBytes(r, 1000)}
	for _, o := range []Object{good, lost, rotten} {
		mustPut(t, s, o)
	}
	wantErr(t, "Delete", s.Delete(lost.Key), nil) // damage in the trash is reported too
	lostM, _, _ := s.Trashed(lost.Key)
	rottenM, _ := s.Meta(rotten.Key)
	s.Close()

	// Crash debris and damage.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(s.tmpDir+"/half-written", []byte("x"), 0o600))
	orphan := Hash(ids.Hash([]byte("nobody refers to me")))
	must(os.WriteFile(s.blobPath(orphan), []byte("nobody refers to me"), 0o600))
	must(os.WriteFile(s.blobDir+"/not-a-hash", nil, 0o600))
	must(os.Remove(s.blobPath(lostM.Hash)))
	flipped := bytes.Clone(rotten.Payload)
	flipped[500] ^= 1
	must(os.WriteFile(s.blobPath(rottenM.Hash), flipped, 0o600))

	for _, verify := range []bool{false, true} {
		s = openTest(t, dir, Options{InlineMax: 100, VerifyPayloads: verify})
		rep := s.Repairs()
		wantDamaged := map[ids.Key]bool{lost.Key: true}
		if verify {
			wantDamaged[rotten.Key] = true // same size: only hashing finds it
		}
		if len(rep.Fixed) != 0 || len(rep.Damaged) != len(wantDamaged) {
			t.Fatalf("verify=%v: report %+v", verify, rep)
		}
		for _, d := range rep.Damaged {
			if !wantDamaged[d.Key] || !errors.Is(d.Err, ErrCorrupt) || d.InTrash != (d.Key == lost.Key) {
				t.Fatalf("verify=%v: unexpected damage %+v", verify, d)
			}
		}
		if !verify && (rep.TempFiles != 1 || rep.Orphans != 2) {
			t.Fatalf("report %+v, want 1 temp file and 2 orphans removed", rep)
		}
		if fileExists(s.blobPath(orphan)) || fileExists(s.tmpDir+"/half-written") {
			t.Fatal("debris survived Open")
		}
		checkObject(t, s, good)
		// Scrub finds both at run time, whatever Open was asked to verify.
		if dmg, err := s.Scrub(); err != nil || len(dmg) != 2 {
			t.Fatalf("Scrub = %+v, %v; want the lost and the rotten object", dmg, err)
		}
		if _, err := s.Get(rotten.Key); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Get of rotten payload: %v, want ErrCorrupt", err)
		}
		s.Close()
	}

	// Putting a good copy heals both.
	s = openTest(t, dir, Options{InlineMax: 100, VerifyPayloads: true})
	wantErr(t, "Restore", s.Restore(lost.Key), nil)
	if _, err := s.Get(lost.Key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of lost payload: %v, want ErrCorrupt", err)
	}
	mustPut(t, s, lost)
	mustPut(t, s, rotten)
	checkObject(t, s, lost)
	checkObject(t, s, rotten)
	s.Close()
	s = openTest(t, dir, Options{InlineMax: 100, VerifyPayloads: true})
	if rep := s.Repairs(); len(rep.Damaged)+len(rep.Fixed)+rep.Orphans+rep.TempFiles != 0 {
		t.Fatalf("report after healing: %+v", rep)
	}
	if dmg, err := s.Scrub(); err != nil || len(dmg) != 0 {
		t.Fatalf("Scrub after healing = %+v, %v", dmg, err)
	}
}

func TestClosedAndLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	if _, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked directory succeeded")
	}
	s.Close()
	wantErr(t, "Put after Close", s.Put(Object{Meta: Meta{Key: keyOf(ringA, "x")}}), ErrClosed)
	_, err := s.Get(keyOf(ringA, "x"))
	wantErr(t, "Get after Close", err, ErrClosed)
}

// TestConcurrentSharedPayloads races writers, deleters and purgers over a few shared large
// payloads: a live object must always read back exactly, never as missing or corrupt.
func TestConcurrentSharedPayloads(t *testing.T) {
	seed := testSeed(t, 6)
	c := &clock{now: t0}
	now := c.Now
	s := openTest(t, "", Options{InlineMax: 512, TrashGrace: time.Nanosecond, Now: now})
	pool := make([][]byte, 3)
	for i := range pool {
		pool[i] = randBytes(rand.New(rand.NewPCG(seed, uint64(i))), 2000+i)
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(100+g)))
			for i := range 150 {
				k := keyOf(ringA, string(rune('a'+g))+string(rune(r.IntN(5))))
				o := Object{Meta: Meta{Key: k}, Payload: pool[r.IntN(len(pool))]}
				switch r.IntN(4) {
				case 0, 1:
					if err := s.Put(o); err != nil {
						t.Errorf("Put: %v", err)
					}
				case 2:
					if err := s.Delete(k); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Delete: %v", err)
					}
				case 3:
					c.advance(time.Second)
					if _, err := s.PurgeTrash(now()); err != nil {
						t.Errorf("Purge: %v", err)
					}
				}
				// Only this goroutine writes its keys, so a live object must be the one it put.
				if got, err := s.Get(k); err == nil {
					if !bytes.Equal(got.Payload, o.Payload) && !slicesContain(pool, got.Payload) {
						t.Errorf("Get %s: payload not from the pool", k)
					}
				} else if !errors.Is(err, ErrNotFound) {
					t.Errorf("Get %s (iteration %d): %v", k, i, err)
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	s = openTest(t, s.Dir(), Options{InlineMax: 512, VerifyPayloads: true})
	if rep := s.Repairs(); len(rep.Fixed)+len(rep.Damaged) != 0 {
		t.Fatalf("report after concurrent run: %+v", rep)
	}
}

func slicesContain(pool [][]byte, b []byte) bool {
	for _, p := range pool {
		if bytes.Equal(p, b) {
			return true
		}
	}
	return false
}

// TestGroupCommitIsolatesFailures runs writes that fail (deletes of missing keys, stale
// sequences) concurrently with writes that succeed, so they share group commits: every write
// must get its own verdict and the index must count exactly the successful ones.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTest(t, "", Options{InlineMax: 256})
	const goroutines, each = 8, 40
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				k := keyOf(ringA, string(rune(g*1000+i)))
				if err := s.Put(Object{Meta: Meta{Key: k, Seq: 2}, Payload: make([]byte, 300+i%2)}); err != nil {
					t.Errorf("Put: %v", err)
				}
				if err := s.PutIfSeqGreater(Object{Meta: Meta{Key: k, Seq: 1}}); !errors.Is(err, ErrPrecondition) {
					t.Errorf("stale PutIfSeqGreater: %v", err)
				}
				if err := s.Delete(keyOf(ringB, string(rune(g*1000+i)))); !errors.Is(err, ErrNotFound) {
					t.Errorf("Delete of missing key: %v", err)
				}
			}
		})
	}
	wg.Wait()
	st := mustStats(t, s)
	if st.Objects != goroutines*each || st.Payloads != 2 || len(blobFiles(t, s)) != 2 {
		t.Fatalf("stats %+v, %d files", st, len(blobFiles(t, s)))
	}
}

func TestOpenRefusesLostIndex(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	mustPut(t, s, Object{Meta: Meta{Key: keyOf(ringA, "big")}, Payload: make([]byte, DefaultInlineMax+1)})
	s.Close()
	if err := os.Remove(dir + "/index.db"); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, Options{Logger: quietLog}); err == nil {
		s.Close()
		t.Fatal("Open with a lost index and payload files present succeeded")
	}
	if len(blobFiles(t, s)) != 1 {
		t.Fatal("payload files were touched")
	}
}

func TestExpiryClamping(t *testing.T) {
	s := openTest(t, "", Options{})
	cases := []struct {
		in, want time.Time
	}{
		{time.Time{}, time.Time{}},
		{time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), minExpiry},
		{time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), minExpiry},
		{time.Date(1969, 12, 31, 23, 59, 59, 0, time.FixedZone("x", 3600)), time.Date(1969, 12, 31, 22, 59, 59, 0, time.UTC)},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), maxExpiry},
	}
	for i, c := range cases {
		k := keyOf(ringA, string(rune(i)))
		mustPut(t, s, Object{Meta: Meta{Key: k, Expiry: c.in}})
		if m, _ := s.Meta(k); !m.Expiry.Equal(c.want) || m.Expiry.IsZero() != c.want.IsZero() {
			t.Fatalf("expiry %v stored as %v, want %v", c.in, m.Expiry, c.want)
		}
	}
}
