package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"epost/internal/diskstat"
)

// Payload files. A file's name is the hex SHA-256 of its content, so a file is either
// complete and correct or detectably wrong; it is created by write-to-temp, fsync, rename,
// fsync-directory, which leaves no window in which a crash exposes a partial file under its
// final name.

func (s *Store) blobPath(h Hash) string { return filepath.Join(s.blobDir, h.String()) }

// pin protects h's file from removal until unpin; see Store.mu.
func (s *Store) pin(h Hash) {
	s.mu.Lock()
	s.pins[h]++
	s.mu.Unlock()
}

func (s *Store) unpin(h Hash) {
	s.mu.Lock()
	if s.pins[h]--; s.pins[h] <= 0 {
		delete(s.pins, h)
	}
	s.mu.Unlock()
}

// writeBlob makes sure blobs/h holds data, which must hash to h. The caller holds a pin on h
// and must fsync the blob directory afterwards (once for a whole batch) before committing an
// index entry that refers to the file.
func (s *Store) writeBlob(h Hash, data []byte) error {
	path := s.blobPath(h)
	// Identical content may already be there (dedup). Check it rather than trust it: writing a
	// good copy over a damaged file is how a store heals.
	if fi, err := os.Stat(path); err == nil && fi.Size() == int64(len(data)) {
		if old, err := os.ReadFile(path); err == nil && Hash(sha256.Sum256(old)) == h {
			return nil
		}
	}
	f, err := os.CreateTemp(s.tmpDir, h.String()+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
		diskstat.StoreBlobs.Sync(len(data))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write payload file %s: %w", h, err)
	}
	return nil
}

// readBlob reads and verifies blobs/h. A missing file is reported as fs.ErrNotExist so that
// Get can tell a concurrent purge from damage.
func (s *Store) readBlob(h Hash, size int64) ([]byte, error) {
	data, err := os.ReadFile(s.blobPath(h))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("%w: payload file %s has %d bytes, want %d", ErrCorrupt, h, len(data), size)
	}
	if Hash(sha256.Sum256(data)) != h {
		return nil, fmt.Errorf("%w: payload file %s does not hash to its name", ErrCorrupt, h)
	}
	return data, nil
}

// removeBlobIfUnused deletes blobs/h unless a writer has pinned it or the index refers to it
// as a file. Holding mu across the check and the removal makes the two atomic with respect to
// pin: a writer either pins first (we keep the file) or pins after the removal (it writes a
// fresh file). A writer that pinned and already committed is visible in the read transaction.
func (s *Store) removeBlobIfUnused(h Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pins[h] > 0 {
		return
	}
	used := true
	err := s.view(func(tx *readTx) error {
		v := tx.Bucket(bucketPayload).Get(h[:])
		used = v != nil && len(v) > 8 && location(v[8]) == inFile
		return nil
	})
	if err != nil || used {
		// On error keep the file: an orphan costs disk until the next Open, a wrong removal
		// costs data.
		return
	}
	if err := os.Remove(s.blobPath(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.opts.Logger.Warn("store: cannot remove unused payload file", "dir", s.dir, "hash", h.String(), "err", err)
	}
}

// syncDir fsyncs a directory so that renames and creations inside it survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	diskstat.StoreBlobs.Sync(0)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
