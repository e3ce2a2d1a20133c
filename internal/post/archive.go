package post

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"epost/internal/content"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/wire"
)

// The archive: every local user's objects also go to Glacier (DESIGN.md layer 7), so that mail
// survives the loss of all of an object's PAST replicas at once, and a node that lost its
// disk gets its user's folders back from the user's keys alone.
//
// What is archived. Whatever the user's node writes for the user once its PAST insert is
// acknowledged: log heads, log entries, head backups, snapshots, the parts of messages the
// user appends (User.Put), and, when a delivered message is filed, the chunks of its parts
// (fetched once more: the sender stored them, but only the recipient's archive can find them
// again). Pending notifications are not (they live until filed, and the sender's node
// retries).
//
// How. The members go into the user's glacier.Aggregator (ePOST's aggregation: batches of at
// most 512,000 bytes or 50 objects; a batch waits at most ArchiveFlush), and each aggregate is
// erasure-coded under a manifest signed with the user's key. Aggregates are chained: each
// links to the previous one (glacier.AggregateKey(owner, seq)), and after every insert the
// node writes the Glacier object "root" (owner-bound like the aggregates, a version that only
// grows) naming the newest aggregate's seq. So the owner's public key is enough to find
// everything again: root, then forward probes for aggregates newer than the root says (the
// root may lag behind), then the chain back.
//
// Fallback. Every PAST lookup POST makes (heads, entries, snapshots, chunks) goes through
// Node.lookup: on a miss, an online local user's index (member key → aggregate) names the
// aggregate; it is retrieved from Glacier (m fragments, each checked against the owner's
// manifest, the object against its hash), the member is checked as PAST's replicas check it
// (content hash, owner signature) and re-inserted into PAST.
//
// Recovery. When a user starts on a node (AddUser), the index is rebuilt from Glacier before
// anything is archived; a first start on a node (fresh: a node that lost its disk, or a user
// moved to a new machine with the key backup) waits for it before it looks for the user's
// logs, so that a log lost from PAST is found in the archive and never created anew.
//
// Leases. Members carry their PAST lease; RefreshLeases raises them in the index, and the
// hourly archive round renews the leases of aggregates whose lease is half run out (a new
// manifest version only: Glacier holders keep their fragments), repacks aggregates that are
// mostly dead (their blob is fetched back from Glacier first) and forgets expired ones.
//
// Order and memory. Aggregate inserts, renewals and repacks go through one queue per user,
// one at a time, so an aggregate is stored before the next one links to it. Each waits for a
// lull in the node's mail traffic (Config.ArchiveYield: 50 ms without a message sent, filed,
// appended or read), but at most a minute or until 32 MiB of aggregates are queued: a burst
// of mail is answered first and archived right after. Once stored, an
// aggregate's blob is dropped from memory: the node keeps only tables of contents, and writes
// them (glacier.Aggregator.State) to the user's archive state file whenever the queue is
// empty. A restart loads that file instead of reading the chain back from Glacier, after
// checking that Glacier holds no aggregate newer than the file knows (else it walks the chain
// as after a disk loss). What a crash takes before it reaches an aggregate (pending members)
// is found again at the next start: content members from the held file (archiveheld.go),
// and the user's reachable objects (heads, entries, snapshots, INBOX parts) missing from the
// index are archived again from PAST.

// Archive is what POST needs from Glacier; *glacier.Driver implements it.
type Archive interface {
	Codec() *glacier.Codec
	// EncodeInsert erasure-codes obj under a manifest signed by priv and inserts it; cb gets
	// the manifest (nil if obj could not be encoded) and the result, possibly on another
	// goroutine.
	EncodeInsert(priv ed25519.PrivateKey, name []byte, version uint64, expiry time.Time, obj []byte, cb func(*glacier.Manifest, glacier.InsertResult))
	Renew(man *glacier.Manifest, cb func(glacier.InsertResult))
	Retrieve(key ids.ID, cb func([]byte, *glacier.Manifest, error))
}

const (
	archiveRootName  = "root"
	archiveRootMagic = "epost/v1/archive-root\x00"
	// aggCacheTTL keeps a retrieved aggregate for the lookups that follow (a recovering user
	// reads many members of the same aggregate in a row).
	aggCacheTTL = time.Minute
	aggCacheMax = 16
	// repackFetches bounds the blobs fetched back from Glacier per round for repacks.
	repackFetches = 4
	// keepFetches bounds the ring lookups keepKeys has in flight.
	keepFetches = 16
)

