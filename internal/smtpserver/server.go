// Package smtpserver is the SMTP submission server (RFC 6409) a user's node
// runs for the user's own mail client, on github.com/emersion/go-smtp.
//
// A client authenticates (AUTH PLAIN or LOGIN, RFC 4954), says MAIL FROM its
// own address, names recipients, and sends the message. Recipients in the
// ring go to the Submitter (the POST layer); recipients outside the ring go
// to a durable Outbox that the ring's internet gateway drains. Extensions:
// STARTTLS (RFC 3207) and implicit TLS (RFC 8314), SIZE (RFC 1870),
// 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), PIPELINING (RFC 2920),
// ENHANCEDSTATUSCODES (RFC 2034), CHUNKING (RFC 3030, from go-smtp).
//
// It must never answer 250 to DATA before the message is durable everywhere
// it has to go, never accept MAIL before AUTH, never let a user send as
// someone else, never accept a password in clear text from another machine
// unless configured to, and never change a message's bytes: it only
// prepends its Received: field (RFC 5321 section 4.4).
//
// Concurrency: go-smtp runs one goroutine per connection and calls that
// connection's session methods one at a time (for BDAT, Data runs on its own
// goroutine while the connection feeds it). Sessions share only the
// Server's read-only configuration and the Submitter, Recipients, Outbox and
// Authenticator, which must be safe for concurrent use.
package smtpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"epost/internal/connlimit"

	"github.com/emersion/go-smtp"
)

// Defaults for Config's zero values.
const (
	DefaultMaxMessageBytes = 50 << 20
	// RFC 5321 section 4.5.3.1.8: at least 100 recipients must be buffered.
	DefaultMaxRecipients = 100
	DefaultMaxConns      = 32
	// DefaultMaxConnsPerAddr bounds connections from one client address.
	DefaultMaxConnsPerAddr = 16
	// RFC 5321 section 4.5.3.1.6 allows 1000 octets per line; go-smtp's
	// default doubles it to tolerate sloppy clients.
	DefaultMaxLineLength = 2000
	// RFC 5321 section 4.5.3.2.7: the server timeout is at least 5 minutes.
	DefaultIdleTimeout = 5 * time.Minute
	// RFC 5321 section 4.5.3.2.6 gives the client 10 minutes to wait for
	// the reply to the end of DATA; Submit must finish well within it.
	DefaultSubmitTimeout = 5 * time.Minute
)

// Config configures a Server. Auth, Recipients and Submitter are required.
type Config struct {
	// Domain names this server in the greeting and in Received: fields;
	// "" means the host name.
	Domain string
	// Auth checks AUTH credentials.
	Auth Authenticator
	// Recipients classifies RCPT TO addresses.
	Recipients Recipients
	// Submitter stores messages for ring recipients.
	Submitter Submitter
	// Outbox takes messages for recipients outside the ring; nil refuses
	// such recipients with 550.
	Outbox Outbox
	// TLS, if set, enables STARTTLS on plain listeners and is required by
	// ServeTLS.
	TLS *tls.Config
	// AllowPlaintextAuth allows AUTH over unencrypted connections from
	// other machines. Loopback is always allowed: the node and the mail
	// client normally share the machine.
	AllowPlaintextAuth bool
	// MaxMessageBytes is advertised with SIZE and enforced during DATA;
	// 0 means DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// MaxRecipients bounds RCPT TO per message; 0 means the default.
	MaxRecipients int
	// MaxConns bounds concurrent connections; 0 means the default,
	// negative means no bound.
	MaxConns int
	// MaxConnsPerAddr bounds concurrent connections from one client IP address;
	// 0 means DefaultMaxConnsPerAddr, negative means no bound.
	MaxConnsPerAddr int
	// MaxLineLength bounds a command or message line; 0 means the default.
	MaxLineLength int
	// IdleTimeout bounds how long the server waits for any byte from the
	// client, and for a write to go through; 0 means the default.
	IdleTimeout time.Duration
	// SubmitTimeout bounds Recipients.Classify and Submitter.Submit; 0
	// means the default.
	SubmitTimeout time.Duration
	// Logger receives structured logs; nil means slog.Default.
	Logger *slog.Logger
	// Now is the clock for Received: fields; nil means time.Now.
	Now func() time.Time
}

