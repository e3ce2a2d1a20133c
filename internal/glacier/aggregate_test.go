package glacier

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

var aggT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testAggregator(t testing.TB, mod func(*AggregatorConfig)) *Aggregator {
	t.Helper()
	cfg := DefaultAggregatorConfig(testRingID, testKey(7).Public().(ed25519.PublicKey))
	if mod != nil {
		mod(&cfg)
	}
	a, err := NewAggregator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// contentMember is a content-hash object of n random bytes.
func contentMember(r *rand.Rand, n int, expiry time.Time) Member {
	d := randBytes(r, n)
	return Member{Key: ids.Key{Ring: testRingID, ID: ids.Hash(d)}, Data: d, Expiry: expiry, ContentHash: true}
}

// namedMember is an object whose key is not its hash (a log entry, a head backup).
func namedMember(r *rand.Rand, n int, expiry time.Time) Member {
	var id ids.ID
	copy(id[:], randBytes(r, ids.Bytes))
	return Member{Key: ids.Key{Ring: testRingID, ID: id}, Data: randBytes(r, n), Expiry: expiry}
}

func mustAdd(t *testing.T, a *Aggregator, now time.Time, m Member) []*Aggregate {
	t.Helper()
	out, err := a.Add(now, m)
	if err != nil {
		t.Fatalf("add %s: %v", m.Key, err)
	}
	return out
}

// checkBlob decodes g's blob and checks it against g's TOC and the members it should hold.
func checkBlob(t *testing.T, seed uint64, g *Aggregate, want map[ids.Key][]byte) {
	t.Helper()
	d, err := DecodeAggregate(g.Blob)
	if err != nil {
		t.Fatalf("seed %d: aggregate %d does not decode: %v", seed, g.Seq, err)
	}
	if d.Seq != g.Seq || d.Prev != g.Prev || d.Ring != g.Ring || len(d.TOC) != len(g.TOC) {
		t.Fatalf("seed %d: aggregate %d decodes as seq %d, %d members", seed, g.Seq, d.Seq, len(d.TOC))
	}
	for i, e := range d.TOC {
		if e != g.TOC[i] {
			t.Fatalf("seed %d: aggregate %d TOC entry %d: %+v, built %+v", seed, g.Seq, i, e, g.TOC[i])
		}
		k := ids.Key{Ring: g.Ring, ID: e.ID}
		got, err := d.Member(k)
		if err != nil || !bytes.Equal(got, want[k]) {
			t.Fatalf("seed %d: member %s of aggregate %d: %d bytes (err %v), want %d", seed, k, g.Seq, len(got), err, len(want[k]))
		}
	}
}

func TestAggregateFlushBounds(t *testing.T) {
	exp := aggT0.Add(30 * 24 * time.Hour)
	cases := []struct {
		name      string
		sizes     []int         // member sizes, added one a minute
		tickAt    time.Duration // then Tick at this offset from the first add (0: no tick)
		wantCount []int         // members of each aggregate produced
	}{
		{"count bound", repeat(100, 120), 0, []int{50, 50}},
		{"size bound", repeat(100_000, 12), 0, []int{5, 5}},
		{"exact fit flushes at once", []int{DefaultAggregateBytes - aggHeaderSize - 2*aggEntrySize - 10, 10}, 0, []int{2}},
		{"one too many bytes waits for the next", []int{DefaultAggregateBytes - aggHeaderSize - 2*aggEntrySize - 10, 11}, 0, []int{1}},
		{"largest member alone", []int{DefaultAggregateBytes - aggHeaderSize - aggEntrySize}, 0, []int{1}},
		{"age bound not yet", repeat(10, 3), 12*time.Hour - time.Nanosecond, nil},
		{"age bound", repeat(10, 3), 12 * time.Hour, []int{3}},
		{"age counts from the oldest pending", repeat(10, 60), 12 * time.Hour, []int{50}},
		{"age of the second batch", repeat(10, 60), 12*time.Hour + 50*time.Minute, []int{50, 10}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(i)
			r := rand.New(rand.NewPCG(seed, 1))
			a := testAggregator(t, nil)
			var got []int
			now := aggT0
			for _, n := range c.sizes {
				for _, g := range mustAdd(t, a, now, namedMember(r, n, exp)) {
					got = append(got, len(g.TOC))
					if len(g.Blob) > DefaultAggregateBytes {
						t.Fatalf("aggregate of %d bytes", len(g.Blob))
					}
				}
				now = now.Add(time.Minute)
			}
			if c.tickAt > 0 {
				if g := a.Tick(aggT0.Add(c.tickAt)); g != nil {
					got = append(got, len(g.TOC))
				}
			}
			if !equalInts(got, c.wantCount) {
				t.Fatalf("seed %d: aggregates of %v members, want %v", seed, got, c.wantCount)
			}
		})
	}
	a := testAggregator(t, nil)
	if a.Flush(aggT0) != nil || a.Tick(aggT0.Add(24*time.Hour)) != nil {
		t.Fatal("an empty batch flushed")
	}
	if _, err := a.Add(aggT0, Member{Key: ids.Key{Ring: testRingID}, Data: make([]byte, MaxObjectSize), Expiry: exp}); !errors.Is(err, ErrMemberTooLarge) {
		t.Fatalf("oversized member: %v", err)
	}
	// A member above MaxBytes but within a Glacier object (a 1 MiB PAST chunk) goes alone.
	big := make([]byte, DefaultAggregateBytes+1)
	if out, err := a.Add(aggT0, Member{Key: ids.Key{Ring: testRingID, ID: ids.Hash(big)}, Data: big, Expiry: exp, ContentHash: true}); err != nil || len(out) != 1 || len(out[0].TOC) != 1 {
		t.Fatalf("large member: %v, %d aggregates", err, len(out))
	}
	if _, err := a.Add(aggT0, Member{Key: ids.Key{Ring: testRingID, ID: ids.HashString("x")}, Data: []byte("y"), Expiry: exp, ContentHash: true}); err == nil {
		t.Fatal("content-hash member with the wrong key accepted")
	}
	if _, err := a.Add(aggT0, Member{Key: ids.Key{Ring: testRingID}, Data: []byte("y"), Expiry: aggT0}); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired member: %v", err)
	}
}

