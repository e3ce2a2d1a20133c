package store

import (
	"errors"
	"testing"
	"time"
)

// Lazy changes ride along with the next ordinary commit, survive a clean close, and are
// applied on their own after LazyDelay when no commit comes.
func TestLazyChanges(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	obj := func(name string) Object {
		return Object{Meta: Meta{Key: keyOf(ringA, name), Expiry: t0.Add(time.Hour)}, Payload: []byte(name)}
	}
	for _, n := range []string{"a", "b", "c"} {
		if err := s.Put(obj(n)); err != nil {
			t.Fatal(err)
		}
	}
	s.DeleteLazy(keyOf(ringA, "a"))
	s.UpdateExpiryLazy(keyOf(ringA, "b"), t0.Add(48*time.Hour))
	s.DeleteLazy(keyOf(ringA, "nothing")) // absent: ignored, spoils nothing
	if ok, _ := s.Has(keyOf(ringA, "a")); !ok {
		t.Fatal("a lazy delete is visible before it is committed")
	}
	// An ordinary write commits them with it.
	if err := s.Put(obj("d")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Has(keyOf(ringA, "a")); ok {
		t.Fatal("the lazy delete did not ride along with the next commit")
	}
	// A lazily dropped object skips the trash, and its payload goes (nothing else shares it).
	if _, _, err := s.Trashed(keyOf(ringA, "a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a lazily dropped object is in the trash: %v", err)
	}
	if st, _ := s.Stats(); st.Payloads != 3 || st.TrashObjects != 0 {
		t.Fatalf("after a lazy drop: %d payloads, %d trashed, want 3 and 0", st.Payloads, st.TrashObjects)
	}
	// A payload another object shares stays.
	twin := Object{Meta: Meta{Key: keyOf(ringA, "twin"), Expiry: t0.Add(time.Hour)}, Payload: []byte("b")}
	if err := s.Put(twin); err != nil {
		t.Fatal(err)
	}
	s.DeleteLazy(twin.Key)
	if err := s.FlushLazy(); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Get(keyOf(ringA, "b")); err != nil || string(o.Payload) != "b" {
		t.Fatalf("a shared payload went with a lazily dropped object: %v", err)
	}
	if m, err := s.Meta(keyOf(ringA, "b")); err != nil || !m.Expiry.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("lazy lease extension: %v %v", m.Expiry, err)
	}
	// Alone, after LazyDelay.
	s.DeleteLazy(keyOf(ringA, "c"))
	deadline := time.Now().Add(5 * LazyDelay)
	for {
		ok, _ := s.Has(keyOf(ringA, "c"))
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone lazy delete was never committed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Close flushes.
	s.DeleteLazy(keyOf(ringA, "d"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, dir, Options{})
	if _, err := s2.Get(keyOf(ringA, "d")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a lazy delete before Close was lost: %v", err)
	}
}
