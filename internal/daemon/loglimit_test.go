package daemon

import (
	"testing"
	"time"

	"epost/internal/ids"
)

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(time.Minute)
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if _, ok := l.allow("a", t0); !ok {
		t.Fatal("first line held back")
	}
	for i := range 5 {
		if _, ok := l.allow("a", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatal("a second line within the period was let through")
		}
	}
	if _, ok := l.allow("b", t0); !ok {
		t.Fatal("another key held back")
	}
	if skipped, ok := l.allow("a", t0.Add(61*time.Second)); !ok || skipped != 5 {
		t.Fatalf("after the period: ok %v, skipped %d; want true, 5", ok, skipped)
	}
}

// A peer's hello cannot take an address a dial proved to be another node's.
func TestAddrBookProven(t *testing.T) {
	b := newAddrBook()
	honest, evil := ids.ID{1}, ids.ID{2}
	b.learnProven("10.0.0.1:7000", honest)
	b.learn("10.0.0.1:7000", evil)
	if id, ok := b.lookup("10.0.0.1:7000"); !ok || id != honest {
		t.Fatalf("after a forged claim: %v %v, want the proven id", id, ok)
	}
	b.learn("10.0.0.2:7000", evil) // unproven addresses are learned from hellos
	if id, ok := b.lookup("10.0.0.2:7000"); !ok || id != evil {
		t.Fatalf("claimed address: %v %v", id, ok)
	}
	b.learnProven("10.0.0.2:7000", honest) // a dial overrides a claim
	if id, _ := b.lookup("10.0.0.2:7000"); id != honest {
		t.Fatalf("a dial did not override a claim: %v", id)
	}
}
