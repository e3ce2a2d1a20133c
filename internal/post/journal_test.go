package post

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// The file journal keeps what Record returned for across a reopen (a crash), drops what was
// forgotten, ignores a record torn at the end, and refuses damage in the middle.
func TestFileJournalSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileReceivedJournal)
	j, err := OpenFileJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	ids := []NotificationID{{1}, {2}, {3}, {7}}
	for i, id := range ids {
		var carried [][]byte
		if i >= 2 { // with carried chunks
			carried = [][]byte{[]byte("chunk-" + string(rune('a'+i))), {}, []byte("z")}
		}
		if err := j.Record(id, []byte{byte('a' + i)}, carried); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Forget(ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := j.Forget(ids[1]); err != nil {
		t.Fatal(err)
	}
	j.Close()
	// A crash in the middle of the next record leaves a torn tail.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(journalRecord(journalAdd, NotificationID{4}, []byte("torn"))[:10])
	f.Close()

	j, err = OpenFileJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	for reopen := range 2 { // the first open compacted the file: read that back too
		es, _ := j.Entries()
		if len(es) != 2 || es[0].ID != ids[0] || string(es[0].Entry) != "a" || es[0].Carried != nil ||
			es[1].ID != ids[2] || string(es[1].Entry) != "c" || len(es[1].Carried) != 3 ||
			string(es[1].Carried[0]) != "chunk-c" || len(es[1].Carried[1]) != 0 || string(es[1].Carried[2]) != "z" {
			t.Fatalf("after reopen %d: %+v", reopen, es)
		}
		if reopen == 0 {
			j.Close()
			if j, err = OpenFileJournal(path); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Forgetting everything empties the file.
	j.Forget(ids[0])
	j.Forget(ids[2])
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatalf("journal of %d bytes with nothing live", st.Size())
	}
	j.Record(NotificationID{5}, []byte("e"), nil)
	j.Record(NotificationID{6}, []byte("f"), nil)
	j.Close()
	// Damage before the last record is not a crash: refuse, never silently lose entries.
	data, _ := os.ReadFile(path)
	data[9] ^= 0xff
	os.WriteFile(path, data, 0o600)
	if _, err := OpenFileJournal(path); !errors.Is(err, ErrJournalCorrupt) {
		t.Fatalf("damaged journal: %v", err)
	}
}

// parseJournal never panics on arbitrary bytes.
func FuzzParseJournal(f *testing.F) {
	f.Add(journalRecord(journalAdd, NotificationID{1}, []byte("x")))
	f.Add(addRecord(NotificationID{2}, []byte("entry"), [][]byte{[]byte("c1"), []byte("c2")}))
	f.Add(append(journalRecord(journalAdd, NotificationID{1}, []byte("x")), journalRecord(journalForget, NotificationID{1}, nil)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = parseJournal(b)
	})
}

// RecordAsync: entries recorded concurrently are all durable once done ran (a reopen finds
// them, in the order they were recorded), and they share fsyncs instead of one each.
func TestFileJournalRecordAsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileReceivedJournal)
	j, err := OpenFileJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		var carried [][]byte
		if i%3 == 0 {
			carried = [][]byte{{byte(i)}}
		}
		j.RecordAsync(NotificationID{byte(i), byte(i >> 8)}, []byte{byte(i)}, carried, func(err error) {
			errs <- err
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	j.mu.Lock()
	syncs := j.syncs
	j.mu.Unlock()
	if syncs >= n {
		t.Fatalf("%d fsyncs for %d concurrent records: no group commit", syncs, n)
	}
	j.Close()
	j, err = OpenFileJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	es, _ := j.Entries()
	if len(es) != n {
		t.Fatalf("%d entries after reopen, want %d", len(es), n)
	}
	for i, e := range es {
		if e.ID != (NotificationID{byte(i), byte(i >> 8)}) || e.Entry[0] != byte(i) || (i%3 == 0) != (len(e.Carried) == 1) {
			t.Fatalf("entry %d after reopen: %+v", i, e)
		}
	}
	// A closed journal reports the failure to done.
	j.Close()
	done := make(chan error, 1)
	j.RecordAsync(NotificationID{9, 9}, []byte("x"), nil, func(err error) { done <- err })
	if err := <-done; err == nil {
		t.Fatal("RecordAsync on a closed journal succeeded")
	}
}
