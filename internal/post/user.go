package post

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
)

// User is a local user on this node: keys (opened with the password), certified record,
// logs, and the received set: the notification ids of the INBOX log (durable, since the log
// is) and of the journal (durable on this node's disk, on their way to the log). A User
// outlives a restart of the overlay node as the node's local cache would: Resume
// attaches it to the new Node.
type User struct {
	n         *Node
	addr      string
	keys      *identity.Keys
	record    identity.SignedRecord
	logs      map[string]*logState
	recv      map[NotificationID]bool // the received set: journaled or in the INBOX log
	logged    map[NotificationID]bool // in the ring's INBOX log: the receipt may be sent
	filing    map[NotificationID]bool
	checking  map[NotificationID]bool // holders' pushes whose parts fileOnceStored is asking the ring for
	journal   Journal                 // nil: filed only once in the INBOX log
	heads     HeadRecords
	records   map[string]HeadRecord // the newest head this node wrote per log (heads)
	gapTries  map[string]int        // opens of a log that met an entry missing everywhere
	waiting   []func()              // deliveries that arrived before INBOX was open
	online    bool
	started   bool                 // AddUser finished: root and INBOX are open
	starters  []func(*User, error) // AddUser callers waiting for the start under way
	backupSeq uint64
	arch      *userArchive // nil without Config.Archive
}

// Address is the user's normalized address.
func (u *User) Address() string { return u.addr }

// Keys are the user's private keys.
func (u *User) Keys() *identity.Keys { return u.keys }

// ErrUserKeys: the keys do not match the record.
var ErrUserKeys = errors.New("post: keys do not match the user's record")

// AddUser brings a local user online on this node and calls cb once the user's root and INBOX
// logs are open (or the start failed). It publishes the record, subscribes to the user's
// presence topic and, once INBOX is open, announces the user online so that holders push
// pending notifications at once.
//
// fresh says the user's logs may not exist yet (no start has succeeded before): each log is
// then created if, and only if, CreateLog finds its absence certain (every replica answered
// "not found"), and opened if a head exists, so a fresh start that failed half-way (a replica
// that died unnoticed, say) is finished by the next one. Otherwise the logs are only opened,
// retrying a log that cannot be found, never re-creating it.
//
// AddUser is idempotent: for a user already started on this node cb gets it at once, and a
// call while a start is under way waits for that start's outcome. A start that fails leaves
// nothing behind (the user is not on this node, cb gets a nil User), so it can be retried.
func (n *Node) AddUser(keys *identity.Keys, sr identity.SignedRecord, fresh bool, cb func(*User, error)) {
	if cb == nil {
		cb = func(*User, error) {}
	}
	rec, err := sr.Verify(n.cfg.CA, n.now(), n.cfg.Revoked)
	if err != nil {
		cb(nil, err)
		return
	}
	if !rec.Keys.Equal(keys.Public()) || rec.Ring != n.cfg.Ring {
		cb(nil, ErrUserKeys)
		return
	}
	n.mu.Lock()
	if u, ok := n.users[rec.Address]; ok {
		switch {
		case !u.keys.Public().Equal(keys.Public()):
			n.mu.Unlock()
			cb(nil, fmt.Errorf("post: user %s already on this node with other keys", rec.Address))
		case u.started:
			n.mu.Unlock()
			cb(u, nil)
		default:
			u.starters = append(u.starters, cb)
			n.mu.Unlock()
		}
		return
	}
	u := &User{n: n, addr: rec.Address, keys: keys, record: sr, logs: map[string]*logState{},
		recv: map[NotificationID]bool{}, logged: map[NotificationID]bool{}, filing: map[NotificationID]bool{},
		checking: map[NotificationID]bool{},
		records:  map[string]HeadRecord{}, gapTries: map[string]int{}, starters: []func(*User, error){cb}}
	n.users[u.addr] = u
	n.mu.Unlock()
	if n.cfg.Journals != nil {
		j, err := n.cfg.Journals(rec.Address)
		if err != nil {
			u.finishStart(fmt.Errorf("post: received journal of %s: %w", rec.Address, err))
			return
		}
		n.mu.Lock()
		u.journal = j
		n.mu.Unlock()
	}
	if n.cfg.HeadRecords != nil {
		h, err := n.cfg.HeadRecords(rec.Address)
		var recs map[string]HeadRecord
		if err == nil {
			recs, err = h.Load()
		}
		if err != nil {
			u.finishStart(fmt.Errorf("post: head records of %s: %w", rec.Address, err))
			return
		}
		n.mu.Lock()
		u.heads = h
		if recs != nil {
			u.records = recs
		}
		n.mu.Unlock()
	}
	n.subscribe(u.addr)
	PublishRecord(n.st, sr, n.now().Add(n.cfg.ContentLease), func(err error) {
		if err != nil {
			n.cfg.Log.Warn("post: publishing record failed", "user", u.addr, "err", err)
		}
	})
	if n.archiveOn() {
		if err := u.newArchive(); err != nil {
			u.finishStart(fmt.Errorf("post: archive of %s: %w", rec.Address, err))
			return
		}
		if fresh {
			// A first start here may be a node that lost its disk: find the archive before
			// deciding that a log is missing and creating it.
			u.recoverArchive(func() { u.openLogs(fresh) })
			return
		}
		u.recoverArchive(nil)
	}
	u.openLogs(fresh)
}

