package store

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"epost/internal/ids"
)

func TestRangeInventory(t *testing.T) {
	seed := testSeed(t, 7)
	r := rand.New(rand.NewPCG(seed, 0))
	s := openTest(t, "", Options{InlineMax: 64})

	// More than chunkSize objects in ring A so Range resumes between chunks; ring B shares ids
	// with ring A to prove that rings never mix.
	one := ids.ID{31: 1}
	edge := []ids.ID{ids.Zero, one, maxID, ids.Sub(maxID, one)}
	var idsA []ids.ID
	idsA = append(idsA, edge...)
	for range chunkSize + 200 {
		idsA = append(idsA, randID(r))
	}
	var batch []Object
	sizes := map[ids.Key]int64{}
	for i, id := range idsA {
		for _, ring := range []ids.RingID{ringA, ringB} {
			if ring == ringB && i%3 != 0 {
				continue
			}
			k := ids.Key{Ring: ring, ID: id}
			n := r.IntN(100) // some inline, some in files
			batch = append(batch, Object{Meta: Meta{Key: k, Seq: uint64(i)}, Payload: randBytes(r, n)})
			sizes[k] = int64(n)
		}
	}
	if res, err := s.PutBatch(batch, nil); err != nil || errors.Join(res...) != nil {
		t.Fatal(err, errors.Join(res...))
	}
	// A key outside every ring used here must never show up.
	mustPut(t, s, Object{Meta: Meta{Key: ids.Key{Ring: ids.GlobalRing, ID: idsA[9]}}})

	type arcCase struct {
		name string
		arc  Arc
	}
	cases := []arcCase{
		{"whole ring A", WholeRing(ringA)},
		{"whole ring B from a key", Arc{Ring: ringB, From: idsA[3], To: idsA[3]}},
		{"whole ring from max", Arc{Ring: ringA, From: maxID, To: maxID}},
		{"from zero", Arc{Ring: ringA, From: ids.Zero, To: idsA[10]}},
		{"to zero wraps", Arc{Ring: ringA, From: idsA[10], To: ids.Zero}},
		{"to max", Arc{Ring: ringA, From: idsA[11], To: maxID}},
		{"from max wraps", Arc{Ring: ringA, From: maxID, To: idsA[12]}},
		{"single key arc", Arc{Ring: ringA, From: ids.Sub(idsA[13], one), To: idsA[13]}},
		{"empty ring", WholeRing(ids.RingIDOf("nobody"))},
	}
	for i := range 40 {
		a := Arc{Ring: []ids.RingID{ringA, ringB}[i%2], From: randID(r), To: randID(r)}
		if i%4 == 0 { // start exactly at a stored key: it is excluded
			a.From = idsA[r.IntN(len(idsA))]
		}
		if i%5 == 0 { // end exactly at a stored key: it is included
			a.To = idsA[r.IntN(len(idsA))]
		}
		cases = append(cases, arcCase{"random", a})
	}
	for _, c := range cases {
		// Brute force: every key the arc contains, in clockwise order starting after From.
		var want []ids.Key
		var wantSum Summary
		for k, n := range sizes {
			if c.arc.Contains(k) {
				want = append(want, k)
				wantSum.Count++
				wantSum.Bytes += n
			}
		}
		after := ids.Add(c.arc.From, one)
		slices.SortFunc(want, func(a, b ids.Key) int {
			return ids.Cmp(ids.Sub(a.ID, after), ids.Sub(b.ID, after))
		})
		var got []ids.Key
		for m, err := range s.Range(c.arc) {
			if err != nil {
				t.Fatalf("%s %s: %v", c.name, c.arc, err)
			}
			if m.Size != sizes[m.Key] {
				t.Fatalf("%s: %s size %d, want %d", c.name, m.Key, m.Size, sizes[m.Key])
			}
			got = append(got, m.Key)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s %s: Range yielded %d keys, want %d (or order differs)", c.name, c.arc, len(got), len(want))
		}
		sum, err := s.Summarize(c.arc)
		if err != nil || sum != wantSum {
			t.Fatalf("%s %s: Summarize = %+v, %v; want %+v", c.name, c.arc, sum, err, wantSum)
		}
	}

	// The loop body may write to the store, and breaking out early is fine.
	deleted := 0
	for m, err := range s.Range(WholeRing(ringB)) {
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(m.Key); err != nil {
			t.Fatal(err)
		}
		if deleted++; deleted == 10 {
			break
		}
	}
	if sum, _ := s.Summarize(WholeRing(ringB)); sum.Count != int64(len(idsA)+2)/3-10 {
		t.Fatalf("ring B has %d objects after deleting 10 of %d", sum.Count, (len(idsA)+2)/3)
	}
}

func TestArcContainsMatchesBetween(t *testing.T) {
	r := rand.New(rand.NewPCG(testSeed(t, 8), 0))
	for range 1000 {
		from, to, x := randID(r), randID(r), randID(r)
		a := Arc{Ring: ringA, From: from, To: to}
		if a.Contains(ids.Key{Ring: ringA, ID: x}) != ids.Between(from, x, to) {
			t.Fatalf("Contains disagrees with ids.Between for (%s, %s] at %s", from, to, x)
		}
		if a.Contains(ids.Key{Ring: ringB, ID: x}) {
			t.Fatal("Contains accepted a key of another ring")
		}
	}
}
