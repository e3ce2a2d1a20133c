package mailstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/internal/mailbox"
	"epost/internal/post"
)

func (w *testWorld) open(tu *testUser, cacheFile string) *Store {
	w.t.Helper()
	s, err := Open(context.Background(), Config{
		Address: tu.addr, Logs: tu.u, Contents: tu.node.post, Clock: tu.node.ep.Clock(), Drive: w.drive,
		Rand: rand.NewChaCha8([32]byte{byte(w.rng.Uint32())}), CacheFile: cacheFile, CacheKey: CacheKey(tu.keys),
		Timeout: 2 * time.Minute,
	})
	if err != nil {
		w.fail("open store of %s: %v", tu.addr, err)
	}
	tu.node.onFiled = func(f post.Filed) {
		if f.User == tu.addr {
			s.Filed()
		}
	}
	return s
}

func mustFolder(w *testWorld, s mailbox.Store, name string) mailbox.Folder {
	w.t.Helper()
	f, err := s.Folder(name)
	if err != nil {
		w.fail("folder %s: %v", name, err)
	}
	return f
}

func readAll(w *testWorld, f mailbox.Folder, uid mailbox.UID) []byte {
	w.t.Helper()
	c, err := f.Content(uid)
	if err != nil {
		w.fail("content %d: %v", uid, err)
	}
	b, err := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
	if err != nil {
		w.fail("read %d: %v", uid, err)
	}
	return b
}

// attachmentMessage builds a multipart message carrying att as a base64 attachment.
func attachmentMessage(subject, boundary string, att []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: alice@ring.example\r\nTo: bob@ring.example\r\nSubject: %s\r\nMIME-Version: 1.0\r\n", subject)
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=%q\r\n\r\npreamble\r\n--%s\r\n", boundary, boundary)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\nsee the attachment\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\n", boundary)
	enc := make([]byte, 0, len(att)*4/3+4)
	enc = appendBase64Lines(enc, att)
	b.Write(enc)
	fmt.Fprintf(&b, "\r\n--%s--\r\nepilogue\r\n", boundary)
	return b.Bytes()
}

func appendBase64Lines(dst, src []byte) []byte {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	line := 0
	for i := 0; i+2 < len(src); i += 3 {
		v := uint(src[i])<<16 | uint(src[i+1])<<8 | uint(src[i+2])
		dst = append(dst, alpha[v>>18&63], alpha[v>>12&63], alpha[v>>6&63], alpha[v&63])
		if line += 4; line == 76 {
			dst = append(dst, '\r', '\n')
			line = 0
		}
	}
	return dst
}

// One user's store: byte-exact append and fetch (plain, malformed, 2 MiB attachment), flags
// and MODSEQ, copy, move, expunge, and everything identical after a restart on another node
// with the cache deleted, and again with the cache.
func TestStoreOnRing(t *testing.T) {
	for _, seed := range []uint64{7, 8, 9} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { testStoreOnRing(t, seed) })
	}
}