// openLogs opens (fresh: creates where certainly missing) the root and INBOX logs and
// finishes the start.
func (u *User) openLogs(fresh bool) {
	if fresh {
		u.ensureLog(RootLog, func(err error) {
			if err != nil {
				u.finishStart(err)
				return
			}
			u.ensureLog(InboxLog, u.finishStart)
		})
		return
	}
	var mu sync.Mutex
	var first error
	j := newJoin(2, func() { u.finishStart(first) })
	for _, name := range []string{RootLog, InboxLog} {
		u.openWithRetry(name, func(err error) {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
			j.one()
		})
	}
}

// ensureLog creates a log whose absence is certain and opens one that exists (CreateLog
// refuses to write a head over one that may exist). A log other than root found this way may
// come from a start that failed before listing it in the root log: list it.
func (u *User) ensureLog(name string, cb func(error)) {
	u.CreateLog(name, func(err error) {
		switch {
		case err == nil && name == InboxLog:
			u.onLogLoaded(u.logs[InboxLog])
		case errors.Is(err, ErrLogExists):
			u.OpenLog(name, func(err error) {
				if err == nil && name != RootLog {
					u.listInRoot(name)
				}
				cb(err)
			})
			return
		}
		cb(err)
	})
}

// listInRoot appends "+name" to the root log unless it lists name already (a fresh start
// that created the log and failed before its root entry).
func (u *User) listInRoot(name string) {
	es, err := u.Entries(RootLog, 0)
	if err != nil {
		return
	}
	for _, e := range es {
		if string(e) == "+"+name {
			return
		}
	}
	u.Append(RootLog, []byte("+"+name), nil)
}

// finishStart ends AddUser: the user is started, or (err) taken off this node altogether, its
// journal closed, so that the next AddUser starts over.
func (u *User) finishStart(err error) {
	n := u.n
	n.mu.Lock()
	cbs := u.starters
	u.starters = nil
	var j Journal
	if err == nil {
		u.started = true
	} else {
		if n.users[u.addr] == u {
			delete(n.users, u.addr)
		}
		u.waiting = nil // their pending copies stay with the holders
		j, u.journal = u.journal, nil
		if c, ok := u.heads.(io.Closer); ok {
			defer func() {
				if err := c.Close(); err != nil {
					n.cfg.Log.Warn("post: closing the head records", "user", u.addr, "err", err)
				}
			}()
		}
		u.heads = nil
	}
	n.mu.Unlock()
	res := u
	if err == nil {
		u.archiveReconcile()
	}
	if err != nil {
		res = nil
		n.unsubscribeIfIdle(u.addr)
		if c, ok := j.(io.Closer); ok {
			if cerr := c.Close(); cerr != nil {
				n.cfg.Log.Warn("post: closing the received journal", "user", u.addr, "err", cerr)
			}
		}
	}
	for _, cb := range cbs {
		cb(res, err)
	}
}

// Resume attaches a user whose state this node kept (its local cache) after the overlay node
// restarted: subscribe, announce, restart timers.
func (n *Node) Resume(u *User) {
	n.mu.Lock()
	u.n = n
	n.users[u.addr] = u
	u.online = false
	// What was in flight died with the old node: the batch whose head write had no answer
	// goes back in front of the queue and is written again with a higher sequence number
	// (at the same indices, so a head that did reach the replicas is rewritten, not
	// duplicated).
	u.filing = map[NotificationID]bool{}
	var logs []*logState
	for _, l := range u.logs {
		l.queue = append(l.inflight, l.queue...)
		l.inflight = nil
		l.writing, l.snapping, l.flight = false, false, nil
		// The old node's timers never fire: a FilingBatch wait or an entry store that
		// was armed is due now (a queue of recorded changes would otherwise wait for an
		// ordinary append to reach the ring).
		l.batching, l.entryWait = false, false
		l.due = len(l.queue) > 0
		logs = append(logs, l)
	}
	n.mu.Unlock()
	n.subscribe(u.addr)
	u.goOnline()
	for _, l := range logs {
		u.storeEntries(l, false)
		u.flushLog(l)
	}
}