// Random sizes: every aggregate respects both bounds, a size flush happens only when the next
// member would not fit, and each member lands in exactly one aggregate, byte-exact.
func TestAggregateRandomBatches(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		r := rand.New(rand.NewPCG(seed, 2))
		a := testAggregator(t, nil)
		want := make(map[ids.Key][]byte)
		where := make(map[ids.Key]ids.ID)
		var all []*Aggregate
		now := aggT0
		for range 600 {
			n := r.IntN(40_000) + 1
			if r.IntN(4) == 0 {
				n = r.IntN(200) + 1
			}
			m := contentMember(r, n, now.Add(time.Duration(r.IntN(1000)+1)*time.Hour))
			want[m.Key] = m.Data
			out := mustAdd(t, a, now, m)
			for _, g := range out {
				if len(g.Blob) > DefaultAggregateBytes || len(g.TOC) > DefaultAggregateObjects {
					t.Fatalf("seed %d: aggregate %d: %d bytes, %d members", seed, g.Seq, len(g.Blob), len(g.TOC))
				}
				if len(g.TOC) < DefaultAggregateObjects && len(g.Blob)+aggEntrySize+n <= DefaultAggregateBytes && g.TOC[len(g.TOC)-1].ID != m.Key.ID {
					t.Fatalf("seed %d: aggregate %d flushed with room for the next member", seed, g.Seq)
				}
				for _, e := range g.TOC {
					k := ids.Key{Ring: testRingID, ID: e.ID}
					if _, dup := where[k]; dup {
						t.Fatalf("seed %d: member %s in two aggregates", seed, k)
					}
					where[k] = g.Key
				}
				checkBlob(t, seed, g, want)
				all = append(all, g)
			}
			now = now.Add(time.Duration(r.IntN(30)) * time.Minute)
			if g := a.Tick(now); g != nil {
				all = append(all, g)
				for _, e := range g.TOC {
					where[ids.Key{Ring: testRingID, ID: e.ID}] = g.Key
				}
			}
		}
		if g := a.Flush(now); g != nil {
			for _, e := range g.TOC {
				where[ids.Key{Ring: testRingID, ID: e.ID}] = g.Key
			}
		}
		if len(where) != len(want) {
			t.Fatalf("seed %d: %d of %d members aggregated", seed, len(where), len(want))
		}
		for k, g := range where {
			if got, ok := a.Locate(k); !ok || got != g {
				t.Fatalf("seed %d: index has %s in %v, flushed into %s", seed, k, got.Short(), g.Short())
			}
		}
	}
}

