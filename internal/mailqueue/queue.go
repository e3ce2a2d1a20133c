// Package mailqueue is the durable store-and-forward queue behind every hop of mail that
// leaves a ring (docs/gateway-design.md §8): a sender's node keeps a message for another ring
// or the internet here until its gateway reports the final outcome, and a gateway keeps what
// it took over until the next hop acknowledged it. One entry is one message with its
// recipients; nothing is acknowledged upstream before the entry is on disk (fsync of the file
// and of its directory), attempts back off with jitter up to a deadline, and finished ids are
// remembered for a while so that a hand-off repeated after a crash is recognised.
//
// On disk, under the queue's directory:
//
//	tmp/<id>        an entry being written; removed at Open (it was never acknowledged)
//	q/<id>          a committed entry: one JSON header line, then the body; never rewritten
//	s/<id>.json     its schedule (attempts, next attempt, recipients' states); replaced by rename
//	done.jsonl      finished ids and their outcome, one JSON line each, kept DoneTTL
//
// Commit writes the schedule, then renames the entry into q/ and syncs the directories, so
// an entry in q/ is complete; Finish appends to done.jsonl (synced) before it removes the
// entry, so a crash in between leaves an id that Open finds finished and removes. The
// package knows nothing of networks or POST: callers attempt deliveries and report results.
package mailqueue

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Kind says which carrier delivers an entry.
type Kind string

const (
	KindFederation Kind = "federation" // to another ring, through the gateways
	KindInternet   Kind = "internet"   // to an internet MTA, through a gateway
)

// Recipient states.
const (
	Pending   = "pending"
	Delivered = "delivered"
	Failed    = "failed" // permanently: a DSN is due
)

// Rcpt is one recipient of an entry.
type Rcpt struct {
	Addr string `json:"addr"`
	NID  string `json:"nid,omitempty"`  // notification id (hex), fixed at the origin: federation's exactly-once key
	Ring string `json:"ring,omitempty"` // destination ring id (hex), federation only
}

// Header is an entry's fixed description, written once with its body.
type Header struct {
	ID         string    `json:"id"` // 32 hex digits, chosen at the origin and kept at every hop
	Kind       Kind      `json:"kind"`
	Created    time.Time `json:"created"`
	Deadline   time.Time `json:"deadline"`   // give up (failure DSN) after this
	DelayWarn  time.Time `json:"delay_warn"` // one delay notice after this
	From       string    `json:"from"`       // reverse path; "" is the null sender (no DSN)
	Rcpts      []Rcpt    `json:"rcpts"`
	BodyDigest string    `json:"body_digest"` // SHA-256 of the body, hex (set by Stage)
	Size       int64     `json:"size"`        // body bytes (set by Stage)
}

// RcptState is a recipient's progress.
type RcptState struct {
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"` // last error, or the remote's answer
}

// Schedule is an entry's changing state.
type Schedule struct {
	Attempts  int         `json:"attempts"`
	Next      time.Time   `json:"next"`
	Last      time.Time   `json:"last,omitzero"` // when the last attempt was recorded (zero before the first)
	LastError string      `json:"last_error,omitempty"`
	Warned    bool        `json:"warned,omitempty"`    // the delay notice went out
	HandedTo  string      `json:"handed_to,omitempty"` // the next hop holding a copy (a gateway's node id)
	Rcpts     []RcptState `json:"rcpts"`
}

// Done is a finished entry, as done.jsonl remembers it.
type Done struct {
	ID      string      `json:"id"`
	At      time.Time   `json:"at"`
	Outcome string      `json:"outcome"` // "delivered", "failed", "expired", "partial"
	Rcpts   []RcptState `json:"rcpts,omitempty"`
}

// Errors.
var (
	ErrNotFound = errors.New("mailqueue: no such entry")
	ErrExists   = errors.New("mailqueue: entry already queued or finished")
)

