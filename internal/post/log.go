package post

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"epost/internal/content"
	"epost/internal/ids"
	"epost/internal/past"
)

// Log errors.
var (
	ErrLogExists   = errors.New("post: log already exists")
	ErrNoLog       = errors.New("post: log not found")
	ErrLogNotReady = errors.New("post: log not open")
	ErrTooBig      = errors.New("post: log entry too large")
)

// Well-known log names.
const (
	RootLog  = "root"  // lists the user's folders (entries: "+name")
	InboxLog = "INBOX" // filed notifications (EncodeFiled); doubles as the received set
)

const (
	logNamePrefix = "epost/v1/log/"
	backupName    = "epost/v1/log-backup"
)

// logState is one log of a local user: the committed head and, as a local cache, every
// entry's body and location.
type logState struct {
	name    string
	key     ids.Key
	logKey  [32]byte
	wrapped []byte
	loaded  bool
	opening bool
	seq     uint64 // highest head sequence number written or seen
	head    headState
	payload []byte // committed head payload, for backups
	bodies  [][]byte
	locs    []ids.ID

	queue    []pendingAppend
	inflight []pendingAppend // the batch whose head write is under way
	writing  bool
	tail     [][]byte // entries from tailFrom on, not all stored on their own yet
	tailFrom uint64
	acked    map[uint64]bool
	snap     *pendingSnapshot // written with the next head
	snapping bool
	waiters  []func(error) // OpenLog callers while opening
}

type pendingAppend struct {
	body  []byte
	cb    func(uint64, error)
	local bool // durable on this node already (journaled): Entries shows it before its head
	// shown, if set, runs once Entries shows this local entry (see revealLocked).
	shown func()
}

type pendingSnapshot struct {
	index uint64
	ref   []byte
}

// LogHead describes a log's committed head.
type LogHead struct {
	Key           ids.Key
	Seq           uint64
	Count         uint64
	SnapshotIndex uint64
}

func (u *User) headKey(name string) ids.Key {
	return past.SignedKey(u.n.cfg.Ring, u.keys.Public().Signing, []byte(logNamePrefix+name))
}

// CreateLog creates an empty log. It is the only way a head comes to exist, and it refuses
// when a head exists already or when the lookup was inconclusive: a "not found" can be a
// routing artifact, and writing an empty head over a real one would lose the folder (ePOST
// never created a user's logs after the node's first start, for the same reason). Creating
// any log but the root log also lists it in the root log.
func (u *User) CreateLog(name string, cb func(error)) {
	if cb == nil {
		cb = func(error) {}
	}
	u.n.mu.Lock()
	if _, ok := u.logs[name]; ok {
		u.n.mu.Unlock()
		cb(fmt.Errorf("%w: %s", ErrLogExists, name))
		return
	}
	l := &logState{name: name, key: u.headKey(name), opening: true}
	u.logs[name] = l
	u.n.mu.Unlock()
	// OpenLog calls made while the log is being created wait for the outcome.
	fail := func(err error) {
		u.n.mu.Lock()
		delete(u.logs, name)
		ws := l.waiters
		l.waiters, l.opening = nil, false
		u.n.mu.Unlock()
		cb(err)
		for _, w := range ws {
			w(err)
		}
	}
	u.n.lookup(l.key, func(_ past.Object, err error) {
		switch {
		case err == nil:
			fail(fmt.Errorf("%w: %s", ErrLogExists, name))
			return
		case !errors.Is(err, past.ErrNotFound) || errors.Is(err, past.ErrTimeout):
			fail(fmt.Errorf("%w: create log %s: %v", ErrInconclusive, name, err))
			return
		}
		if _, err := io.ReadFull(u.n.cfg.Rand, l.logKey[:]); err != nil {
			fail(err)
			return
		}
		wrapped, err := wrapLogKey(u.keys.Public().Encryption, l.key, &l.logKey)
		if err != nil {
			fail(err)
			return
		}
		l.wrapped = wrapped
		payload, err := encodeHead(&l.logKey, u.n.cfg.Rand, l.key, wrapped, &headState{})
		if err != nil {
			fail(err)
			return
		}
		obj := past.NewSigned(u.keys.SigningKey(), u.n.cfg.Ring, []byte(logNamePrefix+name), 1, payload, u.n.now().Add(u.n.cfg.ContentLease))
		u.n.st.Insert(obj, func(r past.InsertResult) {
			if r.Err != nil {
				// A replica that refused as stale holds a head: the log exists.
				fail(fmt.Errorf("post: create log %s: %w", name, r.Err))
				return
			}
			u.keep(obj)
			u.n.mu.Lock()
			l.seq, l.payload, l.loaded, l.opening = 1, payload, true, false
			ws := l.waiters
			l.waiters = nil
			u.n.mu.Unlock()
			if name != RootLog {
				u.Append(RootLog, []byte("+"+name), nil)
			}
			cb(nil)
			for _, w := range ws {
				w(nil)
			}
			u.flushLog(l)
		})
	})
}

