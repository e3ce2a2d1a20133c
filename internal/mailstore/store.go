package mailstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/mailbox"
	"epost/internal/post"
	"epost/internal/transport"
)

// Config is what Open needs.
type Config struct {
	Address  string   // the user's normalized address (names the cache)
	Logs     Logs     // the user's POST session (*post.User), already added or resumed
	Contents Contents // the node's content store (*post.Node)
	Clock    transport.Clock
	// Drive, if set, is called in a loop while an operation waits for the ring (simnet:
	// run the virtual network a little). Nil on a real network.
	Drive func()
	// Rand names new folder logs; nil means crypto/rand.
	Rand io.Reader
	// CacheFile is the local encrypted cache of the folder state; "" disables it.
	CacheFile string
	// CacheKey encrypts the cache; derive it with CacheKey(keys).
	CacheKey [32]byte
	// Timeout bounds each operation's wait for the ring; 0 means 2 minutes.
	Timeout time.Duration
	// ContentCacheBytes bounds the in-memory cache of message bytes; 0 means 64 MiB.
	ContentCacheBytes int64
	// CacheDelay is how long after a change the cache file is written; 0 means 5 s.
	CacheDelay time.Duration
	// CacheEvery is the shortest time between two writes of the cache file (it holds every
	// folder's state, so it grows with the mailbox); 0 means 10 minutes. Close writes it too.
	CacheEvery time.Duration
	Log        *slog.Logger
}

// Store is one user's mail store on POST. It implements mailbox.Store.
//
// Locking: wmu is held by writers while they wait for the ring, so that each writer sees
// every write that completed before it started applied. Writes whose outcome does not depend
// on the state they start from share it (APPEND, COPY, STORE without UNCHANGEDSINCE,
// EXPUNGE: their log entries are ordered by the folder's log, UIDs are given by the entry's
// place in it, and POST batches concurrent entries into one head update); those that decide
// on that state hold it alone (STORE UNCHANGEDSINCE, MOVE, which must not copy a message
// twice, and the folder list's changes). mu guards the replayed state; it is held only for short sections and never while
// calling POST or waiting, because POST's callbacks (filings, fetches) take it, and under
// simnet they run on the goroutine that waits. Lock order: wmu, then mu, then wl.
type Store struct {
	cfg Config
	w   waiter

	wmu sync.RWMutex

	mu      sync.RWMutex
	root    *rootState
	folders map[string]*folder // by log name; deleted ones removed
	closed  bool
	// bumping: a folder holds a new UIDVALIDITY not yet written to its log (writeBumps).
	bumping atomic.Bool

	wl       sync.Mutex
	watchers map[*folderState]map[chan struct{}]struct{}

	contents *contentCache

	cmu        sync.Mutex
	cacheTimer transport.Timer
	cacheAt    time.Time // when the cache file was last written
	dirty      bool
}

var _ mailbox.Store = (*Store)(nil)

// folder is a Folder value: it stays valid across renames (the log never changes).
type folder struct {
	s *Store
	f *folderState
}

var _ mailbox.Folder = (*folder)(nil)

