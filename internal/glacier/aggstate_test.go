package glacier

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// State and LoadState carry the chain without the members' bytes: the restored aggregator
// locates every member, continues the seq, renews and expires as the original does, and
// repacks once it has the blob back (SetBlob).
func TestAggregatorStateRoundTrip(t *testing.T) {
	const seed = 31
	r := rand.New(rand.NewPCG(seed, 1))
	a := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 4 })
	var gs []*Aggregate
	var keys []ids.Key
	for i := range 14 {
		m := namedMember(r, 50+r.IntN(200), aggT0.Add(time.Duration(20+i)*time.Hour))
		if i%3 == 0 {
			m = contentMember(r, 80, aggT0.Add(time.Duration(20+i)*time.Hour))
		}
		keys = append(keys, m.Key)
		gs = append(gs, mustAdd(t, a, aggT0, m)...)
	}
	gs = append(gs, a.Flush(aggT0))
	a.Forget(keys[1])
	a.Refresh(keys[2], aggT0.Add(200*time.Hour))
	blobs := map[ids.ID][]byte{}
	for _, g := range gs {
		blobs[g.Key] = g.Blob
		a.Release(g.Key)
	}

	b := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 4 })
	if err := b.LoadState(a.State()); err != nil {
		t.Fatalf("seed %d: load: %v", seed, err)
	}
	if b.Head() != a.Head() || b.Aggregates() != a.Aggregates() {
		t.Fatalf("seed %d: head %s/%s, %d/%d aggregates", seed, b.Head().Short(), a.Head().Short(), b.Aggregates(), a.Aggregates())
	}
	for i, k := range keys {
		ga, oka := a.Locate(k)
		gb, okb := b.Locate(k)
		if ga != gb || oka != okb || (i == 1) == oka {
			t.Fatalf("seed %d: member %d located %v/%v in %s/%s", seed, i, oka, okb, ga.Short(), gb.Short())
		}
	}
	now := aggT0.Add(time.Hour)
	ra, rb := a.Renewals(now), b.Renewals(now)
	if len(ra) != len(rb) || len(ra) == 0 {
		t.Fatalf("seed %d: %d/%d renewals", seed, len(ra), len(rb))
	}
	for i := range ra {
		if ra[i].Key != rb[i].Key || !ra[i].Expiry.Equal(rb[i].Expiry) || rb[i].Blob != nil {
			t.Fatalf("seed %d: renewal %d differs", seed, i)
		}
	}
	// New aggregates continue the chain.
	m := namedMember(r, 10, aggT0.Add(300*time.Hour))
	b.Add(now, m)
	g := b.Flush(now)
	if g.Seq != gs[len(gs)-1].Seq+1 || g.Prev != a.Head() {
		t.Fatalf("seed %d: next aggregate seq %d prev %s, want %d after %s", seed, g.Seq, g.Prev.Short(), gs[len(gs)-1].Seq+1, a.Head().Short())
	}

	// Repack needs the blob back.
	late := aggT0.Add(30 * time.Hour) // most members have expired
	need := b.NeedBlobs(late)
	if len(need) == 0 || len(b.Repack(late)) != 0 {
		t.Fatalf("seed %d: %d aggregates need blobs, repack without them", seed, len(need))
	}
	if err := b.SetBlob(need[0], blobs[need[len(need)-1]]); len(need) > 1 && !errors.Is(err, ErrBadAggregate) {
		t.Fatalf("seed %d: another aggregate's blob accepted: %v", seed, err)
	}
	for _, k := range need {
		if err := b.SetBlob(k, blobs[k]); err != nil {
			t.Fatalf("seed %d: set blob: %v", seed, err)
		}
	}
	if reps := b.Repack(late); len(reps) != len(need) {
		t.Fatalf("seed %d: %d repacks after the blobs came back, want %d", seed, len(reps), len(need))
	}

	// Damaged states are refused, never panic.
	st := a.State()
	for i := 0; i < len(st); i += 7 {
		c := testAggregator(t, nil)
		_ = c.LoadState(st[:i])
		d := append([]byte(nil), st...)
		d[i] ^= 0xff
		_ = testAggregator(t, nil).LoadState(d)
	}
	if err := testAggregator(t, nil).LoadState(st[:len(st)-1]); err == nil {
		t.Fatalf("seed %d: truncated state accepted", seed)
	}
}

// RenewalsDue renews only aggregates whose lease ends within the horizon.
func TestAggregatorRenewalsDue(t *testing.T) {
	const seed = 32
	r := rand.New(rand.NewPCG(seed, 1))
	a := testAggregator(t, func(c *AggregatorConfig) { c.MaxObjects = 1 })
	var keys []ids.Key
	for i := range 3 {
		m := namedMember(r, 20, aggT0.Add(time.Duration(10*(i+1))*24*time.Hour))
		keys = append(keys, m.Key)
		mustAdd(t, a, aggT0, m)
	}
	for _, k := range keys {
		a.Refresh(k, aggT0.Add(60*24*time.Hour))
	}
	// Leases end at days 10, 20, 30: within 15 days only the first is due.
	due := a.RenewalsDue(aggT0, 15*24*time.Hour)
	if len(due) != 1 || due[0].Seq != 1 {
		t.Fatalf("seed %d: %d renewals due", seed, len(due))
	}
	if all := a.RenewalsDue(aggT0, 40*24*time.Hour); len(all) != 2 {
		t.Fatalf("seed %d: %d more renewals due within 40 days, want 2", seed, len(all))
	}
}