func (u *User) openWithRetry(name string, cb func(error)) {
	u.OpenLog(name, func(err error) {
		if err != nil && !u.n.stopped() {
			u.n.cfg.Log.Warn("post: cannot open log yet; retrying (never re-created)", "user", u.addr, "log", name, "err", err)
			u.n.mu.Lock()
			if l := u.logs[name]; l != nil && !l.loaded {
				delete(u.logs, name)
			}
			u.n.mu.Unlock()
			u.n.after(u.n.cfg.RetryDelay, func() { u.openWithRetry(name, cb) })
			return
		}
		cb(err)
	})
}

// onLogLoaded rebuilds the received set when INBOX is open, replays the journal and starts
// the user.
func (u *User) onLogLoaded(l *logState) {
	if l == nil || l.name != InboxLog {
		return
	}
	u.n.mu.Lock()
	for _, b := range l.bodies {
		if f, err := DecodeFiled(b); err == nil {
			u.recv[f.ID] = true
			u.logged[f.ID] = true
		}
	}
	u.n.mu.Unlock()
	u.replayJournal()
	u.n.mu.Lock()
	w := u.waiting
	u.waiting = nil
	u.n.mu.Unlock()
	for _, f := range w {
		f()
	}
	u.goOnline()
}

// replayJournal finishes what a crash interrupted: journaled entries INBOX lacks are
// appended again, and those it has are forgotten and their receipts sent again.
func (u *User) replayJournal() {
	if u.journal == nil {
		return
	}
	es, err := u.journal.Entries()
	if err != nil {
		u.n.cfg.Log.Warn("post: cannot read the received journal", "user", u.addr, "err", err)
		return
	}
	for _, e := range es {
		f, err := DecodeFiled(e.Entry)
		if err != nil || f.ID != e.ID {
			u.n.cfg.Log.Warn("post: skipping a damaged journal entry", "user", u.addr, "err", err)
			continue
		}
		carried, err := carriedObjects(u.n.cfg.Ring, f.Parts, e.Carried)
		if err != nil {
			u.n.cfg.Log.Warn("post: skipping a damaged journal entry", "user", u.addr, "err", err)
			continue
		}
		u.n.holdCarried(carried)
		u.n.mu.Lock()
		logged := u.logged[f.ID]
		u.recv[f.ID] = true
		u.n.mu.Unlock()
		if logged {
			u.afterLogged(f.ID, f.Parts, carried)
			continue
		}
		u.logEntry(f.ID, e.Entry, f.Parts, carried, u.n.cfg.MaxFilingRetries, nil) // reported before the crash
	}
}

// goOnline announces the user's node on its presence topic and starts the periodic tasks.
func (u *User) goOnline() {
	n := u.n
	n.mu.Lock()
	if u.online {
		n.mu.Unlock()
		return
	}
	u.online = true
	n.mu.Unlock()
	u.announce()
	// Announce again on a backoff (OnlineBackoff), then every OnlineInterval: a few extra
	// multicasts per start, so that an announcement lost to a presence tree under repair
	// delays pushes by seconds, not by OnlineInterval.
	var reannounce func(i int)
	reannounce = func(i int) {
		u.announce()
		d := n.cfg.OnlineInterval
		if i+1 < len(n.cfg.OnlineBackoff) {
			d = n.cfg.OnlineBackoff[i+1] - n.cfg.OnlineBackoff[i]
		}
		if d <= 0 {
			d = n.cfg.OnlineInterval // a backoff list that is not increasing
		}
		n.after(d, func() { reannounce(i + 1) })
	}
	if len(n.cfg.OnlineBackoff) > 0 {
		n.after(n.cfg.OnlineBackoff[0], func() { reannounce(0) })
	} else {
		n.after(n.cfg.OnlineInterval, func() { reannounce(0) })
	}
	if n.archiveOn() {
		var tick func()
		tick = func() { u.archiveTick(); n.after(n.archiveTickEvery(), tick) }
		n.after(n.archiveTickEvery(), tick)
	}
	var backup, refresh func()
	backup = func() { u.Backup(nil); n.after(n.cfg.BackupInterval, backup) }
	refresh = func() { u.RefreshLeases(nil); n.after(n.cfg.RefreshInterval, refresh) }
	n.after(n.cfg.BackupInterval, backup)
	n.after(n.cfg.RefreshInterval, refresh)
}

func (u *User) announce() {
	n := u.n
	self := n.ov.Self()
	t := n.now().UnixNano()
	sig, err := identity.Sign(u.keys, contextOnline, onlineMessage(u.addr, self, t))
	if err != nil {
		return
	}
	m := &postMsg{Type: mOnline, Recipient: u.addr, Handle: self, Time: t, Sig: sig}
	if err := n.topics.Multicast(n.presence(u.addr), m.encode()); err != nil {
		n.cfg.Log.Warn("post: presence multicast failed", "user", u.addr, "err", err)
	}
	// This node may hold some of the user's pending notifications itself.
	n.onOnline(m)
}