// Open loads the user's folders: from the local cache when it matches the logs, else by
// replaying them, then applies whatever the logs hold beyond the cache. It opens every folder
// log, and writes INBOX's header (its UIDVALIDITY) the first time.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.ContentCacheBytes <= 0 {
		cfg.ContentCacheBytes = 64 << 20
	}
	if cfg.CacheDelay <= 0 {
		cfg.CacheDelay = 5 * time.Second
	}
	if cfg.CacheEvery <= 0 {
		cfg.CacheEvery = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, w: waiter{clock: cfg.Clock, drive: cfg.Drive, timeout: cfg.Timeout},
		root: newRootState(), folders: map[string]*folder{}, watchers: map[*folderState]map[chan struct{}]struct{}{},
		contents: newContentCache(cfg.ContentCacheBytes)}
	cached := s.loadCache()

	if err := s.w.openLogs(ctx, cfg.Logs, []string{post.RootLog, post.InboxLog}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if cached != nil && s.matches(post.RootLog, cached.root.Applied, cached.root.LastHash) {
		s.root = cached.root
	} else if cached != nil {
		cfg.Log.Info("mailstore: local cache does not match the root log; replaying", "user", cfg.Address)
		cached = nil
	}
	s.syncRootLocked()
	var logs []string
	for log := range s.folders {
		logs = append(logs, log)
	}
	slices.Sort(logs) // the same order every time: the simulator replays a seed exactly
	s.mu.Unlock()
	if err := s.w.openLogs(ctx, cfg.Logs, logs); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for log, fo := range s.folders {
		var stale *folderState // a cached state the log no longer extends
		if cached != nil {
			if cf := cached.folders[log]; cf != nil && s.matches(log, cf.Applied, cf.LastHash) {
				cf.Name, cf.Use = fo.f.Name, fo.f.Use
				fo.f = cf
			} else if cf != nil && cf.Applied > 0 {
				stale = cf
			}
		}
		s.syncLocked(fo.f)
		if stale != nil && fo.f.UIDValidity != 0 && fo.f.UIDValidity <= max(stale.UIDValidity, stale.bump) {
			// The log was rebuilt while the node was down: UIDs it gave out before may
			// name other messages now, as syncLocked finds while running.
			s.cfg.Log.Warn("mailstore: a folder log changed below what the cache had applied; giving it a new UIDVALIDITY", "user", cfg.Address, "folder", fo.f.Name)
			s.bumpLocked(fo.f, max(stale.UIDValidity, stale.bump))
		}
	}
	inbox := s.folders[post.InboxLog].f
	s.mu.Unlock()

	if inbox.UIDValidity == 0 {
		s.wmu.Lock()
		_, err := s.w.appendAll(ctx, cfg.Logs, post.InboxLog, [][]byte{(&entry{Kind: kindHeader, UIDValidity: s.nextUIDValidity()}).encode()})
		s.mu.Lock()
		s.syncLocked(inbox)
		s.mu.Unlock()
		s.wmu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("mailstore: write INBOX header: %w", err)
		}
	}
	s.writeBumps()
	s.markDirty()
	s.prefetchMissing()
	return s, nil
}

// matches says whether a cached replay of applied entries with the given last-entry hash
// is a prefix of the log as it is now.
func (s *Store) matches(log string, applied uint64, last [32]byte) bool {
	if applied == 0 {
		return true
	}
	e, err := s.cfg.Logs.Entries(log, applied-1)
	return err == nil && len(e) > 0 && sha256.Sum256(e[0]) == last
}

// diverged says whether the log, open, no longer has the applied entries as its prefix.
func (s *Store) diverged(log string, applied uint64, last [32]byte) bool {
	if applied == 0 {
		return false
	}
	e, err := s.cfg.Logs.Entries(log, applied-1)
	return err == nil && (len(e) == 0 || sha256.Sum256(e[0]) != last)
}

// syncRootLocked applies new root entries and brings the folder table in line.
func (s *Store) syncRootLocked() {
	if s.diverged(post.RootLog, s.root.Applied, s.root.LastHash) {
		// The log was rebuilt under us (POST merged a fork): replay it from the start.
		s.cfg.Log.Warn("mailstore: the root log changed below what was applied; replaying it", "user", s.cfg.Address)
		s.root = newRootState()
	}
	bodies, _ := s.cfg.Logs.Entries(post.RootLog, s.root.Applied)
	for _, b := range bodies {
		s.root.apply(b)
	}
	for log, fe := range s.root.Folders {
		fo := s.folders[log]
		if fo == nil {
			fo = &folder{s: s, f: newFolderState(log, fe.Name, fe.Use)}
			s.folders[log] = fo
		}
		fo.f.Name, fo.f.Use = fe.Name, fe.Use
	}
	for log, fo := range s.folders {
		if s.root.Folders[log] == nil {
			fo.f.deleted = true
			delete(s.folders, log)
		}
	}
}

// staleLocked says whether f's log has entries not applied yet (or was rebuilt). The caller
// holds mu, shared or alone.
func (s *Store) staleLocked(f *folderState) bool {
	if f.deleted {
		return false
	}
	if s.diverged(f.Log, f.Applied, f.LastHash) {
		return true
	}
	bodies, err := s.cfg.Logs.Entries(f.Log, f.Applied)
	return err == nil && len(bodies) > 0
}

