// Package mxserver is a gateway's inbound SMTP server for the internet (the ring's MX,
// DESIGN.md layer 12, docs/gateway-design.md §7.4): mail from other organizations' MTAs for
// the ring's users, without authentication, under the ring's CA-signed accept policy
// (ring.Policy). It never relays: a recipient outside the accepted domains is refused at
// RCPT (550 5.7.1), an unknown user too (550 5.1.1). At DATA it checks SPF, DKIM and DMARC
// (mailauth), refuses what the policy refuses, records the results in an
// Authentication-Results field under its own authserv-id (removing any a sender forged with
// that id), and hands the message to the ring; it answers 250 only once the ring reports
// every recipient's copy durably stored.
//
// Retries are harmless: each recipient's notification id is derived from the ring's secret,
// the recipient and the bytes received (NotificationID), so a sender that lost our 250 and
// sends the same message again, to this gateway or another of the ring, lands on the same
// ids, which the recipient files once.
package mxserver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"epost/internal/mailauth"
	"epost/internal/ring"
)

// Status is a recipient's outcome at the ring.
type Status int

const (
	// Failed: not stored yet (the ring did not answer in time); the sender retries.
	Failed Status = iota
	// Delivered: durably stored for the recipient.
	Delivered
	// Unknown: the ring has no such user (any more).
	Unknown
)

// Ring is what the server needs of the ring.
type Ring interface {
	// Lookup reports whether addr (normalized, lower case) is a user of the ring; an error
	// means the ring could not tell now (451).
	Lookup(ctx context.Context, addr string) (bool, error)
	// Deliver stores msg for each recipient under its notification id and reports each
	// recipient's outcome, in order. It returns when every outcome is known or ctx ends.
	Deliver(ctx context.Context, rcpts []string, nids [][16]byte, msg []byte) ([]Status, error)
}

// Config configures a Server.
type Config struct {
	// Hostname is the name the server greets with and writes in Received and
	// Authentication-Results fields (its authserv-id).
	Hostname string
	// TLS enables STARTTLS (RFC 3207) with the operator's certificate; nil offers none.
	TLS *tls.Config
	// Policy returns the accept policy in force (it may change while the server runs).
	Policy func() *ring.Policy
	// Checker runs SPF, DKIM and DMARC through the gateway's resolver.
	Checker *mailauth.Checker
	Ring    Ring
	// Secret keys the notification ids (the ring's convergence secret: every gateway of
	// the ring derives the same ids).
	Secret []byte
	// DeliverTimeout bounds the wait for the ring at DATA (0: 2 minutes), after which the
	// sender gets 451 and retries.
	DeliverTimeout time.Duration
	// LookupTimeout bounds a recipient lookup (0: 20 s).
	LookupTimeout time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Refusal reasons, the keys of Stats.Refused.
const (
	ReasonRelay       = "relay"
	ReasonUnknownUser = "unknown_user"
	ReasonSPF         = "spf"
	ReasonDMARC       = "dmarc"
	ReasonSize        = "size"
	ReasonRate        = "rate"
	ReasonConns       = "conns"
	ReasonDeny        = "deny"
	ReasonRecipients  = "recipients"
	ReasonTempfail    = "tempfail"
)

// Stats counts what the server did since it started.
type Stats struct {
	Listen     string            `json:"listen"`
	Accepted   uint64            `json:"accepted"`   // messages answered 250
	Recipients uint64            `json:"recipients"` // recipient copies stored
	Refused    map[string]uint64 `json:"refused"`    // by reason
}

// Server is the MX. Safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	engine *smtp.Server
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[netip.Addr]int
	recent   map[netip.Addr][]time.Time // message starts in the last minute, per client
	accepted uint64
	rcpts    uint64
	refused  map[string]uint64
	listen   string
}

