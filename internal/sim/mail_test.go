package sim

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/post"
)

// A small end-to-end run: every message filed exactly once, offline recipients included,
// and no store holds the plaintext marker every body carries.
func TestMailEndToEnd(t *testing.T) {
	const seed = 11
	var out bytes.Buffer
	res, err := RunMail(MailConfig{Nodes: 40, Users: 8, Messages: 200, Offline: 0.3, Seed: seed}, &out, nil)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	last := res[len(res)-1]
	if last.Filed != 200 || last.Duplicates != 0 || last.Lost != 0 || last.Leaks != 0 || res[1].Messages == 0 {
		t.Fatalf("seed %d:\n%s", seed, out.String())
	}
	t.Logf("seed %d:\n%s", seed, out.String())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// world is a small ring with POST on every node, for scenarios.
type world struct {
	t     *testing.T
	seed  uint64
	run   *mailRun
	caKey ed25519.PrivateKey
	users []*simUser
}

func newWorld(t *testing.T, seed uint64, nodes int, revoked func(uint64) bool) *world {
	t.Helper()
	cfg := MailConfig{Nodes: nodes, Users: 2, Seed: seed}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Post.Revoked = revoked
	cfg.Post.SnapshotEvery = 10
	cfg.Post.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	return newWorldCfg(t, seed, nodes, cfg)
}

// newWorldCfg builds a world of nodes nodes running cfg (validated).
func newWorldCfg(t *testing.T, seed uint64, nodes int, cfg MailConfig) *world {
	t.Helper()
	pc := pastry.Config{Ring: ids.RingIDOf(cfg.ringName()), LeafSetSize: cfg.LeafSet}
	run := &mailRun{cfg: cfg, ring: newSimRing(seed, pc, cfg.Tick), rng: rand.New(rand.NewPCG(seed, 1)), ringID: pc.Ring, byID: map[post.NotificationID]*simMsg{}}
	var s [32]byte
	fill(run.rng, s[:])
	w := &world{t: t, seed: seed, run: run, caKey: ed25519.NewKeyFromSeed(s[:])}
	run.caPub = w.caKey.Public().(ed25519.PublicKey)
	fill(run.rng, run.secret[:])
	for i := 0; i < nodes; i++ {
		run.ring.net.RunFor(20 * time.Millisecond)
		run.addNode()
	}
	run.ring.net.RunFor(30 * time.Second)
	return w
}

func (w *world) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed %d: %s", w.seed, fmt.Sprintf(format, args...))
}

func (w *world) wait(d time.Duration, done func() bool) {
	for end := w.run.ring.net.Elapsed() + d; !done() && w.run.ring.net.Elapsed() < end; {
		w.run.ring.net.RunFor(100 * time.Millisecond)
	}
}

// addUser creates a user on node i (serial chosen by the caller).
func (w *world) addUser(i int, addr string, serial uint64) *simUser {
	w.t.Helper()
	mn := w.run.nodes[i]
	keys, _ := identity.NewKeys(rand.NewChaCha8([32]byte{byte(serial)}))
	nb := w.run.ring.net.Now().Add(-time.Hour).Truncate(time.Second)
	sr, err := identity.SignRecord(identity.Record{Ring: w.run.ringID, Address: addr, Keys: keys.Public(), Serial: serial, NotBefore: nb, NotAfter: nb.Add(24 * time.Hour)}, w.caKey)
	if err != nil {
		w.fail("%v", err)
	}
	su := &simUser{addr: addr, keys: keys, rec: sr, node: mn}
	mn.users = append(mn.users, su)
	var done bool
	mn.post.AddUser(keys, sr, true, func(u *post.User, err error) {
		done = true
		if err != nil {
			w.fail("add %s: %v", addr, err)
		}
		su.u = u
	})
	w.wait(time.Minute, func() bool { return done })
	w.run.ring.net.RunFor(5 * time.Second)
	return su
}

