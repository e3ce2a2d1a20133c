package post

import (
	"fmt"
	"slices"
	"testing"
)

// entriesFixture is a user with one loaded log of n committed entries, then local entries
// (journaled filings) in flight and queued, then an ordinary append.
func entriesFixture(n int) *User {
	u := &User{n: &Node{}, logs: map[string]*logState{}}
	l := &logState{name: InboxLog, loaded: true}
	for i := range n {
		l.bodies = append(l.bodies, []byte(fmt.Sprintf("c%d", i)))
	}
	l.inflight = []pendingAppend{{body: []byte("l0"), local: true}}
	l.queue = []pendingAppend{{body: []byte("l1"), local: true}, {body: []byte("o2")}, {body: []byte("l3"), local: true}}
	u.logs[InboxLog] = l
	return u
}

// Entries shows the committed entries from since on, then the local entries up to the first
// ordinary append (whose index a later local entry depends on).
func TestEntriesSince(t *testing.T) {
	u := entriesFixture(5)
	all := [][]byte{[]byte("c0"), []byte("c1"), []byte("c2"), []byte("c3"), []byte("c4"), []byte("l0"), []byte("l1")}
	for since := range uint64(9) {
		got, err := u.Entries(InboxLog, since)
		if err != nil {
			t.Fatal(err)
		}
		want := all[min(int(since), len(all)):]
		if !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatalf("since %d: %q, want %q", since, got, want)
		}
	}
}

// The mail store asks for what is new on every IMAP command: the cost must not grow with the
// log (it walked every entry of the mailbox's history, under the node's lock).
func BenchmarkEntriesAtTheEnd(b *testing.B) {
	for _, n := range []int{1_000, 50_000} {
		u := entriesFixture(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := u.Entries(InboxLog, uint64(n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
