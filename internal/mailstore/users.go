package mailstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailbox"
	"epost/internal/post"
	"epost/internal/transport"
)

// PostNode is what the mail layer needs from the node's POST instance; *post.Node
// implements it.
type PostNode interface {
	// AddUser starts the user, or returns the user started already (see post.Node.AddUser).
	AddUser(keys *identity.Keys, sr identity.SignedRecord, fresh bool, cb func(*post.User, error))
	LookupRecord(addr string, cb func(*identity.Record, identity.SignedRecord, error))
	Contents
}

// UsersConfig configures Users.
type UsersConfig struct {
	// NodeDir holds the users' files (post.UserDir: sealed keys, record) and their caches.
	NodeDir string
	Node    PostNode
	// Passwords makes repeated logins cheap; nil means a private cache of 16 users.
	Passwords *identity.PasswordCache
	// HasDomain says whether a mail domain is the ring's (ring.Descriptor.HasDomain).
	HasDomain func(domain string) bool
	Clock     transport.Clock
	Drive     func() // see Config.Drive
	Rand      io.Reader
	// Login are the login guard's thresholds (guard.go); zero fields take the defaults.
	Login LoginLimits
	// Timeout bounds each wait for the ring (login, an operation); 0 means 2 minutes.
	Timeout time.Duration
	// RetryDelay spaces Submit's retries of recipients POST could not reach; 0 means 2 s.
	RetryDelay time.Duration
	// MaxMessageBytes bounds submitted messages; 0 means 64 MiB.
	MaxMessageBytes int64
	Log             *slog.Logger
	// Remote, if set, reaches users of other rings (federation): a domain that is not the
	// ring's own but belongs to another ring is routed there instead of to the outbox.
	Remote Remote
}

// Remote is what submission needs to reach users of other rings (the daemon implements it
// with DNS, its ring's gateways and the global ring).
type Remote interface {
	// Route names the other ring a mail domain belongs to; ok is false for a domain of no
	// ring (the internet).
	Route(ctx context.Context, domain string) (ring ids.RingID, ok bool, err error)
	// Record is a user's record in ring r, verified under r's CA; ErrNoRemoteUser when r
	// has no such user.
	Record(ctx context.Context, r ids.RingID, addr string) (*identity.Record, error)
	// HandOff gives a sealed message to a gateway of this ring, which confirms once it holds
	// it durably; entry is the same for every retry of one message. refused names the
	// recipients the other ring refused for good, when the gateway knew by then.
	HandOff(ctx context.Context, entry, from string, b *post.RemoteBundle) (refused map[string]string, err error)
}

// ErrNoRemoteUser: the other ring has no such user (or it is revoked).
var ErrNoRemoteUser = errors.New("mailstore: no such user in that ring")

// ErrRemoteRefused: a gateway refused the message for good (too large to carry, say); Remote
// implementations wrap it.
var ErrRemoteRefused = errors.New("mailstore: the gateway refused the message")

// Users is the node's mail layer for its local users: the mailbox.Authenticator of the IMAP
// and POP3 servers (through smtpserver.MailboxAuth also SMTP's), which starts a user's POST
// session and store at the first login, and the source of the SMTP Submitter and
// Recipients. It is safe for concurrent use.
type Users struct {
	cfg UsersConfig
	w   waiter

	mu       sync.Mutex
	sessions map[string]*session
	guard    *guard // failed logins: delays and locks (guard.go)
}

// FailDelayMax bounds the delay of a failed login.
const FailDelayMax = 5 * time.Second

// failed counts a wrong password, ends the attempt's turn, and answers late.
func (us *Users) failed(addr string, client netip.Addr, end func()) {
	d := us.guard.failed(addr, client, time.Now())
	end()
	time.Sleep(d)
}

// AuthStats are the login counters: the password cache's and the failed logins delayed.
type AuthStats struct {
	identity.PasswordStats
	Delayed uint64 `json:"delayed"`
	// Locked counts logins refused without a password check: their user name or client
	// address had too many recent failures, and the address was not known-good for the user.
	Locked uint64 `json:"locked"`
}

