package churn

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"regexp"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// tokenRE finds a test message's unique token in its subject.
var tokenRE = regexp.MustCompile(`\bchurn-\d+-r\d+-m\d+\b`)

// token names message i of a round; it is the message's subject and Message-ID.
func token(seed uint64, round, i int) string {
	return fmt.Sprintf("churn-%d-r%d-m%02d", seed%1_000_000, round, i)
}

// submit sends one message from one user to another over SMTP submission (STARTTLS, AUTH
// PLAIN) on a connection of its own, and returns nil only when the server answered 250 to
// the end of DATA.
func submit(from, to *user, tok string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", from.home.smtp, 5*time.Second)
	if err != nil {
		return fmt.Errorf("smtp dial %s: %w", from.home.smtp, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	host, _, _ := net.SplitHostPort(from.home.smtp)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp greeting: %w", err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return fmt.Errorf("smtp starttls: %w", err)
	}
	if err := c.Auth(smtp.PlainAuth("", from.addr, from.pw, host)); err != nil {
		return fmt.Errorf("smtp auth %s: %w", from.addr, err)
	}
	if err := c.Mail(from.addr); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to.addr); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@churn.test>\r\n\r\nchurn test message %s\r\n",
		from.addr, to.addr, tok, tok, tok)
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	c.Quit()
	return nil
}

// login opens an IMAP session (STARTTLS) for u at the user's node; every command of the
// session must finish before timeout, so that a hung server gives an error, not a hung test.
func login(u *user, timeout time.Duration) (*imapclient.Client, error) {
	conn, err := net.DialTimeout("tcp", u.home.imap, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("imap dial %s: %w", u.home.imap, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("imap starttls: %w", err)
	}
	if err := c.Login(u.addr, u.pw).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("imap login %s: %w", u.addr, err)
	}
	return c, nil
}

// msgView is one message of a mailbox as the audit sees it.
type msgView struct {
	uid   imap.UID
	flags []imap.Flag
}

// mailboxView maps each test token to the messages carrying it (more than one: a duplicate).
type mailboxView map[string][]msgView

// fetchMailbox selects name on c and fetches every message's UID, flags and subject.
func fetchMailbox(c *imapclient.Client, name string, readOnly bool) (mailboxView, error) {
	sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
	if err != nil {
		return nil, fmt.Errorf("select %s: %w", name, err)
	}
	view := mailboxView{}
	if sel.NumMessages == 0 {
		return view, nil
	}
	var seq imap.SeqSet
	seq.AddRange(1, sel.NumMessages)
	msgs, err := c.Fetch(seq, &imap.FetchOptions{UID: true, Flags: true, Envelope: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	for _, m := range msgs {
		if m.Envelope == nil {
			continue
		}
		if tok := tokenRE.FindString(m.Envelope.Subject); tok != "" {
			view[tok] = append(view[tok], msgView{uid: m.UID, flags: m.Flags})
		}
	}
	return view, nil
}

// readMailbox logs u in and reads one mailbox read-only.
func readMailbox(u *user, name string, timeout time.Duration) (mailboxView, error) {
	c, err := login(u, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	v, err := fetchMailbox(c, name, true)
	if err != nil {
		return nil, err
	}
	c.Logout().Wait()
	return v, nil
}

// listMailboxes returns the names LIST "" "*" gives.
func listMailboxes(c *imapclient.Client) ([]string, error) {
	l, err := c.List("", "*", nil).Collect()
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	var out []string
	for _, d := range l {
		out = append(out, d.Mailbox)
	}
	slices.Sort(out)
	return out, nil
}

// uidSet makes a UID set of the messages of view carrying toks (one each).
func uidSet(view mailboxView, toks []string) imap.UIDSet {
	var s imap.UIDSet
	for _, tok := range toks {
		if ms := view[tok]; len(ms) > 0 {
			s.AddNum(ms[0].uid)
		}
	}
	return s
}
