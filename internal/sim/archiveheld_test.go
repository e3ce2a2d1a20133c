package sim

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/post"
)

// An object whose PAST replicas all lose it before its aggregate reaches Glacier (within
// ArchiveFlush of its write) is not lost while its owner's node is up: the archive still holds
// it in memory, and the owner's next read stores it in PAST again. Here every copy of a filed
// message's chunks is wiped from every store (three disks lost at once, say) while the
// recipient's archive waits an hour to flush; the recipient still reads the message, and the
// ring holds the chunks again.
func TestArchiveHeldRestoresObjectsPASTLost(t *testing.T) {
	testArchiveHeld(t, 45, false)
}

// The same loss after a restart of the recipient's node (its memory gone): the members it
// held on disk (archive.held) go back into its archive at the start, and the read finds them.
func TestArchiveHeldSurvivesRestart(t *testing.T) {
	testArchiveHeld(t, 46, true)
}

// newHeldWorld is an archive world whose users keep their archive state (and held files) in
// directories under the returned one, with aggregates flushed after flush.
func newHeldWorld(t *testing.T, seed uint64, flush time.Duration) (*world, string) {
	dir := t.TempDir()
	return newArchiveWorldWith(t, seed, 20, func(c *MailConfig) {
		c.Post.ArchiveFlush = flush
		c.Post.ArchiveFile = func(addr string) string {
			d := filepath.Join(dir, addr)
			_ = os.MkdirAll(d, 0o700)
			return filepath.Join(d, "archive.state")
		}
	}), dir
}

func testArchiveHeld(t *testing.T, seed uint64, restart bool) {
	w, dir := newHeldWorld(t, seed, time.Hour)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	body := make([]byte, 30000)
	fill(rand.New(rand.NewPCG(seed, 3)), body)
	if res := w.send(a, []string{b.addr}, [][]byte{[]byte("subject"), body}); len(res) != 1 || res[0].Err != nil {
		w.fail("send: %+v", res)
	}
	w.wait(5*time.Minute, func() bool { return len(w.inbox(b)) == 1 })
	w.run.ring.net.RunFor(time.Minute) // the recipient's node archives the chunks (keepRefs)
	if st := archiveStats(b.node); st.ArchiveFlushed != 0 || st.ArchivePending == 0 {
		w.fail("before the loss: want members pending and nothing flushed, got %+v", st)
	}
	f, err := post.DecodeFiled(w.inbox(b)[0])
	if err != nil {
		w.fail("filed entry: %v", err)
	}
	var keys []ids.Key
	for _, ref := range f.Parts {
		for _, e := range ref.Chunks {
			keys = append(keys, e.Location)
		}
	}
	if len(keys) == 0 {
		w.fail("the message has no chunks in PAST (all inline?)")
	}
	held := filepath.Join(dir, b.addr, "archive.held")
	if fi, err := os.Stat(held); err != nil || fi.Size() < int64(len(body)) {
		w.fail("the held file: %v (want at least the chunk's %d bytes)", err, len(body))
	}
	if restart {
		if errs := w.restartProcess(b.node, 10*time.Second, 5*time.Minute); len(errs) > 0 {
			w.fail("restart of b's node: %v", errs)
		}
	}
	far := w.run.ring.net.Now().Add(1000 * time.Hour)
	for _, k := range keys {
		for _, mn := range w.run.nodes {
			if mn.st.Has(k) {
				_ = mn.st.Delete(k)
			}
			_, _ = mn.st.PurgeTrash(far)
		}
		if h := holders(w, k); h != 0 {
			w.fail("chunk %s still on %d stores after the wipe", k.ID.Short(), h)
		}
	}

	var got [][]byte
	for _, ref := range f.Parts {
		var data []byte
		var gerr error
		done := false
		b.u.Get(ref, func(d []byte, e error) { data, gerr, done = d, e, true })
		w.wait(5*time.Minute, func() bool { return done })
		if !done || gerr != nil {
			w.fail("reading a part whose chunks PAST lost: done %v, %v", done, gerr)
		}
		got = append(got, data)
	}
	if len(got) != 2 || !bytes.Equal(got[1], body) {
		w.fail("the message read back differs")
	}
	w.run.ring.net.RunFor(time.Minute)
	for _, k := range keys {
		if h := holders(w, k); h < 2 {
			w.fail("chunk %s on %d stores after the read, want it stored again", k.ID.Short(), h)
		}
	}
	if st := archiveStats(b.node); st.ArchiveRestored == 0 {
		w.fail("nothing counted as restored: %+v", st)
	}
}

// Held files go once their members are stored in Glacier: after mail and a few flushes, with
// nothing pending, no file set aside at a cut is left, and the current one holds nothing
// that waits.
func TestArchiveHeldFilesGoOnceStored(t *testing.T) {
	const seed = 47
	w, dir := newHeldWorld(t, seed, time.Minute)
	a := w.addUser(0, "a@sim.example", 1)
	b := w.addUser(1, "b@sim.example", 2)
	r := rand.New(rand.NewPCG(seed, 3))
	for i := range 6 {
		body := make([]byte, 20000+r.IntN(20000))
		fill(r, body)
		if res := w.send(a, []string{b.addr}, [][]byte{[]byte("subject"), body}); len(res) != 1 || res[0].Err != nil {
			w.fail("send %d: %+v", i, res)
		}
		w.run.ring.net.RunFor(90 * time.Second) // past ArchiveFlush (a minute): a cut each time
	}
	w.wait(10*time.Minute, func() bool {
		s := archiveStats(b.node)
		return s.ArchivePending == 0 && s.ArchiveInserting == 0 && s.ArchiveFlushed >= 3
	})
	st := archiveStats(b.node)
	if st.ArchivePending != 0 || st.ArchiveInserting != 0 || st.ArchiveFlushed < 3 {
		w.fail("archive not idle after the mail: %+v", st)
	}
	ents, err := os.ReadDir(filepath.Join(dir, b.addr))
	if err != nil {
		w.fail("%v", err)
	}
	for _, e := range ents {
		fi, _ := e.Info()
		switch {
		case e.Name() == "archive.held" && fi.Size() > 0:
			w.fail("archive.held holds %d bytes with nothing pending", fi.Size())
		case len(e.Name()) > len("archive.held.") && e.Name()[:len("archive.held.")] == "archive.held.":
			w.fail("%s (%d bytes) left after its aggregate was stored", e.Name(), fi.Size())
		}
	}
}
