package post

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/content"
	"epost/internal/glacier"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/scribe"
	"epost/internal/store"
	"epost/internal/transport"
)

// Store is what POST needs from PAST; *past.Driver implements it.
type Store interface {
	Insert(obj past.Object, cb func(past.InsertResult))
	InsertDedupe(obj past.Object, cb func(past.InsertResult))
	Lookup(key ids.Key, cb func(past.Object, error))
	LookupLatest(key ids.Key, cb func(past.LookupResult))
	Refresh(keys []ids.Key, expiry time.Time, cb func(error))
	Delete(key ids.Key, proof []byte, cb func(error))
	LocalGet(key ids.Key) (past.Object, bool)
	LocalMetas(t past.Type) []store.Meta
}

// Prelocator is an optional Store ability (*past.Driver has it): Prelocate finds a key's
// replica set ahead of an Insert of that key, so that the Insert goes straight to the
// replicas (past.Node.Prelocate).
type Prelocator interface {
	Prelocate(key ids.Key)
}

// Topics is what POST needs from Scribe; *scribe.Scribe implements it.
type Topics interface {
	Subscribe(topic ids.Key, app scribe.App) error
	Unsubscribe(topic ids.Key) error
	Multicast(topic ids.Key, payload []byte) error
	Anycast(topic ids.Key, payload []byte, result func(scribe.AnycastResult)) error
}

// Overlay is what POST needs from Pastry; *pastry.Driver implements it.
type Overlay interface {
	Send(to pastry.Handle, payload []byte)
	Self() pastry.Handle
}

