package partition

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/test/cluster"
)

// runFlags are test/e2e's fast timers, plus a partition-healing round every few seconds
// (production: 5 minutes) so that a healed ring finds itself again within the test's time.
var runFlags = append(slices.Clone(cluster.FastFlags),
	"--heal-interval", "3s",
	"--past-tick", "100ms",
	"--past-request-timeout", "1s",
	"--past-maintenance-interval", "3s",
	"--past-maintenance-delay", "500ms",
	"--past-drop-grace", "1h",
	"--post-holder-delay", "3s",
	"--post-retry-delay", "1s",
	"--post-online-interval", "5s",
)

const (
	domain    = "partition.example"
	nodePort  = "7000"
	imapPort  = "1143"
	smtpPort  = "1587"
	startWait = 90 * time.Second // nine nodes on two shared cores join slowly
)

// pnode is a cluster node in namespace nw.NS(idx), with its mail servers' addresses (empty
// when it serves no user).
type pnode struct {
	*cluster.Node
	idx        int
	imap, smtp string
}

// user is a mail user and the node that holds the user's keys.
type user struct {
	name, addr, pw string
	home           *pnode
}

// pring is a ring of nodes, one per namespace of nw, with users on some of them.
type pring struct {
	t     *testing.T
	c     *cluster.Cluster
	nw    *network
	nodes []*pnode
	users []*user
	seed  uint64
	rng   *rand.Rand
}

// newRing enrolls one node per namespace of nw (node1 founds the ring, the others join
// through it), adds users[name] = node index, starts every node in its namespace and waits
// until every leaf set is exact.
func newRing(t *testing.T, nw *network, users map[string]int) *pring {
	t.Helper()
	root := t.TempDir()
	ringDir := filepath.Join(root, "ring")
	seed := cluster.Seed(t)
	cluster.Run(t, "ring", "init", "--dir", ringDir, "--name", "partition", "--domain", domain, "--leafset", "24")
	c := cluster.Attach(t, root, ringDir)
	c.Seed = seed
	c.RunFlags = slices.Clone(runFlags)
	r := &pring{t: t, c: c, nw: nw, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x9a_57_11))}
	homes := map[int]bool{}
	for _, i := range users {
		homes[i] = true
	}
	for i := range nw.nodes {
		a := nw.Addr(i)
		pn := &pnode{idx: i}
		mail := []string{"--imap", "", "--smtp", "", "--pop3", ""}
		if homes[i] {
			pn.imap, pn.smtp = a+":"+imapPort, a+":"+smtpPort
			mail = []string{"--imap", pn.imap, "--smtp", pn.smtp, "--pop3", ""}
		}
		pn.Node = c.AddNode(fmt.Sprintf("node%d", i+1), a+":"+nodePort, i > 0, mail...)
		pn.Exec = []string{"ip", "netns", "exec", nw.NS(i)}
		r.nodes = append(r.nodes, pn)
	}
	for _, name := range slices.Sorted(maps.Keys(users)) {
		u := &user{name: name, addr: name + "@" + domain, pw: fmt.Sprintf("pw-%s-%d", name, seed%100000), home: r.nodes[users[name]]}
		pwFile := filepath.Join(root, name+".pw")
		if err := os.WriteFile(pwFile, []byte(u.pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cluster.Run(t, "user", "add", "--ring", ringDir, "--node", u.home.Dir, "--address", u.addr, "--password-file", pwFile)
		r.users = append(r.users, u)
	}
	r.keepLogsOnFailure()
	for _, n := range r.nodes {
		n.Start()
	}
	took := c.WaitConverged(c.Nodes, startWait)
	t.Logf("%d nodes up, leaf sets exact after %v", len(r.nodes), took.Round(time.Millisecond))
	return r
}

// keepLogsOnFailure copies the nodes' logs out of the test's temporary directory when the
// test fails (the directory is removed with it), and says where.
func (r *pring) keepLogsOnFailure() {
	r.t.Cleanup(func() {
		if !r.t.Failed() {
			return
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("epost-%s-%d", strings.ReplaceAll(r.t.Name(), "/", "_"), r.seed))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return
		}
		for _, n := range r.nodes {
			_ = os.WriteFile(filepath.Join(dir, n.Name+".log"), []byte(n.Log()), 0o644)
		}
		r.t.Logf("seed %d: node logs kept in %s", r.seed, dir)
	})
}

// leafSetProblems compares each node's leaf set with the one the global truth dictates when
// the nodes of each group see only each other (one group: the whole ring), and describes
// every difference; empty means exact.
func (r *pring) leafSetProblems(groups ...[]int) string {
	var b strings.Builder
	for _, g := range groups {
		var live []ids.ID
		for _, i := range g {
			live = append(live, r.nodes[i].ID)
		}
		for _, i := range g {
			n := r.nodes[i]
			st, err := n.Status()
			if err != nil {
				fmt.Fprintf(&b, "\n  %s: %v", n.Name, err)
				continue
			}
			want := cluster.ExpectedLeafSet(n.ID, live, st.LeafSetSize)
			if got := st.SortedLeafSet(); !st.Ready || !slices.Equal(got, want) {
				fmt.Fprintf(&b, "\n  %s (%s): ready=%v phase=%s leaf set %s, want %s", n.Name, n.ID.Short(),
					st.Ready, st.Phase, cluster.ShortIDs(got), cluster.ShortIDs(want))
			}
		}
	}
	return b.String()
}

// waitLeafSets polls leafSetProblems until it is empty or timeout has passed; it returns
// how long that took and the last problems (empty: exact).
func (r *pring) waitLeafSets(timeout time.Duration, groups ...[]int) (time.Duration, string) {
	start := time.Now()
	for {
		p := r.leafSetProblems(groups...)
		if p == "" || time.Since(start) > timeout {
			return time.Since(start), p
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// forkLines counts the lines in which nodes reported a forked folder log ("post: FORK").
func (r *pring) forkLines() (int, []string) {
	var lines []string
	for _, n := range r.nodes {
		for _, l := range strings.Split(n.Log(), "\n") {
			if strings.Contains(l, "FORK") {
				lines = append(lines, n.Name+": "+l)
			}
		}
	}
	return len(lines), lines
}

// all is every node index.
func (r *pring) all() []int {
	var out []int
	for i := range r.nodes {
		out = append(out, i)
	}
	return out
}
