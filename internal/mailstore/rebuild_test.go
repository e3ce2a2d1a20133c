package mailstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"epost/internal/content"
	"epost/internal/mailbox"
	"epost/internal/post"
	"epost/internal/transport"
)

// memLogs is an in-memory Logs whose entries a test can replace under the store, as POST
// does when it merges two writers' heads.
type memLogs struct {
	mu   sync.Mutex
	logs map[string][][]byte
}

func newMemLogs(names ...string) *memLogs {
	m := &memLogs{logs: map[string][][]byte{}}
	for _, n := range names {
		m.logs[n] = nil
	}
	return m
}

func (m *memLogs) CreateLog(name string, cb func(error)) {
	m.mu.Lock()
	_, ok := m.logs[name]
	if !ok {
		m.logs[name] = nil
	}
	m.mu.Unlock()
	if ok {
		cb(post.ErrLogExists)
		return
	}
	cb(nil)
}

func (m *memLogs) OpenLog(name string, cb func(error)) {
	m.mu.Lock()
	_, ok := m.logs[name]
	m.mu.Unlock()
	if !ok {
		cb(post.ErrNoLog)
		return
	}
	cb(nil)
}

func (m *memLogs) Append(name string, body []byte, cb func(uint64, error)) {
	m.mu.Lock()
	m.logs[name] = append(m.logs[name], slices.Clone(body))
	at := uint64(len(m.logs[name]) - 1)
	m.mu.Unlock()
	cb(at, nil)
}

func (m *memLogs) Entries(name string, since uint64) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	es, ok := m.logs[name]
	if !ok {
		return nil, post.ErrNoLog
	}
	if since >= uint64(len(es)) {
		return nil, nil
	}
	return slices.Clone(es[since:]), nil
}

// replace swaps a log's entries (a merge rebuilt it).
func (m *memLogs) replace(name string, es [][]byte) {
	m.mu.Lock()
	m.logs[name] = es
	m.mu.Unlock()
}

type noContents struct{}

func (noContents) Put([]byte, func(content.Ref, error)) {}
func (noContents) Get(_ content.Ref, cb func([]byte, error)) {
	cb(nil, errors.New("no content store in this test"))
}
func (noContents) GetForeign(_ content.Ref, cb func([]byte, error)) {
	cb(nil, errors.New("no content store in this test"))
}

