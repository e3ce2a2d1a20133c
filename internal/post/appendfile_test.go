package post

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// smallDisk mounts a tmpfs of kb KiB at a new directory and returns it; it skips the test
// when that is not possible (not root).
func smallDisk(t *testing.T, kb int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dk", kb), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill takes all of dir's filesystem but for about room bytes, and returns the filler's path.
func fill(t *testing.T, dir string, room int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	path := filepath.Join(dir, "filler")
	if err := os.WriteFile(path, make([]byte, max(free-room, 0)), 0o600); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	return path
}

// A head record written while the disk fills up part way through it fails, is cut off, and
// does not hide the records saved after space returns (before the fix the torn record stayed
// in the middle of the file, and the user's mail could not be opened again).
func TestHeadRecordsFullDisk(t *testing.T) {
	dir := smallDisk(t, 256)
	path := filepath.Join(dir, FileHeadRecordsName)
	h, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Save("INBOX", 1, []byte("one")); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir, 4096)
	big := bytes.Repeat([]byte{'x'}, 64<<10)
	if err := h.Save("Sent", 1, big); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("saving on a full disk: %v; want ENOSPC", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(headRecord("INBOX", 1, []byte("one")))) {
		t.Fatalf("after the failed save the file has %d bytes; want only the first record", fi.Size())
	}
	// Reopened while the disk is still full (compaction fails): the logs still open.
	h.Close()
	if h, err = OpenFileHeadRecords(path); err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	os.Remove(filler)
	if err := h.Save("INBOX", 2, []byte("two")); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h, err = OpenFileHeadRecords(path)
	if err != nil {
		t.Fatalf("reopen after space returned: %v", err)
	}
	recs, _ := h.Load()
	if r := recs["INBOX"]; r.Seq != 2 || string(r.Payload) != "two" || len(recs) != 1 {
		t.Fatalf("records after reopen: %+v", recs)
	}
	h.Close()
}

// The same for the received-notifications journal, synchronous and group-committed.
func TestJournalFullDisk(t *testing.T) {
	dir := smallDisk(t, 256)
	path := filepath.Join(dir, FileReceivedJournal)
	j, err := OpenFileJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Record(NotificationID{1}, []byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir, 4096)
	big := bytes.Repeat([]byte{'x'}, 64<<10)
	if err := j.Record(NotificationID{2}, []byte("b"), [][]byte{big}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("record on a full disk: %v; want ENOSPC", err)
	}
	done := make(chan error, 1)
	j.RecordAsync(NotificationID{3}, []byte("c"), [][]byte{big}, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("async record on a full disk: %v; want ENOSPC", err)
	}
	j.Close()
	if j, err = OpenFileJournal(path); err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	os.Remove(filler)
	if err := j.Record(NotificationID{4}, []byte("d"), nil); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if j, err = OpenFileJournal(path); err != nil {
		t.Fatalf("reopen after space returned: %v", err)
	}
	es, _ := j.Entries()
	if len(es) != 2 || es[0].ID != (NotificationID{1}) || es[1].ID != (NotificationID{4}) {
		t.Fatalf("entries after reopen: %+v", es)
	}
	j.Close()
}

// An append whose failed write could not be cut off at once is cut before the next one.
func TestAppendFileCutsBeforeNextAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("whole"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := openAppendFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// What a failed write and a failed truncate leave behind.
	if _, err := a.f.Write([]byte("TORN")); err != nil {
		t.Fatal(err)
	}
	a.cut = true
	if err := a.append([]byte("+next"), true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "whole+next" {
		t.Fatalf("file: %q", b)
	}
}
