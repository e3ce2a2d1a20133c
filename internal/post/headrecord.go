package post

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"epost/internal/diskstat"
)

// HeadRecords is a user's durable record, on the user's own node, of the last head the node
// wrote for each of the user's logs: the writer's memory that survives a crash (DESIGN.md,
// layer 8: the writer never goes backwards).
//
// The record is written ahead: a head version is saved here before it is sent to any replica,
// so after a crash the node knows every version the ring may hold from it. A log is then
// opened from the newer of the record and what the ring's replica set holds, never from an
// older one; when the ring holds less (its replicas lost it, or hold stale copies), the node
// writes its recorded state back. Without a record (a node that lost its disk) the ring and
// Glacier are the only sources, and the newest version found wins.
type HeadRecords interface {
	// Save durably records version seq of log name's head with its payload: it returns only
	// once the record would survive a crash of the node (fsync). A lower seq than the one
	// recorded is ignored.
	Save(name string, seq uint64, payload []byte) error
	// Load returns the newest record of every log.
	Load() (map[string]HeadRecord, error)
}

// HeadRecord is the last head version a node wrote for one log.
type HeadRecord struct {
	Seq     uint64
	Payload []byte
}

// MemHeadRecords keeps head records in memory: for tests and the simulator, where it stands
// for the node's disk (keep it across a simulated process restart).
type MemHeadRecords struct {
	mu   sync.Mutex
	recs map[string]HeadRecord
	// Saves counts Save calls (measurement).
	Saves int
}

// Save implements HeadRecords.
func (m *MemHeadRecords) Save(name string, seq uint64, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Saves++
	if m.recs == nil {
		m.recs = map[string]HeadRecord{}
	}
	if r, ok := m.recs[name]; ok && r.Seq > seq {
		return nil
	}
	m.recs[name] = HeadRecord{Seq: seq, Payload: slices.Clone(payload)}
	return nil
}

// Load implements HeadRecords.
func (m *MemHeadRecords) Load() (map[string]HeadRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.recs), nil
}

// FileHeadRecords keeps head records in an append-only file in the user's directory
// (FileHeadRecordsName). Each record is [length u32][crc32c u32][name length u16][name]
// [seq u64][payload]; a torn record at the end (a crash mid-write) is ignored, since Save had
// not returned. When the file holds many times more records than logs, and at least
// compactHeadBytes, it is rewritten with the newest record of each log (into a new file,
// synced, renamed into place): its size is bounded by the larger of eight times the number of
// logs times the size of a head and compactHeadBytes, not by the mailbox. A rewrite holds up
// every Save meanwhile (two fsyncs and a rename), so it is rare: for a user with few logs,
// once per compactHeadBytes of records.
//
// Saves share fsyncs (group commit): a Save appends its record and waits until an fsync that
// began after the append has finished; one caller at a time runs that fsync for every record
// appended until then, so the head writes of a user's folders in flight together cost one
// fsync, not one each, on the user's node.
type FileHeadRecords struct {
	mu      sync.Mutex
	cond    *sync.Cond // signalled when an fsync ends
	path    string
	f       *appendFile
	recs    map[string]HeadRecord
	records int // records in the file

	appended uint64     // records appended since the file was opened (their generation)
	settled  uint64     // records up to this generation are synced, or their fsync failed
	syncing  bool       // a Save runs an fsync without holding mu
	pending  int        // bytes appended and not yet synced
	failed   []genRange // generations whose fsync failed, until each of their Saves has seen it
	rewrite  bool       // an fsync failed: the file's content is uncertain; compact it before appending
}

// genRange is a run of generations whose fsync failed with err.
type genRange struct {
	from, to uint64
	err      error
	left     int // Saves of the range that have not taken their error yet
}

// syncHeadFile syncs the head record file, syncHeadDir its directory; tests replace them
// to make an fsync fail.
var (
	syncHeadFile = func(f *os.File) error { return f.Sync() }
	syncHeadDir  = syncDir
)

// compactHeadBytes is the size below which a head record file is not rewritten (tests lower
// it). Records are whole heads, a few KB each (they carry the entries not yet stored in
// segments). 20 IMAP clients with a folder each had the ring save about 400 a second; when
// the file was rewritten at eight records per log, that held up a user's Saves for 5-15 ms
// about twice a second, which was much of the flag changes' p99.
var compactHeadBytes int64 = 8 << 20

// FileHeadRecordsName is the head record file in a user's directory (UserDir).
const FileHeadRecordsName = "heads.log"

// ErrHeadRecordsCorrupt: a head record in the middle of the file is damaged.
var ErrHeadRecordsCorrupt = errors.New("post: head record file is damaged; move it aside (the logs are then opened from the ring and Glacier alone)")

const maxHeadRecord = 2 + 1024 + 8 + maxInline + 128<<10