// userArchive is a user's aggregation state. Guarded by the node's mutex.
type userArchive struct {
	agg     *glacier.Aggregator
	ready   bool             // index restored from Glacier or the state file (or none found)
	backlog []glacier.Member // kept before ready
	onReady []func()
	queue   []archOp // inserts and renewals, one at a time, in order
	busy    bool     // queue[0]'s predecessor is in flight or waits for a retry
	// yielding: queue[0] waits for a lull in the node's mail traffic (yieldLocked);
	// yieldedFor is the last aggregate counted in Stats.ArchiveYields.
	yielding   bool
	yieldedFor *glacier.Aggregate
	// mans are the manifests of the stored versions (renewals re-sign them); memory only: a
	// renewal after a restart re-derives its manifest from the aggregate's blob.
	mans      map[ids.ID]*glacier.Manifest
	fetching  map[ids.ID]bool // blobs being fetched back for repacks
	keeping   int             // objects keepKeys is fetching from the ring (or waits to retry)
	newest    uint64          // highest aggregate seq stored
	rootVer   uint64
	roots     int       // root inserts in flight or waiting for a retry
	rootAt    time.Time // when the root was last written
	rootSeq   uint64    // the newest aggregate it named
	rootLater bool      // a root write is scheduled (rootSoon)
	lastMaint time.Time
	file      string // state file; "" keeps none
	dirty     bool   // state changed since it was saved
	saved     uint64 // newest aggregate when the file was last written
	savedAt   time.Time
	saveLater bool // a save is scheduled
	saveMu    sync.Mutex
	// The held file (archiveheld.go): members not yet in a stored aggregate, on disk.
	held       *appendFile
	heldBroken bool       // writing it failed: not again until the next rotation
	heldSet    []heldFile // files set aside at cuts, each until its aggregates are stored
	heldOld    []string   // the previous run's held files, removed once the archive is ready
}

// archOp is an aggregate version to store: all fragments (insert) or a new manifest (renew).
type archOp struct {
	g      *glacier.Aggregate
	renew  bool
	repack bool      // an insert of a repacked version
	at     time.Time // when it was queued
}

type cachedAgg struct {
	agg *glacier.Aggregate
	at  time.Time
}

func (n *Node) archiveOn() bool { return n.cfg.Archive != nil }

// archiveMaxObjects bounds an aggregate's members. ePOST's 50 made a mail user's aggregates
// about 100 KB (a 2 KB message archives a chunk, an entry and a share of heads), so each
// aggregate's fixed costs (n fragments to place, each with its manifest and proof, and one
// index entry per fragment on its holder's disk) were shared by about 40 messages; with 512
// members, aggregates fill up to their byte bound (512,000) instead.
const archiveMaxObjects = 512

// newAggregator is an empty aggregator for u's objects.
func (u *User) newAggregator() (*glacier.Aggregator, error) {
	cfg := glacier.DefaultAggregatorConfig(u.n.cfg.Ring, u.keys.Public().Signing)
	cfg.MaxAge = u.n.cfg.ArchiveFlush
	cfg.MaxObjects = archiveMaxObjects
	return glacier.NewAggregator(cfg)
}

// newArchive sets up u's archive (not ready until recoverArchive ends).
func (u *User) newArchive() error {
	agg, err := u.newAggregator()
	if err != nil {
		return err
	}
	a := &userArchive{agg: agg, mans: map[ids.ID]*glacier.Manifest{}, fetching: map[ids.ID]bool{}}
	if u.n.cfg.ArchiveFile != nil {
		a.file = u.n.cfg.ArchiveFile(u.addr)
	}
	held, files, err := u.n.loadHeld(a)
	if err != nil {
		u.n.cfg.Log.Warn("post: archive members held on disk read in part", "user", u.addr, "members", len(held), "err", err)
	} else if len(held) > 0 {
		u.n.cfg.Log.Info("post: archive members held on disk by the previous run, to archive again", "user", u.addr, "members", len(held))
	}
	a.backlog, a.heldOld = held, files
	u.n.mu.Lock()
	u.arch = a
	u.n.mu.Unlock()
	return nil
}

