package post

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"epost/internal/diskstat"
)

// A Journal is one user's durable local received set on their node: the notifications this
// node has filed whose INBOX entry is not yet in the ring's INBOX log. With a journal, a
// notification counts as filed (Entries and what IMAP shows, then OnFiled) as soon as Record
// returns and its entry is queued for the INBOX log behind any earlier append, and the INBOX
// head write, the parts' lease refresh and the receipt (the drop of the pending copy) follow
// asynchronously. That is safe because:
//
//   - the pending copy stays with its holders until the receipt, and the receipt is sent only
//     after the INBOX head naming the entry is quorum-acknowledged;
//   - a crash after Record and before the head write loses nothing: on restart the journal is
//     replayed, every entry the ring's INBOX lacks is appended again, and a re-delivered
//     pending copy finds its id in the received set and is not filed a second time;
//   - a crash after the head write and before Forget only leaves an entry that replay finds
//     in INBOX already: it is forgotten and the receipt is sent again (drops are idempotent).
//
// Without a journal (Config.Journals nil), a notification is filed when its INBOX head write
// is acknowledged, as before.
type Journal interface {
	// Record durably stores entry (an EncodeFiled body) under id, with the chunks its
	// notification carried (nil if none): it returns only once they would survive a crash of
	// the node (fsync).
	Record(id NotificationID, entry []byte, carried [][]byte) error
	// Forget says id's entry is now in the ring's INBOX log. It need not be durable: an entry
	// forgotten too late is found in INBOX on replay and forgotten again.
	Forget(id NotificationID) error
	// Entries lists the entries recorded and not forgotten, in the order they were recorded.
	Entries() ([]JournalEntry, error)
}

// JournalEntry is one recorded, not yet forgotten, entry of a Journal.
type JournalEntry struct {
	ID      NotificationID
	Entry   []byte
	Carried [][]byte // the notification's carried chunks, not yet known to be stored
}

// MemJournal is a Journal in memory, for tests and the simulator, where it stands for a disk
// that survives the node's crash (keep it across restarts as the node's local state).
type MemJournal struct {
	mu      sync.Mutex
	entries []JournalEntry
}

// Record implements Journal.
func (j *MemJournal) Record(id NotificationID, entry []byte, carried [][]byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, JournalEntry{ID: id, Entry: slices.Clone(entry), Carried: cloneAll(carried)})
	return nil
}

// Forget implements Journal.
func (j *MemJournal) Forget(id NotificationID) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = slices.DeleteFunc(j.entries, func(e JournalEntry) bool { return e.ID == id })
	return nil
}

// Entries implements Journal.
func (j *MemJournal) Entries() ([]JournalEntry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries), nil
}

// FileJournal is a Journal in an append-only file (the real node's: FileReceivedJournal
// under the user's directory). Each record is [length u32][crc32c u32][kind u8][id][body],
// the body being the entry, or for kind journalAddCarried [entry length u32][entry] and then
// each carried chunk as [length u32][chunk];
// a torn record at the end (a crash mid-write) is ignored, since Record had not returned.
// The file is emptied when every entry is forgotten, and compacted when it is opened.
type FileJournal struct {
	mu      sync.Mutex
	path    string
	f       *appendFile
	live    []JournalEntry
	records int // records in the file, live or forgotten

	// RecordAsync's group commit: records waiting for the next write and fsync, and whether a
	// goroutine is writing them (guarded by pmu, never held while mu is wanted).
	pmu      sync.Mutex
	pending  []pendingRecord
	flushing bool
	syncs    int // fsyncs of recorded entries, for tests (guarded by mu)
}

type pendingRecord struct {
	e    JournalEntry
	rec  []byte
	done func(error)
}

// AsyncJournal is an optional Journal ability (FileJournal has it): Record without holding
// the caller until the fsync. Records that arrive while one fsync runs share the next, so
// concurrent filings on a node cost one fsync between them instead of one each, and the
// node's event loop never waits for the disk.
type AsyncJournal interface {
	// RecordAsync is Record; done runs once the entry is durable (nil) or could not be
	// stored, on another goroutine. It must not block.
	RecordAsync(id NotificationID, entry []byte, carried [][]byte, done func(error))
}

var _ AsyncJournal = (*FileJournal)(nil)

// FileReceivedJournal is the name of the journal file in a user's directory (UserDir).
const FileReceivedJournal = "received.journal"

