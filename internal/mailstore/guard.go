package mailstore

import (
	"net/netip"
	"sync"
	"time"
)

// The login guard: what a node does against password guessing, before any password is checked
// (a check costs a 64 MiB Argon2id, one at a time: identity.PasswordCache).
//
//   - Every wrong password is answered late: the delay doubles with the recent failures of
//     that user name, and of that client address across user names (100 ms, 200 ms, ... at
//     most FailDelayMax), whichever is more.
//   - A user name with LoginLimits.UserLockAfter recent failures is locked for LockFor: its
//     logins are refused without a password check. So is a client address with
//     ClientLockAfter recent failures, for every user name.
//   - Attempts on one user name from addresses that are not known-good take turns (turn): a
//     flood of concurrent guesses would otherwise all pass admission before the first of
//     their failures is counted, and the lock would never be reached.
//   - A lock never stops the user's own client: a login from an address where that user logged
//     in successfully within KnownGoodFor (a "known-good" address: the user's own machine, the
//     loopback of the node itself) is checked as usual. A guesser elsewhere can lock the name
//     against strangers, not against its owner.
//
// Failures are forgotten ForgetAfter after the last one, and at a user's successful login
// (the user's count; the address's count stays, so that a guesser cannot reset it with an
// account of its own). All of it lives in memory: a restart forgets locks and known-good
// addresses alike.
const (
	UserLockAfter   = 5                // LoginLimits.UserLockAfter's default
	ClientLockAfter = 20               // LoginLimits.ClientLockAfter's default
	LockFor         = 15 * time.Minute // LoginLimits.LockFor's default
	ForgetAfter     = 15 * time.Minute
	KnownGoodFor    = 30 * 24 * time.Hour
	// maxGuardEntries bounds each table (a flood of made-up names or addresses).
	maxGuardEntries = 10000
)

// LoginLimits are the login guard's thresholds (node run --login-lock-after,
// --login-lock-addr-after, --login-lock-for). Zero fields take the defaults above; a negative
// count never locks.
type LoginLimits struct {
	UserLockAfter   int           // recent failures of a user name that lock it
	ClientLockAfter int           // recent failures from a client address that lock it
	LockFor         time.Duration // how long a lock lasts after the last failure
}

func (l LoginLimits) withDefaults() LoginLimits {
	if l.UserLockAfter == 0 {
		l.UserLockAfter = UserLockAfter
	}
	if l.ClientLockAfter == 0 {
		l.ClientLockAfter = ClientLockAfter
	}
	if l.LockFor <= 0 {
		l.LockFor = LockFor
	}
	return l
}

// locks says whether n recent failures lock, under the threshold after.
func locks(n, after int) bool { return after > 0 && n >= after }

type failures struct {
	n    int
	last time.Time
}

// delay is the wait for the n-th recent failure.
func (f *failures) delay() time.Duration {
	if f == nil || f.n == 0 {
		return 0
	}
	return min(100*time.Millisecond<<min(f.n-1, 10), FailDelayMax)
}

func (f *failures) recent(now time.Time) bool { return f != nil && now.Sub(f.last) <= ForgetAfter }

type goodKey struct {
	user   string
	client netip.Addr
}

// guard is the login guard's state. Safe for concurrent use.
type guard struct {
	limits  LoginLimits
	mu      sync.Mutex
	users   map[string]*failures
	clients map[netip.Addr]*failures
	good    map[goodKey]time.Time
	turns   map[string]chan struct{} // per user name: one attempt from an unknown address at a time
	delayed uint64                   // failed logins answered late
	locked  uint64                   // logins refused under a lock, without a password check
}

func newGuard(l LoginLimits) *guard {
	return &guard{limits: l.withDefaults(), users: map[string]*failures{}, clients: map[netip.Addr]*failures{},
		good: map[goodKey]time.Time{}, turns: map[string]chan struct{}{}}
}

// turnWait bounds how long an attempt waits for its turn; it then fails like a wrong password.
const turnWait = 30 * time.Second

// turn waits until no other attempt on user from an address that is not known-good is being
// checked, and returns the function that ends this attempt's turn; ok is false if the wait
// outlasted turnWait. A login from a known-good address does not wait.
func (g *guard) turn(user string, client netip.Addr, now time.Time) (release func(), ok bool) {
	g.mu.Lock()
	if client.IsValid() {
		if t, ok := g.good[goodKey{user, client}]; ok && now.Sub(t) <= KnownGoodFor {
			g.mu.Unlock()
			return func() {}, true
		}
	}
	ch := g.turns[user]
	if ch == nil {
		if len(g.turns) >= maxGuardEntries {
			for k, c := range g.turns {
				if len(c) == 0 {
					delete(g.turns, k)
				}
			}
		}
		ch = make(chan struct{}, 1)
		g.turns[user] = ch
	}
	g.mu.Unlock()
	t := time.NewTimer(turnWait)
	defer t.Stop()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	case <-t.C:
		return nil, false
	}
}

// admit says whether a login of user from client may go on to the password check; when it
// may not, the caller answers "wrong password" after wait.
func (g *guard) admit(user string, client netip.Addr, now time.Time) (ok bool, wait time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if client.IsValid() {
		if t, ok := g.good[goodKey{user, client}]; ok && now.Sub(t) <= KnownGoodFor {
			return true, 0
		}
	}
	uf := g.users[user]
	if uf.recent(now) && locks(uf.n, g.limits.UserLockAfter) && now.Sub(uf.last) <= g.limits.LockFor {
		g.locked++
		return false, FailDelayMax
	}
	if client.IsValid() {
		cf := g.clients[client]
		if cf.recent(now) && locks(cf.n, g.limits.ClientLockAfter) && now.Sub(cf.last) <= g.limits.LockFor {
			g.locked++
			return false, FailDelayMax
		}
	}
	return true, 0
}

// failed counts a wrong password and returns how late to answer it.
func (g *guard) failed(user string, client netip.Addr, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	bump := func(f *failures) *failures {
		if !f.recent(now) {
			f = &failures{}
		}
		f.n++
		f.last = now
		return f
	}
	g.prune(now)
	uf := bump(g.users[user])
	g.users[user] = uf
	d := uf.delay()
	if client.IsValid() {
		cf := bump(g.clients[client])
		g.clients[client] = cf
		d = max(d, cf.delay())
	}
	g.delayed++
	return d
}

// succeeded forgets the user's failures and remembers client as known-good for user.
func (g *guard) succeeded(user string, client netip.Addr, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.users, user)
	if client.IsValid() {
		g.prune(now)
		g.good[goodKey{user, client}] = now
	}
}

// prune keeps the tables bounded: stale entries go first, then, under a flood, the oldest
// half (no map grows past maxGuardEntries). Called with g.mu held.
func (g *guard) prune(now time.Time) {
	if len(g.users) >= maxGuardEntries {
		for k, f := range g.users {
			if !f.recent(now) || now.Sub(f.last) > time.Minute || len(g.users) > maxGuardEntries/2 {
				delete(g.users, k)
			}
		}
	}
	if len(g.clients) >= maxGuardEntries {
		for k, f := range g.clients {
			if !f.recent(now) || now.Sub(f.last) > time.Minute || len(g.clients) > maxGuardEntries/2 {
				delete(g.clients, k)
			}
		}
	}
	if len(g.good) >= maxGuardEntries {
		for k, t := range g.good {
			if now.Sub(t) > KnownGoodFor || len(g.good) > maxGuardEntries/2 {
				delete(g.good, k)
			}
		}
	}
}

func (g *guard) stats() (delayed, locked uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.delayed, g.locked
}
