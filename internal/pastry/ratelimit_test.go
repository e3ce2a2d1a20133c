package pastry

import (
	"testing"
	"time"

	"epost/internal/ids"
)

func TestSenderLimit(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a, b := ids.HashString("a"), ids.HashString("b")
	steps := []struct {
		at   time.Duration
		id   ids.ID
		want bool
	}{
		{0, a, true}, {0, a, true}, {0, a, true}, // the burst
		{0, a, false},
		{0, b, true}, // senders are apart
		{999 * ms, a, false},
		{time.Second, a, true}, // one more per second
		{time.Second, a, false},
		{10 * time.Second, a, true}, {10 * time.Second, a, true}, {10 * time.Second, a, true}, // the burst again, no more
		{10 * time.Second, a, false},
	}
	l := newSenderLimit(time.Second, 3)
	for i, s := range steps {
		if got := l.allow(s.id, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d (%v, %s): allow = %v, want %v", i, s.at, s.id.Short(), got, s.want)
		}
	}
}

// TestSenderLimitMemory: however many senders come, the limit remembers a bounded number.
func TestSenderLimitMemory(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newSenderLimit(time.Second, 2)
	for i := range 3 * maxLimitedSenders {
		var id ids.ID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		if !l.allow(id, t0) {
			t.Fatalf("a new sender (%d) was refused", i)
		}
		if len(l.next) > maxLimitedSenders {
			t.Fatalf("%d senders remembered, bound %d", len(l.next), maxLimitedSenders)
		}
	}
}
