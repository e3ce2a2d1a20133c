package store

import (
	"sync"

	bolt "go.etcd.io/bbolt"

	"epost/internal/diskstat"
)

// Group commit. Every write goes through Store.update, which queues the write and lets one
// writer at a time (the leader) commit everything queued so far in a single bbolt transaction:
// one fsync for all of them. A lone writer commits at once, so nothing waits for a timer (unlike
// bbolt's DB.Batch); under concurrent load the writes that pile up during one commit share the
// next. This matters for PAST, whose replicas receive inserts on many goroutines at once.
//
// A write function may therefore run inside a transaction shared with other writes. If any of
// them fails, the shared transaction is rolled back and each is run again alone, so a failing
// write never leaves partial changes and never takes its neighbours down with it. Write
// functions must tolerate running more than once (they recompute everything from the index).

// maxGroup bounds how many writes share one transaction.
const maxGroup = 256

type commitReq struct {
	fn       func(*writeTx) error
	wake     chan struct{} // the leader signals completion, or promotion to leader
	finished bool
	err      error
	freed    []Hash
}

type committer struct {
	mu      sync.Mutex
	queue   []*commitReq // waiting writes, in arrival order
	leading bool         // a writer is committing or about to
}

// update runs fn in a write transaction (possibly shared, see above), waits for the commit
// (bbolt fsyncs it), then removes payload files whose last reference fn dropped. Removing after
// the commit means a crash can leave an orphan file (repaired at Open), never a dangling reference.
func (s *Store) update(fn func(w *writeTx) error) error {
	req := &commitReq{fn: fn, wake: make(chan struct{}, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead {
		<-req.wake
	}
	if !req.finished {
		// We lead: commit the queue (which holds our own request), then hand over.
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		if fn := s.takeLazy(); fn != nil {
			// Lazy changes ride along (lazy.go); nobody waits for them.
			batch = append([]*commitReq{{fn: fn, wake: make(chan struct{}, 1)}}, batch...)
		}
		s.commitGroup(batch)
		for _, r := range batch {
			if r != req {
				r.wake <- struct{}{}
			}
		}
		g.mu.Lock()
		if len(g.queue) > 0 {
			g.queue[0].wake <- struct{}{} // promote the next waiter; leading stays true
		} else {
			g.leading = false
		}
		g.mu.Unlock()
	}
	if req.err != nil {
		return req.err
	}
	for _, h := range req.freed {
		s.removeBlobIfUnused(h)
	}
	return nil
}

func (s *Store) commitGroup(batch []*commitReq) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		diskstat.StoreIndex.BoltCommit(tx)
		w := newWriteTx(tx)
		for _, r := range batch {
			w.freed = nil
			if err := r.fn(w); err != nil {
				return err
			}
			r.freed = w.freed
		}
		return w.flushStats()
	})
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			r.finished, r.err = true, mapClosed(err)
		}
		return
	}
	for _, r := range batch {
		r.freed = nil
		s.commitGroup([]*commitReq{r})
	}
}
