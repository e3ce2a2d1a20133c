package post

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"epost/internal/diskstat"
)

// smallCompactions lets a head record file be rewritten at any size for the rest of the test.
func smallCompactions(t *testing.T) {
	old := compactHeadBytes
	compactHeadBytes = 0
	t.Cleanup(func() { compactHeadBytes = old })
}

// The file keeps the newest record per log across reopenings, ignores a torn record at the
// end (a crash during Save), refuses damage in the middle, and stays small however many
// heads are written.
func TestFileHeadRecords(t *testing.T) {
	smallCompactions(t)
	path := filepath.Join(t.TempDir(), FileHeadRecordsName)
	h, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 500; seq++ {
		for _, name := range []string{RootLog, InboxLog, "Sent"} {
			if err := h.Save(name, seq, fmt.Appendf(nil, "%s head %d", name, seq)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.Save(InboxLog, 3, []byte("older")); err != nil { // ignored: lower seq
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 8<<10 {
		t.Fatalf("1,500 saves of 3 logs left a %d-byte file: not compacted", fi.Size())
	}
	// A torn record at the end.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := headRecord(InboxLog, 900, []byte("torn"))
	if _, err := f.Write(torn[:len(torn)-2]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	h, err = OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := h.Load()
	for _, name := range []string{RootLog, InboxLog, "Sent"} {
		if r := recs[name]; r.Seq != 500 || string(r.Payload) != fmt.Sprintf("%s head 500", name) {
			t.Fatalf("%s: got seq %d %q after reopening, want 500", name, r.Seq, r.Payload)
		}
	}
	h.Close()
	// Damage in the middle is refused, not silently skipped.
	data, _ := os.ReadFile(path)
	data = append(data, headRecord("x", 1, []byte("y"))...)
	data[10] ^= 0xff
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileHeadRecords(path); err == nil {
		t.Fatal("a damaged record in the middle was accepted")
	}
}

// A busy log's records are not rewritten every few hundred Saves (each rewrite holds up the
// user's Saves): the file is compacted only once it holds compactHeadBytes, then it is small
// again and still holds the newest record of each log.
func TestFileHeadRecordsCompactBySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileHeadRecordsName)
	h, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	seq := uint64(0)
	for range 1000 {
		seq++
		if err := h.Save(InboxLog, seq, fmt.Appendf(nil, "head %d", seq)); err != nil {
			t.Fatal(err)
		}
	}
	small := size()
	if small < 1000*20 {
		t.Fatalf("1,000 records of one log in a %d-byte file: compacted below compactHeadBytes", small)
	}
	big := bytes.Repeat([]byte{'h'}, 16<<10)
	peak := int64(0)
	for range 2 * compactHeadBytes / int64(len(big)) {
		seq++
		if err := h.Save(InboxLog, seq, append(big, fmt.Sprint(seq)...)); err != nil {
			t.Fatal(err)
		}
		got := size()
		if got < 2*int64(len(big)) {
			break // the Save that took the file to compactHeadBytes rewrote it
		}
		peak = max(peak, got)
	}
	if got := size(); got >= 2*int64(len(big)) || peak < compactHeadBytes-2*int64(len(big)) {
		t.Fatalf("the file holds %d bytes, at most %d before: not compacted at %d", got, peak, compactHeadBytes)
	}
	if err := h.Save("Sent", 1, []byte("sent")); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h2, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	recs, err := h2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[InboxLog]; r.Seq != seq || !bytes.Equal(r.Payload, append(big, fmt.Sprint(seq)...)) {
		t.Fatalf("INBOX's record after the compaction: seq %d (want %d)", r.Seq, seq)
	}
	if string(recs["Sent"].Payload) != "sent" {
		t.Fatalf("Sent's record: %+v", recs["Sent"])
	}
}

// Saves running together share fsyncs, and every one of them is durable when it returns: the
// file reopened holds each log's newest record.
func TestFileHeadRecordsGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileHeadRecordsName)
	h, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, saves = 16, 40
	before := diskstat.Snapshot()["post_heads"].Fsyncs
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("folder-%d", w)
			for seq := uint64(1); seq <= saves; seq++ {
				if err := h.Save(name, seq, fmt.Appendf(nil, "%s head %d", name, seq)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fsyncs := diskstat.Snapshot()["post_heads"].Fsyncs - before
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h, err = OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	recs, _ := h.Load()
	for w := range writers {
		name := fmt.Sprintf("folder-%d", w)
		if r := recs[name]; r.Seq != saves || string(r.Payload) != fmt.Sprintf("%s head %d", name, saves) {
			t.Fatalf("%s reopened at seq %d (%q), want %d", name, r.Seq, r.Payload, saves)
		}
	}
	t.Logf("%d saves took %d fsyncs of the record file (compactions not counted)", writers*saves, fsyncs)
	if fsyncs >= writers*saves {
		t.Fatalf("%d concurrent saves took %d fsyncs: none shared", writers*saves, fsyncs)
	}
}

// A Save settled by a good fsync that wakes after a later fsync failed must not discard that
// failure before the Saves waiting for it have seen it: their records are not durable (the
// file is rewritten only by the next Save), and a nil would send their heads to the ring.
func TestFileHeadRecordsLateWaiterKeepsFailure(t *testing.T) {
	h, err := OpenFileHeadRecords(filepath.Join(t.TempDir(), FileHeadRecordsName))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	// Generation 1 was settled by a good fsync; its Save has not woken yet. The next fsync,
	// for generations 2 and 3, failed; 2 was the Save that ran it and returned its error.
	failure := errors.New("simulated fsync failure")
	h.appended, h.settled, h.rewrite = 3, 3, true
	h.failed = []genRange{{from: 2, to: 3, err: failure, left: 2}}
	if err := h.outcome(2); !errors.Is(err, failure) {
		t.Fatalf("generation 2: %v, want the fsync's failure", err)
	}
	if err := h.outcome(1); err != nil {
		t.Fatalf("generation 1, settled by a good fsync: %v", err)
	}
	if err := h.outcome(3); !errors.Is(err, failure) {
		t.Fatalf("generation 3, whose fsync failed, woken after generation 1: %v, want the fsync's failure", err)
	}
	if len(h.failed) != 0 {
		t.Fatalf("failed ranges kept after every waiter saw them: %v", h.failed)
	}
}

// Close while a Save waits for the fsync of its record (appended during another Save's
// fsync): the waiting Save returns an error, never runs an fsync of the closed file (a nil
// file: the process crashed), and a Save that returned nil is in the file reopened.
func TestFileHeadRecordsCloseWhileSaving(t *testing.T) {
	old := syncHeadFile
	defer func() { syncHeadFile = old }()
	closedFirst := 0
	for trial := range 40 {
		path := filepath.Join(t.TempDir(), FileHeadRecordsName)
		h, err := OpenFileHeadRecords(path)
		if err != nil {
			t.Fatal(err)
		}
		entered, release := make(chan struct{}), make(chan struct{})
		var calls sync.Mutex
		first := true
		syncHeadFile = func(f *os.File) error {
			calls.Lock()
			wasFirst := first
			first = false
			calls.Unlock()
			if wasFirst {
				close(entered)
				<-release
			}
			return f.Sync()
		}
		var wg sync.WaitGroup
		var errA, errB error
		wg.Add(1)
		go func() { defer wg.Done(); errA = h.Save("a", 1, []byte("a")) }()
		<-entered
		wg.Add(1)
		go func() { defer wg.Done(); errB = h.Save("b", 1, []byte("b")) }()
		for {
			h.mu.Lock()
			n := h.appended
			h.mu.Unlock()
			if n == 2 {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = h.Close() }()
		time.Sleep(time.Millisecond) // Close waits for the fsync under way
		close(release)
		wg.Wait()
		syncHeadFile = old
		if errA != nil {
			t.Fatalf("trial %d: the Save whose fsync ran before Close: %v", trial, errA)
		}
		if errB != nil {
			closedFirst++
			continue
		}
		h, err = OpenFileHeadRecords(path)
		if err != nil {
			t.Fatal(err)
		}
		recs, _ := h.Load()
		_ = h.Close()
		if _, ok := recs["b"]; !ok {
			t.Fatalf("trial %d: Save of b returned nil, but the file reopened lacks it", trial)
		}
	}
	t.Logf("Close came first in %d of 40 trials", closedFirst)
}

// A compaction that fails after its rename (the directory's fsync) leaves the open file
// replaced, no longer at the path: the next Save compacts again instead of appending to the
// replaced file, where its record, fsync and all, would be lost (and acknowledged when the
// compaction after it fails too, before its rename).
func TestFileHeadRecordsCompactionFailsAfterRename(t *testing.T) {
	smallCompactions(t)
	path := filepath.Join(t.TempDir(), FileHeadRecordsName)
	h, err := OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	old := syncHeadDir
	defer func() { syncHeadDir = old }()
	failed := false
	syncHeadDir = func(dir string) error {
		if !failed {
			failed = true
			return errors.New("simulated directory fsync failure")
		}
		return old(dir)
	}
	// Enough records of one log to compact (more than 64, eight times the logs).
	for seq := uint64(1); !failed; seq++ {
		if err := h.Save("INBOX", seq, []byte("inbox")); err != nil {
			t.Fatalf("save %d: %v", seq, err)
		}
	}
	// Compactions fail before their rename from now on (the new file cannot be written).
	if err := os.Mkdir(path+".tmp", 0o700); err != nil {
		t.Fatal(err)
	}
	acked := h.Save("Sent", 1, []byte("sent")) == nil
	if err := os.Remove(path + ".tmp"); err != nil {
		t.Fatal(err)
	}
	_ = h.Close()
	h, err = OpenFileHeadRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	recs, _ := h.Load()
	if r, ok := recs["Sent"]; acked && (!ok || string(r.Payload) != "sent") {
		t.Fatalf("Save of Sent returned nil after a failed compaction, but the file reopened has %+v", recs)
	}
}

// A compaction at open that fails after its rename leaves the new, shorter file at the path
// (the old one ended in a torn record):
// the file is opened as it is (not cut to the old file's length, which padded it with zeros
// and made the next open find it damaged), and the next Save compacts again first.
func TestFileHeadRecordsOpenCompactionFailsAfterRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileHeadRecordsName)
	var data []byte
	for seq := uint64(1); seq <= 60; seq++ { // 60 records of one log: the compaction keeps 1
		data = append(data, headRecord("INBOX", seq, []byte(fmt.Sprintf("inbox %d", seq)))...)
	}
	data = append(data, headRecord("INBOX", 61, []byte("torn"))[:9]...) // a crash mid-Save
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	old := syncHeadDir
	defer func() { syncHeadDir = old }()
	syncHeadDir = func(string) error { return errors.New("simulated directory fsync failure") }
	h, err := OpenFileHeadRecords(path)
	syncHeadDir = old
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Save("Sent", 1, []byte("sent")); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h, err = OpenFileHeadRecords(path)
	if err != nil {
		t.Fatalf("reopened after a compaction at open failed past its rename: %v", err)
	}
	defer h.Close()
	recs, _ := h.Load()
	if string(recs["INBOX"].Payload) != "inbox 60" || string(recs["Sent"].Payload) != "sent" {
		t.Fatalf("reopened: %+v", recs)
	}
}

// A Save whose fsync failed is forgotten: its caller writes that head to no replica, so
// neither a later compaction nor a reopened file may name it (a restart would write it back,
// and with it entries the client was told had failed). The record before it stays.
func TestFileHeadRecordsFailedSaveIsForgotten(t *testing.T) {
	old := syncHeadFile
	defer func() { syncHeadFile = old }()
	for _, then := range []string{"save another", "close"} {
		path := filepath.Join(t.TempDir(), FileHeadRecordsName)
		h, err := OpenFileHeadRecords(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Save("a", 1, []byte("one")); err != nil {
			t.Fatal(err)
		}
		syncHeadFile = func(*os.File) error { return errors.New("injected fsync failure") }
		if err := h.Save("a", 2, []byte("two")); err == nil {
			t.Fatalf("%s: the Save whose fsync failed returned nil", then)
		}
		if err := h.Save("c", 1, []byte("c")); err == nil {
			t.Fatalf("%s: a new log's Save whose fsync failed returned nil", then)
		}
		syncHeadFile = old
		recs, _ := h.Load()
		if r := recs["a"]; r.Seq != 1 || string(r.Payload) != "one" {
			t.Fatalf("%s: in memory after the failure: a at seq %d %q, want 1 %q", then, r.Seq, r.Payload, "one")
		}
		if _, ok := recs["c"]; ok {
			t.Fatalf("%s: a log whose only Save failed is still recorded", then)
		}
		if then == "save another" {
			if err := h.Save("b", 1, []byte("b")); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		h, err = OpenFileHeadRecords(path)
		if err != nil {
			t.Fatal(err)
		}
		recs, _ = h.Load()
		_ = h.Close()
		if r := recs["a"]; r.Seq != 1 || string(r.Payload) != "one" {
			t.Fatalf("%s: reopened: a at seq %d %q, want 1 %q", then, r.Seq, r.Payload, "one")
		}
		if _, ok := recs["c"]; ok {
			t.Fatalf("%s: reopened: a log whose only Save failed is recorded", then)
		}
		if _, ok := recs["b"]; ok != (then == "save another") {
			t.Fatalf("%s: reopened: b recorded %v", then, ok)
		}
	}
}
