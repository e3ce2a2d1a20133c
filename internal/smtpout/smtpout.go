// Package smtpout delivers a gateway's outbound internet mail (docs/gateway-design.md §7.3):
// for a destination domain it finds the mail exchangers (RFC 5321 section 5.1: MX records by
// preference, the domain's own address when it has none, nothing at all for a null MX, RFC
// 7505), and tries them in order until one answers, speaking SMTP with STARTTLS whenever the
// server offers it. It reports a result per recipient: delivered, refused for good (5xx), or
// to be retried (4xx, or no exchanger reachable). The queue (package mailqueue) decides when.
package smtpout

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"epost/internal/dnsres"
)

// Config configures a Deliverer.
type Config struct {
	Resolver *dnsres.Resolver
	HELO     string // this gateway's name (mx_hostname), sent in EHLO
	// Port is the exchangers' port: 25, or another for tests.
	Port int
	// Timeout bounds connecting and each command (default 30 s; RFC 5321 allows minutes, a
	// gateway prefers the next exchanger).
	Timeout time.Duration
	// RequireTLS refuses to send to an exchanger that does not offer STARTTLS (or whose
	// certificate does not verify); otherwise TLS is opportunistic and certificates are not
	// checked (RFC 7435), as MTAs do without MTA-STS or DANE.
	RequireTLS bool
	// TLSConfig is the base TLS configuration (roots for RequireTLS; nil: the system's).
	// Without RequireTLS certificates are never checked, whatever it says.
	TLSConfig *tls.Config
	// MaxExchangers bounds the addresses tried per delivery (default 5).
	MaxExchangers int
	// Smarthost, when set, takes all mail instead of the destinations' exchangers (RFC 6409
	// style relaying through the organization's or a provider's server).
	Smarthost *Smarthost
}

// Smarthost is a relay server for all outgoing mail. STARTTLS is required and its
// certificate checked (against TLSConfig's roots, or the system's) unless InsecureTLS; with
// Username set the gateway authenticates with AUTH PLAIN (RFC 4954) after STARTTLS.
type Smarthost struct {
	Addr        string `json:"addr"` // HOST:PORT, e.g. smtp.provider.example:587
	Username    string `json:"username,omitempty"`
	Password    string `json:"password,omitempty"`
	InsecureTLS bool   `json:"insecure_tls,omitempty"` // tests only: any certificate
}

// Result is one recipient's outcome.
type Result struct {
	Rcpt      string
	Delivered bool
	Permanent bool   // refused for good: a DSN is due
	Code      int    // the SMTP reply code, 0 when no server answered
	Enhanced  string // e.g. "5.1.1"
	Text      string // the server's words, or what went wrong
	MX        string // the exchanger that answered
}

// ErrNullMX: the domain says it takes no mail (RFC 7505).
var ErrNullMX = errors.New("smtpout: the domain accepts no mail (null MX)")

// ErrNoDomain: the domain has neither mail exchangers nor addresses (permanent, 5.1.2).
var ErrNoDomain = errors.New("smtpout: the domain has no mail exchanger and no address")

// Deliverer sends messages.
type Deliverer struct{ cfg Config }

// New makes a Deliverer.
func New(cfg Config) *Deliverer {
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxExchangers <= 0 {
		cfg.MaxExchangers = 5
	}
	if cfg.HELO == "" {
		cfg.HELO = "localhost"
	}
	return &Deliverer{cfg: cfg}
}

// exchanger is one address to try.
type exchanger struct {
	host  string
	addr  netip.Addr
	port  int  // 0: Config.Port
	relay bool // the smarthost
}

