package sim

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/post"
)

// newArchiveWorld is newWorld with Glacier on every node as the users' archive, and leases
// short enough (2 h) that a few virtual hours see every lease renewed several times.
func newArchiveWorld(t *testing.T, seed uint64, nodes int) *world {
	t.Helper()
	return newArchiveWorldWith(t, seed, nodes, nil)
}

// newArchiveWorldWith is newArchiveWorld with set applied to the configuration last.
func newArchiveWorldWith(t *testing.T, seed uint64, nodes int, set func(*MailConfig)) *world {
	t.Helper()
	cfg := MailConfig{Nodes: nodes, Users: 2, Seed: seed, Glacier: true, GlacierN: 32, GlacierM: 4}
	cfg.GlacierConfig = glacier.Config{SyncInterval: 10 * time.Minute, SyncDelay: time.Minute, GoneAfter: 30 * 24 * time.Hour, RequestTimeout: 2 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.ContentLease = 2 * time.Hour
	cfg.Post.PendingLease = 2 * time.Hour
	cfg.Post.RefreshInterval = 20 * time.Minute
	cfg.Post.BackupInterval = time.Hour
	cfg.Post.ArchiveFlush = time.Minute
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if set != nil {
		set(&cfg)
	}
	return newWorldCfg(t, seed, nodes, cfg)
}

func archiveStats(mn *mailNode) post.Stats { return mn.post.Stats() }

// The archive end to end in virtual time: mail is aggregated into Glacier, aggregate leases
// are renewed (by manifest) for hours beyond their first lease, aggregates of superseded heads
// are repacked (their blobs fetched back from Glacier), then 60% of the nodes fail at
// once, the recipient's home among them, and the recipient, started from its keys alone on a
// surviving node, reads every message back: heads, entries and parts that PAST lost come from
// Glacier.
func TestMailArchiveRenewAndDisaster(t *testing.T) {
	const seed = 41
	w := newArchiveWorld(t, seed, 40)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	r := rand.New(rand.NewPCG(seed, 2))
	const msgs = 12
	sent := map[string][][]byte{}
	for i := range msgs {
		parts := [][]byte{[]byte(fmt.Sprintf("message %d", i)), make([]byte, 1000+r.IntN(40000))}
		fill(r, parts[1])
		res := w.send(a, []string{b.addr}, parts)
		if len(res) != 1 || res[0].Err != nil {
			w.fail("send %d: %+v", i, res)
		}
		sent[string(parts[0])] = parts
	}
	w.wait(5*time.Minute, func() bool { return len(w.inbox(b)) == msgs })
	if got := len(w.inbox(b)); got != msgs {
		w.fail("%d of %d messages filed", got, msgs)
	}

	// Five virtual hours: every first lease (2 h) would have run out twice.
	home := b.node
	w.run.ring.net.RunFor(5 * time.Hour)
	w.wait(5*time.Minute, func() bool { s := archiveStats(home); return s.ArchivePending == 0 && s.ArchiveInserting == 0 })
	st := archiveStats(home)
	if st.ArchiveFlushed == 0 || st.ArchiveRenewed == 0 || st.ArchiveRepacked == 0 || st.ArchiveFailed != 0 || st.ArchivePending != 0 || st.ArchiveInserting != 0 {
		w.fail("archive after 5 h: %+v", st)
	}
	t.Logf("seed %d: b's archive after 5 h: %d aggregates stored, %d renewed, %d repacked, %d in the chain", seed, st.ArchiveFlushed, st.ArchiveRenewed, st.ArchiveRepacked, st.ArchiveAggregates)

	// The disaster: 60% of the nodes, b's home among them, fail at once and never return.
	var live []*mailNode
	for _, i := range r.Perm(len(w.run.nodes)) {
		mn := w.run.nodes[i]
		if mn == a.node {
			live = append(live, mn)
			continue
		}
		if mn == home || len(live) >= len(w.run.nodes)*4/10 {
			w.run.crash(mn)
			continue
		}
		live = append(live, mn)
	}
	w.run.ring.net.RunFor(2 * time.Minute)
	var other *mailNode
	for _, mn := range live {
		if mn != a.node {
			other = mn
			break
		}
	}
	var u *post.User
	var err error
	done := false
	other.post.AddUser(b.keys, b.rec, true, func(pu *post.User, e error) { u, err, done = pu, e, true })
	w.wait(10*time.Minute, func() bool { return done })
	if !done || err != nil {
		w.fail("b's start from keys on a survivor: done %v, %v", done, err)
	}
	bodies, err := u.Entries(post.InboxLog, 0)
	if err != nil || len(bodies) != msgs {
		w.fail("b's INBOX after the disaster: %d entries (%v), want %d", len(bodies), err, msgs)
	}
	for _, body := range bodies {
		f, err := post.DecodeFiled(body)
		if err != nil {
			w.fail("filed entry: %v", err)
		}
		var got [][]byte
		for _, ref := range f.Parts {
			var data []byte
			var gerr error
			fetched := false
			u.Get(ref, func(d []byte, e error) { data, gerr, fetched = d, e, true })
			w.wait(5*time.Minute, func() bool { return fetched })
			if gerr != nil {
				w.fail("part of a filed message: %v", gerr)
			}
			got = append(got, data)
		}
		want := sent[string(got[0])]
		if len(got) != len(want) || !bytes.Equal(got[1], want[1]) {
			w.fail("message %q differs after the disaster", got[0])
		}
	}
	st = archiveStats(other)
	if st.ArchiveRestored == 0 {
		w.fail("nothing restored from Glacier: PAST lost nothing? %+v", st)
	}
	t.Logf("seed %d: after 60%% failure, %d objects restored from Glacier on b's new node", seed, st.ArchiveRestored)

	// Life goes on among the survivors: new mail is archived, and leases keep being renewed
	// although most fragment positions are held by nodes that have nothing yet (their old
	// holders are not gone for GoneAfter, so nothing is rebuilt): renewals must not stall
	// the archive.
	before := archiveStats(other)
	for i := range 3 {
		res := w.send(a, []string{b.addr}, [][]byte{[]byte(fmt.Sprintf("after %d", i))})
		if len(res) != 1 || res[0].Err != nil {
			w.fail("send after the disaster: %+v", res)
		}
	}
	w.run.ring.net.RunFor(3 * time.Hour)
	w.wait(5*time.Minute, func() bool { s := archiveStats(other); return s.ArchivePending == 0 && s.ArchiveInserting == 0 })
	after := archiveStats(other)
	if after.ArchiveFlushed <= before.ArchiveFlushed || after.ArchiveRenewed <= before.ArchiveRenewed || after.ArchivePending != 0 || after.ArchiveInserting != 0 {
		w.fail("archive among the survivors: before %+v, after %+v", before, after)
	}
	if got, err := u.Entries(post.InboxLog, 0); len(got) != msgs+3 {
		w.fail("%d messages in b's INBOX after the disaster (%v), want %d", len(got), err, msgs+3)
	}
}

// A filed message's chunks reach the recipient's archive even when the lookups that fetch
// them fail at first (a timeout during churn): the recipient's node tries again rather than
// leaving the message outside Glacier until its next start. The recipient's node fails the
// first two lookups of every key.
func TestMailArchiveFetchRetried(t *testing.T) {
	const seed = 43
	const home = 1
	var mu sync.Mutex
	failed := map[ids.Key]int{}
	w := newArchiveWorldWith(t, seed, 16, func(cfg *MailConfig) {
		cfg.LookupFault = func(node int, k ids.Key) error {
			if node != home {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if failed[k] < 2 {
				failed[k]++
				return past.ErrTimeout
			}
			return nil
		}
	})
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(home, "b@sim.example", 2)
	r := rand.New(rand.NewPCG(seed, 3))
	const msgs = 6
	for i := range msgs {
		// Larger than CarryMax: the chunks are not carried, the recipient fetches them.
		parts := [][]byte{[]byte(fmt.Sprintf("message %d", i)), make([]byte, 20000+r.IntN(20000))}
		fill(r, parts[1])
		if res := w.send(a, []string{b.addr}, parts); len(res) != 1 || res[0].Err != nil {
			w.fail("send %d: %+v", i, res)
		}
	}
	w.wait(5*time.Minute, func() bool { return len(w.inbox(b)) == msgs })
	w.wait(10*time.Minute, func() bool {
		s := archiveStats(b.node)
		return s.ArchivePending == 0 && s.ArchiveInserting == 0
	})
	missing, chunks := 0, 0
	for _, body := range w.inbox(b) {
		f, err := post.DecodeFiled(body)
		if err != nil {
			w.fail("filed entry: %v", err)
		}
		for _, ref := range f.Parts {
			for _, c := range ref.Chunks {
				chunks++
				if !b.u.Archived(c.Location) {
					missing++
				}
			}
		}
	}
	mu.Lock()
	faults := len(failed)
	mu.Unlock()
	if faults == 0 || missing != 0 {
		w.fail("%d of %d chunks of filed messages not in the archive (%d keys' lookups failed at first)", missing, chunks, faults)
	}
	t.Logf("seed %d: %d chunks archived although the first two lookups of each of %d keys failed", seed, chunks, faults)
}
