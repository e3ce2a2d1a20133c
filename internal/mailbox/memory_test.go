package mailbox

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

var testNow = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func msg(subject string) []byte {
	return []byte("From: a@example.org\r\nSubject: " + subject + "\r\n\r\nbody\r\n")
}

func mustFolder(t *testing.T, s Store, name string) Folder {
	t.Helper()
	f, err := s.Folder(name)
	if err != nil {
		t.Fatalf("folder %s: %v", name, err)
	}
	return f
}

func TestEnsureSpecialUse(t *testing.T) {
	m := NewMemory(testNow)
	for i := 0; i < 2; i++ { // idempotent
		if err := EnsureSpecialUse(m); err != nil {
			t.Fatal(err)
		}
	}
	infos, _ := m.Folders()
	got := map[MailboxAttr]string{}
	for _, fi := range infos {
		got[fi.SpecialUse] = fi.Name
		if !fi.Subscribed {
			t.Errorf("%s not subscribed", fi.Name)
		}
	}
	for _, su := range SpecialUses {
		if got[su.Use] != su.Name {
			t.Errorf("%s: got %q want %q", su.Use, got[su.Use], su.Name)
		}
	}
	if infos[0].Name != Inbox || len(infos) != 6 {
		t.Errorf("folders %+v", infos)
	}
}

func TestFolderOperations(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, m *Memory, inbox Folder)
	}{
		{"append assigns increasing uids and modseqs", func(t *testing.T, m *Memory, f Folder) {
			var last uint64
			for i := 1; i <= 3; i++ {
				uid, err := f.Append(msg("x"), nil, time.Time{})
				if err != nil || uid != UID(i) {
					t.Fatalf("append %d: uid %d err %v", i, uid, err)
				}
				st, _ := f.Status()
				if st.HighestModSeq <= last || st.UIDNext != UID(i+1) || st.Messages != uint32(i) {
					t.Fatalf("status %+v after %d", st, i)
				}
				last = st.HighestModSeq
			}
		}},
		{"content is byte-exact and structure cached", func(t *testing.T, m *Memory, f Folder) {
			raw := []byte("Subject: x\n\n\x00\xff broken")
			uid, _ := f.Append(raw, nil, time.Time{})
			c, _ := f.Content(uid)
			got, _ := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
			if !bytes.Equal(got, raw) {
				t.Fatalf("content %q", got)
			}
			mm, _ := f.Message(uid)
			if mm.Structure == nil || mm.Structure.Envelope.Subject != "x" || mm.Size != int64(len(raw)) {
				t.Fatalf("message %+v", mm)
			}
		}},
		{"flags: set add remove, keywords, recent never stored", func(t *testing.T, m *Memory, f Folder) {
			uid, _ := f.Append(msg("x"), []Flag{"\\seen", "$Work", FlagRecent}, time.Time{})
			mm, _ := f.Message(uid)
			if !slices.Equal(mm.Flags, []Flag{"$Work", FlagSeen}) {
				t.Fatalf("flags %v", mm.Flags)
			}
			res, _ := f.ChangeFlags([]UID{uid}, FlagsAdd, []Flag{FlagFlagged}, 0)
			if len(res.Changed) != 1 || res.Changed[0].ModSeq != res.ModSeq {
				t.Fatalf("add %+v", res)
			}
			res, _ = f.ChangeFlags([]UID{uid}, FlagsAdd, []Flag{FlagFlagged}, 0)
			if len(res.Changed) != 0 || len(res.Unchanged) != 1 {
				t.Fatalf("no-op add %+v", res)
			}
			res, _ = f.ChangeFlags([]UID{uid}, FlagsRemove, []Flag{"$Work"}, 0)
			if !slices.Equal(res.Changed[0].Flags, []Flag{FlagFlagged, FlagSeen}) {
				t.Fatalf("remove %+v", res)
			}
			res, _ = f.ChangeFlags([]UID{uid, 99}, FlagsSet, nil, 0)
			if len(res.Changed) != 1 || len(res.Changed[0].Flags) != 0 {
				t.Fatalf("set %+v", res)
			}
		}},
		{"unchangedsince refuses newer messages", func(t *testing.T, m *Memory, f Folder) {
			a, _ := f.Append(msg("a"), nil, time.Time{})
			b, _ := f.Append(msg("b"), nil, time.Time{})
			st, _ := f.Status()
			f.ChangeFlags([]UID{b}, FlagsAdd, []Flag{FlagSeen}, 0)
			res, _ := f.ChangeFlags([]UID{a, b}, FlagsAdd, []Flag{FlagDeleted}, st.HighestModSeq)
			if len(res.Changed) != 1 || res.Changed[0].UID != a || !slices.Equal(res.Modified, []UID{b}) {
				t.Fatalf("%+v", res)
			}
		}},
		{"expunge raises modseq and leaves tombstones", func(t *testing.T, m *Memory, f Folder) {
			for i := 0; i < 4; i++ {
				f.Append(msg("x"), nil, time.Time{})
			}
			before, _ := f.Status()
			gone, _ := f.Expunge([]UID{2, 4, 9})
			after, _ := f.Status()
			if !slices.Equal(gone, []UID{2, 4}) || after.Messages != 2 || after.HighestModSeq <= before.HighestModSeq {
				t.Fatalf("gone %v status %+v", gone, after)
			}
			if v, _ := f.Expunged(before.HighestModSeq); !slices.Equal(v, []UID{2, 4}) {
				t.Fatalf("expunged %v", v)
			}
			if v, _ := f.Expunged(after.HighestModSeq); len(v) != 0 {
				t.Fatalf("expunged since latest %v", v)
			}
		}},
		{"copy and move keep flags and dates", func(t *testing.T, m *Memory, f Folder) {
			m.Create("Dest", "")
			d := mustFolder(t, m, "Dest")
			date := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
			a, _ := f.Append(msg("a"), []Flag{"$K"}, date)
			b, _ := f.Append(msg("b"), nil, date)
			res, err := f.Copy([]UID{b, a, a}, d)
			if err != nil || !slices.Equal(res.SourceUIDs, []UID{a, b}) || !slices.Equal(res.DestUIDs, []UID{1, 2}) {
				t.Fatalf("copy %+v %v", res, err)
			}
			mm, _ := d.Message(1)
			if !slices.Equal(mm.Flags, []Flag{"$K"}) || !mm.InternalDate.Equal(date) {
				t.Fatalf("copied %+v", mm)
			}
			res, _ = f.Move([]UID{a}, d)
			if !slices.Equal(res.DestUIDs, []UID{3}) {
				t.Fatalf("move %+v", res)
			}
			if l, _ := f.List(); len(l) != 1 || l[0].UID != b {
				t.Fatalf("source after move %+v", l)
			}
		}},
		{"recent is claimed once", func(t *testing.T, m *Memory, f Folder) {
			f.Append(msg("a"), nil, time.Time{})
			f.Append(msg("b"), nil, time.Time{})
			if from, to := f.ClaimRecent(); from != 1 || to != 3 {
				t.Fatalf("first claim %d..%d", from, to)
			}
			if from, to := f.ClaimRecent(); from != to {
				t.Fatalf("second claim %d..%d", from, to)
			}
			f.Append(msg("c"), nil, time.Time{})
			if st, _ := f.Status(); st.Recent != 1 {
				t.Fatalf("recent %d", st.Recent)
			}
		}},
		{"watch fires on append by anyone", func(t *testing.T, m *Memory, f Folder) {
			ch, stop := f.Watch()
			defer stop()
			go f.Append(msg("a"), nil, time.Time{})
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Fatal("no notification")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(testNow)
			tc.run(t, m, mustFolder(t, m, "inbox"))
		})
	}
}

