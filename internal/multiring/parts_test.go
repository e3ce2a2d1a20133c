package multiring

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// A payload sent in parts arrives whole, whatever the order and repeats of its parts; the
// sender never has more than partWindow parts unacknowledged; malformed parts, stalled
// transfers and transfers beyond the node's budget are refused.
func TestParts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 5*partSize+123)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	var sent []int
	s := newPartSender(data, func(idx, n int, piece []byte) {
		if n != 6 {
			t.Fatalf("%d parts, want 6", n)
		}
		sent = append(sent, idx)
	})
	s.start()
	if len(sent) != partWindow {
		t.Fatalf("first window sent %v", sent)
	}
	var a assembler
	now := time.Unix(1000, 0)
	from := ids.ID{1}
	// Delivered out of order, one twice.
	var whole []byte
	for _, idx := range []int{1, 0, 3, 3, 2} {
		have, w, err := a.add(from, "e1", len(data), idx, 6, s.piece(idx), now)
		if err != nil {
			t.Fatal(err)
		}
		if w != nil {
			t.Fatal("whole too early")
		}
		s.ack(have)
	}
	if len(sent) != 6 {
		t.Fatalf("after 4 acknowledged parts %v were sent, want all 6", sent)
	}
	for _, idx := range []int{5, 4} {
		_, w, err := a.add(from, "e1", len(data), idx, 6, s.piece(idx), now)
		if err != nil {
			t.Fatal(err)
		}
		whole = w
	}
	if !bytes.Equal(whole, data) || a.bytes != 0 || len(a.m) != 0 {
		t.Fatalf("assembled %d bytes (want %d), %d bytes still held", len(whole), len(data), a.bytes)
	}
	// Malformed: wrong count, short piece, index out of range, too large.
	for _, c := range []struct{ total, idx, n, plen int }{
		{len(data), 0, 5, partSize}, {len(data), 0, 6, 10}, {len(data), 6, 6, 123}, {MaxLarge + 1, 0, MaxLarge/partSize + 1, partSize},
	} {
		if _, _, err := a.add(from, "bad", c.total, c.idx, c.n, make([]byte, c.plen), now); err == nil {
			t.Fatalf("malformed part %+v accepted", c)
		}
	}
	// The budget: transfers under way hold at most assemblyBudget.
	big := MaxLarge
	for i := 0; i < assemblyBudget/big; i++ {
		if _, _, err := a.add(from, string(rune('a'+i)), big, 0, big/partSize, make([]byte, partSize), now); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.add(from, "over", big, 0, big/partSize, make([]byte, partSize), now); err == nil {
		t.Fatal("a transfer over the budget was taken")
	}
	// Stalled ones are forgotten after assemblyTTL, which makes room.
	if _, _, err := a.add(from, "later", big, 0, big/partSize, make([]byte, partSize), now.Add(assemblyTTL+time.Second)); err != nil {
		t.Fatalf("after the stalled transfers expired: %v", err)
	}
}
