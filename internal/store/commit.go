package store

import "sync"

// Group commit. Every write goes through Store.update, which queues the write and lets one
// writer at a time (the leader) commit everything queued so far in a single transaction: one
// journal record and one fsync for all of them (journal.go). A lone writer commits at once, so nothing waits for a timer (unlike
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
	run      func() error  // instead of fn: run alone by the leader, between commits (exclusive)
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
// (its journal record is synced), then removes payload files whose last reference fn dropped.
// Removing after the commit means a crash can leave an orphan file (repaired at Open), never a
// dangling reference.
func (s *Store) update(fn func(w *writeTx) error) error {
	req := &commitReq{fn: fn, wake: make(chan struct{}, 1)}
	s.enqueue(req)
	if req.err != nil {
		return req.err
	}
	for _, h := range req.freed {
		s.removeBlobIfUnused(h)
	}
	return nil
}

// exclusive runs fn while no commit is in progress (a checkpoint at Close).
func (s *Store) exclusive(fn func() error) error {
	req := &commitReq{run: fn, wake: make(chan struct{}, 1)}
	s.enqueue(req)
	return req.err
}

// enqueue queues req and returns once it is done, leading the commits meanwhile if no one else
// does.
func (s *Store) enqueue(req *commitReq) {
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead {
		<-req.wake
	}
	if req.finished {
		return
	}
	// We lead: commit the queue (which holds our own request), then hand over.
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()
	var writes, runs []*commitReq
	for _, r := range batch {
		if r.run != nil {
			runs = append(runs, r)
		} else {
			writes = append(writes, r)
		}
	}
	if fn := s.takeLazy(); fn != nil {
		// Lazy changes ride along (lazy.go); nobody waits for them.
		writes = append([]*commitReq{{fn: fn, wake: make(chan struct{}, 1)}}, writes...)
	}
	if len(writes) > 0 {
		s.commitGroup(writes)
	}
	for _, r := range runs {
		r.finished, r.err = true, r.run()
	}
	for _, r := range batch {
		if r != req {
			r.wake <- struct{}{}
		}
	}
	s.overMu.RLock()
	idle := s.frozen == nil
	s.overMu.RUnlock()
	if idle && s.checkpointDue() {
		if err := s.freeze(); err != nil {
			// The overlay and the journal keep everything; the next commit tries again.
			s.opts.Logger.Warn("store: checkpoint failed", "dir", s.dir, "err", err)
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

func (s *Store) commitGroup(batch []*commitReq) {
	err := mapClosed(s.commitLayered(batch))
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			r.finished, r.err = true, err
		}
		return
	}
	for _, r := range batch {
		r.freed = nil
		s.commitGroup([]*commitReq{r})
	}
}

// commitLayered runs the batch's writes over the overlay, makes their changes durable in the
// journal and adds them to the overlay (journal.go).
func (s *Store) commitLayered(batch []*commitReq) error {
	s.overMu.RLock()
	lower := s.layersLocked()
	base, err := s.db.Begin(false)
	s.overMu.RUnlock()
	if err != nil {
		return err
	}
	defer base.Rollback()
	top := newLayer()
	w := newLayeredWriteTx(top, lower, base)
	if s.opts.ValueLogMin > 0 {
		w.vals = &valueBuf{epoch: s.journal.epoch, start: uint64(s.journal.off), min: int64(s.opts.ValueLogMin),
			rec: s.journal.startRecord(), log: s.vlog}
	}
	before := w.stats
	for _, r := range batch {
		w.freed = nil
		if err := r.fn(w); err != nil {
			return err
		}
		r.freed = w.freed
	}
	if w.stats != before {
		if err := w.flushStats(); err != nil {
			return err
		}
	}
	if top.empty() {
		return nil // nothing changed: no record, no fsync
	}
	var rec []byte
	if w.vals != nil {
		rec = w.vals.rec
	}
	off := s.journal.off
	if err := s.journal.appendLayer(top, rec); err != nil {
		return err
	}
	s.vlog.grew(s.journal.epoch, int(s.journal.off-off))
	s.vlog.apply(w.liveDelta)
	// Let go of the bbolt snapshot before waiting for overMu: a background checkpoint that
	// grows index.db waits for every read transaction to end, and a reader holding overMu may
	// be waiting for that checkpoint to let it begin its own (a lock cycle otherwise).
	_ = base.Rollback()
	s.overMu.Lock()
	if s.over.empty() {
		s.overSince = s.now()
	}
	s.over.absorb(top)
	s.overMu.Unlock()
	return nil
}