// keep adds obj, just stored in PAST for u, to u's archive.
func (u *User) keep(obj past.Object) {
	n := u.n
	if !n.archiveOn() {
		return
	}
	m := glacier.Member{Key: obj.Key, Expiry: obj.Expiry}
	if m.Expiry.IsZero() {
		m.Expiry = n.now().Add(n.cfg.ContentLease)
	}
	if past.Type(obj.Type) == past.TypeContent {
		m.Data, m.ContentHash = obj.Payload, true
	} else {
		m.Data = encodeArchived(&obj)
	}
	n.mu.Lock()
	a := u.arch
	if a == nil {
		n.mu.Unlock()
		return
	}
	if !a.ready {
		m.Data = slices.Clone(m.Data)
		a.backlog = append(a.backlog, m)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	u.enqueueInserts(u.aggregate(m))
}

// aggregate adds m to u's archive, which is ready, and returns the aggregates it filled.
func (u *User) aggregate(m glacier.Member) []*glacier.Aggregate {
	n := u.n
	n.mu.Lock()
	_, aggregated := u.arch.agg.Locate(m.Key)
	out, err := u.arch.agg.Add(n.now(), m)
	n.stats.ArchiveKept++
	// The held file follows the aggregates: m goes into the file of the batch it joined (a
	// member added again while pending is held again, since it may move to the next batch).
	hold := err == nil && !aggregated
	if len(out) > 0 {
		last := out[len(out)-1]
		if hold && slices.ContainsFunc(last.TOC, func(e glacier.TOCEntry) bool { return e.ID == m.Key.ID }) {
			u.holdLocked(m)
			hold = false
		}
		u.rotateHeldLocked(out)
	}
	if hold {
		u.holdLocked(m)
	}
	n.mu.Unlock()
	if err != nil {
		n.cfg.Log.Warn("post: cannot archive object", "user", u.addr, "key", m.Key.Full(), "err", err)
	}
	return out
}

// keepRefs archives the chunks of refs (parts of a message just filed).
func (u *User) keepRefs(refs []content.Ref) {
	var keys []ids.Key
	for _, r := range refs {
		keys = append(keys, refKeys(r)...)
	}
	u.keepKeys(keys)
}

// keepKeys archives the objects at keys that the archive does not have yet, from this node's
// store or the ring, with at most keepFetches ring lookups in flight (a first start over a
// large mailbox must not fire them all at once).
func (u *User) keepKeys(keys []ids.Key) {
	n := u.n
	if !n.archiveOn() {
		return
	}
	var mu sync.Mutex
	next := 0
	var pump func()
	pump = func() {
		for {
			mu.Lock()
			if next >= len(keys) {
				mu.Unlock()
				return
			}
			k := keys[next]
			next++
			mu.Unlock()
			n.mu.Lock()
			has := u.arch != nil && u.arch.ready && u.arch.agg.Holds(k)
			n.mu.Unlock()
			if has {
				continue
			}
			// A chunk read just now (to file the message) is taken from memory first: when
			// this node is one of its replicas, the store would read and hash it again.
			if obj, ok := n.recentChunk(k, true); ok {
				u.keep(obj)
				continue
			}
			// A local copy of a mutable object (a head) may be stale: only immutable ones
			// are taken from this node's store; the ring gives the newest of the others.
			if obj, ok := n.st.LocalGet(k); ok && past.Type(obj.Type) == past.TypeContent {
				u.keep(obj)
				continue
			}
			if p, ok := n.carriedPayload(k); ok { // a carried chunk, stored just now
				u.keep(past.NewContent(n.cfg.Ring, p, n.now().Add(n.cfg.ContentLease)))
				continue
			}
			u.keepingAdd(1)
			u.keepFetch(k, 0, func() { pump() }) // this lookup's slot goes to the next key
			return
		}
	}
	for range keepFetches {
		pump()
	}
}

// keepFetchTries bounds the lookups of an object to archive: a lookup that fails (a timeout
// during churn, replicas not yet handed the object) is tried again after keepRetryBase,
// doubling up to keepRetryMax, so that one failed lookup does not leave a filed message
// outside the archive until the next start.
const (
	keepFetchTries = 10
	keepRetryBase  = time.Second
	keepRetryMax   = time.Minute
)

// Archived reports whether u's archive holds the object at k (in an aggregate stored or
// still filling).
func (u *User) Archived(k ids.Key) bool {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	return u.arch != nil && u.arch.agg.Holds(k)
}

// current reports whether u is still the node's user (a failed start takes it off).
func (u *User) current() bool {
	u.n.mu.Lock()
	defer u.n.mu.Unlock()
	return u.n.users[u.addr] == u
}

func (u *User) keepingAdd(d int) {
	u.n.mu.Lock()
	if u.arch != nil {
		u.arch.keeping += d
	}
	u.n.mu.Unlock()
}

// keepFetch looks k up in the ring and archives it; on a failure it tries again later (done
// runs after the first attempt, so that the caller's slot is not held through the waits).
func (u *User) keepFetch(k ids.Key, try int, done func()) {
	n := u.n
	n.st.Lookup(k, func(obj past.Object, err error) {
		switch {
		case err == nil:
			u.keep(obj)
			u.keepingAdd(-1)
		case try+1 >= keepFetchTries || n.stopped() || !u.current():
			n.cfg.Log.Warn("post: cannot fetch an object to archive it; the next start tries again", "user", u.addr, "key", k.Full(), "tries", try+1, "err", err)
			u.keepingAdd(-1)
		default:
			n.cfg.Log.Debug("post: cannot fetch an object to archive it yet", "user", u.addr, "key", k.Full(), "try", try+1, "err", err)
			d := min(keepRetryBase<<try, keepRetryMax)
			n.after(d, func() {
				if p, ok := n.carriedPayload(k); ok {
					u.keep(past.NewContent(n.cfg.Ring, p, n.now().Add(n.cfg.ContentLease)))
					u.keepingAdd(-1)
					return
				}
				if obj, ok := n.st.LocalGet(k); ok && past.Type(obj.Type) == past.TypeContent {
					u.keep(obj)
					u.keepingAdd(-1)
					return
				}
				u.keepFetch(k, try+1, func() {})
			})
		}
		done()
	})
}

// Put is Node.Put for u: the chunks also go to u's archive.
func (u *User) Put(data []byte, cb func(content.Ref, error)) { u.n.put(data, u.keep, cb) }

// Seal is Node.Seal, keeping what it stores for the archive as Put does.
func (u *User) Seal(data []byte) (content.Ref, func(cb func(error)), error) {
	return u.n.seal(data, u.keep)
}

// Get is Node.Get (with the archive fallback of every local user).
func (u *User) Get(ref content.Ref, cb func([]byte, error)) {
	u.n.foreground()
	u.n.Get(ref, cb)
}

// GetForeign is Node.GetForeign (a part of a message from another ring).
func (u *User) GetForeign(ref content.Ref, cb func([]byte, error)) { u.n.GetForeign(ref, cb) }

func (u *User) enqueueInserts(gs []*glacier.Aggregate) {
	if len(gs) == 0 {
		return
	}
	ops := make([]archOp, len(gs))
	for i, g := range gs {
		ops[i] = archOp{g: g}
	}
	u.enqueue(ops...)
}

func (u *User) enqueue(ops ...archOp) {
	u.n.mu.Lock()
	now := u.n.now()
	for i := range ops {
		ops[i].at = now
	}
	u.arch.queue = append(u.arch.queue, ops...)
	u.n.mu.Unlock()
	u.runQueue()
}

// queuedBlobs is the bytes of the aggregates waiting in a's queue to be inserted.
func queuedBlobs(a *userArchive) int {
	queued := 0
	for _, op := range a.queue {
		if !op.renew {
			queued += len(op.g.Blob)
		}
	}
	return queued
}

// yieldLocked is how long the next archive operation should wait for a lull in the node's
// mail traffic (Config.ArchiveYield), or 0 to start it now: no traffic for ArchiveYield,
// ArchiveBacklog bytes of aggregates queued on the node (all local users), or u's oldest
// operation queued ArchiveYieldMax ago. Called with n.mu held and a.queue not empty.
func (u *User) yieldLocked(a *userArchive) time.Duration {
	n := u.n
	if n.cfg.ArchiveYield <= 0 {
		return 0
	}
	now := n.now()
	quiet := now.Sub(time.Unix(0, n.busyAt.Load()))
	waited := now.Sub(a.queue[0].at)
	if quiet >= n.cfg.ArchiveYield || waited >= n.cfg.ArchiveYieldMax {
		return 0
	}
	// The bound is the node's: every local user's waiting aggregates are in memory.
	queued := queuedBlobs(a)
	for _, v := range n.users {
		if v != u && v.arch != nil {
			queued += queuedBlobs(v.arch)
		}
	}
	if queued >= n.cfg.ArchiveBacklog {
		return 0
	}
	// quiet < 0 or waited < 0 (the wall clock stepped back): wait at most ArchiveYield, and
	// never past the op's ArchiveYieldMax as the clock runs now.
	wait := min(n.cfg.ArchiveYield-max(quiet, 0), n.cfg.ArchiveYield)
	if waited >= 0 {
		wait = min(wait, n.cfg.ArchiveYieldMax-waited)
	}
	return max(wait, time.Millisecond)
}

// runQueue starts the next archive operation unless one is under way; with nothing left, it
// saves the state.
func (u *User) runQueue() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	if a.busy || a.yielding {
		n.mu.Unlock()
		return
	}
	if len(a.queue) > 0 {
		if wait := u.yieldLocked(a); wait > 0 {
			a.yielding = true
			if a.yieldedFor != a.queue[0].g {
				a.yieldedFor = a.queue[0].g // counted once however often it waits again
				n.stats.ArchiveYields++
			}
			n.mu.Unlock()
			n.after(wait, func() {
				n.mu.Lock()
				a.yielding = false
				n.mu.Unlock()
				u.runQueue()
			})
			return
		}
	}
	var op archOp
	for {
		if len(a.queue) == 0 {
			n.mu.Unlock()
			u.saveArchive(false)
			return
		}
		op, a.queue = a.queue[0], a.queue[1:]
		if cur, ok := a.agg.Aggregate(op.g.Key); ok && cur.Version == op.g.Version {
			break
		}
		// Superseded (renewed, repacked) or expired: the newer version is queued if needed.
	}
	a.busy = true
	old := a.mans[op.g.Key]
	n.mu.Unlock()
	g := op.g
	codec, priv := n.cfg.Archive.Codec(), u.keys.SigningKey()
	done := func(man *glacier.Manifest) func(glacier.InsertResult) {
		return func(r glacier.InsertResult) { u.opDone(op, man, r) }
	}
	switch {
	case op.renew && old != nil:
		man, err := glacier.RenewManifest(old, priv, g.Version, g.Expiry)
		if err != nil {
			u.opFailed(op, err, false)
			return
		}
		n.cfg.Archive.Renew(man, done(man))
	case op.renew:
		// The manifest of the stored version is not in memory (the node restarted): the blob
		// gives it again, the same fragments under a new version.
		u.fetchAggregate(g.Key, func(agg *glacier.Aggregate, err error) {
			if err == nil && !slices.Equal(agg.TOC, g.TOC) {
				err = fmt.Errorf("%w: Glacier holds another version of aggregate %d", glacier.ErrBadAggregate, g.Seq)
			}
			var man *glacier.Manifest
			if err == nil {
				man, _, err = glacier.NewManifest(codec, priv, n.cfg.Ring, g.Name, g.Version, g.Expiry, agg.Blob)
			}
			if err != nil {
				u.opFailed(op, err, true)
				return
			}
			n.cfg.Archive.Renew(man, done(man))
		})
	default:
		if g.Blob == nil {
			u.opFailed(op, errors.New("aggregate blob already released"), false)
			return
		}
		n.cfg.Archive.EncodeInsert(priv, g.Name, g.Version, g.Expiry, g.Blob, func(man *glacier.Manifest, r glacier.InsertResult) {
			if man == nil {
				u.opFailed(op, r.Err, false)
				return
			}
			u.opDone(op, man, r)
		})
	}
}

