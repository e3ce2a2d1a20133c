package mailstore

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"epost/internal/mailbox"
)

// A MULTIAPPEND (RFC 3502) of 100 messages of 4 KB waits for one or two log-head writes, not
// one per message: AppendAll stores every message's parts, then queues its insert entries
// together, and POST writes them under one head (each head carries at most half of POST's
// inline limit, so a large batch may take a second). Plain Appends, for contrast, take one
// head each: each waits for its head before the next starts.
func TestAppendAllSharesHeadWrites(t *testing.T) {
	for _, seed := range []uint64{21, 22} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { testAppendAllSharesHeadWrites(t, seed) })
	}
}

func testAppendAllSharesHeadWrites(t *testing.T, seed uint64) {
	w := newTestWorld(t, seed, 8)
	alice := w.newUser("alice@ring.example", 1)
	w.start(alice, w.nodes[1], true)
	s := w.open(alice, "")
	if err := s.Create("Migrated", ""); err != nil {
		w.fail("create: %v", err)
	}
	f := mustFolder(w, s, "Migrated")
	ma, ok := f.(mailbox.MultiAppender)
	if !ok {
		w.fail("the mail store's folder is no mailbox.MultiAppender")
	}
	heads := func() uint64 { return alice.node.post.Stats().LogHeadWrites }

	var msgs []mailbox.NewMessage
	for i := range 100 {
		raw := []byte(fmt.Sprintf("From: s%d@example.org\r\nSubject: migrated %d\r\n\r\n%s\r\n", i, i, strings.Repeat("x", 4000)))
		if i == 50 {
			att := make([]byte, 64<<10)
			w.fill(att)
			raw = attachmentMessage("with attachment", "b50", att) // several pieces, one of them large
		}
		msgs = append(msgs, mailbox.NewMessage{Raw: raw, Flags: []mailbox.Flag{mailbox.FlagSeen}, Date: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)})
	}
	before := heads()
	uids, err := ma.AppendAll(msgs)
	if err != nil || len(uids) != len(msgs) {
		w.fail("append all: %d uids, err %v", len(uids), err)
	}
	if n := heads() - before; n < 1 || n > 2 {
		w.fail("AppendAll of %d messages took %d head writes, want 1 or 2", len(msgs), n)
	}
	for i, uid := range uids {
		if uid != mailbox.UID(i+1) {
			w.fail("uids %v: want 1..%d in order", uids, len(msgs))
		}
		if got := readAll(w, f, uid); !bytes.Equal(got, msgs[i].Raw) {
			w.fail("message %d not byte-exact", i)
		}
		m, err := f.Message(uid)
		if err != nil || !m.InternalDate.Equal(msgs[i].Date) || len(m.Flags) != 1 || m.Flags[0] != mailbox.FlagSeen {
			w.fail("message %d: %+v, err %v", i, m, err)
		}
	}
	if m, _ := f.Message(uids[50]); m.Structure.Envelope.Subject != "with attachment" {
		w.fail("structure of message 51: %+v", m.Structure.Envelope)
	}

	// More parts than one wave of content inserts (maxParallelPuts), more records than one
	// entry holds: still a few heads, and the UIDs follow on.
	var many []mailbox.NewMessage
	for i := range maxParallelPuts + 44 {
		many = append(many, mailbox.NewMessage{Raw: []byte(fmt.Sprintf("Subject: bulk %d\r\n\r\n%s\r\n", i, strings.Repeat("y", 2000)))})
	}
	before = heads()
	got, err := ma.AppendAll(many)
	if err != nil || len(got) != len(many) || got[0] != 101 || got[len(got)-1] != mailbox.UID(100+len(many)) {
		w.fail("append all of %d: %d uids (%v...), err %v", len(many), len(got), got[:min(3, len(got))], err)
	}
	if n := heads() - before; n < 1 || n > 3 {
		w.fail("AppendAll of %d messages took %d head writes, want 1 to 3", len(many), n)
	}
	if b := readAll(w, f, got[len(got)-1]); !bytes.Equal(b, many[len(many)-1].Raw) {
		w.fail("last message of the large batch not byte-exact")
	}

	before = heads()
	for i := range 10 {
		if _, err := f.Append(msgs[i].Raw, nil, time.Time{}); err != nil {
			w.fail("append %d: %v", i, err)
		}
	}
	if n := heads() - before; n != 10 {
		w.fail("10 sequential Appends took %d head writes, want 10", n)
	}

	// What was acknowledged is in the ring: a second store of alice's (another client's
	// view, from the logs alone) sees all of it.
	other := w.open(alice, "")
	if st, err := mustFolder(w, other, "Migrated").Status(); err != nil || st.Messages != uint32(110+len(many)) {
		w.fail("status from the ring: %+v, err %v", st, err)
	}
}