func testStoreOnRing(t *testing.T, seed uint64) {
	start := time.Now()
	w := newTestWorld(t, seed, 12)
	alice := w.newUser("alice@ring.example", 1)
	w.start(alice, w.nodes[1], true)
	cache := filepath.Join(t.TempDir(), "alice.cache")
	s := w.open(alice, cache)
	if err := mailbox.EnsureSpecialUse(s); err != nil {
		w.fail("special use: %v", err)
	}
	infos, _ := s.Folders()
	if len(infos) != 6 || infos[0].Name != mailbox.Inbox {
		w.fail("folders %+v", infos)
	}
	inbox := mustFolder(w, s, "inbox")
	st0, _ := inbox.Status()
	if st0.UIDValidity == 0 || st0.UIDNext != 1 {
		w.fail("inbox status %+v", st0)
	}

	att := make([]byte, 2<<20)
	w.fill(att)
	msgs := [][]byte{
		[]byte("From: a@ring.example\r\nSubject: plain\r\n\r\nhello\r\n"),
		[]byte("Subject: x\n\n\x00\xff broken"),
		[]byte("Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nno end" + strings.Repeat("y", 3000)),
		attachmentMessage("big", "b1", att),
	}
	var uids []mailbox.UID
	for i, raw := range msgs {
		uid, err := inbox.Append(raw, []mailbox.Flag{"$Label1"}, time.Time{})
		if err != nil || uid != mailbox.UID(i+1) {
			w.fail("append %d: uid %d err %v", i, uid, err)
		}
		uids = append(uids, uid)
	}
	for i, uid := range uids {
		if got := readAll(w, inbox, uid); !bytes.Equal(got, msgs[i]) {
			w.fail("message %d not byte-exact (%d bytes, want %d)", i, len(got), len(msgs[i]))
		}
	}
	if pieces := splitMessage(msgs[2]); len(pieces) != 1 {
		w.fail("malformed MIME split into %d pieces", len(pieces))
	}
	m, err := inbox.Message(uids[3])
	if err != nil || m.Structure.Envelope.Subject != "big" || len(m.Structure.BodyStructure.(*mailbox.MultiPart).Children) != 2 {
		w.fail("structure %+v err %v", m, err)
	}

	// Flags and MODSEQ (RFC 7162): every change raises the modseq; UNCHANGEDSINCE refuses.
	st1, _ := inbox.Status()
	res, err := inbox.ChangeFlags([]mailbox.UID{1, 2}, mailbox.FlagsAdd, []mailbox.Flag{"\\seen", "Work"}, 0)
	if err != nil || len(res.Changed) != 2 || res.ModSeq <= st1.HighestModSeq {
		w.fail("flags add: %+v %v", res, err)
	}
	if !slices.Equal(res.Changed[0].Flags, []mailbox.Flag{"$Label1", "Work", mailbox.FlagSeen}) {
		w.fail("flags %v", res.Changed[0].Flags)
	}
	res2, _ := inbox.ChangeFlags([]mailbox.UID{1, 3}, mailbox.FlagsRemove, []mailbox.Flag{"$Label1"}, res.ModSeq-1)
	if len(res2.Modified) != 1 || res2.Modified[0] != 1 || len(res2.Changed) != 1 || res2.Changed[0].UID != 3 {
		w.fail("unchangedsince: %+v", res2)
	}
	res3, _ := inbox.ChangeFlags([]mailbox.UID{2}, mailbox.FlagsAdd, []mailbox.Flag{mailbox.FlagSeen}, 0)
	if len(res3.Unchanged) != 1 || len(res3.Changed) != 0 || res3.ModSeq != res2.ModSeq {
		w.fail("no-op store: %+v", res3)
	}
	if _, err := inbox.ChangeFlags([]mailbox.UID{4}, mailbox.FlagsAdd, []mailbox.Flag{mailbox.FlagDeleted}, 0); err != nil {
		w.fail("flag deleted: %v", err)
	}
	snapshotStore(w, s) // checks Status's counts after the flag changes

	// Copy, move, expunge.
	archive := mustFolder(w, s, "Archive")
	cr, err := inbox.Copy([]mailbox.UID{4, 1}, archive)
	if err != nil || !slices.Equal(cr.SourceUIDs, []mailbox.UID{1, 4}) || !slices.Equal(cr.DestUIDs, []mailbox.UID{1, 2}) || cr.UIDValidity != archive.Info().UIDValidity {
		w.fail("copy %+v %v", cr, err)
	}
	if got := readAll(w, archive, 2); !bytes.Equal(got, msgs[3]) {
		w.fail("copied attachment message differs")
	}
	trash := mustFolder(w, s, "Trash")
	mr, err := inbox.Move([]mailbox.UID{2}, trash)
	if err != nil || !slices.Equal(mr.DestUIDs, []mailbox.UID{1}) {
		w.fail("move %+v %v", mr, err)
	}
	before, _ := inbox.Status()
	gone, err := inbox.Expunge([]mailbox.UID{3, 99})
	if err != nil || !slices.Equal(gone, []mailbox.UID{3}) {
		w.fail("expunge %v %v", gone, err)
	}
	after, _ := inbox.Status()
	if after.HighestModSeq <= before.HighestModSeq || after.Messages != 2 {
		w.fail("after expunge %+v", after)
	}
	vanished, _ := inbox.Expunged(before.HighestModSeq)
	if !slices.Equal(vanished, []mailbox.UID{3}) {
		w.fail("expunged since: %v", vanished)
	}
	if err := s.Create("Projects/2026", ""); err != nil {
		w.fail("create: %v", err)
	}
	if err := s.Rename("Projects", "Old"); err != nil && err != mailbox.ErrNoFolder {
		w.fail("rename: %v", err)
	}
	if err := s.Rename("Projects/2026", "Old/2026"); err != nil {
		w.fail("rename: %v", err)
	}
	// RFC 3501 section 6.3.4/6.3.5: a folder made again gets a larger UIDVALIDITY; renaming
	// INBOX moves its messages and leaves it empty with its UIDVALIDITY.
	oldUV := mustFolder(w, s, "Junk").Info().UIDValidity
	if err := s.Delete("Junk"); err != nil {
		w.fail("delete: %v", err)
	}
	if _, err := s.Folder("Junk"); err != mailbox.ErrNoFolder {
		w.fail("deleted folder still there: %v", err)
	}
	if err := s.Create("Junk", mailbox.MailboxAttrJunk); err != nil {
		w.fail("create again: %v", err)
	}
	if uv := mustFolder(w, s, "Junk").Info().UIDValidity; uv <= oldUV {
		w.fail("UIDVALIDITY %d after re-creation, was %d", uv, oldUV)
	}
	inboxUV := inbox.Info().UIDValidity
	if err := s.Rename("INBOX", "Old mail"); err != nil {
		w.fail("rename INBOX: %v", err)
	}
	if st, _ := inbox.Status(); st.Messages != 0 || st.UIDValidity != inboxUV || st.UIDNext != 5 {
		w.fail("INBOX after rename %+v", st)
	}
	if st, _ := mustFolder(w, s, "Old mail").Status(); st.Messages != 2 {
		w.fail("renamed INBOX %+v", st)
	}
	if b := readAll(w, mustFolder(w, s, "Old mail"), 2); !bytes.Equal(b, msgs[3]) {
		w.fail("message moved by the INBOX rename differs")
	}
	if _, err := inbox.Append(msgs[0], nil, time.Time{}); err != nil {
		w.fail("append after rename: %v", err)
	}
	want := snapshotStore(w, s)
	t.Logf("state:\n%s", want)
	if err := s.Close(); err != nil {
		w.fail("close: %v", err)
	}
	t.Logf("seed %d: operations done at %s virtual, %s wall", seed, w.net.Elapsed(), time.Since(start))

	// Restart elsewhere: the node dies, the user comes up on another node, with no cache
	// (everything replayed from the logs), then with the cache.
	w.crash(alice.node)
	w.net.RunFor(30 * time.Second)
	for _, useCache := range []bool{false, true} {
		tu := &testUser{addr: alice.addr, keys: alice.keys, rec: alice.rec}
		node := w.nodes[2]
		if useCache {
			node = w.nodes[3]
		}
		w.start(tu, node, false)
		cf := filepath.Join(t.TempDir(), "fresh.cache")
		if useCache {
			cf = cache
		}
		s2 := w.open(tu, cf)
		got := snapshotStore(w, s2)
		if got != want {
			w.fail("state after restart (cache %v) differs:\n got %s\nwant %s", useCache, got, want)
		}
		in2 := mustFolder(w, s2, mailbox.Inbox)
		if b := readAll(w, in2, 5); !bytes.Equal(b, msgs[0]) {
			w.fail("attachment message after restart differs")
		}
		s2.Close()
		w.crash(node)
		w.net.RunFor(30 * time.Second)
	}
	t.Logf("seed %d: done at %s virtual, %s wall", seed, w.net.Elapsed(), time.Since(start))
}

