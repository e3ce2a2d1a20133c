package mailstore

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestGuardDelaysAndLocks: failures are answered later and later; a user name locks after
// UserLockAfter failures and an address after ClientLockAfter (across names); the user's
// known-good address passes both locks; locks end LockFor after the last failure.
func TestGuardDelaysAndLocks(t *testing.T) {
	g := newGuard(LoginLimits{})
	now := time.Unix(1_800_000_000, 0)
	home := netip.MustParseAddr("127.0.0.1")
	evil := netip.MustParseAddr("203.0.113.9")
	const bob = "bob@acme.example"

	g.succeeded(bob, home, now) // bob's own client, once
	var last time.Duration
	for i := 1; i <= UserLockAfter; i++ {
		if ok, _ := g.admit(bob, evil, now); !ok {
			t.Fatalf("locked after %d failures, want %d", i-1, UserLockAfter)
		}
		d := g.failed(bob, evil, now)
		if d < last || d > FailDelayMax {
			t.Fatalf("failure %d: delay %v after %v", i, d, last)
		}
		last = d
	}
	if ok, wait := g.admit(bob, evil, now); ok || wait != FailDelayMax {
		t.Fatalf("user not locked after %d failures (ok %v, wait %v)", UserLockAfter, ok, wait)
	}
	if ok, _ := g.admit(bob, netip.MustParseAddr("198.51.100.1"), now); ok {
		t.Fatal("a stranger's address passes a locked user name")
	}
	if ok, _ := g.admit(bob, home, now); !ok {
		t.Fatal("bob's known-good address is locked out")
	}
	if ok, _ := g.admit(bob, evil, now.Add(LockFor+time.Second)); !ok {
		t.Fatal("the lock outlived LockFor")
	}

	// An address guessing many names locks for all of them, but not for their owners'
	// known-good pairs.
	g2 := newGuard(LoginLimits{})
	g2.succeeded("carol@acme.example", evil, now) // carol logs in from behind the same NAT
	for i := range ClientLockAfter {
		g2.failed(fmt.Sprintf("u%d@acme.example", i), evil, now)
	}
	if ok, _ := g2.admit("dave@acme.example", evil, now); ok {
		t.Fatal("an address with many failures across names is not locked")
	}
	if ok, _ := g2.admit("carol@acme.example", evil, now); !ok {
		t.Fatal("carol's known-good address is locked out by another's guessing")
	}
	if ok, _ := g2.admit("dave@acme.example", home, now); !ok {
		t.Fatal("another address is locked by one address's guessing")
	}
	if d, l := g2.stats(); d != ClientLockAfter || l != 1 {
		t.Fatalf("stats: %d delayed, %d locked", d, l)
	}
}

// TestGuardBounded: a flood of made-up names and addresses keeps the tables bounded.
func TestGuardBounded(t *testing.T) {
	g := newGuard(LoginLimits{})
	now := time.Unix(1_800_000_000, 0)
	for i := range 3 * maxGuardEntries {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		g.failed(fmt.Sprintf("x%d@acme.example", i), a, now)
		g.succeeded(fmt.Sprintf("y%d@acme.example", i), a, now)
	}
	if len(g.users) > maxGuardEntries || len(g.clients) > maxGuardEntries || len(g.good) > maxGuardEntries {
		t.Fatalf("tables grew to %d users, %d clients, %d known-good", len(g.users), len(g.clients), len(g.good))
	}
}

// The thresholds come from LoginLimits: a lower one locks sooner, -1 never locks.
func TestGuardLimits(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	evil := netip.MustParseAddr("192.0.2.66")
	for _, tc := range []struct {
		limits LoginLimits
		lockAt int // failures after which the name is locked (0: never within 50)
	}{
		{LoginLimits{}, UserLockAfter},
		{LoginLimits{UserLockAfter: 2}, 2},
		{LoginLimits{UserLockAfter: -1, ClientLockAfter: -1}, 0},
	} {
		g := newGuard(tc.limits)
		got := 0
		for i := 1; i <= 50; i++ {
			g.failed("bob@example.org", evil, now)
			if ok, _ := g.admit("bob@example.org", evil, now); !ok {
				got = i
				break
			}
		}
		if got != tc.lockAt {
			t.Errorf("%+v: locked after %d failures, want %d", tc.limits, got, tc.lockAt)
		}
	}
	g := newGuard(LoginLimits{UserLockAfter: 1, LockFor: time.Minute})
	g.failed("bob@example.org", evil, now)
	if ok, _ := g.admit("bob@example.org", evil, now.Add(61*time.Second)); !ok {
		t.Error("a one-minute lock still holds after 61 s")
	}
}