func (w *world) send(from *simUser, to []string, parts [][]byte) []post.Result {
	w.t.Helper()
	var res []post.Result
	from.u.Send(to, parts, func(r []post.Result) { res = r })
	w.wait(time.Minute, func() bool { return res != nil })
	if res == nil {
		w.fail("send never answered")
	}
	return res
}

func (w *world) inbox(su *simUser) [][]byte {
	e, err := su.u.Entries(post.InboxLog, 0)
	if err != nil {
		w.fail("%v", err)
	}
	return e
}

// Unknown and revoked recipients are refused before anything is accepted; the same 1 MiB
// attachment sent 100 times is stored once; a replayed notification is filed once.
func TestMailRecipientsDedupeAndReplay(t *testing.T) {
	w := newWorld(t, 21, 30, func(serial uint64) bool { return serial == 99 })
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	// r's record is published (replicas here have no revocation list) but revoked at the CA.
	rkeys, _ := identity.NewKeys(rand.NewChaCha8([32]byte{99}))
	nb := w.run.ring.net.Now().Add(-time.Hour).Truncate(time.Second)
	rsr, _ := identity.SignRecord(identity.Record{Ring: w.run.ringID, Address: "r@sim.example", Keys: rkeys.Public(), Serial: 99, NotBefore: nb, NotAfter: nb.Add(24 * time.Hour)}, w.caKey)
	post.PublishRecord(w.run.nodes[2].pd, rsr, w.run.ring.net.Now().Add(time.Hour), func(err error) {
		if err != nil {
			w.fail("publish: %v", err)
		}
	})
	w.run.ring.net.RunFor(5 * time.Second)
	res := w.send(a, []string{"nobody@sim.example", "r@sim.example", "b@sim.example"}, [][]byte{[]byte("hi")})
	if res[0].Status != post.UnknownRecipient || res[1].Status != post.RevokedRecipient || res[2].Status != post.Accepted {
		w.fail("statuses %v %v %v", res[0], res[1], res[2])
	}

	att := make([]byte, 1<<20)
	fill(rand.New(rand.NewPCG(w.seed, 2)), att)
	objects := func() (n int, bytes int64) {
		for _, mn := range w.run.nodes {
			n += mn.st.Len()
			bytes += mn.st.Bytes()
		}
		return
	}
	w.send(a, []string{"b@sim.example"}, [][]byte{[]byte("first"), att})
	w.run.ring.net.RunFor(10 * time.Second)
	n1, b1 := objects()
	for i := 0; i < 99; i++ {
		w.send(a, []string{"b@sim.example"}, [][]byte{[]byte("again"), att})
	}
	w.run.ring.net.RunFor(30 * time.Second)
	n2, b2 := objects()
	// 99 more messages add INBOX entries, heads and small parts, but never the attachment.
	if grow := b2 - b1; grow > 99*64<<10 {
		w.fail("stores grew by %d bytes (%d objects) for 99 resends of a 1 MiB attachment", grow, n2-n1)
	}
	if got := len(w.inbox(b)); got != 101 {
		w.fail("INBOX has %d entries, want 101", got)
	}

	// Replay: the same notification id sent again (a retried submission, or a pending copy
	// pushed twice) is filed once.
	id := post.NotificationID{42}
	before := len(w.inbox(b))
	for i := 0; i < 3; i++ {
		var r []post.Result
		a.u.SendWithIDs([]string{"b@sim.example"}, []post.NotificationID{id}, [][]byte{[]byte("replayed")}, func(x []post.Result) { r = x })
		w.wait(time.Minute, func() bool { return r != nil })
		w.run.ring.net.RunFor(10 * time.Second)
	}
	if got := len(w.inbox(b)) - before; got != 1 {
		w.fail("replayed notification filed %d times", got)
	}
	if b.node.post.Stats().Duplicates == 0 {
		w.fail("no duplicate arrival was seen")
	}
}