// snapshotStore renders everything a client can observe, except \Recent.
func snapshotStore(w *testWorld, s mailbox.Store) string {
	w.t.Helper()
	var b strings.Builder
	infos, _ := s.Folders()
	for _, fi := range infos {
		f := mustFolder(w, s, fi.Name)
		st, _ := f.Status()
		fmt.Fprintf(&b, "%s use=%s sub=%v uv=%d next=%d hms=%d n=%d size=%d\n", fi.Name, fi.SpecialUse, fi.Subscribed, st.UIDValidity, st.UIDNext, st.HighestModSeq, st.Messages, st.Size)
		l, _ := f.List()
		var unseen, deleted uint32
		var size int64
		for _, m := range l {
			fmt.Fprintf(&b, "  %d ms=%d %v %s %d\n", m.UID, m.ModSeq, m.Flags, m.InternalDate.UTC().Format(time.RFC3339), m.Size)
			if !slices.Contains(m.Flags, mailbox.FlagSeen) {
				unseen++
			}
			if slices.Contains(m.Flags, mailbox.FlagDeleted) {
				deleted++
			}
			size += m.Size
		}
		// Status keeps its counts as the folder changes: they must match the messages.
		if st.Unseen != unseen || st.Deleted != deleted || st.Size != size || st.Messages != uint32(len(l)) {
			w.fail("%s: status counts unseen=%d deleted=%d size=%d n=%d, the messages say %d %d %d %d",
				fi.Name, st.Unseen, st.Deleted, st.Size, st.Messages, unseen, deleted, size, len(l))
		}
		ex, _ := f.Expunged(0)
		fmt.Fprintf(&b, "  expunged %v\n", ex)
	}
	return b.String()
}
