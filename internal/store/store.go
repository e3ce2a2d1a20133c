package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"epost/internal/diskstat"
)

// Store is one node's durable object store. See the package comment for the durability and
// concurrency rules.
type Store struct {
	dir     string
	blobDir string
	tmpDir  string
	opts    Options
	db      *bolt.DB
	repairs RepairReport

	// mu guards pins. A pin marks a payload file that a writer is creating or relying on
	// before its index transaction commits, so that a concurrent purge of the same content does
	// not delete the file in between. mu is a leaf lock: nothing waits for a transaction while
	// holding it except removeBlobIfUnused's short read transaction, and no goroutine takes mu
	// while holding a transaction.
	mu   sync.Mutex
	pins map[Hash]int

	group committer

	// The overlay (overlay.go, journal.go): committed changes not yet in index.db. Only the
	// commit leader changes it, under overMu; reads hold overMu for reading.
	journal     *journal
	vlog        *valueLog // payloads kept in journal files (values.go)
	overMu      sync.RWMutex
	over        *layer
	frozen      *layer // being written into index.db by a background checkpoint, or nil
	frozenEpoch uint64 // the epoch of frozen's records (index.journal.prev)
	// prevToRetire is the epoch of index.journal.prev once a checkpoint holds its records and
	// until it is retired (values.go); 0: none. Guarded by overMu.
	prevToRetire uint64
	overSince    time.Time    // when the overlay last went from empty to not
	indexSize    atomic.Int64 // index.db's pages in use after the last checkpoint (checkpointLimit)
	ckpt         sync.WaitGroup
	closing      chan struct{}
	closeOnce    sync.Once

	lazyMu    sync.Mutex
	lazy      []lazyOp // lazy.go
	lazyTimer *time.Timer
}

// Open opens (creating if needed) the store in dir and repairs what a crash may have left
// behind: it removes temporary and orphan payload files, corrects reference counts and
// statistics if they disagree with the index, and records objects whose payload is missing or
// damaged in Repairs (and in the log). Only one process may have dir open.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	s := &Store{
		dir:     dir,
		blobDir: filepath.Join(dir, "blobs"),
		tmpDir:  filepath.Join(dir, "tmp"),
		opts:    opts,
		closing: make(chan struct{}),
		pins:    make(map[Hash]int),
		over:    newLayer(),
		vlog:    newValueLog(dir),
	}
	for _, d := range []string{dir, s.blobDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("store open %s: %w", dir, err)
		}
	}
	// Make the subdirectories' entries durable before anything is renamed into them.
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("store open %s: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The map freelist keeps commits fast on large files; not syncing the freelist saves
		// a page write per commit at the cost of a scan at open. Durability is unaffected.
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		// Address space, not memory: a file growing inside the mapping is never remapped (a
		// remap copies every node the writing transaction touched out of the old mapping).
		InitialMmapSize: initialMmap,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store open %s: the directory is locked by another process (is another epost node using it?): %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store open %s: %w", dir, err)
	}
	s.db = db
	if err := s.initIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store open %s: %w", dir, err)
	}
	if err := s.openJournal(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store open %s: %w", dir, err)
	}
	if err := s.repair(); err != nil {
		s.vlog.close(s.journal.epoch)
		s.journal.f.Close()
		db.Close()
		return nil, fmt.Errorf("store open %s: repair: %w", dir, err)
	}
	s.noteIndexSize()
	s.compactSoon()
	return s, nil
}

func (s *Store) initIndex() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		diskstat.StoreIndex.BoltCommit(tx)
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		switch v := m.Get(metaFormat); {
		case v == nil:
			// A new index. If payload files exist, the old index is gone: repair would delete
			// every file as an orphan, so stop and let a human decide.
			if es, err := os.ReadDir(s.blobDir); err != nil || len(es) > 0 {
				return fmt.Errorf("index.db is new but %s holds %d payload files (was index.db lost?); "+
					"move the blobs directory away to start empty, or restore index.db (%v)", s.blobDir, len(es), err)
			}
			return m.Put(metaFormat, []byte{formatVersion})
		case len(v) != 1 || v[0] != formatVersion:
			return fmt.Errorf("index format %v is not the supported version %d; use a matching epost release", v, formatVersion)
		}
		return nil
	})
}

// Close releases the directory. Calls after Close return ErrClosed.
func (s *Store) Close() error {
	_ = s.FlushLazy()
	s.closeOnce.Do(func() { close(s.closing) })
	s.ckpt.Wait()
	// Without the checkpoint nothing is lost (Open replays the journal); with it Open is quick.
	if err := s.exclusive(s.checkpoint); err != nil && !errors.Is(err, ErrClosed) {
		s.opts.Logger.Warn("store: checkpoint at close failed; the journal keeps the changes", "dir", s.dir, "err", err)
	}
	s.vlog.close(s.journal.epoch)
	_ = s.journal.f.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store close %s: %w", s.dir, err)
	}
	return nil
}

// Dir is the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// Repairs is what Open found and did. Damaged entries stay in the index (so their metadata is
// not lost); Get returns ErrCorrupt for them until a good copy is Put again.
func (s *Store) Repairs() RepairReport { return s.repairs }

// Stats returns the current counts, consistent with one committed state of the index.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *readTx) error {
		st = decodeStats(tx.Bucket(bucketMeta).Get(metaStats))
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("store stats: %w", err)
	}
	return st, nil
}

func (s *Store) now() time.Time { return s.opts.Now() }

// view runs a read transaction over the overlay and index.db, translating bbolt's
// closed-database error into ErrClosed. fn must be short: it holds up the next commit.
func (s *Store) view(fn func(*readTx) error) error {
	s.overMu.RLock()
	defer s.overMu.RUnlock()
	return mapClosed(s.db.View(func(tx *bolt.Tx) error {
		return fn(&readTx{base: tx, layers: s.layersLocked()})
	}))
}

// layersLocked lists the committed layers over index.db, newest first; the caller holds
// overMu (a reader must then begin its bbolt transaction before it lets go, so that a layer
// dropped after a checkpoint is in what it reads).
func (s *Store) layersLocked() []*layer {
	if s.frozen != nil {
		return []*layer{s.over, s.frozen}
	}
	return []*layer{s.over}
}

func mapClosed(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