// Walking back from the head finds every member, and a restored Aggregator indexes them all
// where the original did and extracts them byte-exact.
func TestAggregateChainWalk(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		r := rand.New(rand.NewPCG(seed, 3))
		a := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 7 })
		stored := make(map[ids.ID]*Aggregate) // what Glacier holds: the current version of each
		want := make(map[ids.Key][]byte)
		var order []ids.Key
		now := aggT0
		keep := func(gs ...*Aggregate) {
			for _, g := range gs {
				if g != nil {
					stored[g.Key] = g
				}
			}
		}
		for i := range 200 {
			m := namedMember(r, r.IntN(3000)+1, now.Add(time.Duration(r.IntN(100)+50)*time.Hour))
			if i%3 == 0 {
				m = contentMember(r, r.IntN(3000)+1, m.Expiry)
			}
			want[m.Key] = m.Data
			order = append(order, m.Key)
			keep(mustAdd(t, a, now, m)...)
			now = now.Add(time.Duration(r.IntN(90)) * time.Minute)
			keep(a.Tick(now))
		}
		keep(a.Flush(now))
		// Forget a third of the members and let time pass: the walk must find the repacked
		// versions and index exactly what the original still indexes.
		forgotten := make(map[ids.Key]bool)
		for i, k := range order {
			if i%3 == 0 {
				a.Forget(k)
				forgotten[k] = true
			}
		}
		now = now.Add(60 * time.Hour)
		reps := a.Repack(now)
		if len(reps) == 0 {
			t.Fatalf("seed %d: nothing repacked", seed)
		}
		for _, rp := range reps {
			keep(rp.New)
		}
		keep(a.Renewals(now)...)

		b := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 7 })
		w := b.Walk(a.Head())
		steps := 0
		for {
			k, ok := w.Want()
			if !ok {
				break
			}
			g := stored[k]
			if g == nil {
				t.Fatalf("seed %d: walk wants %s, never stored", seed, k.Short())
			}
			if err := w.Feed(g.Blob, g.Version, g.Expiry); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			steps++
		}
		if steps != len(stored) {
			t.Fatalf("seed %d: walk visited %d of %d aggregates", seed, steps, len(stored))
		}
		if err := b.Restore(w); err != nil {
			t.Fatal(err)
		}
		if b.Head() != a.Head() {
			t.Fatalf("seed %d: restored head differs", seed)
		}
		for k, data := range want {
			ga, oka := a.Locate(k)
			gb, ok := b.Locate(k)
			if forgotten[k] && ok {
				// A deletion reaches the blob only at the aggregate's next repack; until then
				// the owner's log, not the chain, knows it.
				g, _ := b.Aggregate(gb)
				if _, err := g.Member(k); err != nil {
					t.Fatalf("seed %d: restored index has %s in %s, which lacks it", seed, k, gb.Short())
				}
				continue
			}
			if ok != oka || ga != gb {
				t.Fatalf("seed %d: restored index has %s in %s (%v), original in %s (%v)", seed, k, gb.Short(), ok, ga.Short(), oka)
			}
			if !ok {
				continue
			}
			g, _ := b.Aggregate(gb)
			got, err := g.Member(k)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("seed %d: member %s: %v", seed, k, err)
			}
		}
		// The restored Aggregator continues the chain.
		g := mustAdd(t, b, now, namedMember(r, 10, now.Add(time.Hour)))
		if g2 := b.Flush(now); len(g) != 0 || g2 == nil || g2.Prev != a.Head() || g2.Seq != uint64(len(stored))+1 {
			t.Fatalf("seed %d: restored aggregator does not continue the chain", seed)
		}
		// A blob from elsewhere in the chain is refused where another was expected.
		w2 := b.Walk(a.Head())
		for _, g := range stored {
			if g.Key != a.Head() {
				if err := w2.Feed(g.Blob, g.Version, g.Expiry); !errors.Is(err, ErrBadAggregate) {
					t.Fatalf("seed %d: wrong blob in the walk: %v", seed, err)
				}
				break
			}
		}
	}
}