// Config holds POST's parameters. Zero durations take the defaults of DefaultConfig.
type Config struct {
	Ring    ids.RingID
	CA      ed25519.PublicKey        // ring CA: certifies user records
	Revoked func(serial uint64) bool // ring.Trust.IsRecordRevoked
	Secret  content.Secret           // the ring's convergence secret
	Clock   transport.Clock          // injected time
	Rand    io.Reader                // injected randomness: notification ids, log keys, nonces
	Log     *slog.Logger

	ContentLease    time.Duration // lease of parts, entries, heads (ePOST: 28 days)
	PendingLease    time.Duration // lease of pending notifications (ePOST: 28 days)
	RefreshInterval time.Duration // the owner refreshes everything reachable (ePOST: daily)
	BackupInterval  time.Duration // signed backup of all heads (ePOST: 6 h)
	SnapshotEvery   int           // entries between log snapshots (ePOST: 500)
	OnlineInterval  time.Duration // re-announce presence (a safety net; pushes are immediate)
	// OnlineBackoff lists when, counted from going online, a user's node announces itself
	// again before settling on OnlineInterval: the first announcement is lost when the
	// presence tree is still being repaired (the node just came back), and holders push only
	// on an announcement. Increasing; nil means DefaultConfig's; empty (non-nil) means none.
	OnlineBackoff    []time.Duration
	OnlineMaxAge     time.Duration // holders ignore older announcements
	HolderDelay      time.Duration // a holder offers a still-held notification itself after this
	RecordCacheTTL   time.Duration // verified recipient records are reused this long
	RetryDelay       time.Duration // filing or opening a log that failed is retried after this
	PresenceCacheTTL time.Duration // a recipient's node found by anycast is pushed to directly this long
	ChunkSize        int           // content chunk plaintext size (default content.DefaultChunkSize)
	MaxFilingRetries int
	// FilingBatch is how long the INBOX head write waits for more filings when every entry
	// it would carry is in the node's received journal already (nobody waits for it: the
	// message is shown, and its pending copy stays with its holders until the head is
	// written). Zero: no waiting (DefaultConfig has 300 ms).
	FilingBatch time.Duration
	// EntryBatch and EntryDelay: a log entry is carried inline by every head until it is
	// stored on its own; entries are stored in batches of EntryBatch, or EntryDelay after
	// the oldest one waits. EntryBatch 0 or 1: each at once (DefaultConfig: 32 and 5 s).
	EntryBatch int
	EntryDelay time.Duration
	// CarryMax: a message whose parts total at most this many bytes travels inside its
	// notifications and its recipients store it (carry.go); 0 means DefaultConfig's
	// (16 KiB), negative never. CarryBatch: how long a recipient's node collects carried
	// chunks before it stores them together (DefaultConfig: 50 ms).
	CarryMax   int
	CarryBatch time.Duration

	// ForeignSender, if set, lets this node's users receive mail from other rings: it names
	// the trust of ring for the sender's address from (checking that from's domain belongs to
	// that ring), or an error; cb may run later, on any goroutine. Unset: such mail is refused.
	ForeignSender func(from string, ring ids.RingID, cb func(*RingTrust, error))

	// Journals, if set, opens a local user's durable received set (see Journal): with it a
	// notification is filed once it is on the node's disk, and the INBOX head write and the
	// receipt follow. Without it, a notification is filed when its INBOX head is written.
	Journals func(addr string) (Journal, error)
	// HeadRecords, if set, opens a local user's durable record of the last head written per
	// log (see HeadRecords): the writer saves each head there before, or while, sending it
	// (nothing is acknowledged before the record is durable), and opens a
	// log only from that head or a newer one. Without it a restarted node has only the ring
	// and Glacier to go by.
	HeadRecords func(addr string) (HeadRecords, error)
	// RewoundInbox, if set (with HeadRecords and Journals), is an entry appended to INBOX
	// ahead of anything else when opening INBOX shows that the node's disk went back in time
	// or was replaced: it has no record of INBOX, or the ring's INBOX holds filings beyond
	// the record's head that the received journal lacks (User.diskWentBack). Filings it
	// showed from its journal in the moments before its disk lost them are filed again, and
	// are shown only once this entry is in the ring; the mail store's entry gives INBOX a new
	// UIDVALIDITY (docs/consistency.md, "A disk that goes back in time").
	RewoundInbox []byte

	// Archive, if set, is Glacier: local users' objects are aggregated and erasure-coded
	// there too, and PAST misses fall back to it (archive.go). ArchiveFlush bounds how long an
	// object waits for its aggregate (ePOST: 12 h; default 10 min, the window in which a
	// massive failure can still take the newest mail with it).
	Archive      Archive
	ArchiveFlush time.Duration
	// ArchiveYield makes Glacier work wait for a lull in this node's mail traffic: an
	// aggregate insert or renewal starts only once no message was sent, filed, appended or
	// read for this long (default 50 ms; negative: never wait), unless ArchiveBacklog bytes
	// of aggregates wait on the node (default 32 MiB) or the user's oldest operation waited
	// ArchiveYieldMax (default 1 min). A burst of mail is then answered without
	// erasure coding, hashing and fragment writes competing for the CPU and the disk; the
	// archive catches up after it. Under sustained load the bounds apply and the archive
	// keeps pace, as without the wait. ArchiveBacklog is summed over the node's local users:
	// aggregates waiting are in memory.
	ArchiveYield    time.Duration
	ArchiveBacklog  int
	ArchiveYieldMax time.Duration
	// ArchiveFile, if set, names a local user's archive state file (archive.go): with it a
	// restart does not read the user's whole archive back from Glacier.
	ArchiveFile func(addr string) string

	// Trace, if set, hears each stage a delivery reaches on this node (measurement: the
	// simulator's per-stage latencies). It runs without POST's lock held and must not block.
	Trace func(id NotificationID, s Stage)
}

