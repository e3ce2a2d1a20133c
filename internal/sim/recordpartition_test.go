package sim

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/post"
)

// A user's record is out of reach when every node that holds a copy is cut off. A lookup from
// the other side then finds no copy, but the nodes it asked lost, a moment ago, neighbours
// that would be among the record's replicas. So the answer is "inconclusive" (451 to an SMTP
// client, which retries), never "no such user" (550: the sender's MTA bounces mail to a user
// who exists). An address nobody registered, whose replicas lost no one, is still unknown.
func TestRecordLookupAcrossPartitionIsInconclusive(t *testing.T) {
	for _, seed := range []uint64{1150, 1151} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { recordPartitionScenario(t, seed) })
	}
}

func recordPartitionScenario(t *testing.T, seed uint64) {
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.RecordCacheTTL = time.Nanosecond // every lookup asks the ring
	w := newWorldCfg(t, seed, 30, cfg)
	const addr = "u@sim.example"
	u := w.addUser(0, addr, 9)
	key := identity.RecordKey(w.run.ringID, addr)
	order := w.byCloseness(key)
	side := order[:5] // the record's replicas and their next neighbours
	var asker *mailNode
	for _, mn := range order[5:] {
		if mn != u.node {
			asker = mn
			break
		}
	}
	lookup := func(a string) error {
		var got error
		done := false
		asker.post.LookupRecord(a, func(_ *identity.Record, _ identity.SignedRecord, err error) { got, done = err, true })
		w.wait(time.Minute, func() bool { return done })
		if !done {
			w.fail("lookup of %s never answered", a)
		}
		return got
	}
	// An unknown address far from the nodes about to be cut off (by the simulator's global
	// view: none of them among its 10 closest nodes).
	var stranger string
	for i := 0; stranger == ""; i++ {
		a := fmt.Sprintf("nobody%d@sim.example", i)
		near := w.byCloseness(identity.RecordKey(w.run.ringID, a))[:10]
		if !slices.ContainsFunc(near, func(mn *mailNode) bool { return slices.Contains(side, mn) }) {
			stranger = a
		}
	}
	if err := lookup(addr); err != nil {
		w.fail("before the partition: %v", err)
	}
	if err := lookup(stranger); !errors.Is(err, post.ErrUnknownRecipient) {
		w.fail("before the partition, %s: %v, want unknown", stranger, err)
	}

	for _, mn := range side {
		mn.sn.ep.SetPartition(1)
	}
	net := w.run.ring.net
	net.RunFor(3 * time.Minute) // leaf sets drop the other side; maintenance runs
	err := lookup(addr)
	t.Logf("seed %d: lookup across the partition: %v", seed, err)
	if errors.Is(err, post.ErrUnknownRecipient) || !errors.Is(err, post.ErrInconclusive) {
		w.fail("lookup of an existing user whose record is cut off: %v, want inconclusive", err)
	}
	if err := lookup(stranger); !errors.Is(err, post.ErrUnknownRecipient) {
		w.fail("during the partition, %s (replicas untouched): %v, want unknown", stranger, err)
	}

	for _, mn := range side {
		mn.sn.ep.SetPartition(0)
	}
	net.RunFor(3 * time.Minute)
	if err := lookup(addr); err != nil {
		w.fail("after the partition healed: %v", err)
	}
}