// Server serves SMTP submission.
type Server struct {
	cfg     Config
	log     *slog.Logger
	engine  *smtp.Server
	conns   chan struct{} // one token per open connection; nil means no bound
	open    atomic.Int64
	refused atomic.Uint64 // connections refused for MaxConns
	perAddr *connlimit.PerAddr

	ctx    context.Context // cancelled by Close: aborts Submit calls
	cancel context.CancelFunc
}

// New returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil || cfg.Recipients == nil || cfg.Submitter == nil {
		return nil, errors.New("smtpserver: Config.Auth, Recipients and Submitter are required")
	}
	if cfg.Domain == "" {
		cfg.Domain, _ = os.Hostname()
		if cfg.Domain == "" {
			cfg.Domain = "localhost"
		}
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxRecipients == 0 {
		cfg.MaxRecipients = DefaultMaxRecipients
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if cfg.MaxLineLength == 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.SubmitTimeout == 0 {
		cfg.SubmitTimeout = DefaultSubmitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "smtp"), perAddr: connlimit.New(cfg.MaxConnsPerAddr)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.MaxConns > 0 {
		s.conns = make(chan struct{}, cfg.MaxConns)
	}
	e := smtp.NewServer(smtp.BackendFunc(s.newSession))
	e.Domain = cfg.Domain
	e.TLSConfig = cfg.TLS
	e.MaxMessageBytes = cfg.MaxMessageBytes
	e.MaxRecipients = cfg.MaxRecipients
	e.MaxLineLength = cfg.MaxLineLength
	e.EnableSMTPUTF8 = true
	// go-smtp's own rule (TLS or nothing) cannot see loopback; the session
	// applies the policy instead (authAllowed), so AUTH must pass here.
	e.AllowInsecureAuth = true
	// Timeouts are applied per read and per write by idleConn, so that a
	// large DATA that keeps moving is not cut off (go-smtp's ReadTimeout
	// would bound the whole transfer from the DATA command on).
	e.ErrorLog = engineLogger{s.log}
	s.engine = e
	return s, nil
}

// Serve accepts plain connections (STARTTLS available when Config.TLS is
// set) until the listener or the server is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("smtp listening", "addr", ln.Addr().String(), "tls", false)
	return s.serve(&limitListener{Listener: ln, srv: s})
}

// ServeTLS accepts implicit-TLS connections (RFC 8314 section 3, port 465).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("smtpserver: ServeTLS needs Config.TLS")
	}
	s.log.Info("smtp listening", "addr", ln.Addr().String(), "tls", true)
	// The limit wraps the raw connection so that go-smtp still sees a
	// *tls.Conn and knows the session is encrypted.
	return s.serve(tls.NewListener(&limitListener{Listener: ln, srv: s}, s.cfg.TLS))
}

func (s *Server) serve(ln net.Listener) error {
	err := s.engine.Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close closes the listeners and every connection and aborts submissions
// in progress (their clients get no 250 and will retry).
func (s *Server) Close() error {
	s.cancel()
	err := s.engine.Close()
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// authAllowed is the plaintext-password policy (RFC 4954 section 4: a
// server should not permit plaintext mechanisms without TLS). Loopback
// never crosses the network.
func (s *Server) authAllowed(c *smtp.Conn) bool {
	if _, isTLS := c.TLSConnectionState(); isTLS || s.cfg.AllowPlaintextAuth {
		return true
	}
	return isLoopback(c.Conn().RemoteAddr())
}

func isLoopback(a net.Addr) bool {
	addr, ok := a.(*net.TCPAddr)
	return ok && addr.IP.IsLoopback()
}

// engineLogger sends go-smtp's printf-style errors to slog.
type engineLogger struct{ l *slog.Logger }

func (e engineLogger) Printf(format string, args ...any) {
	e.l.Warn(fmt.Sprintf(format, args...), "component", "go-smtp")
}

func (e engineLogger) Println(args ...any) {
	e.l.Warn(fmt.Sprint(args...), "component", "go-smtp")
}

// ConnStats returns the connection counters.
func (s *Server) ConnStats() connlimit.Stats {
	return connlimit.Stats{Open: s.open.Load(), RefusedTotal: s.refused.Load(), RefusedByAddr: s.perAddr.Refused()}
}
