package imap_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func clientTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } // self-signed test cert

// TestTLS logs in over implicit TLS and over STARTTLS, with plaintext login
// forbidden (AllowPlaintextAuth false does not matter on loopback, so the
// policy itself is tested in TestPlaintextPolicy).
func TestTLS(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		cfg := selfSigned(t)
		implicit := start(t, engine, serverConfig{TLS: cfg}, true)
		c, err := imapclient.DialTLS(implicit.addr, &imapclient.Options{TLSConfig: clientTLS()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(testUser, testPassword).Wait(); err != nil {
			t.Fatalf("login over TLS: %v", err)
		}
		c.Close()

		plain := start(t, engine, serverConfig{TLS: cfg}, false)
		c, err = imapclient.DialStartTLS(plain.addr, &imapclient.Options{TLSConfig: clientTLS()})
		if err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		if err := c.Login(testUser, testPassword).Wait(); err != nil {
			t.Fatalf("login after STARTTLS: %v", err)
		}
		c.Close()
	})
}

// TestPlaintextPolicy: a connection that is neither loopback nor TLS gets
// LOGINDISABLED and a refused LOGIN (RFC 9051 section 6.2.3). The server
// sees the client through a net.Pipe whose address is not loopback.
func TestPlaintextPolicy(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		for _, allow := range []bool{false, true} {
			s := start(t, engine, serverConfig{AllowPlaintextAuth: allow}, false)
			ln := newPipeListener()
			go s.srv.Serve(ln)
			conn := ln.dial()
			r := bufio.NewReader(conn)
			greeting, _ := r.ReadString('\n')
			if got := strings.Contains(greeting, "LOGINDISABLED"); got == allow {
				t.Errorf("allow=%v: greeting %q", allow, greeting)
			}
			conn.Write([]byte("a LOGIN \"" + testUser + "\" \"" + testPassword + "\"\r\n"))
			resp, _ := r.ReadString('\n')
			if got := strings.HasPrefix(resp, "a OK"); got != allow {
				t.Errorf("allow=%v: login reply %q", allow, resp)
			}
			conn.Close()
		}
	})
}

// TestMaxConns: connections beyond the limit get BYE at once.
func TestMaxConns(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		s := start(t, engine, serverConfig{MaxConns: 2}, false)
		var conns []net.Conn
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
			line, _ := bufio.NewReader(c).ReadString('\n')
			if want := i < 2; strings.HasPrefix(line, "* OK") != want {
				t.Errorf("conn %d: %q", i, line)
			}
		}
	})
}

// TestIdleTimeout: a silent client is dropped after CommandTimeout.
func TestIdleTimeout(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		s := start(t, engine, serverConfig{CommandTimeout: 200 * time.Millisecond}, false)
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		r.ReadString('\n')
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := r.ReadString('\n'); err == nil {
			// a BYE line is fine too; the connection must then close
			_, err = r.ReadString('\n')
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("silent connection kept for %v", d)
		}
	})
}

// TestAppendLimit: an APPEND over the limit gets NO [TOOBIG]. With LITERAL+
// the client sends the message anyway: it is dropped, never parsed as
// commands, and the session goes on; a LITERAL+ literal over 1 MiB ends the
// connection instead (RFC 7888 section 4).
func TestAppendLimit(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		s := start(t, engine, serverConfig{AppendLimit: 1000}, false)
		c, err := imapclient.DialInsecure(s.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(testUser, testPassword).Wait(); err != nil {
			t.Fatal(err)
		}
		if !c.Caps().Has("APPENDLIMIT=1000") {
			t.Errorf("caps %v", c.Caps())
		}
		cmd := c.Append("INBOX", 2000, nil)
		cmd.Write(make([]byte, 2000))
		cmd.Close()
		if _, err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "TOOBIG") {
			t.Errorf("oversized append: %v", err)
		}
		if err := c.Noop().Wait(); err != nil {
			t.Errorf("session after refused append: %v", err)
		}

		raw, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(raw)
		r.ReadString('\n')
		raw.Write([]byte("a LOGIN \"" + testUser + "\" \"" + testPassword + "\"\r\n"))
		r.ReadString('\n')
		// Synchronizing: refused before the client sends the message.
		raw.Write([]byte("s APPEND INBOX {2000}\r\n"))
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "s NO [TOOBIG]") {
			t.Errorf("synchronizing literal over the limit: %q", line)
		}
		raw.Write([]byte("b APPEND INBOX {2000+}\r\n" + strings.Repeat("c NOOP\r\n", 250) + "\r\nd NOOP\r\n"))
		var got string
		for !strings.HasPrefix(got, "d ") {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("LITERAL+ overflow: %v after %q", err, got)
			}
			if strings.HasPrefix(line, "b ") || strings.HasPrefix(line, "c ") || strings.HasPrefix(line, "d ") {
				got = line + got
			}
		}
		if !strings.Contains(got, "b NO [TOOBIG]") || strings.Contains(got, "c OK") || !strings.HasPrefix(got, "d OK") {
			t.Errorf("LITERAL+ overflow: %q", got)
		}

		go raw.Write([]byte("e APPEND INBOX {2000000+}\r\n" + strings.Repeat("f NOOP\r\n", 1000)))
		var rest []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			rest = append(rest, line)
		}
		all := strings.Join(rest, "")
		if !strings.Contains(all, "e NO [TOOBIG]") || !strings.Contains(all, "* BYE") || strings.Contains(all, "f OK") {
			t.Errorf("huge LITERAL+ literal: %q", all)
		}
	})
}

