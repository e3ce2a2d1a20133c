// Package imapserver is the IMAP server a user's node runs for the user's
// ordinary mail client (IMAP4rev1, RFC 3501, and IMAP4rev2, RFC 9051), on
// top of a mailbox.Store.
//
// The protocol engine is imapconn (a fork of go-imap v2's server); this
// package holds the session logic: the client's view of the selected folder
// (sequence numbers, \Recent), change notification for IDLE, FETCH from the
// store's parse cache, SEARCH and the CONDSTORE bookkeeping.
//
// It must never accept a password in clear text from another machine unless
// configured to, and never hold mail that the store has not acknowledged.
//
// Concurrency: imapconn calls one session's methods one at a time, except
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
	"log/slog"
	"net"
	"time"

	"epost/internal/imapserver/imapconn"
	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
)

// DefaultAppendLimit is the largest message APPEND accepts (RFC 7889).
const DefaultAppendLimit = 50 << 20

// DefaultMaxConns bounds concurrent connections to one node's IMAP server.
const DefaultMaxConns = 64

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
	// CommandTimeout bounds waiting for a command before login;
	// IdleTimeout bounds silence after login, IDLE included. Zero means
	// 30 s and 35 min (RFC 9051 section 5.4 asks for at least 30 min).
	CommandTimeout, IdleTimeout time.Duration
	// Logger receives structured logs; nil means slog.Default.
	Logger *slog.Logger
	// Version is reported in the ID response (RFC 2971).
	Version string
}

// Server serves IMAP for the users that Config.Auth knows.
type Server struct {
	cfg    Config
	log    *slog.Logger
	engine *imapconn.Server
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "imap")}
	id := map[string]string{"name": "epost", "vendor": "ePOST in Go"}
	if cfg.Version != "" {
		id["version"] = cfg.Version
	}
	maxConns := cfg.MaxConns
	if maxConns < 0 {
		maxConns = 0
	}
	s.engine = imapconn.New(&imapconn.Options{
		NewSession: s.newSession,
		Caps: imap.CapSet{
			imap.CapIMAP4rev1:    {},
			imap.CapIMAP4rev2:    {},
			imap.CapNamespace:    {},
			imap.CapUIDPlus:      {},
			imap.CapESearch:      {},
			imap.CapSearchRes:    {},
			imap.CapListExtended: {},
			imap.CapListStatus:   {},
			imap.CapMove:         {},
			imap.CapStatusSize:   {},
			imap.CapBinary:       {},
			imap.CapChildren:     {},
			imap.CapSpecialUse:   {},
			imap.CapLiteralPlus:  {},
			imap.CapCondStore:    {},
			imap.CapID:           {},
		},
		Logger:         engineLogger{s.log},
		TLSConfig:      cfg.TLS,
		AuthAllowed:    s.authAllowed,
		MaxConns:       maxConns,
		CommandTimeout: cfg.CommandTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		ID:             id,
	})
	return s, nil
}

// Serve accepts plain connections (STARTTLS available when Config.TLS is
// set) until the listener is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("imap listening", "addr", ln.Addr().String(), "tls", false)
	return s.engine.Serve(ln)
}

// ServeTLS accepts implicit-TLS connections (port 993 style).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapserver: ServeTLS needs Config.TLS")
	}
	s.log.Info("imap listening", "addr", ln.Addr().String(), "tls", true)
	return s.engine.Serve(tls.NewListener(ln, s.cfg.TLS))
}

// Close closes the listeners and every connection.
func (s *Server) Close() error { return s.engine.Close() }

// authAllowed is the plaintext-login policy for non-TLS connections
// (RFC 9051 section 6.2.3: LOGINDISABLED is advertised where it says no).
func (s *Server) authAllowed(c net.Conn) bool {
	if s.cfg.AllowPlaintextAuth {
		return true
	}
	if addr, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return addr.IP.IsLoopback()
	}
	return false
}

func (s *Server) newSession(c *imapconn.Conn) (imapconn.Session, *imapconn.GreetingData, error) {
	remote := c.NetConn().RemoteAddr().String()
	s.log.Debug("imap connection", "remote", remote)
	return &session{srv: s, conn: c, log: s.log.With("remote", remote)}, nil, nil
}

// engineLogger sends imapconn's printf-style messages to slog.
type engineLogger struct{ l *slog.Logger }

func (e engineLogger) Printf(format string, args ...any) {
	e.l.Log(context.Background(), slog.LevelWarn, fmt.Sprintf(format, args...), "component", "imapconn")
}
