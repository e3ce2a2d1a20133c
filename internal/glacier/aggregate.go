package glacier

// Aggregation: an owner's small PAST objects (content chunks, log entries, head backups) are
// packed into aggregates before Glacier erasure-codes them, because one object costs n
// fragments, n manifests and n sync entries whatever its size (ePOST: flush every 12 h,
// aggregates of at most 512,000 bytes or 50 objects, repacked when less than 80% is live).
//
// Aggregator is a state machine like Node: time is passed in, it does no I/O, and what it
// returns is what the caller must insert (an *Aggregate carries the manifest inputs: Name,
// Version, Expiry and the Blob). It is not safe for concurrent use.
//
// Chain. Aggregate seq s of an owner is the Glacier object named "agg/<s>", key
// ObjectKey(ring, owner, name); its blob links to aggregate s-1's key, so the owner needs to
// record only the newest key (Head) in its log and can rebuild the member index by walking back
// (ChainWalk). For the walk to reach every live member, no aggregate may expire before an older
// one: an aggregate's lease is the latest expiry of its live members or its predecessor's lease,
// whichever is later (the reference's "max of its members'", plus the predecessor so that the
// chain cannot break in the middle). A dead aggregate thus lingers as a header-only shell until
// everything older is gone.
//
// Repack. An aggregate whose live fraction (by member bytes) falls below RepackBelow is
// re-encoded with only its live members under the same name and key at the next version, so
// the chain links stay valid and Glacier holders replace the old version by version order. The
// old version is then replaceable. Refreshed expiries are kept in memory and written into the
// table of contents at the next repack; between repacks they survive a restart only if the
// caller re-applies them (Refresh), since a lease renewal reuses the blob. Likewise a Forget
// reaches the chain only when the aggregate is repacked; a restored index may still name a
// deleted member until then, and the owner's log is what knows it was deleted.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"epost/internal/ids"
	"epost/internal/wire"
)

// Aggregation defaults (ePOST's figures) and hard limits.
const (
	DefaultAggregateBytes   = 512_000
	DefaultAggregateObjects = 50
	DefaultAggregateAge     = 12 * time.Hour
	DefaultRepackBelow      = 0.8
	MaxAggregateMembers     = 1024 // bounds decoding; any configured count must not exceed it

	aggregateFormat = 1
	aggHeaderSize   = 1 + ids.Bytes + 8 + ids.Bytes + 2 // format, ring, seq, prev, count
	aggEntrySize    = ids.Bytes + 1 + 8 + 4 + 4         // id, flags, expiry, offset, length
	aggFlagContent  = 1                                 // member key id is the SHA-256 of its bytes
)

// Aggregation errors.
var (
	ErrBadAggregate   = errors.New("glacier: aggregate malformed")
	ErrMemberTooLarge = errors.New("glacier: object too large for an aggregate")
	ErrNotMember      = errors.New("glacier: no such member in the aggregate")
)

// AggregatorConfig sets an owner's aggregation.
type AggregatorConfig struct {
	Ring        ids.RingID
	Owner       ed25519.PublicKey // aggregate keys are bound to it (ObjectKey)
	MaxBytes    int               // encoded aggregate size bound; a larger member (up to MaxObjectSize) goes alone
	MaxObjects  int               // member count bound
	MaxAge      time.Duration     // a pending member waits at most this long
	RepackBelow float64           // repack when live bytes / member bytes < this
}

// DefaultAggregatorConfig is ePOST's aggregation for ring and owner.
func DefaultAggregatorConfig(ring ids.RingID, owner ed25519.PublicKey) AggregatorConfig {
	return AggregatorConfig{Ring: ring, Owner: owner, MaxBytes: DefaultAggregateBytes,
		MaxObjects: DefaultAggregateObjects, MaxAge: DefaultAggregateAge, RepackBelow: DefaultRepackBelow}
}

func (c AggregatorConfig) validate() error {
	switch {
	case len(c.Owner) != ed25519.PublicKeySize:
		return fmt.Errorf("glacier aggregator: owner key of %d bytes", len(c.Owner))
	case c.MaxBytes < aggHeaderSize+aggEntrySize+1 || c.MaxBytes > MaxObjectSize:
		return fmt.Errorf("glacier aggregator: MaxBytes %d not in %d..%d", c.MaxBytes, aggHeaderSize+aggEntrySize+1, MaxObjectSize)
	case c.MaxObjects < 1 || c.MaxObjects > MaxAggregateMembers:
		return fmt.Errorf("glacier aggregator: MaxObjects %d not in 1..%d", c.MaxObjects, MaxAggregateMembers)
	case c.MaxAge <= 0:
		return fmt.Errorf("glacier aggregator: MaxAge %v must be positive", c.MaxAge)
	case !(c.RepackBelow > 0 && c.RepackBelow <= 1):
		return fmt.Errorf("glacier aggregator: RepackBelow %v not in (0, 1]", c.RepackBelow)
	}
	return nil
}

