package diskfull

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/test/cluster"
)

// sizeMB is each node's filesystem: room for a node's store, logs and keys with a few hundred
// small messages, and little enough RAM when filled.
const sizeMB = 32

// sent is one submission and its outcome.
type sent struct {
	token string
	phase string
	out   outcome
	err   error
	took  time.Duration
}

// workload submits alice -> bob continuously, one at a time, each with a unique token, until
// stop; the phase it records for each is whatever phase() says when the submission starts.
type workload struct {
	mu    sync.Mutex
	phase string
	log   []sent
}

func (w *workload) setPhase(p string) {
	w.mu.Lock()
	w.phase = p
	w.mu.Unlock()
}

func (w *workload) run(from *user, to string, prefix string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		phase := w.phase
		w.mu.Unlock()
		tok := fmt.Sprintf("%s-%04d", prefix, i)
		start := time.Now()
		out, err := submit(from, to, "disk "+phase+" "+tok, "token "+tok+"\r\nphase "+phase, 30*time.Second)
		w.mu.Lock()
		w.log = append(w.log, sent{token: tok, phase: phase, out: out, err: err, took: time.Since(start)})
		w.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor waits until phase has at least n submissions with outcome o.
func (w *workload) waitFor(t *testing.T, phase string, o outcome, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := 0
		w.mu.Lock()
		for _, s := range w.log {
			if s.phase == phase && s.out == o {
				got++
			}
		}
		w.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("phase %s: %d submissions answered %s after %v, want %d; so far:%s", phase, got, o, limit, n, w.byPhase())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// acked returns the tokens answered 250.
func (w *workload) acked() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var toks []string
	for _, s := range w.log {
		if s.out == acked {
			toks = append(toks, s.token)
		}
	}
	return toks
}

// byPhase counts outcomes per phase, in the order phases appeared.
func (w *workload) byPhase() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var order []string
	counts := map[string]map[outcome]int{}
	for _, s := range w.log {
		if counts[s.phase] == nil {
			counts[s.phase] = map[outcome]int{}
			order = append(order, s.phase)
		}
		counts[s.phase][s.out]++
	}
	var b strings.Builder
	for _, p := range order {
		fmt.Fprintf(&b, " %s:", p)
		for o := acked; o <= refusedTx; o++ {
			if c := counts[p][o]; c > 0 {
				fmt.Fprintf(&b, " %s=%d", o, c)
			}
		}
	}
	return b.String()
}