// AuthStats returns the login counters.
func (us *Users) AuthStats() AuthStats {
	d, l := us.guard.stats()
	return AuthStats{PasswordStats: us.cfg.Passwords.Stats(), Delayed: d, Locked: l}
}

type session struct {
	ready chan struct{} // closed when started (or failed)
	err   error
	user  *post.User
	store *Store
}

var _ mailbox.Authenticator = (*Users)(nil)

// startedMarker, in the user's directory, says the user's logs were created or found: later
// starts only open them (post.AddUser with fresh false), never create them.
const startedMarker = "mail.started"

// CacheFileName is the local cache's file in the user's directory.
const CacheFileName = "mail.cache"

// NewUsers returns the mail layer of a node.
func NewUsers(cfg UsersConfig) (*Users, error) {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 2 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Passwords == nil {
		pc, err := identity.NewPasswordCache(cfg.Rand, 16)
		if err != nil {
			return nil, err
		}
		cfg.Passwords = pc
	}
	if cfg.Node == nil || cfg.Clock == nil || cfg.NodeDir == "" {
		return nil, errors.New("mailstore: UsersConfig needs Node, Clock and NodeDir")
	}
	return &Users{cfg: cfg, w: waiter{clock: cfg.Clock, drive: cfg.Drive, timeout: cfg.Timeout}, sessions: map[string]*session{}, guard: newGuard(cfg.Login)}, nil
}

// Authenticate implements mailbox.Authenticator: username is the user's address, and the
// password is right exactly when it opens the user's sealed key file (identity.OpenPrivate,
// behind the PasswordCache). The first successful login starts the user's POST session
// (which needs the private keys) and opens the store, creating the special-use folders
// (RFC 6154); later logins share that store.
func (us *Users) Authenticate(username, password string) (mailbox.Store, error) {
	return us.AuthenticateFrom(username, password, netip.Addr{})
}

// AuthenticateFrom implements mailbox.AddrAuthenticator: Authenticate for a client at a known
// address, which the login guard (guard.go) counts failures of and remembers as known-good.
func (us *Users) AuthenticateFrom(username, password string, client netip.Addr) (mailbox.Store, error) {
	client = client.Unmap()
	addr, err := identity.NormalizeAddress(username)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", username, mailbox.ErrAuthFailed)
	}
	release, ok := us.guard.turn(addr, client, time.Now())
	if !ok {
		return nil, fmt.Errorf("user %q: too many logins at once: %w", addr, mailbox.ErrAuthFailed)
	}
	done := false
	end := func() {
		if !done {
			done = true
			release()
		}
	}
	defer end()
	if ok, wait := us.guard.admit(addr, client, time.Now()); !ok {
		end()
		time.Sleep(wait) // as a wrong password is answered: no telling a lock from a failure
		return nil, fmt.Errorf("user %q: too many failed logins, locked for a while: %w", addr, mailbox.ErrAuthFailed)
	}
	su, err := post.LoadStoredUser(us.cfg.NodeDir, addr)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			us.failed(addr, client, end) // as slow as a wrong password: no telling which users exist
			return nil, fmt.Errorf("user %q: %w", addr, mailbox.ErrAuthFailed)
		}
		return nil, fmt.Errorf("mailstore: user %s: %w", addr, err)
	}
	keys, sealedAddr, err := us.cfg.Passwords.Open(su.Sealed, []byte(password))
	if errors.Is(err, identity.ErrBusy) {
		return nil, fmt.Errorf("user %q: %w", addr, err)
	}
	if err != nil || sealedAddr != addr {
		us.failed(addr, client, end)
		return nil, fmt.Errorf("user %q: %w", addr, mailbox.ErrAuthFailed)
	}
	us.guard.succeeded(addr, client, time.Now())
	end()
	sess, err := us.start(addr, keys, su.Record)
	if err != nil {
		return nil, err
	}
	return sess.store, nil
}