// Options tune a Queue; zero fields take defaults.
type Options struct {
	Now  func() time.Time
	Rand *rand.Rand // jitter; nil seeds one from crypto/rand
	// Backoff is the wait after the attempt-th failed attempt (1, 2, ...), before jitter.
	Backoff func(kind Kind, attempt int) time.Duration
	// DoneTTL is how long finished ids are remembered (default 7 days).
	DoneTTL time.Duration
}

// DefaultBackoff: federation 2 s doubling to 5 min; internet 1, 5, 15, 30 min, then hourly.
func DefaultBackoff(kind Kind, attempt int) time.Duration {
	if kind == KindInternet {
		steps := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute}
		if attempt-1 < len(steps) {
			return steps[max(attempt-1, 0)]
		}
		return time.Hour
	}
	return min(2*time.Second<<min(max(attempt-1, 0), 10), 5*time.Minute)
}

// Queue is one queue directory. It is safe for concurrent use within one process; one process
// owns a directory.
type Queue struct {
	dir  string
	opts Options

	mu      sync.Mutex
	entries map[string]*entry
	done    map[string]Done
	staging map[string]bool // ids staged and not yet committed or aborted
	// writeMu serializes schedule changes (clone, write, install): the scheduler and a
	// relay's answer may change one entry at once.
	writeMu sync.Mutex
}

type entry struct {
	h Header
	s Schedule
}

// Open opens (creating) the queue in dir, removing uncommitted entries and finishing what a
// crash left half done.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		var seed [32]byte
		_, _ = crand.Read(seed[:])
		opts.Rand = rand.New(rand.NewChaCha8(seed))
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	if opts.DoneTTL <= 0 {
		opts.DoneTTL = 7 * 24 * time.Hour
	}
	q := &Queue{dir: dir, opts: opts, entries: map[string]*entry{}, done: map[string]Done{}, staging: map[string]bool{}}
	for _, sub := range []string{"tmp", "q", "s", "bad"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("mailqueue %s: %w", dir, err)
		}
	}
	if err := q.load(); err != nil {
		return nil, fmt.Errorf("mailqueue %s: %w", dir, err)
	}
	return q, nil
}

// NewID is a fresh entry id.
func NewID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func (q *Queue) path(sub, name string) string { return filepath.Join(q.dir, sub, name) }

// load reads the directory: removes tmp/, finishes entries done.jsonl names, rebuilds
// schedules that a crash lost, drops schedules without entries.
func (q *Queue) load() error {
	tmp, err := os.ReadDir(filepath.Join(q.dir, "tmp"))
	if err != nil {
		return err
	}
	for _, e := range tmp {
		_ = os.Remove(q.path("tmp", e.Name()))
	}
	if err := q.loadDone(); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(q.dir, "q"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		id := e.Name()
		if !validID(id) {
			continue
		}
		if _, ok := q.done[id]; ok { // finished before a crash took the removal
			q.remove(id)
			continue
		}
		h, err := q.readHeader(id)
		if err != nil {
			// One damaged file must not keep the node from starting: it is set aside in bad/
			// for the operator (and its recipients get no DSN: nobody can read them).
			_ = os.Rename(q.path("q", id), q.path("bad", id))
			_ = os.Remove(q.path("s", id+".json"))
			continue
		}
		s, err := q.readSchedule(id)
		if err != nil { // the crash came between the schedule and the rename, or damaged it
			s = freshSchedule(h, q.opts.Now())
		}
		q.entries[id] = &entry{h: h, s: s}
	}
	scheds, err := os.ReadDir(filepath.Join(q.dir, "s"))
	if err != nil {
		return err
	}
	for _, e := range scheds {
		id := strings.TrimSuffix(e.Name(), ".json")
		if q.entries[id] == nil {
			_ = os.Remove(q.path("s", e.Name()))
		}
	}
	return syncDir(filepath.Join(q.dir, "tmp"))
}

func (q *Queue) loadDone() error {
	data, err := os.ReadFile(filepath.Join(q.dir, "done.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cutoff := q.opts.Now().Add(-q.opts.DoneTTL)
	var kept []Done
	for _, line := range bytes.Split(data, []byte("\n")) {
		var d Done
		if len(line) == 0 || json.Unmarshal(line, &d) != nil { // a torn last line: never acknowledged
			continue
		}
		if d.At.After(cutoff) {
			q.done[d.ID] = d
			kept = append(kept, d)
		}
	}
	lines := 0
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines++
		}
	}
	if len(kept) < lines {
		// Expired or torn lines: rewrite the file with what is kept.
		var b bytes.Buffer
		for _, d := range kept {
			line, _ := json.Marshal(d)
			b.Write(line)
			b.WriteByte('\n')
		}
		return writeReplace(filepath.Join(q.dir, "done.jsonl"), b.Bytes())
	}
	return nil
}

func freshSchedule(h Header, now time.Time) Schedule {
	s := Schedule{Next: now}
	for _, r := range h.Rcpts {
		s.Rcpts = append(s.Rcpts, RcptState{Addr: r.Addr, State: Pending})
	}
	return s
}

func (q *Queue) readHeader(id string) (Header, error) {
	f, err := os.Open(q.path("q", id))
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 4096).ReadBytes('\n')
	if err != nil {
		return Header{}, fmt.Errorf("header: %w", err)
	}
	var h Header
	if err := json.Unmarshal(line, &h); err != nil {
		return Header{}, fmt.Errorf("header: %w", err)
	}
	if h.ID != id {
		return Header{}, fmt.Errorf("header names entry %q", h.ID)
	}
	return h, nil
}

func (q *Queue) readSchedule(id string) (Schedule, error) {
	data, err := os.ReadFile(q.path("s", id+".json"))
	if err != nil {
		return Schedule{}, err
	}
	var s Schedule
	err = json.Unmarshal(data, &s)
	return s, err
}

func (q *Queue) writeSchedule(id string, s Schedule) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return writeReplace(q.path("s", id+".json"), data)
}

// Staged is an entry written but not yet queued.
type Staged struct {
	q    *Queue
	h    Header
	done bool
}

// Stage writes an entry durably under tmp/. h.ID may be empty (a new id is chosen) or the
// origin's id of a hand-off; ErrExists if that id is queued or finished here. Body digest and
// size are filled in.
func (q *Queue) Stage(h Header, body []byte) (*Staged, error) {
	if h.ID == "" {
		h.ID = NewID()
	}
	if !validID(h.ID) {
		return nil, fmt.Errorf("mailqueue: entry id %q: want 32 lower-case hex digits", h.ID)
	}
	if len(h.Rcpts) == 0 {
		return nil, errors.New("mailqueue: an entry needs recipients")
	}
	if h.Kind != KindFederation && h.Kind != KindInternet {
		return nil, fmt.Errorf("mailqueue: entry kind %q", h.Kind)
	}
	q.mu.Lock()
	if q.entries[h.ID] != nil || q.staging[h.ID] {
		q.mu.Unlock()
		return nil, ErrExists
	}
	if _, ok := q.done[h.ID]; ok {
		q.mu.Unlock()
		return nil, ErrExists
	}
	q.staging[h.ID] = true // reserved until Commit or Abort
	q.mu.Unlock()
	staged := false
	defer func() {
		if !staged {
			q.mu.Lock()
			delete(q.staging, h.ID)
			q.mu.Unlock()
		}
	}()
	sum := sha256.Sum256(body)
	h.BodyDigest, h.Size = hex.EncodeToString(sum[:]), int64(len(body))
	if h.Created.IsZero() {
		h.Created = q.opts.Now().UTC()
	}
	head, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	tmp := q.path("tmp", h.ID)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mailqueue stage: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.Write(head)
	w.WriteByte('\n')
	w.Write(body)
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("mailqueue stage: %w", err)
	}
	staged = true
	return &Staged{q: q, h: h}, nil
}