// TestDiskFull runs a ring of three nodes (k = 3: each holds a replica of everything), each on
// its own small filesystem, while alice (on node2) mails bob (on node3) without pause:
//
//  1. node2's filesystem fills (alice's node: it serves her SMTP and is a replica). The other
//     two replicas are a quorum, so her mail is still acknowledged; mail for the outbox (an
//     address outside the ring), which node2 must store itself, is answered 4xx at once.
//     node2 says so in "epost status" and its log.
//  2. node3's fills too (bob's node, the other replica): no quorum, so submissions are
//     answered 4xx (after --submit-timeout), and bob's node cannot file.
//  3. both fillers go: without a restart, submissions get 250 again and bob's node files
//     what was waiting.
//  4. both nodes are killed (SIGKILL) and started again: their stores open intact, and bob's
//     INBOX is what it was.
//
// The audit: every 250'd token in bob's INBOX exactly once, before and after the restart.
func TestDiskFull(t *testing.T) {
	seed := cluster.Seed(t)
	root := t.TempDir()
	ringDir := filepath.Join(root, "ring")
	cluster.Run(t, "ring", "init", "--dir", ringDir, "--name", "diskfull", "--domain", "diskfull.example")
	c := cluster.Attach(t, root, ringDir)
	c.Seed, c.RunFlags = seed, runFlags

	ports := cluster.FreePorts(t, 3+2*3)
	users := map[string]*user{}
	for i := range 3 {
		name := fmt.Sprintf("node%d", i+1)
		smallFS(t, filepath.Join(root, name), sizeMB)
		mail := []string{"--imap", "", "--smtp", "", "--pop3", ""}
		if i > 0 {
			p := ports[3+3*(i-1):]
			mail = []string{"--imap", p[0], "--smtp", p[1], "--pop3", p[2]}
		}
		nd := c.AddNode(name, ports[i], i > 0, mail...)
		if i > 0 {
			u := &user{addr: []string{"", "alice", "bob"}[i] + "@diskfull.example", pw: fmt.Sprintf("pw-%d-%d", i, seed%100000),
				imap: mail[1], smtp: mail[3], node: nd}
			pwFile := filepath.Join(root, fmt.Sprintf("pw%d", i))
			if err := os.WriteFile(pwFile, []byte(u.pw+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cluster.Run(t, "user", "add", "--ring", ringDir, "--node", nd.Dir, "--address", u.addr, "--password-file", pwFile)
			users[u.addr] = u
		}
	}
	alice, bob := users["alice@diskfull.example"], users["bob@diskfull.example"]
	t.Cleanup(func() {
		// The logs live beside the unmounted filesystems in the test's temporary directory,
		// which goes away: keep them when the test fails.
		if !t.Failed() {
			return
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("epost-TestDiskFull-%d", seed))
		if os.MkdirAll(dir, 0o755) == nil {
			for _, n := range c.Nodes {
				_ = os.WriteFile(filepath.Join(dir, n.Name+".log"), []byte(n.Log()), 0o644)
			}
			t.Logf("node logs kept in %s", dir)
		}
	})
	for _, n := range c.Nodes {
		n.Start()
	}
	c.WaitConverged(c.Nodes, 60*time.Second)
	mustLogin(t, alice)
	mustLogin(t, bob)
	for _, n := range c.Nodes {
		t.Logf("%s: %d KiB used of %d MiB", n.Name, (int64(sizeMB)<<20-freeBytes(n.Dir))>>10, sizeMB)
	}

	prefix := fmt.Sprintf("tok%d", seed%1000000)
	tokRE := regexp.MustCompile(prefix + `-[0-9]{4}`)
	w := &workload{phase: "normal"}
	stop, done := make(chan struct{}), make(chan struct{})
	go w.run(alice, bob.addr, prefix, stop, done)
	stopped := false
	stopWorkload := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer stopWorkload()

	w.waitFor(t, "normal", acked, 10, 30*time.Second)

	// 1. Alice's node's disk fills: her mail is still acknowledged (node1 and node3 are a
	// quorum), mail for the outbox is refused with 4xx, and node2 says so.
	filler2, n2 := fill(t, alice.node.Dir)
	w.setPhase("node2-full")
	t.Logf("node2's filesystem filled (%d KiB filler)", n2>>10)
	out, err := submit(alice, "carol@elsewhere.example", "outbox while full", "to the outbox", 30*time.Second)
	if out != tempFail {
		t.Errorf("mail for the outbox while node2's disk is full: %s (%v), want 4xx", out, err)
	}
	waitTrouble(t, alice.node, "full")
	alice.node.WaitLog(10*time.Second, "disk trouble")
	statusText := cluster.Run(t, "status", "--dir", alice.node.Dir)
	if !strings.Contains(statusText, "disk      FULL") {
		t.Errorf("epost status of node2 with a full disk does not say so:\n%s", statusText)
	}
	t.Logf("epost status on node2 says:\n%s", grepLine(statusText, "disk "))
	w.waitFor(t, "node2-full", acked, 5, 30*time.Second)

	// 2. Bob's node's disk fills too: no quorum, so submissions are refused with 4xx.
	filler3, n3 := fill(t, bob.node.Dir)
	w.setPhase("both-full")
	t.Logf("node3's filesystem filled (%d KiB filler)", n3>>10)
	waitTrouble(t, bob.node, "full")
	w.waitFor(t, "both-full", tempFail, 2, 40*time.Second)

	// 3. Space returns: without a restart, mail is acknowledged and filed again.
	os.Remove(filler2)
	os.Remove(filler3)
	w.setPhase("recovered")
	w.waitFor(t, "recovered", acked, 10, 40*time.Second)
	stopWorkload()
	t.Logf("outcomes by phase:%s", w.byPhase())
	for _, s := range w.log {
		if s.out != acked && s.out != tempFail {
			t.Errorf("%s (%s): %s after %v: %v; want 250 or 4xx", s.token, s.phase, s.out, s.took.Round(time.Millisecond), s.err)
		}
	}
	want := w.acked()
	audit(t, bob, tokRE, "after recovery", len(w.log), want)
	for _, n := range []*cluster.Node{alice.node, bob.node} {
		waitTrouble(t, n, "")
	}

	// 4. Crash both nodes that were full and start them again: their stores open intact, bob's
	// INBOX is what it was, and mail flows.
	marks := map[*cluster.Node]int{}
	for _, n := range []*cluster.Node{alice.node, bob.node} {
		n.Kill9()
		marks[n] = len(n.Log())
		n.Start()
	}
	c.WaitConverged(c.Nodes, 60*time.Second)
	for _, n := range []*cluster.Node{alice.node, bob.node} {
		l := logSince(n, marks[n])
		t.Logf("%s restarted: %s", n.Name, strings.TrimSpace(grepLine(l, "object store repaired")))
		for _, re := range []string{`damaged=[1-9]`, `damaged object`, `(?i)corrupt`, `(?i)cannot open`, `panic`} {
			if m := regexp.MustCompile(re).FindString(l); m != "" {
				t.Errorf("%s after its restart logs %q:\n%s", n.Name, m, grepLine(l, m))
			}
		}
	}
	mustLogin(t, alice)
	after := prefix + "-9999"
	if out, err := submit(alice, bob.addr, "after the restart", "token "+after, 60*time.Second); out != acked {
		t.Fatalf("submission after the restart: %s (%v)", out, err)
	}
	audit(t, bob, tokRE, "after restart", len(w.log)+1, append(want, after))
	for _, n := range c.Nodes {
		if l := strings.ToLower(n.Log()); strings.Contains(l, "panic") || strings.Contains(l, "fatal error") {
			t.Errorf("%s's log shows a crash:\n%s", n.Name, grepLine(n.Log(), "panic"))
		}
	}
}

// waitTrouble polls n's status until its disk trouble is want ("" for none).
func waitTrouble(t *testing.T, n *cluster.Node, want string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		st, err := n.Status()
		if err == nil && st.Disk.Trouble == want {
			t.Logf("%s: disk trouble %q, %d KiB free, %d failed writes, last: %s", n.Name, want,
				st.Disk.FreeBytes>>10, st.Disk.WriteErrors, st.Disk.LastWriteError)
			return
		}
		if time.Now().After(deadline) {
			var got any = err
			if err == nil {
				got = st.Disk.DiskHealth
			}
			t.Fatalf("%s: disk trouble not %q after 45 s: %+v", n.Name, want, got)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// audit reads bob's INBOX until every acknowledged token is there (or a minute passes), prints
// the audit line, and fails the test for every acknowledged token lost or filed twice.
func audit(t *testing.T, bob *user, re *regexp.Regexp, when string, submitted int, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]int
	var err error
	for {
		got, err = readTokens(bob, re)
		missing := 0
		for _, tok := range want {
			if got[tok] == 0 {
				missing++
			}
		}
		if err == nil && missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("%s: bob's INBOX: %v\n%s", when, err, bob.node.LogTail(30))
	}
	var lost, dups []string
	unacked := 0
	wanted := map[string]bool{}
	for _, tok := range want {
		wanted[tok] = true
		switch got[tok] {
		case 0:
			lost = append(lost, tok)
		case 1:
		default:
			dups = append(dups, tok)
		}
	}
	for tok, c := range got {
		if !wanted[tok] {
			unacked++
			if c > 1 {
				dups = append(dups, tok)
			}
		}
	}
	cluster.Audit(t, fmt.Sprintf("audit %s: submitted=%d acknowledged=%d filed=%d duplicates=%d lost=%d (filed though answered 4xx: %d)",
		when, submitted, len(want), len(got), len(dups), len(lost), unacked))
	if len(lost)+len(dups) > 0 {
		t.Errorf("%s: acknowledged but lost: %v; filed more than once: %v", when, lost, dups)
	}
}

// grepLine returns the lines of s that contain sub (case-insensitive).
func grepLine(s, sub string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), strings.ToLower(sub)) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
