package groupcommit

import (
	"testing"
	"time"
)

type op struct {
	key string
	val int
}

// A step waits for its own changes and for the staged changes it read, and for nothing
// else: while a commit of another step's change hangs, a step that wrote nothing and read
// nothing staged sends at once, and one that read that change waits for its commit.
func TestStepDependsOnWhatItWroteOrRead(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	q := New[string, op, int](func(ops []op) ([]error, error) {
		entered <- struct{}{}
		<-release
		return make([]error, len(ops)), nil
	}, func(o *op) string { return o.key })

	// Step 1 writes a; its commit starts and hangs.
	q.Stage(op{"a", 1}, 1)
	own, upTo := q.TakeStep()
	if len(own) != 1 || upTo != own[0] {
		t.Fatalf("a writing step: own %v, upTo %d", own, upTo)
	}
	done1 := make(chan error, 1)
	go func() { done1 <- q.Persist(own, upTo) }()
	<-entered

	// Step 2 reads a key with nothing staged and writes nothing: no dependency.
	if _, ok := q.Lookup("b"); ok {
		t.Fatal("b is not staged")
	}
	own, upTo = q.TakeStep()
	if len(own) != 0 || upTo != 0 {
		t.Fatalf("a step that wrote and read nothing staged: own %v, upTo %d", own, upTo)
	}
	sent := make(chan error, 1)
	q.Flush(own, upTo, true, func(err error) { sent <- err })
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a step that depends on nothing waited for another step's commit")
	}

	// Step 3 reads a (staged, not yet durable): it depends on step 1's change.
	if v, ok := q.Lookup("a"); !ok || v != 1 {
		t.Fatalf("the overlay shows a as %d, %v", v, ok)
	}
	own, upTo = q.TakeStep()
	if len(own) != 0 || upTo == 0 {
		t.Fatalf("a step that read a staged change: own %v, upTo %d", own, upTo)
	}
	q.Flush(own, upTo, true, func(err error) { sent <- err })
	select {
	case <-sent:
		t.Fatal("a step sent what it read from the overlay before it was durable")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := <-done1; err != nil {
		t.Fatal(err)
	}

	// The read was forgotten with the step: the next one depends on nothing again.
	if own, upTo = q.TakeStep(); len(own) != 0 || upTo != 0 {
		t.Fatalf("a later step inherited a read: own %v, upTo %d", own, upTo)
	}
}
