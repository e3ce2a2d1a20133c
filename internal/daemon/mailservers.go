package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"epost/internal/connlimit"
	"epost/internal/identity"
	"epost/internal/imapserver"
	"epost/internal/mailbox"
	"epost/internal/pop3server"
	"epost/internal/smtpserver"
)

// The mail servers: IMAP, SMTP submission and POP3 for the node's users, on the config's
// --imap, --smtp and --pop3 addresses, started when the node has at least one user. Clear-text
// logins are accepted only from loopback (the servers' default); remote clients use STARTTLS
// (STLS for POP3) with the certificate the node made for itself (FileMailCert). Recipients
// outside the ring go to a durable outbox (DATADIR/outbox) that the node hands to a gateway of
// its ring (outbox.go), which delivers them by SMTP; until a gateway runs they wait there.

// Files of the mail servers.
const (
	FileMailCert = "mail-tls.crt" // NODEDIR: the servers' self-signed certificate (PEM)
	FileMailKey  = "mail-tls.key" // NODEDIR, 0600: its private key (PEM)
	FileOutbox   = "outbox"       // DATADIR: mail for recipients outside the ring
)

// mailServers are the running listeners.
type mailServers struct {
	imap     imapService
	smtp     *smtpserver.Server
	pop3     *pop3server.Server
	outbox   *smtpserver.DirOutbox
	addrs    MailAddrs // STARTTLS listeners
	tlsAddrs MailAddrs // implicit-TLS listeners
}

// imapService is what the node needs of its IMAP server (internal/imapserver).
type imapService interface {
	Serve(net.Listener) error
	ServeTLS(net.Listener) error
	Close() error
	ConnStats() connlimit.Stats
}

// MailAddrs are the bound addresses of the mail servers ("" when off).
type MailAddrs struct {
	IMAP string `json:"imap,omitempty"`
	SMTP string `json:"smtp,omitempty"`
	POP3 string `json:"pop3,omitempty"`
}

// startMail starts the servers configured for this node, if it has users. Called by Start
// with n.mu held.
func (n *Node) startMail() error {
	cfg := n.rn.Config
	if len(n.mail.addresses()) == 0 {
		if cfg.IMAP != "" || cfg.SMTP != "" || cfg.POP3 != "" {
			n.log.Info("no users on this node yet: mail servers stay off (add one with epost user add, then restart the node)")
		}
		return nil
	}
	if cfg.IMAP == "" && cfg.SMTP == "" && cfg.POP3 == "" {
		n.log.Warn("this node has users but no IMAP, SMTP or POP3 address in its config: its users cannot reach their mail (set them with epost node init --imap/--smtp/--pop3)")
		return nil
	}
	tlsCfg, err := n.mailTLS()
	if err != nil {
		return err
	}
	ms := &mailServers{}
	fail := func(err error) error {
		ms.close()
		return err
	}
	domain := "localhost"
	if len(n.rn.Descriptor.Domains) > 0 {
		domain = n.rn.Descriptor.Domains[0]
	}
	auth := mailAuth{n.mail}
	if cfg.IMAP != "" {
		ln, err := listenMail("IMAP", cfg.IMAP, "--imap")
		if err != nil {
			return fail(err)
		}
		s, err := imapserver.New(imapserver.Config{Auth: auth, TLS: tlsCfg, Logger: n.log, Version: "epost",
			MaxConns: n.opts.MailLimits.MaxConns, MaxConnsPerAddr: n.opts.MailLimits.MaxConnsPerAddr})
		if err != nil {
			ln.Close()
			return fail(err)
		}
		ms.imap, ms.addrs.IMAP = s, ln.Addr().String()
		go s.Serve(ln)
	}
	go n.keepCustody()
	if cfg.SMTP != "" {
		ob, err := smtpserver.OpenDirOutbox(filepath.Join(n.rn.DataDir(), FileOutbox), time.Now)
		if err != nil {
			return fail(fmt.Errorf("open the outbox: %w", err))
		}
		ms.outbox = ob
		go n.drainOutbox(ob)
		ln, err := listenMail("SMTP", cfg.SMTP, "--smtp")
		if err != nil {
			return fail(err)
		}
		s, err := smtpserver.New(smtpserver.Config{
			MaxConns:        n.opts.MailLimits.MaxConns,
			MaxConnsPerAddr: n.opts.MailLimits.MaxConnsPerAddr,
			Domain:          domain,
			Auth:            smtpAuth{n.mail},
			Recipients:      n.mail.glue.Recipients(),
			Submitter:       n.mail.glue.Submitter(),
			Outbox:          loggedOutbox{ob, n},
			TLS:             tlsCfg,
			Logger:          n.log,
			SubmitTimeout:   n.timers.Submit,
		})
		if err != nil {
			ln.Close()
			return fail(err)
		}
		ms.smtp, ms.addrs.SMTP = s, ln.Addr().String()
		go s.Serve(ln)
	}
	if cfg.POP3 != "" {
		ln, err := listenMail("POP3", cfg.POP3, "--pop3")
		if err != nil {
			return fail(err)
		}
		s, err := pop3server.New(pop3server.Config{Auth: auth, TLS: tlsCfg, Logger: n.log,
			MaxConns: n.opts.MailLimits.MaxConns, MaxConnsPerAddr: n.opts.MailLimits.MaxConnsPerAddr})
		if err != nil {
			ln.Close()
			return fail(err)
		}
		ms.pop3, ms.addrs.POP3 = s, ln.Addr().String()
		go s.Serve(ln)
	}
	// Implicit TLS (RFC 8314): the same servers on extra listeners.
	var imaps, smtps, pop3s func(net.Listener) error
	if ms.imap != nil {
		imaps = ms.imap.ServeTLS
	}
	if ms.smtp != nil {
		smtps = ms.smtp.ServeTLS
	}
	if ms.pop3 != nil {
		pop3s = ms.pop3.ServeTLS
	}
	for _, l := range []struct {
		what, addr string
		serve      func(net.Listener) error
		bound      *string
	}{
		{"IMAPS", n.opts.ImplicitTLS.IMAP, imaps, &ms.tlsAddrs.IMAP},
		{"SMTPS", n.opts.ImplicitTLS.SMTP, smtps, &ms.tlsAddrs.SMTP},
		{"POP3S", n.opts.ImplicitTLS.POP3, pop3s, &ms.tlsAddrs.POP3},
	} {
		if l.addr == "" {
			continue
		}
		if l.serve == nil {
			return fail(fmt.Errorf("%s on %s: the plain server is off in the node's config; give it an address too", l.what, l.addr))
		}
		ln, err := listenMail(l.what, l.addr, "--"+strings.ToLower(l.what))
		if err != nil {
			return fail(err)
		}
		*l.bound = ln.Addr().String()
		go l.serve(ln)
	}
	n.servers = ms
	n.log.Info("mail servers listening", "imap", ms.addrs.IMAP, "smtp", ms.addrs.SMTP, "pop3", ms.addrs.POP3,
		"imaps", ms.tlsAddrs.IMAP, "smtps", ms.tlsAddrs.SMTP, "pop3s", ms.tlsAddrs.POP3,
		"users", strings.Join(n.mail.addresses(), ","), "certificate", filepath.Join(n.opts.Dir, FileMailCert))
	return nil
}

