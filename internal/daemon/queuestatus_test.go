package daemon

import (
	"fmt"
	"testing"
	"time"

	"epost/internal/mailqueue"
)

// A queue summary becomes status: ages in seconds from now, kinds that hold nothing at zero,
// at most maxQueueDests destinations with the rest counted.
func TestQueueStatus(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	sum := mailqueue.Summary{Kinds: map[mailqueue.Kind]mailqueue.KindSummary{
		mailqueue.KindInternet: {Entries: 3, Bytes: 900, Oldest: now.Add(-90 * time.Second)},
	}}
	for i := range maxQueueDests + 2 {
		sum.Destinations = append(sum.Destinations, mailqueue.DestSummary{Kind: mailqueue.KindInternet,
			Dest: fmt.Sprintf("d%d.example", i), Queued: 1, Rcpts: 1, LastError: "451 later", NextAttempt: now.Add(time.Minute)})
	}
	qs := queueStatus(sum, now)
	if qs.Internet != (QueueKindStatus{Entries: 3, Bytes: 900, OldestS: 90}) || qs.Federation != (QueueKindStatus{}) {
		t.Errorf("kinds: internet %+v, federation %+v", qs.Internet, qs.Federation)
	}
	if len(qs.Destinations) != maxQueueDests || qs.DestinationsOmitted != 2 {
		t.Errorf("%d destinations listed, %d omitted; want %d and 2", len(qs.Destinations), qs.DestinationsOmitted, maxQueueDests)
	}
	if d := qs.Destinations[0]; d.Dest != "d0.example" || d.Kind != "internet" || d.LastError != "451 later" || !d.NextAttempt.Equal(now.Add(time.Minute)) {
		t.Errorf("first destination %+v", d)
	}
	if empty := queueStatus(mailqueue.Summary{}, now); empty.Destinations == nil {
		t.Error("an empty queue's destinations are null in JSON; want []")
	}
}

// The outbox's oldest message is read from the names DirOutbox gives them.
func TestOutboxOldest(t *testing.T) {
	a, b := time.Unix(0, 1_700_000_000_000_000_000), time.Unix(0, 1_700_000_100_000_000_000)
	ids := []string{fmt.Sprintf("%019d-abcdef", b.UnixNano()), fmt.Sprintf("%019d-012345", a.UnixNano()), "stray"}
	if got := outboxOldest(ids); !got.Equal(a) {
		t.Fatalf("oldest %v, want %v", got, a)
	}
	if got := outboxOldest(nil); !got.IsZero() {
		t.Fatalf("empty outbox: %v", got)
	}
}