// Exchangers lists the addresses to try for domain, in order.
func (d *Deliverer) Exchangers(ctx context.Context, domain string) ([]exchanger, error) {
	r := d.cfg.Resolver
	if sh := d.cfg.Smarthost; sh != nil {
		host, ps, err := net.SplitHostPort(sh.Addr)
		if err != nil {
			return nil, fmt.Errorf("smarthost %q: %w", sh.Addr, err)
		}
		port, err := strconv.Atoi(ps)
		if err != nil {
			return nil, fmt.Errorf("smarthost %q: bad port", sh.Addr)
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else if addrs, _, err = r.Addrs(ctx, host); err != nil {
			return nil, fmt.Errorf("smarthost %s: %w", host, err)
		}
		var out []exchanger
		for _, a := range addrs {
			out = append(out, exchanger{host: host, addr: a, port: port, relay: true})
		}
		return out[:min(len(out), d.cfg.MaxExchangers)], nil
	}
	mxs, _, err := r.MX(ctx, domain)
	var hosts []string
	switch {
	case errors.Is(err, dnsres.ErrNotFound):
		hosts = []string{domain} // implicit MX (RFC 5321 section 5.1)
	case err != nil:
		return nil, err
	case len(mxs) == 1 && (mxs[0].Host == "" || mxs[0].Host == "."):
		return nil, ErrNullMX
	default:
		for _, m := range mxs {
			hosts = append(hosts, m.Host)
		}
	}
	var out []exchanger
	var lastErr error
	implicit := len(hosts) == 1 && hosts[0] == domain && (mxs == nil)
	for _, h := range hosts {
		addrs, _, err := r.Addrs(ctx, h)
		if err != nil {
			lastErr = err
			continue
		}
		for _, a := range addrs {
			out = append(out, exchanger{host: h, addr: a})
		}
		if len(out) >= d.cfg.MaxExchangers {
			break
		}
	}
	if len(out) == 0 {
		if implicit && errors.Is(lastErr, dnsres.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s (%v)", ErrNoDomain, domain, lastErr)
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("%w: no address for the exchangers of %s", dnsres.ErrTemporary, domain)
		}
		return nil, lastErr
	}
	return out[:min(len(out), d.cfg.MaxExchangers)], nil
}

// Deliver sends msg from from (the reverse path; "" is the null path) to rcpts, all of one
// domain. Results are per recipient; err is set only when nothing could be tried at all.
func (d *Deliverer) Deliver(ctx context.Context, domain, from string, rcpts []string, msg []byte) ([]Result, error) {
	res := make([]Result, len(rcpts))
	for i, r := range rcpts {
		res[i] = Result{Rcpt: r}
	}
	exs, err := d.Exchangers(ctx, domain)
	if errors.Is(err, ErrNullMX) || errors.Is(err, ErrNoDomain) {
		enh := "5.1.10"
		if errors.Is(err, ErrNoDomain) {
			enh = "5.1.2"
		}
		for i := range res {
			res[i].Permanent, res[i].Enhanced, res[i].Text = true, enh, err.Error()
		}
		return res, nil
	}
	if err != nil {
		for i := range res {
			res[i].Text = err.Error()
		}
		return res, nil
	}
	pending := make([]int, len(rcpts))
	for i := range pending {
		pending[i] = i
	}
	for _, ex := range exs {
		if len(pending) == 0 || ctx.Err() != nil {
			break
		}
		var still []int
		done, terr := d.try(ctx, ex, from, rcpts, pending, msg, res)
		if terr != nil {
			for _, i := range pending {
				if res[i].Code == 0 || res[i].Code >= 400 && res[i].Code < 500 {
					res[i].Text, res[i].MX = terr.Error(), ex.host
				}
			}
		}
		for _, i := range pending {
			if !done[i] {
				still = append(still, i)
			}
		}
		pending = still
	}
	return res, nil
}

// try runs one SMTP session with ex for the recipients at idx; done marks those settled
// (delivered or refused for good). A 4xx or a broken session leaves a recipient for the next
// exchanger.
func (d *Deliverer) try(ctx context.Context, ex exchanger, from string, rcpts []string, idx []int, msg []byte, res []Result) (map[int]bool, error) {
	done := map[int]bool{}
	c, err := d.dial(ctx, ex)
	if err != nil {
		return done, err
	}
	defer c.Close()
	opts := &smtp.MailOptions{Size: int64(len(msg))}
	if ok, _ := c.Extension("8BITMIME"); ok {
		opts.Body = smtp.Body8BitMIME
	}
	if err := c.Mail(from, opts); err != nil {
		if settle(err, ex.host, idx, res, done) {
			return done, nil
		}
		return done, err
	}
	var accepted []int
	for _, i := range idx {
		if err := c.Rcpt(rcpts[i], nil); err != nil {
			settle(err, ex.host, []int{i}, res, done)
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		_ = c.Quit()
		return done, nil
	}
	w, err := c.Data()
	if err == nil {
		_, err = w.Write(msg)
		if err == nil {
			err = w.Close()
		}
	}
	if err != nil {
		settle(err, ex.host, accepted, res, done)
		return done, nil
	}
	for _, i := range accepted {
		res[i] = Result{Rcpt: rcpts[i], Delivered: true, Code: 250, MX: ex.host, Text: "delivered"}
		done[i] = true
	}
	_ = c.Quit()
	return done, nil
}

// settle records an SMTP error for the recipients at idx and reports whether it settled
// them (a 5xx); a 4xx or a failure without a reply leaves them for another try.
func settle(err error, mx string, idx []int, res []Result, done map[int]bool) bool {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		for _, i := range idx {
			res[i].Text, res[i].MX = err.Error(), mx
		}
		return false
	}
	enh := ""
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
		enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	perm := se.Code >= 500
	for _, i := range idx {
		res[i].Code, res[i].Enhanced, res[i].Text, res[i].MX, res[i].Permanent = se.Code, enh, se.Message, mx, perm
		if perm {
			done[i] = true
		}
	}
	return perm
}

// dial connects to ex and says hello, upgrading to TLS when offered (or refusing the
// exchanger when TLS is required and not there).
func (d *Deliverer) dial(ctx context.Context, ex exchanger) (*smtp.Client, error) {
	dl := net.Dialer{Timeout: d.cfg.Timeout}
	port := d.cfg.Port
	if ex.port != 0 {
		port = ex.port
	}
	requireTLS := d.cfg.RequireTLS || ex.relay
	verify := d.cfg.RequireTLS || ex.relay && !d.cfg.Smarthost.InsecureTLS
	addr := net.JoinHostPort(ex.addr.String(), strconv.Itoa(port))
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", ex.host, addr, err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = d.cfg.Timeout, 2*d.cfg.Timeout
	if err := c.Hello(d.cfg.HELO); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", ex.host, err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if requireTLS {
			c.Close()
			return nil, fmt.Errorf("%s does not offer STARTTLS and TLS is required", ex.host)
		}
		return c, nil
	}
	// go-smtp has no STARTTLS after an explicit Hello: the client is idle between replies,
	// so the command is spoken on the connection directly, and a new client is made over TLS
	// (it expects a greeting first, which RFC 3207 does not send again: one is supplied).
	conn.SetDeadline(time.Now().Add(d.cfg.Timeout))
	if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: STARTTLS: %w", ex.host, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		conn.Close()
		return nil, fmt.Errorf("%s: STARTTLS refused: %q %v", ex.host, strings.TrimSpace(line), err)
	}
	tc := &tls.Config{ServerName: ex.host, InsecureSkipVerify: !verify, MinVersion: tls.VersionTLS12}
	if d.cfg.TLSConfig != nil {
		tc = d.cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = ex.host
		}
		tc.InsecureSkipVerify = !verify // opportunistic TLS takes any certificate (RFC 7435)
	}
	tconn := tls.Client(conn, tc)
	if err := tconn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: TLS: %w", ex.host, err)
	}
	conn.SetDeadline(time.Time{})
	c = smtp.NewClient(&greetedConn{Conn: tconn, r: io.MultiReader(strings.NewReader("220 "+ex.host+" TLS\r\n"), tconn)})
	c.CommandTimeout, c.SubmissionTimeout = d.cfg.Timeout, 2*d.cfg.Timeout
	if err := c.Hello(d.cfg.HELO); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: EHLO after STARTTLS: %w", ex.host, err)
	}
	if sh := d.cfg.Smarthost; ex.relay && sh.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", sh.Username, sh.Password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: AUTH as %s: %w", ex.host, sh.Username, err)
		}
	}
	return c, nil
}

// greetedConn reads a supplied greeting before the connection's own bytes.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }
