package daemon

import (
	"fmt"
	"sync"
	"syscall"
	"time"
)

// Disk trouble (issue 16). A node whose disk is full or failing acknowledges nothing it could
// not store: PAST and Glacier replicas withhold their acknowledgements when a commit fails, the
// SMTP server answers 451 when the outbox cannot stage a message, and POST keeps a
// notification with its holders until the recipient's node has filed it. What this file adds
// is that the node says so: the failed writes of its stores are counted and the newest kept
// for "epost status", the first failure of an episode is logged once with what to do, and
// status reads the free space of the node's filesystems when asked. Nothing here needs a
// restart to clear: once space returns the writes succeed again and the trouble ages out.

// diskTroubleWindow is how long after its last failed write a node still reports trouble,
// and how long without failures ends an episode (the next failure is logged again).
const diskTroubleWindow = 30 * time.Second

// diskLowBytes: less free space than this on a node's filesystem is reported as full.
const diskLowBytes = 1 << 20

// diskHealth counts the failed writes of the node's stores. Safe for concurrent use; the zero
// value is ready.
type diskHealth struct {
	mu       sync.Mutex
	failures uint64
	last     string
	lastAt   time.Time
}

// failed records a write of store that failed with err and reports whether it starts an
// episode (no failure in the last diskTroubleWindow): the caller then logs the advice.
func (h *diskHealth) failed(store string, err error, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.lastAt.IsZero() || now.Sub(h.lastAt) > diskTroubleWindow
	h.failures++
	h.last, h.lastAt = fmt.Sprintf("%s: %v", store, err), now
	return first
}

// storeFailed records and, at the start of an episode, logs a failed write.
func (n *Node) storeFailed(store string, err error) {
	if n.disk.failed(store, err, time.Now()) {
		n.log.Error("disk trouble: a write of this node's data failed; nothing that depended on it was acknowledged, and the node keeps retrying. Free space on the filesystem of the node directory (or replace the failing disk): the node recovers without a restart",
			"store", store, "err", err, "dir", n.rn.Dir, "data_dir", n.rn.DataDir())
	}
}

// DiskHealth is the node's disk trouble in "epost status --json" (the "disk" section).
type DiskHealth struct {
	// FreeBytes is the least free space (for unprivileged users) among the filesystems of the
	// node directory and the data directory; -1 if unknown.
	FreeBytes int64 `json:"free_bytes"`
	// WriteErrors counts the failed writes of the node's stores since start (PAST replicas,
	// Glacier fragments, the outbox); LastWriteError is the newest, at LastWriteErrorAt.
	WriteErrors      uint64    `json:"write_errors"`
	LastWriteError   string    `json:"last_write_error,omitempty"`
	LastWriteErrorAt time.Time `json:"last_write_error_at,omitzero"`
	// Trouble says what is wrong now, "" when nothing is: "full" (less than 1 MiB free) or
	// "writes failing" (one failed within the last 30 s).
	Trouble string `json:"trouble,omitempty"`
}

// diskHealthStatus fills the disk section's health fields.
func (n *Node) diskHealthStatus(now time.Time) DiskHealth {
	return n.disk.status(now, n.rn.Dir, n.rn.DataDir())
}

// status is the health at now, with the free space of the filesystems holding dirs.
func (h *diskHealth) status(now time.Time, dirs ...string) DiskHealth {
	h.mu.Lock()
	d := DiskHealth{WriteErrors: h.failures, LastWriteError: h.last, LastWriteErrorAt: h.lastAt}
	h.mu.Unlock()
	d.FreeBytes = -1
	for _, dir := range dirs {
		if free, ok := freeBytes(dir); ok && (d.FreeBytes < 0 || free < d.FreeBytes) {
			d.FreeBytes = free
		}
	}
	switch {
	case d.FreeBytes >= 0 && d.FreeBytes < diskLowBytes:
		d.Trouble = "full"
	case !d.LastWriteErrorAt.IsZero() && now.Sub(d.LastWriteErrorAt) <= diskTroubleWindow:
		d.Trouble = "writes failing"
	}
	return d
}

// freeBytes is what the filesystem holding dir has left for unprivileged users.
func freeBytes(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
