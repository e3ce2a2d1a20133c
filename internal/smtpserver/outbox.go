package smtpserver

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"epost/internal/diskstat"
)

// Outbox takes messages for recipients outside the ring. The SMTP server
// only stages and commits; the internet gateway of DESIGN.md layer 12 drains
// the queue through OutboxQueue.
//
// Staging is two-phase so that one DATA command can be durable in both the
// ring and the outbox before the 250: the server stages (durable, invisible
// to the gateway), submits to the ring, and then commits or aborts.
type Outbox interface {
	// Stage writes env and raw durably and returns a handle; nothing is
	// visible to the gateway until Commit.
	Stage(env Envelope, raw []byte) (StagedMessage, error)
}

// StagedMessage is one staged outbox message.
type StagedMessage interface {
	// Commit makes the message visible to the gateway, durably, and returns
	// its queue id.
	Commit() (id string, err error)
	// Abort drops the staged message. It is a no-op after Commit.
	Abort()
}

// OutboxQueue is the consumer side of the outbox, for the gateway.
type OutboxQueue interface {
	// Pending lists queued message ids, oldest first.
	Pending() ([]string, error)
	// Open returns a queued message's envelope and its raw bytes.
	Open(id string) (Envelope, io.ReadCloser, error)
	// Remove deletes a message once the gateway has taken responsibility
	// for it (relayed durably or bounced).
	Remove(id string) error
}

// ErrNoOutboxMessage is returned for an unknown outbox id.
var ErrNoOutboxMessage = errors.New("smtpserver: no such outbox message")

// DirOutbox is an Outbox and OutboxQueue in a directory, one file per
// message, in the maildir manner: a message is written and fsynced under
// tmp/, then renamed into new/ and new/ is fsynced, so a message in new/ is
// always complete and a crash leaves at most a stale file in tmp/, which
// OpenDirOutbox removes (it was never acknowledged).
//
// A file is one line of JSON (the Envelope) followed by the raw message.
// DirOutbox is safe for concurrent use by any number of goroutines within
// one process.
type DirOutbox struct {
	dir string
	now func() time.Time
}

// OpenDirOutbox opens (creating if needed) an outbox in dir and removes
// uncommitted leftovers of a previous run. now stamps file names; nil
// means time.Now.
func OpenDirOutbox(dir string, now func() time.Time) (*DirOutbox, error) {
	if now == nil {
		now = time.Now
	}
	for _, sub := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("outbox %s: %w", dir, err)
		}
	}
	stale, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", dir, err)
	}
	for _, e := range stale {
		os.Remove(filepath.Join(dir, "tmp", e.Name()))
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("outbox %s: %w", dir, err)
	}
	return &DirOutbox{dir: dir, now: now}, nil
}

// Stage implements Outbox.
func (o *DirOutbox) Stage(env Envelope, raw []byte) (StagedMessage, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	// Zero-padded nanoseconds sort oldest first; the random suffix keeps
	// names unique within one nanosecond.
	id := fmt.Sprintf("%019d-%s", o.now().UnixNano(), hex.EncodeToString(rnd[:]))
	tmp := filepath.Join(o.dir, "tmp", id)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("outbox stage: %w", err)
	}
	head, err := json.Marshal(env)
	if err == nil {
		w := bufio.NewWriterSize(f, 64<<10)
		w.Write(head)
		w.WriteByte('\n')
		w.Write(raw)
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
		diskstat.Outbox.Sync(len(head) + 1 + len(raw))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("outbox stage: %w", err)
	}
	return &dirStaged{o: o, id: id}, nil
}

type dirStaged struct {
	o         *DirOutbox
	id        string
	committed bool
}

func (s *dirStaged) Commit() (string, error) {
	if err := os.Rename(filepath.Join(s.o.dir, "tmp", s.id), filepath.Join(s.o.dir, "new", s.id)); err != nil {
		return "", fmt.Errorf("outbox commit %s: %w", s.id, err)
	}
	s.committed = true
	if err := syncDir(filepath.Join(s.o.dir, "new")); err != nil {
		return "", fmt.Errorf("outbox commit %s: %w", s.id, err)
	}
	return s.id, nil
}

func (s *dirStaged) Abort() {
	if !s.committed {
		os.Remove(filepath.Join(s.o.dir, "tmp", s.id))
	}
}

// Pending implements OutboxQueue.
func (o *DirOutbox) Pending() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(o.dir, "new"))
	if err != nil {
		return nil, fmt.Errorf("outbox list: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (o *DirOutbox) path(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, `/\`) || id[0] == '.' {
		return "", ErrNoOutboxMessage
	}
	return filepath.Join(o.dir, "new", id), nil
}

// Open implements OutboxQueue.
func (o *DirOutbox) Open(id string) (Envelope, io.ReadCloser, error) {
	p, err := o.path(id)
	if err != nil {
		return Envelope{}, nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return Envelope{}, nil, ErrNoOutboxMessage
	} else if err != nil {
		return Envelope{}, nil, fmt.Errorf("outbox open %s: %w", id, err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	head, err := r.ReadBytes('\n')
	var env Envelope
	if err == nil {
		err = json.Unmarshal(head, &env)
	}
	if err != nil {
		f.Close()
		return Envelope{}, nil, fmt.Errorf("outbox open %s: bad envelope: %w", id, err)
	}
	return env, struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// Remove implements OutboxQueue.
func (o *DirOutbox) Remove(id string) error {
	p, err := o.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); errors.Is(err, os.ErrNotExist) {
		return ErrNoOutboxMessage
	} else if err != nil {
		return fmt.Errorf("outbox remove %s: %w", id, err)
	}
	return syncDir(filepath.Join(o.dir, "new"))
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	diskstat.Outbox.Sync(0)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