// syncLocked applies new entries of a folder log and reports whether anything changed.
func (s *Store) syncLocked(f *folderState) bool {
	if f.deleted {
		return false
	}
	changed := false
	var was uint32 // UIDVALIDITY before a rebuild
	if s.diverged(f.Log, f.Applied, f.LastHash) {
		// The log was rebuilt under us (POST merged a fork): replay it from the start.
		s.cfg.Log.Warn("mailstore: a folder log changed below what was applied; replaying it", "user", s.cfg.Address, "folder", f.Name)
		was = max(f.UIDValidity, f.bump)
		fresh := newFolderState(f.Log, f.Name, f.Use)
		*f = *fresh
		changed = true
	}
	bodies, err := s.cfg.Logs.Entries(f.Log, f.Applied)
	if err == nil {
		for _, b := range bodies {
			if f.apply(b) {
				changed = true
			}
		}
	}
	if was != 0 {
		// The merge put the other side's entries after the shared part, so UIDs this node
		// gave out beyond it may now name other messages (RFC 3501 section 2.3.1.1: such a
		// change must show as a new UIDVALIDITY).
		s.bumpLocked(f, was)
	}
	return changed
}

// bumpLocked gives f a UIDVALIDITY above was and every value this user's folders had: at
// once here, and in the log through a header entry (writeBumps, outside the lock). The
// caller holds mu.
func (s *Store) bumpLocked(f *folderState, was uint32) {
	v := max(s.nextUIDValidityLocked(), was+1)
	f.UIDValidity, f.bump, f.headerDue = v, v, v
	s.bumping.Store(true)
}

// writeBumps writes the header entries of the new UIDVALIDITYs syncLocked gave rebuilt
// folders. Called without mu: POST's callbacks may take it.
func (s *Store) writeBumps() {
	type bump struct {
		log string
		v   uint32
	}
	if !s.bumping.Load() {
		return
	}
	var out []bump
	s.mu.Lock()
	s.bumping.Store(false)
	for _, fo := range s.folders {
		if fo.f.bump != 0 {
			out = append(out, bump{fo.f.Log, fo.f.bump})
			fo.f.bump = 0
		}
	}
	s.mu.Unlock()
	for _, b := range out {
		body := (&entry{Kind: kindHeader, UIDValidity: b.v}).encode()
		s.cfg.Logs.Append(b.log, body, func(_ uint64, err error) {
			if err != nil {
				s.cfg.Log.Error("mailstore: could not record a folder's new UIDVALIDITY in its log; trying again at the next change", "user", s.cfg.Address, "log", b.log, "uidvalidity", b.v, "err", err)
				s.mu.Lock()
				if fo := s.folders[b.log]; fo != nil && fo.f.bump == 0 && fo.f.UIDValidity == b.v {
					fo.f.bump = b.v
					s.bumping.Store(true)
				}
				s.mu.Unlock()
			}
		})
	}
}

// refresh applies whatever POST appended to f's log (filings land in INBOX without us) and
// signals watchers. Every read command refreshes, so it first looks under the shared lock:
// under other sessions' writes one reader applies a new entry and the others find nothing
// to do, without queueing for the exclusive lock (which holds up every reader behind it).
func (s *Store) refresh(f *folderState) {
	s.mu.RLock()
	stale := s.staleLocked(f)
	s.mu.RUnlock()
	if !stale {
		return
	}
	s.mu.Lock()
	changed := s.syncLocked(f)
	s.mu.Unlock()
	if changed {
		s.changed(f)
	}
}

// changed is called after a visible change to f.
func (s *Store) changed(f *folderState) {
	s.writeBumps()
	s.notify(f)
	s.markDirty()
	if f.Log == post.InboxLog {
		s.prefetchMissing()
	}
}

// Filed tells the store that POST filed a message into INBOX (wire it to post.Node.OnFiled
// through Users.OnFiled). It may run on a network goroutine; it never blocks on the ring.
func (s *Store) Filed() {
	s.mu.RLock()
	fo := s.folders[post.InboxLog]
	s.mu.RUnlock()
	if fo != nil {
		s.refresh(fo.f)
	}
}

func (s *Store) notify(f *folderState) {
	s.wl.Lock()
	defer s.wl.Unlock()
	for ch := range s.watchers[f] {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending
		}
	}
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// nextUIDValidity is larger than every UIDVALIDITY this user's folders ever had, so a
// folder deleted and made again under the same name never repeats one (RFC 3501 section
// 2.3.1.1).
func (s *Store) nextUIDValidity() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nextUIDValidityLocked()
}

// nextUIDValidityLocked is nextUIDValidity with mu held.
func (s *Store) nextUIDValidityLocked() uint32 {
	v := max(uint32(s.cfg.Clock.Now().Unix()), s.root.MaxUIDValidity+1)
	for _, fo := range s.folders {
		v = max(v, fo.f.UIDValidity+1)
	}
	return v
}

