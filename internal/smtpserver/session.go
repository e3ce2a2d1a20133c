package smtpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"epost/internal/mailbox"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is one connection's SMTP state between EHLO and QUIT (go-smtp
// makes a new one after STARTTLS). It implements smtp.AuthSession.
type session struct {
	srv  *Server
	conn *smtp.Conn
	log  *slog.Logger

	user, address string // set by a successful AUTH

	// The transaction (RFC 5321 section 3.3), cleared by Reset.
	from    string
	opts    smtp.MailOptions
	ring    []string
	outside []string
	seen    map[string]bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	log := s.log.With("remote", c.Conn().RemoteAddr().String(), "tls", isTLS)
	return &session{srv: s, conn: c, log: log}, nil
}

// Reply texts for refusals; each says what the user can do about it.
var (
	errAuthFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required: log in with AUTH before MAIL (RFC 4954)"}
	errAuthBad = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Authentication failed: wrong user name or password"}
	errNeedTLS = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11},
		Message: "Encryption required: use STARTTLS or implicit TLS before AUTH from another machine"}
	errBadMech = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4},
		Message: "Unsupported authentication mechanism: use PLAIN or LOGIN"}
)

// AuthMechanisms implements smtp.AuthSession. Where the policy forbids
// plaintext passwords, AUTH is not advertised at all (RFC 4954 section 4).
func (s *session) AuthMechanisms() []string {
	if !s.srv.authAllowed(s.conn) {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.srv.authAllowed(s.conn) {
		s.log.Warn("smtp auth refused without TLS")
		return nil, errNeedTLS
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			// RFC 4616 section 2: an authorization identity other than
			// the user's own would mean acting for someone else.
			if identity != "" && identity != username {
				s.log.Warn("smtp auth refused: authorization identity differs", "user", username, "identity", identity)
				return errAuthBad
			}
			return s.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: s.login}, nil
	}
	return nil, errBadMech
}

func (s *session) login(username, password string) error {
	var address string
	var err error
	if aa, ok := s.srv.cfg.Auth.(AddrAuthenticator); ok {
		address, err = aa.AuthenticateFrom(username, password, mailbox.ClientAddr(s.conn.Conn().RemoteAddr()))
	} else {
		address, err = s.srv.cfg.Auth.Authenticate(username, password)
	}
	if err != nil {
		if errors.Is(err, mailbox.ErrAuthFailed) {
			s.log.Info("smtp auth failed", "user", username)
			return errAuthBad
		}
		s.log.Error("smtp auth error", "user", username, "err", err)
		return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "Temporary authentication failure, try again later: " + oneLine(err.Error())}
	}
	s.user, s.address = username, address
	s.log = s.log.With("user", username)
	s.log.Info("smtp auth ok")
	return nil
}

// Mail implements smtp.Session. RFC 6409 section 4.3 lets a submission
// server refuse mail before authentication; RFC 4954 section 6 gives 530.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.user == "" {
		return errAuthFirst
	}
	// RFC 6409 section 6.1: the MSA may check that the sender is the
	// authenticated user; ePOST always does, since the ring signs mail as
	// that user.
	if !sameAddress(from, s.address) {
		s.log.Warn("smtp sender refused", "from", from, "address", s.address)
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Sender <%s> is not yours: you are logged in as <%s>; send from that address", from, s.address)}
	}
	if s.from != "" {
		// RFC 5321 section 4.1.4: MAIL inside a transaction is a sequence
		// error (go-smtp would keep the old recipients).
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
			Message: "Nested MAIL command: send RSET first"}
	}
	s.from = from
	if opts != nil {
		s.opts = *opts
	}
	return nil
}