// OpenFileHeadRecords opens (or creates, mode 0600) the head records at path.
func OpenFileHeadRecords(path string) (*FileHeadRecords, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("post: head records %s: %w", path, err)
	}
	recs, whole, err := parseHeadRecords(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHeadRecordsCorrupt, path, err)
	}
	h := &FileHeadRecords{path: path, recs: recs}
	h.cond = sync.NewCond(&h.mu)
	if err := h.compact(); err != nil {
		// A full disk: keep the file as it is, less a torn record at its end, so that the
		// user's logs open (and can be read) until space returns.
		size := len(data)
		if h.rewrite {
			// It failed after its rename: the file at path is the new one, all whole
			// records (cutting it to the old file's length would pad it with zeros). The
			// next Save compacts again before it appends, as the rename may not be durable.
			nd, rerr := os.ReadFile(path)
			if rerr != nil {
				return nil, err
			}
			size, whole = len(nd), len(nd)
		}
		f, ferr := openTail(path, whole, size)
		if ferr != nil {
			return nil, err
		}
		h.f, h.records = f, len(recs)
	}
	return h, nil
}

// openTail opens path for appending after cutting it to its first whole bytes (of size),
// when it exists; it is the fallback of a compaction that failed.
func openTail(path string, whole, size int) (*appendFile, error) {
	if size == 0 {
		if _, err := os.Stat(path); err != nil {
			return nil, err
		}
	}
	if whole < size {
		if err := os.Truncate(path, int64(whole)); err != nil {
			return nil, err
		}
	}
	return openAppendFile(path)
}

// parseHeadRecords returns the newest record of each log, and the length of the whole
// records (a torn one may follow).
func parseHeadRecords(data []byte) (map[string]HeadRecord, int, error) {
	recs := map[string]HeadRecord{}
	off := 0
	for off < len(data) {
		if len(data)-off < 8 {
			break // torn header at the end
		}
		size := int(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if size < 2+8 || size > maxHeadRecord {
			return nil, 0, fmt.Errorf("record at %d has length %d", off, size)
		}
		if len(data)-off-8 < size {
			break // torn body at the end
		}
		rec := data[off+8 : off+8+size]
		if crc32.Checksum(rec, crcTable) != sum {
			if off+8+size == len(data) {
				break // the last record was being written
			}
			return nil, 0, fmt.Errorf("record at %d: checksum mismatch", off)
		}
		nl := int(binary.BigEndian.Uint16(rec))
		if 2+nl+8 > len(rec) {
			return nil, 0, fmt.Errorf("record at %d: name of %d bytes", off, nl)
		}
		name := string(rec[2 : 2+nl])
		seq := binary.BigEndian.Uint64(rec[2+nl:])
		if r, ok := recs[name]; !ok || seq >= r.Seq {
			recs[name] = HeadRecord{Seq: seq, Payload: slices.Clone(rec[2+nl+8:])}
		}
		off += 8 + size
	}
	return recs, off, nil
}

func headRecord(name string, seq uint64, payload []byte) []byte {
	b := make([]byte, 8, 8+2+len(name)+8+len(payload))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-8))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

// compact writes the newest record of each log to a new file and renames it into place.
// Called with h.mu held (or before h is shared).
func (h *FileHeadRecords) compact() error {
	var buf bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(h.recs)) {
		r := h.recs[name]
		buf.Write(headRecord(name, r.Seq, r.Payload))
	}
	tmp := h.path + ".tmp"
	diskstat.PostHeads.Rewrite(buf.Len(), 2) // the file, then its directory
	if err := writeSynced(tmp, buf.Bytes()); err != nil {
		return err
	}
	if err := os.Rename(tmp, h.path); err != nil {
		return fmt.Errorf("post: head records %s: %w", h.path, err)
	}
	// From here the open file is no longer at h.path: a record appended to it would be lost
	// (its fsync would succeed all the same). Until the new file is open, every Save
	// compacts again before it appends.
	h.rewrite = true
	if err := syncHeadDir(filepath.Dir(h.path)); err != nil {
		return err
	}
	if h.f != nil {
		_ = h.f.Close()
	}
	f, err := openAppendFile(h.path)
	if err != nil {
		return fmt.Errorf("post: head records %s: %w", h.path, err)
	}
	h.f, h.records = f, len(h.recs)
	// Every record is in the new file, synced: Saves waiting for an fsync are done.
	h.settled, h.pending, h.rewrite = h.appended, 0, false
	return nil
}

// AsyncHeadRecords is an optional HeadRecords ability (*FileHeadRecords has it): SaveAsync is
// Save with its wait for the disk off the caller's goroutine; done gets Save's outcome, once.
// A log writer then sends the head to its replicas while the record is being synced.
type AsyncHeadRecords interface {
	SaveAsync(name string, seq uint64, payload []byte, done func(error))
}

// SaveAsync implements AsyncHeadRecords.
func (h *FileHeadRecords) SaveAsync(name string, seq uint64, payload []byte, done func(error)) {
	go func() { done(h.Save(name, seq, payload)) }()
}