func listenMail(what, addr, flag string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w (is another program using the port? Pick another with epost node init %s, or edit config.json)", what, addr, err, flag)
	}
	return ln, nil
}

func (ms *mailServers) close() {
	if ms == nil {
		return
	}
	if ms.imap != nil {
		ms.imap.Close()
	}
	if ms.smtp != nil {
		ms.smtp.Close()
	}
	if ms.pop3 != nil {
		ms.pop3.Close()
	}
}

// MailAddrs returns the mail servers' bound addresses (empty when they are off).
func (n *Node) MailAddrs() MailAddrs {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.servers == nil {
		return MailAddrs{}
	}
	return n.servers.addrs
}

// mailAuth is the IMAP and POP3 Authenticator: the user name is the address.
type mailAuth struct{ m *mailUsers }

func (a mailAuth) Authenticate(username, password string) (mailbox.Store, error) {
	return a.m.login(username, password, netip.Addr{})
}

func (a mailAuth) AuthenticateFrom(username, password string, client netip.Addr) (mailbox.Store, error) {
	return a.m.login(username, password, client)
}

// smtpAuth is the SMTP Authenticator: logging in also brings the user online, which sending
// needs (the user's keys sign the notifications).
type smtpAuth struct{ m *mailUsers }

func (a smtpAuth) Authenticate(username, password string) (string, error) {
	return a.AuthenticateFrom(username, password, netip.Addr{})
}

func (a smtpAuth) AuthenticateFrom(username, password string, client netip.Addr) (string, error) {
	if _, err := a.m.login(username, password, client); err != nil {
		return "", err
	}
	return identity.NormalizeAddress(username)
}

// loggedOutbox is the DirOutbox, saying in the log where mail for outside addresses went.
type loggedOutbox struct {
	ob *smtpserver.DirOutbox
	n  *Node
}

func (o loggedOutbox) Stage(env smtpserver.Envelope, raw []byte) (smtpserver.StagedMessage, error) {
	st, err := o.ob.Stage(env, raw)
	if err != nil {
		o.n.storeFailed("outbox", err)
		return nil, err
	}
	return loggedStaged{st, o.n, env}, nil
}

type loggedStaged struct {
	smtpserver.StagedMessage
	n   *Node
	env smtpserver.Envelope
}

func (s loggedStaged) Commit() (string, error) {
	id, err := s.StagedMessage.Commit()
	if err != nil {
		s.n.storeFailed("outbox", err)
	}
	if err == nil {
		s.n.log.Info("recipients outside the ring: message queued in the outbox; a gateway of the ring takes it and delivers it by SMTP (without one it waits there)",
			"id", id, "from", s.env.From, "to", strings.Join(s.env.To, ","),
			"outbox", filepath.Join(s.n.rn.DataDir(), FileOutbox))
	}
	return id, err
}