// opFailed ends an operation that failed. retry: an insert goes back in front after
// RetryDelay (the chain is stored in order); a renewal, which nothing waits for, goes to the
// back of the queue after RetryDelay and lets the queue move on.
func (u *User) opFailed(op archOp, err error, retry bool) {
	n := u.n
	n.mu.Lock()
	a := u.arch
	n.stats.ArchiveFailed++
	switch {
	case retry && !op.renew:
		a.queue = append([]archOp{op}, a.queue...)
	default:
		a.busy = false
	}
	n.mu.Unlock()
	what := "insert"
	if op.renew {
		what = "renewal"
	}
	if !retry {
		n.cfg.Log.Error("post: aggregate "+what+" impossible; skipped", "user", u.addr, "seq", op.g.Seq, "err", err)
		u.runQueue()
		return
	}
	if op.renew {
		n.cfg.Log.Warn("post: aggregate renewal failed; retrying", "user", u.addr, "seq", op.g.Seq, "version", op.g.Version, "err", err)
		n.after(n.cfg.RetryDelay, func() { u.enqueue(op) })
		u.runQueue()
		return
	}
	n.cfg.Log.Warn("post: aggregate "+what+" failed; retrying", "user", u.addr, "seq", op.g.Seq, "version", op.g.Version, "err", err)
	n.after(n.cfg.RetryDelay, func() {
		n.mu.Lock()
		a.busy = false
		n.mu.Unlock()
		u.runQueue()
	})
}