// OpenLog loads an existing log from the ring: head, then the snapshot and the entries after
// it (walking the hash chain back from the newest). It never creates anything.
func (u *User) OpenLog(name string, cb func(error)) {
	if cb == nil {
		cb = func(error) {}
	}
	u.n.mu.Lock()
	l, ok := u.logs[name]
	switch {
	case ok && l.loaded:
		u.n.mu.Unlock()
		cb(nil)
		return
	case ok && l.opening:
		l.waiters = append(l.waiters, cb)
		u.n.mu.Unlock()
		return
	case !ok:
		l = &logState{name: name, key: u.headKey(name)}
		u.logs[name] = l
	}
	l.opening = true
	l.waiters = append(l.waiters, cb)
	u.n.mu.Unlock()
	finish := func(err error) {
		u.n.mu.Lock()
		l.opening = false
		if err == nil {
			l.loaded = true
		}
		ws := l.waiters
		l.waiters = nil
		u.n.mu.Unlock()
		for _, w := range ws {
			w(err)
		}
		if err == nil {
			u.flushLog(l)
		}
	}
	u.n.lookup(l.key, func(obj past.Object, err error) {
		if err != nil {
			if errors.Is(err, past.ErrTimeout) {
				finish(fmt.Errorf("%w: open log %s: %v", ErrInconclusive, name, err))
			} else {
				finish(fmt.Errorf("%w: %s", ErrNoLog, name))
			}
			return
		}
		key, wrapped, st, err := decodeHead(u.keys, l.key, obj.Payload)
		if err != nil {
			finish(fmt.Errorf("post: open log %s: %w", name, err))
			return
		}
		u.n.mu.Lock()
		l.logKey = key // replay decrypts entries with it
		u.n.mu.Unlock()
		u.replay(l, st, func(bodies [][]byte, locs []ids.ID, err error) {
			if err != nil {
				finish(fmt.Errorf("post: replay log %s: %w", name, err))
				return
			}
			u.n.mu.Lock()
			l.logKey, l.wrapped, l.head, l.seq, l.payload = key, wrapped, *st, obj.Seq, obj.Payload
			l.bodies, l.locs = bodies, locs
			u.n.mu.Unlock()
			u.onLogLoaded(l)
			finish(nil)
		})
	})
}