// New returns a server; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil || cfg.Ring == nil || cfg.Checker == nil || len(cfg.Secret) == 0 {
		return nil, errors.New("mxserver: Config.Policy, Ring, Checker and Secret are required")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.DeliverTimeout <= 0 {
		cfg.DeliverTimeout = 2 * time.Minute
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "mx"), conns: map[netip.Addr]int{},
		recent: map[netip.Addr][]time.Time{}, refused: map[string]uint64{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	e := smtp.NewServer(smtp.BackendFunc(s.newSession))
	e.Domain = cfg.Hostname
	e.TLSConfig = cfg.TLS
	e.MaxMessageBytes = cfg.Policy().MaxMessageBytes
	e.MaxRecipients = 0 // the session counts, with the policy's limit and a 452
	e.MaxLineLength = 4000
	e.EnableSMTPUTF8 = true
	e.ReadTimeout = 5 * time.Minute // RFC 5321 section 4.5.3.2
	e.WriteTimeout = 5 * time.Minute
	e.ErrorLog = errorLog{s.log}
	s.engine = e
	return s, nil
}

// Serve accepts connections until the listener or the server is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.listen = ln.Addr().String()
	s.mu.Unlock()
	s.log.Info("mx listening", "addr", ln.Addr().String(), "starttls", s.cfg.TLS != nil, "hostname", s.cfg.Hostname)
	err := s.engine.Serve(&limitListener{Listener: ln, s: s})
	if errors.Is(err, net.ErrClosed) || errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server: listeners, connections and deliveries under way (whose senders
// get no 250 and retry).
func (s *Server) Close() error {
	s.cancel()
	err := s.engine.Close()
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Listen: s.listen, Accepted: s.accepted, Recipients: s.rcpts, Refused: map[string]uint64{}}
	for k, v := range s.refused {
		st.Refused[k] = v
	}
	return st
}

func (s *Server) refuse(reason string) {
	s.mu.Lock()
	s.refused[reason]++
	s.mu.Unlock()
}

// NotificationID derives a recipient's notification id for a message: HMAC-SHA256 under the
// ring's secret of the recipient and the SHA-256 of the bytes received, cut to 16 bytes.
// Outsiders cannot predict it (they lack the secret), and every gateway of the ring derives
// the same id for the same message.
func NotificationID(secret []byte, rcpt string, data []byte) [16]byte {
	sum := sha256.Sum256(data)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("epost/v1/mx-nid\x00"))
	m.Write([]byte(strings.ToLower(rcpt)))
	m.Write([]byte{0})
	m.Write(sum[:])
	var id [16]byte
	copy(id[:], m.Sum(nil))
	return id
}

// limitListener enforces the policy's connections per client address: one over the limit
// hears 421 and is closed before the greeting.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		limit := l.s.cfg.Policy().MaxConnsPerIP
		l.s.mu.Lock()
		over := limit > 0 && l.s.conns[ip] >= limit && !l.s.cfg.Policy().Allowed(ip, "")
		if !over {
			l.s.conns[ip]++
		}
		l.s.mu.Unlock()
		if over {
			l.s.refuse(ReasonConns)
			l.s.log.Info("mx connection refused: too many from one address", "client", ip, "limit", limit)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "421 4.7.0 %s Too many connections from your address, try again later\r\n", l.s.cfg.Hostname)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, s: l.s, ip: ip}, nil
	}
}

type countedConn struct {
	net.Conn
	s    *Server
	ip   netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		if c.s.conns[c.ip]--; c.s.conns[c.ip] <= 0 {
			delete(c.s.conns, c.ip)
		}
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, args ...any) { e.l.Warn(fmt.Sprintf(format, args...)) }
func (e errorLog) Println(args ...any)               { e.l.Warn(fmt.Sprint(args...)) }

// session is one SMTP connection's transaction state.
type session struct {
	s     *Server
	conn  *smtp.Conn
	ip    netip.Addr
	log   *slog.Logger
	inTx  bool   // MAIL was accepted (the reverse path may be null: bounces)
	from  string // "" is the null reverse path (RFC 5321 section 4.5.5)
	utf8  bool
	rcpts []string // as the ring knows them (postmaster mapped)
	asked []string // as the client wrote them
	seen  map[string]bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	ip := addrOf(c.Conn().RemoteAddr())
	return &session{s: s, conn: c, ip: ip, log: s.log.With("client", ip.String(), "helo", c.Hostname())}, nil
}

