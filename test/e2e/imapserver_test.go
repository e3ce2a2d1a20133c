package e2e

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOwnIMAPEngine: a node serves IMAP with its own engine (internal/imapserver, issue 15) by
// default, over the real mail store: mail sent over SMTP is read over IMAP (STARTTLS, go-imap's
// client), and Python's imaplib runs its flows of test/imap against the node.
func TestOwnIMAPEngine(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found in PATH")
	}
	seed := testSeed(t)
	r := newRing(t, seed, 3, "alice", "bob")
	bob := "bob@e2e.example"
	for _, n := range r.nodes {
		n.start()
	}
	waitReady(t, r.nodes...)
	if g := imapGreeting(t, r.home[bob].imap); !strings.Contains(g, "epost IMAP ready") {
		t.Fatalf("bob's node does not greet with its own engine (internal/imapserver): %q", g)
	}
	countInbox(t, r, bob, "nothing")
	sendEventually(t, r, "alice@e2e.example", bob, "own engine", "body "+r.marker, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for countInbox(t, r, bob, r.marker) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("bob's IMAP (imapserver) does not show the message once")
		}
		time.Sleep(500 * time.Millisecond)
	}
	host, port, _ := net.SplitHostPort(r.home[bob].imap)
	script, _ := filepath.Abs("../imap/testdata/client.py")
	for _, name := range []string{"login_list", "append_fetch", "store_copy_move_expunge", "search", "idle", "recent"} {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		out, err := exec.CommandContext(ctx, py, script, host, port, bob, r.pw[bob], name).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "ok "+name) {
			t.Errorf("imaplib %s against the node's own engine: %v\n%s\nnode log %s:\n%s", name, err, out, r.home[bob].logPth, tail(r.home[bob].logPth))
		}
	}
}

// imapGreeting is the first line an IMAP server at addr sends.
func imapGreeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("IMAP greeting from %s: %v", addr, err)
	}
	return line
}