func TestAggregateRepack(t *testing.T) {
	const size = 1000
	long, short := aggT0.Add(1000*time.Hour), aggT0.Add(10*time.Hour)
	cases := []struct {
		name       string
		expired    int // of 10 members of size bytes, this many expire at short
		forgotten  int // and this many more are deleted
		wantRepack bool
	}{
		{"all live", 0, 0, false},
		{"80% live stays", 2, 0, false},
		{"70% live repacks", 3, 0, true},
		{"forgotten count as dead", 1, 2, true},
		{"nothing live", 10, 0, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(i)
			r := rand.New(rand.NewPCG(seed, 4))
			a := testAggregator(t, nil)
			want := make(map[ids.Key][]byte)
			var keys []ids.Key
			for j := range 10 {
				exp := long
				if j < c.expired {
					exp = short
				}
				m := namedMember(r, size, exp)
				if j%2 == 0 {
					m = contentMember(r, size, exp)
				}
				mustAdd(t, a, aggT0, m)
				keys = append(keys, m.Key)
				want[m.Key] = m.Data
			}
			g := a.Flush(aggT0)
			for _, k := range keys[c.expired : c.expired+c.forgotten] {
				if !a.Forget(k) {
					t.Fatalf("forget %s", k)
				}
			}
			if reps := a.Repack(short.Add(-time.Second)); len(reps) != 0 {
				t.Fatalf("seed %d: repacked at 80%% live or more", seed)
			}
			now := short.Add(time.Second)
			reps := a.Repack(now)
			if got := len(reps) == 1; got != c.wantRepack {
				t.Fatalf("seed %d: repacked %v, want %v", seed, got, c.wantRepack)
			}
			if !c.wantRepack {
				return
			}
			rp := reps[0]
			if rp.Old.Key != g.Key || rp.New.Key != g.Key || rp.New.Version <= rp.Old.Version || rp.New.Seq != g.Seq || rp.New.Prev != g.Prev {
				t.Fatalf("seed %d: repack is not a new version of the same aggregate: %+v", seed, rp.New)
			}
			live := make(map[ids.Key][]byte)
			for _, k := range keys[c.expired+c.forgotten:] {
				live[k] = want[k]
			}
			if len(rp.New.TOC) != len(live) {
				t.Fatalf("seed %d: repack kept %d members, want %d", seed, len(rp.New.TOC), len(live))
			}
			checkBlob(t, seed, rp.New, live)
			for _, k := range keys {
				_, inLive := live[k]
				if g2, ok := a.Locate(k); ok != inLive || (ok && g2 != g.Key) {
					t.Fatalf("seed %d: after repack, member %s indexed %v (live %v)", seed, k, ok, inLive)
				}
			}
			if f, _ := a.LiveFraction(g.Key, now); f != 1 {
				t.Fatalf("seed %d: live fraction after repack %v", seed, f)
			}
			if again := a.Repack(now); len(again) != 0 {
				t.Fatalf("seed %d: repacked twice", seed)
			}
			wantExp := long // the lease it already had
			if c.expired == 10 {
				wantExp = short
			}
			if !rp.New.Expiry.Equal(wantExp) {
				t.Fatalf("seed %d: repacked lease %v, want %v", seed, rp.New.Expiry, wantExp)
			}
		})
	}
}

