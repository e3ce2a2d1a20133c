package mailstore

import (
	"container/list"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"epost/internal/diskstat"
	"epost/internal/identity"
)

// The local cache of folder state: what replaying the logs gives, plus the parse caches of
// filed messages (which otherwise cost a fetch of every message), so that a restarted node
// serves IMAP at once. It is only an accelerator: Open checks it against the logs (entry
// count and hash of the last entry replayed) and replays from the logs when it is missing,
// stale or unreadable. It holds message metadata and content keys, so it is encrypted
// (AES-256-GCM) under a key derived from the user's private keys, which only the password
// opens.

const (
	cacheVersion = 1
	cacheLabel   = "epost/v1/mailstore-cache"
)

// CacheKey derives the cache key from the user's keys.
func CacheKey(keys *identity.Keys) [32]byte {
	var k [32]byte
	b, err := hkdf.Key(sha256.New, keys.SigningKey().Seed(), nil, cacheLabel, 32)
	if err != nil {
		panic("mailstore: hkdf: " + err.Error()) // unreachable for a 32-byte key
	}
	copy(k[:], b)
	return k
}

type cacheFile struct {
	Version int
	Address string
	Root    *rootState
	Folders []*folderState
	// Structures holds, per folder log, the parse caches by UID.
	Structures map[string]map[uint32]json.RawMessage
}

type loadedCache struct {
	root    *rootState
	folders map[string]*folderState
}

func (s *Store) cacheAEAD() cipher.AEAD {
	block, _ := aes.NewCipher(s.cfg.CacheKey[:])
	aead, _ := cipher.NewGCM(block)
	return aead
}

func (s *Store) cacheAAD() []byte { return []byte(cacheLabel + "\x00" + s.cfg.Address) }

// loadCache reads the cache file; nil when absent or unusable.
func (s *Store) loadCache() *loadedCache {
	if s.cfg.CacheFile == "" {
		return nil
	}
	data, err := os.ReadFile(s.cfg.CacheFile)
	if err != nil {
		return nil
	}
	aead := s.cacheAEAD()
	if len(data) < aead.NonceSize() {
		return nil
	}
	pt, err := aead.Open(nil, data[:aead.NonceSize()], data[aead.NonceSize():], s.cacheAAD())
	if err != nil {
		s.cfg.Log.Warn("mailstore: local cache does not open; rebuilding from the logs", "user", s.cfg.Address)
		return nil
	}
	var cf cacheFile
	if err := json.Unmarshal(pt, &cf); err != nil || cf.Version != cacheVersion || cf.Address != s.cfg.Address || cf.Root == nil {
		return nil
	}
	lc := &loadedCache{root: cf.Root, folders: map[string]*folderState{}}
	if lc.root.Folders == nil || lc.root.Subscribed == nil {
		return nil
	}
	for _, f := range cf.Folders {
		if f == nil {
			return nil
		}
		f.recentFrom = 1
		for _, m := range f.Msgs {
			if m == nil {
				return nil
			}
			m.key = segmentsKey(m.Segments)
			if raw := cf.Structures[f.Log][uint32(m.UID)]; raw != nil {
				m.Structure, _ = decodeStructure(raw)
			}
		}
		f.recount()
		lc.folders[f.Log] = f
	}
	return lc
}