// TestStartTLSPolicy: a remote plaintext client is offered STARTTLS and
// LOGINDISABLED, and is refused LOGIN; after STARTTLS it may log in.
func TestStartTLSPolicy(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		s := start(t, engine, serverConfig{TLS: selfSigned(t)}, false)
		ln := newPipeListener()
		go s.srv.Serve(ln)
		conn := ln.dial()
		defer conn.Close()
		r := bufio.NewReader(conn)
		greeting, _ := r.ReadString('\n')
		for _, want := range []string{"STARTTLS", "LOGINDISABLED", " ID"} {
			if !strings.Contains(greeting, want) {
				t.Errorf("greeting lacks %s: %q", want, greeting)
			}
		}
		if strings.Contains(greeting, "AUTH=") {
			t.Errorf("greeting offers AUTH: %q", greeting)
		}
		io.WriteString(conn, "a LOGIN \""+testUser+"\" \""+testPassword+"\"\r\n")
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "a NO [PRIVACYREQUIRED]") {
			t.Errorf("plaintext login: %q", line)
		}
		io.WriteString(conn, "b STARTTLS\r\n")
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "b OK") {
			t.Fatalf("STARTTLS: %q", line)
		}
		tc := tls.Client(conn, clientTLS())
		r = bufio.NewReader(tc)
		io.WriteString(tc, "c CAPABILITY\r\n")
		caps, _ := r.ReadString('\n')
		r.ReadString('\n')
		if !strings.Contains(caps, "AUTH=PLAIN") || strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "LOGINDISABLED") {
			t.Errorf("capabilities over TLS: %q", caps)
		}
		io.WriteString(tc, "d LOGIN \""+testUser+"\" \""+testPassword+"\"\r\n")
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "d OK") {
			t.Errorf("login over STARTTLS: %q", line)
		}
	})
}

// TestGoClientRoundTrip checks go-imap's own client sees the same thing as
// imaplib: APPEND, FETCH of the parse cache, and IDLE-free polling.
func TestGoClientRoundTrip(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		s := start(t, engine, serverConfig{}, false)
		c, err := imapclient.DialInsecure(s.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(testUser, testPassword).Wait(); err != nil {
			t.Fatal(err)
		}
		raw := []byte("Subject: hello\r\nFrom: a@example.org\r\n\r\nbody\r\n")
		cmd := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{"$Kw"}})
		cmd.Write(raw)
		cmd.Close()
		ad, err := cmd.Wait()
		if err != nil || ad.UID != 1 {
			t.Fatalf("append %+v %v", ad, err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
			Envelope: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("fetch %v %v", msgs, err)
		}
		m := msgs[0]
		if m.Envelope.Subject != "hello" || !slices.Contains(m.Flags, "$Kw") || string(m.FindBodySection(&imap.FetchItemBodySection{})) != string(raw) {
			t.Errorf("fetched %+v", m)
		}
	})
}

// TestOwnEngineGoClient: go-imap's client, a parser that is not ours, reads what the node's own
// engine (internal/imapserver) writes: APPEND, SELECT, FETCH with ENVELOPE and BODYSTRUCTURE of a
// multipart message, STORE, MOVE and EXPUNGE.
func TestOwnEngineGoClient(t *testing.T) {
	c, err := imapclient.DialInsecure(startOwnEngine(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	raw := []byte("Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: Ann <ann@example.org>\r\nTo: bob@example.net, Carol <carol@example.net>\r\n" +
		"Message-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n" +
		"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--zz\r\nContent-Type: application/pdf; name=a.pdf\r\n" +
		"Content-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--zz--\r\n")
	cmd := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{"$Kw"}})
	cmd.Write(raw)
	cmd.Close()
	if ad, err := cmd.Wait(); err != nil || ad.UID != 1 {
		t.Fatalf("append %+v %v", ad, err)
	}
	if sd, err := c.Select("INBOX", nil).Wait(); err != nil || sd.NumMessages != 1 {
		t.Fatalf("select %+v %v", sd, err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Flags: true, Envelope: true, RFC822Size: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch %v %v", msgs, err)
	}
	m := msgs[0]
	if m.Envelope == nil || m.Envelope.Subject != "café" || len(m.Envelope.To) != 2 || m.Envelope.To[1].Name != "Carol" || m.Envelope.MessageID != "m1@example.org" {
		t.Errorf("envelope %+v", m.Envelope)
	}
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || len(mp.Children) != 2 || mp.Subtype != "MIXED" {
		t.Fatalf("bodystructure %#v", m.BodyStructure)
	}
	if p, ok := mp.Children[1].(*imap.BodyStructureSinglePart); !ok || p.Subtype != "PDF" || p.Disposition() == nil || p.Disposition().Params["filename"] != "a.pdf" {
		t.Errorf("second part %#v", mp.Children[1])
	}
	if string(m.FindBodySection(&imap.FetchItemBodySection{})) != string(raw) || m.RFC822Size != int64(len(raw)) || m.UID != 1 || !slices.Contains(m.Flags, "$Kw") {
		t.Errorf("fetched uid %d size %d flags %v", m.UID, m.RFC822Size, m.Flags)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Old", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if md, err := c.Move(imap.SeqSetNum(1), "Old").Wait(); err != nil || md.UIDValidity == 0 {
		t.Fatalf("move %+v %v", md, err)
	}
	if st, err := c.Status("Old", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
}
