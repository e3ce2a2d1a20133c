package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"epost/internal/dnstest"
	"epost/internal/mailauth"
)

// mxSend is one SMTP transaction with the gateway's MX as an internet MTA would run it
// (EHLO, STARTTLS when offered, no AUTH); the error says where it stopped.
func mxSend(addr, helo, from string, to []string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// inboxMessages returns the INBOX messages of user that hold token.
func inboxMessages(t *testing.T, r *ring, user, token string) [][]byte {
	t.Helper()
	n := r.home[user]
	c, err := imapclient.DialStartTLS(n.imap, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatalf("imap dial %s: %v", n.imap, err)
	}
	defer c.Close()
	if err := c.Login(user, r.pw[user]).Wait(); err != nil {
		t.Fatalf("imap login %s: %v", user, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	if sel.NumMessages > 0 {
		var seq imap.SeqSet
		seq.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if b := m.FindBodySection(&imap.FetchItemBodySection{}); bytes.Contains(b, []byte(token)) {
				out = append(out, b)
			}
		}
	}
	c.Logout().Wait()
	return out
}

// internetDNS publishes sender.example (SPF for loopback, a DKIM key, DMARC p=reject) and
// bank.example (DMARC p=reject, SPF for another network) and returns the DKIM key.
func internetDNS(dns *dnstest.Server) ed25519.PrivateKey {
	pub, key, _ := ed25519.GenerateKey(nil)
	dns.SetTXT("sender.example", time.Hour, "v=spf1 ip4:127.0.0.0/8 -all")
	dns.SetTXT("sel._domainkey.sender.example", time.Hour, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	dns.SetTXT("_dmarc.sender.example", time.Hour, "v=DMARC1; p=reject")
	dns.SetTXT("bank.example", time.Hour, "v=spf1 ip4:192.0.2.0/24 -all")
	dns.SetTXT("_dmarc.bank.example", time.Hour, "v=DMARC1; p=reject")
	return key
}

func internetMessage(from, to, subject, body string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@%s>\r\n\r\n%s\r\n",
		from, to, subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), from[strings.Index(from, "@")+1:], body))
}

// TestMailFromTheInternet: an MTA of the internet (a go-smtp client) sends to bob through the
// gateway's MX; the 250 comes only once the ring stored it, bob reads it over IMAP once, with
// the gateway's SPF/DKIM/DMARC verdicts in an Authentication-Results field (a forged one
// removed); the same message sent again is not filed twice; an open-relay attempt, an unknown
// user and a forgery of a p=reject domain are refused.
func TestMailFromTheInternet(t *testing.T) {
	seed := testSeed(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	key := internetDNS(dns)
	acme, _ := newFedRing(t, seed, "acme", dns, "", "bob")
	mx := freePorts(t, 1)[0]
	acme.nodes[0].extra = append(acme.nodes[0].extra, "--mx", mx, "--mx-hostname", "mx.acme.example")
	for _, n := range acme.nodes {
		n.start()
	}
	waitReady(t, acme.nodes...)
	bob := "bob@acme.example"
	countInbox(t, acme, bob, "nothing")

	tok := "from-the-internet-" + acme.marker
	msg := internetMessage("Alice <alice@sender.example>", bob, "hello from outside", "body "+tok)
	signed, err := mailauth.Sign(msg, mailauth.SignOptions{Domain: "sender.example", Selector: "sel", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	signed = append([]byte("Authentication-Results: mx.acme.example; dmarc=pass header.from=forged.example\r\n"), signed...)
	// The gateway's identity needs a moment to come online: 451 until then, as for any MTA.
	start := time.Now()
	for {
		err := mxSend(mx, "mta.sender.example", "alice@sender.example", []string{bob}, signed)
		if err == nil {
			break
		}
		if !isCode(err, 4) || time.Since(start) > 90*time.Second {
			t.Fatalf("MX send: %v\ngateway log:\n%s", err, tail(acme.nodes[0].logPth))
		}
		time.Sleep(time.Second)
	}
	t.Logf("first 250 after %v", time.Since(start).Round(time.Millisecond))
	waitInbox(t, acme, bob, tok, 60*time.Second)
	got := inboxMessages(t, acme, bob, tok)
	head := string(got[0][:bytes.Index(got[0], []byte("\r\n\r\n"))])
	for _, want := range []string{"Authentication-Results: mx.acme.example;", "spf=pass", "dkim=pass", "dmarc=pass", "Received: from mta.sender.example ([127.0.0.1])"} {
		if !strings.Contains(head, want) {
			t.Fatalf("bob's copy lacks %q:\n%s", want, head)
		}
	}
	if strings.Contains(head, "forged.example") {
		t.Fatalf("the sender's forged Authentication-Results survived:\n%s", head)
	}

	// The same message again (the MTA lost our 250): still one copy.
	if err := mxSend(mx, "mta.sender.example", "alice@sender.example", []string{bob}, signed); err != nil {
		t.Fatalf("resend: %v", err)
	}
	time.Sleep(3 * time.Second)
	if n := countInbox(t, acme, bob, tok); n != 1 {
		t.Fatalf("after the resend bob has %d copies, want 1", n)
	}

	for _, c := range []struct {
		name, from string
		to         []string
		msg        []byte
		code       int
	}{
		{"open relay", "alice@sender.example", []string{"victim@elsewhere.example"}, msg, 550},
		{"unknown user", "alice@sender.example", []string{"nobody@acme.example"}, msg, 550},
		{"forged p=reject domain", "ceo@bank.example", []string{bob}, internetMessage("CEO <ceo@bank.example>", bob, "wire money", "forged-"+tok), 550},
	} {
		if err := mxSend(mx, "mta.evil.example", c.from, c.to, c.msg); !isCode(err, c.code) {
			t.Fatalf("%s: %v, want %d", c.name, err, c.code)
		}
	}
	if n := countInbox(t, acme, bob, "forged-"+tok); n != 0 {
		t.Fatalf("the forgery reached bob's INBOX")
	}
}
