package mailqueue

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dir string, c *clock) *Queue {
	t.Helper()
	q, err := Open(dir, Options{Now: c.now, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func header(kind Kind, rcpts ...string) Header {
	h := Header{Kind: kind, From: "alice@acme.example"}
	for _, r := range rcpts {
		h.Rcpts = append(h.Rcpts, Rcpt{Addr: r})
	}
	return h
}

func body(t *testing.T, q *Queue, id string) string {
	t.Helper()
	r, err := q.Body(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestQueueLifecycle(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	q := open(t, dir, c)
	h := header(KindFederation, "bob@globex.example", "carol@globex.example")
	h.Deadline = c.t.Add(time.Hour)
	st, err := q.Stage(h, []byte("sealed bytes\nwith a newline"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Len() != 0 || len(q.Due(c.t)) != 0 {
		t.Fatal("a staged entry is visible before Commit")
	}
	id, err := st.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Due(c.t); len(got) != 1 || got[0] != id || q.Has(id) != "queued" {
		t.Fatalf("due %v, has %q", got, q.Has(id))
	}
	if b := body(t, q, id); b != "sealed bytes\nwith a newline" {
		t.Fatalf("body %q", b)
	}
	// The same id again (a repeated hand-off) is recognised.
	h2 := h
	h2.ID = id
	if _, err := q.Stage(h2, []byte("x")); !errors.Is(err, ErrExists) {
		t.Fatalf("same id staged again: %v", err)
	}

	// One recipient delivered, one not yet: retried after the backoff (2 s ± 10 %).
	s, err := q.Attempted(id, map[string]RcptState{"bob@globex.example": {State: Delivered}}, errors.New("carol's ring did not answer"))
	if err != nil {
		t.Fatal(err)
	}
	if wait := s.Next.Sub(c.t); wait < 1800*time.Millisecond || wait > 2200*time.Millisecond || s.Attempts != 1 || s.Rcpts[0].State != Delivered || s.Rcpts[1].State != Pending {
		t.Fatalf("after one attempt: %+v (wait %v)", s, s.Next.Sub(c.t))
	}
	if len(q.Due(c.t)) != 0 || len(q.Due(s.Next)) != 1 {
		t.Fatal("the entry is due before its backoff ran out, or not after")
	}

	// A restart keeps the entry and its schedule.
	q = open(t, dir, c)
	_, s2, err := q.Get(id)
	if err != nil || s2.Attempts != 1 || s2.Rcpts[0].State != Delivered || !s2.Next.Equal(s.Next) {
		t.Fatalf("after a restart: %+v %v", s2, err)
	}

	// Past the deadline the pending recipient fails; the entry is finished and remembered.
	c.t = c.t.Add(2 * time.Hour)
	s, err = q.Attempted(id, nil, errors.New("still silent"))
	if err != nil || s.Rcpts[1].State != Failed || !strings.Contains(s.Rcpts[1].Detail, "expired") || !strings.Contains(s.Rcpts[1].Detail, "still silent") {
		t.Fatalf("past the deadline: %+v %v", s, err)
	}
	if err := q.Finish(id, "partial"); err != nil {
		t.Fatal(err)
	}
	if q.Has(id) != "done" || q.Len() != 0 {
		t.Fatalf("after Finish: %q, %d queued", q.Has(id), q.Len())
	}
	q = open(t, dir, c)
	if d, ok := q.Finished(id); !ok || d.Outcome != "partial" || len(d.Rcpts) != 2 {
		t.Fatalf("done after a restart: %+v %v", d, ok)
	}
	if _, err := q.Stage(h2, []byte("x")); !errors.Is(err, ErrExists) {
		t.Fatalf("finished id staged again: %v", err)
	}
	// Finished ids are forgotten after DoneTTL.
	c.t = c.t.Add(8 * 24 * time.Hour)
	q = open(t, dir, c)
	if q.Has(id) != "" {
		t.Fatal("a finished id outlived DoneTTL")
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "done.jsonl")); len(data) != 0 {
		t.Fatalf("done.jsonl keeps %q", data)
	}
}

// Every crash point leaves either no entry (nothing was acknowledged) or a whole one.
func TestQueueCrashPoints(t *testing.T) {
	c := &clock{time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}

	// Crash after Stage, before Commit: the entry is gone at the next Open.
	dir := t.TempDir()
	q := open(t, dir, c)
	if _, err := q.Stage(header(KindInternet, "x@example.org"), []byte("body")); err != nil {
		t.Fatal(err)
	}
	q = open(t, dir, c)
	if q.Len() != 0 {
		t.Fatal("an uncommitted entry survived")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ keeps %d files", len(ents))
	}

	// Crash between the schedule and the rename: a schedule without an entry is dropped.
	st, err := q.Stage(header(KindInternet, "x@example.org"), []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.writeSchedule(st.h.ID, freshSchedule(st.h, c.t)); err != nil {
		t.Fatal(err)
	}
	q = open(t, dir, c)
	if q.Len() != 0 {
		t.Fatal("an entry without its rename survived")
	}
	if _, err := os.Stat(filepath.Join(dir, "s", st.h.ID+".json")); !os.IsNotExist(err) {
		t.Fatalf("orphan schedule: %v", err)
	}

	// A committed entry whose schedule was lost (or damaged) is due at once.
	st, _ = q.Stage(header(KindInternet, "x@example.org", "y@example.org"), []byte("body"))
	id, err := st.Commit()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "s", id+".json"), []byte("{torn"), 0o600)
	q = open(t, dir, c)
	if _, s, err := q.Get(id); err != nil || len(s.Rcpts) != 2 || s.Rcpts[0].State != Pending || len(q.Due(c.t)) != 1 {
		t.Fatalf("entry with a damaged schedule: %+v %v", s, err)
	}

	// Crash after done.jsonl, before the removal: finished at the next Open, files removed.
	if err := appendSync(filepath.Join(dir, "done.jsonl"), []byte(`{"id":"`+id+`","at":"`+c.t.Format(time.RFC3339)+`","outcome":"delivered"}`+"\n")); err != nil {
		t.Fatal(err)
	}
	q = open(t, dir, c)
	if q.Has(id) != "done" {
		t.Fatalf("half-finished entry: %q", q.Has(id))
	}
	if _, err := os.Stat(filepath.Join(dir, "q", id)); !os.IsNotExist(err) {
		t.Fatalf("entry file left: %v", err)
	}
	// A torn last line of done.jsonl (the crash came mid-append: never acknowledged) is ignored.
	os.WriteFile(filepath.Join(dir, "done.jsonl"), append(must(os.ReadFile(filepath.Join(dir, "done.jsonl"))), []byte(`{"id":"0123`)...), 0o600)
	q = open(t, dir, c)
	if q.Has(id) != "done" {
		t.Fatal("a torn line lost the finished entries before it")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestQueueBodyDamage(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Now()}
	q := open(t, dir, c)
	st, _ := q.Stage(header(KindInternet, "x@example.org"), []byte("the body as queued"))
	id, _ := st.Commit()
	p := filepath.Join(dir, "q", id)
	data := must(os.ReadFile(p))
	data[len(data)-1] ^= 1
	os.WriteFile(p, data, 0o600)
	r, err := q.Body(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrDamaged) {
		t.Fatalf("damaged body read: %v", err)
	}
	r.Close()
}

func TestQueueRefusesBadEntries(t *testing.T) {
	q := open(t, t.TempDir(), &clock{time.Now()})
	for name, h := range map[string]Header{
		"no recipients": {Kind: KindInternet},
		"no kind":       header("", "x@example.org"),
		"bad id":        {ID: "../../etc", Kind: KindInternet, Rcpts: []Rcpt{{Addr: "x@example.org"}}},
	} {
		if _, err := q.Stage(h, nil); err == nil {
			t.Errorf("%s: staged", name)
		}
	}
}

func TestDefaultBackoff(t *testing.T) {
	for _, tc := range []struct {
		kind    Kind
		attempt int
		want    time.Duration
	}{
		{KindFederation, 1, 2 * time.Second}, {KindFederation, 2, 4 * time.Second}, {KindFederation, 9, 5 * time.Minute},
		{KindInternet, 1, time.Minute}, {KindInternet, 4, 30 * time.Minute}, {KindInternet, 5, time.Hour}, {KindInternet, 50, time.Hour},
	} {
		if got := DefaultBackoff(tc.kind, tc.attempt); got != tc.want {
			t.Errorf("%s attempt %d: %v, want %v", tc.kind, tc.attempt, got, tc.want)
		}
	}
}

// Two hand-offs of one id at once: exactly one is queued; the schedule survives concurrent
// changes whole; a damaged entry is set aside instead of keeping the queue from opening.
func TestQueueConcurrencyAndDamage(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	q := open(t, dir, c)
	h := header(KindFederation, "a@b.example", "c@b.example")
	h.ID = NewID()
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed, refused := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := q.Stage(h, []byte("body"))
			if err == nil {
				_, err = st.Commit()
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				committed++
			case errors.Is(err, ErrExists):
				refused++
			default:
				t.Errorf("stage: %v", err)
			}
		}()
	}
	wg.Wait()
	if committed != 1 || refused != 7 {
		t.Fatalf("%d committed, %d refused; want 1 and 7", committed, refused)
	}
	// The scheduler and a relay's answer at once.
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = q.Attempted(h.ID, map[string]RcptState{"a@b.example": {State: Delivered}}, nil)
		}()
		go func() {
			defer wg.Done()
			_ = q.Update(h.ID, func(s *Schedule) { s.HandedTo = fmt.Sprint(i) })
		}()
	}
	wg.Wait()
	q2 := open(t, dir, c)
	_, s, err := q2.Get(h.ID)
	if err != nil || s.Rcpts[0].State != Delivered || s.Attempts != 20 {
		t.Fatalf("schedule after concurrent changes: %+v %v", s, err)
	}
	// A damaged entry: set aside in bad/, the rest opens.
	st, _ := q2.Stage(header(KindInternet, "x@example.org"), []byte("ok"))
	good, _ := st.Commit()
	os.WriteFile(filepath.Join(dir, "q", h.ID), []byte("{not json"), 0o600)
	q3 := open(t, dir, c)
	if q3.Has(h.ID) != "" || q3.Has(good) != "queued" {
		t.Fatalf("after damage: %q %q", q3.Has(h.ID), q3.Has(good))
	}
	if _, err := os.Stat(filepath.Join(dir, "bad", h.ID)); err != nil {
		t.Fatalf("damaged entry not set aside: %v", err)
	}
	if _, err := q3.Body("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a path as id: %v", err)
	}
}