const (
	journalAdd        = 1
	journalForget     = 2
	journalAddCarried = 3
	maxJournalRec     = 1 + len(NotificationID{}) + 4 + maxEntryBody + 4*maxCarriedChunks + MaxCarried
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrJournalCorrupt: a journal record in the middle of the file is damaged.
var ErrJournalCorrupt = errors.New("post: received journal is damaged; restore the user directory from backup")

// OpenFileJournal opens (or creates, mode 0600) the journal at path, reads what it holds and
// rewrites it compacted.
func OpenFileJournal(path string) (*FileJournal, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("post: journal %s: %w", path, err)
	}
	live, whole, err := parseJournal(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrJournalCorrupt, path, err)
	}
	j := &FileJournal{path: path, live: live}
	// Compact: write the live entries to a new file, sync it, and rename it into place.
	var buf bytes.Buffer
	for _, e := range live {
		buf.Write(addRecord(e.ID, e.Entry, e.Carried))
	}
	tmp := path + ".tmp"
	diskstat.PostJournal.Rewrite(buf.Len(), 2) // the file, then its directory
	err = writeSynced(tmp, buf.Bytes())
	if err == nil {
		if err = os.Rename(tmp, path); err != nil {
			err = fmt.Errorf("post: journal %s: %w", path, err)
		}
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		// A full disk: keep the file as it is, less a torn record at its end, so that the
		// user's mail opens until space returns.
		_ = os.Remove(tmp)
		f, ferr := openTail(path, whole, len(data))
		if ferr != nil {
			return nil, err
		}
		j.f, j.records = f, len(live)
		return j, nil
	}
	f, err := openAppendFile(path)
	if err != nil {
		return nil, fmt.Errorf("post: journal %s: %w", path, err)
	}
	j.f, j.records = f, len(live)
	return j, nil
}

// parseJournal reads records up to the first torn one at the end, and returns the length of
// the whole ones; damage before the end is an error (it cannot come from a crash, since records are only appended).
func parseJournal(data []byte) ([]JournalEntry, int, error) {
	var live []JournalEntry
	off := 0
	for off < len(data) {
		if len(data)-off < 8 {
			break // torn header at the end
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if n < 1+len(NotificationID{}) || n > maxJournalRec {
			return nil, 0, fmt.Errorf("record at %d has length %d", off, n)
		}
		if len(data)-off-8 < n {
			break // torn body at the end
		}
		rec := data[off+8 : off+8+n]
		if crc32.Checksum(rec, crcTable) != sum {
			if off+8+n == len(data) {
				break // the last record was being written
			}
			return nil, 0, fmt.Errorf("record at %d: checksum mismatch", off)
		}
		var id NotificationID
		copy(id[:], rec[1:])
		switch rec[0] {
		case journalAdd:
			live = append(live, JournalEntry{ID: id, Entry: slices.Clone(rec[1+len(id):])})
		case journalAddCarried:
			e, err := parseCarried(id, rec[1+len(id):])
			if err != nil {
				return nil, 0, fmt.Errorf("record at %d: %v", off, err)
			}
			live = append(live, e)
		case journalForget:
			live = slices.DeleteFunc(live, func(e JournalEntry) bool { return e.ID == id })
		default:
			return nil, 0, fmt.Errorf("record at %d has kind %d", off, rec[0])
		}
		off += 8 + n
	}
	return live, off, nil
}

func journalRecord(kind byte, id NotificationID, entry []byte) []byte {
	rec := make([]byte, 8, 8+1+len(id)+len(entry))
	rec = append(rec, kind)
	rec = append(rec, id[:]...)
	rec = append(rec, entry...)
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-8))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], crcTable))
	return rec
}

// addRecord is the record that adds an entry.
func addRecord(id NotificationID, entry []byte, carried [][]byte) []byte {
	if len(carried) == 0 {
		return journalRecord(journalAdd, id, entry)
	}
	body := binary.BigEndian.AppendUint32(nil, uint32(len(entry)))
	body = append(body, entry...)
	for _, c := range carried {
		body = binary.BigEndian.AppendUint32(body, uint32(len(c)))
		body = append(body, c...)
	}
	return journalRecord(journalAddCarried, id, body)
}

