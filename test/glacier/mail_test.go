package glacier

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// message is one test mail as submitted: raw is the header and body the client sent, which
// the recipient's INBOX must hold byte for byte behind the Received: field the submission
// server prepends (RFC 5321 section 4.4).
type message struct {
	from, to *user
	subject  string
	raw      []byte
}

// body is the part of raw after the header's blank line.
func (m *message) body() []byte {
	_, b, _ := bytes.Cut(m.raw, []byte("\r\n\r\n"))
	return b
}

// makeMessages draws n messages between distinct users; one in five carries a 20-60 KiB
// base64 body, like an attachment, so that the messages have content chunks of their own.
func makeMessages(rng *rand.Rand, seed uint64, users []*user, n int) []*message {
	msgs := make([]*message, n)
	for i := range msgs {
		from := users[rng.IntN(len(users))]
		to := users[rng.IntN(len(users)-1)]
		if to == from {
			to = users[len(users)-1]
		}
		subject := fmt.Sprintf("glacier %d message %03d", seed, i)
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.%d@glacier.test>\r\n\r\n", from.addr, to.addr, subject, seed, i)
		fmt.Fprintf(&b, "Message %d from %s to %s.\r\n", i, from.addr, to.addr)
		if i%5 == 0 {
			blob := make([]byte, (20<<10)+rng.IntN(40<<10))
			for j := range blob {
				blob[j] = byte(rng.Uint32())
			}
			enc := base64.StdEncoding.EncodeToString(blob)
			b.WriteString("\r\n")
			for len(enc) > 0 {
				k := min(76, len(enc))
				b.WriteString(enc[:k] + "\r\n")
				enc = enc[k:]
			}
		}
		msgs[i] = &message{from: from, to: to, subject: subject, raw: b.Bytes()}
	}
	return msgs
}

