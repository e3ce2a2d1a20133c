package mailbox

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Memory is an in-memory Store. One mutex guards the whole store, so that
// Copy and Move between two folders are atomic without a lock order; readers
// share it. Watchers are signalled after the mutex is released.
type Memory struct {
	now func() time.Time

	mu          sync.RWMutex
	folders     map[string]*memFolder // by canonical name
	subscribed  map[string]bool
	uidValidity uint32 // last one handed out; strictly increasing
}

// NewMemory returns an empty store holding only INBOX. now supplies
// internal dates and the first UIDVALIDITY; nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{
		now:         now,
		folders:     make(map[string]*memFolder),
		subscribed:  make(map[string]bool),
		uidValidity: uint32(now().Unix()),
	}
	m.folders[Inbox] = m.newFolder(Inbox, "")
	m.subscribed[Inbox] = true
	return m
}

// EnsureSpecialUse creates the special-use folders (RFC 6154) a store lacks,
// subscribed, under their default names. Servers call it at login.
func EnsureSpecialUse(s Store) error {
	infos, err := s.Folders()
	if err != nil {
		return err
	}
	have := make(map[MailboxAttr]bool)
	names := make(map[string]bool)
	for _, fi := range infos {
		have[fi.SpecialUse] = true
		names[fi.Name] = true
	}
	for _, su := range SpecialUses {
		if have[su.Use] || names[su.Name] {
			continue
		}
		if err := s.Create(su.Name, su.Use); err != nil && err != ErrFolderExists {
			return fmt.Errorf("create %s folder: %w", su.Name, err)
		}
		if err := s.SetSubscribed(su.Name, true); err != nil {
			return err
		}
	}
	return nil
}

// canonical maps INBOX to its one spelling (RFC 3501 section 5.1).
func canonical(name string) string {
	if strings.EqualFold(name, Inbox) {
		return Inbox
	}
	if head, rest, ok := strings.Cut(name, string(Delim)); ok && strings.EqualFold(head, Inbox) {
		return Inbox + string(Delim) + rest
	}
	return name
}

func validName(name string) bool {
	if name == "" || strings.HasPrefix(name, string(Delim)) || strings.HasSuffix(name, string(Delim)) ||
		strings.Contains(name, string(Delim)+string(Delim)) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '*' || r == '%' {
			return false
		}
	}
	return true
}

func (m *Memory) newFolder(name string, use MailboxAttr) *memFolder {
	m.uidValidity++
	return &memFolder{
		store:       m,
		name:        name,
		use:         use,
		uidValidity: m.uidValidity,
		uidNext:     1,
		recentFrom:  1,
		watchers:    make(map[chan struct{}]struct{}),
	}
}

// Folders implements Store.
func (m *Memory) Folders() ([]FolderInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l := make([]FolderInfo, 0, len(m.folders))
	for _, f := range m.folders {
		l = append(l, FolderInfo{Name: f.name, SpecialUse: f.use, Subscribed: m.subscribed[f.name]})
	}
	sort.Slice(l, func(i, j int) bool {
		if (l[i].Name == Inbox) != (l[j].Name == Inbox) {
			return l[i].Name == Inbox
		}
		return l[i].Name < l[j].Name
	})
	return l, nil
}

// Folder implements Store.
func (m *Memory) Folder(name string) (Folder, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f, ok := m.folders[canonical(name)]
	if !ok {
		return nil, ErrNoFolder
	}
	return f, nil
}

