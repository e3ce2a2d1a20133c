// Package groupcommit is the write-back queue behind the replicas of PAST and Glacier: a
// protocol state machine writes into an in-memory overlay (its next reads see the change at
// once), and its driver, outside the state machine's lock, makes the queued changes durable
// in groups, one store transaction (one fsync) for every change queued meanwhile, and only
// then sends the messages that depended on them (the raft rule: persist before you send).
//
// Queue knows nothing of objects or fragments: it keeps, per key, the caller's staged state
// S (what the overlay shows until the change is committed) and the sequence number of the
// key's newest queued change, and calls commit with batches of the caller's ops, in the order
// they were queued. One goroutine commits at a time; goroutines that need their changes
// durable meanwhile wait, and the next committer takes everything queued since.
//
// Stage, Lookup and TakeStep run under the state machine's lock (one step at a time); Pending
// and Persist run outside it, on any goroutine.
package groupcommit

import "sync"

// Queue is a write-back queue of ops of type Op on keys of type K, with staged state S.
type Queue[K comparable, Op any, S any] struct {
	commit func(ops []Op) ([]error, error)
	keyOf  func(op *Op) K

	mu         sync.Mutex
	cond       *sync.Cond
	keys       map[K]*entry[S]
	queue      []queued[Op]
	step       []uint64 // ops queued since the last TakeStep
	staged     uint64   // last sequence number queued
	committed  uint64   // every op up to this one is committed (or failed)
	failed     map[uint64]error
	committing bool
}

type entry[S any] struct {
	seq   uint64
	state S
}

type queued[Op any] struct {
	seq uint64
	op  Op
}

// New returns a queue that commits with commit (results per op, or an error for the whole
// batch); keyOf names the key an op changes.
func New[K comparable, Op any, S any](commit func(ops []Op) ([]error, error), keyOf func(op *Op) K) *Queue[K, Op, S] {
	q := &Queue[K, Op, S]{commit: commit, keyOf: keyOf, keys: map[K]*entry[S]{}, failed: map[uint64]error{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Lookup returns the staged state of k, if k has changes not yet committed.
func (q *Queue[K, Op, S]) Lookup(k K) (S, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.keys[k]; ok {
		return e.state, true
	}
	var zero S
	return zero, false
}

// Stage queues op and sets the staged state of its key to state.
func (q *Queue[K, Op, S]) Stage(op Op, state S) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.staged++
	q.queue = append(q.queue, queued[Op]{seq: q.staged, op: op})
	q.step = append(q.step, q.staged)
	k := q.keyOf(&op)
	e := q.keys[k]
	if e == nil {
		e = &entry[S]{}
		q.keys[k] = e
	}
	e.seq, e.state = q.staged, state
}

// TakeStep returns the ops queued since the last call and the last sequence number queued:
// the step that just ended must not send before everything up to it is durable.
func (q *Queue[K, Op, S]) TakeStep() (own []uint64, upTo uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	own, q.step = q.step, nil
	return own, q.staged
}

// Pending reports whether ops up to upTo still wait for their commit.
func (q *Queue[K, Op, S]) Pending(upTo uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.committed < upTo
}

// Persist makes every op up to upTo durable, committing them itself or waiting for the
// committer, and returns the first failure among own (nil: they are all on disk). A key whose
// newest op is committed (or failed) leaves the overlay: the durable store answers again.
func (q *Queue[K, Op, S]) Persist(own []uint64, upTo uint64) error {
	q.mu.Lock()
	for q.committed < upTo {
		if q.committing {
			q.cond.Wait()
			continue
		}
		q.committing = true
		batch := q.queue
		q.queue = nil
		q.mu.Unlock()
		var results []error
		var err error
		if len(batch) > 0 {
			ops := make([]Op, len(batch))
			for i := range batch {
				ops[i] = batch[i].op
			}
			results, err = q.commit(ops)
		}
		q.mu.Lock()
		for i := range batch {
			ferr := err
			if ferr == nil && i < len(results) {
				ferr = results[i]
			}
			if ferr != nil {
				q.failed[batch[i].seq] = ferr
			}
			k := q.keyOf(&batch[i].op)
			if e := q.keys[k]; e != nil && e.seq == batch[i].seq {
				delete(q.keys, k)
			}
		}
		if len(batch) > 0 {
			q.committed = batch[len(batch)-1].seq
		}
		q.committing = false
		q.cond.Broadcast()
	}
	var first error
	for _, s := range own {
		if err, ok := q.failed[s]; ok {
			if first == nil {
				first = err
			}
			delete(q.failed, s)
		}
	}
	q.mu.Unlock()
	return first
}

// Flush runs send once every op up to upTo is durable, with the first failure among own
// (nil: they are all on disk): right here, or, when async and a commit is still due, on a
// goroutine of its own, so that the caller (a connection's reader) goes on at once and the
// ops of the next messages share the commit.
func (q *Queue[K, Op, S]) Flush(own []uint64, upTo uint64, async bool, send func(err error)) {
	if async && q.Pending(upTo) {
		go func() { send(q.Persist(own, upTo)) }()
		return
	}
	send(q.Persist(own, upTo))
}