func smtpErr(code int, enh smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// Mail implements smtp.Session.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	s := ss.s
	pol := s.cfg.Policy()
	if ss.inTx {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Nested MAIL command: send RSET first")
	}
	if pol.Denied(ss.ip, domainOf(from)) {
		s.refuse(ReasonDeny)
		ss.log.Info("mx sender refused by the deny list", "from", from)
		return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Mail from you is not accepted here")
	}
	if opts != nil && opts.Size > pol.MaxMessageBytes {
		s.refuse(ReasonSize)
		return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "Message too large: the limit is %d bytes", pol.MaxMessageBytes)
	}
	if limit := pol.MaxMessagesPerIPPerMinute; limit > 0 && !pol.Allowed(ss.ip, domainOf(from)) {
		now := s.cfg.Now()
		s.mu.Lock()
		r := s.recent[ss.ip]
		for len(r) > 0 && now.Sub(r[0]) >= time.Minute {
			r = r[1:]
		}
		over := len(r) >= limit
		if !over {
			r = append(r, now)
		}
		if len(r) == 0 {
			delete(s.recent, ss.ip)
		} else {
			s.recent[ss.ip] = r
		}
		s.mu.Unlock()
		if over {
			s.refuse(ReasonRate)
			ss.log.Info("mx rate limit", "limit_per_minute", limit)
			return smtpErr(450, smtp.EnhancedCode{4, 7, 0}, "Too many messages from your address, try again in a minute")
		}
	}
	ss.inTx, ss.from = true, from
	ss.utf8 = opts != nil && opts.UTF8
	return nil
}

// Rcpt implements smtp.Session: only the ring's accepted domains, only existing users.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	pol := s.cfg.Policy()
	if !ss.inTx {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first")
	}
	addr := strings.ToLower(strings.TrimSpace(to))
	if strings.EqualFold(addr, "postmaster") { // RFC 5321 section 4.5.1: without a domain
		if len(pol.AcceptDomains) > 0 {
			addr = "postmaster@" + pol.AcceptDomains[0]
		}
	}
	local, dom, ok := strings.Cut(addr, "@")
	if !ok || local == "" || strings.Contains(dom, "@") || !pol.Accepts(dom) {
		s.refuse(ReasonRelay)
		ss.log.Info("mx relaying refused", "to", to)
		return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied: this server takes mail only for %s", strings.Join(pol.AcceptDomains, ", "))
	}
	if ss.seen[addr] {
		return nil // one copy per recipient
	}
	if pol.MaxRecipients > 0 && len(ss.rcpts) >= pol.MaxRecipients {
		s.refuse(ReasonRecipients)
		return smtpErr(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients: at most %d per message, send the rest separately", pol.MaxRecipients)
	}
	target := addr
	if local == "postmaster" && pol.Postmaster != "" {
		target = strings.ToLower(pol.Postmaster)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LookupTimeout)
	defer cancel()
	found, err := s.cfg.Ring.Lookup(ctx, target)
	if err != nil {
		s.refuse(ReasonTempfail)
		ss.log.Warn("mx recipient lookup failed", "to", target, "err", err)
		return smtpErr(451, smtp.EnhancedCode{4, 4, 3}, "Cannot look up <%s> right now, try again later", to)
	}
	if !found {
		s.refuse(ReasonUnknownUser)
		ss.log.Info("mx recipient unknown", "to", target)
		return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user <%s>", to)
	}
	if ss.seen == nil {
		ss.seen = map[string]bool{}
	}
	ss.seen[addr] = true
	for _, r := range ss.rcpts {
		if r == target { // postmaster@ and the postmaster's own address in one message
			return nil
		}
	}
	ss.rcpts = append(ss.rcpts, target)
	ss.asked = append(ss.asked, addr)
	return nil
}

