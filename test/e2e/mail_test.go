package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// send submits one message over SMTP (STARTTLS, AUTH PLAIN) and returns once the server
// answered 250 to the end of DATA.
func send(t *testing.T, r *ring, from, to, subject, body string) {
	t.Helper()
	n := r.home[from]
	c, err := smtp.Dial(n.smtp)
	if err != nil {
		t.Fatalf("smtp dial %s: %v", n.smtp, err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(n.smtp)
	if err := c.Auth(smtp.PlainAuth("", from, r.pw[from], host)); err != nil {
		t.Fatalf("smtp auth %s: %v", from, err)
	}
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatalf("RCPT TO %s: %v", to, err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n", from, to, subject, body)
	if err := w.Close(); err != nil { // the 250 (or the error) to the end of DATA
		t.Fatalf("DATA to %s: %v\nlog %s:\n%s", to, err, n.logPth, tail(n.logPth))
	}
	c.Quit()
}

// countInbox logs in over IMAP (STARTTLS) and counts INBOX messages whose text holds token.
func countInbox(t *testing.T, r *ring, user, token string) int {
	t.Helper()
	n := r.home[user]
	c, err := imapclient.DialStartTLS(n.imap, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatalf("imap dial %s: %v", n.imap, err)
	}
	return countOn(t, r, c, user, token)
}

// countOn is countInbox on a connected client.
func countOn(t *testing.T, r *ring, c *imapclient.Client, user, token string) int {
	t.Helper()
	n := r.home[user]
	defer c.Close()
	if err := c.Login(user, r.pw[user]).Wait(); err != nil {
		t.Fatalf("imap login %s: %v\nlog %s:\n%s", user, err, n.logPth, tail(n.logPth))
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages == 0 {
		c.Logout().Wait()
		return 0
	}
	var seq imap.SeqSet
	seq.AddRange(1, sel.NumMessages)
	msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, m := range msgs {
		if bytes.Contains(m.FindBodySection(&imap.FetchItemBodySection{}), []byte(token)) {
			found++
		}
	}
	c.Logout().Wait()
	return found
}

// waitInbox polls until user's INBOX holds token, and returns how long that took.
func waitInbox(t *testing.T, r *ring, user, token string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if got := countInbox(t, r, user, token); got > 0 {
			if got != 1 {
				t.Fatalf("%s's INBOX holds %q %d times, want exactly once", user, token, got)
			}
			return time.Since(start)
		}
		if time.Since(start) > limit {
			n := r.home[user]
			t.Fatalf("%q not in %s's INBOX after %v; log %s:\n%s", token, user, limit, n.logPth, tail(n.logPth))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestMailAcrossOutagesAndCrash: alice mails bob while bob's node is down, and bob finds the
// message exactly once after his node returns; then, with bob's node down again, alice's node
// is killed with SIGKILL right after the SMTP 250, and bob still gets that message when his
// node returns. Mail for an outside address waits in the outbox; bob's node also serves
// implicit-TLS IMAP. At the end no node's files hold the plaintext of the messages.
func TestMailAcrossOutagesAndCrash(t *testing.T) {
	seed := testSeed(t)
	r := newRing(t, seed, 5, "alice", "bob")
	alice, bob := "alice@e2e.example", "bob@e2e.example"
	imaps := freePorts(t, 1)[0]
	r.home[bob].extra = []string{"--imaps", imaps}
	for _, n := range r.nodes {
		n.start()
	}
	waitReady(t, r.nodes...)
	begin := time.Now()
	// Both users log in once: their keys open and their logs are created in the ring.
	countInbox(t, r, bob, "nothing")
	countInbox(t, r, alice, "nothing")
	t.Logf("alice and bob online after %v", time.Since(begin).Round(time.Millisecond))

	// 1. Bob's node is down while alice sends.
	bobNode := r.home[bob]
	bobNode.stop(syscall.SIGTERM)
	tok1 := "offline-" + r.marker
	sent := time.Now()
	send(t, r, alice, bob, "while you were away", "body "+r.marker+" "+tok1)
	t.Logf("sent to offline bob: 250 after %v", time.Since(sent).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	bobNode.start()
	waitReady(t, bobNode)
	took := waitInbox(t, r, bob, tok1, 60*time.Second)
	t.Logf("bob's node back: message in INBOX after %v", took.Round(time.Millisecond))
	// The holders' later offers and re-pushes must not file it again.
	time.Sleep(5 * time.Second)
	if got := countInbox(t, r, bob, tok1); got != 1 {
		t.Fatalf("after the holders' retries bob's INBOX holds the message %d times, want 1", got)
	}

	// Mail for an address outside the ring waits in alice's node's outbox for a gateway.
	send(t, r, alice, "carol@elsewhere.example", "to the internet", "outside the ring")
	if st, _ := r.home[alice].status(); st.Mail.Outbox != 1 {
		t.Fatalf("alice's node reports %d messages in its outbox, want 1", st.Mail.Outbox)
	}
	if !strings.Contains(tail(r.home[alice].logPth), "outbox") {
		t.Fatalf("alice's node's log does not say where the outside mail went:\n%s", tail(r.home[alice].logPth))
	}

	// 2. Alice's node dies right after the 250, while bob's node is down too: only the
	// ring's replicas hold the message, and they deliver it when bob's node returns.
	aliceNode := r.home[alice]
	bobNode.stop(syscall.SIGTERM)
	tok2 := "crash-" + r.marker
	send(t, r, alice, bob, "sender crashed", "body "+r.marker+" "+tok2)
	aliceNode.stop(syscall.SIGKILL)
	bobNode.start()
	waitReady(t, bobNode)
	took = waitInbox(t, r, bob, tok2, 60*time.Second)
	t.Logf("alice's node killed after the 250 with bob's node down: in bob's INBOX %v after his node was ready", took.Round(time.Millisecond))

	// Bob's node also serves IMAP with implicit TLS (--imaps); both messages are there.
	if st, _ := r.home[bob].status(); st.Mail.ServersTLS.IMAP != imaps {
		t.Fatalf("bob's node reports implicit-TLS IMAP on %q, want %s", st.Mail.ServersTLS.IMAP, imaps)
	}
	c, err := imapclient.DialTLS(imaps, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatalf("imaps dial %s: %v", imaps, err)
	}
	if got := countOn(t, r, c, bob, r.marker); got != 2 {
		t.Fatalf("over implicit TLS bob's INBOX holds %d messages with the marker, want 2", got)
	}

	// 3. No node's files hold the plaintext.
	for _, n := range r.nodes {
		n.stop(syscall.SIGTERM)
	}
	if hits := r.scanPlaintext(); len(hits) > 0 {
		t.Fatalf("plaintext marker %q found in %v", r.marker, hits)
	}
	t.Logf("whole run %v", time.Since(begin).Round(time.Millisecond))
}

// trySend is send without failing the test: the SMTP error, if any.
func trySend(r *ring, from, to, subject, body string) error {
	n := r.home[from]
	c, err := smtp.Dial(n.smtp)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(n.smtp)
	if err := c.Auth(smtp.PlainAuth("", from, r.pw[from], host)); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n", from, to, subject, body)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// sendEventually retries a submission answered 4xx (a temporary failure, as an MTA would)
// until limit.
func sendEventually(t *testing.T, r *ring, from, to, subject, body string, limit time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		err := trySend(r, from, to, subject, body)
		if err == nil {
			return
		}
		if !isCode(err, 4) || time.Since(start) > limit {
			n := r.home[from]
			t.Fatalf("send %s -> %s: %v\nlog %s:\n%s", from, to, err, n.logPth, tail(n.logPth))
		}
		time.Sleep(time.Second)
	}
}

// isCode reports whether err is an SMTP reply of code (or, for 1-digit codes, of that class).
func isCode(err error, code int) bool {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return false
	}
	if code < 10 {
		return te.Code/100 == code
	}
	return te.Code == code
}