// parseCarried reads the body of a journalAddCarried record.
func parseCarried(id NotificationID, b []byte) (JournalEntry, error) {
	e := JournalEntry{ID: id}
	next := func() ([]byte, bool) {
		if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
			return nil, false
		}
		n := int(binary.BigEndian.Uint32(b))
		v := slices.Clone(b[4 : 4+n])
		b = b[4+n:]
		return v, true
	}
	entry, ok := next()
	if !ok {
		return e, errors.New("truncated entry")
	}
	e.Entry = entry
	for len(b) > 0 {
		c, ok := next()
		if !ok {
			return e, errors.New("truncated carried chunk")
		}
		e.Carried = append(e.Carried, c)
	}
	return e, nil
}

// Record implements Journal: the record is written and synced before it returns.
func (j *FileJournal) Record(id NotificationID, entry []byte, carried [][]byte) error {
	if len(entry) > maxEntryBody {
		return fmt.Errorf("%w: journal entry of %d bytes", ErrTooBig, len(entry))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("post: journal %s is closed", j.path)
	}
	rec := addRecord(id, entry, carried)
	diskstat.PostJournal.Sync(len(rec))
	if err := j.f.append(rec, true); err != nil {
		return fmt.Errorf("post: journal %s: %w", j.path, err)
	}
	j.live = append(j.live, JournalEntry{ID: id, Entry: slices.Clone(entry), Carried: cloneAll(carried)})
	j.records++
	j.syncs++
	return nil
}

// RecordAsync implements AsyncJournal.
func (j *FileJournal) RecordAsync(id NotificationID, entry []byte, carried [][]byte, done func(error)) {
	if len(entry) > maxEntryBody {
		done(fmt.Errorf("%w: journal entry of %d bytes", ErrTooBig, len(entry)))
		return
	}
	p := pendingRecord{e: JournalEntry{ID: id, Entry: slices.Clone(entry), Carried: cloneAll(carried)},
		rec: addRecord(id, entry, carried), done: done}
	j.pmu.Lock()
	j.pending = append(j.pending, p)
	start := !j.flushing
	j.flushing = true
	j.pmu.Unlock()
	if start {
		go j.flushPending()
	}
}

// flushPending writes and syncs the waiting records, in batches, until none is left.
func (j *FileJournal) flushPending() {
	for {
		j.pmu.Lock()
		batch := j.pending
		j.pending = nil
		if len(batch) == 0 {
			j.flushing = false
			j.pmu.Unlock()
			return
		}
		j.pmu.Unlock()
		err := j.writeBatch(batch)
		for _, p := range batch {
			p.done(err)
		}
	}
}

// writeBatch appends the batch's records, fsyncs and adds their entries to the live set, all
// under mu (a Forget in between could otherwise empty the file under them). On an error the
// file is cut back to where it was, so that no later record is read behind a torn one.
func (j *FileJournal) writeBatch(batch []pendingRecord) error {
	var buf []byte
	for _, p := range batch {
		buf = append(buf, p.rec...)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("post: journal %s is closed", j.path)
	}
	diskstat.PostJournal.Sync(len(buf))
	if err := j.f.append(buf, true); err != nil {
		return fmt.Errorf("post: journal %s: %w", j.path, err)
	}
	for _, p := range batch {
		j.live = append(j.live, p.e)
	}
	j.records += len(batch)
	j.syncs++
	return nil
}

// Forget implements Journal. It does not sync (see Journal); once nothing is live the file is
// emptied.
func (j *FileJournal) Forget(id NotificationID) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("post: journal %s is closed", j.path)
	}
	before := len(j.live)
	j.live = slices.DeleteFunc(j.live, func(e JournalEntry) bool { return e.ID == id })
	if len(j.live) == before {
		return nil
	}
	if len(j.live) == 0 {
		// Every entry is in the ring: start over. A crash before this reaches the disk
		// replays entries INBOX has, which are forgotten again.
		if err := j.f.truncate(); err != nil {
			return fmt.Errorf("post: journal %s: %w", j.path, err)
		}
		j.records = 0
		return nil
	}
	diskstat.PostJournal.Write(8 + 1 + len(id))
	if err := j.f.append(journalRecord(journalForget, id, nil), false); err != nil {
		return fmt.Errorf("post: journal %s: %w", j.path, err)
	}
	j.records++
	return nil
}

// Entries implements Journal.
func (j *FileJournal) Entries() ([]JournalEntry, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.live), nil
}

// Close closes the file.
func (j *FileJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path) // a full disk: leave no partial copy taking space
		return fmt.Errorf("post: write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("post: sync %s: %w", dir, err)
	}
	return nil
}