// Save implements HeadRecords: the record is appended, and Save returns once an fsync that
// covers it has finished (shared with the Saves that run meanwhile).
func (h *FileHeadRecords) Save(name string, seq uint64, payload []byte) error {
	if len(name) > 1024 || 2+len(name)+8+len(payload) > maxHeadRecord {
		return fmt.Errorf("%w: head record of %d bytes", ErrTooBig, len(payload))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.rewrite && h.syncing {
		h.cond.Wait()
	}
	if h.f == nil {
		return fmt.Errorf("post: head records %s are closed", h.path)
	}
	if r, ok := h.recs[name]; ok && r.Seq > seq {
		return nil
	}
	if h.rewrite {
		// An earlier fsync failed, so what the file holds is uncertain: write the records
		// to a new file first (a failure here leaves the flag set for the next Save).
		if err := h.compact(); err != nil {
			return fmt.Errorf("post: head records %s: %w", h.path, err)
		}
	}
	rec := headRecord(name, seq, payload)
	if err := h.f.append(rec, false); err != nil {
		return fmt.Errorf("post: head records %s: %w", h.path, err)
	}
	prev, hadPrev := h.recs[name]
	h.recs[name] = HeadRecord{Seq: seq, Payload: slices.Clone(payload)}
	// failed takes the record out of memory again when its Save fails: the caller reports
	// the head's entries failed, so a later compaction must not make it durable (a restart
	// would then write back a head whose entries the client was told had failed; the
	// replicas may hold it, as after any failed insert, until the next head replaces it).
	failed := func(err error) error {
		if cur, ok := h.recs[name]; ok && cur.Seq == seq {
			if hadPrev {
				h.recs[name] = prev
			} else {
				delete(h.recs, name)
			}
			// The file may hold the record all the same: rewrite it from memory before
			// the next append.
			h.rewrite = true
		}
		return err
	}
	h.records++
	h.appended++
	h.pending += len(rec)
	gen := h.appended
	for h.settled < gen {
		switch {
		case h.syncing:
			h.cond.Wait()
		case h.f == nil:
			// Closed while the record waited for its fsync: it may not be durable.
			return failed(fmt.Errorf("post: head records %s were closed before the record was synced", h.path))
		case h.rewrite:
			// The fsync before ours failed: an fsync of this file could now succeed
			// without the pages the kernel dropped, so write every record anew instead.
			if err := h.compact(); err != nil {
				return failed(fmt.Errorf("post: head records %s: %w", h.path, err))
			}
		default:
			h.syncOnce()
		}
	}
	if err := h.outcome(gen); err != nil {
		return failed(err)
	}
	if !h.syncing && h.records > 64 && h.records > 8*len(h.recs) && h.f != nil && h.f.size >= compactHeadBytes {
		// The record is durable already; a compaction that fails (a full disk) is tried
		// again after the next record.
		_ = h.compact()
	}
	return nil
}

// outcome is the result of the Save of generation gen, once settled. Called with mu held.
func (h *FileHeadRecords) outcome(gen uint64) error {
	for i := range h.failed {
		r := &h.failed[i]
		if r.from <= gen && gen <= r.to {
			err := fmt.Errorf("post: head records %s: %w", h.path, r.err)
			// Each generation is one Save, and each Save of a failed range looks here once
			// (a range is only ever made of Saves still waiting): the range goes with the
			// last of them, not before (a Save of a good fsync woken late must not drop it).
			if r.left--; r.left <= 0 {
				h.failed = slices.Delete(h.failed, i, i+1)
			}
			return err
		}
	}
	return nil
}

// syncOnce runs one fsync for every record appended so far, without holding mu meanwhile.
// Called with mu held and no fsync running.
func (h *FileHeadRecords) syncOnce() {
	h.syncing = true
	upTo, n, f := h.appended, h.pending, h.f
	h.pending = 0
	h.mu.Unlock()
	err := syncHeadFile(f.f)
	h.mu.Lock()
	h.syncing = false
	diskstat.PostHeads.Sync(n)
	if err != nil {
		// What the file holds past the last good fsync is uncertain (the kernel may have
		// dropped the pages): the records waiting for this fsync fail, and the next Save
		// rewrites the file from memory before it appends.
		h.failed = append(h.failed, genRange{from: h.settled + 1, to: upTo, err: err, left: int(upTo - h.settled)})
		h.rewrite = true
	}
	if upTo > h.settled {
		h.settled = upTo
	}
	h.cond.Broadcast()
}

// Load implements HeadRecords.
func (h *FileHeadRecords) Load() (map[string]HeadRecord, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.recs), nil
}

// Close closes the file.
func (h *FileHeadRecords) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.syncing {
		h.cond.Wait()
	}
	if h.f == nil {
		return nil
	}
	if h.rewrite {
		// A failed fsync left the file uncertain (it may hold a record whose Save
		// failed): write what memory holds, if the disk lets us.
		_ = h.compact()
	}
	err := h.f.Close()
	h.f = nil
	return err
}