// AggregateName is the Glacier object name of aggregate seq: "agg/<seq>".
func AggregateName(seq uint64) []byte { return strconv.AppendUint([]byte("agg/"), seq, 10) }

// AggregateKey is the object key of the owner's aggregate seq in ring.
func AggregateKey(ring ids.RingID, owner ed25519.PublicKey, seq uint64) ids.ID {
	return ObjectKey(ring, owner, AggregateName(seq))
}

// Member is an object handed to the Aggregator.
type Member struct {
	Key         ids.Key
	Data        []byte
	Expiry      time.Time
	ContentHash bool // Key.ID == ids.Hash(Data); checked on Add and on every decode
}

// TOCEntry is one member in an aggregate's table of contents; its ring is the aggregate's.
type TOCEntry struct {
	ID          ids.ID
	ContentHash bool
	Expiry      int64 // unix nanoseconds, as of packing
	Offset      uint32
	Length      uint32
}

// Aggregate is one version of an aggregate: what the blob holds (Ring, Seq, Prev, TOC) and,
// when it comes from an Aggregator, the manifest inputs (Key, Name, Version, Expiry).
//
// Encoding, format 1 (big-endian, exactly 75 + 49·n + data bytes):
//
//	u8  format (1)
//	32  ring id
//	u64 seq (≥ 1)
//	32  key of aggregate seq-1 (zero for the first)
//	u16 n (0..MaxAggregateMembers)
//	n × { 32 member id, u8 flags (1: content hash), i64 expiry, u32 offset, u32 length }
//	the members' bytes, in TOC order, without gaps
type Aggregate struct {
	Ring ids.RingID
	Seq  uint64
	Prev ids.ID
	TOC  []TOCEntry
	Blob []byte

	Key     ids.ID
	Name    []byte
	Version uint64
	Expiry  time.Time
}

