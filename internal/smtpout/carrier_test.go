package smtpout

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
	"epost/internal/mailqueue"
)

// The carrier's reports: a recipient still deferred after the entry's DelayWarn brings one
// delay notice (not one per attempt); a permanent refusal brings a failure report, and the
// entry is finished only once the report went out (a report that fails keeps the entry).
func TestCarrierReports(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	m := &mx{}
	port := startMX(t, m, "127.0.0.1", 0, nil)
	srv.SetAddrs("dest.example", time.Hour, "127.0.0.1")
	now := time.Now()
	clock := func() time.Time { return now }
	q, err := mailqueue.Open(t.TempDir(), mailqueue.Options{Now: clock, Backoff: func(mailqueue.Kind, int) time.Duration { return time.Second }})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	failReport := true
	c := &Carrier{Queue: q, Log: slog.New(slog.DiscardHandler), Now: clock,
		D: New(Config{Resolver: &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}, Port: port, Timeout: 2 * time.Second}),
		Report: func(_ context.Context, h mailqueue.Header, rcpts []mailqueue.RcptState, action string, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if action == "failed" && failReport {
				failReport = false
				return errors.New("the identity is not online yet")
			}
			for _, r := range rcpts {
				reports = append(reports, action+" "+r.Addr)
			}
			return nil
		}}
	stage := func(rcpt string) string {
		h := mailqueue.Header{ID: mailqueue.NewID(), Kind: mailqueue.KindInternet, From: "alice@acme.example",
			Deadline: now.Add(time.Hour), DelayWarn: now.Add(-time.Second), Rcpts: []mailqueue.Rcpt{{Addr: rcpt}}}
		st, err := q.Stage(h, []byte("Subject: x\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		id, err := st.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	busy, nobody := stage("busy@dest.example"), stage("nobody@dest.example")
	run := func() {
		c.RunOnce(context.Background())
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			idle := true
			c.busy.Range(func(any, any) bool { idle = false; return false })
			if idle {
				return
			}
		}
		t.Fatal("attempts did not finish")
	}
	for range 3 {
		run()
		now = now.Add(2 * time.Second)
	}
	mu.Lock()
	got := append([]string(nil), reports...)
	mu.Unlock()
	if len(got) != 2 || !contains(got, "delayed busy@dest.example") || !contains(got, "failed nobody@dest.example") {
		t.Fatalf("reports %q, want one delay notice for busy and one failure for nobody", got)
	}
	if _, done := q.Finished(nobody); !done {
		t.Fatal("the refused entry was not finished after its report went out")
	}
	if _, done := q.Finished(busy); done {
		t.Fatal("the deferred entry was finished")
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
