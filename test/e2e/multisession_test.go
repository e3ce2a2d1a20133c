package e2e

import (
	"testing"
	"time"

	"epost/test/imapcheck"
)

// TestMultiSessionRing: the multi-session consistency checker (test/imapcheck) against a real
// node's IMAP server over the POST-backed mail store: four sessions of bob work on his INBOX
// at once (APPEND, STORE, EXPUNGE, COPY, MOVE, IDLE, ...), and what each was told must agree
// with the server and with the others; nothing appended is lost.
func TestMultiSessionRing(t *testing.T) {
	seed := testSeed(t)
	r := newRing(t, seed, 3, "bob")
	for _, n := range r.nodes {
		n.start()
	}
	waitReady(t, r.nodes...)
	bob := "bob@e2e.example"
	countInbox(t, r, bob, "nothing")
	start := time.Now()
	res := imapcheck.Run(imapcheck.Config{Addr: r.home[bob].imap, User: bob, Password: r.pw[bob],
		Sessions: 4, Ops: 300, Seed: seed})
	t.Logf("%s in %v", res.Summary(), time.Since(start).Round(time.Millisecond))
	for _, e := range res.Errors {
		t.Error(e)
	}
	if res.Failed() {
		t.Fatalf("seed %d: the sessions' views disagree with the node; node log %s:\n%s", seed, r.home[bob].logPth, tail(r.home[bob].logPth))
	}
}