// The sender's node dies right after acceptance of a message for an offline recipient: the
// replicated pending copy still reaches the recipient, exactly once, when it returns.
func TestMailSenderDiesOfflineRecipientReturns(t *testing.T) {
	w := newWorld(t, 22, 30, nil)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	w.run.crash(b.node)
	w.run.ring.net.RunFor(time.Minute)
	res := w.send(a, []string{"b@sim.example"}, [][]byte{[]byte("while you were out")})
	if res[0].Status != post.Accepted {
		w.fail("send: %v", res[0])
	}
	w.run.crash(a.node)
	w.run.ring.net.RunFor(30 * time.Second)
	w.run.restart(b.node)
	w.wait(2*time.Minute, func() bool { e, _ := b.u.Entries(post.InboxLog, 0); return len(e) == 1 })
	w.run.ring.net.RunFor(time.Minute)
	if e := w.inbox(b); len(e) != 1 {
		w.fail("INBOX has %d entries, want 1", len(e))
	}
}

// Logs: a lookup miss never leads to a new head over an existing one; snapshots bound replay
// and replay gives back every entry.
func TestMailLogsCreateSnapshotReplay(t *testing.T) {
	w := newWorld(t, 23, 30, nil)
	a := w.addUser(0, "a@sim.example", 1)
	var err error
	done := false
	a.u.CreateLog(post.InboxLog, func(e error) { err, done = e, true })
	w.wait(time.Minute, func() bool { return done })
	if !errors.Is(err, post.ErrLogExists) {
		w.fail("second create of INBOX: %v", err)
	}
	// The same user on another node (a node restarted without its cache) must find and open
	// the logs, not create them again.
	before, _ := a.u.Head(post.InboxLog)
	other := w.run.nodes[5].post
	var u2 *post.User
	done = false
	other.AddUser(a.keys, a.rec, true, func(u *post.User, e error) { u2, err, done = u, e, true })
	w.wait(time.Minute, func() bool { return done })
	if err != nil || u2 == nil {
		w.fail("fresh start over existing logs: %v", err)
	}
	if h, err := u2.Head(post.InboxLog); err != nil || h.Seq != before.Seq || h.Key != before.Key {
		w.fail("fresh start over existing logs opened INBOX head %+v (%v), want %+v", h, err, before)
	}
	if root, _ := u2.Entries(post.RootLog, 0); len(root) != 1 || string(root[0]) != "+INBOX" {
		w.fail("root log %q after a fresh start over existing logs", root)
	}

	const entries = 23
	for i := 0; i < entries; i++ {
		a.u.Append("INBOX", []byte(fmt.Sprintf("entry %d", i)), nil)
		w.run.ring.net.RunFor(300 * time.Millisecond)
	}
	w.run.ring.net.RunFor(20 * time.Second)
	h, err := a.u.Head(post.InboxLog)
	if err != nil || h.Count != entries || h.SnapshotIndex == 0 {
		w.fail("head %+v %v (snapshot every %d)", h, err, w.run.nodes[0].post.Config().SnapshotEvery)
	}
	// Replay on a third node from the ring alone.
	third := w.run.nodes[9].post
	done = false
	var u3 *post.User
	third.AddUser(a.keys, a.rec, false, func(u *post.User, e error) { u3, err, done = u, e, true })
	w.wait(2*time.Minute, func() bool { return done })
	if err != nil {
		w.fail("open elsewhere: %v", err)
	}
	if u3 == nil {
		w.fail("open elsewhere gave no user (done=%v)", done)
	}
	got, _ := u3.Entries(post.InboxLog, 0)
	if len(got) != entries || !strings.HasPrefix(string(got[entries-1]), "entry 22") {
		w.fail("replayed %d entries", len(got))
	}
}

