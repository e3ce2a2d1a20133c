package smtpserver

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDirOutbox(t *testing.T) {
	dir := t.TempDir()
	tick := time.Unix(1700000000, 0)
	now := func() time.Time { tick = tick.Add(time.Millisecond); return tick }
	ob, err := OpenDirOutbox(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	env := Envelope{From: "a@ring", To: []string{"x@net"}, User: "a@ring", UTF8: true, Received: time.Unix(1, 0).UTC()}
	raw := []byte("Subject: x\r\n\r\n\x00\xff binary\r\n")

	// Staged messages are invisible; aborted ones vanish.
	s1, err := ob.Stage(env, raw)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := ob.Pending(); len(ids) != 0 {
		t.Fatalf("staged message visible: %v", ids)
	}
	s1.Abort()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("abort left %d files", len(left))
	}

	var ids []string
	for i := 0; i < 3; i++ {
		s, err := ob.Stage(env, raw)
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.Commit()
		if err != nil {
			t.Fatal(err)
		}
		s.Abort() // no-op after commit
		ids = append(ids, id)
	}
	pending, _ := ob.Pending()
	if len(pending) != 3 || pending[0] != ids[0] || pending[2] != ids[2] {
		t.Fatalf("pending %v, want %v (oldest first)", pending, ids)
	}
	got, r, err := ob.Open(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r)
	r.Close()
	if string(body) != string(raw) || got.From != env.From || got.To[0] != "x@net" || !got.UTF8 || !got.Received.Equal(env.Received) {
		t.Errorf("open: %+v %q", got, body)
	}
	if err := ob.Remove(ids[1]); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{ids[1], "", "../x", ".hidden", "a/b"} {
		if _, _, err := ob.Open(bad); err != ErrNoOutboxMessage {
			t.Errorf("Open(%q): %v", bad, err)
		}
	}

	// A crash between stage and commit leaves a tmp file; reopening drops
	// it and keeps the committed messages.
	if _, err := ob.Stage(env, raw); err != nil {
		t.Fatal(err)
	}
	ob2, err := OpenDirOutbox(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("stale staged file kept")
	}
	if p, _ := ob2.Pending(); len(p) != 2 {
		t.Errorf("after reopen %v", p)
	}
}
