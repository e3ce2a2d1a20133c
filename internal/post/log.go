package post

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

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
	headSeq uint64 // sequence number of the committed head (payload)
	head    headState
	payload []byte // committed head payload, for backups
	bodies  [][]byte
	locs    []ids.ID

	queue    []pendingAppend
	inflight []pendingAppend // the batch whose head write is under way
	writing  bool
	tail     [][]byte // entries from tailFrom on, not all stored on their own yet
	tailFrom uint64
	acked    map[ids.ID]bool  // tail entries stored (in a segment), by location
	esegs    []entrySeg       // entry segments stored, oldest first: the next head names those above its snapshot
	loads    uint64           // times the log was rebuilt from a head (applyLoadedLocked)
	snap     *pendingSnapshot // written with the next head
	segs     []snapSeg        // the committed head's snapshot segments, oldest first
	snapping bool
	waiters  []func(error)  // OpenLog callers while opening
	confirms []mergedAppend // appends another writer merged for us, until our next head (mergedAttemptsLocked)

	republish bool            // the ring holds less than the committed head: write it again
	absorbing bool            // reloading the log after the ring showed a newer head
	damaged   bool            // opened with entries missing: no snapshot bakes the gap in
	batching  bool            // a FilingBatch timer is armed
	started   map[ids.ID]bool // tail entries whose own insert is under way, by location
	entryWait bool            // an EntryDelay timer is armed (storeEntries)
	due       bool            // it fired: write the head now
	forks     int             // forks merged since the log was opened

	saving      bool       // the record of the head being written is being saved (AsyncHeadRecords)
	flight      *headState // the head being written (writing), for records ahead of the next one
	ahead       bool       // a record ahead of the next write is being saved (recordAheadLocked)
	aheadFailed bool       // one failed: none more before the next write
	lastID      uint64     // ids given to recorded appends
}

type pendingAppend struct {
	body  []byte
	cb    func(uint64, error)
	local bool // durable on this node already (journaled): Entries shows it before its head
	// mayExist: the ring may hold this entry already, so a newer head of another writer may
	// name it (see mergedAttemptsLocked): a head naming it was sent and refused (a replica
	// may keep that head, and the other writer merge its entries), or it is a fork's entry,
	// which the other writer may have written on itself.
	mayExist bool
	// shown, if set, runs once Entries shows this local entry (see revealLocked).
	shown func()
	// recorded: cb runs as soon as a head version carrying this entry is recorded on this
	// node's disk (HeadRecords), before the ring acknowledges it (AppendRecorded); the head
	// write then goes on, retried like any other, and cb is not called again.
	recorded bool
	acked    bool   // cb ran (recorded): the entry may never be dropped, only written
	durable  bool   // recorded: a head record carrying it is on this node's disk
	index    uint64 // durable: its index in that record
	id       uint64 // the log's number for a recorded entry (ackRecorded finds it by it)
	// ct is the entry sealed at index ctAt after ctPrev by a record ahead: a head that puts
	// it at the same place carries the same bytes, so the record is its ancestor.
	ct     []byte
	ctAt   uint64
	ctPrev ids.ID
}

