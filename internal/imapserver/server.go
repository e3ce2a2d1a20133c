// Package imapserver is the IMAP server a user's node runs for the user's
// ordinary mail client (IMAP4rev1, RFC 3501, and IMAP4rev2, RFC 9051), on
// top of a mailbox.Store.
//
// The protocol engine is go-imap v2's imapserver, used as a library. This
// package holds the session logic (the client's view of the selected folder,
// sequence numbers, \Recent, change notification for IDLE, FETCH from the
// store's parse cache, SEARCH) and a thin front layer (front.go) between
// the engine and the network for what the engine lacks: ID, BAD instead of
// a hang-up for unknown commands before login, STARTTLS, the plaintext-login
// policy in the capability lists, read timeouts, and dropping a refused
// LITERAL+ literal.
//
// Not supported: CONDSTORE and QRESYNC (RFC 7162). go-imap v2.0.0-beta.8's
// server parses none of their syntax (FETCH MODSEQ and CHANGEDSINCE, STORE
// UNCHANGEDSINCE, SELECT/EXAMINE (CONDSTORE), SEARCH MODSEQ, STATUS
// HIGHESTMODSEQ, ENABLE CONDSTORE/QRESYNC, SELECT (QRESYNC ...), UID FETCH
// VANISHED), cannot write MODSEQ in FETCH responses, HIGHESTMODSEQ in
// SELECT, or [MODIFIED] and VANISHED responses, and never advertises either
// capability. Doing that in the front layer would mean parsing and
// answering FETCH, STORE, SELECT and SEARCH ourselves, that is, writing a
// second IMAP server. The store keeps its modification sequences (the POST
// layer needs them, and this package uses them to find flag changes to
// report); the protocol extension can come back when the engine supports it.
//
// It must never accept a password in clear text from another machine unless
// configured to, and never hold mail that the store has not acknowledged.
//
// Concurrency: the engine calls one session's methods one at a time, except
// that Idle runs on its own goroutine while the connection waits for DONE
// (and no other method runs meanwhile). Sessions share nothing but the
// store, which is safe for concurrent use; a session learns of other
// sessions' and the delivery path's changes only through Folder.Watch.
package imapserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"sync/atomic"

	"epost/internal/connlimit"
	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
	imapsrv "github.com/emersion/go-imap/v2/imapserver"
)

// DefaultAppendLimit is the largest message APPEND accepts (RFC 7889).
const DefaultAppendLimit = 50 << 20

// DefaultMaxConns bounds concurrent connections to one node's IMAP server, and
// DefaultMaxConnsPerAddr those from one client address (a mail client opens a few).
const (
	DefaultMaxConns        = 64
	DefaultMaxConnsPerAddr = 32
)

// Config configures a Server. Auth is required.
type Config struct {
	// Auth checks passwords and opens users' stores.
	Auth mailbox.Authenticator
	// TLS, if set, enables STARTTLS on plain listeners and is required by
	// ServeTLS (implicit TLS, RFC 8314).
	TLS *tls.Config
	// AllowPlaintextAuth allows LOGIN and AUTHENTICATE over unencrypted
	// connections from other machines. Loopback is always allowed: the
	// node and the mail client normally share the machine.
	AllowPlaintextAuth bool
	// AppendLimit is the largest message size accepted; 0 means
	// DefaultAppendLimit.
	AppendLimit uint32
	// MaxConns bounds concurrent connections; 0 means DefaultMaxConns,
	// negative means no bound.
	MaxConns int
	// MaxConnsPerAddr bounds concurrent connections from one client IP
	// address; 0 means DefaultMaxConnsPerAddr, negative means no bound.
	MaxConnsPerAddr int
	// CommandTimeout bounds waiting for a command before login and for
	// the rest of any command (continuation lines, the STARTTLS
	// handshake); IdleTimeout bounds silence between commands after
	// login, IDLE included. Zero means 30 s and 35 min (RFC 9051 section
	// 5.4 asks for at least 30 min). Literal data may take 5 min.
	CommandTimeout, IdleTimeout time.Duration
	// Logger receives structured logs; nil means slog.Default.
	Logger *slog.Logger
	// Version is reported in the ID response (RFC 2971).
	Version string
}

// Server serves IMAP for the users that Config.Auth knows.
type Server struct {
	cfg     Config
	log     *slog.Logger
	engine  *imapsrv.Server
	idList  string       // the ID response's fields (RFC 2971)
	active  atomic.Int64 // open connections, for MaxConns
	perAddr *connlimit.PerAddr
	refused atomic.Uint64 // connections refused for MaxConns
}

