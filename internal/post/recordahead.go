package post

import (
	"io"

	"epost/internal/ids"
)

// Appends acknowledged at the writer's record (AppendRecorded).
//
// A log has one head write in flight at a time; entries queued meanwhile go out with the next
// one. An AppendRecorded entry is acknowledged once a head version carrying it is recorded on
// this node's disk (HeadRecords), which happens in one of two ways:
//
//   - with its own head write: recordAndInsert saves the record alongside the ring insert, and
//     recordedHook acknowledges the batch's recorded entries when the save returns;
//   - ahead of it: recordAheadLocked builds the head the next write would carry (the state of
//     the head in flight, if one is, or of the committed head, plus the queued entries), and
//     saves it as a record only, at the next sequence number. It is never sent. The real next
//     write is built as always, from what the ring acknowledged, at a higher sequence number,
//     with the same entries in the same order, sealed to the same bytes, so the record ahead
//     is its ancestor. With no write in flight this is how a queue of changes that are all
//     durable on this node gets acknowledged while its head write waits FilingBatch for more
//     changes to share it: a user's flag changes cost one record fsync each (shared between
//     folders) and one head write per folder every FilingBatch, not one each.
//
// Either record survives a crash of this node, and a log is reopened from the newer of the
// record and the ring (logopen.go), then written back to the ring: so an acknowledged entry
// is never lost to a crash. It is lost with this node's disk if the ring had not yet
// acknowledged it, which is why mail never uses this: flag changes do, as a mail server's
// index does.

// recordedHook returns what runs once a record of a head carrying batch (whose first entry
// has index first) is on this node's disk: the callbacks of the batch's recorded entries,
// each once (nil when the batch has none).
func (u *User) recordedHook(l *logState, batch []pendingAppend, first uint64) func() {
	at := map[uint64]uint64{}
	for i, a := range batch {
		if a.recorded && !a.durable {
			at[a.id] = first + uint64(i)
		}
	}
	if len(at) == 0 {
		return nil
	}
	return func() { u.ackRecorded(l, at) }
}

// ackRecorded notes that a record carrying the entries named in at (id → index) is on
// this node's disk, and acknowledges those that Entries shows (ackReadyLocked). An entry no
// longer waiting had its head acknowledged by the ring meanwhile, and its caller heard then.
func (u *User) ackRecorded(l *logState, at map[uint64]uint64) {
	n := u.n
	n.mu.Lock()
	for _, q := range [2][]pendingAppend{l.inflight, l.queue} {
		for i := range q {
			if a := &q[i]; a.recorded {
				if idx, ok := at[a.id]; ok {
					a.durable, a.index = true, idx
				}
			}
		}
	}
	fire := l.ackReadyLocked(&n.stats)
	n.mu.Unlock()
	runAll(fire)
}

// ackReadyLocked takes the callbacks of the recorded entries that are durable (a record
// carries them) and shown (Entries shows them: every entry ahead of them is local), so that
// a caller who hears of its entry reads it back at once. One behind an ordinary append in
// flight waits for that append's head; its own head acknowledges it at the latest.
func (l *logState) ackReadyLocked(st *Stats) []func() {
	var fire []func()
	for _, q := range [2][]pendingAppend{l.inflight, l.queue} {
		for i := range q {
			a := &q[i]
			if !a.local {
				return fire
			}
			if a.recorded && a.durable && !a.acked {
				a.acked = true
				cb, idx := a.cb, a.index
				fire = append(fire, func() { cb(idx, nil) })
				st.LogAppendsRecorded++
			}
		}
	}
	return fire
}

// recordAheadLocked, called with n.mu held while l's head write is in flight (or while the
// next one waits for more changes to share it: FilingBatch), starts a record of the head the
// next write would carry, when the queue holds recorded entries not in a record yet; it
// returns the work to run after the unlock (nil: nothing to do now).
// One record ahead is saved at a time; when it is done flushLog looks again, so entries
// queued meanwhile get the next one.
func (u *User) recordAheadLocked(l *logState) func() {
	n := u.n
	base := l.flight // the head in flight, if it commits
	if !l.writing {
		base = &l.head // the committed head: the next write waits (FilingBatch)
	}
	if l.ahead || l.saving || l.aheadFailed || base == nil || u.heads == nil {
		return nil // one record of a log is saved at a time; its end calls flushLog again
	}
	st := *base
	size := 0
	for _, ct := range st.Inline {
		size += len(ct)
	}
	var batch []pendingAppend
	wanted := false
	for _, q := range l.queue {
		if len(batch)+len(st.Inline) >= maxBatch || size+len(q.body) >= maxInline/2 {
			break
		}
		batch = append(batch, q)
		size += len(q.body)
		wanted = wanted || q.recorded && !q.durable
	}
	if !wanted {
		// Nothing waits for a record (entries recorded already and not acknowledged wait for
		// an append ahead of them), or the next write must store entries first.
		return nil
	}
	if len(st.Inline) == 0 {
		st.InlineFrom = st.Count
	}
	inline := st.Inline[:len(st.Inline):len(st.Inline)] // the write in flight shares its array
	prev := st.Newest
	for i, a := range batch {
		at := st.Count + uint64(i)
		ct, err := a.sealed(l, n.cfg.Rand, at, prev)
		if err != nil {
			return nil // the next write builds them again and reports the error
		}
		// The next write seals it with these bytes where it puts it at the same place.
		l.queue[i].ct, l.queue[i].ctAt, l.queue[i].ctPrev = ct, at, prev
		prev = ids.Hash(ct)
		inline = append(inline, ct)
	}
	at := map[uint64]uint64{}
	for i, a := range batch {
		if a.recorded && !a.durable {
			at[a.id] = st.Count + uint64(i)
		}
	}
	st.Inline = inline
	st.Count += uint64(len(batch))
	st.Newest = prev
	payload, err := encodeHead(&l.logKey, n.cfg.Rand, l.key, l.wrapped, &st)
	if err != nil {
		return nil
	}
	l.seq++ // the next write goes above this record
	seq := l.seq
	l.ahead = true
	n.stats.LogRecordsAhead++
	done := func(err error) {
		if err != nil {
			n.cfg.Log.Warn("post: cannot record a log head ahead of its write; its entries wait for the write", "user", u.addr, "log", l.name, "err", err)
		} else {
			u.noteRecord(l.name, seq, payload)
			u.ackRecorded(l, at)
		}
		n.mu.Lock()
		l.ahead = false
		l.aheadFailed = err != nil // no other try before the next write (a failing disk)
		n.mu.Unlock()
		u.flushLog(l)
	}
	if ah, ok := u.heads.(AsyncHeadRecords); ok {
		return func() { ah.SaveAsync(l.name, seq, payload, done) }
	}
	return func() { done(u.heads.Save(l.name, seq, payload)) }
}

// sealed is a's entry sealed at index at after prev: the bytes a record ahead sealed for
// that place, or new ones.
func (a *pendingAppend) sealed(l *logState, rand io.Reader, at uint64, prev ids.ID) ([]byte, error) {
	if a.ct != nil && a.ctAt == at && a.ctPrev == prev {
		return a.ct, nil
	}
	return sealEntry(&l.logKey, rand, l.key, at, prev, a.body)
}
