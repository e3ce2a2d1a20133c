package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/mailbox"
	"epost/internal/mailstore"
	"epost/internal/post"
	"epost/internal/transport"
)

// The node's mail users.
//
// "epost user add" leaves NODEDIR/users/ADDRESS/ with the user's CA-signed record and private
// keys sealed under the user's password. The node can publish the record at once (it is
// public), but the keys open only when the user logs in: the first IMAP, SMTP or POP3 login
// (or Node.Login, for the demo) opens them, brings the user online in POST (AddUser, which
// creates the root and INBOX logs on the very first login, or opens them) and opens the user's
// mail store (mailstore, over the user's POST logs). Until then the user's mail waits, pending
// and replicated, at its holders in the ring, which push it once the user announces itself.

// Files in a user's directory besides post's.
const (
	// FileUserCreated marks a user whose logs exist in the ring: written (fsynced) after the
	// first AddUser succeeded, so that later logins open the logs and never create them again.
	FileUserCreated = "logs.created"
	// FileUserCache is mailstore's encrypted local cache of the folder state.
	FileUserCache = "mailstore.cache"
)

// loginTimeout bounds one login's wait for the ring (joining, opening the logs).
const loginTimeout = 2 * time.Minute

// mailUsers are the users of this node and their sessions. Safe for concurrent use.
type mailUsers struct {
	n     *Node
	pw    *identity.PasswordCache
	argon chan struct{} // bounds concurrent key derivations (64 MiB of memory each)

	mu    sync.Mutex
	users map[string]*mailUser // by normalized address

	filed atomic.Uint64 // messages filed into local users' INBOXes since start
}

// mailUser is one user directory and, once the user has logged in, its session.
type mailUser struct {
	stored post.StoredUser
	login  sync.Mutex // serialises first logins

	mu    sync.Mutex
	pu    *post.User       // POST session: nil until the first login
	store *mailstore.Store // nil until the first login
	filed atomic.Uint64
}

func newMailUsers(n *Node) (*mailUsers, error) {
	pw, err := identity.NewPasswordCache(nil, 64)
	if err != nil {
		return nil, err
	}
	m := &mailUsers{n: n, pw: pw, argon: make(chan struct{}, 2), users: map[string]*mailUser{}}
	stored, err := post.ListUsers(n.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w (check the permissions of %s)", err, filepath.Join(n.opts.Dir, post.UsersDir))
	}
	for _, su := range stored {
		addr, err := identity.NormalizeAddress(su.Address)
		if err != nil {
			n.log.Warn("skipping user directory with a bad address", "dir", su.Address, "err", err)
			continue
		}
		m.users[addr] = &mailUser{stored: su}
	}
	return m, nil
}

// addresses lists the users' addresses, sorted.
func (m *mailUsers) addresses() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.users))
	for a := range m.users {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func (m *mailUsers) user(addr string) *mailUser {
	a, err := identity.NormalizeAddress(addr)
	if err != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.users[a]
}

// publishAll publishes every user's record in the ring (PAST checks the CA signature), so
// that others can mail the node's users before they ever log in. It runs once the node is
// ready, on its own goroutine.
func (m *mailUsers) publishAll() {
	a := m.n.apps.Load()
	if a == nil {
		return
	}
	for _, addr := range m.addresses() {
		u := m.user(addr)
		lease := time.Now().Add(a.post.Config().ContentLease)
		post.PublishRecord(a.past, u.stored.Record, lease, func(err error) {
			if err != nil {
				m.n.log.Warn("publishing a user's record failed; others cannot mail the user until it is published (the node retries at its next start or the user's login)",
					"user", addr, "err", err)
				return
			}
			m.n.log.Info("user record published", "user", addr)
		})
	}
}

// onFiled is POST's OnFiled: a message landed in a local user's INBOX. It runs on a network
// goroutine and must not block: mailstore's Filed only replays the new log entries.
func (m *mailUsers) onFiled(f post.Filed) {
	m.filed.Add(1)
	u := m.user(f.User)
	if u == nil {
		return
	}
	u.filed.Add(1)
	u.mu.Lock()
	st := u.store
	u.mu.Unlock()
	m.n.log.Info("message filed", "user", f.User, "from", f.From, "size", f.Size)
	if st != nil {
		st.Filed()
		// With a received journal POST reports the filing before it appends the INBOX entry
		// (on the same call chain, right after this returns), so the store may not see it yet.
		// Look again shortly after: Filed only replays entries it has not applied.
		go func() {
			for _, d := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 500 * time.Millisecond} {
				time.Sleep(d)
				st.Filed()
			}
		}()
	}
}

// resumeAll moves the users already online to a new POST node (the founder's replaced driver).
func (m *mailUsers) resumeAll(pn *post.Node) {
	for _, addr := range m.addresses() {
		u := m.user(addr)
		u.mu.Lock()
		pu := u.pu
		u.mu.Unlock()
		if pu != nil {
			pn.Resume(pu)
		}
	}
}

// closeAll writes the users' caches; called by Node.Stop after the servers closed.
func (m *mailUsers) closeAll() {
	for _, addr := range m.addresses() {
		u := m.user(addr)
		u.mu.Lock()
		st := u.store
		u.mu.Unlock()
		if st != nil {
			if err := st.Close(); err != nil {
				m.n.log.Warn("writing the mail cache failed (it is rebuilt from the ring at the next login)", "user", addr, "err", err)
			}
		}
	}
}