func (u *User) opDone(op archOp, man *glacier.Manifest, r glacier.InsertResult) {
	if r.Err != nil && op.renew && errors.Is(r.Err, glacier.ErrQuorum) && r.Acks > int(man.M) {
		// After a massive failure most positions are held by nodes that inherited them and
		// have nothing yet: maintenance rebuilds those fragments (under this manifest, from
		// the holders that took it) once their old holders count as gone. More than m holders
		// with the new lease are enough for that.
		n := u.n
		n.cfg.Log.Info("post: aggregate lease renewed at fewer holders than an insert needs; maintenance fills the rest",
			"user", u.addr, "seq", op.g.Seq, "acked", r.Acks, "missing", r.Missing)
		r.Err = nil
	}
	if r.Err != nil {
		u.opFailed(op, r.Err, true)
		return
	}
	n := u.n
	g := op.g
	n.mu.Lock()
	a := u.arch
	a.busy = false
	a.dirty = true
	a.mans[g.Key] = man
	if cur, ok := a.agg.Aggregate(g.Key); ok && cur.Version == g.Version {
		a.agg.Release(g.Key)
	}
	switch {
	case op.renew:
		n.stats.ArchiveRenewed++
	case op.repack:
		n.stats.ArchiveRepacked++
	default:
		n.stats.ArchiveFlushed++
	}
	advance := !op.renew && g.Seq > a.newest
	if advance {
		a.newest = g.Seq
	}
	n.mu.Unlock()
	n.cfg.Log.Debug("post: aggregate stored", "user", u.addr, "seq", g.Seq, "version", g.Version, "renewal", op.renew,
		"bytes", len(g.Blob), "members", len(g.TOC), "acked", r.Acks)
	if !op.renew {
		u.dropHeld(g.Seq)
	}
	if advance {
		u.rootSoon()
	}
	u.runQueue()
}

