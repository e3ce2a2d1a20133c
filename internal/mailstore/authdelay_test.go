package mailstore

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"epost/internal/mailbox"
	"epost/internal/transport"
)

type nopNode struct{ PostNode }

// Failed logins are answered later and later (per user name, known or not, so that timing
// tells nobody which users exist), and counted.
func TestFailedLoginsDelayed(t *testing.T) {
	us, err := NewUsers(UsersConfig{NodeDir: t.TempDir(), Node: nopNode{}, Clock: transport.RealClock{}})
	if err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for range 4 {
		start := time.Now()
		if _, err := us.Authenticate("ghost@acme.example", "guess"); !errors.Is(err, mailbox.ErrAuthFailed) {
			t.Fatalf("unknown user: %v", err)
		}
		took = append(took, time.Since(start))
	}
	if took[0] < 90*time.Millisecond || took[3] < 750*time.Millisecond || took[3] > 3*time.Second {
		t.Fatalf("delays %v, want about 100, 200, 400, 800 ms", took)
	}
	if st := us.AuthStats(); st.Delayed != 4 {
		t.Fatalf("stats %+v", st)
	}
	// Another name starts from the shortest delay.
	start := time.Now()
	us.Authenticate("other@acme.example", "guess")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("first failure of another user took %v", d)
	}
}

// Concurrent guesses on one user name from an unknown address take turns, so the lock is
// reached after UserLockAfter failures however many arrive at once (before, all of a burst
// passed admission before the first failure was counted: none was refused under the lock).
func TestConcurrentGuessesReachTheLock(t *testing.T) {
	us, err := NewUsers(UsersConfig{NodeDir: t.TempDir(), Node: nopNode{}, Clock: transport.RealClock{},
		Login: LoginLimits{UserLockAfter: 3}})
	if err != nil {
		t.Fatal(err)
	}
	evil := netip.MustParseAddr("192.0.2.7")
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			us.AuthenticateFrom("ghost@acme.example", "guess", evil)
		}()
	}
	wg.Wait()
	st := us.AuthStats()
	if st.Delayed != 3 || st.Locked != 9 {
		t.Fatalf("12 concurrent guesses: %d counted as failures, %d refused under the lock; want 3 and 9", st.Delayed, st.Locked)
	}
}
