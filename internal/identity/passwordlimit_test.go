package identity

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// Password checks run through a bounded pool: a flood of wrong passwords waits for a slot (or
// is refused with ErrBusy once the wait is over) instead of running Argon2id all at once,
// while a password the cache knows passes without a slot.
func TestPasswordCacheLimit(t *testing.T) {
	keys, err := NewKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := SealOptions{Time: 1, MemoryKiB: 8 << 10, Threads: 1}
	blob, err := SealPrivate(keys, "bob@acme.example", []byte("right password"), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewPasswordCache(nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(blob, []byte("right password")); err != nil {
		t.Fatal(err)
	}
	// Every slot taken (a run that lasts): a cached login still passes, others wait and give up.
	c.SetLimit(1, 50*time.Millisecond)
	c.slots <- struct{}{}
	start := time.Now()
	if _, _, err := c.Open(blob, []byte("right password")); err != nil || time.Since(start) > 20*time.Millisecond {
		t.Fatalf("cached login while busy: %v after %v", err, time.Since(start))
	}
	var wg sync.WaitGroup
	busy := 0
	var mu sync.Mutex
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := c.Open(blob, []byte("guess")); errors.Is(err, ErrBusy) {
				mu.Lock()
				busy++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if busy != 20 {
		t.Fatalf("%d of 20 guesses refused while every slot was taken, want all", busy)
	}
	<-c.slots
	// Free slots: 20 concurrent guesses all run, one at a time, and are all wrong.
	c.SetLimit(1, 10*time.Second)
	before := c.Stats()
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := c.Open(blob, []byte("guess")); !errors.Is(err, ErrWrongPassword) {
				t.Errorf("guess: %v", err)
			}
		}()
	}
	wg.Wait()
	st := c.Stats()
	if st.Opens-before.Opens != 20 || st.Wrong-before.Wrong != 20 || st.Queued == before.Queued || st.Busy != before.Busy {
		t.Fatalf("stats %+v (before %+v)", st, before)
	}
}