// replay rebuilds all bodies of a log from its head: inline entries, then the chain back to
// the snapshot, then the snapshot. Every entry's index and link is checked.
func (u *User) replay(l *logState, st *headState, cb func([][]byte, []ids.ID, error)) {
	bodies := make([][]byte, st.Count)
	locs := make([]ids.ID, st.Count)
	next := st.Newest
	for i := len(st.Inline) - 1; i >= 0; i-- {
		idx, p, body, err := openEntry(&l.logKey, l.key, st.Inline[i])
		if err != nil || idx != st.InlineFrom+uint64(i) || ids.Hash(st.Inline[i]) != next {
			cb(nil, nil, fmt.Errorf("%w: inline entry %d", ErrMalformed, st.InlineFrom+uint64(i)))
			return
		}
		bodies[idx], locs[idx] = body, next
		next = p
	}
	lowest := st.InlineFrom
	if len(st.Inline) == 0 {
		lowest = st.Count
	}
	var walk func(idx uint64, loc ids.ID)
	loadSnap := func() {
		if st.SnapshotIndex == 0 {
			cb(bodies, locs, nil)
			return
		}
		ref, err := content.UnmarshalRef(st.Snapshot)
		if err != nil {
			cb(nil, nil, err)
			return
		}
		u.n.Get(ref, func(data []byte, err error) {
			if err != nil {
				cb(nil, nil, fmt.Errorf("snapshot: %w", err))
				return
			}
			snap, err := decodeSnapshot(data, st.SnapshotIndex)
			if err != nil {
				cb(nil, nil, err)
				return
			}
			copy(bodies, snap)
			cb(bodies, locs, nil) // locations before the snapshot are not needed again
		})
	}
	walk = func(idx uint64, loc ids.ID) {
		// idx is the index of the entry at loc; stop at the snapshot.
		if idx+1 <= st.SnapshotIndex || idx == ^uint64(0) {
			loadSnap()
			return
		}
		u.n.lookup(ids.Key{Ring: u.n.cfg.Ring, ID: loc}, func(obj past.Object, err error) {
			if err != nil {
				cb(nil, nil, fmt.Errorf("entry %d: %w", idx, err))
				return
			}
			i, p, body, err := openEntry(&l.logKey, l.key, obj.Payload)
			if err != nil || i != idx {
				cb(nil, nil, fmt.Errorf("%w: entry %d", ErrMalformed, idx))
				return
			}
			bodies[idx], locs[idx] = body, loc
			walk(idx-1, p)
		})
	}
	if lowest == 0 || lowest <= st.SnapshotIndex {
		loadSnap()
		return
	}
	walk(lowest-1, next)
}

// Append adds an entry to a log this node has open (CreateLog or OpenLog); an entry is never
// appended to a log whose head was not found. Appends are batched: entries queued while a
// head write is in flight go out together with the next one. cb gets the entry's index once
// the head naming it is acknowledged by a quorum.
func (u *User) Append(name string, body []byte, cb func(uint64, error)) {
	u.appendEntry(name, body, false, nil, cb)
}

// appendLocal is Append for an entry this node holds durably already (the journal): Entries
// shows it, at the index it will have in the log, as soon as every entry queued before it is
// shown too (at once, unless an ordinary append waits for its head write ahead of it).
// shown, if not nil, runs (without locks held) once Entries shows the entry, before the head
// write starts; if the entry fails before it is shown, shown never runs.
func (u *User) appendLocal(name string, body []byte, shown func(), cb func(uint64, error)) {
	u.appendEntry(name, body, true, shown, cb)
}

func (u *User) appendEntry(name string, body []byte, local bool, shown func(), cb func(uint64, error)) {
	if cb == nil {
		cb = func(uint64, error) {}
	}
	if len(body) > maxEntryBody {
		cb(0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooBig, len(body), maxEntryBody))
		return
	}
	u.n.mu.Lock()
	l, ok := u.logs[name]
	if !ok {
		u.n.mu.Unlock()
		cb(0, fmt.Errorf("%w: %s", ErrLogNotReady, name))
		return
	}
	l.queue = append(l.queue, pendingAppend{body: append([]byte(nil), body...), cb: cb, local: local, shown: shown})
	reveal := l.revealLocked()
	u.n.mu.Unlock()
	runAll(reveal)
	u.flushLog(l)
}

// revealLocked takes the shown callbacks of the local entries Entries now shows: the local
// entries at the front of the uncommitted ones (in flight, then queued). Each runs once.
func (l *logState) revealLocked() []func() {
	var out []func()
	for _, q := range [][]pendingAppend{l.inflight, l.queue} {
		for i := range q {
			if !q[i].local {
				return out
			}
			if q[i].shown != nil {
				out = append(out, q[i].shown)
				q[i].shown = nil
			}
		}
	}
	return out
}

func runAll(fs []func()) {
	for _, f := range fs {
		f()
	}
}