// New returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil {
		return nil, errors.New("imapserver: Config.Auth is required")
	}
	if cfg.AppendLimit == 0 {
		cfg.AppendLimit = DefaultAppendLimit
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 35 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "imap"), perAddr: connlimit.New(cfg.MaxConnsPerAddr)}
	id := map[string]string{"name": "epost", "vendor": "ePOST in Go"}
	if cfg.Version != "" {
		id["version"] = cfg.Version
	}
	s.idList = idParamsList(id)
	s.engine = imapsrv.New(&imapsrv.Options{
		NewSession: s.newSession,
		// The engine advertises only the capabilities it knows from
		// this set; the front layer adds ID, STARTTLS and LOGINDISABLED.
		Caps: imap.CapSet{
			imap.CapIMAP4rev1:        {},
			imap.CapIMAP4rev2:        {},
			imap.CapNamespace:        {},
			imap.CapUIDPlus:          {},
			imap.CapESearch:          {},
			imap.CapSearchRes:        {},
			imap.CapListExtended:     {},
			imap.CapListStatus:       {},
			imap.CapMove:             {},
			imap.CapStatusSize:       {},
			imap.CapBinary:           {},
			imap.CapChildren:         {},
			imap.CapSpecialUse:       {},
			imap.CapCreateSpecialUse: {},
			imap.CapLiteralPlus:      {},
			imap.CapUnauthenticate:   {},
		},
		Logger: engineLogger{s.log},
		// The engine sees only the front layer's connection, never a
		// *tls.Conn: TLS (implicit and STARTTLS) is the front layer's,
		// and so is the plaintext-login policy, enforced in
		// session.Login and shown as LOGINDISABLED by the front layer.
		InsecureAuth: true,
	})
	return s, nil
}

// Serve accepts plain connections (STARTTLS available when Config.TLS is
// set) until the listener is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("imap listening", "addr", ln.Addr().String(), "tls", false)
	return s.engine.Serve(&frontListener{Listener: ln, srv: s})
}

// ServeTLS accepts implicit-TLS connections (RFC 8314, port 993 style).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapserver: ServeTLS needs Config.TLS")
	}
	s.log.Info("imap listening", "addr", ln.Addr().String(), "tls", true)
	return s.engine.Serve(&frontListener{Listener: ln, srv: s, tls: true})
}

// Close closes the listeners and every connection.
func (s *Server) Close() error { return s.engine.Close() }

// frontListener puts each accepted connection behind a frontConn and
// enforces MaxConns.
type frontListener struct {
	net.Listener
	srv *Server
	tls bool
}

func (l *frontListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var tr net.Conn = c
		if l.tls {
			tr = tls.Server(c, l.srv.cfg.TLS) // handshake on first read
		}
		if !l.srv.acquire() {
			l.srv.refused.Add(1)
			l.srv.log.Warn("imap connection refused: too many connections", "remote", c.RemoteAddr().String(), "max", l.srv.cfg.MaxConns)
			go refuse(tr)
			continue
		}
		releaseAddr, ok := l.srv.perAddr.Acquire(c.RemoteAddr())
		if !ok {
			l.srv.releaseSlot()
			l.srv.log.Warn("imap connection refused: too many connections from its address", "remote", c.RemoteAddr().String(), "max", l.srv.cfg.MaxConnsPerAddr)
			go refuse(tr)
			continue
		}
		return newFrontConn(l.srv, c, tr, l.tls, func() { releaseAddr(); l.srv.releaseSlot() }), nil
	}
}

// acquire takes a connection slot.
func (s *Server) acquire() bool {
	if n := s.active.Add(1); s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		s.active.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseSlot() { s.active.Add(-1) }

// ConnStats returns the connection counters.
func (s *Server) ConnStats() connlimit.Stats {
	return connlimit.Stats{Open: s.active.Load(), RefusedTotal: s.refused.Load(), RefusedByAddr: s.perAddr.Refused()}
}

// refuse answers a connection over MaxConns with BYE (RFC 9051 section
// 7.1.5) rather than queueing it.
func refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "* BYE Too many connections, try again later\r\n")
	c.Close()
}

func (s *Server) newSession(c *imapsrv.Conn) (imapsrv.Session, *imapsrv.GreetingData, error) {
	front, ok := c.NetConn().(*frontConn)
	if !ok {
		return nil, nil, errors.New("imapserver: connection not from frontListener")
	}
	remote := front.RemoteAddr().String()
	s.log.Debug("imap connection", "remote", remote)
	return &session{srv: s, front: front, conn: c, log: s.log.With("remote", remote)}, nil, nil
}

// engineLogger sends the engine's printf-style messages to slog.
type engineLogger struct{ l *slog.Logger }

func (e engineLogger) Printf(format string, args ...any) {
	e.l.Log(context.Background(), slog.LevelWarn, fmt.Sprintf(format, args...), "component", "engine")
}
