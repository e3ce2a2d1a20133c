package imap_test

import (
	"os"
	"testing"

	"epost/test/cluster"
	"epost/test/imapcheck"
)

// TestMultiSession: four sessions of one user work on one INBOX at once with random APPEND,
// STORE, EXPUNGE, UID EXPUNGE, COPY, MOVE, NOOP, IDLE, SEARCH and FETCH, and the checker
// (test/imapcheck) holds the node's engine to what each session was told: UIDs stable and
// ascending, sequence numbers shifted only by EXPUNGEs sent, flags announced, nothing appended
// lost, each session's own keyword where its last STORE left it.
func TestMultiSession(t *testing.T) {
	seed := cluster.Seed(t)
	s := start(t, "imapserver", serverConfig{}, false)
	cfg := imapcheck.Config{Addr: s.addr, User: testUser, Password: testPassword, Sessions: 4, Ops: 300, Seed: seed}
	if p := os.Getenv("IMAPCHECK_TRACE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cfg.Trace = f
	}
	res := imapcheck.Run(cfg)
	t.Log(res.Summary())
	for _, e := range res.Errors {
		t.Error(e)
	}
	if res.Failed() {
		t.Fatalf("seed %d: the sessions' views disagree with the server (rerun with EPOST_TEST_SEED=%d)", seed, seed)
	}
}
