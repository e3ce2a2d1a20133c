package diskstat

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestCounts(t *testing.T) {
	l := newLayer("test")
	l.Sync(100)
	l.Sync(0)
	l.Write(10)
	l.Rewrite(1000, 2)
	got := Snapshot()["test"]
	want := Counts{Fsyncs: 4, Bytes: 1110, Rewrites: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestBoltCommit(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := newLayer("bolt")
	put := func(fail bool) {
		_ = db.Update(func(tx *bolt.Tx) error {
			l.BoltCommit(tx)
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), make([]byte, 100)); err != nil {
				return err
			}
			if fail {
				return bolt.ErrTxClosed // any error: rolled back, not counted
			}
			return nil
		})
	}
	put(false)
	put(true)
	c := Snapshot()["bolt"]
	ps := int64(db.Info().PageSize)
	// One commit: two fdatasyncs, at least the leaf, the root bucket page... and the meta page.
	if c.Fsyncs != 2 || c.Bytes < 2*ps || c.Bytes%ps != 0 {
		t.Fatalf("after one commit and one rollback: %+v (page size %d)", c, ps)
	}
}

func TestReadProcIO(t *testing.T) {
	p0, ok := ReadProcIO()
	if !ok {
		t.Skip("no /proc/self/io here")
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "f"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	p1, _ := ReadProcIO()
	if p1.Syscw <= p0.Syscw || p1.Wchar < p0.Wchar+4096 {
		t.Fatalf("a 4 KiB write: before %+v, after %+v", p0, p1)
	}
}