// flushLog writes the queued entries (and a finished snapshot) with one new head. The head
// carries inline copies of every entry from the oldest one whose own insert is not yet
// acknowledged (the tail), so appends complete when the head is acknowledged and never wait
// for the entries' inserts; a head never drops an entry that is not stored on its own.
func (u *User) flushLog(l *logState) {
	n := u.n
	n.mu.Lock()
	if !l.loaded || l.writing || (len(l.queue) == 0 && l.snap == nil) || n.stop {
		n.mu.Unlock()
		return
	}
	tailBytes := 0
	for _, ct := range l.tail {
		tailBytes += len(ct)
	}
	if tailBytes >= maxInline/2 {
		n.mu.Unlock() // wait for entry inserts to catch up (insertEntry calls us again)
		return
	}
	var batch []pendingAppend
	size := tailBytes
	for len(l.queue) > 0 && len(batch)+len(l.tail) < maxBatch && (len(batch) == 0 || size+len(l.queue[0].body) < maxInline/2) {
		batch = append(batch, l.queue[0])
		size += len(l.queue[0].body)
		l.queue = l.queue[1:]
	}
	st := l.head
	prev := st.Newest
	var cts [][]byte
	var locs []ids.ID
	for i, a := range batch {
		ct, err := sealEntry(&l.logKey, n.cfg.Rand, l.key, st.Count+uint64(i), prev, a.body)
		if err != nil {
			n.mu.Unlock()
			for _, a := range batch {
				a.cb(0, err)
			}
			return
		}
		prev = ids.Hash(ct)
		cts = append(cts, ct)
		locs = append(locs, prev)
	}
	if len(l.tail) == 0 {
		l.tailFrom = st.Count
	}
	st.InlineFrom = l.tailFrom
	st.Inline = append(append([][]byte(nil), l.tail...), cts...)
	st.Count += uint64(len(batch))
	st.Newest = prev
	snap := l.snap
	if snap != nil {
		st.SnapshotIndex, st.Snapshot = snap.index, snap.ref
	}
	payload, err := encodeHead(&l.logKey, n.cfg.Rand, l.key, l.wrapped, &st)
	if err != nil {
		n.mu.Unlock()
		for _, a := range batch {
			a.cb(0, err)
		}
		return
	}
	l.seq++
	seq := l.seq
	l.writing = true
	l.inflight = batch
	n.stats.LogHeadWrites++
	n.mu.Unlock()

	obj := past.NewSigned(u.keys.SigningKey(), n.cfg.Ring, []byte(logNamePrefix+l.name), seq, payload, n.now().Add(n.cfg.ContentLease))
	n.st.Insert(obj, func(r past.InsertResult) {
		n.mu.Lock()
		if !l.writing || len(l.inflight) != len(batch) || (len(batch) > 0 && &l.inflight[0] != &batch[0]) {
			n.mu.Unlock()
			return // a restart (Resume) requeued this batch; its new write decides
		}
		l.writing = false
		l.inflight = nil
		if r.Err == nil {
			defer u.keep(obj) // after the unlock below
		}
		if r.Err != nil {
			// Put the batch back in front: the next head carries it with a higher seq.
			l.queue = append(batch, l.queue...)
			n.mu.Unlock()
			n.cfg.Log.Warn("post: log head write failed; retrying", "log", l.name, "err", r.Err)
			n.after(n.cfg.RetryDelay, func() { u.flushLog(l) })
			return
		}
		first := l.head.Count
		l.head = st
		l.payload = payload
		l.bodies = append(l.bodies, bodiesOf(batch)...)
		l.locs = append(l.locs, locs...)
		l.tail = append(l.tail, cts...)
		if snap != nil && l.snap == snap {
			l.snap = nil
		}
		n.stats.LogAppends += uint64(len(batch))
		needSnap := !l.snapping && l.snap == nil && st.Count/uint64(n.cfg.SnapshotEvery) > st.SnapshotIndex/uint64(n.cfg.SnapshotEvery)
		if needSnap {
			l.snapping = true
		}
		// Entries shows this batch now, and the local entries queued behind it.
		var reveal []func()
		for i := range batch {
			if batch[i].shown != nil {
				reveal = append(reveal, batch[i].shown)
				batch[i].shown = nil
			}
		}
		reveal = append(reveal, l.revealLocked()...)
		n.mu.Unlock()
		runAll(reveal)
		for i, ct := range cts {
			u.insertEntry(l, first+uint64(i), ct, n.cfg.MaxFilingRetries)
		}
		for i, a := range batch {
			a.cb(first+uint64(i), nil)
		}
		if needSnap {
			u.snapshot(l)
		}
		u.flushLog(l)
	})
}