// canonical maps INBOX to its one spelling (RFC 3501 section 5.1).
func canonical(name string) string {
	if strings.EqualFold(name, mailbox.Inbox) {
		return mailbox.Inbox
	}
	if head, rest, ok := strings.Cut(name, string(mailbox.Delim)); ok && strings.EqualFold(head, mailbox.Inbox) {
		return mailbox.Inbox + string(mailbox.Delim) + rest
	}
	return name
}

func validName(name string) bool {
	d := string(mailbox.Delim)
	if name == "" || len(name) > 512 || strings.HasPrefix(name, d) || strings.HasSuffix(name, d) || strings.Contains(name, d+d) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '*' || r == '%' {
			return false
		}
	}
	return true
}

func (s *Store) byNameLocked(name string) *folder {
	for _, fo := range s.folders {
		if fo.f.Name == name {
			return fo
		}
	}
	return nil
}

// Folders implements mailbox.Store.
func (s *Store) Folders() ([]mailbox.FolderInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l := make([]mailbox.FolderInfo, 0, len(s.folders))
	for _, fo := range s.folders {
		l = append(l, mailbox.FolderInfo{Name: fo.f.Name, SpecialUse: fo.f.Use, Subscribed: s.root.Subscribed[fo.f.Name]})
	}
	sort.Slice(l, func(i, j int) bool {
		if (l[i].Name == mailbox.Inbox) != (l[j].Name == mailbox.Inbox) {
			return l[i].Name == mailbox.Inbox
		}
		return l[i].Name < l[j].Name
	})
	return l, nil
}

// Folder implements mailbox.Store.
func (s *Store) Folder(name string) (mailbox.Folder, error) {
	s.mu.RLock()
	fo := s.byNameLocked(canonical(name))
	s.mu.RUnlock()
	if fo == nil {
		return nil, mailbox.ErrNoFolder
	}
	return fo, nil
}

// Create implements mailbox.Store: a new POST log whose first entry fixes UIDVALIDITY, then
// the root entry that names it (a crash between them leaves an unnamed empty log, never a
// name without a log).
func (s *Store) Create(name string, use mailbox.MailboxAttr) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.createLocked(name, use)
	return err
}