// Login checks a user's password and returns the user's mail store, bringing the user online
// first if this is the user's first login since the node started. A wrong address or password
// gives an error wrapping mailbox.ErrAuthFailed.
func (n *Node) Login(address, password string) (mailbox.Store, error) {
	return n.mail.login(address, password)
}

func (m *mailUsers) login(address, password string) (mailbox.Store, error) {
	u := m.user(address)
	if u == nil {
		return nil, fmt.Errorf("no user %q on this node: %w", address, mailbox.ErrAuthFailed)
	}
	m.argon <- struct{}{}
	keys, _, err := m.pw.Open(u.stored.Sealed, []byte(password))
	<-m.argon
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", address, mailbox.ErrAuthFailed)
	}
	u.login.Lock()
	defer u.login.Unlock()
	u.mu.Lock()
	st := u.store
	u.mu.Unlock()
	if st != nil {
		return st, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), loginTimeout)
	defer cancel()
	st, err = m.online(ctx, u, keys)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// online brings u online in POST and opens its mail store.
func (m *mailUsers) online(ctx context.Context, u *mailUser, keys *identity.Keys) (*mailstore.Store, error) {
	addr := u.stored.Address
	if err := m.n.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("user %s: the node has not joined the ring yet (%v); check its log and try again in a minute", addr, err)
	}
	dir := post.UserDir(m.n.opts.Dir, addr)
	marker := filepath.Join(dir, FileUserCreated)
	u.mu.Lock()
	pu := u.pu
	u.mu.Unlock()
	if pu == nil {
		var err error
		if pu, err = m.addUser(ctx, u, keys, marker); err != nil {
			return nil, fmt.Errorf("user %s: bringing the user online in the ring: %w; try again", addr, err)
		}
		u.mu.Lock()
		u.pu = pu
		u.mu.Unlock()
	}
	st, err := mailstore.Open(ctx, mailstore.Config{
		Address:   addr,
		Logs:      pu,
		Contents:  liveContents{m.n},
		Clock:     transport.RealClock{},
		CacheFile: filepath.Join(dir, FileUserCache),
		CacheKey:  mailstore.CacheKey(keys),
		Log:       m.n.log,
	})
	if err != nil {
		return nil, fmt.Errorf("user %s: opening the mail folders: %w; try again", addr, err)
	}
	u.mu.Lock()
	u.store = st
	u.mu.Unlock()
	st.Filed() // a filing between Open's replay and u.store being set
	m.n.log.Info("user online", "user", addr)
	return st, nil
}

// addUser adds u to POST. On the user's very first start (no marker file) it creates the
// root and INBOX logs; a creation that failed because some replica did not answer (a node
// down but not yet declared dead) is retried until ctx ends, creating only the logs still
// missing. Later starts open the logs, which POST retries by itself.
func (m *mailUsers) addUser(ctx context.Context, u *mailUser, keys *identity.Keys, marker string) (*post.User, error) {
	addr := u.stored.Address
	_, statErr := os.Stat(marker)
	fresh := errors.Is(statErr, os.ErrNotExist)
	pn := m.n.apps.Load().post
	pu, ok := pn.User(addr)
	if !ok {
		var got *post.User
		err := await(ctx, func(done func(error)) {
			pn.AddUser(keys, u.stored.Record, fresh, func(pu *post.User, err error) {
				got = pu
				done(err)
			})
		})
		if err == nil {
			return got, m.created(fresh, addr, marker)
		}
		if got == nil || !fresh {
			return nil, err
		}
		m.n.log.Warn("creating the user's logs failed; retrying", "user", addr, "err", err)
		pu = got
	} else if !fresh {
		return pu, nil // an earlier login timed out while POST kept opening the logs
	}
	for {
		missing := 0
		for _, name := range []string{post.RootLog, post.InboxLog} {
			if slices.Contains(pu.Logs(), name) {
				continue
			}
			missing++
			err := await(ctx, func(done func(error)) { pu.CreateLog(name, done) })
			if err == nil || errors.Is(err, post.ErrLogExists) {
				missing--
				continue
			}
			m.n.log.Warn("creating a log failed; retrying", "user", addr, "log", name, "err", err)
		}
		if missing == 0 {
			pn.Resume(pu) // announce the user online now that INBOX exists
			return pu, m.created(true, addr, marker)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// created writes the marker after a fresh user's logs were created.
func (m *mailUsers) created(fresh bool, addr, marker string) error {
	if !fresh {
		return nil
	}
	if err := writeMarker(marker); err != nil {
		return err
	}
	m.n.log.Info("user's logs created in the ring", "user", addr)
	return nil
}

func writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.WriteString(time.Now().UTC().Format(time.RFC3339) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

// waitReady waits until the node has joined the ring.
func (n *Node) waitReady(ctx context.Context) error {
	for !n.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrStopped
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// await runs op, which calls done exactly once from any goroutine, and waits for it or ctx.
// It must not run on the application worker goroutine, which delivers the callbacks.
func await(ctx context.Context, op func(done func(error))) error {
	ch := make(chan error, 1)
	var once sync.Once
	op(func(err error) { once.Do(func() { ch <- err }) })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the ring did not answer in time: %w", ctx.Err())
	}
}

// liveContents is the content store of whichever POST node is current (a founder may replace
// its driver, and with it the POST node, while users' stores stay open).
type liveContents struct{ n *Node }

func (c liveContents) Put(data []byte, cb func(content.Ref, error)) {
	c.n.apps.Load().post.Put(data, cb)
}

func (c liveContents) Get(ref content.Ref, cb func([]byte, error)) {
	c.n.apps.Load().post.Get(ref, cb)
}