// The same seed gives byte-identical summary lines: nothing in the run may depend on map
// iteration order, wall-clock time or unseeded randomness.
func TestMailSameSeedSameSummary(t *testing.T) {
	const seed = 12
	cfg := MailConfig{Nodes: 40, Users: 8, Messages: 150, Offline: 0.3, Seed: seed, Attachment: 0.2}
	var a, b bytes.Buffer
	if _, err := RunMail(cfg, &a, nil); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if _, err := RunMail(cfg, &b, nil); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if a.String() != b.String() {
		t.Fatalf("seed %d: two runs differ:\n%s\n%s", seed, a.String(), b.String())
	}
	t.Logf("seed %d:\n%s", seed, a.String())
}

// The recipient's node crashes right after a notification is filed (journaled, shown) and
// before its INBOX head write. The user is then opened from the ring on another node with
// the same journal (the user's directory): replay appends the entry, the holders' re-push
// of the pending copy is recognised, and the message is in INBOX exactly once; the pending
// copy is dropped only after that.
func TestMailJournalCrashBeforeHeadWrite(t *testing.T) {
	w := newWorld(t, 24, 30, nil)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	var filed []post.Filed
	crashed := false
	b.node.post.OnFiled = func(f post.Filed) {
		filed = append(filed, f)
		if !crashed {
			crashed = true
			w.run.crash(b.node) // before the INBOX head write starts
		}
	}
	var res []post.Result
	a.u.Send([]string{b.addr}, [][]byte{[]byte("journaled, then the node died")}, func(r []post.Result) { res = r })
	w.wait(time.Minute, func() bool { return res != nil && crashed })
	if !crashed || res == nil || res[0].Status != post.Accepted {
		w.fail("filed %v, send %v", crashed, res)
	}
	key := pendingKeyOf(w, b, filed[0].ID)
	j := b.node.journal[b.addr]
	if es, _ := j.Entries(); len(es) != 1 {
		w.fail("journal holds %d entries, want 1", len(es))
	}
	if holders(w, key) == 0 {
		w.fail("the pending copy was dropped before the INBOX head write")
	}

	// The user's directory moves to node 7 (a replacement machine): open from the ring.
	other := w.run.nodes[7]
	if other.journal == nil {
		other.journal = map[string]*post.MemJournal{}
	}
	other.journal[b.addr] = j
	var u2 *post.User
	var err error
	done := false
	refiled := 0
	other.post.OnFiled = func(post.Filed) { refiled++ }
	other.post.AddUser(b.keys, b.rec, false, func(u *post.User, e error) { u2, err, done = u, e, true })
	w.wait(2*time.Minute, func() bool { return done })
	if err != nil || u2 == nil {
		w.fail("open b elsewhere: %v", err)
	}
	w.wait(2*time.Minute, func() bool { return holders(w, key) == 0 })
	w.run.ring.net.RunFor(30 * time.Second)
	got, _ := u2.Entries(post.InboxLog, 0)
	if len(got) != 1 || refiled != 0 {
		w.fail("INBOX has %d entries (want 1), filed again %d times (want 0)", len(got), refiled)
	}
	if f, err := post.DecodeFiled(got[0]); err != nil || f.ID != filed[0].ID {
		w.fail("INBOX entry %v, %v", f, err)
	}
	if es, _ := j.Entries(); len(es) != 0 {
		w.fail("journal still holds %d entries", len(es))
	}
	if n := holders(w, key); n != 0 {
		w.fail("%d holders still keep the pending copy", n)
	}
	if other.post.Stats().Duplicates == 0 {
		w.fail("the holders' re-push was never seen")
	}
}

func pendingKeyOf(w *world, su *simUser, id post.NotificationID) ids.Key {
	return past.PendingKey(w.run.ringID, su.addr, id)
}

// holders counts live stores holding key.
func holders(w *world, key ids.Key) int {
	n := 0
	for _, mn := range w.run.nodes {
		if !mn.offline && mn.st.Has(key) {
			n++
		}
	}
	return n
}

