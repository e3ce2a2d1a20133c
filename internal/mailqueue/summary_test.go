package mailqueue

import (
	"errors"
	"testing"
	"time"
)

// The summary counts depth and age per kind, and per destination what is still pending there,
// the newest complaint about it and its soonest retry; delivered recipients and finished
// entries do not count.
func TestQueueSummary(t *testing.T) {
	c := &clock{time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	q := open(t, t.TempDir(), c)
	if s := q.Summary(); len(s.Kinds) != 0 || len(s.Destinations) != 0 {
		t.Fatalf("empty queue: %+v", s)
	}
	commit := func(h Header, body string) string {
		t.Helper()
		st, err := q.Stage(h, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		id, err := st.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	const globex = "00000000000000000000000000000000000000000000000000000000000000aa"
	fed := header(KindFederation, "bob@globex.example", "carol@globex.example")
	for i := range fed.Rcpts {
		fed.Rcpts[i].Ring = globex
	}
	fedID := commit(fed, "sealed")
	t0 := c.t
	c.t = c.t.Add(time.Minute)
	in1 := commit(header(KindInternet, "x@example.com", "y@example.net"), "12345")
	c.t = c.t.Add(time.Minute)
	in2 := commit(header(KindInternet, "z@Example.COM"), "123")
	done := commit(header(KindInternet, "w@example.org"), "1")

	// Attempts: example.com refused for now in both entries, example.net delivered; the
	// federation entry failed as a whole; example.org delivered and finished.
	c.t = c.t.Add(time.Minute)
	if _, err := q.Attempted(in1, map[string]RcptState{
		"x@example.com": {State: Pending, Detail: "mx.example.com said 451 4.7.1 old"},
		"y@example.net": {State: Delivered},
	}, nil); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Minute)
	if _, err := q.Attempted(in2, map[string]RcptState{"z@Example.COM": {State: Pending, Detail: "mx.example.com said 451 4.7.1 new"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Attempted(fedID, nil, errors.New("no gateway of ring globex answered")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Attempted(done, map[string]RcptState{"w@example.org": {State: Delivered}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := q.Finish(done, "delivered"); err != nil {
		t.Fatal(err)
	}

	s := q.Summary()
	if got := s.Kinds[KindFederation]; got.Entries != 1 || got.Bytes != 6 || !got.Oldest.Equal(t0) {
		t.Errorf("federation %+v, want 1 entry, 6 bytes, oldest %v", got, t0)
	}
	if got := s.Kinds[KindInternet]; got.Entries != 2 || got.Bytes != 8 || !got.Oldest.Equal(t0.Add(time.Minute)) {
		t.Errorf("internet %+v, want 2 entries, 8 bytes, oldest %v", got, t0.Add(time.Minute))
	}
	if len(s.Destinations) != 2 {
		t.Fatalf("destinations %+v, want example.com and the globex ring", s.Destinations)
	}
	com, ring := s.Destinations[0], s.Destinations[1]
	if com.Kind != KindInternet || com.Dest != "example.com" || com.Queued != 2 || com.Rcpts != 2 {
		t.Errorf("first destination %+v, want example.com with 2 entries", com)
	}
	if com.LastError != "mx.example.com said 451 4.7.1 new" || !com.LastAttempt.Equal(c.t) {
		t.Errorf("example.com's last error %q at %v, want the newer attempt's", com.LastError, com.LastAttempt)
	}
	_, s1, _ := q.Get(in1)
	_, s2, _ := q.Get(in2)
	if want := minTime(s1.Next, s2.Next); !com.NextAttempt.Equal(want) {
		t.Errorf("example.com next attempt %v, want the sooner of its entries' %v", com.NextAttempt, want)
	}
	if ring.Kind != KindFederation || ring.Dest != globex || ring.Queued != 1 || ring.Rcpts != 2 ||
		len(ring.Domains) != 1 || ring.Domains[0] != "globex.example" || ring.LastError != "no gateway of ring globex answered" {
		t.Errorf("ring destination %+v", ring)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