// Commit queues the staged entry durably, due at once, and returns its id.
func (s *Staged) Commit() (string, error) {
	q, id := s.q, s.h.ID
	if s.done {
		return "", fmt.Errorf("mailqueue commit %s: already committed or aborted", id)
	}
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	sch := freshSchedule(s.h, q.opts.Now())
	if err := q.writeSchedule(id, sch); err != nil {
		return "", fmt.Errorf("mailqueue commit %s: %w", id, err)
	}
	if err := os.Rename(q.path("tmp", id), q.path("q", id)); err != nil {
		return "", fmt.Errorf("mailqueue commit %s: %w", id, err)
	}
	s.done = true
	if err := syncDir(filepath.Join(q.dir, "q")); err != nil {
		return "", fmt.Errorf("mailqueue commit %s: %w", id, err)
	}
	q.mu.Lock()
	q.entries[id] = &entry{h: s.h, s: sch}
	delete(q.staging, id)
	q.mu.Unlock()
	return id, nil
}

// Abort drops the staged entry; a no-op after Commit.
func (s *Staged) Abort() {
	if !s.done {
		s.done = true
		_ = os.Remove(s.q.path("tmp", s.h.ID))
		s.q.mu.Lock()
		delete(s.q.staging, s.h.ID)
		s.q.mu.Unlock()
	}
}

// Has reports where id is: "queued", "done" (finished, within DoneTTL) or "".
func (q *Queue) Has(id string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.entries[id] != nil {
		return "queued"
	}
	if _, ok := q.done[id]; ok {
		return "done"
	}
	return ""
}

// Finished returns how a finished entry ended.
func (q *Queue) Finished(id string) (Done, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, ok := q.done[id]
	return d, ok
}

// Len is the number of queued entries.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Due returns the ids of entries whose next attempt is at or before now, oldest first.
func (q *Queue) Due(now time.Time) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*entry
	for _, e := range q.entries {
		if !e.s.Next.After(now) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *entry) int { return a.h.Created.Compare(b.h.Created) })
	ids := make([]string, len(out))
	for i, e := range out {
		ids[i] = e.h.ID
	}
	return ids
}

// Oldest is the creation time of the oldest queued entry (zero when empty), for status.
func (q *Queue) Oldest() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	var t time.Time
	for _, e := range q.entries {
		if t.IsZero() || e.h.Created.Before(t) {
			t = e.h.Created
		}
	}
	return t
}

// Get returns an entry's header and schedule.
func (q *Queue) Get(id string) (Header, Schedule, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return Header{}, Schedule{}, ErrNotFound
	}
	return e.h, cloneSchedule(e.s), nil
}

// Outcome says whether no recipient is left pending and, if so, how the entry ends:
// "delivered", "failed" (all failed) or "partial"; pending counts those still to try.
func (s Schedule) Outcome() (pending int, outcome string) {
	failed := 0
	for _, r := range s.Rcpts {
		switch r.State {
		case Pending:
			pending++
		case Failed:
			failed++
		}
	}
	switch {
	case pending > 0:
		return pending, ""
	case failed == len(s.Rcpts):
		return 0, "failed"
	case failed > 0:
		return 0, "partial"
	}
	return 0, "delivered"
}

func cloneSchedule(s Schedule) Schedule {
	s.Rcpts = slices.Clone(s.Rcpts)
	return s
}