// Create implements Store.
func (m *Memory) Create(name string, use MailboxAttr) error {
	name = canonical(name)
	if !validName(name) {
		return ErrBadName
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.folders[name]; ok {
		return ErrFolderExists
	}
	m.folders[name] = m.newFolder(name, use)
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(name string) error {
	name = canonical(name)
	if name == Inbox {
		return ErrInboxReserved
	}
	m.mu.Lock()
	f, ok := m.folders[name]
	if ok {
		delete(m.folders, name)
		f.deleted = true
		f.msgs = nil
	}
	m.mu.Unlock()
	if !ok {
		return ErrNoFolder
	}
	f.notify()
	return nil
}

// Rename implements Store.
func (m *Memory) Rename(oldName, newName string) error {
	oldName, newName = canonical(oldName), canonical(newName)
	if !validName(newName) {
		return ErrBadName
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.folders[oldName]
	if !ok {
		return ErrNoFolder
	}
	if _, ok := m.folders[newName]; ok {
		return ErrFolderExists
	}
	if oldName == Inbox {
		// RFC 3501 section 6.3.5: the messages move, INBOX stays.
		nf := m.newFolder(newName, "")
		nf.msgs, f.msgs = f.msgs, nil
		nf.uidNext, nf.modSeq = f.uidNext, f.modSeq
		for _, msg := range nf.msgs {
			f.expunged = append(f.expunged, tombstone{uid: msg.UID, modSeq: f.modSeq + 1})
		}
		f.modSeq++
		m.folders[newName] = nf
		f.notify() // takes only the watcher lock
		return nil
	}
	prefix := oldName + string(Delim)
	for name, sub := range m.folders {
		if name == oldName || strings.HasPrefix(name, prefix) {
			delete(m.folders, name)
			sub.name = newName + strings.TrimPrefix(name, oldName)
			m.folders[sub.name] = sub
			if m.subscribed[name] {
				delete(m.subscribed, name)
				m.subscribed[sub.name] = true
			}
		}
	}
	return nil
}

// Subscriptions implements SubscriptionLister.
func (m *Memory) Subscriptions() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.subscribed))
	for n := range m.subscribed {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// SetSubscribed implements Store. A name may be subscribed without existing
// (RFC 3501 section 6.3.6).
func (m *Memory) SetSubscribed(name string, subscribed bool) error {
	name = canonical(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if subscribed {
		m.subscribed[name] = true
	} else {
		delete(m.subscribed, name)
	}
	return nil
}

// memMessage is a stored message: immutable bytes and structure, mutable
// summary fields guarded by Memory.mu.
type memMessage struct {
	Summary
	raw       []byte
	structure *Structure
}

type tombstone struct {
	uid    UID
	modSeq uint64
}

type memFolder struct {
	store *Memory

	// Guarded by store.mu.
	name        string
	use         MailboxAttr
	deleted     bool
	uidValidity uint32
	uidNext     UID
	modSeq      uint64
	recentFrom  UID
	msgs        []*memMessage // ascending UID
	expunged    []tombstone   // ascending modseq

	wmu      sync.Mutex
	watchers map[chan struct{}]struct{}
}

func (f *memFolder) notify() {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	for ch := range f.watchers {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending
		}
	}
}

// Watch implements Folder.
func (f *memFolder) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.wmu.Lock()
	f.watchers[ch] = struct{}{}
	f.wmu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.wmu.Lock()
			delete(f.watchers, ch)
			f.wmu.Unlock()
		})
	}
}

// Info implements Folder.
func (f *memFolder) Info() FolderInfo {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	return FolderInfo{Name: f.name, SpecialUse: f.use, Subscribed: f.store.subscribed[f.name], UIDValidity: f.uidValidity}
}

// Status implements Folder.
func (f *memFolder) Status() (Status, error) {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	if f.deleted {
		return Status{}, ErrNoFolder
	}
	st := Status{
		UIDValidity:   f.uidValidity,
		UIDNext:       f.uidNext,
		HighestModSeq: f.modSeq,
		Messages:      uint32(len(f.msgs)),
	}
	for _, msg := range f.msgs {
		if !slices.Contains(msg.Flags, FlagSeen) {
			st.Unseen++
		}
		if slices.Contains(msg.Flags, FlagDeleted) {
			st.Deleted++
		}
		if msg.UID >= f.recentFrom {
			st.Recent++
		}
		st.Size += msg.Size
	}
	return st, nil
}

// normalizeFlags drops \Recent (never stored, RFC 3501 section 2.3.2) and
// duplicates, canonicalises system flags and sorts.
func normalizeFlags(flags []Flag) []Flag {
	out := make([]Flag, 0, len(flags))
	for _, fl := range flags {
		fl = canonicalFlag(fl)
		if fl == "" || fl == FlagRecent || slices.Contains(out, fl) {
			continue
		}
		out = append(out, fl)
	}
	slices.Sort(out)
	return out
}