// DefaultConfig returns ePOST's parameters where it had them.
func DefaultConfig() Config {
	return Config{
		ContentLease:     28 * 24 * time.Hour,
		PendingLease:     28 * 24 * time.Hour,
		RefreshInterval:  24 * time.Hour,
		BackupInterval:   6 * time.Hour,
		SnapshotEvery:    500,
		OnlineInterval:   10 * time.Minute,
		OnlineBackoff:    []time.Duration{2 * time.Second, 5 * time.Second, 15 * time.Second, time.Minute},
		OnlineMaxAge:     15 * time.Minute,
		HolderDelay:      30 * time.Second,
		RecordCacheTTL:   10 * time.Minute,
		RetryDelay:       5 * time.Second,
		PresenceCacheTTL: 2 * time.Minute,
		ChunkSize:        content.DefaultChunkSize,
		MaxFilingRetries: 10,
		FilingBatch:      300 * time.Millisecond,
		EntryBatch:       32,
		EntryDelay:       5 * time.Second,
		CarryMax:         16 << 10,
		CarryBatch:       50 * time.Millisecond,
		ArchiveFlush:     10 * time.Minute,
		ArchiveYield:     50 * time.Millisecond,
		ArchiveBacklog:   32 << 20,
		ArchiveYieldMax:  time.Minute,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	for _, p := range []struct{ v, d *time.Duration }{
		{&c.ContentLease, &d.ContentLease}, {&c.PendingLease, &d.PendingLease},
		{&c.RefreshInterval, &d.RefreshInterval}, {&c.BackupInterval, &d.BackupInterval},
		{&c.OnlineInterval, &d.OnlineInterval}, {&c.OnlineMaxAge, &d.OnlineMaxAge},
		{&c.HolderDelay, &d.HolderDelay}, {&c.RecordCacheTTL, &d.RecordCacheTTL},
		{&c.RetryDelay, &d.RetryDelay}, {&c.PresenceCacheTTL, &d.PresenceCacheTTL},
		{&c.ArchiveFlush, &d.ArchiveFlush}, {&c.EntryDelay, &d.EntryDelay},
		{&c.CarryBatch, &d.CarryBatch}, {&c.ArchiveYieldMax, &d.ArchiveYieldMax},
	} {
		if *p.v <= 0 {
			*p.v = *p.d
		}
	}
	if c.OnlineBackoff == nil {
		c.OnlineBackoff = d.OnlineBackoff
	}
	if c.SnapshotEvery <= 0 {
		c.SnapshotEvery = d.SnapshotEvery
	}
	if c.ChunkSize <= 0 || c.ChunkSize > content.MaxPlain {
		c.ChunkSize = d.ChunkSize
	}
	if c.MaxFilingRetries <= 0 {
		c.MaxFilingRetries = d.MaxFilingRetries
	}
	if c.CarryMax == 0 {
		c.CarryMax = d.CarryMax
	}
	c.CarryMax = min(c.CarryMax, MaxCarried)
	if c.ArchiveYield == 0 {
		c.ArchiveYield = d.ArchiveYield
	}
	if c.ArchiveBacklog <= 0 {
		c.ArchiveBacklog = d.ArchiveBacklog
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Stats are counters for measurement and status pages.
type Stats struct {
	Sent, Accepted, Refused      uint64 // notifications: built, quorum-stored, refused recipients
	Filed, Duplicates            uint64 // notifications filed; arrivals of already-filed ones
	Rejected                     uint64 // notifications that failed verification
	PartsMissing                 uint64 // holders' pushes not filed yet: their parts were not in the ring
	Pushed, HolderOffers         uint64 // pushes by holders on "online"; holder anycasts
	PendingHeld                  int    // pending notifications this node holds now
	ChunksPut, ChunksPutFailed   uint64
	ChunkFetchesSaved            uint64 // chunk reads served by a recent fetch (fetched.go)
	LogAppends, LogHeadWrites    uint64
	LogAppendsRecorded           uint64 // AppendRecorded entries acknowledged at their head's record, before the ring's
	LogRecordsAhead              uint64 // head records saved ahead of their write, while another was in flight
	EntrySegments, EntriesAlone  uint64 // log entries stored: segments (several entries each), entries on their own
	HeadRecords                  uint64 // head versions recorded on this node's disk before they were sent
	Forks, Absorbed, Republished uint64 // log forks merged; newer heads continued from; heads written back
	Snapshots, Backups, Refreshs uint64

	// The archive (Glacier): members waiting for their aggregate, aggregate and root inserts
	// in flight, aggregates indexed, users whose index is being recovered (all local online
	// users, now); objects kept, aggregates stored, failed inserts, objects restored into
	// PAST from Glacier, index recoveries started, archive operations that waited for a lull
	// in mail traffic (since start).
	ArchivePending, ArchiveInserting, ArchiveAggregates, ArchiveRecovering      int
	ArchiveKept, ArchiveFlushed, ArchiveRenewed, ArchiveFailed, ArchiveRestored uint64
	ArchiveRepacked, ArchiveRecoveries, ArchiveYields                           uint64
}

// Node is POST on one Pastry node: the local users' sending, receiving and logs, and the
// holder role for pending notifications stored here. It is safe for concurrent use: one
// mutex guards its state and is never held while calling PAST, Scribe or Pastry, whose
// callbacks may run synchronously.
type Node struct {
	mu     sync.Mutex
	cfg    Config
	st     Store
	topics Topics
	ov     Overlay
	stop   bool

	users    map[string]*User
	subs     map[string]bool             // presence topics subscribed, by address
	held     map[string]map[ids.Key]bool // holder index: recipient -> pending keys
	records  map[string]cachedRecord
	seen     map[string]seenAt                      // recipients' nodes, from anycast results and announcements
	where    map[string][]func(pastry.Handle, bool) // probes in flight: who waits for the answer
	observed []observed                             // from PAST's observer, handled outside its lock
	stats    Stats
	aggCache map[ids.ID]cachedAgg // archive: aggregates retrieved lately
	aggWait  map[ids.ID][]func(*glacier.Aggregate, error)
	recCache *identity.RecordCache // records whose CA signature was checked (recipients, senders)

	fetched    fetchedChunks            // content chunks fetched lately (fetched.go)
	carried    map[ids.Key]carriedChunk // carried chunks of filed messages, until stored
	carryQ     []carrySave              // carried chunks waiting for their batch
	carryArmed bool

	// busyAt is when mail traffic last touched this node (foreground), in Unix nanoseconds
	// of the node's clock: archive work waits for a lull (Config.ArchiveYield).
	busyAt atomic.Int64

	// OnFiled, if set, hears of every message filed into a local user's INBOX, once per
	// notification (the IMAP layer wakes IDLE here). It runs without locks held, and only
	// once the user's Entries(InboxLog) shows the filed entry (journaled: on the node's disk
	// and queued for its head write; otherwise: in the ring), so a reader woken by it, such
	// as a mailstore replay, always finds the message: no need to look again later. It
	// must not block.
	OnFiled func(f Filed)
}

type cachedRecord struct {
	sr  identity.SignedRecord
	at  time.Time
	err error
}

type observed struct {
	meta    store.Meta
	removed bool
}

// New makes the POST node. Install n.App() in the node's appmux under appmux.TagPost, and
// n as the PAST Config.Observer (before the PAST node is made: see Observer).
func New(cfg Config, st Store, topics Topics, ov Overlay) *Node {
	cfg.fill()
	return &Node{cfg: cfg, st: st, topics: topics, ov: ov, users: map[string]*User{},
		subs: map[string]bool{}, held: map[string]map[ids.Key]bool{}, records: map[string]cachedRecord{}, seen: map[string]seenAt{},
		where: map[string][]func(pastry.Handle, bool){}, aggCache: map[ids.ID]cachedAgg{}, carried: map[ids.Key]carriedChunk{},
		aggWait: map[ids.ID][]func(*glacier.Aggregate, error){}, recCache: identity.NewRecordCache(recordCacheMax)}
}

// Config returns the parameters with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Stats returns the counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	for _, m := range n.held {
		s.PendingHeld += len(m)
	}
	for _, u := range n.users {
		if a := u.arch; a != nil {
			s.ArchivePending += a.agg.Pending() + len(a.backlog) + a.keeping
			s.ArchiveInserting += len(a.queue) + a.roots
			if a.busy {
				s.ArchiveInserting++
			}
			s.ArchiveAggregates += a.agg.Aggregates()
			if !a.ready {
				s.ArchiveRecovering++
			}
		}
	}
	return s
}

// Stop makes the node inert: timers and callbacks that fire later do nothing. Users'
// archive state files are written first if they changed (and the archive is idle).
func (n *Node) Stop() {
	n.mu.Lock()
	var us []*User
	for _, u := range n.users {
		if u.arch != nil {
			us = append(us, u)
		}
	}
	n.mu.Unlock()
	for _, u := range us {
		u.saveArchive(true)
	}
	n.mu.Lock()
	n.stop = true
	for _, u := range us {
		if a := u.arch; a.held != nil { // archiveheld.go; holdLocked writes no more once stopped
			_ = a.held.Close()
			a.held = nil
		}
	}
	n.mu.Unlock()
}

func (n *Node) stopped() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stop
}