// insertEntry stores an entry on its own, retrying; once it is acknowledged the next head
// need not carry it inline.
func (u *User) insertEntry(l *logState, idx uint64, ct []byte, tries int) {
	n := u.n
	obj := past.NewContent(n.cfg.Ring, ct, n.now().Add(n.cfg.ContentLease))
	n.st.Insert(obj, func(r past.InsertResult) {
		if r.Err != nil && tries > 1 {
			n.after(n.cfg.RetryDelay, func() { u.insertEntry(l, idx, ct, tries-1) })
			return
		}
		if r.Err != nil {
			return // stays inline in every head from now on
		}
		u.keep(obj)
		n.mu.Lock()
		if l.acked == nil {
			l.acked = map[uint64]bool{}
		}
		l.acked[idx] = true
		for len(l.tail) > 0 && l.acked[l.tailFrom] {
			delete(l.acked, l.tailFrom)
			l.tail = l.tail[1:]
			l.tailFrom++
		}
		n.mu.Unlock()
		u.flushLog(l)
	})
}

func bodiesOf(b []pendingAppend) [][]byte {
	out := make([][]byte, len(b))
	for i, a := range b {
		out[i] = a.body
	}
	return out
}

// snapshot stores all bodies so far as one content payload; the next head names it, and
// replay then starts there instead of walking the whole chain.
func (u *User) snapshot(l *logState) {
	n := u.n
	n.mu.Lock()
	idx := l.head.Count
	data := encodeSnapshot(l.bodies[:idx])
	n.mu.Unlock()
	u.Put(data, func(ref content.Ref, err error) {
		n.mu.Lock()
		l.snapping = false
		if err != nil {
			n.mu.Unlock()
			n.cfg.Log.Warn("post: log snapshot failed", "log", l.name, "err", err)
			return
		}
		raw, _ := ref.MarshalBinary()
		l.snap = &pendingSnapshot{index: idx, ref: raw}
		n.stats.Snapshots++
		n.mu.Unlock()
		u.flushLog(l)
	})
}

// Entries returns the bodies of entries since index since (local cache of an open log): the
// committed entries, then those this node holds durably (journaled INBOX entries) that wait
// for their head write, each at the index it will have in the log (appends are committed in
// order).
func (u *User) Entries(name string, since uint64) ([][]byte, error) {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	l, ok := u.logs[name]
	if !ok || !l.loaded {
		return nil, fmt.Errorf("%w: %s", ErrLogNotReady, name)
	}
	var out [][]byte
	idx := uint64(0)
	add := func(b []byte) {
		if idx >= since {
			out = append(out, b)
		}
		idx++
	}
	for _, b := range l.bodies {
		add(b)
	}
	for _, a := range append(slices.Clip(l.inflight), l.queue...) {
		if !a.local {
			break // a later local entry's index depends on this one: not yet
		}
		add(a.body)
	}
	return out, nil
}

// Head describes the committed head of an open log.
func (u *User) Head(name string) (LogHead, error) {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	l, ok := u.logs[name]
	if !ok || !l.loaded {
		return LogHead{}, fmt.Errorf("%w: %s", ErrLogNotReady, name)
	}
	return LogHead{Key: l.key, Seq: l.seq, Count: l.head.Count, SnapshotIndex: l.head.SnapshotIndex}, nil
}

// Logs lists the names of the user's open logs.
func (u *User) Logs() []string {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	var out []string
	for name, l := range u.logs {
		if l.loaded {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
