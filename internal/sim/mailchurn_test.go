package sim

import (
	"bytes"
	"testing"
	"time"
)

// The churn scenario of `epost sim mail` at a small scale (issue 11): nodes without users
// churn (restarts and replacements), users' nodes have process restarts during and after the
// sends, recipients create folders, copy and flag messages through the mail store, and after
// a final restart of every user's node the audit finds every accepted message in its INBOX
// exactly once and every acknowledged folder, copy and flag in place, with no fork met.
func TestMailChurnRestartsAudit(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		cfg := MailConfig{Nodes: 60, Users: 10, Messages: 400, Offline: 0.3, Seed: seed,
			Churn: 10 * time.Minute, ChurnRestart: 0.5, Restarts: 10, FolderOps: 100}
		var out bytes.Buffer
		res, err := RunMail(cfg, &out, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		last := res[len(res)-1]
		a := last.Audit
		switch {
		case a == nil:
			t.Fatalf("seed %d: no audit in the final phase:\n%s", seed, out.String())
		case last.Lost != 0 || last.Duplicates != 0 || a.FoldersLost != 0 || a.CopiesLost != 0 || a.FlagsLost != 0 ||
			a.PostForks+a.PastForks != 0 || a.Unopened != 0 || last.Leaks != 0:
			t.Fatalf("seed %d: the audit found losses:\n%s", seed, out.String())
		case a.Restarts != cfg.Restarts || a.ChurnSessions == 0 || a.Folders == 0 || a.Copies == 0 || a.Flags == 0:
			t.Fatalf("seed %d: the scenario did not exercise what it should:\n%s", seed, out.String())
		}
		t.Logf("seed %d: %s", seed, last)
		if seed == 1 {
			var again bytes.Buffer
			if _, err := RunMail(cfg, &again, nil); err != nil {
				t.Fatalf("seed %d, second run: %v", seed, err)
			}
			if again.String() != out.String() {
				t.Fatalf("seed %d: two runs differ:\n%s\n%s", seed, out.String(), again.String())
			}
		}
	}
}