// The lease of an aggregate follows its members' refreshed expiries, and every newer aggregate
// keeps a lease at least as long so the chain stays walkable.
func TestAggregateLeases(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 5))
	a := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 2 })
	var gs []*Aggregate
	var keys []ids.Key
	for j := range 6 {
		m := namedMember(r, 100, aggT0.Add(time.Duration(10+j)*time.Hour))
		keys = append(keys, m.Key)
		gs = append(gs, mustAdd(t, a, aggT0, m)...)
	}
	if len(gs) != 3 {
		t.Fatalf("%d aggregates", len(gs))
	}
	for i, g := range gs {
		if want := aggT0.Add(time.Duration(11+2*i) * time.Hour); !g.Expiry.Equal(want) || g.Version != 1 {
			t.Fatalf("aggregate %d lease %v version %d, want %v", i, g.Expiry, g.Version, want)
		}
	}
	if ren := a.Renewals(aggT0); len(ren) != 0 {
		t.Fatalf("%d renewals with nothing refreshed", len(ren))
	}
	later := aggT0.Add(100 * time.Hour)
	if !a.Refresh(keys[0], later) || a.Refresh(ids.Key{Ring: testRingID}, later) {
		t.Fatal("refresh")
	}
	ren := a.Renewals(aggT0.Add(time.Hour))
	if len(ren) != 3 {
		t.Fatalf("%d renewals, want all 3 (the refreshed one and every newer)", len(ren))
	}
	for i, g := range ren {
		if !g.Expiry.Equal(later) || g.Version <= gs[i].Version || !bytes.Equal(g.Blob, gs[i].Blob) {
			t.Fatalf("renewal %d: lease %v version %d", i, g.Expiry, g.Version)
		}
	}
	if ren := a.Renewals(aggT0.Add(time.Hour)); len(ren) != 0 {
		t.Fatalf("renewed twice")
	}

	// Leases run out oldest first; Expire forgets those aggregates and their members.
	b := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 2 })
	gs, keys = nil, nil
	for j := range 6 {
		m := namedMember(r, 100, aggT0.Add(time.Duration(10+j)*time.Hour))
		keys = append(keys, m.Key)
		gs = append(gs, mustAdd(t, b, aggT0, m)...)
	}
	if gone := b.Expire(aggT0.Add(11*time.Hour - 1)); len(gone) != 0 {
		t.Fatalf("expired %d aggregates early", len(gone))
	}
	gone := b.Expire(aggT0.Add(13 * time.Hour))
	if len(gone) != 2 || gone[0] != gs[0].Key || gone[1] != gs[1].Key {
		t.Fatalf("expired %d aggregates, want the oldest 2", len(gone))
	}
	for j, k := range keys {
		if _, ok := b.Locate(k); ok != (j >= 4) {
			t.Fatalf("member %d indexed %v after expiry", j, ok)
		}
	}
	if b.Head() != gs[2].Key {
		t.Fatal("head moved")
	}
	b.Expire(aggT0.Add(15 * time.Hour))
	if b.Head() != ids.Zero {
		t.Fatal("head survived its lease")
	}
	if g := b.Flush(aggT0); g != nil {
		t.Fatal("flushed nothing")
	}
	mustAdd(t, b, aggT0.Add(16*time.Hour), namedMember(r, 1, aggT0.Add(20*time.Hour)))
	if g := b.Flush(aggT0.Add(16 * time.Hour)); g == nil || g.Seq != 4 || g.Prev != ids.Zero {
		t.Fatalf("after the chain expired: %+v", g)
	}
}