func (s *Store) createLocked(name string, use mailbox.MailboxAttr) (*folder, error) {
	name = canonical(name)
	if !validName(name) {
		return nil, mailbox.ErrBadName
	}
	s.mu.RLock()
	exists := s.byNameLocked(name) != nil
	s.mu.RUnlock()
	if exists {
		return nil, mailbox.ErrFolderExists
	}
	var rnd [12]byte
	if _, err := io.ReadFull(s.cfg.Rand, rnd[:]); err != nil {
		return nil, fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	log := "mail/" + hex.EncodeToString(rnd[:])
	ctx, cancel := s.ctx()
	defer cancel()
	var cerr error
	if err := s.w.await(ctx, "create folder "+name, func(done func()) {
		s.cfg.Logs.CreateLog(log, func(err error) { cerr = err; done() })
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		s.cfg.Log.Warn("mailstore: create folder refused", "user", s.cfg.Address, "folder", name, "err", cerr)
	}
	if cerr != nil {
		// The log's name is new and random: whatever kept it from being made (replicas that
		// did not answer, or too few acknowledged) is temporary. Nothing was listed yet.
		return nil, fmt.Errorf("%w: create %s: %v", mailbox.ErrUnavailable, name, cerr)
	}
	uv := s.nextUIDValidity()
	if _, err := s.w.appendAll(ctx, s.cfg.Logs, log, [][]byte{(&entry{Kind: kindHeader, UIDValidity: uv}).encode()}); err != nil {
		return nil, fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	if _, err := s.w.appendAll(ctx, s.cfg.Logs, post.RootLog, [][]byte{(&entry{Kind: kindCreate, Name: name, Log: log, Use: string(use), UIDValidity: uv}).encode()}); err != nil {
		return nil, fmt.Errorf("mailstore: create %s: %w", name, err)
	}
	s.mu.Lock()
	s.syncRootLocked()
	fo := s.folders[log]
	if fo != nil {
		s.syncLocked(fo.f)
	}
	s.mu.Unlock()
	s.markDirty()
	if fo == nil {
		return nil, fmt.Errorf("mailstore: create %s: folder missing after replay", name)
	}
	return fo, nil
}

// Delete implements mailbox.Store. The folder's log is dropped from the root log; its
// entries and parts are no longer refreshed and expire with their leases.
func (s *Store) Delete(name string) error {
	name = canonical(name)
	if name == mailbox.Inbox {
		return mailbox.ErrInboxReserved
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	fo := s.byNameLocked(name)
	s.mu.RUnlock()
	if fo == nil {
		return mailbox.ErrNoFolder
	}
	if err := s.writeRoot(&entry{Kind: kindDelete, Log: fo.f.Log}); err != nil {
		return err
	}
	s.notify(fo.f)
	return nil
}

// writeRoot appends root entries and applies them.
func (s *Store) writeRoot(es ...*entry) error {
	bodies := make([][]byte, len(es))
	for i, e := range es {
		bodies[i] = e.encode()
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.w.appendAll(ctx, s.cfg.Logs, post.RootLog, bodies); err != nil {
		return err
	}
	s.mu.Lock()
	s.syncRootLocked()
	s.mu.Unlock()
	s.markDirty()
	return nil
}

// Rename implements mailbox.Store (RFC 3501 section 6.3.5). Renaming INBOX makes a new
// folder and moves INBOX's messages there; INBOX stays, empty.
func (s *Store) Rename(oldName, newName string) error {
	oldName, newName = canonical(oldName), canonical(newName)
	if !validName(newName) {
		return mailbox.ErrBadName
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	fo := s.byNameLocked(oldName)
	clash := s.byNameLocked(newName) != nil
	s.mu.RUnlock()
	switch {
	case fo == nil:
		return mailbox.ErrNoFolder
	case clash:
		return mailbox.ErrFolderExists
	}
	if oldName == mailbox.Inbox {
		dest, err := s.createLocked(newName, "")
		if err != nil {
			return err
		}
		s.refresh(fo.f)
		s.mu.RLock()
		uids := make([]mailbox.UID, len(fo.f.Msgs))
		for i, m := range fo.f.Msgs {
			uids[i] = m.UID
		}
		s.mu.RUnlock()
		_, err = s.copyLocked(fo, uids, dest, true)
		return err
	}
	var es []*entry
	prefix := oldName + string(mailbox.Delim)
	s.mu.RLock()
	for _, sub := range s.folders {
		if sub.f.Name == oldName || strings.HasPrefix(sub.f.Name, prefix) {
			nn := newName + strings.TrimPrefix(sub.f.Name, oldName)
			es = append(es, &entry{Kind: kindRename, Log: sub.f.Log, Name: nn})
			if s.root.Subscribed[sub.f.Name] {
				es = append(es, &entry{Kind: kindSubscribe, Name: sub.f.Name}, &entry{Kind: kindSubscribe, Name: nn, On: true})
			}
		}
	}
	s.mu.RUnlock()
	return s.writeRoot(es...)
}

// Subscriptions implements mailbox.SubscriptionLister.
func (s *Store) Subscriptions() ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.root.Subscribed))
	for n, on := range s.root.Subscribed {
		if on {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// SetSubscribed implements mailbox.Store; a name may be subscribed without existing
// (RFC 3501 section 6.3.6).
func (s *Store) SetSubscribed(name string, subscribed bool) error {
	name = canonical(name)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	same := s.root.Subscribed[name] == subscribed
	s.mu.RUnlock()
	if same {
		return nil
	}
	return s.writeRoot(&entry{Kind: kindSubscribe, Name: name, On: subscribed})
}

// Close writes the local cache. The store must not be used afterwards.
func (s *Store) Close() error {
	s.cmu.Lock()
	if s.cacheTimer != nil {
		s.cacheTimer.Stop()
		s.cacheTimer = nil
	}
	s.dirty = false
	s.cmu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.writeCache()
}

// Folder methods.

// Info implements mailbox.Folder.
func (fo *folder) Info() mailbox.FolderInfo {
	s := fo.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	return mailbox.FolderInfo{Name: fo.f.Name, SpecialUse: fo.f.Use, Subscribed: s.root.Subscribed[fo.f.Name], UIDValidity: fo.f.UIDValidity}
}

// Status implements mailbox.Folder.
func (fo *folder) Status() (mailbox.Status, error) {
	fo.s.refresh(fo.f)
	s, f := fo.s, fo.f
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f.deleted {
		return mailbox.Status{}, mailbox.ErrNoFolder
	}
	st := mailbox.Status{UIDValidity: f.UIDValidity, UIDNext: f.UIDNext, HighestModSeq: f.ModSeq, Messages: uint32(len(f.Msgs)),
		Unseen: f.unseen, Deleted: f.deletedMsgs, Size: f.size}
	// Msgs is in UID order: the recent ones are a tail.
	i, _ := f.index(f.recentFrom)
	st.Recent = uint32(len(f.Msgs) - i)
	return st, nil
}

// List implements mailbox.Folder.
func (fo *folder) List() ([]mailbox.Summary, error) {
	return fo.summaries(nil)
}

// Changed implements mailbox.Folder.
func (fo *folder) Changed(since uint64) ([]mailbox.Summary, error) {
	return fo.summaries(func(m *message) bool { return m.ModSeq > since })
}

// summaries returns the summaries of the messages keep admits (nil: all), in UID order.
func (fo *folder) summaries(keep func(*message) bool) ([]mailbox.Summary, error) {
	fo.s.refresh(fo.f)
	s, f := fo.s, fo.f
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f.deleted {
		return nil, mailbox.ErrNoFolder
	}
	l := []mailbox.Summary{}
	if keep == nil {
		l = make([]mailbox.Summary, 0, len(f.Msgs))
	}
	for _, m := range f.Msgs {
		if keep == nil || keep(m) {
			l = append(l, m.summary())
		}
	}
	return l, nil
}

// snapshot returns a copy of one message's fields.
func (fo *folder) snapshot(uid mailbox.UID) (message, error) {
	s, f := fo.s, fo.f
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f.deleted {
		return message{}, mailbox.ErrNoFolder
	}
	m := f.find(uid)
	if m == nil {
		return message{}, mailbox.ErrNoMessage
	}
	c := *m
	c.Flags = slices.Clone(m.Flags)
	return c, nil
}

// Message implements mailbox.Folder. A filed message's structure is computed from its bytes
// on first use (usually already done by the prefetch that follows a filing).
func (fo *folder) Message(uid mailbox.UID) (*mailbox.Message, error) {
	m, err := fo.snapshot(uid)
	if err != nil {
		return nil, err
	}
	if m.Structure == nil {
		raw, err := fo.s.content(&m)
		if err != nil {
			return nil, err
		}
		m.Structure = mailbox.Parse(raw)
		fo.s.setStructure(fo.f, uid, m.Structure)
	}
	return &mailbox.Message{Summary: m.summary(), Structure: m.Structure}, nil
}

func (s *Store) setStructure(f *folderState, uid mailbox.UID, st *mailbox.Structure) {
	s.mu.Lock()
	if m := f.find(uid); m != nil && m.Structure == nil {
		m.Structure = st
	}
	s.mu.Unlock()
	s.markDirty()
}

// Content implements mailbox.Folder: the pieces fetched, each verified by the content store,
// and put together; the result is exactly the bytes received.
func (fo *folder) Content(uid mailbox.UID) (mailbox.Content, error) {
	m, err := fo.snapshot(uid)
	if err != nil {
		return nil, err
	}
	raw, err := fo.s.content(&m)
	if err != nil {
		return nil, err
	}
	return byteContent{raw}, nil
}

// Contents implements mailbox.ContentsReader: the messages are looked up under one read
// lock of the store's state, then read as Content reads each.
func (fo *folder) Contents(uids []mailbox.UID) ([]mailbox.Content, error) {
	s, f := fo.s, fo.f
	ms := make([]message, len(uids))
	found := make([]bool, len(uids))
	s.mu.RLock()
	if f.deleted {
		s.mu.RUnlock()
		return nil, mailbox.ErrNoFolder
	}
	for i, uid := range uids {
		if m := f.find(uid); m != nil {
			ms[i], found[i] = *m, true
		}
	}
	s.mu.RUnlock()
	out := make([]mailbox.Content, len(uids))
	for i := range ms {
		if !found[i] {
			continue
		}
		if raw, err := s.content(&ms[i]); err == nil {
			out[i] = byteContent{raw}
		}
	}
	return out, nil
}

type byteContent struct{ b []byte }

func (c byteContent) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("mailstore: negative offset")
	}
	if off >= int64(len(c.b)) {
		return 0, io.EOF
	}
	n := copy(p, c.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (c byteContent) Size() int64 { return int64(len(c.b)) }

// content returns a message's bytes, from the memory cache or the ring.
func (s *Store) content(m *message) ([]byte, error) {
	key := m.key // hashing the inline pieces on every read cost reads more than the lookup
	if b, ok := s.contents.get(key); ok {
		return b, nil
	}
	var refs []segment
	for _, sg := range m.Segments {
		if sg.Ref != nil {
			refs = append(refs, sg)
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	got, err := s.w.getAll(ctx, s.cfg.Contents, refs)
	if err != nil {
		return nil, fmt.Errorf("mailstore: message %d: %w", m.UID, err)
	}
	raw, err := assemble(m.Segments, got, m.Size)
	if err != nil {
		return nil, fmt.Errorf("mailstore: message %d: %w", m.UID, err)
	}
	s.contents.put(key, raw)
	return raw, nil
}

// assemble concatenates segments; got holds the fetched refs in order.
func assemble(segs []segment, got [][]byte, size int64) ([]byte, error) {
	raw := make([]byte, 0, size)
	i := 0
	for _, sg := range segs {
		if sg.Ref == nil {
			raw = append(raw, sg.Inline...)
			continue
		}
		if i >= len(got) || uint64(len(got[i])) != sg.Ref.Size {
			return nil, errors.New("part size differs from its reference")
		}
		raw = append(raw, got[i]...)
		i++
	}
	if int64(len(raw)) != size {
		return nil, fmt.Errorf("assembled %d bytes, record says %d", len(raw), size)
	}
	return raw, nil
}

// segmentsKey identifies a message's bytes: equal keys, equal bytes (refs carry the
// payload hash), so copies share one cache slot.
func segmentsKey(segs []segment) [32]byte {
	h := sha256.New()
	for _, sg := range segs {
		if sg.Ref != nil {
			h.Write([]byte{1})
			h.Write(sg.Ref.Hash[:])
		} else {
			sum := sha256.Sum256(sg.Inline)
			h.Write([]byte{0})
			h.Write(sum[:])
		}
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// prefetchMissing computes, in the background, the parse cache of INBOX messages that POST
// filed (their records carry no structure): IMAP clients ask for ENVELOPE right after IDLE
// wakes them. It uses callbacks only, never waits.
func (s *Store) prefetchMissing() {
	s.mu.Lock()
	fo := s.folders[post.InboxLog]
	if fo == nil || s.closed {
		s.mu.Unlock()
		return
	}
	var todo []message
	f := fo.f
	// Every message below prefetchFrom was looked at already (UIDs only grow): only the new
	// ones are, so a filing into a large INBOX does not walk it.
	i, _ := f.index(f.prefetchFrom)
	for _, m := range f.Msgs[i:] {
		if m.Structure == nil && !m.prefetching {
			m.prefetching = true
			todo = append(todo, *m)
		}
	}
	f.prefetchFrom = f.UIDNext
	s.mu.Unlock()
	for i := range todo {
		m := &todo[i]
		var refs []segment
		for _, sg := range m.Segments {
			if sg.Ref != nil {
				refs = append(refs, sg)
			}
		}
		got := make([][]byte, len(refs))
		var mu sync.Mutex
		left := len(refs)
		finish := func(err error) {
			if err == nil {
				raw, aerr := assemble(m.Segments, got, m.Size)
				if aerr == nil {
					s.contents.put(segmentsKey(m.Segments), raw)
					s.setStructure(fo.f, m.UID, mailbox.Parse(raw))
					return
				}
				err = aerr
			}
			s.cfg.Log.Warn("mailstore: prefetch failed; will fetch on demand", "user", s.cfg.Address, "uid", m.UID, "err", err)
		}
		if left == 0 {
			finish(nil)
			continue
		}
		var first error
		for j, r := range refs {
			r.get(s.cfg.Contents, func(data []byte, err error) {
				mu.Lock()
				got[j] = data
				if err != nil && first == nil {
					first = err
				}
				left--
				last := left == 0
				mu.Unlock()
				if last {
					finish(first)
				}
			})
		}
	}
}

// ChangeFlags implements mailbox.Folder.
func (fo *folder) ChangeFlags(uids []mailbox.UID, op mailbox.FlagOp, flags []mailbox.Flag, unchangedSince uint64) (mailbox.FlagResult, error) {
	s, f := fo.s, fo.f
	flags = normalizeFlags(flags)
	if unchangedSince != 0 {
		s.wmu.Lock() // RFC 7162 section 3.1.3 decides on the current mod-sequences
		defer s.wmu.Unlock()
	} else {
		s.wmu.RLock()
		defer s.wmu.RUnlock()
	}
	s.refresh(f)
	var res mailbox.FlagResult
	var change []mailbox.UID
	s.mu.RLock()
	if f.deleted {
		s.mu.RUnlock()
		return res, mailbox.ErrNoFolder
	}
	seen := map[mailbox.UID]bool{}
	for _, uid := range uids {
		m := f.find(uid)
		if m == nil || seen[uid] {
			continue
		}
		seen[uid] = true
		// RFC 7162 section 3.1.3: UNCHANGEDSINCE fails messages changed after the bound.
		if unchangedSince != 0 && m.ModSeq > unchangedSince {
			res.Modified = append(res.Modified, uid)
			continue
		}
		if slices.Equal(combineFlags(m.Flags, op, flags), m.Flags) {
			res.Unchanged = append(res.Unchanged, m.summary())
			continue
		}
		change = append(change, uid)
	}
	s.mu.RUnlock()
	if len(change) > 0 {
		var bodies [][]byte
		for c := range slices.Chunk(change, maxUIDsInEntry/2) {
			bodies = append(bodies, (&entry{Kind: kindFlags, Op: uint8(op), Flags: flags, UIDs: c}).encode())
		}
		ctx, cancel := s.ctx()
		defer cancel()
		// A flag change is durable once the user's node has it (as a server's index is);
		// the ring has it moments later. Mail (APPEND, COPY, filings) waits for the ring.
		if err := s.w.appendRecorded(ctx, s.cfg.Logs, f.Log, bodies); err != nil {
			return mailbox.FlagResult{}, err
		}
		s.mu.Lock()
		s.syncLocked(f)
		for _, uid := range change {
			if m := f.find(uid); m != nil {
				res.Changed = append(res.Changed, m.summary())
			}
		}
		s.mu.Unlock()
		s.changed(f)
	}
	s.mu.RLock()
	res.ModSeq = f.ModSeq
	s.mu.RUnlock()
	return res, nil
}

// Expunge implements mailbox.Folder.
func (fo *folder) Expunge(uids []mailbox.UID) ([]mailbox.UID, error) {
	s := fo.s
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	return fo.expungeLocked(uids)
}

func (fo *folder) expungeLocked(uids []mailbox.UID) ([]mailbox.UID, error) {
	s, f := fo.s, fo.f
	s.refresh(f)
	s.mu.RLock()
	if f.deleted {
		s.mu.RUnlock()
		return nil, mailbox.ErrNoFolder
	}
	var present []mailbox.UID
	for _, uid := range uids {
		if f.find(uid) != nil {
			present = append(present, uid)
		}
	}
	s.mu.RUnlock()
	slices.Sort(present)
	present = slices.Compact(present)
	if len(present) == 0 {
		return nil, nil
	}
	var bodies [][]byte
	for c := range slices.Chunk(present, maxUIDsInEntry/2) {
		bodies = append(bodies, (&entry{Kind: kindExpunge, UIDs: c}).encode())
	}
	ctx, cancel := s.ctx()
	defer cancel()
	// Like a flag change, an expunge is durable once the user's node has it; the messages'
	// parts stay in the ring until the log's entries say otherwise there too.
	if err := s.w.appendRecorded(ctx, s.cfg.Logs, f.Log, bodies); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.syncLocked(f)
	s.mu.Unlock()
	s.changed(f)
	return present, nil
}

// Expunged implements mailbox.Folder.
func (fo *folder) Expunged(since uint64) ([]mailbox.UID, error) {
	s, f := fo.s, fo.f
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f.deleted {
		return nil, mailbox.ErrNoFolder
	}
	var l []mailbox.UID
	for _, t := range f.Expunged {
		if t.ModSeq > since {
			l = append(l, t.UID)
		}
	}
	slices.Sort(l)
	return l, nil
}

// ClaimRecent implements mailbox.Folder.
func (fo *folder) ClaimRecent() (from, to mailbox.UID) {
	s, f := fo.s, fo.f
	s.refresh(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	from, to = f.recentFrom, f.UIDNext
	f.recentFrom = f.UIDNext
	return from, to
}

// Watch implements mailbox.Folder.
func (fo *folder) Watch() (<-chan struct{}, func()) {
	s := fo.s
	ch := make(chan struct{}, 1)
	s.wl.Lock()
	if s.watchers[fo.f] == nil {
		s.watchers[fo.f] = map[chan struct{}]struct{}{}
	}
	s.watchers[fo.f][ch] = struct{}{}
	s.wl.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.wl.Lock()
			delete(s.watchers[fo.f], ch)
			s.wl.Unlock()
		})
	}
}