// rootLag and rootEvery bound how far the archive root may lag behind the newest aggregate:
// the root is written at most once per ArchiveFlush unless it would name an aggregate more
// than rootLag behind. A lagging root is safe (recovery probes forward from it until every
// fragment position says the next aggregate does not exist); writing it after every
// aggregate cost a second erasure-coded insert (n fragments, n fsyncs) per aggregate.
const rootLag = 16

func (n *Node) rootEvery() time.Duration { return n.cfg.ArchiveFlush }

// rootSoon writes the root now if it is due, or schedules it.
func (u *User) rootSoon() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	since := n.now().Sub(a.rootAt)
	due := a.rootAt.IsZero() || since >= n.rootEvery() || a.newest >= a.rootSeq+rootLag
	if !due && a.rootLater {
		n.mu.Unlock()
		return
	}
	if !due {
		a.rootLater = true
		n.mu.Unlock()
		n.after(n.rootEvery()-since, func() {
			n.mu.Lock()
			a.rootLater = false
			stale := a.newest > a.rootSeq
			n.mu.Unlock()
			if stale {
				u.writeRoot()
			}
		})
		return
	}
	n.mu.Unlock()
	u.writeRoot()
}

// writeRoot records the newest aggregate's seq in the user's Glacier root object.
func (u *User) writeRoot() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	seq := a.newest
	v := max(a.rootVer+1, uint64(n.now().UnixNano()))
	a.rootVer = v
	a.rootAt, a.rootSeq = n.now(), seq
	a.roots++
	exp := n.now().Add(n.cfg.ContentLease)
	if g, ok := a.agg.Aggregate(a.agg.Head()); ok && g.Expiry.After(exp) {
		exp = g.Expiry
	}
	n.mu.Unlock()
	w := wire.Writer{}
	w.B = append(w.B, archiveRootMagic...)
	w.U64(seq)
	n.cfg.Archive.EncodeInsert(u.keys.SigningKey(), []byte(archiveRootName), v, exp, w.B, func(man *glacier.Manifest, r glacier.InsertResult) {
		if man == nil {
			n.mu.Lock()
			a.roots--
			n.mu.Unlock()
			n.cfg.Log.Error("post: cannot encode the archive root", "user", u.addr, "err", r.Err)
			return
		}
		n.mu.Lock()
		retry := r.Err != nil && a.rootVer == v // a newer root replaces this one anyway
		if !retry {
			a.roots--
		}
		n.mu.Unlock()
		if retry {
			n.cfg.Log.Warn("post: archive root insert failed; retrying", "user", u.addr, "err", r.Err)
			n.after(n.cfg.RetryDelay, func() {
				n.mu.Lock()
				a.roots--
				n.mu.Unlock()
				u.writeRoot()
			})
		}
	})
}

