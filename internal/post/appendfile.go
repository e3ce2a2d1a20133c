package post

import (
	"fmt"
	"os"
)

// appendFile is an append-only file whose records are never written behind a torn one. A
// write that fails part way (a full disk, an I/O error) leaves the start of a record at the
// end of the file; the next append would put a whole record after it, and a reader (which
// stops at the first damaged record, or refuses a file damaged in the middle) would lose
// that record and every later one. So a failed append is cut off at once, and while it cannot
// be (the truncate failed too) nothing more is appended: the next append first tries the cut
// again. Not safe for concurrent use; its owner serializes calls.
type appendFile struct {
	f    *os.File
	size int64 // the length of the file's whole records
	cut  bool  // a failed write is still to be cut off at size
}

// openAppendFile opens path for appending; its current length is taken as whole records
// (its owner has just written or checked them).
func openAppendFile(path string) (*appendFile, error) { return openAppend(path, 0) }

// createAppendFile is openAppendFile, creating the file when there is none.
func createAppendFile(path string) (*appendFile, error) { return openAppend(path, os.O_CREATE) }

func openAppend(path string, flag int) (*appendFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|flag, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &appendFile{f: f, size: fi.Size()}, nil
}

// append writes rec at the end of the file, and syncs it if sync is set. On an error the file
// is as it was before (or is cut back before the next append).
func (a *appendFile) append(rec []byte, sync bool) error {
	if a.cut {
		if err := a.f.Truncate(a.size); err != nil {
			return fmt.Errorf("cannot cut an earlier failed write off: %w", err)
		}
		a.cut = false
	}
	_, err := a.f.Write(rec)
	if err == nil && sync {
		err = a.f.Sync()
	}
	if err != nil {
		if terr := a.f.Truncate(a.size); terr != nil {
			a.cut = true
		}
		return err
	}
	a.size += int64(len(rec))
	return nil
}

// truncate empties the file.
func (a *appendFile) truncate() error {
	if err := a.f.Truncate(0); err != nil {
		return err
	}
	a.size, a.cut = 0, false
	return nil
}

func (a *appendFile) Close() error { return a.f.Close() }
