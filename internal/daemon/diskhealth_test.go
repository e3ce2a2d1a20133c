package daemon

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// A failed write starts an episode (logged once), status reports it as trouble until the
// window passes without another failure, and a failure after a quiet window starts a new one.
func TestDiskHealth(t *testing.T) {
	var h diskHealth
	dir := t.TempDir()
	t0 := time.Unix(1_800_000_000, 0)
	if d := h.status(t0, dir); d.Trouble != "" || d.WriteErrors != 0 || d.FreeBytes < diskLowBytes {
		t.Fatalf("healthy disk: %+v", d)
	}
	enospc := errors.New("write index.journal: " + syscall.ENOSPC.Error())
	if !h.failed("object store", enospc, t0) {
		t.Fatal("the first failure does not start an episode")
	}
	if h.failed("outbox", enospc, t0.Add(time.Second)) {
		t.Fatal("a second failure within the window starts another episode")
	}
	d := h.status(t0.Add(2*time.Second), dir)
	if d.Trouble != "writes failing" || d.WriteErrors != 2 || d.LastWriteError != "outbox: "+enospc.Error() {
		t.Fatalf("during the episode: %+v", d)
	}
	if d := h.status(t0.Add(time.Second+diskTroubleWindow+time.Second), dir); d.Trouble != "" || d.WriteErrors != 2 {
		t.Fatalf("after a quiet window: %+v", d)
	}
	if !h.failed("object store", enospc, t0.Add(2*diskTroubleWindow+time.Second)) {
		t.Fatal("a failure after a quiet window does not start a new episode")
	}
	if d := h.status(t0, t.TempDir()+"/missing"); d.FreeBytes != -1 {
		t.Fatalf("free space of a missing directory: %d, want -1 (unknown)", d.FreeBytes)
	}
}
