// Package imapserver is the node's own IMAP protocol engine (issue 15), which replaced go-imap v2's
// server: the connection loop and session state machine on top of internal/imapwire (the
// strict parser and response writer) and mailbox.Store. Every node serves it.
//
// Commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN (SASL-IR), ENABLE, ID,
// NAMESPACE; CREATE (CREATE-SPECIAL-USE), DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST and LSUB
// (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE), STATUS, APPEND (UIDPLUS); SELECT, EXAMINE, CHECK,
// CLOSE, UNSELECT, EXPUNGE and UID EXPUNGE, STORE, COPY and MOVE (COPYUID), IDLE, FETCH (flags,
// dates, sizes, MODSEQ, ENVELOPE, BODY, BODYSTRUCTURE, body sections by part with MIME, HEADER,
// TEXT and HEADER.FIELDS[.NOT], BINARY and BINARY.SIZE), SEARCH (ESEARCH, SEARCHRES,
// CONTEXT=SEARCH: UPDATE, CANCELUPDATE and PARTIAL, context.go), SORT (SORT=DISPLAY, ESORT,
// CONTEXT=SORT: the same with context positions), THREAD (ORDEREDSUBJECT, REFERENCES),
// CONDSTORE and QRESYNC (RFC 7162), COMPRESS=DEFLATE, MULTIAPPEND, CATENATE (TEXT and URLs of
// the user's own messages), QUOTA (RFC 9208: STORAGE and MESSAGE, GETQUOTA, GETQUOTAROOT, STATUS
// DELETED-STORAGE, quota.go).
//
// A client's view changes only through the EXPUNGE (or, with QRESYNC, VANISHED) and EXISTS
// responses it is sent; every keyword is announced in FLAGS before a response shows it.
//
// NOTIFY (RFC 5465, notify.go): the selected mailbox, other mailboxes' STATUS, MailboxName
// and SubscriptionChange. The conformance ratchet in test/imap holds its behaviour.
//
// Concurrency: one goroutine per connection reads a command, runs it and writes its answer
// (IDLE reads its DONE on a second goroutine, writing stays on the first); sessions share only
// the store, which is safe for concurrent use.
package imapserver

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/connlimit"
	"epost/internal/mailbox"
)

// Config configures a Server. Auth is required.
type Config struct {
	Auth mailbox.Authenticator
	// TLS enables STARTTLS (and is required by ServeTLS).
	TLS *tls.Config
	// AllowPlaintextAuth allows LOGIN and AUTHENTICATE without TLS from other machines;
	// loopback is always allowed (the node and the mail client normally share the machine).
	AllowPlaintextAuth bool
	// AppendLimit is the largest message accepted (0: 50 MiB).
	AppendLimit int64
	// CommandTimeout bounds waiting for a command before login; IdleTimeout after login (RFC
	// 9051 section 5.4: at least 30 minutes). Zero: 30 s and 35 min.
	CommandTimeout, IdleTimeout time.Duration
	Logger                      *slog.Logger
	Version                     string // for ID
	// MaxConns bounds connections (0: 64, negative: none); MaxConnsPerAddr those from one
	// client IP address (0: 32, negative: none).
	MaxConns, MaxConnsPerAddr int
	// StorageQuota and MessageQuota are the limits of a user's mail that QUOTA reports and
	// APPEND and COPY enforce (RFC 9208 STORAGE, in bytes, and MESSAGE): the store has no
	// per-user limit of its own. Zero: 10 GiB and a million messages; negative: no limit.
	StorageQuota, MessageQuota int64
}

// Server is an IMAP server.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	lns     map[net.Listener]bool
	conns   map[net.Conn]bool
	closed  bool
	wg      sync.WaitGroup
	perAddr *connlimit.PerAddr
	refused atomic.Uint64
	notify  notifyHub // the NOTIFY sessions, by user (notify.go)
}

// ConnStats returns the connection counters.
func (s *Server) ConnStats() connlimit.Stats {
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	return connlimit.Stats{Open: int64(open), RefusedTotal: s.refused.Load(), RefusedByAddr: s.perAddr.Refused()}
}

// refuse answers a connection over a bound with BYE (RFC 9051 section 7.1.5).
func refuse(c net.Conn, why string) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("* BYE " + why + "\r\n"))
	c.Close()
}

// New returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Auth == nil {
		return nil, errors.New("imapserver: Config.Auth is required")
	}
	if cfg.AppendLimit <= 0 {
		cfg.AppendLimit = 50 << 20
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
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 64
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = 32
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("service", "imap"), lns: map[net.Listener]bool{}, conns: map[net.Conn]bool{},
		perAddr: connlimit.New(cfg.MaxConnsPerAddr)}, nil
}

// Serve accepts plain connections (STARTTLS when Config.TLS is set) until Close.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections (RFC 8314).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapserver: ServeTLS needs Config.TLS")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lns[ln] = true
	s.mu.Unlock()
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
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if s.cfg.MaxConns > 0 && len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.refused.Add(1)
			s.log.Warn("imap connection refused: too many connections", "remote", c.RemoteAddr().String(), "max", s.cfg.MaxConns)
			go refuse(c, "Too many connections, try again later")
			continue
		}
		release, ok := s.perAddr.Acquire(c.RemoteAddr())
		if !ok {
			s.mu.Unlock()
			s.log.Warn("imap connection refused: too many connections from its address", "remote", c.RemoteAddr().String(), "max", s.cfg.MaxConnsPerAddr)
			go refuse(c, "Too many connections from your address, try again later")
			continue
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				release()
				c.Close()
			}()
			var tr net.Conn = c
			if implicitTLS {
				tr = tls.Server(c, s.cfg.TLS)
			}
			newSession(s, c, tr, implicitTLS).run()
		}()
	}
}

// Close stops the listeners and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
