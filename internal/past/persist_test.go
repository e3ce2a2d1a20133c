package past

import (
	"errors"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/store"
)

// slowBatcher is a MemStore whose Apply takes a while (an fsync) and counts its calls.
type slowBatcher struct {
	*MemStore
	mu      sync.Mutex
	applies int
	fail    error
}

func (b *slowBatcher) Apply(ops []store.Op) ([]error, error) {
	time.Sleep(5 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applies++
	if b.fail != nil {
		return nil, b.fail
	}
	res := make([]error, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case store.OpPut:
			res[i] = b.MemStore.PutIf(op.Obj, op.Cond)
		case store.OpExpiry:
			_, res[i] = b.MemStore.UpdateExpiry(op.Key, op.Expiry)
		case store.OpDelete:
			res[i] = b.MemStore.Delete(op.Key)
		}
	}
	return res, nil
}

// Writes are visible at once through the overlay, reach the store only through persist, and
// concurrent steps share commits: 64 writers, far fewer than 64 commits, every one durable
// when its persist returns.
func TestWriteBackGroupsCommits(t *testing.T) {
	now := time.Unix(1e9, 0)
	base := &slowBatcher{MemStore: NewMemStore(func() time.Time { return now }, time.Hour)}
	wb := newWriteBack(base)
	ring := ids.RingIDOf("t")
	key := func(i int) ids.Key { return ids.Key{Ring: ring, ID: ids.HashString(string(rune('a' + i)))} }

	// One step alone. (MemStore is not safe for concurrent use: the test reads it under
	// base.mu, as Apply writes it.)
	if err := wb.PutIf(store.Object{Meta: store.Meta{Key: key(0)}, Payload: []byte("zero")}, nil); err != nil {
		t.Fatal(err)
	}
	if o, err := wb.Get(key(0)); err != nil || string(o.Payload) != "zero" {
		t.Fatalf("overlay read: %v", err)
	}
	if base.Has(key(0)) {
		t.Fatal("the write reached the store before persist")
	}
	own, upTo := wb.q.TakeStep()
	if err := wb.q.Persist(own, upTo); err != nil || !base.Has(key(0)) {
		t.Fatalf("persist: %v, in store %v", err, base.Has(key(0)))
	}

	var nodeMu sync.Mutex // the driver's lock around the state machine
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := 1; i <= 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			nodeMu.Lock()
			err := wb.PutIf(store.Object{Meta: store.Meta{Key: key(i % 64), Seq: uint64(i)}, Payload: []byte{byte(i)}}, nil)
			own, upTo := wb.q.TakeStep()
			nodeMu.Unlock()
			if err == nil {
				err = wb.q.Persist(own, upTo)
			}
			if err == nil {
				base.mu.Lock()
				_, gerr := base.MemStore.Get(key(i % 64))
				base.mu.Unlock()
				if gerr != nil {
					err = errors.Join(errors.New("not durable after persist"), gerr)
				}
			}
			errs[i-1] = err
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if base.applies >= 64 {
		t.Fatalf("64 concurrent writers took %d commits: no group commit", base.applies)
	}
	t.Logf("65 writes in %d commits", base.applies)

	// A failed commit: the writer hears it, and the overlay forgets the change.
	base.fail = errors.New("disk full")
	nodeMu.Lock()
	_ = wb.PutIf(store.Object{Meta: store.Meta{Key: key(70)}, Payload: []byte("lost")}, nil)
	own, upTo = wb.q.TakeStep()
	nodeMu.Unlock()
	if err := wb.q.Persist(own, upTo); err == nil {
		t.Fatal("a failed commit was reported as durable")
	}
	if _, err := wb.Get(key(70)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the overlay still shows a write that failed: %v", err)
	}
}