func openMem(t *testing.T, logs *memLogs, clock transport.Clock, cacheFile ...string) *Store {
	t.Helper()
	cfg := Config{Address: "u@test.example", Logs: logs, Contents: noContents{}, Clock: clock,
		Rand: rand.NewChaCha8([32]byte{1}), Timeout: time.Second}
	if len(cacheFile) > 0 {
		cfg.CacheFile = cacheFile[0]
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func smallMessage(i int) []byte {
	return []byte(fmt.Sprintf("Subject: m%d\r\n\r\nbody %d\r\n", i, i))
}

// merged is the log with other's entry put after the header and our first message, before
// the rest of ours: what a merge of two writers' heads makes of it.
func merged(logs *memLogs, name string) [][]byte {
	es, _ := logs.Entries(name, 0)
	other := (&entry{Kind: kindInsert, Records: []record{{Date: time.Unix(1e9, 0).UTC(), Size: 21,
		Segments: []segment{{Inline: []byte("Subject: other\r\n\r\nx\r\n")}}}}}).encode()
	m := append(slices.Clone(es[:2]), other)
	return append(m, es[2:]...)
}

// A folder log rebuilt under the store by a merge (the other writer's entries placed before
// ours beyond the shared part) gets a new, larger UIDVALIDITY at once, and a header entry
// that makes it the log's: a store opened afresh from the log agrees, and UIDs the old
// value covered are never reused under it.
func TestRebuiltFolderGetsNewUIDValidity(t *testing.T) {
	logs := newMemLogs(post.RootLog, post.InboxLog)
	clock := transport.RealClock{}
	s := openMem(t, logs, clock)
	defer s.Close()
	f, err := s.Folder(mailbox.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := f.Append(smallMessage(i), nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := f.Status()
	// The merge: the other writer's message went in after the header and the first of ours,
	// ours follow it.
	m := merged(logs, post.InboxLog)
	logs.replace(post.InboxLog, m)

	after, err := f.Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.UIDValidity <= before.UIDValidity {
		t.Fatalf("UIDVALIDITY after the rebuild %d, before %d: want a larger one", after.UIDValidity, before.UIDValidity)
	}
	if after.Messages != 4 {
		t.Fatalf("%d messages after the merge, want 4", after.Messages)
	}
	// A change writes the header entry (outside the store's lock).
	if _, err := f.Append(smallMessage(9), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	es, _ := logs.Entries(post.InboxLog, 0)
	found := false
	for _, b := range es[len(m):] {
		if e, err := decodeEntry(b); err == nil && e.Kind == kindHeader && e.UIDValidity == after.UIDValidity {
			found = true
		}
	}
	if !found {
		t.Fatalf("no header entry with UIDVALIDITY %d was appended to the log", after.UIDValidity)
	}
	fresh := openMem(t, logs, clock)
	defer fresh.Close()
	ff, _ := fresh.Folder(mailbox.Inbox)
	st, _ := ff.Status()
	if st.UIDValidity != after.UIDValidity {
		t.Fatalf("a store opened from the log has UIDVALIDITY %d, the rebuilt one %d", st.UIDValidity, after.UIDValidity)
	}
}

// The same, with the node down while the log was rebuilt: the store's cache no longer
// matches the log when it opens, and the folder gets a new UIDVALIDITY then.
func TestFolderRebuiltWhileDownGetsNewUIDValidity(t *testing.T) {
	logs := newMemLogs(post.RootLog, post.InboxLog)
	clock := transport.RealClock{}
	cache := filepath.Join(t.TempDir(), "mail.cache")
	s := openMem(t, logs, clock, cache)
	f, _ := s.Folder(mailbox.Inbox)
	for i := range 3 {
		if _, err := f.Append(smallMessage(i), nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := f.Status()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs.replace(post.InboxLog, merged(logs, post.InboxLog))
	s = openMem(t, logs, clock, cache)
	defer s.Close()
	f, _ = s.Folder(mailbox.Inbox)
	after, _ := f.Status()
	if after.UIDValidity <= before.UIDValidity || after.Messages != 4 {
		t.Fatalf("after reopening on a rebuilt log: UIDVALIDITY %d (before %d), %d messages", after.UIDValidity, before.UIDValidity, after.Messages)
	}
	es, _ := logs.Entries(post.InboxLog, 0)
	if e, err := decodeEntry(es[len(es)-1]); err != nil || e.Kind != kindHeader || e.UIDValidity != after.UIDValidity {
		t.Fatalf("the log's last entry is not the new UIDVALIDITY's header: %+v %v", e, err)
	}
}

// Writing the cache file does not hold the store's lock while it encodes: a flag change made
// between the snapshot and its encoding completes at once, flag changes go on while it
// encodes (under -race, the detector sees any state the encoding shares with them), and a
// store opened afresh from that cache and the log shows every change.
func TestCacheEncodedWithoutTheLock(t *testing.T) {
	logs := newMemLogs(post.RootLog, post.InboxLog)
	cache := filepath.Join(t.TempDir(), "mail.cache")
	s := openMem(t, logs, transport.RealClock{}, cache)
	f, err := s.Folder(mailbox.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	var uids []mailbox.UID
	for i := range 3 {
		uid, err := f.Append(smallMessage(i), nil, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, uid)
	}
	toggled := make(chan error, 1)
	hook := func() {
		done := make(chan error, 1)
		go func() {
			_, err := f.ChangeFlags(uids[1:2], mailbox.FlagsAdd, []mailbox.Flag{mailbox.FlagFlagged}, 0)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("flag change during the cache write: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("a flag change waited for the cache write's encoding: the store's lock is still held")
		}
		go func() { // while the snapshot is encoded
			for range 50 {
				for _, op := range []mailbox.FlagOp{mailbox.FlagsAdd, mailbox.FlagsRemove} {
					if _, err := f.ChangeFlags(uids, op, []mailbox.Flag{mailbox.FlagSeen, "$x"}, 0); err != nil {
						toggled <- err
						return
					}
				}
			}
			toggled <- nil
		}()
	}
	cacheSnapshotted.Store(&hook)
	defer cacheSnapshotted.Store(nil)
	if err := s.writeCache(); err != nil {
		t.Fatal(err)
	}
	cacheSnapshotted.Store(nil)
	if err := <-toggled; err != nil {
		t.Fatalf("flag changes during the cache write: %v", err)
	}
	s.Close()

	s2 := openMem(t, logs, transport.RealClock{}, cache)
	defer s2.Close()
	f2, err := s2.Folder(mailbox.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	list, err := f2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("reopened from the cache: %d messages, want 3", len(list))
	}
	for _, m := range list {
		if flagged := slices.Contains(m.Flags, mailbox.FlagFlagged); flagged != (m.UID == uids[1]) {
			t.Errorf("reopened from the cache: UID %d flags %v", m.UID, m.Flags)
		}
	}
}
