package post

import (
	"testing"
	"time"

	"epost/internal/glacier"
)

// Archive work waits for a lull in the node's mail traffic (Config.ArchiveYield), but no
// longer than its bounds: ArchiveBacklog bytes of aggregates queued, or ArchiveYieldMax since
// the oldest was queued.
func TestArchiveWaitsForALull(t *testing.T) {
	clk := &heldClock{t: time.Unix(1e9, 0)}
	hs := newHeldSetup(t, clk, Config{ContentLease: 2 * time.Hour, ArchiveFlush: time.Hour, RetryDelay: time.Second,
		ArchiveYield: 50 * time.Millisecond, ArchiveBacklog: 1 << 20, ArchiveYieldMax: time.Minute})
	u, n, fa := hs.u, hs.u.n, hs.fa
	fire := func() {
		ts := clk.timers
		clk.timers = nil
		for _, f := range ts {
			f()
		}
	}
	// aggs are the aggregate inserts started (the archive root's inserts aside).
	aggs := func() []heldCall {
		var out []heldCall
		for _, c := range fa.calls {
			if string(c.name) != archiveRootName {
				out = append(out, c)
			}
		}
		return out
	}
	next := byte(0)
	cut := func() { // two members: one aggregate, queued
		next += 2
		u.enqueueInserts(u.aggregate(hs.content(next - 1)))
		u.enqueueInserts(u.aggregate(hs.content(next)))
	}

	n.foreground()
	cut()
	if len(aggs()) != 0 || n.stats.ArchiveYields != 1 || len(clk.timers) != 1 {
		t.Fatalf("during traffic: %d inserts, %d yields, %d timers; want 0, 1, 1", len(aggs()), n.stats.ArchiveYields, len(clk.timers))
	}
	// More traffic 30 ms later: the timer finds no lull yet and waits again.
	clk.t = clk.t.Add(30 * time.Millisecond)
	n.foreground()
	fire()
	if len(aggs()) != 0 || len(clk.timers) != 1 {
		t.Fatalf("traffic 30 ms ago: %d inserts, %d timers; want 0, 1", len(aggs()), len(clk.timers))
	}
	cut() // queued behind the first; no second timer
	if len(clk.timers) != 1 {
		t.Fatalf("%d timers, want 1", len(clk.timers))
	}
	// 50 ms of quiet: the first insert starts; the second follows it without waiting.
	clk.t = clk.t.Add(50 * time.Millisecond)
	fire()
	if len(aggs()) != 1 || string(aggs()[0].name) != "agg/1" {
		t.Fatalf("after a lull: %d inserts, want agg/1", len(aggs()))
	}
	aggs()[0].cb(&glacier.Manifest{}, glacier.InsertResult{Acks: 9})
	if len(aggs()) != 2 || string(aggs()[1].name) != "agg/2" {
		t.Fatalf("after agg/1: %d inserts, want agg/2 next", len(aggs()))
	}
	aggs()[1].cb(&glacier.Manifest{}, glacier.InsertResult{Acks: 9})

	// The age bound: traffic never stops, and a minute after it was queued the insert goes.
	n.foreground()
	cut()
	if len(aggs()) != 2 {
		t.Fatalf("%d inserts, want 2", len(aggs()))
	}
	for i := 0; i < 60*20; i++ {
		clk.t = clk.t.Add(50 * time.Millisecond)
		n.foreground()
		fire()
		if len(aggs()) > 2 {
			break
		}
	}
	if len(aggs()) != 3 || clk.t.Sub(time.Unix(1e9, 0)) < time.Minute {
		t.Fatalf("under constant traffic: %d inserts after %v, want the third after a minute", len(aggs()), clk.t.Sub(time.Unix(1e9, 0)))
	}
	aggs()[2].cb(&glacier.Manifest{}, glacier.InsertResult{Acks: 9})

	// The backlog bound: with at most 3,000 bytes allowed to wait, the second queued
	// aggregate (about 2 KB each) starts the first at once, traffic or not.
	n.cfg.ArchiveBacklog = 3000
	n.foreground()
	cut()
	if len(aggs()) != 3 {
		t.Fatalf("one aggregate queued: %d inserts, want 3", len(aggs()))
	}
	cut()
	fire() // the pending wait re-checks and finds the backlog full
	if len(aggs()) != 4 {
		t.Fatalf("backlog over its bound: %d inserts, want 4", len(aggs()))
	}

	// The wall clock stepped back an hour after the last traffic: the wait stays within
	// ArchiveYield instead of lasting the hour.
	n.cfg.ArchiveBacklog = 1 << 20
	n.busyAt.Store(clk.t.Add(time.Hour).UnixNano())
	cut()
	n.mu.Lock()
	wait := u.yieldLocked(u.arch)
	n.mu.Unlock()
	if wait <= 0 || wait > n.cfg.ArchiveYield {
		t.Fatalf("traffic an hour ahead of the clock: wait %v, want at most ArchiveYield %v", wait, n.cfg.ArchiveYield)
	}
}

// ArchiveBacklog bounds the node, not each user: two users' aggregates waiting together
// over the bound start the next insert at once.
func TestArchiveBacklogIsTheNodes(t *testing.T) {
	clk := &heldClock{t: time.Unix(1e9, 0)}
	cfg := Config{ContentLease: 2 * time.Hour, ArchiveFlush: time.Hour, RetryDelay: time.Second,
		ArchiveYield: 50 * time.Millisecond, ArchiveBacklog: 3000, ArchiveYieldMax: time.Minute}
	a, b := newHeldSetup(t, clk, cfg), newHeldSetup(t, clk, cfg)
	n := a.u.n
	b.u.n = n // b's user lives on a's node too
	n.users["a"], n.users["b"] = a.u, b.u
	n.foreground()
	b.u.enqueueInserts(b.u.aggregate(b.content(1)))
	b.u.enqueueInserts(b.u.aggregate(b.content(2))) // about 2 KB waiting: under the bound
	if len(a.fa.calls) != 0 {
		t.Fatalf("one user's aggregate under the bound: %d inserts, want 0", len(a.fa.calls))
	}
	a.u.enqueueInserts(a.u.aggregate(a.content(3)))
	a.u.enqueueInserts(a.u.aggregate(a.content(4))) // about 4 KB on the node: over it
	if len(a.fa.calls) != 1 {
		t.Fatalf("two users' aggregates over the node's bound: %d inserts, want 1 started at once", len(a.fa.calls))
	}
}
