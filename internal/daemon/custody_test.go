package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/post"
)

// TestCustodyFiles: a kept bundle reads back whole, is first due one timeout after it was kept
// (or, after a restart, one timeout after the node saw it), and is gone once dropped.
func TestCustodyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), FileCustody)
	c := &custody{dir: dir, next: map[string]time.Time{}}
	b := &post.RemoteBundle{Dest: ids.RingIDOf("globex"), Chunks: [][]byte{bytes.Repeat([]byte{9}, 5000)},
		Notes: []post.RemoteNote{{To: "bob@globex.example", ID: post.NotificationID{3}, Sealed: []byte("sealed")}}}
	now := time.Unix(1_800_000_000, 0)
	const entry = "0123456789abcdef0123456789abcdef"
	if err := c.keep(entry, "alice@acme.example", b, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.keep("../escape", "alice@acme.example", b, now, time.Minute); err == nil {
		t.Fatal("an entry id with a path in it was kept")
	}
	e, err := c.load(entry)
	if err != nil {
		t.Fatal(err)
	}
	if e.from != "alice@acme.example" || !e.taken.Equal(now) || !bytes.Equal(e.bundle.Encode(), b.Encode()) {
		t.Fatalf("read back %q %v, bundle equal %v", e.from, e.taken, bytes.Equal(e.bundle.Encode(), b.Encode()))
	}
	if due, _ := c.due(now.Add(59*time.Second), time.Minute); len(due) != 0 {
		t.Fatalf("due before its time: %v", due)
	}
	if due, _ := c.due(now.Add(time.Minute), time.Minute); len(due) != 1 || due[0] != entry {
		t.Fatalf("due at its time: %v", due)
	}
	// A restart: the entry is on disk, unknown to the new process.
	c2 := &custody{dir: dir, next: map[string]time.Time{}}
	later := now.Add(time.Hour)
	if due, _ := c2.due(later, time.Minute); len(due) != 0 {
		t.Fatalf("due at once after a restart: %v", due)
	}
	if due, _ := c2.due(later.Add(time.Minute), time.Minute); len(due) != 1 || c2.count() != 1 {
		t.Fatalf("after a restart: due %v, count %d", due, c2.count())
	}
	if err := c2.drop(entry); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, entry)); !os.IsNotExist(err) || c2.count() != 0 {
		t.Fatalf("dropped entry still there: %v, count %d", err, c2.count())
	}
	// A damaged file is reported, not taken for a bundle.
	if err := os.WriteFile(filepath.Join(dir, entry), []byte{custodyVersion, 3, 'a'}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.load(entry); err == nil {
		t.Fatal("a truncated custody file loaded")
	}
}