// submit sends msgs, all from one user, over one SMTP submission session at the user's node
// (STARTTLS, AUTH PLAIN); each returns once the server answered 250 to the end of DATA.
func submit(from *user, msgs []*message) error {
	c, err := smtp.Dial(from.home.smtp)
	if err != nil {
		return fmt.Errorf("smtp dial %s (%s): %w", from.home.smtp, from.home.Name, err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return fmt.Errorf("smtp starttls %s: %w", from.home.Name, err)
	}
	host, _, _ := net.SplitHostPort(from.home.smtp)
	if err := c.Auth(smtp.PlainAuth("", from.addr, from.pw, host)); err != nil {
		return fmt.Errorf("smtp auth %s: %w", from.addr, err)
	}
	for _, m := range msgs {
		// A 4xx reply (the recipient's record not found in time on a busy ring) is what a
		// real client retries later: so does this one, a few times, as an MTA would.
		for try := 1; ; try++ {
			err := submitOne(c, from, m)
			var te *textproto.Error
			if err == nil {
				break
			}
			if !errors.As(err, &te) || te.Code < 400 || te.Code > 499 || try == 5 {
				return err
			}
			if rerr := c.Reset(); rerr != nil {
				return fmt.Errorf("RSET after %v: %w", err, rerr)
			}
			time.Sleep(time.Second)
		}
	}
	return c.Quit()
}

// submitOne sends m in the open session: MAIL, RCPT, DATA.
func submitOne(c *smtp.Client, from *user, m *message) error {
	if err := c.Mail(from.addr); err != nil {
		return fmt.Errorf("MAIL FROM %s: %w", from.addr, err)
	}
	if err := c.Rcpt(m.to.addr); err != nil {
		return fmt.Errorf("RCPT TO %s: %w", m.to.addr, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA %q: %w", m.subject, err)
	}
	if _, err := w.Write(m.raw); err != nil {
		return fmt.Errorf("DATA %q: %w", m.subject, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA %q: %w", m.subject, err)
	}
	return nil
}

// imapSession logs user in at the user's current node over IMAP with STARTTLS and selects
// INBOX. Every command of the session must finish before timeout: a login that waits for the
// ring, or a FETCH of content not yet back, gives an error rather than a hung test.
func imapSession(u *user, timeout time.Duration) (*imapclient.Client, *imap.SelectData, error) {
	conn, err := net.DialTimeout("tcp", u.home.imap, 5*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("imap dial %s (%s): %w", u.home.imap, u.home.Name, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("imap starttls %s: %w", u.home.Name, err)
	}
	if err := c.Login(u.addr, u.pw).Wait(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("imap login %s at %s: %w", u.addr, u.home.Name, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("select INBOX of %s: %w", u.addr, err)
	}
	return c, sel, nil
}

// inboxSubjects returns the UIDs of u's INBOX messages by subject (a subject filed twice
// appears twice).
func inboxSubjects(u *user, timeout time.Duration) (map[string][]imap.UID, error) {
	c, sel, err := imapSession(u, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := map[string][]imap.UID{}
	if sel.NumMessages > 0 {
		var seq imap.SeqSet
		seq.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(seq, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
		if err != nil {
			return nil, fmt.Errorf("fetch envelopes of %s: %w", u.addr, err)
		}
		for _, m := range msgs {
			if m.Envelope != nil {
				out[m.Envelope.Subject] = append(out[m.Envelope.Subject], m.UID)
			}
		}
	}
	c.Logout().Wait()
	return out, nil
}

// verifyInbox checks the messages of want not yet in verified against u's INBOX: each must be
// there exactly once, its BODY[] must end with exactly what was submitted, and INBOX must hold
// no more messages than want. It marks the
// messages it verified and describes the others in missing (nil when none).
func verifyInbox(u *user, want []*message, verified map[string]bool, timeout time.Duration) (missing []string, err error) {
	c, sel, err := imapSession(u, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	uids := map[string][]imap.UID{}
	if sel.NumMessages > 0 {
		var seq imap.SeqSet
		seq.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(seq, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
		if err != nil {
			return nil, fmt.Errorf("fetch envelopes of %s: %w", u.addr, err)
		}
		for _, m := range msgs {
			if m.Envelope != nil {
				uids[m.Envelope.Subject] = append(uids[m.Envelope.Subject], m.UID)
			}
		}
	}
	// Nothing else may be there: no message filed twice, no entry restored twice.
	if n := int(sel.NumMessages); n > len(want) {
		missing = append(missing, fmt.Sprintf("INBOX holds %d messages, want %d", n, len(want)))
	}
	for _, m := range want {
		if verified[m.subject] {
			continue
		}
		got := uids[m.subject]
		switch {
		case len(got) == 0:
			missing = append(missing, fmt.Sprintf("%q: not in INBOX", m.subject))
			continue
		case len(got) > 1:
			missing = append(missing, fmt.Sprintf("%q: %d times in INBOX", m.subject, len(got)))
			continue
		}
		section := &imap.FetchItemBodySection{Peek: true}
		fm, err := c.Fetch(imap.UIDSetNum(got[0]), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			missing = append(missing, fmt.Sprintf("%q: FETCH BODY[]: %v", m.subject, err))
			if c.State() == imap.ConnStateLogout {
				return missing, nil
			}
			continue
		}
		if len(fm) != 1 {
			missing = append(missing, fmt.Sprintf("%q: FETCH BODY[] returned %d messages", m.subject, len(fm)))
			continue
		}
		raw := fm[0].FindBodySection(section)
		_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		switch {
		case !bytes.Equal(body, m.body()):
			missing = append(missing, fmt.Sprintf("%q: body differs (%d bytes, want %d)", m.subject, len(body), len(m.body())))
		case !bytes.HasSuffix(raw, m.raw) || !strings.HasPrefix(string(raw), "Received: "):
			missing = append(missing, fmt.Sprintf("%q: header differs from the submitted one:\n%s", m.subject, raw[:len(raw)-len(body)]))
		default:
			verified[m.subject] = true
		}
	}
	c.Logout().Wait()
	return missing, nil
}