// Body opens an entry's body, checked against its digest as it is read to the end (a reader
// that stops early is not told).
func (q *Queue) Body(id string) (io.ReadCloser, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	f, err := os.Open(q.path("q", id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	line, err := r.ReadBytes('\n')
	var h Header
	if err == nil {
		err = json.Unmarshal(line, &h)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mailqueue %s: header: %w", id, err)
	}
	return &checkedBody{r: r, f: f, h: sha256.New(), want: h.BodyDigest, id: id}, nil
}

// ErrDamaged is returned by a body whose bytes do not match the digest written with them.
var ErrDamaged = errors.New("mailqueue: entry body damaged (digest mismatch)")

// checkedBody hashes what is read and fails at the end if it is not what was queued.
type checkedBody struct {
	r    io.Reader
	f    *os.File
	h    hash.Hash
	want string
	id   string
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(b.h.Sum(nil)) != b.want {
		return n, fmt.Errorf("%w: entry %s", ErrDamaged, b.id)
	}
	return n, err
}

func (b *checkedBody) Close() error { return b.f.Close() }

// Attempted records an attempt: results per recipient address (Delivered, Failed or Pending
// with a detail); recipients left pending are tried again after the backoff, or fail with
// "expired" once the deadline passed. It returns the new schedule; when no recipient is
// pending the caller should Finish the entry (and send a DSN for those that failed).
func (q *Queue) Attempted(id string, results map[string]RcptState, attemptErr error) (Schedule, error) {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return Schedule{}, ErrNotFound
	}
	now := q.opts.Now()
	s := cloneSchedule(e.s)
	s.Attempts++
	s.Last = now
	s.LastError = ""
	if attemptErr != nil {
		s.LastError = attemptErr.Error()
	}
	for i, r := range s.Rcpts {
		if res, ok := results[r.Addr]; ok && r.State == Pending {
			s.Rcpts[i].State, s.Rcpts[i].Detail = res.State, res.Detail
		}
		if s.Rcpts[i].State == Pending {
			if !e.h.Deadline.IsZero() && !now.Before(e.h.Deadline) {
				s.Rcpts[i].State = Failed
				s.Rcpts[i].Detail = "expired: not delivered before " + e.h.Deadline.UTC().Format(time.RFC3339) + lastDetail(s.Rcpts[i].Detail, s.LastError)
			}
		}
	}
	wait := q.opts.Backoff(e.h.Kind, s.Attempts)
	wait += time.Duration((q.opts.Rand.Float64()*0.2 - 0.1) * float64(wait)) // ±10 %
	s.Next = now.Add(wait)
	q.mu.Unlock()
	if err := q.install(id, s); err != nil {
		return Schedule{}, err
	}
	return cloneSchedule(s), nil
}

func lastDetail(detail, lastErr string) string {
	switch {
	case detail != "":
		return "; last: " + detail
	case lastErr != "":
		return "; last: " + lastErr
	}
	return ""
}

// Update changes an entry's schedule in place (HandedTo, Warned), durably.
func (q *Queue) Update(id string, f func(*Schedule)) error {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return ErrNotFound
	}
	s := cloneSchedule(e.s)
	f(&s)
	q.mu.Unlock()
	return q.install(id, s)
}

// install writes an entry's new schedule and makes it current. The caller holds writeMu.
func (q *Queue) install(id string, s Schedule) error {
	if err := q.writeSchedule(id, s); err != nil {
		return err
	}
	q.mu.Lock()
	if e := q.entries[id]; e != nil {
		e.s = s
	}
	q.mu.Unlock()
	return nil
}

// Finish records the entry's outcome in done.jsonl (synced) and removes it.
func (q *Queue) Finish(id, outcome string) error {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return ErrNotFound
	}
	d := Done{ID: id, At: q.opts.Now().UTC(), Outcome: outcome, Rcpts: slices.Clone(e.s.Rcpts)}
	line, err := json.Marshal(d)
	if err != nil {
		q.mu.Unlock()
		return err
	}
	if err := appendSync(filepath.Join(q.dir, "done.jsonl"), append(line, '\n')); err != nil {
		q.mu.Unlock()
		return fmt.Errorf("mailqueue finish %s: %w", id, err)
	}
	delete(q.entries, id)
	q.done[id] = d
	if len(q.done)%1024 == 0 { // forget what DoneTTL has passed, now and then
		cutoff := q.opts.Now().Add(-q.opts.DoneTTL)
		for k, v := range q.done {
			if v.At.Before(cutoff) {
				delete(q.done, k)
			}
		}
	}
	q.mu.Unlock()
	q.remove(id)
	return nil
}

func (q *Queue) remove(id string) {
	_ = os.Remove(q.path("q", id))
	_ = os.Remove(q.path("s", id+".json"))
}

func appendSync(path string, data []byte) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if os.IsNotExist(statErr) { // a new file: its directory entry must be durable too
		defer func() { _ = syncDir(filepath.Dir(path)) }()
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			// A full disk: cut the partial line off so that the next one is not glued to it.
			_ = f.Truncate(fi.Size())
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeReplace writes path through a synced temporary file, renamed over it, and syncs the
// directory.
func writeReplace(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
