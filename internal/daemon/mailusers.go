package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
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
// keys sealed under the user's password. The node publishes the records as soon as it has
// joined (they are public), but the keys open only when the user logs in: the first IMAP,
// SMTP or POP3 login (or Node.Login, for the demo) opens them, brings the user online in POST
// and opens the user's mail store. That is mailstore.Users' job; this file wires it to the
// node (the current POST node, readiness, status counters). Until the first login the user's
// mail waits, pending and replicated, at its holders in the ring, which push it once the user
// announces itself.

// mailUsers are the users of this node. Safe for concurrent use.
type mailUsers struct {
	n     *Node
	glue  *mailstore.Users
	addrs []string                   // normalized, sorted; fixed at start
	recs  map[string]post.StoredUser // by address
	filed map[string]*atomic.Uint64  // messages filed per user since start

	filedAll atomic.Uint64
}

func newMailUsers(n *Node) (*mailUsers, error) {
	stored, err := post.ListUsers(n.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w (check the permissions of %s)", err, filepath.Join(n.opts.Dir, post.UsersDir))
	}
	m := &mailUsers{n: n, recs: map[string]post.StoredUser{}, filed: map[string]*atomic.Uint64{}}
	for _, su := range stored {
		addr, err := identity.NormalizeAddress(su.Address)
		if err != nil {
			n.log.Warn("skipping user directory with a bad address", "dir", su.Address, "err", err)
			continue
		}
		m.addrs = append(m.addrs, addr)
		m.recs[addr] = su
		m.filed[addr] = new(atomic.Uint64)
	}
	sort.Strings(m.addrs)
	pw, err := identity.NewPasswordCache(nil, 64)
	if err != nil {
		return nil, err
	}
	if l := n.opts.MailLimits; l.PasswordChecks > 0 || l.PasswordWait > 0 {
		slots, wait := identity.DefaultPasswordSlots, identity.DefaultPasswordWait
		if l.PasswordChecks > 0 {
			slots = l.PasswordChecks
		}
		if l.PasswordWait > 0 {
			wait = l.PasswordWait
		}
		pw.SetLimit(slots, wait)
	}
	m.glue, err = mailstore.NewUsers(mailstore.UsersConfig{
		NodeDir:   n.opts.Dir,
		Node:      livePost{n},
		Passwords: pw,
		HasDomain: n.rn.Descriptor.HasDomain,
		Clock:     transport.RealClock{},
		Timeout:   loginTimeout,
		Login:     n.opts.MailLimits.Login,
		Log:       n.log,
		Remote:    n.remote(),
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// loginTimeout bounds each wait for the ring (a login, a submission).
const loginTimeout = 2 * time.Minute

// addresses lists the users' addresses, sorted.
func (m *mailUsers) addresses() []string { return m.addrs }

// online reports whether addr has logged in since the node started.
func (m *mailUsers) online(addr string) bool {
	_, ok := m.glue.Store(addr)
	return ok
}

// publishAll publishes every user's record in the ring (PAST checks the CA signature), so
// that others can mail the node's users before they ever log in. It runs once the node is
// ready, on its own goroutine.
func (m *mailUsers) publishAll() {
	a := m.n.apps.Load()
	if a == nil {
		return
	}
	for _, addr := range m.addrs {
		lease := time.Now().Add(a.post.Config().ContentLease)
		post.PublishRecord(a.past, m.recs[addr].Record, lease, func(err error) {
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
// goroutine and must not block: the store's Filed only replays new log entries.
func (m *mailUsers) onFiled(f post.Filed) {
	m.filedAll.Add(1)
	if c := m.filed[f.User]; c != nil {
		c.Add(1)
	}
	m.n.log.Info("message filed", "user", f.User, "from", f.From, "size", f.Size)
	// POST reports a filing only once its INBOX entry is visible (post.Node.OnFiled), so one
	// replay in the store finds it and wakes IDLE.
	m.glue.OnFiled(f)
}

// resumeAll moves the users online on the old POST node to a new one (a founder founding its
// ring anew replaces its driver and applications).
func (m *mailUsers) resumeAll(old, pn *post.Node) {
	if old == nil {
		return
	}
	for _, addr := range m.addrs {
		if pu, ok := old.User(addr); ok {
			pn.Resume(pu)
		}
	}
}

// closeAll writes the users' caches; called by Node.Stop after the servers closed.
func (m *mailUsers) closeAll() {
	if err := m.glue.Close(); err != nil {
		m.n.log.Warn("writing a mail cache failed (it is rebuilt from the ring at the next login)", "err", err)
	}
}

// Login checks a user's password and returns the user's mail store, bringing the user online
// first if this is the user's first login since the node started. A wrong address or password
// gives an error wrapping mailbox.ErrAuthFailed.
func (n *Node) Login(address, password string) (mailbox.Store, error) {
	return n.mail.login(address, password, netip.Addr{})
}

func (m *mailUsers) login(address, password string, client netip.Addr) (mailbox.Store, error) {
	if addr, err := identity.NormalizeAddress(address); err == nil && !m.online(addr) {
		ctx, cancel := context.WithTimeout(context.Background(), loginTimeout)
		defer cancel()
		if err := m.n.waitReady(ctx); err != nil {
			return nil, fmt.Errorf("user %s: the node has not joined the ring yet (%v); check its log and try again in a minute", addr, err)
		}
	}
	return m.glue.AuthenticateFrom(address, password, client)
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

// livePost is whichever POST node is current (a founder may replace its driver, and with it
// the POST node, while users' sessions and stores stay open). It is mailstore's PostNode.
type livePost struct{ n *Node }

func (p livePost) cur() *post.Node { return p.n.apps.Load().post }

func (p livePost) AddUser(keys *identity.Keys, sr identity.SignedRecord, fresh bool, cb func(*post.User, error)) {
	p.cur().AddUser(keys, sr, fresh, cb)
}

func (p livePost) User(addr string) (*post.User, bool) { return p.cur().User(addr) }

func (p livePost) LookupRecord(addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	p.cur().LookupRecord(addr, cb)
}

func (p livePost) Put(data []byte, cb func(content.Ref, error)) { p.cur().Put(data, cb) }

func (p livePost) Get(ref content.Ref, cb func([]byte, error)) { p.cur().Get(ref, cb) }

func (p livePost) GetForeign(ref content.Ref, cb func([]byte, error)) { p.cur().GetForeign(ref, cb) }