// Data implements smtp.Session.
func (ss *session) Data(r io.Reader) error {
	s := ss.s
	pol := s.cfg.Policy()
	if len(ss.rcpts) == 0 {
		return smtpErr(554, smtp.EnhancedCode{5, 5, 1}, "No valid recipients")
	}
	data, err := io.ReadAll(io.LimitReader(r, pol.MaxMessageBytes+1))
	if errors.Is(err, smtp.ErrDataTooLarge) || int64(len(data)) > pol.MaxMessageBytes {
		_, _ = io.Copy(io.Discard, r)
		s.refuse(ReasonSize)
		return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "Message too large: the limit is %d bytes", pol.MaxMessageBytes)
	}
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	id := newID()
	log := ss.log.With("id", id, "from", ss.from, "to", ss.rcpts, "size", len(data))

	var res *mailauth.Result
	if pol.DMARC != ring.DMARCOff || pol.SPFFail == ring.SPFReject {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		res = s.cfg.Checker.Check(ctx, net.IP(ss.ip.AsSlice()), ss.conn.Hostname(), ss.from, data)
		cancel()
		allowed := pol.Allowed(ss.ip, domainOf(ss.from))
		if !allowed && pol.SPFFail == ring.SPFReject && res.SPF == "fail" {
			s.refuse(ReasonSPF)
			log.Info("mx refused: SPF fail", "spf_domain", res.SPFDomain)
			return smtpErr(550, smtp.EnhancedCode{5, 7, 23}, "SPF check failed: %s does not allow %s to send its mail", res.SPFDomain, ss.ip)
		}
		if !allowed && pol.DMARC == ring.DMARCEnforce && res.Reject() {
			s.refuse(ReasonDMARC)
			log.Info("mx refused by DMARC", "from_domain", res.FromDomain, "reason", res.Reason)
			if res.BadFrom {
				return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "The message's From field cannot be checked: %s", res.Reason)
			}
			return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "DMARC policy of %s rejects this message: %s", res.FromDomain, res.Reason)
		}
	}
	var head bytes.Buffer
	head.WriteString(received(ss, id, now))
	if res != nil {
		head.WriteString(res.Header(s.cfg.Hostname))
	}
	msg := append(head.Bytes(), mailauth.StripAuthResults(data, s.cfg.Hostname)...)
	nids := make([][16]byte, len(ss.rcpts))
	for i, a := range ss.rcpts {
		nids[i] = NotificationID(s.cfg.Secret, a, data)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DeliverTimeout)
	defer cancel()
	start := time.Now()
	st, err := s.cfg.Ring.Deliver(ctx, ss.rcpts, nids, msg)
	if err != nil {
		s.refuse(ReasonTempfail)
		log.Warn("mx delivery to the ring failed", "err", err)
		return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "The ring could not store the message yet, try again later")
	}
	delivered, unknown, failed := 0, 0, 0
	for _, x := range st {
		switch x {
		case Delivered:
			delivered++
		case Unknown:
			unknown++
		default:
			failed++
		}
	}
	switch {
	case failed > 0:
		// Some copies are not stored: the sender retries the whole message, and the ids
		// make the stored copies count once.
		s.refuse(ReasonTempfail)
		log.Warn("mx delivery incomplete", "delivered", delivered, "failed", failed)
		return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "The ring stored %d of %d copies, try again later", delivered, len(st))
	case delivered == 0:
		s.refuse(ReasonUnknownUser)
		return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such user")
	}
	s.mu.Lock()
	s.accepted++
	s.rcpts += uint64(delivered)
	s.mu.Unlock()
	log.Info("mx delivered to the ring", "took", time.Since(start), "unknown", unknown)
	return nil
}

// Reset implements smtp.Session.
func (ss *session) Reset() {
	ss.inTx, ss.from, ss.utf8, ss.rcpts, ss.asked, ss.seen = false, "", false, nil, nil, nil
}

// Logout implements smtp.Session.
func (ss *session) Logout() error { return nil }

// received is the trace field (RFC 5321 section 4.4) the MX adds; "for" names the recipient
// only when there is one, so a copy does not reveal other recipients.
func received(ss *session, id string, when time.Time) string {
	with := "ESMTP"
	if ss.utf8 {
		with = "UTF8SMTP"
	}
	if _, isTLS := ss.conn.TLSConnectionState(); isTLS {
		with += "S"
	}
	var b strings.Builder
	b.WriteString("Received: from " + clean(ss.conn.Hostname()))
	if ss.ip.IsValid() {
		lit := ss.ip.String()
		if ss.ip.Is6() {
			lit = "IPv6:" + lit
		}
		b.WriteString(" ([" + lit + "])")
	}
	b.WriteString("\r\n\tby " + clean(ss.s.cfg.Hostname) + " (epost) with " + with + " id " + id)
	if len(ss.asked) == 1 {
		b.WriteString("\r\n\tfor <" + clean(ss.asked[0]) + ">")
	}
	b.WriteString("; " + when.Format("Mon, 02 Jan 2006 15:04:05 -0700") + "\r\n")
	return b.String()
}

func clean(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == '(' || r == ')' || r == ';' || r == '<' || r == '>' {
			return '_'
		}
		return r
	}, s)
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
