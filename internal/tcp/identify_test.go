package tcp

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIdentify learns a peer's node id from its address alone (bootstrap addresses), refuses
// a peer of another ring and our own address, and leaves both nodes working.
func TestIdentify(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	ctx := context.Background()
	id, err := a.Identify(ctx, b.LocalAddr())
	if err != nil || id != b.id {
		t.Fatalf("Identify(b) = %s, %v; want %s", id.Short(), err, b.id.Short())
	}
	if _, err := a.Identify(ctx, a.LocalAddr()); !errors.Is(err, ErrOwnID) {
		t.Fatalf("Identify(own address) = %v, want ErrOwnID", err)
	}
	foreign := newNode(t, newTestCA(t, "another ring"), "c")
	if _, err := a.Identify(ctx, foreign.LocalAddr()); err == nil {
		t.Fatal("a node of another ring was identified")
	}
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	if _, err := a.Identify(short, b.LocalAddr()); err == nil {
		t.Fatal("an expired context did not stop Identify")
	}
	pingPong(t, a, b)
}