type pendingSnapshot struct {
	index uint64
	ref   []byte
	segs  []snapSeg // the chain once this head is written
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
	if _, ok := u.records[name]; ok {
		// This node wrote a head of it already: it exists, whatever the ring says now.
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
	u.n.lookupLatest(l.key, false, func(r past.LookupResult) {
		err := r.Err
		// Absent for certain: every replica said so. For a log other than the well-known
		// root and INBOX (whose names every start of the user tries), a majority saying so
		// is enough: a head written to this replica set was acknowledged by a majority, and
		// two majorities share a node; a replica holding one refuses our first head anyway.
		// A replica that lately lost a node near the key says "unsettled" (past.ErrUnsettled);
		// that still counts as absent here, or a new user's first logs would wait an hour
		// after any crash nearby. A user whose disk was lost looks in its archive first
		// (archive.go), and a live copy refuses our first head.
		absent := errors.Is(err, past.ErrNotFound) &&
			(!errors.Is(err, past.ErrTimeout) || (name != RootLog && name != InboxLog && r.Answered >= past.Quorum(r.Replicas)))
		switch {
		case err == nil:
			fail(fmt.Errorf("%w: %s", ErrLogExists, name))
			return
		case !absent:
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
		if err := u.saveHead(name, 1, payload); err != nil {
			fail(err)
			return
		}
		obj := past.NewSigned(u.keys.SigningKey(), u.n.cfg.Ring, []byte(logNamePrefix+name), 1, payload, u.n.now().Add(u.n.cfg.ContentLease))
		u.n.st.Insert(obj, func(r past.InsertResult) {
			if r.Err != nil || r.Newer != nil {
				// A replica that refused as stale holds a head: the log exists. (Our record
				// says so too from now on, so the next start opens it.)
				if r.Err == nil {
					r.Err = fmt.Errorf("%w: a replica holds head seq %d", ErrLogExists, r.Newer.Seq)
				}
				fail(fmt.Errorf("post: create log %s: %w", name, r.Err))
				return
			}
			u.keep(obj)
			u.n.mu.Lock()
			l.seq, l.headSeq, l.payload, l.loaded, l.opening = 1, 1, payload, true, false
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

// OpenLog loads an existing log: the newest of the head versions the ring's replica set holds
// and the node's own record (logopen.go), then the snapshot and the entries after it
// (walking the hash chain back from the newest). It never creates anything, and never opens
// from a head older than one this node wrote.
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
		var failed []pendingAppend
		if err == nil {
			l.loaded = true
		} else {
			// Nothing is left behind: the next OpenLog starts afresh, and appends queued
			// meanwhile fail now rather than wait for a head that never comes.
			l.loaded = false
			if u.logs[name] == l {
				delete(u.logs, name)
			}
			failed, l.queue = l.queue, nil
		}
		ws := l.waiters
		l.waiters = nil
		u.n.mu.Unlock()
		for _, w := range ws {
			w(err)
		}
		for _, a := range failed {
			a.cb(0, fmt.Errorf("%w: %s: %v", ErrLogNotReady, name, err))
		}
		if err == nil {
			u.flushLog(l)
		}
	}
	u.openAttempt(l, finish)
}

// openAttempt reads the head from the ring (and, without a record of our own, compares it
// with Glacier's copy) and builds the log from the ring's versions and our record.
func (u *User) openAttempt(l *logState, finish func(error)) {
	name := l.name
	u.n.mu.Lock()
	rec, hasRec := u.records[name]
	allowGaps := u.gapTries[name] >= maxGapTries
	u.n.mu.Unlock()
	u.n.lookupLatest(l.key, !hasRec, func(r past.LookupResult) {
		var cands []headCand
		ringSeq := uint64(0)
		if r.Err == nil {
			for _, v := range r.Versions {
				cands = append(cands, headCand{seq: v.Seq, payload: v.Object.Payload, from: "ring"})
				ringSeq = max(ringSeq, v.Seq)
			}
			if len(cands) == 0 {
				cands = append(cands, headCand{seq: r.Object.Seq, payload: r.Object.Payload, from: "ring"})
				ringSeq = r.Object.Seq
			}
			if r.Fork {
				u.n.cfg.Log.Error("post: FORK: the head's replicas hold two versions at one sequence number", "user", u.addr, "log", name, "versions", len(r.Versions))
			}
		}
		if hasRec {
			cands = append(cands, headCand{seq: rec.Seq, payload: rec.Payload, from: "record"})
		}
		if len(cands) == 0 {
			if !provenAbsent(r.Err) {
				finish(fmt.Errorf("%w: open log %s: %v", ErrInconclusive, name, r.Err))
			} else {
				finish(fmt.Errorf("%w: %s", ErrNoLog, name))
			}
			return
		}
		if hasRec && ringSeq < rec.Seq {
			u.n.cfg.Log.Warn("post: the ring's replicas hold an older head than this node wrote; opening from the node's record and writing it back",
				"user", u.addr, "log", name, "ring_seq", ringSeq, "record_seq", rec.Seq, "ring", r.Err)
		}
		u.loadLog(l, cands, allowGaps, func(ll *loadedLog, err error) {
			if err != nil {
				u.n.mu.Lock()
				if provenAbsent(err) {
					u.gapTries[name]++
				}
				u.n.mu.Unlock()
				finish(fmt.Errorf("post: replay log %s: %w", name, err))
				return
			}
			if name == InboxLog && r.Err == nil {
				ll.rewound = u.diskWentBack(l, ll, rec, hasRec, ringSeq)
			}
			u.n.mu.Lock()
			l.loaded = true // applyLoaded's queue work needs it; finish confirms
			u.applyLoadedLocked(l, ll, ringSeq)
			u.n.mu.Unlock()
			if ll.missing > 0 {
				u.n.cfg.Log.Error("post: DAMAGED LOG: entries missing from PAST and Glacier; opened without them",
					"user", u.addr, "log", name, "missing_entries", ll.missing, "count", ll.st.Count)
			}
			u.onLogLoaded(l)
			u.storeEntries(l, true) // the inline tail the last writer left
			finish(nil)
		})
	})
}

// diskWentBack says whether INBOX as the ring holds it (ll, from the ring's newest head at
// ringSeq) shows that this node's disk went back in time or was replaced, so that filings it
// showed from its received journal may be lost and filed again under other UIDs
// (Config.RewoundInbox): it has no record of INBOX, or the ring's log holds filings beyond
// the record's head that the journal lacks. A filing leaves the journal only once a head
// holding it is recorded, so on a disk that did not go back the record or the journal has
// every filing the ring has. The ring may be one head ahead of an intact disk's record (a
// head is recorded while it is sent, and a crash can come between); the record then catches
// up to the ring's head, so that the journal entries the replay forgets next are covered by it.
func (u *User) diskWentBack(l *logState, ll *loadedLog, rec HeadRecord, hasRec bool, ringSeq uint64) bool {
	if u.n.cfg.RewoundInbox == nil || u.heads == nil || u.journal == nil {
		return false // without a journal nothing is shown before its head is recorded
	}
	if hasRec && ringSeq <= rec.Seq {
		return false
	}
	went := func(why string) bool {
		u.n.cfg.Log.Warn("post: this node's disk went back in time or was replaced: INBOX gets a new UIDVALIDITY",
			"user", u.addr, "why", why, "ring_seq", ringSeq, "record_seq", rec.Seq)
		return true
	}
	if !hasRec {
		return went("no record of INBOX")
	}
	_, _, st, err := decodeHead(u.keys, l.key, rec.Payload)
	if err != nil {
		return went("the record does not decode: " + err.Error())
	}
	es, err := u.journal.Entries()
	if err != nil {
		return went("the received journal cannot be read: " + err.Error())
	}
	journaled := map[NotificationID]bool{}
	for _, e := range es {
		journaled[e.ID] = true
	}
	for _, b := range ll.bodies[min(st.Count, uint64(len(ll.bodies))):] {
		if f, err := DecodeFiled(b); err == nil && !journaled[f.ID] {
			return went("the ring's INBOX holds filings beyond the record that the journal lacks")
		}
	}
	// The record catches up only if it is an ancestor of the ring's head: a record of a
	// fork (whose entries the merge appends again) stays until a head holding them is.
	ancestor := st.Count == 0 || (st.Count <= uint64(len(ll.locs)) && ll.locs[st.Count-1] == st.Newest)
	if ancestor && ll.from == "ring" && ll.seq == ringSeq {
		if err := u.saveHead(InboxLog, ll.seq, ll.payload); err != nil {
			u.n.cfg.Log.Warn("post: cannot record the ring's INBOX head", "user", u.addr, "err", err)
		}
	}
	return false
}

// maxGapTries is how many opens must meet an entry missing from PAST and Glacier (every
// replica answered "not found") before a log is opened without the entries behind it.
const maxGapTries = 3

// applyLoadedLocked installs a rebuilt log: its state and entries, its inline tail (still to
// be stored on their own), the entries of forks to append again (in front of the queue), and
// a sequence number above everything seen. ringSeq is the newest version the ring showed.
func (u *User) applyLoadedLocked(l *logState, ll *loadedLog, ringSeq uint64) {
	merged := l.mergedAttemptsLocked(ll.bodies)
	l.logKey, l.wrapped, l.head, l.payload = ll.logKey, ll.wrapped, ll.st, ll.payload
	l.headSeq = ll.seq
	l.seq = max(l.seq, ll.maxSeq)
	l.bodies, l.locs = ll.bodies, ll.locs
	l.segs = ll.segs
	l.esegs = slices.Clone(ll.st.Segs)
	// A snapshot taken from the entries before this rebuild may not match them (a fork's
	// entries replaced ours): it is not written.
	l.loads++
	l.snap = nil
	l.tail, l.tailFrom, l.acked = nil, ll.st.Count, nil
	if len(ll.st.Inline) > 0 {
		l.tail = slices.Clone(ll.st.Inline)
		l.tailFrom = ll.st.InlineFrom
	}
	if ll.missing > 0 {
		l.damaged = true
	}
	l.forks += ll.forks
	var extra []pendingAppend
	if ll.rewound {
		extra = append(extra, pendingAppend{body: slices.Clone(u.n.cfg.RewoundInbox), cb: func(uint64, error) {}})
	}
	for _, b := range ll.extra {
		extra = append(extra, pendingAppend{body: b, cb: func(uint64, error) {}, mayExist: true})
	}
	// An append of ours that the other side merged and that comes back as a fork's entry is
	// that entry: it is appended once, and its caller hears of it then.
	claimed := make([]bool, len(extra))
	kept := l.queue[:0]
	for _, q := range l.queue {
		if q.mayExist {
			if i := slices.IndexFunc(extra, func(e pendingAppend) bool { return bytes.Equal(e.body, q.body) }); i >= 0 && !claimed[i] {
				extra[i].cb, extra[i].acked, claimed[i] = q.cb, q.acked, true
				extra[i].local, extra[i].recorded, extra[i].id = q.local, q.recorded, q.id
				continue
			}
		}
		kept = append(kept, q)
	}
	// Our entries acknowledged at a record go before the forks' (our order is kept): the
	// next head carries them first, as the record that acknowledged them did, so the next
	// record holds them too. Records saved before this rebuild were of another base: entries
	// not yet acknowledged wait for a new one.
	last := -1
	for i, q := range kept {
		if q.acked {
			last = i
		}
	}
	queue := append(append(slices.Clone(kept[:last+1]), extra...), kept[last+1:]...)
	for i := range queue {
		queue[i].durable = false
	}
	l.queue = queue
	if ringSeq < ll.seq || ll.forks > 0 || len(ll.extra) > 0 || merged {
		l.republish = true
		u.n.stats.Republished++
	}
	if l.name == InboxLog {
		for _, b := range l.bodies {
			if f, err := DecodeFiled(b); err == nil {
				u.recv[f.ID] = true
				u.logged[f.ID] = true
			}
		}
		for _, b := range ll.extra {
			if f, err := DecodeFiled(b); err == nil {
				u.recv[f.ID] = true // filed again from a fork: not a second time
			}
		}
	}
}

// mergedAttemptsLocked takes out of the queue the appends that may exist (mayExist) and
// that the log rebuilt as base already holds beyond what this writer had committed: another
// writer read our refused head from the replica that kept it and merged its entries as a
// fork's, or wrote on a fork's entries we were about to append again ourselves. Appending
// them again would file each twice. Each such entry waits in confirms for our next head
// write above the base, which makes the base durable, and completes there (confirmLocked).
// Bodies are matched one for one, so an entry queued more times than the base holds it
// stays queued for the difference. It reports whether it took any.
func (l *logState) mergedAttemptsLocked(base [][]byte) bool {
	if !slices.ContainsFunc(l.queue, func(q pendingAppend) bool { return q.mayExist }) {
		return false
	}
	from := 0 // the base's entries beyond the prefix it shares with our committed log
	for from < len(base) && from < len(l.bodies) && bytes.Equal(base[from], l.bodies[from]) {
		from++
	}
	at := map[string][]uint64{}
	for i := from; i < len(base); i++ {
		at[string(base[i])] = append(at[string(base[i])], uint64(i))
	}
	took := false
	kept := l.queue[:0]
	for _, q := range l.queue {
		if idx := at[string(q.body)]; q.mayExist && len(idx) > 0 {
			at[string(q.body)] = idx[1:]
			l.confirms = append(l.confirms, mergedAppend{index: idx[0], body: q.body, cb: q.cb, local: q.local, recorded: q.recorded, acked: q.acked})
			took = true
			continue
		}
		kept = append(kept, q)
	}
	l.queue = kept
	return took
}

// mergedAppend is an append another writer merged into the log for us (mergedAttemptsLocked).
type mergedAppend struct {
	index uint64 // where the base put it
	body  []byte
	cb    func(uint64, error)
	// How it was queued (pendingAppend); acked: cb ran already.
	local, recorded, acked bool
}

// confirmLocked completes the merged appends once a head of ours naming them is committed:
// each at its index, or, if a later merge moved it, where the log holds it now. One the log
// no longer holds goes back in front of the queue, to be appended after all.
func (l *logState) confirmLocked() []func() {
	if len(l.confirms) == 0 {
		return nil
	}
	var done []func()
	var again []pendingAppend
	for _, m := range l.confirms {
		i, ok := m.index, m.index < uint64(len(l.bodies)) && bytes.Equal(l.bodies[m.index], m.body)
		for j := len(l.bodies) - 1; !ok && j >= 0; j-- {
			i, ok = uint64(j), bytes.Equal(l.bodies[j], m.body)
		}
		if !ok {
			again = append(again, pendingAppend{body: m.body, cb: m.cb, local: m.local, recorded: m.recorded, acked: m.acked})
			continue
		}
		if m.acked {
			continue
		}
		cb := m.cb
		done = append(done, func() { cb(i, nil) })
	}
	l.confirms = nil
	if len(again) > 0 {
		l.queue = append(again, l.queue...)
	}
	return done
}

// storeEntries stores the tail entries not yet being stored, as entry segments: at once when
// there are EntryBatch of them (or their bytes reach segAtBytes), or when force, and
// otherwise after EntryDelay. Until then every head carries them inline, so nothing waits for
// them; a segment of many entries costs the ring one insert.
func (u *User) storeEntries(l *logState, force bool) {
	n := u.n
	n.mu.Lock()
	// Runs of consecutive tail entries not yet being stored (ciphertexts): a segment holds
	// one run, never entries on both sides of one whose own insert is under way.
	var runs [][][]byte
	count, bytes := 0, 0
	cut := true
	for _, ct := range l.tail {
		if l.started[ids.Hash(ct)] {
			cut = true
			continue
		}
		if cut {
			runs = append(runs, nil)
			cut = false
		}
		runs[len(runs)-1] = append(runs[len(runs)-1], ct)
		count++
		bytes += len(ct)
	}
	now := force || n.cfg.EntryBatch <= 1 || count >= n.cfg.EntryBatch || bytes >= segAtBytes
	if count == 0 || !now {
		if count > 0 && !l.entryWait {
			l.entryWait = true
			n.after(n.cfg.EntryDelay, func() {
				n.mu.Lock()
				l.entryWait = false
				n.mu.Unlock()
				u.storeEntries(l, true)
			})
		}
		n.mu.Unlock()
		return
	}
	if l.started == nil {
		l.started = map[ids.ID]bool{}
	}
	for _, run := range runs {
		for _, ct := range run {
			l.started[ids.Hash(ct)] = true
		}
	}
	// No snapshot is taken (damaged), or snapshots fail: the head must not name ever more
	// segments. Such entries are stored one by one, as before segments.
	alone := l.damaged || len(l.esegs) >= 4*snapAtSegs
	n.mu.Unlock()
	for _, es := range runs {
		if alone {
			for _, ct := range es {
				u.insertEntry(l, ct, n.cfg.MaxFilingRetries)
			}
			continue
		}
		for len(es) > 0 {
			k, size := 0, 0
			for k < len(es) && k < maxSegEntries && (k == 0 || size+len(es[k]) <= maxSegBytes) {
				size += len(es[k])
				k++
			}
			u.insertSegment(l, es[:k], n.cfg.MaxFilingRetries)
			es = es[k:]
		}
	}
}

// segAtBytes: a log's tail entries are stored as a segment once they hold this many bytes,
// whatever their number. Every head write carries the tail to three replicas and the writer's
// record, so its bytes are written four times per head. An APPEND's entry (its envelope and
// structure) is about 1 KB; with 20 IMAP clients writing a folder each, storing at 32
// entries or 128 KB made heads of 7 KB at the median and 36 KB at p99; at 8 KB they were 5.5
// and 11 KB, and the demo ring wrote a quarter to a third fewer bytes (BENCHMARKS.md). A smaller
// bound (4 KB: heads of 4 and 8 KB) makes segments of a few entries, and snapshots come
// every snapAtSegs segments: at 8 KB, folders of 1 KB entries still take one every
// SnapshotEvery entries; an INBOX of larger entries (parts travel inline in them, up to
// maxInlineTotal) takes them sooner.
const segAtBytes = 8 << 10

// absorbWait is how long a merge waits for our own head write under way to end.
const absorbWait = 20 * time.Millisecond

// absorb continues from a head newer than ours that a replica showed us (a refused write):
// the log is rebuilt from that head and the one we committed, forks merged, and the writes
// queued meanwhile go on above it. It never re-signs our state over the newer head.
func (u *User) absorb(l *logState, newer past.Object) {
	n := u.n
	n.mu.Lock()
	if l.absorbing || !l.loaded {
		n.mu.Unlock()
		return
	}
	l.absorbing = true
	n.stats.Absorbed++
	n.mu.Unlock()
	u.absorbRun(l, newer)
}

// absorbRun is absorb's work, with l.absorbing set: no head write of ours starts meanwhile.
func (u *User) absorbRun(l *logState, newer past.Object) {
	n := u.n
	n.mu.Lock()
	l.seq = max(l.seq, newer.Seq)
	fromSeq := l.headSeq
	cands := []headCand{{seq: newer.Seq, payload: newer.Payload, from: "ring"}, {seq: l.headSeq, payload: l.payload, from: "local"}}
	allowGaps := u.gapTries[l.name] >= maxGapTries
	n.mu.Unlock()
	n.cfg.Log.Warn("post: the ring holds a newer head than this node's; continuing from it", "user", u.addr, "log", l.name, "ring_seq", newer.Seq, "our_seq", fromSeq)
	u.loadLog(l, cands, allowGaps, func(ll *loadedLog, err error) {
		if err != nil {
			n.mu.Lock()
			l.absorbing = false
			if provenAbsent(err) {
				u.gapTries[l.name]++
			}
			n.mu.Unlock()
			n.cfg.Log.Warn("post: cannot read the newer head's log yet; retrying", "user", u.addr, "log", l.name, "err", err)
			n.after(n.cfg.RetryDelay, func() { u.absorb(l, newer) })
			return
		}
		if ll.missing > 0 {
			n.cfg.Log.Error("post: DAMAGED LOG: the newer head names entries missing from PAST and Glacier; continuing without them",
				"user", u.addr, "log", l.name, "missing_entries", ll.missing, "count", ll.st.Count)
		}
		n.mu.Lock()
		if l.headSeq != fromSeq || l.writing || l.ahead || l.saving {
			// A head of ours committed (or was being written when the merge began): built
			// without it, the merge would drop its entries. Merge again, from it, once no
			// write of ours is under way (absorbing keeps new ones from starting), nor a
			// record of one (recordahead.go: it would acknowledge entries on the old base).
			wait := time.Duration(0)
			if l.writing || l.ahead || l.saving {
				wait = absorbWait
			}
			n.mu.Unlock()
			n.after(wait, func() { u.absorbRun(l, newer) })
			return
		}
		u.gapTries[l.name] = 0
		u.applyLoadedLocked(l, ll, newer.Seq)
		l.absorbing = false
		n.mu.Unlock()
		u.storeEntries(l, true)
		u.flushLog(l)
	})
}

// readNewer reads the head after a write of seq (attempted) was refused as stale, and
// continues from the newer version if the ring has one (absorb); otherwise the write is
// retried. Our own attempt, where it landed, is not newer: the retry rewrites it.
func (u *User) readNewer(l *logState, seq uint64, attempted []byte) {
	n := u.n
	n.st.LookupLatest(l.key, func(r past.LookupResult) {
		n.mu.Lock()
		ours := l.payload
		n.mu.Unlock()
		for _, v := range r.Versions {
			if v.Seq >= seq && v.Hash != sum(ours) && v.Hash != sum(attempted) {
				u.absorb(l, v.Object)
				return
			}
		}
		n.cfg.Log.Warn("post: log head write refused as stale, but no newer head found; retrying", "user", u.addr, "log", l.name, "seq", seq, "lookup", r.Err)
		n.after(n.cfg.RetryDelay, func() { u.flushLog(l) })
	})
}

// saveHead records a head version on the node's disk before it is sent (HeadRecords without
// SaveAsync; see recordAndInsert).
func (u *User) saveHead(name string, seq uint64, payload []byte) error {
	if u.heads == nil {
		return nil
	}
	if err := u.heads.Save(name, seq, payload); err != nil {
		return fmt.Errorf("post: recording head %d of log %s: %w", seq, name, err)
	}
	u.noteRecord(name, seq, payload)
	return nil
}

// noteRecord remembers that version seq of log name is recorded on this node's disk.
func (u *User) noteRecord(name string, seq uint64, payload []byte) {
	u.n.mu.Lock()
	if r, ok := u.records[name]; ok && r.Seq > seq {
		u.n.mu.Unlock()
		return // a record ahead (recordahead.go) finished first
	}
	u.records[name] = HeadRecord{Seq: seq, Payload: payload}
	u.n.stats.HeadRecords++
	u.n.mu.Unlock()
}

// Append adds an entry to a log this node has open (CreateLog or OpenLog); an entry is never
// appended to a log whose head was not found. Appends are batched: entries queued while a
// head write is in flight go out together with the next one. cb gets the entry's index once
// the head naming it is acknowledged by a quorum.
func (u *User) Append(name string, body []byte, cb func(uint64, error)) {
	u.appendEntry(name, pendingAppend{body: body, cb: cb})
}

// appendLocal is Append for an entry this node holds durably already (the journal): Entries
// shows it, at the index it will have in the log, as soon as every entry queued before it is
// shown too (at once, unless an ordinary append waits for its head write ahead of it).
// shown, if not nil, runs (without locks held) once Entries shows the entry, before the head
// write starts; if the entry fails before it is shown, shown never runs.
func (u *User) appendLocal(name string, body []byte, shown func(), cb func(uint64, error)) {
	u.appendEntry(name, pendingAppend{body: body, cb: cb, local: true, shown: shown})
}

// AppendRecorded is Append whose cb runs once the head version carrying the entry is
// recorded on this node's disk (fsync; see HeadRecords), usually before the ring has it:
// the writer's record already survives a crash of this node, and a log is reopened from the
// newer of the record and the ring, which then gets the recorded version written back. The
// head write goes on, and is retried, exactly as for Append. Entries shows the entry at once,
// at the index it will have, once every entry queued ahead of it is shown. What it does not
// survive is the loss of this node's disk before the ring acknowledged the head (the ring then
// never had the entry): it is for changes a mail client can lose with its server's unsynced
// index (flags), never for mail. A user without head records gets Append.
func (u *User) AppendRecorded(name string, body []byte, cb func(uint64, error)) {
	if u.heads == nil {
		u.Append(name, body, cb)
		return
	}
	u.appendEntry(name, pendingAppend{body: body, cb: cb, local: true, recorded: true})
}

// appendEntry queues a (body, cb and how it is acknowledged) on log name.
func (u *User) appendEntry(name string, a pendingAppend) {
	u.n.foreground()
	if a.cb == nil {
		a.cb = func(uint64, error) {}
	}
	if len(a.body) > maxEntryBody {
		a.cb(0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooBig, len(a.body), maxEntryBody))
		return
	}
	u.n.mu.Lock()
	l, ok := u.logs[name]
	if !ok {
		u.n.mu.Unlock()
		a.cb(0, fmt.Errorf("%w: %s", ErrLogNotReady, name))
		return
	}
	a.body = append([]byte(nil), a.body...)
	if a.recorded {
		l.lastID++
		a.id = l.lastID
	}
	l.queue = append(l.queue, a)
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
	if l.writing && l.loaded && !l.absorbing && !n.stop {
		// The log's one head write is under way: the entries queued behind it whose callers
		// wait for a record (AppendRecorded) get one now, ahead of their own head write.
		ahead := u.recordAheadLocked(l)
		n.mu.Unlock()
		if ahead != nil {
			ahead()
		}
		return
	}
	// One record of a log is saved at a time (a lower sequence number saved after a higher
	// one would return at once, before either is on disk): the one under way calls us again.
	if !l.loaded || l.writing || l.saving || l.ahead || l.absorbing || (len(l.queue) == 0 && l.snap == nil && !l.republish) || n.stop {
		n.mu.Unlock()
		return
	}
	tailBytes := 0
	for _, ct := range l.tail {
		tailBytes += len(ct)
	}
	if tailBytes >= maxInline/2 {
		n.mu.Unlock() // wait for entry inserts to catch up (insertEntry calls us again)
		u.storeEntries(l, true)
		return
	}
	if wait := n.cfg.FilingBatch; wait > 0 && !l.due && l.snap == nil && !l.republish && onlyLocal(l.queue) && len(l.queue) < maxBatch/2 {
		// Every queued entry is durable on this node already (journaled filings: Entries
		// shows them, and their pending copies stay with their holders until the receipt),
		// or is about to be, with a record of the next head saved now (AppendRecorded), so
		// nobody waits for this head: let the changes of the next moments share it.
		if !l.batching {
			l.batching = true
			n.after(wait, func() {
				n.mu.Lock()
				// A head written meanwhile may have taken the whole queue: then the next
				// change waits for its own batch again.
				l.batching, l.due = false, len(l.queue) > 0
				n.mu.Unlock()
				u.flushLog(l)
			})
		}
		ahead := u.recordAheadLocked(l)
		n.mu.Unlock()
		if ahead != nil {
			ahead()
		}
		return
	}
	l.due = false
	var batch []pendingAppend
	size := tailBytes
	for len(l.queue) > 0 && len(batch)+len(l.tail) < maxBatch && (len(batch) == 0 || size+len(l.queue[0].body) < maxInline/2) {
		batch = append(batch, l.queue[0])
		size += len(l.queue[0].body)
		l.queue = l.queue[1:]
	}
	st := l.head
	at := st.Count // the batch's first index, if this write commits
	prev := st.Newest
	var cts [][]byte
	var locs []ids.ID
	for i, a := range batch {
		ct, err := a.sealed(l, n.cfg.Rand, st.Count+uint64(i), prev)
		if err != nil {
			u.failBuild(l, batch, err)
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
	st.Segs = l.headSegsLocked(st.Count, st.SnapshotIndex, locs)
	payload, err := encodeHead(&l.logKey, n.cfg.Rand, l.key, l.wrapped, &st)
	if err != nil {
		u.failBuild(l, batch, err)
		return
	}
	l.seq++
	seq := l.seq
	l.writing = true
	l.republish = false
	l.inflight = batch
	l.flight, l.aheadFailed = &st, false
	_, l.saving = u.heads.(AsyncHeadRecords) // recordAndInsert saves alongside the insert
	n.stats.LogHeadWrites++
	n.mu.Unlock()

	// requeue puts the batch back in front: the next head carries it with a higher seq.
	requeue := func() {
		l.writing, l.flight = false, nil
		l.inflight = nil
		for i := range batch {
			batch[i].mayExist = true
		}
		l.queue = append(batch, l.queue...)
		if len(batch) == 0 {
			l.republish = true
		}
	}
	obj := past.NewSigned(u.keys.SigningKey(), n.cfg.Ring, []byte(logNamePrefix+l.name), seq, payload, n.now().Add(n.cfg.ContentLease))
	// written runs once the insert's outcome and the node's record of this version (recErr)
	// are both known.
	written := func(r past.InsertResult, recErr error) {
		n.mu.Lock()
		if !l.writing || len(l.inflight) != len(batch) || (len(batch) > 0 && &l.inflight[0] != &batch[0]) {
			n.mu.Unlock()
			return // a restart (Resume) requeued this batch; its new write decides
		}
		if recErr != nil {
			// Nothing of the batch is reported written without the record. The replicas
			// may hold this version all the same, as after any insert that failed: the
			// next head carries the batch again over the same base, at a higher seq.
			requeue()
			n.mu.Unlock()
			n.cfg.Log.Error("post: cannot record a log head on this node's disk; writing it again later", "user", u.addr, "log", l.name, "err", recErr)
			n.after(n.cfg.RetryDelay, func() { u.flushLog(l) })
			return
		}
		// A replica holds a version we did not write over: a higher sequence number, or
		// another version at ours. Never bump past it blindly: read it and continue from it.
		newer := r.Newer
		if newer != nil && newer.Seq < seq || newer != nil && newer.Seq == seq && sum(newer.Payload) == sum(payload) {
			newer = nil
		}
		if r.Err != nil {
			requeue()
			n.mu.Unlock()
			if newer != nil {
				u.absorb(l, *newer)
				return
			}
			if errors.Is(r.Err, past.ErrStale) {
				// Refused as stale without being shown the newer version: read it.
				u.readNewer(l, seq, payload)
				return
			}
			n.cfg.Log.Warn("post: log head write failed; retrying", "log", l.name, "err", r.Err)
			n.after(n.cfg.RetryDelay, func() { u.flushLog(l) })
			return
		}
		l.writing, l.flight = false, nil
		l.inflight = nil
		defer u.keep(obj) // after the unlock below
		first := l.head.Count
		l.head = st
		l.headSeq = seq
		l.payload = payload
		l.bodies = append(l.bodies, bodiesOf(batch)...)
		l.locs = append(l.locs, locs...)
		l.tail = append(l.tail, cts...)
		if snap != nil {
			l.segs = snap.segs
			if l.snap == snap {
				l.snap = nil
			}
		}
		n.stats.LogAppends += uint64(len(batch))
		// A snapshot every SnapshotEvery entries, and sooner when the head names many small
		// entry segments (a log written slowly): the snapshot takes their entries in.
		needSnap := !l.snapping && !l.damaged && l.snap == nil &&
			(st.Count/uint64(n.cfg.SnapshotEvery) > st.SnapshotIndex/uint64(n.cfg.SnapshotEvery) || len(st.Segs) >= snapAtSegs)
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
		reveal = append(reveal, l.ackReadyLocked(&n.stats)...) // queued behind this batch, recorded ahead
		confirmed := l.confirmLocked()
		n.mu.Unlock()
		runAll(reveal)
		runAll(confirmed)
		u.storeEntries(l, false)
		for i, a := range batch {
			if !a.acked {
				a.cb(first+uint64(i), nil)
			}
		}
		if needSnap {
			u.snapshot(l)
		}
		if newer != nil {
			// Our head is committed; merge the other one over it before anything else is
			// written (absorb holds the writes back), so that no head of ours commits
			// while the merge is built from this one.
			u.absorb(l, *newer)
		}
		u.flushLog(l)
	}
	ack := u.recordedHook(l, batch, at)
	recorded := func(err error) {
		n.mu.Lock()
		l.saving = false
		n.mu.Unlock()
		if err == nil && ack != nil {
			ack()
		}
		u.flushLog(l) // entries queued meanwhile may want a record ahead
	}
	u.recordAndInsert(l.name, seq, payload, obj, recorded, written)
}

// failBuild ends a head write that could not be built (called with n.mu held; it unlocks):
// the batch's callers hear err, except those told already that their entry is recorded
// (AppendRecorded), which go back in front of the queue, to be written later.
func (u *User) failBuild(l *logState, batch []pendingAppend, err error) {
	n := u.n
	var keep, fail []pendingAppend
	for _, a := range batch {
		if a.acked {
			keep = append(keep, a)
		} else {
			fail = append(fail, a)
		}
	}
	l.queue = append(keep, l.queue...)
	n.mu.Unlock()
	for _, a := range fail {
		a.cb(0, err)
	}
	if len(keep) > 0 {
		n.cfg.Log.Error("post: cannot build a log head for entries already recorded; trying again later", "user", u.addr, "log", l.name, "entries", len(keep), "err", err)
		n.after(n.cfg.RetryDelay, func() { u.flushLog(l) })
	}
}

// recordAndInsert records version seq of a log's head on this node's disk and inserts obj
// (that version) into the ring; written gets the insert's outcome and the record's. With an
// AsyncHeadRecords the record's fsync runs alongside the insert, so a write costs one disk
// wait less; without, the record is written first. Either way the caller acknowledges
// nothing before both are durable, and the record of every acknowledged version survives
// the ring losing it.
func (u *User) recordAndInsert(name string, seq uint64, payload []byte, obj past.Object, recorded func(error), written func(past.InsertResult, error)) {
	n := u.n
	ah, async := u.heads.(AsyncHeadRecords)
	if !async {
		if err := u.saveHead(name, seq, payload); err != nil {
			written(past.InsertResult{}, err)
			return
		}
		if u.heads != nil {
			recorded(nil)
		}
		n.st.Insert(obj, func(r past.InsertResult) { written(r, nil) })
		return
	}
	var mu sync.Mutex
	var ins *past.InsertResult
	var recErr error
	recDone := false
	ah.SaveAsync(name, seq, payload, func(err error) {
		if err != nil {
			err = fmt.Errorf("post: recording head %d of log %s: %w", seq, name, err)
		} else {
			u.noteRecord(name, seq, payload)
		}
		recorded(err) // before written can run: it must see the callbacks taken
		mu.Lock()
		recDone, recErr = true, err
		r := ins
		mu.Unlock()
		if r != nil {
			written(*r, err)
		}
	})
	n.st.Insert(obj, func(r past.InsertResult) {
		mu.Lock()
		ins = &r
		done, err := recDone, recErr
		mu.Unlock()
		if done {
			written(r, err)
		}
	})
}

// insertSegment stores consecutive tail entries as one entry segment, retrying; once it is
// acknowledged the next head names the segment instead of carrying them inline.
func (u *User) insertSegment(l *logState, cts [][]byte, tries int) {
	n := u.n
	obj := past.NewContent(n.cfg.Ring, encodeEntrySeg(cts), n.now().Add(n.cfg.ContentLease))
	n.st.Insert(obj, func(r past.InsertResult) {
		if r.Err != nil && tries > 1 {
			n.after(n.cfg.RetryDelay, func() { u.insertSegment(l, cts, tries-1) })
			return
		}
		n.mu.Lock()
		for _, ct := range cts {
			delete(l.started, ids.Hash(ct)) // on failure they stay inline; a later batch tries again
		}
		// A segment is found through its newest entry only, so it counts only while its
		// entries are consecutive entries of the log's tail: a merge (absorb) may have
		// replaced some since the insert began. Otherwise what is left of them in the tail
		// stays inline and is stored again.
		if r.Err != nil || !l.inChainLocked(cts) {
			n.mu.Unlock()
			return
		}
		l.esegs = append(l.esegs, entrySeg{Loc: obj.Key.ID, Last: ids.Hash(cts[len(cts)-1]), Count: uint64(len(cts)), first: ids.Hash(cts[0])})
		n.stats.EntrySegments++
		locs := make([]ids.ID, len(cts))
		for i, ct := range cts {
			locs[i] = ids.Hash(ct)
		}
		l.ackedLocked(locs...)
		n.mu.Unlock()
		u.keep(obj)
		u.flushLog(l)
	})
}

// insertEntry stores an entry on its own, retrying; once it is acknowledged the next head
// need not carry it inline.
func (u *User) insertEntry(l *logState, ct []byte, tries int) {
	n := u.n
	obj := past.NewContent(n.cfg.Ring, ct, n.now().Add(n.cfg.ContentLease))
	n.st.Insert(obj, func(r past.InsertResult) {
		if r.Err != nil && tries > 1 {
			n.after(n.cfg.RetryDelay, func() { u.insertEntry(l, ct, tries-1) })
			return
		}
		if r.Err != nil {
			n.mu.Lock()
			delete(l.started, obj.Key.ID) // stays inline; a later batch tries again
			n.mu.Unlock()
			return
		}
		u.keep(obj)
		n.mu.Lock()
		delete(l.started, obj.Key.ID)
		n.stats.EntriesAlone++
		l.ackedLocked(obj.Key.ID)
		n.mu.Unlock()
		u.flushLog(l)
	})
}

// ackedLocked notes tail entries stored (by location, not index: a merge may have moved the
// tail since their insert began) and drops the stored ones from the front of the tail.
func (l *logState) ackedLocked(locs ...ids.ID) {
	if l.acked == nil {
		l.acked = map[ids.ID]bool{}
	}
	for _, loc := range locs {
		l.acked[loc] = true
	}
	for len(l.tail) > 0 && l.acked[ids.Hash(l.tail[0])] {
		delete(l.acked, ids.Hash(l.tail[0]))
		l.tail = l.tail[1:]
		l.tailFrom++
	}
}

// inChainLocked reports whether cts are consecutive entries of the log's tail (the committed
// chain's entries not stored yet).
func (l *logState) inChainLocked(cts [][]byte) bool {
	first := ids.Hash(cts[0])
	for i := range l.tail {
		if ids.Hash(l.tail[i]) != first {
			continue
		}
		if i+len(cts) > len(l.tail) {
			return false
		}
		for k := 1; k < len(cts); k++ {
			if ids.Hash(l.tail[i+k]) != ids.Hash(cts[k]) {
				return false
			}
		}
		return true
	}
	return false
}

// headSegsLocked lists the entry segments a head with count entries and a snapshot at
// snapIndex names: the stored segments whose entries are all in the log (a merge may have
// replaced some) and not all below the snapshot. It forgets the others.
func (l *logState) headSegsLocked(count, snapIndex uint64, newLocs []ids.ID) []entrySeg {
	if len(l.esegs) == 0 {
		return nil
	}
	last := make(map[ids.ID]int, len(l.esegs))
	for i, sg := range l.esegs {
		last[sg.Last] = i
	}
	// Walk the log's locations back from the newest (the batch this head adds first) to the
	// snapshot, and note where each segment's newest entry is.
	at := make([]uint64, len(l.esegs))
	found := make([]bool, len(l.esegs))
	left := len(l.esegs)
	idx := count
	visit := func(loc ids.ID) bool {
		idx--
		if i, ok := last[loc]; ok && !found[i] {
			at[i], found[i] = idx, true
			left--
		}
		return left > 0 && idx > snapIndex
	}
	more := true
	for k := len(newLocs) - 1; k >= 0 && more; k-- {
		more = visit(newLocs[k])
	}
	if more && uint64(len(l.locs)) != idx {
		// The cache of locations does not end where this batch begins (never expected):
		// name every segment rather than drop one the chain may need.
		return slices.Clone(l.esegs)
	}
	for k := len(l.locs) - 1; k >= 0 && more; k-- {
		more = visit(l.locs[k])
	}
	// locAt is the location of entry j (l.locs, then this head's batch).
	locAt := func(j uint64) ids.ID {
		if j < uint64(len(l.locs)) {
			return l.locs[j]
		}
		return newLocs[j-uint64(len(l.locs))]
	}
	var out []entrySeg
	kept := l.esegs[:0]
	for i, sg := range l.esegs {
		if !found[i] || at[i]+1 < sg.Count || at[i] < snapIndex {
			continue
		}
		if f := locAt(at[i] + 1 - sg.Count); !sg.first.IsZero() && !f.IsZero() && f != sg.first {
			continue // not this chain's entries (never expected: insertSegment checks)
		}
		kept = append(kept, sg)
		out = append(out, sg)
	}
	l.esegs = kept
	return out
}

// onlyLocal says whether every entry of q is durable on this node already (journaled), or
// is to be with a record of its head (AppendRecorded).
func onlyLocal(q []pendingAppend) bool {
	for _, a := range q {
		if !a.local {
			return false
		}
	}
	return len(q) > 0
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
	loads := l.loads
	// A segment from the last snapshot on, merged with the segments before it while they
	// are not larger (logcodec.go).
	segs := slices.Clone(l.segs)
	from := l.head.SnapshotIndex
	for len(segs) > 0 && segs[len(segs)-1].to-segs[len(segs)-1].from <= idx-from {
		from = segs[len(segs)-1].from
		segs = segs[:len(segs)-1]
	}
	var prev []byte
	if len(segs) > 0 {
		prev = segs[len(segs)-1].ref
	}
	data := encodeSegment(from, prev, l.bodies[from:idx])
	n.mu.Unlock()
	u.Put(data, func(ref content.Ref, err error) {
		n.mu.Lock()
		l.snapping = false
		if err != nil {
			n.mu.Unlock()
			n.cfg.Log.Warn("post: log snapshot failed", "log", l.name, "err", err)
			return
		}
		if l.loads != loads {
			// The log was rebuilt meanwhile (a merge): these bodies may not be its first
			// entries any more. The next snapshot is taken from the log as it is now.
			n.mu.Unlock()
			return
		}
		raw, _ := ref.MarshalBinary()
		l.snap = &pendingSnapshot{index: idx, ref: raw, segs: append(segs, snapSeg{from: from, to: idx, ref: raw})}
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
	// Only what lies at since or beyond is looked at: the mail store asks on every command,
	// and a log holds the whole mailbox's history.
	var out [][]byte
	if since < uint64(len(l.bodies)) {
		out = append(out, l.bodies[since:]...)
	}
	idx := uint64(len(l.bodies))
	for _, q := range [2][]pendingAppend{l.inflight, l.queue} {
		for _, a := range q {
			if !a.local {
				return out, nil // a later local entry's index depends on this one: not yet
			}
			if idx >= since {
				out = append(out, a.body)
			}
			idx++
		}
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

// SnapshotSegments describes an open log's snapshot chain as [from, to) ranges, oldest
// first (tests and diagnostics).
func (u *User) SnapshotSegments(name string) [][2]uint64 {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	l, ok := u.logs[name]
	if !ok {
		return nil
	}
	var out [][2]uint64
	for _, s := range l.segs {
		out = append(out, [2]uint64{s.from, s.to})
	}
	return out
}

// EntrySegments reports the entry segments the log's next head names (or would): how many
// entries each holds, oldest first.
func (u *User) EntrySegments(name string) []uint64 {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	l, ok := u.logs[name]
	if !ok {
		return nil
	}
	var out []uint64
	for _, sg := range l.esegs {
		out = append(out, sg.Count)
	}
	return out
}