// Member returns a copy of the bytes of the member with key k.
func (g *Aggregate) Member(k ids.Key) ([]byte, error) {
	if k.Ring == g.Ring {
		data := g.Blob[len(g.Blob)-g.dataLen():]
		for _, e := range g.TOC {
			if e.ID == k.ID {
				return append([]byte(nil), data[e.Offset:e.Offset+e.Length]...), nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %s in aggregate %d", ErrNotMember, k, g.Seq)
}

func (g *Aggregate) dataLen() int {
	n := 0
	for _, e := range g.TOC {
		n += int(e.Length)
	}
	return n
}

// encodeAggregate builds the blob and TOC of members.
func encodeAggregate(ring ids.RingID, seq uint64, prev ids.ID, members []Member) ([]byte, []TOCEntry) {
	size := aggHeaderSize + aggEntrySize*len(members)
	for _, m := range members {
		size += len(m.Data)
	}
	w := wire.Writer{B: make([]byte, 0, size)}
	w.U8(aggregateFormat)
	w.ID(ring)
	w.U64(seq)
	w.ID(prev)
	w.U16(uint16(len(members)))
	toc := make([]TOCEntry, len(members))
	off := uint32(0)
	for i, m := range members {
		toc[i] = TOCEntry{ID: m.Key.ID, ContentHash: m.ContentHash, Expiry: m.Expiry.UnixNano(), Offset: off, Length: uint32(len(m.Data))}
		off += uint32(len(m.Data))
		w.ID(m.Key.ID)
		flags := uint8(0)
		if m.ContentHash {
			flags = aggFlagContent
		}
		w.U8(flags)
		w.I64(toc[i].Expiry)
		w.U32(toc[i].Offset)
		w.U32(toc[i].Length)
	}
	for _, m := range members {
		w.B = append(w.B, m.Data...)
	}
	return w.B, toc
}

// DecodeAggregate parses and checks a blob: the TOC must describe the data exactly, member ids
// must be distinct and content-hash members must hash to their ids. The result shares blob's
// memory; Key, Name, Version and Expiry are left zero (they live in the manifest).
func DecodeAggregate(blob []byte) (*Aggregate, error) {
	bad := func(format string, args ...any) (*Aggregate, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadAggregate, fmt.Sprintf(format, args...))
	}
	if len(blob) > MaxObjectSize {
		return bad("%d bytes exceed %d", len(blob), MaxObjectSize)
	}
	r := wire.NewReader(blob)
	if f := r.U8(); r.Err() == nil && f != aggregateFormat {
		return bad("format %d", f)
	}
	g := &Aggregate{Ring: r.ID(), Seq: r.U64(), Prev: r.ID()}
	n := int(r.U16())
	if err := r.Err(); err != nil {
		return bad("header: %v", err)
	}
	if g.Seq == 0 {
		return bad("seq 0")
	}
	if n > MaxAggregateMembers || n*aggEntrySize > len(r.B) {
		return bad("%d members in %d bytes", n, len(r.B))
	}
	g.TOC = make([]TOCEntry, n)
	seen := make(map[ids.ID]struct{}, n)
	off := uint64(0)
	for i := range g.TOC {
		e := TOCEntry{ID: r.ID()}
		flags := r.U8()
		e.Expiry, e.Offset, e.Length = r.I64(), r.U32(), r.U32()
		if flags&^aggFlagContent != 0 {
			return bad("member %d flags %#x", i, flags)
		}
		e.ContentHash = flags == aggFlagContent
		if uint64(e.Offset) != off {
			return bad("member %d at offset %d, expected %d", i, e.Offset, off)
		}
		if _, dup := seen[e.ID]; dup {
			return bad("member %s twice", e.ID.Short())
		}
		seen[e.ID] = struct{}{}
		off += uint64(e.Length)
		g.TOC[i] = e
	}
	if err := r.Err(); err != nil {
		return bad("table of contents: %v", err)
	}
	if off != uint64(len(r.B)) {
		return bad("members take %d bytes, %d follow the table", off, len(r.B))
	}
	data := r.B
	for _, e := range g.TOC {
		if e.ContentHash && ids.Hash(data[e.Offset:e.Offset+e.Length]) != e.ID {
			return bad("member %s does not hash to its key", e.ID.Short())
		}
	}
	g.Blob = blob
	return g, nil
}

// Repack is the result of repacking one aggregate: Old is the version that New (same key and
// name, next version, live members only) replaces once inserted.
type Repack struct {
	Old, New *Aggregate
}

// Aggregator packs an owner's small objects into a chain of aggregates and tracks which
// members are still live. See the comment at the top of aggregate.go.
type Aggregator struct {
	cfg          AggregatorConfig
	pending      []Member
	pendingData  int
	pendingSince time.Time
	nextSeq      uint64
	aggs         []*aggState // ascending seq; aggs[i].agg.Prev is aggs[i-1]'s key
	byKey        map[ids.ID]*aggState
	index        map[ids.Key]ids.ID // member key → aggregate key
}

type aggState struct {
	agg    *Aggregate       // current version
	expiry map[ids.ID]int64 // members' expiries, raised by Refresh
	leased int64            // Expiry of the current manifest version
}

// NewAggregator returns an empty Aggregator; Restore fills one from a ChainWalk.
func NewAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Aggregator{cfg: cfg, nextSeq: 1, byKey: make(map[ids.ID]*aggState), index: make(map[ids.Key]ids.ID)}, nil
}

// Head is the key of the newest aggregate (zero if none): what the owner records in its log.
func (a *Aggregator) Head() ids.ID {
	if len(a.aggs) == 0 {
		return ids.Zero
	}
	return a.aggs[len(a.aggs)-1].agg.Key
}

// Pending is the number of members waiting for the next flush.
func (a *Aggregator) Pending() int { return len(a.pending) }

// Reserve makes the next aggregate's seq at least next: after a walk that could not reach the
// newest aggregate, a new one must not reuse a seq (and key) the ring may still hold.
func (a *Aggregator) Reserve(next uint64) { a.nextSeq = max(a.nextSeq, next) }

// NextSeq is the seq the next aggregate will take.
func (a *Aggregator) NextSeq() uint64 { return a.nextSeq }

// Holds reports whether member k is pending or indexed (aggregated and not forgotten).
func (a *Aggregator) Holds(k ids.Key) bool {
	if _, ok := a.index[k]; ok {
		return true
	}
	return slices.ContainsFunc(a.pending, func(m Member) bool { return m.Key == k })
}

// Held returns member k while the aggregator holds its bytes in memory: pending, or in an
// aggregate whose blob it has (not yet stored in Glacier, or fetched back for a repack). An
// owner whose PAST copies of k are all lost before k's aggregate is stored gets k back from
// here; later it comes from Glacier.
func (a *Aggregator) Held(k ids.Key) (Member, bool) {
	for _, m := range a.pending {
		if m.Key == k {
			m.Data = slices.Clone(m.Data)
			return m, true
		}
	}
	g, ok := a.index[k]
	if !ok {
		return Member{}, false
	}
	s := a.byKey[g]
	if s == nil || s.agg.Blob == nil {
		return Member{}, false
	}
	i := slices.IndexFunc(s.agg.TOC, func(e TOCEntry) bool { return e.ID == k.ID })
	data, err := s.agg.Member(k)
	if i < 0 || err != nil {
		return Member{}, false
	}
	return Member{Key: k, Data: data, Expiry: time.Unix(0, s.expiry[k.ID]), ContentHash: s.agg.TOC[i].ContentHash}, true
}

// Aggregates is the number of aggregates in the chain (not expired).
func (a *Aggregator) Aggregates() int { return len(a.aggs) }

// Locate returns the key of the aggregate holding member k.
func (a *Aggregator) Locate(k ids.Key) (ids.ID, bool) {
	g, ok := a.index[k]
	return g, ok
}

// Aggregate returns the current version of the aggregate with key g.
func (a *Aggregator) Aggregate(g ids.ID) (*Aggregate, bool) {
	s, ok := a.byKey[g]
	if !ok {
		return nil, false
	}
	return s.agg, true
}

func (a *Aggregator) pendingSize() int {
	return aggHeaderSize + aggEntrySize*len(a.pending) + a.pendingData
}

// Add queues m and returns the aggregates the bounds flushed (none, one, or two when the
// previous batch had to close first and m filled the next). A content-hash object already
// aggregated is only refreshed; a re-added key replaces its pending copy, or moves to the new
// batch (its old copy counts as dead).
func (a *Aggregator) Add(now time.Time, m Member) ([]*Aggregate, error) {
	switch {
	case m.Key.Ring != a.cfg.Ring:
		return nil, fmt.Errorf("glacier aggregate add %s: ring is not %s", m.Key, a.cfg.Ring.Short())
	case !m.Expiry.After(now):
		return nil, fmt.Errorf("glacier aggregate add %s: %w", m.Key, ErrExpired)
	case m.ContentHash && ids.Hash(m.Data) != m.Key.ID:
		return nil, fmt.Errorf("glacier aggregate add %s: %w: bytes do not hash to the key", m.Key, ErrBadAggregate)
	case aggHeaderSize+aggEntrySize+len(m.Data) > MaxObjectSize:
		return nil, fmt.Errorf("glacier aggregate add %s: %w: %d bytes, at most %d", m.Key, ErrMemberTooLarge, len(m.Data), MaxObjectSize-aggHeaderSize-aggEntrySize)
	}
	if m.ContentHash {
		if _, ok := a.index[m.Key]; ok {
			a.Refresh(m.Key, m.Expiry)
			return nil, nil
		}
	}
	a.dropPending(m.Key)
	var out []*Aggregate
	if len(a.pending) > 0 && a.pendingSize()+aggEntrySize+len(m.Data) > a.cfg.MaxBytes {
		out = append(out, a.flush(now))
	}
	if len(a.pending) == 0 {
		a.pendingSince = now
	}
	m.Data = append([]byte(nil), m.Data...)
	a.pending = append(a.pending, m)
	a.pendingData += len(m.Data)
	if len(a.pending) >= a.cfg.MaxObjects || a.pendingSize()+aggEntrySize+1 > a.cfg.MaxBytes {
		out = append(out, a.flush(now))
	}
	return out, nil
}

func (a *Aggregator) dropPending(k ids.Key) bool {
	for i, p := range a.pending {
		if p.Key == k {
			a.pendingData -= len(p.Data)
			a.pending = append(a.pending[:i], a.pending[i+1:]...)
			return true
		}
	}
	return false
}

// Tick flushes the pending batch once its oldest member has waited MaxAge.
func (a *Aggregator) Tick(now time.Time) *Aggregate {
	if len(a.pending) == 0 || now.Sub(a.pendingSince) < a.cfg.MaxAge {
		return nil
	}
	return a.flush(now)
}

// Flush closes the pending batch now (nil if it is empty), e.g. before a planned shutdown.
func (a *Aggregator) Flush(now time.Time) *Aggregate {
	if len(a.pending) == 0 {
		return nil
	}
	return a.flush(now)
}

func (a *Aggregator) flush(now time.Time) *Aggregate {
	seq := a.nextSeq
	a.nextSeq++
	prev, prevLease := ids.Zero, int64(0)
	if n := len(a.aggs); n > 0 {
		prev, prevLease = a.aggs[n-1].agg.Key, a.aggs[n-1].leased
	}
	blob, toc := encodeAggregate(a.cfg.Ring, seq, prev, a.pending)
	g := &Aggregate{Ring: a.cfg.Ring, Seq: seq, Prev: prev, TOC: toc, Blob: blob,
		Key: AggregateKey(a.cfg.Ring, a.cfg.Owner, seq), Name: AggregateName(seq), Version: 1}
	s := &aggState{agg: g, expiry: make(map[ids.ID]int64, len(toc)), leased: prevLease}
	for _, e := range toc {
		s.expiry[e.ID] = e.Expiry
		s.leased = max(s.leased, e.Expiry)
		a.index[ids.Key{Ring: a.cfg.Ring, ID: e.ID}] = g.Key
	}
	g.Expiry = time.Unix(0, s.leased)
	a.aggs = append(a.aggs, s)
	a.byKey[g.Key] = s
	a.pending, a.pendingData = nil, 0
	return g
}

// Refresh raises member k's expiry (never lowers it); false if k is unknown.
func (a *Aggregator) Refresh(k ids.Key, expiry time.Time) bool {
	for i := range a.pending {
		if a.pending[i].Key == k {
			if expiry.After(a.pending[i].Expiry) {
				a.pending[i].Expiry = expiry
			}
			return true
		}
	}
	g, ok := a.index[k]
	if !ok {
		return false
	}
	s := a.byKey[g]
	s.expiry[k.ID] = max(s.expiry[k.ID], expiry.UnixNano())
	return true
}

// Forget marks member k dead now (deleted by its owner), pending or aggregated; false if k is
// unknown.
func (a *Aggregator) Forget(k ids.Key) bool {
	pending := a.dropPending(k)
	_, indexed := a.index[k]
	delete(a.index, k)
	return pending || indexed
}

// live reports whether member id of s is live at now: not expired and still indexed to s.
func (a *Aggregator) live(s *aggState, id ids.ID, now int64) bool {
	return s.expiry[id] > now && a.index[ids.Key{Ring: a.cfg.Ring, ID: id}] == s.agg.Key
}

// LiveFraction is the fraction of aggregate g's member bytes that is live at now (1 for an
// aggregate without members, which has nothing to reclaim); false if g is unknown.
func (a *Aggregator) LiveFraction(g ids.ID, now time.Time) (float64, bool) {
	s, ok := a.byKey[g]
	if !ok {
		return 0, false
	}
	live, total := a.liveBytes(s, now.UnixNano())
	if total == 0 {
		return 1, true
	}
	return float64(live) / float64(total), true
}

func (a *Aggregator) liveBytes(s *aggState, now int64) (live, total int) {
	for _, e := range s.agg.TOC {
		total += int(e.Length)
		if a.live(s, e.ID, now) {
			live += int(e.Length)
		}
	}
	return live, total
}

// wantLeases is the lease each aggregate needs at now: the latest expiry of its live members
// or its predecessor's lease, whichever is later.
func (a *Aggregator) wantLeases(now int64) []int64 {
	want := make([]int64, len(a.aggs))
	prev := int64(0)
	for i, s := range a.aggs {
		w := prev
		for _, e := range s.agg.TOC {
			if a.live(s, e.ID, now) {
				w = max(w, s.expiry[e.ID])
			}
		}
		want[i], prev = w, w
	}
	return want
}

// Renewals returns a new version (same blob, longer Expiry) of every aggregate whose lease no
// longer covers its live members or its predecessor, and records it as current: the caller
// must insert each, in order, before relying on the longer lease.
func (a *Aggregator) Renewals(now time.Time) []*Aggregate {
	return a.RenewalsDue(now, time.Duration(math.MaxInt64))
}

// RenewalsDue is Renewals restricted to aggregates whose lease ends within the given time of
// now: members' leases are raised daily, and renewing every aggregate daily would cost one
// manifest per fragment per aggregate per day, so an owner renews when a lease is, say, half
// run out. The Blob of a returned aggregate is nil if it was released: a renewal needs only a
// new manifest version (RenewManifest), not the members.
func (a *Aggregator) RenewalsDue(now time.Time, within time.Duration) []*Aggregate {
	horizon := now.Add(within).UnixNano()
	if within > time.Duration(math.MaxInt64-now.UnixNano()) {
		horizon = math.MaxInt64
	}
	var out []*Aggregate
	for i, w := range a.wantLeases(now.UnixNano()) {
		s := a.aggs[i]
		if w <= s.leased || s.leased >= horizon {
			continue
		}
		g := *s.agg
		g.Version = nextVersion(g.Version, now)
		g.Expiry = time.Unix(0, w)
		s.agg, s.leased = &g, w
		out = append(out, &g)
	}
	return out
}

// Repack re-encodes every aggregate whose live fraction is below RepackBelow with only its
// live members (expired and forgotten ones are dropped, and leave the index) and records the
// new versions as current; the caller must insert each New, after which Old is replaceable.
// A repacked version keeps its lease; Renewals extends leases (when both return the same
// aggregate, inserting the later, higher version suffices).
//
// Aggregates whose blob was released are skipped: NeedBlobs lists them, and SetBlob gives
// them back (retrieved from Glacier) for the next Repack.
func (a *Aggregator) Repack(now time.Time) []Repack {
	t := now.UnixNano()
	var out []Repack
	for _, s := range a.aggs {
		if !a.repackable(s, t) || s.agg.Blob == nil {
			continue
		}
		old := s.agg
		data := old.Blob[len(old.Blob)-old.dataLen():]
		var members []Member
		for _, e := range old.TOC {
			if a.live(s, e.ID, t) {
				members = append(members, Member{Key: ids.Key{Ring: a.cfg.Ring, ID: e.ID}, Data: data[e.Offset : e.Offset+e.Length],
					Expiry: time.Unix(0, s.expiry[e.ID]), ContentHash: e.ContentHash})
			} else {
				delete(s.expiry, e.ID)
				if k := (ids.Key{Ring: a.cfg.Ring, ID: e.ID}); a.index[k] == old.Key {
					delete(a.index, k)
				}
			}
		}
		blob, toc := encodeAggregate(old.Ring, old.Seq, old.Prev, members)
		g := &Aggregate{Ring: old.Ring, Seq: old.Seq, Prev: old.Prev, TOC: toc, Blob: blob,
			Key: old.Key, Name: old.Name, Version: nextVersion(old.Version, now), Expiry: old.Expiry}
		s.agg = g
		out = append(out, Repack{Old: old, New: g})
	}
	return out
}

// nextVersion is the version after v at now: v+1, or the clock in nanoseconds if that is
// higher, so that an owner that restarts from an older record of its versions (its state file
// lags behind a renewal it made) still writes a version above the one Glacier holds.
func nextVersion(v uint64, now time.Time) uint64 {
	return max(v+1, uint64(max(now.UnixNano(), 0)))
}

func (a *Aggregator) repackable(s *aggState, t int64) bool {
	live, total := a.liveBytes(s, t)
	return total > 0 && float64(live) < a.cfg.RepackBelow*float64(total)
}

// NeedBlobs lists the aggregates Repack would repack at now but whose blob was released.
func (a *Aggregator) NeedBlobs(now time.Time) []ids.ID {
	t := now.UnixNano()
	var out []ids.ID
	for _, s := range a.aggs {
		if s.agg.Blob == nil && a.repackable(s, t) {
			out = append(out, s.agg.Key)
		}
	}
	return out
}

// Release drops aggregate g's blob from memory once Glacier holds it (the owner keeps only
// tables of contents; Repack and Member need the blob back through SetBlob).
func (a *Aggregator) Release(g ids.ID) {
	if s, ok := a.byKey[g]; ok {
		s.agg.Blob = nil
	}
}

// SetBlob gives aggregate g its blob back (retrieved from Glacier). The blob must be the one
// its table of contents describes.
func (a *Aggregator) SetBlob(g ids.ID, blob []byte) error {
	s, ok := a.byKey[g]
	if !ok {
		return fmt.Errorf("glacier aggregator: no aggregate %s", g.Short())
	}
	d, err := DecodeAggregate(blob)
	if err != nil {
		return err
	}
	if d.Ring != s.agg.Ring || d.Seq != s.agg.Seq || d.Prev != s.agg.Prev || !slices.Equal(d.TOC, s.agg.TOC) {
		return fmt.Errorf("glacier aggregator: %w: blob is not aggregate %d's current version", ErrBadAggregate, s.agg.Seq)
	}
	s.agg.Blob = blob
	return nil
}

// Expire forgets the oldest aggregates whose lease has run out at now (Glacier holders drop
// their fragments) and the members indexed to them, and returns their keys. Leases never
// decrease along the chain, so these are always a prefix of it and the rest stays walkable.
func (a *Aggregator) Expire(now time.Time) []ids.ID {
	t := now.UnixNano()
	var gone []ids.ID
	for len(a.aggs) > 0 && a.aggs[0].leased <= t {
		s := a.aggs[0]
		for _, e := range s.agg.TOC {
			if k := (ids.Key{Ring: a.cfg.Ring, ID: e.ID}); a.index[k] == s.agg.Key {
				delete(a.index, k)
			}
		}
		delete(a.byKey, s.agg.Key)
		a.aggs[0] = nil
		a.aggs = a.aggs[1:]
		gone = append(gone, s.agg.Key)
	}
	return gone
}

// ChainWalk rebuilds an owner's aggregates by walking back from the newest: Want names the
// next aggregate to retrieve from Glacier, Feed hands over its blob with its manifest's version
// and expiry. Each blob must be the one named by the link that led to it, with a lower seq.
type ChainWalk struct {
	ring  ids.RingID
	owner ed25519.PublicKey
	want  ids.ID
	found []*Aggregate // newest first
}

// Walk starts a walk back from head (the key recorded by the owner).
func (a *Aggregator) Walk(head ids.ID) *ChainWalk {
	return &ChainWalk{ring: a.cfg.Ring, owner: a.cfg.Owner, want: head}
}

// Want is the key of the aggregate to fetch next; false once the first aggregate is in.
func (w *ChainWalk) Want() (ids.ID, bool) { return w.want, !w.want.IsZero() }

// Oldest is the seq of the last aggregate fed (0: none yet).
func (w *ChainWalk) Oldest() uint64 {
	if len(w.found) == 0 {
		return 0
	}
	return w.found[len(w.found)-1].Seq
}

// Feed takes the blob of the aggregate Want named and advances to its predecessor.
func (w *ChainWalk) Feed(blob []byte, version uint64, expiry time.Time) error {
	if w.want.IsZero() {
		return errors.New("glacier chain walk: fed after the walk ended")
	}
	g, err := DecodeAggregate(blob)
	if err != nil {
		return fmt.Errorf("glacier chain walk %s: %w", w.want.Short(), err)
	}
	key := AggregateKey(w.ring, w.owner, g.Seq)
	if g.Ring != w.ring || key != w.want {
		return fmt.Errorf("glacier chain walk %s: %w: blob is aggregate %d of another ring or owner", w.want.Short(), ErrBadAggregate, g.Seq)
	}
	if n := len(w.found); n > 0 && g.Seq >= w.found[n-1].Seq {
		return fmt.Errorf("glacier chain walk %s: %w: seq %d after %d", w.want.Short(), ErrBadAggregate, g.Seq, w.found[n-1].Seq)
	}
	g.Key, g.Name, g.Version, g.Expiry = key, AggregateName(g.Seq), version, expiry
	w.found = append(w.found, g)
	w.want = g.Prev
	return nil
}

// Restore loads the aggregates of a walk into an Aggregator that has none yet. It may be called
// on a walk that stopped early (an aggregate lost), keeping what was found.
func (a *Aggregator) Restore(w *ChainWalk) error {
	if len(a.aggs) != 0 || len(a.pending) != 0 {
		return errors.New("glacier aggregator: restore into a used aggregator")
	}
	for i := len(w.found) - 1; i >= 0; i-- {
		g := w.found[i]
		s := &aggState{agg: g, expiry: make(map[ids.ID]int64, len(g.TOC)), leased: g.Expiry.UnixNano()}
		for _, e := range g.TOC {
			s.expiry[e.ID] = e.Expiry
			a.index[ids.Key{Ring: a.cfg.Ring, ID: e.ID}] = g.Key
		}
		a.aggs = append(a.aggs, s)
		a.byKey[g.Key] = s
		a.nextSeq = g.Seq + 1
	}
	return nil
}

// Extend loads the aggregates of a walk that are newer than the Aggregator's (a state file
// that lagged behind Glacier): the walk starts at the newest aggregate and must have reached
// the one right after the Aggregator's newest (seq NextSeq). Pending members are kept.
func (a *Aggregator) Extend(w *ChainWalk) error {
	if len(w.found) == 0 {
		return nil
	}
	if oldest := w.found[len(w.found)-1]; oldest.Seq != a.nextSeq {
		return fmt.Errorf("glacier aggregator: extend from aggregate %d, want %d", oldest.Seq, a.nextSeq)
	}
	for i := len(w.found) - 1; i >= 0; i-- {
		g := w.found[i]
		s := &aggState{agg: g, expiry: make(map[ids.ID]int64, len(g.TOC)), leased: g.Expiry.UnixNano()}
		for _, e := range g.TOC {
			s.expiry[e.ID] = e.Expiry
			a.index[ids.Key{Ring: a.cfg.Ring, ID: e.ID}] = g.Key // a copy in an older one is dead now
		}
		a.aggs = append(a.aggs, s)
		a.byKey[g.Key] = s
		a.nextSeq = g.Seq + 1
	}
	return nil
}

// aggStateFormat is the format of State's encoding.
const aggStateFormat = 1

// State encodes what the Aggregator knows of the chain, without the members' bytes: every
// aggregate's header, version, lease and table of contents, each member's raised expiry and
// whether the index points at it, and the next seq. Pending members are not included. An
// owner keeps it on disk, so that a restart does not have to read the whole chain back from
// Glacier (LoadState); Glacier stays the truth (see Walk) when the disk is lost.
//
// Encoding, format 1 (big-endian): u8 format, 32 ring, u64 next seq, uvarint count, then per
// aggregate: u64 seq, 32 prev, u64 version, i64 expiry, i64 lease, u16 n, and n × { 32 id,
// u8 flags, i64 packed expiry, u32 offset, u32 length, i64 expiry now, u8 indexed here }.
func (a *Aggregator) State() []byte {
	n := 0
	for _, s := range a.aggs {
		n += 66 + len(s.agg.TOC)*(aggEntrySize+9)
	}
	w := wire.Writer{B: make([]byte, 0, 45+n)}
	w.U8(aggStateFormat)
	w.ID(a.cfg.Ring)
	w.U64(a.nextSeq)
	w.Uvarint(uint64(len(a.aggs)))
	for _, s := range a.aggs {
		g := s.agg
		w.U64(g.Seq)
		w.ID(g.Prev)
		w.U64(g.Version)
		w.I64(g.Expiry.UnixNano())
		w.I64(s.leased)
		w.U16(uint16(len(g.TOC)))
		for _, e := range g.TOC {
			w.ID(e.ID)
			flags := uint8(0)
			if e.ContentHash {
				flags = aggFlagContent
			}
			w.U8(flags)
			w.I64(e.Expiry)
			w.U32(e.Offset)
			w.U32(e.Length)
			w.I64(s.expiry[e.ID])
			here := uint8(0)
			if a.index[ids.Key{Ring: a.cfg.Ring, ID: e.ID}] == g.Key {
				here = 1
			}
			w.U8(here)
		}
	}
	return w.B
}

// LoadState fills an Aggregator that has nothing yet from State's encoding. The aggregates
// come back without their blobs (see Release).
func (a *Aggregator) LoadState(b []byte) error {
	if len(a.aggs) != 0 || len(a.pending) != 0 {
		return errors.New("glacier aggregator: load state into a used aggregator")
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: state: %s", ErrBadAggregate, fmt.Sprintf(format, args...))
	}
	r := wire.NewReader(b)
	if f := r.U8(); r.Err() == nil && f != aggStateFormat {
		return bad("format %d", f)
	}
	ring, next := r.ID(), r.U64()
	count := r.Count(1<<24, 66, "aggregates")
	if err := r.Err(); err != nil {
		return bad("%v", err)
	}
	if ring != a.cfg.Ring {
		return bad("ring %s, not %s", ring.Short(), a.cfg.Ring.Short())
	}
	var aggs []*aggState
	index := map[ids.Key]ids.ID{}
	lastSeq := uint64(0)
	for range count {
		g := &Aggregate{Ring: ring, Seq: r.U64(), Prev: r.ID(), Version: r.U64()}
		g.Expiry = time.Unix(0, r.I64())
		s := &aggState{agg: g, leased: r.I64()}
		n := int(r.U16())
		if r.Err() == nil && (n > MaxAggregateMembers || g.Seq <= lastSeq || g.Seq >= next) {
			return bad("aggregate seq %d (after %d, next %d) with %d members", g.Seq, lastSeq, next, n)
		}
		lastSeq = g.Seq
		g.Key, g.Name = AggregateKey(ring, a.cfg.Owner, g.Seq), AggregateName(g.Seq)
		g.TOC = make([]TOCEntry, 0, n)
		s.expiry = make(map[ids.ID]int64, n)
		off := uint32(0)
		for range n {
			e := TOCEntry{ID: r.ID()}
			flags := r.U8()
			e.ContentHash = flags == aggFlagContent
			e.Expiry, e.Offset, e.Length = r.I64(), r.U32(), r.U32()
			exp, here := r.I64(), r.U8()
			if r.Err() != nil {
				break
			}
			if flags&^aggFlagContent != 0 || e.Offset != off || here > 1 {
				return bad("aggregate %d member %s", g.Seq, e.ID.Short())
			}
			off += e.Length
			g.TOC = append(g.TOC, e)
			s.expiry[e.ID] = exp
			if here == 1 {
				index[ids.Key{Ring: ring, ID: e.ID}] = g.Key
			}
		}
		if err := r.Err(); err != nil {
			return bad("aggregate %d: %v", g.Seq, err)
		}
		aggs = append(aggs, s)
	}
	if err := r.Done(); err != nil {
		return bad("%v", err)
	}
	a.nextSeq, a.aggs, a.index = next, aggs, index
	for _, s := range aggs {
		a.byKey[s.agg.Key] = s
	}
	return nil
}
