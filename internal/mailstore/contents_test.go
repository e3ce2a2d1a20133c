package mailstore

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// TestContentsInOneCall: Contents returns what Content returns for each message, in the
// order asked, with nil for a UID that is not in the folder.
func TestContentsInOneCall(t *testing.T) {
	w := newTestWorld(t, 37, 6)
	alice := w.newUser("alice@ring.example", 1)
	w.start(alice, w.nodes[1], true)
	s := w.open(alice, "")
	inbox := mustFolder(w, s, "INBOX")
	var uids []mailbox.UID
	var raws [][]byte
	for i := range 3 {
		raw := fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, bytes.Repeat([]byte{'a' + byte(i)}, 2000*i))
		uid, err := inbox.Append(raw, nil, time.Time{})
		if err != nil {
			w.fail("append: %v", err)
		}
		uids, raws = append(uids, uid), append(raws, raw)
	}
	cr, ok := inbox.(mailbox.ContentsReader)
	if !ok {
		t.Fatal("the mail store's folder is not a mailbox.ContentsReader")
	}
	ask := []mailbox.UID{uids[2], uids[0] + 1000, uids[0], uids[1]}
	want := [][]byte{raws[2], nil, raws[0], raws[1]}
	got, err := cr.Contents(ask)
	if err != nil || len(got) != len(ask) {
		t.Fatalf("Contents: %d results, err %v", len(got), err)
	}
	for i, ct := range got {
		if want[i] == nil {
			if ct != nil {
				t.Errorf("UID %d is not in the folder, got content", ask[i])
			}
			continue
		}
		if ct == nil {
			t.Errorf("UID %d: no content", ask[i])
			continue
		}
		b := make([]byte, ct.Size())
		ct.ReadAt(b, 0)
		if !bytes.Equal(b, want[i]) {
			t.Errorf("UID %d: got %d bytes, want the %d appended", ask[i], len(b), len(want[i]))
		}
	}
}