// start returns the user's running session, starting it once however many logins race.
func (us *Users) start(addr string, keys *identity.Keys, rec identity.SignedRecord) (*session, error) {
	us.mu.Lock()
	sess, ok := us.sessions[addr]
	if !ok {
		sess = &session{ready: make(chan struct{})}
		us.sessions[addr] = sess
	}
	us.mu.Unlock()
	if ok {
		if err := us.w.wait(context.Background(), "wait for "+addr+"'s session", sess.ready); err != nil {
			return nil, err
		}
		if sess.err != nil {
			return nil, sess.err
		}
		return sess, nil
	}
	sess.user, sess.store, sess.err = us.startSession(addr, keys, rec)
	if sess.err != nil {
		us.mu.Lock()
		delete(us.sessions, addr) // the next login tries again
		us.mu.Unlock()
	}
	close(sess.ready)
	return sess, sess.err
}

func (us *Users) startSession(addr string, keys *identity.Keys, rec identity.SignedRecord) (*post.User, *Store, error) {
	ctx := context.Background()
	dir := post.UserDir(us.cfg.NodeDir, addr)
	marker := filepath.Join(dir, startedMarker)
	_, statErr := os.Stat(marker)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	// AddUser is idempotent: it returns a user already started on this node, joins a start
	// still under way (a login that timed out), and after a start that failed, starts over,
	// creating on a fresh start only the logs certainly missing.
	var amu sync.Mutex
	var added *post.User
	var addedErr error
	werr := us.w.await(ctx, "start "+addr+"'s POST session", func(done func()) {
		us.cfg.Node.AddUser(keys, rec, fresh, func(pu *post.User, err error) {
			amu.Lock()
			added, addedErr = pu, err
			amu.Unlock()
			done()
		})
	})
	if werr != nil {
		// POST goes on with the start; the next login joins it.
		return nil, nil, fmt.Errorf("mailstore: %w", werr)
	}
	amu.Lock()
	u, addErr := added, addedErr
	amu.Unlock()
	if addErr != nil {
		return nil, nil, fmt.Errorf("mailstore: start %s: %w; try again", addr, addErr)
	}
	if fresh {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return nil, nil, fmt.Errorf("mailstore: %w", err)
		}
	}
	st, err := Open(ctx, Config{
		Address: addr, Logs: u, Contents: u, Clock: us.cfg.Clock, Drive: us.cfg.Drive, Rand: us.cfg.Rand,
		CacheFile: filepath.Join(dir, CacheFileName), CacheKey: CacheKey(keys), Timeout: us.cfg.Timeout, Log: us.cfg.Log,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := mailbox.EnsureSpecialUse(st); err != nil {
		return nil, nil, fmt.Errorf("mailstore: special-use folders of %s: %w", addr, err)
	}
	return u, st, nil
}

// session returns a started session, or nil.
func (us *Users) session(addr string) *session {
	us.mu.Lock()
	defer us.mu.Unlock()
	sess := us.sessions[addr]
	if sess == nil {
		return nil
	}
	select {
	case <-sess.ready:
		if sess.err == nil {
			return sess
		}
	default:
	}
	return nil
}

// Store returns the open store of a logged-in user.
func (us *Users) Store(addr string) (*Store, bool) {
	if sess := us.session(addr); sess != nil {
		return sess.store, true
	}
	return nil, false
}

// OnFiled is for post.Node.OnFiled: it wakes the recipient's INBOX watchers (IMAP IDLE).
// It never blocks on the ring. POST reports a filing only once the user's INBOX entries show
// it, so this one replay finds the message: there is nothing to look at again later.
func (us *Users) OnFiled(f post.Filed) {
	if sess := us.session(f.User); sess != nil {
		sess.store.Filed()
	}
}

// Close writes every open store's cache.
func (us *Users) Close() error {
	us.mu.Lock()
	var stores []*Store
	for _, sess := range us.sessions {
		select {
		case <-sess.ready:
			if sess.err == nil {
				stores = append(stores, sess.store)
			}
		default:
		}
	}
	us.mu.Unlock()
	var errs []error
	for _, st := range stores {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