// Every truncation and many corruptions of a valid blob are refused, never with a panic.
func TestDecodeAggregateRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 6))
	a := testAggregator(t, nil)
	var g *Aggregate
	for j := range 4 {
		m := contentMember(r, 50+j, aggT0.Add(time.Hour))
		mustAdd(t, a, aggT0, m)
	}
	mustAdd(t, a, aggT0, namedMember(r, 20, aggT0.Add(time.Hour)))
	g = a.Flush(aggT0)
	blob := g.Blob
	if _, err := DecodeAggregate(blob); err != nil {
		t.Fatal(err)
	}
	for n := range len(blob) {
		if _, err := DecodeAggregate(blob[:n]); !errors.Is(err, ErrBadAggregate) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), blob...)) }
	tocEnd := aggHeaderSize + aggEntrySize*len(g.TOC)
	cases := []struct {
		name string
		b    []byte
	}{
		{"trailing byte", mut(func(b []byte) []byte { return append(b, 0) })},
		{"format", mut(func(b []byte) []byte { b[0] = 2; return b })},
		{"seq 0", mut(func(b []byte) []byte { copy(b[1+32:], make([]byte, 8)); return b })},
		{"count too high", mut(func(b []byte) []byte { b[aggHeaderSize-1]++; return b })},
		{"count too low", mut(func(b []byte) []byte { b[aggHeaderSize-1]--; return b })},
		{"flags", mut(func(b []byte) []byte { b[aggHeaderSize+32] = 3; return b })},
		{"offset", mut(func(b []byte) []byte { b[aggHeaderSize+aggEntrySize+32+1+8+3]++; return b })},
		{"length", mut(func(b []byte) []byte { b[aggHeaderSize+32+1+8+4+3]++; return b })},
		{"content member bytes", mut(func(b []byte) []byte { b[tocEnd+3] ^= 1; return b })},
		{"content member id", mut(func(b []byte) []byte { b[aggHeaderSize] ^= 1; return b })},
		{"duplicate member", mut(func(b []byte) []byte {
			copy(b[aggHeaderSize+aggEntrySize:], b[aggHeaderSize:aggHeaderSize+32])
			return b
		})},
		{"too large", make([]byte, MaxObjectSize+1)},
		{"empty", nil},
	}
	for _, c := range cases {
		if _, err := DecodeAggregate(c.b); !errors.Is(err, ErrBadAggregate) {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	// Flipping a byte of a member that is not content-hashed is the manifest's ObjectHash's
	// to catch, not the decoder's; it must still decode and return the flipped bytes.
	b := mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b })
	if _, err := DecodeAggregate(b); err != nil {
		t.Fatalf("named member byte flip: %v", err)
	}
	if _, err := g.Member(ids.Key{Ring: testRingID}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("absent member: %v", err)
	}
}

func TestAggregatorConfig(t *testing.T) {
	for _, mod := range []func(*AggregatorConfig){
		func(c *AggregatorConfig) { c.Owner = nil },
		func(c *AggregatorConfig) { c.MaxBytes = MaxObjectSize + 1 },
		func(c *AggregatorConfig) { c.MaxBytes = aggHeaderSize + aggEntrySize },
		func(c *AggregatorConfig) { c.MaxObjects = 0 },
		func(c *AggregatorConfig) { c.MaxObjects = MaxAggregateMembers + 1 },
		func(c *AggregatorConfig) { c.MaxAge = 0 },
		func(c *AggregatorConfig) { c.RepackBelow = 0 },
		func(c *AggregatorConfig) { c.RepackBelow = 1.5 },
	} {
		cfg := DefaultAggregatorConfig(testRingID, testKey(7).Public().(ed25519.PublicKey))
		mod(&cfg)
		if _, err := NewAggregator(cfg); err == nil {
			t.Fatalf("config %+v accepted", cfg)
		}
	}
}

// The decoder never panics; what it accepts re-encodes to its input and every member extracts.
func FuzzDecodeAggregate(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 7))
	a := testAggregator(f, nil)
	mustAddF := func(m Member) {
		if _, err := a.Add(aggT0, m); err != nil {
			f.Fatal(err)
		}
	}
	mustAddF(contentMember(r, 30, aggT0.Add(time.Hour)))
	mustAddF(namedMember(r, 5, aggT0.Add(time.Hour)))
	mustAddF(contentMember(r, 0, aggT0.Add(time.Hour)))
	f.Add(a.Flush(aggT0).Blob)
	mustAddF(namedMember(r, 1, aggT0.Add(time.Hour)))
	f.Add(a.Flush(aggT0).Blob)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := DecodeAggregate(b)
		if err != nil {
			return
		}
		data := b[len(b)-g.dataLen():]
		members := make([]Member, len(g.TOC))
		for i, e := range g.TOC {
			k := ids.Key{Ring: g.Ring, ID: e.ID}
			got, err := g.Member(k)
			if err != nil || !bytes.Equal(got, data[e.Offset:e.Offset+e.Length]) {
				t.Fatalf("member %d does not extract: %v", i, err)
			}
			members[i] = Member{Key: k, Data: got, Expiry: time.Unix(0, e.Expiry), ContentHash: e.ContentHash}
		}
		again, _ := encodeAggregate(g.Ring, g.Seq, g.Prev, members)
		if !bytes.Equal(again, b) {
			t.Fatal("decoded aggregate does not re-encode to its input")
		}
	})
}

func repeat(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