// Rcpt implements smtp.Session: unknown ring users are refused here, at
// RCPT, so that the client reports them at once (RFC 5321 section 3.3).
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	key := strings.ToLower(to)
	if s.seen[key] {
		return nil // a repeated recipient gets one copy
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.SubmitTimeout)
	defer cancel()
	class, err := s.srv.cfg.Recipients.Classify(ctx, to)
	if err != nil {
		s.log.Warn("smtp recipient lookup failed", "to", to, "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3},
			Message: fmt.Sprintf("Cannot look up <%s> right now, try again later: %s", to, oneLine(err.Error()))}
	}
	switch class {
	case RingUser:
		s.ring = append(s.ring, to)
	case Outside:
		if s.srv.cfg.Outbox == nil {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
				Message: fmt.Sprintf("<%s> is outside the ring and this node has no gateway outbox", to)}
		}
		s.outside = append(s.outside, to)
	default:
		s.log.Info("smtp recipient unknown", "to", to)
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: fmt.Sprintf("No such user <%s> in this ring; check the address", to)}
	}
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	s.seen[key] = true
	return nil
}

// Data implements smtp.Session. It reads the whole message (go-smtp has
// removed the dot-stuffing and enforces MaxMessageBytes), prepends the
// Received: field and returns nil, which go-smtp turns into 250, only
// after every destination has the message durably.
func (s *session) Data(r io.Reader) error {
	now := s.srv.cfg.Now()
	id := newID()
	_, isTLS := s.conn.TLSConnectionState()
	trace := received(receivedInfo{
		helo: s.conn.Hostname(), remote: s.conn.Conn().RemoteAddr(), by: s.srv.cfg.Domain, id: id,
		tls: isTLS, auth: true, utf8: s.opts.UTF8, rcpts: append(append([]string(nil), s.ring...), s.outside...), when: now,
	})
	hint := s.opts.Size // RFC 1870: the client's estimate, bounded below
	if hint <= 0 || hint > s.srv.cfg.MaxMessageBytes {
		hint = 64 << 10
	}
	buf := bytes.NewBuffer(make([]byte, 0, int64(len(trace))+hint+512))
	buf.WriteString(trace)
	if _, err := buf.ReadFrom(r); err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			s.log.Info("smtp message too large", "max", s.srv.cfg.MaxMessageBytes)
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
				Message: fmt.Sprintf("Message too large: the limit is %d bytes", s.srv.cfg.MaxMessageBytes)}
		}
		return err
	}
	raw := buf.Bytes()
	log := s.log.With("id", id, "size", len(raw), "ring", len(s.ring), "outside", len(s.outside))

	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.SubmitTimeout)
	defer cancel()
	env := Envelope{From: s.from, User: s.user, UTF8: s.opts.UTF8, Body: string(s.opts.Body), Received: now}

	// Stage the outbox copy first: it is local and rarely fails, and it
	// stays invisible until the ring copy is durable too.
	var staged StagedMessage
	if len(s.outside) > 0 {
		oenv := env
		oenv.To = s.outside
		var err error
		if staged, err = s.srv.cfg.Outbox.Stage(oenv, raw); err != nil {
			log.Error("smtp outbox stage failed", "err", err)
			return storeError("outbox", err)
		}
		defer staged.Abort()
	}
	if len(s.ring) > 0 {
		renv := env
		renv.To = s.ring
		start := time.Now()
		if err := s.srv.cfg.Submitter.Submit(ctx, renv, raw); err != nil {
			log.Error("smtp submit failed", "err", err)
			return storeError("ring", err)
		}
		log.Info("smtp submitted to ring", "to", s.ring, "took", time.Since(start))
	}
	if staged != nil {
		qid, err := staged.Commit()
		if err != nil {
			// The ring recipients have the message; a retry by the client
			// gives them a second copy, which beats losing the outside ones.
			log.Error("smtp outbox commit failed", "err", err)
			return storeError("outbox", err)
		}
		log.Info("smtp queued for the internet gateway", "to", s.outside, "outbox_id", qid)
	}
	return nil
}

// storeError maps a Submitter or Outbox error to a reply.
func storeError(where string, err error) error {
	msg := oneLine(err.Error())
	switch {
	case errors.Is(err, ErrRejected):
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: "Message rejected by the " + where + ": " + msg}
	case errors.Is(err, mailbox.ErrTooBig):
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: "Message too large for the " + where + ": " + msg}
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Message not stored in the " + where + ", try again later: " + msg}
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.from, s.opts, s.ring, s.outside, s.seen = "", smtp.MailOptions{}, nil, nil, nil
}

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }

// oneLine keeps an error text from breaking the reply into lines.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
