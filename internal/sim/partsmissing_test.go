package sim

import (
	"bytes"
	"errors"
	"log/slog"
	"time"

	"testing"

	"epost/internal/past"
	"epost/internal/post"
)

// A sender stores a message's parts and its pending notification at once. When the parts'
// insert fails the send is not accepted, although the pending copy may be stored: its
// holders offer it to the recipient, who must not file a message whose parts are not in the
// ring. A retry under the same ids stores the parts, and the recipient then files the
// message exactly once, readable.
func TestMailPartsFailedPendingStored(t *testing.T) {
	const seed = 71
	cfg := MailConfig{Nodes: 20, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	failParts := true
	cfg.InsertFault = func(node int, o past.Object) error {
		if node == 0 && failParts && past.Type(o.Meta.Type) == past.TypeContent {
			return errors.New("test: content insert fails")
		}
		return nil
	}
	w := newWorldCfg(t, seed, 20, cfg)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	body := bytes.Repeat([]byte("forty kilobytes of body, not carried. "), 1100)
	parts := [][]byte{body}
	id := post.NotificationID{7, 1}
	send := func() []post.Result {
		var res []post.Result
		a.u.SendWithIDs([]string{b.addr}, []post.NotificationID{id}, parts, func(r []post.Result) { res = r })
		w.wait(time.Minute, func() bool { return res != nil })
		if res == nil {
			w.fail("send never answered")
		}
		return res
	}

	res := send()
	if len(res) != 1 || res[0].Status != post.Failed {
		w.fail("send with its parts failing: %+v, want failed", res)
	}
	w.run.ring.net.RunFor(5 * time.Second)
	if h := holders(w, pendingKeyOf(w, b, id)); h < 2 {
		w.fail("the pending copy is on %d stores; the test needs it stored while the parts are not", h)
	}
	// Holders offer it (after HolderDelay), and b's node announces itself again meanwhile.
	w.run.ring.net.RunFor(3 * time.Minute)
	if n := len(w.inbox(b)); n != 0 {
		w.fail("b filed %d messages whose parts are not in the ring", n)
	}
	if st := b.node.post.Stats(); st.PartsMissing == 0 {
		w.fail("no holder's push reached b's node (stats %+v): the test proves nothing", st)
	}

	failParts = false
	if res := send(); len(res) != 1 || res[0].Status != post.Accepted {
		w.fail("the retry: %+v, want accepted", res)
	}
	w.wait(2*time.Minute, func() bool { return len(w.inbox(b)) > 0 })
	w.run.ring.net.RunFor(time.Minute)
	inbox := w.inbox(b)
	if len(inbox) != 1 {
		w.fail("b's INBOX has %d entries after the retry, want 1", len(inbox))
	}
	f, err := post.DecodeFiled(inbox[0])
	if err != nil || len(f.Parts) != 1 {
		w.fail("filed entry: %v (%d parts)", err, len(f.Parts))
	}
	var got []byte
	var gerr error
	fetched := false
	b.u.Get(f.Parts[0], func(d []byte, e error) { got, gerr, fetched = d, e, true })
	w.wait(time.Minute, func() bool { return fetched })
	if gerr != nil || !bytes.Equal(got, body) {
		w.fail("the filed message's part: %d bytes, %v", len(got), gerr)
	}
	if h := holders(w, pendingKeyOf(w, b, id)); h != 0 {
		w.fail("the pending copy is still on %d stores after b filed it", h)
	}
}

// A send to nobody answers at once, with no results, and stores nothing.
func TestMailSendToNobody(t *testing.T) {
	const seed = 72
	w := newWorld(t, seed, 8, nil)
	a := w.addUser(0, "a@sim.example", 1)
	before := a.node.post.Stats()
	var res []post.Result
	a.u.Send(nil, [][]byte{bytes.Repeat([]byte("x"), 40<<10)}, func(r []post.Result) { res = r })
	if res == nil || len(res) != 0 {
		w.fail("send to nobody: %v, want an empty answer at once", res)
	}
	w.run.ring.net.RunFor(time.Minute)
	if after := a.node.post.Stats(); after.ChunksPut != before.ChunksPut || after.Sent != before.Sent {
		w.fail("a send to nobody stored something: %+v -> %+v", before, after)
	}
}
