// Package pop3server is the POP3 server (RFC 1939, with CAPA and response
// codes from RFC 2449 and STLS from RFC 2595) a user's node runs for the
// user's mail client. It serves the user's INBOX from a mailbox.Store.
//
// A session sees the INBOX as it was at login (RFC 1939 section 8: the
// maildrop is fixed for the session); DELE only marks, and the marked
// messages are expunged through the store when the client says QUIT
// (the UPDATE state). A connection that ends any other way deletes nothing.
// UIDL ids are UIDVALIDITY.UID of the INBOX, so they are stable across
// sessions and agree with what IMAP clients see.
//
// It must never accept a password in clear text from another machine
// unless configured to, never panic on client input, and never change a
// message's bytes except for the line-end and dot-stuffing rules of the
// protocol.
//
// Concurrency: one goroutine per connection; sessions share the Server's
// read-only configuration, the store (safe for concurrent use) and the
// per-user maildrop locks.
package pop3server

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/connlimit"
	"epost/internal/mailbox"
)

// Defaults for Config's zero values.
const (
	DefaultMaxConns = 32
	// DefaultMaxConnsPerAddr bounds connections from one client address.
	DefaultMaxConnsPerAddr = 16
	// RFC 1939 section 3: an autologout timer must be at least 10 minutes.
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultAuthFailDelay = time.Second
)

// Config configures a Server. Auth is required.
type Config struct {
	// Auth checks passwords and opens users' stores.
	Auth mailbox.Authenticator
	// TLS, if set, enables STLS on plain listeners and is required by
	// ServeTLS (implicit TLS, RFC 8314, port 995).
	TLS *tls.Config
	// AllowPlaintextAuth allows USER/PASS over unencrypted connections
	// from other machines. Loopback is always allowed.
	AllowPlaintextAuth bool
	// MaxConns bounds concurrent connections; 0 means the default,
	// negative means no bound.
	MaxConns int
	// MaxConnsPerAddr bounds concurrent connections from one client IP address;
	// 0 means DefaultMaxConnsPerAddr, negative means no bound.
	MaxConnsPerAddr int
	// IdleTimeout bounds silence from the client; 0 means the default.
	IdleTimeout time.Duration
	// AuthFailDelay is slept before answering a failed PASS (RFC 1939
	// section 13); 0 means the default, negative means none.
	AuthFailDelay time.Duration
	// Logger receives structured logs; nil means slog.Default.
	Logger *slog.Logger
}

// Server serves POP3 for the users that Config.Auth knows.
type Server struct {
	cfg     Config
	log     *slog.Logger
	slots   chan struct{} // connection tokens; nil means no bound
	open    atomic.Int64
	refused atomic.Uint64 // connections refused for MaxConns
	perAddr *connlimit.PerAddr

	mu        sync.Mutex
	listeners map[net.Listener]bool
	conns     map[net.Conn]bool
	locked    map[string]bool // users with a session in TRANSACTION state
	closed    bool
	wg        sync.WaitGroup
}

// New returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil {
		return nil, errors.New("pop3server: Config.Auth is required")
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AuthFailDelay == 0 {
		cfg.AuthFailDelay = DefaultAuthFailDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger.With("service", "pop3"),
		listeners: make(map[net.Listener]bool),
		conns:     make(map[net.Conn]bool),
		locked:    make(map[string]bool),
		perAddr:   connlimit.New(cfg.MaxConnsPerAddr),
	}
	if cfg.MaxConns > 0 {
		s.slots = make(chan struct{}, cfg.MaxConns)
	}
	return s, nil
}

// Serve accepts plain connections (STLS available when Config.TLS is set)
// until the listener or the server is closed.
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(ln, false)
}

// ServeTLS accepts implicit-TLS connections.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("pop3server: ServeTLS needs Config.TLS")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners[ln] = true
	s.mu.Unlock()
	s.log.Info("pop3 listening", "addr", ln.Addr().String(), "tls", implicitTLS)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if s.slots != nil {
			select {
			case s.slots <- struct{}{}:
			default:
				s.refused.Add(1)
				s.log.Warn("pop3 connection refused: too many connections", "remote", c.RemoteAddr().String())
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("-ERR [SYS/TEMP] too many connections, try again later\r\n"))
				c.Close()
				continue
			}
		}
		releaseAddr, ok := s.perAddr.Acquire(c.RemoteAddr())
		if !ok {
			if s.slots != nil {
				<-s.slots
			}
			s.log.Warn("pop3 connection refused: too many connections from its address", "remote", c.RemoteAddr().String())
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("-ERR [SYS/TEMP] too many connections from your address, try again later\r\n"))
			c.Close()
			continue
		}
		s.open.Add(1)
		if !s.track(c) {
			releaseAddr()
			s.open.Add(-1)
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				releaseAddr()
				s.open.Add(-1)
				if s.slots != nil {
					<-s.slots
				}
			}()
			s.handle(c, implicitTLS)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close closes the listeners and every connection (sessions end without
// UPDATE: nothing marked is deleted) and waits for the sessions to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// lock takes the user's maildrop lock (RFC 1939 section 8); false means
// another session holds it.
func (s *Server) lock(user string) bool {
	user = strings.ToLower(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked[user] {
		return false
	}
	s.locked[user] = true
	return true
}

func (s *Server) unlock(user string) {
	s.mu.Lock()
	delete(s.locked, strings.ToLower(user))
	s.mu.Unlock()
}

// authAllowed is the plaintext-password policy (RFC 2595 section 2.3
// lets a server refuse USER/PASS without TLS).
func (s *Server) authAllowed(c net.Conn, isTLS bool) bool {
	if isTLS || s.cfg.AllowPlaintextAuth {
		return true
	}
	addr, ok := c.RemoteAddr().(*net.TCPAddr)
	return ok && addr.IP.IsLoopback()
}

// ConnStats returns the connection counters.
func (s *Server) ConnStats() connlimit.Stats {
	return connlimit.Stats{Open: s.open.Load(), RefusedTotal: s.refused.Load(), RefusedByAddr: s.perAddr.Refused()}
}
