package multiring

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"epost/internal/mailqueue"
)

// A federation entry whose recipients the other ring refused (or whose deadline passed) ends
// with a delivery report to its sender; the entry is finished only once the report went out.
func TestCarrierReportsFailures(t *testing.T) {
	q, err := mailqueue.Open(t.TempDir(), mailqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	fail := true
	c := &Carrier{Queue: q, Log: slog.New(slog.DiscardHandler), Now: time.Now,
		Report: func(_ context.Context, h mailqueue.Header, rcpts []mailqueue.RcptState, action string, body []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				fail = false
				return errors.New("not yet")
			}
			for _, r := range rcpts {
				got = append(got, action+" "+r.Addr+" to "+h.From)
			}
			return nil
		}}
	h := mailqueue.Header{ID: mailqueue.NewID(), Kind: mailqueue.KindFederation, From: "alice@acme.example", Deadline: time.Now().Add(time.Hour),
		Rcpts: []mailqueue.Rcpt{{Addr: "ghost@globex.example", Ring: "00"}, {Addr: "bob@globex.example", Ring: "00"}}}
	st, err := q.Stage(h, []byte("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.Commit()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]mailqueue.RcptState{
		"ghost@globex.example": {Addr: "ghost@globex.example", State: mailqueue.Failed, Detail: "no such user"},
		"bob@globex.example":   {Addr: "bob@globex.example", State: mailqueue.Delivered},
	}
	wait := func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, busy := c.busy.Load(id); !busy {
				return
			}
		}
		t.Fatal("the report never finished")
	}
	c.busy.Store(id, true)
	c.record(id, states, nil) // the report fails: the entry stays
	wait()
	if _, done := q.Finished(id); done {
		t.Fatal("finished although its report failed")
	}
	c.busy.Store(id, true)
	c.record(id, nil, nil) // next turn: reported, finished
	wait()
	if _, done := q.Finished(id); !done {
		t.Fatal("not finished after its report")
	}
	if len(got) != 1 || got[0] != "failed ghost@globex.example to alice@acme.example" {
		t.Fatalf("reports %q", got)
	}
}