func (n *Node) now() time.Time { return n.cfg.Clock.Now() }

// foreground notes mail traffic on this node: archive work waits for a lull.
func (n *Node) foreground() { n.busyAt.Store(n.now().UnixNano()) }

func (n *Node) after(d time.Duration, f func()) {
	n.cfg.Clock.AfterFunc(d, func() {
		if !n.stopped() {
			f()
		}
	})
}

func (n *Node) presence(addr string) ids.Key {
	return scribe.NewTopic(n.cfg.Ring, "presence:"+addr)
}

func (n *Node) senderCheck() *SenderCheck {
	return &SenderCheck{Ring: n.cfg.Ring, CA: n.cfg.CA, Revoked: n.cfg.Revoked, Cache: n.recCache}
}

// PublishRecord stores a user's CA-signed record at RecordKey(ring, address) as a PAST
// TypeRecord object; replicas check the CA signature, the key and that the serial does not go
// back. The daemon calls it when a user's node starts (AddUser does it too).
func PublishRecord(st Store, sr identity.SignedRecord, lease time.Time, cb func(error)) {
	obj, err := past.NewRecord(sr, lease)
	if err != nil {
		cb(err)
		return
	}
	st.Insert(obj, func(r past.InsertResult) {
		if errors.Is(r.Err, past.ErrStale) && r.Acked == 0 {
			r.Err = nil // a newer record is already published
		}
		cb(r.Err)
	})
}