// markDirty schedules a cache write.
func (s *Store) markDirty() {
	if s.cfg.CacheFile == "" {
		return
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.dirty {
		return
	}
	s.dirty = true
	// The file is the whole folder state (it grows with the mailbox): write it CacheDelay
	// after a change, but at most once per CacheEvery, and at Close. A cache that lags only
	// means the next Open applies more log entries to it.
	delay := s.cfg.CacheDelay
	if !s.cacheAt.IsZero() {
		delay = max(delay, s.cfg.CacheEvery-s.cfg.Clock.Now().Sub(s.cacheAt))
	}
	s.cacheTimer = s.cfg.Clock.AfterFunc(delay, func() {
		s.cmu.Lock()
		s.dirty = false
		s.cacheTimer = nil
		s.cacheAt = s.cfg.Clock.Now()
		s.cmu.Unlock()
		if err := s.writeCache(); err != nil {
			s.cfg.Log.Warn("mailstore: writing local cache failed", "user", s.cfg.Address, "err", err)
		}
	})
}

// cacheSnapshot copies, under the store's read lock, what the cache file holds, so that
// encoding it (25-125 ms at 4,000 messages, so about a second at 50,000) runs
// without the lock: it held up every write to the mailbox, and every read queued behind a
// write, for that long. A message's copy may share its Flags, Segments and Structure with the
// live message: those are replaced, never changed in place.
func (s *Store) cacheSnapshot() cacheFile {
	s.mu.RLock()
	defer s.mu.RUnlock()
	root := *s.root
	root.Folders = make(map[string]*folderEntry, len(s.root.Folders))
	for k, e := range s.root.Folders {
		c := *e
		root.Folders[k] = &c
	}
	root.Subscribed = maps.Clone(s.root.Subscribed)
	cf := cacheFile{Version: cacheVersion, Address: s.cfg.Address, Root: &root}
	for _, fo := range s.folders {
		f := *fo.f
		msgs := make([]message, len(f.Msgs))
		f.Msgs = make([]*message, len(msgs))
		for i, m := range fo.f.Msgs {
			msgs[i] = *m
			f.Msgs[i] = &msgs[i]
		}
		f.Expunged = slices.Clone(f.Expunged)
		cf.Folders = append(cf.Folders, &f)
	}
	return cf
}

// cacheSnapshotted, when set (tests), runs between the snapshot and its encoding.
var cacheSnapshotted atomic.Pointer[func()]

// writeCache writes the cache file atomically (temporary file, then rename). It needs no
// fsync: a lost or torn cache is rebuilt from the logs.
func (s *Store) writeCache() error {
	if s.cfg.CacheFile == "" {
		return nil
	}
	cf := s.cacheSnapshot()
	if hook := cacheSnapshotted.Load(); hook != nil {
		(*hook)()
	}
	cf.Structures = map[string]map[uint32]json.RawMessage{}
	for _, f := range cf.Folders {
		st := map[uint32]json.RawMessage{}
		for _, m := range f.Msgs {
			if m.Structure != nil {
				st[uint32(m.UID)] = encodeStructure(m.Structure)
			}
		}
		cf.Structures[f.Log] = st
	}
	pt, err := json.Marshal(cf)
	if err != nil {
		return fmt.Errorf("mailstore: encode cache: %w", err)
	}
	aead := s.cacheAEAD()
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(s.cfg.Rand, nonce); err != nil {
		return fmt.Errorf("mailstore: cache nonce: %w", err)
	}
	out := aead.Seal(nonce, nonce, pt, s.cacheAAD())
	if err := os.MkdirAll(filepath.Dir(s.cfg.CacheFile), 0o700); err != nil {
		return fmt.Errorf("mailstore: cache dir: %w", err)
	}
	tmp := s.cfg.CacheFile + ".tmp"
	diskstat.MailCache.Rewrite(len(out), 0) // no fsync: a lost cache is rebuilt
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return fmt.Errorf("mailstore: write cache: %w", err)
	}
	if err := os.Rename(tmp, s.cfg.CacheFile); err != nil {
		return errors.Join(fmt.Errorf("mailstore: write cache: %w", err), os.Remove(tmp))
	}
	return nil
}

// contentCache keeps recently read messages in memory: an IMAP client fetches a message's
// header, structure and body in separate commands.
type contentCache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order *list.List // front: most recent
	items map[[32]byte]*list.Element
}

type contentItem struct {
	key [32]byte
	b   []byte
}

func newContentCache(max int64) *contentCache {
	return &contentCache{max: max, order: list.New(), items: map[[32]byte]*list.Element{}}
}

func (c *contentCache) get(k [32]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*contentItem).b, true
}

func (c *contentCache) put(k [32]byte, b []byte) {
	if int64(len(b)) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&contentItem{key: k, b: b})
	c.used += int64(len(b))
	for c.used > c.max {
		e := c.order.Back()
		it := e.Value.(*contentItem)
		c.order.Remove(e)
		delete(c.items, it.key)
		c.used -= int64(len(it.b))
	}
}