func decodeRoot(b []byte) (uint64, error) {
	if len(b) != len(archiveRootMagic)+8 || string(b[:len(archiveRootMagic)]) != archiveRootMagic {
		return 0, fmt.Errorf("%w: archive root", ErrMalformed)
	}
	r := wire.NewReader(b[len(archiveRootMagic):])
	return r.U64(), r.Done()
}

// archiveTick flushes a batch that waited ArchiveFlush and, hourly, expires, renews and
// repacks aggregates.
func (u *User) archiveTick() {
	n := u.n
	n.mu.Lock()
	a := u.arch
	if a == nil || !a.ready {
		n.mu.Unlock()
		return
	}
	now := n.now()
	var ops []archOp
	if g := a.agg.Tick(now); g != nil {
		ops = append(ops, archOp{g: g})
		u.rotateHeldLocked([]*glacier.Aggregate{g})
	}
	var fetch []ids.ID
	if now.Sub(a.lastMaint) >= n.archiveMaintEvery() {
		a.lastMaint = now
		for _, k := range a.agg.Expire(now) {
			delete(a.mans, k)
			a.dirty = true
		}
		for _, g := range a.agg.RenewalsDue(now, n.cfg.ContentLease/2) {
			ops = append(ops, archOp{g: g, renew: true})
		}
		for _, rp := range a.agg.Repack(now) {
			ops = append(ops, archOp{g: rp.New, repack: true})
		}
		for _, k := range a.agg.NeedBlobs(now) {
			if len(fetch)+len(a.fetching) < repackFetches && !a.fetching[k] {
				a.fetching[k] = true
				fetch = append(fetch, k)
			}
		}
	}
	n.mu.Unlock()
	for _, k := range fetch {
		u.fetchAggregate(k, func(agg *glacier.Aggregate, err error) {
			n.mu.Lock()
			delete(a.fetching, k)
			if err == nil {
				err = a.agg.SetBlob(k, agg.Blob) // repacked at the next round
			}
			n.mu.Unlock()
			if err != nil {
				n.cfg.Log.Warn("post: cannot fetch an aggregate back to repack it", "user", u.addr, "aggregate", k.Short(), "err", err)
			}
		})
	}
	if len(ops) > 0 {
		u.enqueue(ops...)
	} else {
		u.runQueue() // saves the state when idle
	}
}

// archiveRefresh raises the archived leases of keys (RefreshLeases).
func (u *User) archiveRefresh(keys []ids.Key, expiry time.Time) {
	n := u.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if u.arch == nil || !u.arch.ready {
		return
	}
	for _, k := range keys {
		u.arch.agg.Refresh(k, expiry)
	}
	u.arch.dirty = true
}

// archiveMaintEvery is how often renewals, repacks and expiry run: hourly, or more often when
// leases are short (tests, the simulator).
func (n *Node) archiveMaintEvery() time.Duration { return min(time.Hour, n.cfg.ContentLease/16) }

// archiveTickEvery is the period of archiveTick.
func (n *Node) archiveTickEvery() time.Duration {
	return min(max(n.cfg.ArchiveFlush/4, 100*time.Millisecond), time.Minute)
}