// Recipient lookup errors.
var (
	ErrUnknownRecipient = errors.New("post: recipient has no certified record in this ring")
	ErrRevokedRecipient = errors.New("post: recipient's record is revoked")
	ErrInconclusive     = errors.New("post: lookup inconclusive (not every replica answered, or the replica set changed lately); try again")
)

// provenAbsent reports whether a lookup's error proves the object absent: every replica
// answered that it holds none, and none had lately lost a node that may hold it
// (past.ErrUnsettled: a crash or a partition nearby).
func provenAbsent(err error) bool {
	return errors.Is(err, past.ErrNotFound) && !errors.Is(err, past.ErrTimeout) && !errors.Is(err, past.ErrUnsettled)
}

// LookupRecord finds and verifies the record of addr (CA signature, validity, revocation,
// address and ring), from a short cache or the ring.
func (n *Node) LookupRecord(addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	addr, err := identity.NormalizeAddress(addr)
	if err != nil {
		cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %v", ErrUnknownRecipient, err))
		return
	}
	verify := func(sr identity.SignedRecord) (*identity.Record, error) {
		rec, err := n.recCache.Verify(sr, n.cfg.CA, n.now(), n.cfg.Revoked)
		switch {
		case errors.Is(err, identity.ErrRevoked):
			return nil, fmt.Errorf("%w: %s: %v", ErrRevokedRecipient, addr, err)
		case err != nil:
			return nil, fmt.Errorf("%w: %s: %v", ErrUnknownRecipient, addr, err)
		case rec.Address != addr || rec.Ring != n.cfg.Ring:
			return nil, fmt.Errorf("%w: record at %s is for %s", ErrUnknownRecipient, addr, rec.Address)
		}
		return rec, nil
	}
	n.mu.Lock()
	c, ok := n.records[addr]
	n.mu.Unlock()
	if ok && n.now().Sub(c.at) < n.cfg.RecordCacheTTL && c.err == nil {
		rec, err := verify(c.sr) // again: it may have expired or been revoked since
		cb(rec, c.sr, err)
		return
	}
	n.lookupRecord(addr, recordTries, verify, cb)
}

// recordCacheMax bounds the records whose CA signature a node remembers as checked.
const recordCacheMax = 4096

// recordTries is how many times a record lookup that got no clear answer (replicas silent, a
// loaded ring) is made before the caller hears "inconclusive".
const recordTries = 3

func (n *Node) lookupRecord(addr string, tries int, verify func(identity.SignedRecord) (*identity.Record, error), cb func(*identity.Record, identity.SignedRecord, error)) {
	n.st.Lookup(identity.RecordKey(n.cfg.Ring, addr), func(obj past.Object, err error) {
		if err != nil {
			if errors.Is(err, past.ErrTimeout) && tries > 1 && !n.stopped() {
				n.lookupRecord(addr, tries-1, verify, cb)
				return
			}
			// Absence is proven only when every replica answered and none had lately lost a
			// node that may hold the record (a partition cutting off all its holders).
			if !provenAbsent(err) {
				cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: record of %s: %v", ErrInconclusive, addr, err))
				return
			}
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s", ErrUnknownRecipient, addr))
			return
		}
		sr, derr := identity.DecodeSignedRecord(obj.Payload)
		if derr != nil {
			cb(nil, identity.SignedRecord{}, fmt.Errorf("%w: %s: %v", ErrUnknownRecipient, addr, derr))
			return
		}
		rec, verr := verify(sr)
		if verr == nil {
			n.mu.Lock()
			n.records[addr] = cachedRecord{sr: sr, at: n.now()}
			n.mu.Unlock()
		}
		cb(rec, sr, verr)
	})
}

// join runs done once all n tasks reported; each task gets its index.
type join struct {
	mu   sync.Mutex
	left int
	done func()
}

func newJoin(n int, done func()) *join {
	j := &join{left: n, done: done}
	if n == 0 {
		done()
	}
	return j
}

func (j *join) one() {
	j.mu.Lock()
	j.left--
	last := j.left == 0
	j.mu.Unlock()
	if last {
		j.done()
	}
}