var systemFlags = []Flag{FlagSeen, FlagAnswered, FlagFlagged, FlagDeleted, FlagDraft, FlagRecent}

func canonicalFlag(fl Flag) Flag {
	for _, sf := range systemFlags {
		if strings.EqualFold(string(fl), string(sf)) {
			return sf
		}
	}
	return fl
}

// Append implements Folder.
func (f *memFolder) Append(raw []byte, flags []Flag, date time.Time) (UID, error) {
	structure := Parse(raw) // outside the lock: the only expensive step
	if date.IsZero() {
		date = f.store.now()
	}
	f.store.mu.Lock()
	if f.deleted {
		f.store.mu.Unlock()
		return 0, ErrNoFolder
	}
	uid := f.appendLocked(raw, structure, normalizeFlags(flags), date)
	f.store.mu.Unlock()
	f.notify()
	return uid, nil
}

func (f *memFolder) appendLocked(raw []byte, structure *Structure, flags []Flag, date time.Time) UID {
	uid := f.uidNext
	f.uidNext++
	f.modSeq++
	f.msgs = append(f.msgs, &memMessage{
		Summary: Summary{
			UID:          uid,
			ModSeq:       f.modSeq,
			Flags:        flags,
			InternalDate: date.Round(time.Second),
			Size:         int64(len(raw)),
		},
		raw:       raw,
		structure: structure,
	})
	return uid
}

func (f *memFolder) find(uid UID) (int, bool) {
	return sort.Find(len(f.msgs), func(i int) int {
		switch {
		case uid < f.msgs[i].UID:
			return -1
		case uid > f.msgs[i].UID:
			return 1
		}
		return 0
	})
}

func (msg *memMessage) summary() Summary {
	s := msg.Summary
	s.Flags = slices.Clone(s.Flags)
	return s
}

// List implements Folder.
func (f *memFolder) List() ([]Summary, error) {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	if f.deleted {
		return nil, ErrNoFolder
	}
	l := make([]Summary, len(f.msgs))
	for i, msg := range f.msgs {
		// Flags slices are replaced, never modified in place, so sharing
		// them with the caller is safe.
		l[i] = msg.Summary
	}
	return l, nil
}

// Changed implements Folder.
func (f *memFolder) Changed(since uint64) ([]Summary, error) {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	if f.deleted {
		return nil, ErrNoFolder
	}
	var l []Summary
	for _, msg := range f.msgs {
		if msg.ModSeq > since {
			l = append(l, msg.Summary) // flags slices are replaced, never modified
		}
	}
	return l, nil
}

func (f *memFolder) get(uid UID) (*memMessage, error) {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	if f.deleted {
		return nil, ErrNoFolder
	}
	i, ok := f.find(uid)
	if !ok {
		return nil, ErrNoMessage
	}
	return f.msgs[i], nil
}

// Message implements Folder.
func (f *memFolder) Message(uid UID) (*Message, error) {
	msg, err := f.get(uid)
	if err != nil {
		return nil, err
	}
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	return &Message{Summary: msg.summary(), Structure: msg.structure}, nil
}

// Content implements Folder.
func (f *memFolder) Content(uid UID) (Content, error) {
	msg, err := f.get(uid)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(msg.raw), nil
}

// ChangeFlags implements Folder.
func (f *memFolder) ChangeFlags(uids []UID, op FlagOp, flags []Flag, unchangedSince uint64) (FlagResult, error) {
	flags = normalizeFlags(flags)
	f.store.mu.Lock()
	if f.deleted {
		f.store.mu.Unlock()
		return FlagResult{}, ErrNoFolder
	}
	var res FlagResult
	for _, uid := range uids {
		i, ok := f.find(uid)
		if !ok {
			continue
		}
		msg := f.msgs[i]
		// RFC 7162 section 3.1.3: UNCHANGEDSINCE fails messages changed
		// after the bound.
		if unchangedSince != 0 && msg.ModSeq > unchangedSince {
			res.Modified = append(res.Modified, uid)
			continue
		}
		var next []Flag
		switch op {
		case FlagsSet:
			next = flags
		case FlagsAdd:
			next = normalizeFlags(append(slices.Clone(msg.Flags), flags...))
		case FlagsRemove:
			next = slices.DeleteFunc(slices.Clone(msg.Flags), func(fl Flag) bool { return slices.Contains(flags, fl) })
		}
		if slices.Equal(next, msg.Flags) {
			res.Unchanged = append(res.Unchanged, msg.summary())
			continue
		}
		f.modSeq++
		msg.Flags = slices.Clone(next)
		msg.ModSeq = f.modSeq
		res.Changed = append(res.Changed, msg.summary())
	}
	res.ModSeq = f.modSeq
	f.store.mu.Unlock()
	if len(res.Changed) > 0 {
		f.notify()
	}
	return res, nil
}