// OnFiled is reported only once Entries(InboxLog) shows the filed entry, so a reader it wakes
// (IMAP IDLE rereading INBOX) finds the message at once; also when the journaled entry is
// queued behind an ordinary INBOX append still waiting for its head write.
func TestMailOnFiledAfterEntriesShowIt(t *testing.T) {
	w := newWorld(t, 25, 30, nil)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	filed := 0
	appended := false
	b.node.post.OnFiled = func(f post.Filed) {
		filed++
		es, err := b.u.Entries(post.InboxLog, 0)
		found := false
		for _, e := range es {
			if g, err := post.DecodeFiled(e); err == nil && g.ID == f.ID {
				found = true
			}
		}
		if err != nil || !found {
			w.fail("OnFiled for %x before Entries shows it (%d entries, %v)", f.ID[:4], len(es), err)
		}
		if !appended {
			// An ordinary append now queues behind this entry and ahead of the next one.
			appended = true
			b.u.Append(post.InboxLog, []byte("mailstore flags entry"), nil)
		}
	}
	res := w.send(a, []string{b.addr, b.addr, b.addr}, [][]byte{[]byte("watch INBOX")})
	for _, r := range res {
		if r.Status != post.Accepted {
			w.fail("send: %v", r)
		}
	}
	w.wait(time.Minute, func() bool { return filed == 3 })
	if filed != 3 {
		w.fail("filed %d of 3", filed)
	}
	w.run.ring.net.RunFor(10 * time.Second)
	if got := len(w.inbox(b)); got != 4 {
		w.fail("INBOX has %d entries, want 4", got)
	}
}

// The recipient's node comes back while its presence tree is under repair, so its first
// "online" never reaches the holders of its pending copy (here: they are cut off for the
// moment it announces). The re-announcements on a backoff reach them, and the message is
// filed within seconds of the node's return, not at the next OnlineInterval.
func TestMailPresenceFirstAnnouncementMissed(t *testing.T) {
	w := newWorld(t, 26, 30, nil)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	w.run.crash(b.node)
	w.run.ring.net.RunFor(time.Minute)
	res := w.send(a, []string{b.addr}, [][]byte{[]byte("are you there?")})
	if res[0].Status != post.Accepted {
		w.fail("send: %v", res[0])
	}
	// The sender's push and the holders' own offers (HolderDelay) found nobody.
	w.run.ring.net.RunFor(30 * time.Second)
	key := pendingKeyOf(w, b, res[0].ID)
	var cut []*mailNode
	for _, mn := range w.run.nodes {
		if !mn.offline && mn.st.Has(key) {
			cut = append(cut, mn)
		}
	}
	if len(cut) == 0 {
		w.fail("nobody holds the pending copy")
	}
	net := w.run.ring.net
	w.run.restart(b.node)
	sn := b.node.sn
	resume := sn.drv.OnEvent
	cutOff := false
	sn.drv.OnEvent = func(e pastry.Event) {
		if e.Kind == pastry.EventReady && !cutOff {
			// Resume announces now: the holders miss it.
			cutOff = true
			for _, mn := range cut {
				mn.sn.ep.SetPartition(1)
			}
			net.AfterFunc(time.Second, func() {
				for _, mn := range cut {
					mn.sn.ep.SetPartition(0)
				}
			})
		}
		resume(e)
	}
	filed := func() bool { e, _ := b.u.Entries(post.InboxLog, 0); return len(e) == 1 }
	w.wait(2*time.Minute, func() bool { return cutOff && filed() })
	if !cutOff || !filed() {
		w.fail("not filed within 2 minutes of the restart (back: %v)", cutOff)
	}
	if took := net.Elapsed() - b.node.backs[len(b.node.backs)-1]; took > 10*time.Second {
		w.fail("filed %v after the recipient's node returned, want a few seconds", took)
	} else {
		t.Logf("seed %d: filed %v after the recipient's node returned (%d holders cut off at its first announcement)", w.seed, took, len(cut))
	}
}
