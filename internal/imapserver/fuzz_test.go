package imapserver

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// fuzzServer is a server with one user and a folder with messages, for the
// session fuzz tests.
func fuzzServer(f *testing.F) *testServer {
	ts := newTestServer(f, Config{CommandTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second})
	inbox, _ := ts.store.Folder("INBOX")
	for _, raw := range []string{
		"Subject: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"Subject: b\r\n\r\nbody", "garbage",
	} {
		inbox.Append([]byte(raw), []imap.Flag{"kw"}, time.Time{})
	}
	return ts
}

// runFuzzConn sends prefix, the fuzz input, then NOOP and LOGOUT, reads
// until the server closes (the client side gives up after a second: a
// literal may wait for bytes never sent), and fails if anything panicked
// (the engine recovers panics, the front layer's included, and logs them).
func runFuzzConn(t *testing.T, ts *testServer, prefix string, cmd []byte) {
	client, server := net.Pipe()
	ts.ln.conns <- loopbackConn{server}
	defer client.Close()
	client.SetDeadline(time.Now().Add(time.Second))
	go func() {
		io.WriteString(client, prefix)
		client.Write(cmd)
		io.WriteString(client, "\r\nz1 NOOP\r\nz2 LOGOUT\r\n")
	}()
	io.ReadAll(client)
	if strings.Contains(ts.logs.String(), "panic") {
		t.Fatalf("panic for %q:\n%s", cmd, ts.logs.String())
	}
}

// FuzzSession sends arbitrary command bytes after a login, in a selected
// folder with messages. It covers the front layer (ID, literals, unknown
// commands) and the session code behind every command.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"a ID (\"name\" \"x\")", "a ID NIL", "a ID (\"k\")", "a ID (\"k\" {3}\r\nabc)", "a ID ({1+}\r\nk NIL)",
		"a FETCH 1:* (FLAGS)", "a UID FETCH * (BODY[1.2.HEADER.FIELDS (FROM)]<5.10>)",
		"a STORE 1 +FLAGS (\\Seen kw)", "a UID SEARCH KEYWORD kw all 1",
		"a SEARCH OR NOT BODY x HEADER y \"\" 2:*", "a SELECT INBOX", "a STATUS INBOX (SIZE RECENT)",
		"a MOVE 1:* Trash", "a UID EXPUNGE 1:3", "a COPY $ INBOX", "a SEARCH RETURN (SAVE) ALL", "a APPEND INBOX {3+}\r\nabc",
		"a APPEND INBOX {300000000+}\r\nabc", "a LIST \"\" * RETURN (STATUS (MESSAGES))", "a RENAME INBOX x",
		"a FETCH 4294967295 BINARY[1]", "a IDLE\r\nDONE", "a UNAUTHENTICATE\r\nb FOO\r\nc LOGIN {1}\r\nu {1}\r\np",
	} {
		f.Add([]byte(seed))
	}
	ts := fuzzServer(f)
	f.Fuzz(func(t *testing.T, cmd []byte) {
		runFuzzConn(t, ts, "l LOGIN u p\r\ns SELECT INBOX\r\n", cmd)
	})
}

// FuzzBeforeLogin sends arbitrary bytes before login, where the front layer
// decides what is a command (unknown commands, ID, literals, AUTHENTICATE).
func FuzzBeforeLogin(f *testing.F) {
	for _, seed := range []string{
		"a FOO\r\nb BAR {3}\r\nc BAZ {3+}\r\nabc\r\n", "\r\n\r\n\r\n\r\n", "a ID NIL", "a ID (\"x\" {2000+}\r\n",
		"a AUTHENTICATE PLAIN\r\nAHUAcA==", "a AUTHENTICATE PLAIN\r\n*", "a LOGIN {5000}\r\n", "a LOGIN {5000+}\r\nxyz",
		"a STARTTLS", "a LOGIN {1+}\r\nu {1+}\r\np", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	ts := fuzzServer(f)
	f.Fuzz(func(t *testing.T, cmd []byte) {
		runFuzzConn(t, ts, "", cmd)
	})
}

// FuzzParseIDArgs: the ID argument parser never panics, and accepts what it
// formats itself.
func FuzzParseIDArgs(f *testing.F) {
	for _, seed := range []string{" NIL", ` ("name" "x")`, ` ("a" NIL "b" "c\"d")`, ` (`, ` ("\`, " ()"} {
		f.Add(seed, "")
	}
	f.Add(` ("k" `, "literal value")
	f.Fuzz(func(t *testing.T, text, lit string) {
		parseIDArgs([]cmdPiece{{text: []byte(text)}})
		parseIDArgs([]cmdPiece{{text: []byte(text)}, {text: []byte(lit), isLit: true}, {text: []byte(")")}})
		if _, err := parseIDArgs([]cmdPiece{{text: []byte(" " + idParamsList(map[string]string{text: lit}))}}); err != nil && !strings.ContainsAny(text+lit, "\r\n\x00") {
			t.Errorf("own ID list %q refused: %v", idParamsList(map[string]string{text: lit}), err)
		}
	})
}

// FuzzRespScanner: the output scanner gives the same bytes however the
// engine's writes are split, and passes literal data through untouched.
func FuzzRespScanner(f *testing.F) {
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n* 1 FETCH (BODY[] {26}\r\n* CAPABILITY IMAP4rev1\r\n)\r\na OK done\r\n"), uint8(7))
	f.Add([]byte("* CAPABILITY A B\r\n+ idling\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		pol := capPolicy{startTLS: true, loginDisabled: true}
		onLine := func(l []byte) []byte { return rewriteCaps(l, pol) }
		var whole respScanner
		want := whole.feed(nil, data, onLine)
		var parts respScanner
		var got []byte
		step := int(split)%64 + 1
		for i := 0; i < len(data); i += step {
			got = parts.feed(got, data[i:min(i+step, len(data))], onLine)
		}
		if !bytes.Equal(got, want) && len(data) < maxHeldLine {
			t.Errorf("split by %d: %q, whole: %q", step, got, want)
		}
	})
}
