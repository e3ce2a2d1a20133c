package sim

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"epost/internal/post"
)

// A writer whose disk goes back in time: its record of INBOX's head and its received journal
// are rolled back to a copy taken before its last acknowledged appends and a filing the ring
// has; and a second message, filed into the journal and shown (the head naming it waits
// FilingBatch), is lost with the disk when the node dies. After the restart INBOX opens from
// the ring's newer head with every acknowledged entry, then holds post.Config.RewoundInbox
// once, then the lost message filed again (its pending copy stayed in the ring): whatever the
// node shows of the message again comes after the mail store's new UIDVALIDITY. A restart
// with the disk intact adds nothing.
func TestConsistencyDiskGoesBack(t *testing.T) {
	const seed = 1201
	marker := []byte("rewound")
	cfg := MailConfig{Nodes: 30, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Post.RewoundInbox = marker
	cfg.Post.FilingBatch = 300 * time.Millisecond
	w := newWorldCfg(t, seed, 30, cfg)
	const serial = 6
	key := w.logHeadKey(userKeys(serial), post.InboxLog)
	order := w.byCloseness(key)
	wn := order[12] // never one of the head's replicas
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	s := w.addUser(order[20].sn.idx, "s@sim.example", serial+1)
	w.startLog(u, post.InboxLog, key)
	lg := &ledger{name: post.InboxLog}
	net := w.run.ring.net

	w.appendN(u, lg, "A", 3)
	net.RunFor(5 * time.Second)
	copied, err := wn.heads[u.addr].Load()
	if err != nil {
		t.Fatal(err)
	}
	journal, err := wn.journal[u.addr].Entries()
	if err != nil {
		t.Fatal(err)
	}

	filings := func(when string) (ids []post.NotificationID, markers []int, n int) {
		es, err := u.u.Entries(post.InboxLog, 0)
		if err != nil {
			t.Fatalf("seed %d: %s: %v", seed, when, err)
		}
		for i, e := range es {
			if f, err := post.DecodeFiled(e); err == nil {
				ids = append(ids, f.ID)
			}
			if string(e) == string(marker) {
				markers = append(markers, i)
			}
		}
		return ids, markers, len(es)
	}
	// sendShown sends body to u and runs the ring until INBOX shows want filings (from the
	// journal: the head naming the last waits FilingBatch).
	sendShown := func(body string, want int) {
		if r := w.send(s, []string{u.addr}, [][]byte{[]byte(body)}); r[0].Status != post.Accepted {
			t.Fatalf("seed %d: send %s: %v", seed, body, r[0])
		}
		for i := 0; i < 500; i++ {
			if ids, _, _ := filings("waiting for " + body); len(ids) == want {
				return
			}
			net.RunFor(2 * time.Millisecond)
		}
	}
	sendShown("one", 1)
	net.RunFor(5 * time.Second) // its head written
	sendShown("two", 2)
	before, _, _ := filings("two shown")
	if len(before) != 2 {
		t.Fatalf("seed %d: INBOX shows %d filings, want 2 (one, and two from the journal)", seed, len(before))
	}

	// The node dies with two in its journal, and its disk goes back to the copy.
	w.run.crash(wn)
	back := &post.MemHeadRecords{}
	for name, r := range copied {
		if err := back.Save(name, r.Seq, r.Payload); err != nil {
			t.Fatal(err)
		}
	}
	wn.heads[u.addr] = back
	old := &post.MemJournal{}
	for _, e := range journal {
		if err := old.Record(e.ID, e.Entry, e.Carried); err != nil {
			t.Fatal(err)
		}
	}
	wn.journal[u.addr] = old
	w.restartWriter(wn, u, post.InboxLog, key, "restart from the old disk")
	net.RunFor(30 * time.Second) // the holders push two again
	w.checkLedger(u, lg, "after the restart from the old disk")
	ids, markers, n := filings("after the restart from the old disk")
	if len(markers) != 1 || !slices.Equal(ids, before) {
		t.Fatalf("seed %d: after the restart from the old disk INBOX holds the marker at %v and filings %v; want it once, and the filings %v", seed, markers, ids, before)
	}
	es, _ := u.u.Entries(post.InboxLog, 0)
	if f, err := post.DecodeFiled(es[n-1]); err != nil || f.ID != before[1] || markers[0] != n-2 {
		t.Fatalf("seed %d: INBOX ends with the marker at %d of %d entries; want it right before two, filed again last", seed, markers[0], n)
	}

	// The disk as the process left it: nothing is added.
	w.restartWriter(wn, u, post.InboxLog, key, "restart from its own disk")
	net.RunFor(10 * time.Second)
	w.checkLedger(u, lg, "after the restart from its own disk")
	if ids, markers, _ := filings("after the restart from its own disk"); len(markers) != 1 || !slices.Equal(ids, before) {
		t.Fatalf("seed %d: after the restart from its own disk INBOX holds the marker at %v and filings %v", seed, markers, ids)
	}

	// A record one head behind the ring, the journal intact (the crash came between a head's
	// arrival at its replicas and its record's fsync): nothing was lost, nothing is added, and
	// the record catches up, so the journal entry the restart forgets does not make the next
	// restart think the disk went back.
	sendShown("three", 3)
	copied, _ = wn.heads[u.addr].Load()
	journal, _ = wn.journal[u.addr].Entries()
	if len(journal) != 1 {
		t.Fatalf("seed %d: the journal holds %d entries while three waits for its head; want 1", seed, len(journal))
	}
	net.RunFor(5 * time.Second) // three's head is written, and the journal forgets it
	all, _, _ := filings("three written")
	w.run.crash(wn)
	wn.heads[u.addr], wn.journal[u.addr] = &post.MemHeadRecords{}, &post.MemJournal{}
	for name, r := range copied {
		wn.heads[u.addr].Save(name, r.Seq, r.Payload)
	}
	for _, e := range journal {
		wn.journal[u.addr].Record(e.ID, e.Entry, e.Carried)
	}
	for _, when := range []string{"restart with the record one head behind", "restart after the record caught up"} {
		w.restartWriter(wn, u, post.InboxLog, key, when)
		net.RunFor(10 * time.Second)
		if ids, markers, _ := filings(when); len(markers) != 1 || !slices.Equal(ids, all) {
			t.Fatalf("seed %d: %s: INBOX holds the marker at %v and filings %v; want it once, and the filings %v", seed, when, markers, ids, all)
		}
	}
	w.checkLedger(u, lg, "at the end")
	w.readFromRing(u, wn, lg, key)
}