func TestStoreOperations(t *testing.T) {
	m := NewMemory(testNow)
	steps := []struct {
		op   func() error
		want error
	}{
		{func() error { return m.Create("Work", "") }, nil},
		{func() error { return m.Create("Work", "") }, ErrFolderExists},
		{func() error { return m.Create("Work/2026", "") }, nil},
		{func() error { return m.Create("bad/", "") }, ErrBadName},
		{func() error { return m.Create("", "") }, ErrBadName},
		{func() error { return m.Create("INBOX", "") }, ErrFolderExists},
		{func() error { return m.Delete("inbox") }, ErrInboxReserved},
		{func() error { return m.Delete("Nope") }, ErrNoFolder},
		{func() error { return m.Rename("Work", "Job") }, nil},
		{func() error { _, err := m.Folder("Job/2026"); return err }, nil},
		{func() error { _, err := m.Folder("Work/2026"); return err }, ErrNoFolder},
		{func() error { return m.Rename("Job", "INBOX") }, ErrFolderExists},
	}
	for i, s := range steps {
		if err := s.op(); !errors.Is(err, s.want) {
			t.Fatalf("step %d: got %v want %v", i, err, s.want)
		}
	}
	// A folder handle survives rename, and uidvalidity changes when a name
	// is reused (RFC 3501 section 2.3.1.1).
	f := mustFolder(t, m, "Job")
	v1 := f.Info().UIDValidity
	m.Rename("Job", "Old")
	if f.Info().Name != "Old" {
		t.Fatalf("handle name %q", f.Info().Name)
	}
	m.Create("Job", "")
	if v2 := mustFolder(t, m, "Job").Info().UIDValidity; v2 <= v1 {
		t.Fatalf("uidvalidity %d after %d", v2, v1)
	}
	// Renaming INBOX moves its messages and leaves it empty.
	in := mustFolder(t, m, "INBOX")
	in.Append(msg("a"), nil, time.Time{})
	if err := m.Rename("INBOX", "Saved"); err != nil {
		t.Fatal(err)
	}
	if st, _ := in.Status(); st.Messages != 0 {
		t.Fatalf("inbox after rename %+v", st)
	}
	if st, _ := mustFolder(t, m, "Saved").Status(); st.Messages != 1 || st.UIDNext != 2 {
		t.Fatalf("saved %+v", st)
	}
	// Deleted handles answer ErrNoFolder.
	old := mustFolder(t, m, "Old")
	m.Delete("Old")
	if _, err := old.Append(msg("x"), nil, time.Time{}); !errors.Is(err, ErrNoFolder) {
		t.Fatalf("append to deleted: %v", err)
	}
}

func TestMemoryUsers(t *testing.T) {
	var u MemoryUsers
	s := u.Add("bob", "pw")
	if got, err := u.Authenticate("bob", "pw"); err != nil || got != Store(s) {
		t.Fatalf("good password: %v", err)
	}
	for _, c := range [][2]string{{"bob", "PW"}, {"eve", "pw"}, {"bob", ""}} {
		if _, err := u.Authenticate(c[0], c[1]); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%v: %v", c, err)
		}
	}
}