// Expunge implements Folder.
func (f *memFolder) Expunge(uids []UID) ([]UID, error) {
	f.store.mu.Lock()
	if f.deleted {
		f.store.mu.Unlock()
		return nil, ErrNoFolder
	}
	gone := f.expungeLocked(uids)
	f.store.mu.Unlock()
	if len(gone) > 0 {
		f.notify()
	}
	return gone, nil
}

func (f *memFolder) expungeLocked(uids []UID) []UID {
	drop := make(map[UID]bool, len(uids))
	for _, uid := range uids {
		drop[uid] = true
	}
	var gone []UID
	kept := f.msgs[:0]
	for _, msg := range f.msgs {
		if drop[msg.UID] {
			gone = append(gone, msg.UID)
			continue
		}
		kept = append(kept, msg)
	}
	clear(f.msgs[len(kept):]) // let the bytes go
	f.msgs = kept
	if len(gone) > 0 {
		// RFC 7162 section 3.2.10: expunges raise HIGHESTMODSEQ.
		f.modSeq++
		for _, uid := range gone {
			f.expunged = append(f.expunged, tombstone{uid: uid, modSeq: f.modSeq})
		}
	}
	return gone
}

// Copy implements Folder.
func (f *memFolder) Copy(uids []UID, dest Folder) (CopyResult, error) {
	return f.copy(uids, dest, false)
}

// Move implements Folder.
func (f *memFolder) Move(uids []UID, dest Folder) (CopyResult, error) {
	return f.copy(uids, dest, true)
}

func (f *memFolder) copy(uids []UID, dest Folder, move bool) (CopyResult, error) {
	d, ok := dest.(*memFolder)
	if !ok || d.store != f.store {
		return CopyResult{}, fmt.Errorf("mailbox: copy across stores: %w", ErrNoFolder)
	}
	f.store.mu.Lock()
	if f.deleted || d.deleted {
		f.store.mu.Unlock()
		return CopyResult{}, ErrNoFolder
	}
	sorted := slices.Clone(uids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	res := CopyResult{UIDValidity: d.uidValidity}
	for _, uid := range sorted {
		i, ok := f.find(uid)
		if !ok {
			continue
		}
		msg := f.msgs[i]
		nu := d.appendLocked(msg.raw, msg.structure, slices.Clone(msg.Flags), msg.InternalDate)
		res.SourceUIDs = append(res.SourceUIDs, uid)
		res.DestUIDs = append(res.DestUIDs, nu)
	}
	if move {
		f.expungeLocked(res.SourceUIDs)
	}
	f.store.mu.Unlock()
	if len(res.SourceUIDs) > 0 {
		d.notify()
		if move {
			f.notify()
		}
	}
	return res, nil
}

// Expunged implements Folder.
func (f *memFolder) Expunged(since uint64) ([]UID, error) {
	f.store.mu.RLock()
	defer f.store.mu.RUnlock()
	if f.deleted {
		return nil, ErrNoFolder
	}
	i := sort.Search(len(f.expunged), func(i int) bool { return f.expunged[i].modSeq > since })
	var l []UID
	for _, t := range f.expunged[i:] {
		l = append(l, t.uid)
	}
	slices.Sort(l)
	return l, nil
}

// ClaimRecent implements Folder.
func (f *memFolder) ClaimRecent() (from, to UID) {
	f.store.mu.Lock()
	defer f.store.mu.Unlock()
	from, to = f.recentFrom, f.uidNext
	f.recentFrom = f.uidNext
	return from, to
}