// Backup writes a signed object listing every open log's head (key, seq, payload hash),
// under a well-known name owned by the user, with a sequence number that only grows.
func (u *User) Backup(cb func(error)) {
	if cb == nil {
		cb = func(error) {}
	}
	n := u.n
	n.mu.Lock()
	var es []backupEntry
	for _, l := range u.logs {
		if l.loaded {
			es = append(es, backupEntry{Head: l.key, Seq: l.seq, Hash: sum(l.payload)})
		}
	}
	seq := max(u.backupSeq+1, uint64(n.now().Unix()))
	u.backupSeq = seq
	n.stats.Backups++
	n.mu.Unlock()
	sortBackup(es)
	obj := past.NewSigned(u.keys.SigningKey(), n.cfg.Ring, []byte(backupName), seq, encodeBackup(es), n.now().Add(n.cfg.ContentLease))
	n.st.Insert(obj, func(r past.InsertResult) {
		if r.Err == nil {
			u.keep(obj)
		}
		cb(r.Err)
	})
}

// BackupKey is where a user's head backup lives.
func (u *User) BackupKey() ids.Key {
	return past.SignedKey(u.n.cfg.Ring, u.keys.Public().Signing, []byte(backupName))
}

// RefreshLeases extends the lease of everything reachable from the user's logs: heads,
// entries, snapshots, the backup and the parts of filed messages (ePOST: daily, 28 days).
func (u *User) RefreshLeases(cb func(error)) {
	if cb == nil {
		cb = func(error) {}
	}
	n := u.n
	keys := append(u.reachableKeys(), identity.RecordKey(n.cfg.Ring, u.addr))
	n.mu.Lock()
	n.stats.Refreshs++
	n.mu.Unlock()
	keys = dedupeKeys(keys)
	exp := n.now().Add(n.cfg.ContentLease)
	u.archiveRefresh(keys, exp)
	n.st.Refresh(keys, exp, cb)
}

// reachableKeys lists what the user's open logs reach: the head backup, heads, entries,
// snapshots and the parts of messages filed into INBOX.
func (u *User) reachableKeys() []ids.Key {
	n := u.n
	n.mu.Lock()
	defer n.mu.Unlock()
	keys := []ids.Key{u.BackupKey()}
	for _, name := range slices.Sorted(maps.Keys(u.logs)) { // deterministic order of refreshes
		l := u.logs[name]
		if !l.loaded {
			continue
		}
		keys = append(keys, l.key)
		// Entries stored in a segment are not objects of their own: the segment is.
		inSeg := make(map[ids.ID]uint64, len(l.esegs))
		for _, sg := range l.esegs {
			inSeg[sg.Last] = sg.Count
			keys = append(keys, ids.Key{Ring: n.cfg.Ring, ID: sg.Loc})
		}
		// Entries under the snapshot are read from it, never on their own again; those of
		// the tail (from tailFrom) are carried inline by the head until a segment stores them.
		skip := uint64(0)
		for i := min(len(l.locs), int(l.tailFrom)) - 1; i >= 0 && uint64(i) >= l.head.SnapshotIndex; i-- {
			loc := l.locs[i]
			if c, ok := inSeg[loc]; ok && skip == 0 {
				skip = c
			}
			if skip > 0 {
				skip--
				continue
			}
			if !loc.IsZero() {
				keys = append(keys, ids.Key{Ring: n.cfg.Ring, ID: loc})
			}
		}
		if l.head.SnapshotIndex > 0 {
			if ref, err := unmarshalRef(l.head.Snapshot); err == nil {
				keys = append(keys, refKeys(ref)...)
			}
		}
		for _, sg := range l.segs { // the older snapshot segments the newest one chains to
			if ref, err := unmarshalRef(sg.ref); err == nil {
				keys = append(keys, refKeys(ref)...)
			}
		}
		if l.name == InboxLog {
			for _, b := range l.bodies {
				if f, err := DecodeFiled(b); err == nil {
					for _, p := range f.Parts {
						keys = append(keys, refKeys(p)...)
					}
				}
			}
		}
	}
	return dedupeKeys(keys)
}

func dedupeKeys(ks []ids.Key) []ids.Key {
	seen := make(map[ids.Key]bool, len(ks))
	out := ks[:0]
	for _, k := range ks {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// User returns the local user with this address.
func (n *Node) User(addr string) (*User, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	u, ok := n.users[addr]
	return u, ok
}
