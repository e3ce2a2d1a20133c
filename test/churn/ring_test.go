package churn

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/test/cluster"
)

// runFlags are test/e2e's fast timers: joins, failure detection, PAST maintenance and the
// holders' pushes take seconds. The drop grace stays at an hour, as in production: a node
// that is no longer a replica keeps its copy that long.
var runFlags = append(slices.Clone(cluster.FastFlags),
	"--past-tick", "100ms",
	"--past-request-timeout", "1s",
	"--past-maintenance-interval", "3s",
	"--past-maintenance-delay", "500ms",
	"--past-drop-grace", "1h",
	"--post-holder-delay", "3s",
	"--post-retry-delay", "1s",
	"--post-online-interval", "5s",
)

const domain = "churn.example"

// noMail is the "node init" flags of a node without mail servers.
var noMail = []string{"--imap", "", "--smtp", "", "--pop3", ""}

// mailNode is a cluster node, its mail servers' addresses (empty when it serves none), and
// whether its process runs. Only the test goroutine touches running.
type mailNode struct {
	*cluster.Node
	imap, smtp string
	running    bool
}

// user is a mail user and the node that holds the user's keys.
type user struct {
	addr, pw string
	home     *mailNode
}

// churnRing is the ring under test: eight nodes, alice on node2 and bob on node3, and the
// seeded randomness every choice of the test comes from.
type churnRing struct {
	t          *testing.T
	c          *cluster.Cluster
	nodes      []*mailNode
	alice, bob *user
	rng        *rand.Rand
	seed       uint64
}

// portPool hands out loopback ports, each at most once in the test: cluster.FreePorts closes
// its listeners, so two calls may return the same port, and a node's mail port must not be
// another node's listen port.
type portPool struct {
	t    *testing.T
	used map[string]bool
}

func (p *portPool) take(n int) []string {
	p.t.Helper()
	var out []string
	for len(out) < n {
		for _, a := range cluster.FreePorts(p.t, n-len(out)) {
			if !p.used[a] {
				p.used[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// newChurnRing enrolls n nodes (node1 founds the ring; node2 and node3 serve mail), makes
// alice on node2 and bob on node3, starts every node, waits for the leaf sets to converge
// and logs both users in once, which opens their keys and creates their logs in the ring.
//
// Nodes 4 to n are picked among several enrolled candidates by their ids (pickLayout) so
// that bob's node is the fourth or fifth nearest to his INBOX and root log heads: taking
// down two of the nodes nearer than it then makes it a replica of his own heads for the
// outage, and it keeps that copy, gone stale, once they are back, as the ring did.
func newChurnRing(t *testing.T, n int) *churnRing {
	t.Helper()
	c := cluster.New(t, "churn", 1, map[int][]string{0: noMail})
	c.RunFlags = slices.Clone(runFlags)
	r := &churnRing{t: t, c: c, seed: c.Seed, rng: rand.New(rand.NewPCG(c.Seed, 0xc4_42_11))}
	pool := &portPool{t: t, used: map[string]bool{c.Nodes[0].Addr: true}}
	r.nodes = append(r.nodes, &mailNode{Node: c.Nodes[0]})
	for i := 1; i <= 2; i++ {
		a := pool.take(4)
		nd := c.AddNode(fmt.Sprintf("node%d", i+1), a[0], true, "--imap", a[1], "--smtp", a[2], "--pop3", a[3])
		r.nodes = append(r.nodes, &mailNode{Node: nd, imap: a[1], smtp: a[2]})
	}
	r.alice = r.addUser("alice", r.nodes[1])
	r.bob = r.addUser("bob", r.nodes[2])

	cands := r.enrollCandidates(pool, n-3)
	for i, cd := range cands {
		name := fmt.Sprintf("node%d", i+4)
		dir := filepath.Join(c.Root, name)
		if err := os.Rename(cd.dir, dir); err != nil {
			t.Fatal(err)
		}
		r.nodes = append(r.nodes, &mailNode{Node: c.AdoptEnrolled(name, dir, cd.addr)})
	}
	for _, nd := range r.nodes {
		nd.Start()
		nd.running = true
	}
	took := c.WaitConverged(c.Nodes, 90*time.Second)
	t.Logf("%d nodes converged after %v; alice on %s, bob on %s", n, took.Round(time.Millisecond), r.alice.home.Name, r.bob.home.Name)
	for _, u := range []*user{r.alice, r.bob} {
		deadline := time.Now().Add(90 * time.Second)
		for {
			_, err := readMailbox(u, "INBOX", 30*time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("first login of %s: %v\n%s", u.addr, err, u.home.LogTail(30))
			}
			time.Sleep(time.Second)
		}
	}
	return r
}

// candidate is a node directory enrolled but not yet part of the ring under test.
type candidate struct {
	dir, addr string
	id        ids.ID
}

// enrollCandidates enrolls more nodes than needed and returns the want of them whose ids put
// bob's node fourth or fifth nearest to both his INBOX and his root log heads, or as many of
// the two as any choice can (-churn.pick-layout=false: the first want, as they came).
func (r *churnRing) enrollCandidates(pool *portPool, want int) []candidate {
	t := r.t
	t.Helper()
	total := want
	if *flagPickLayout {
		total = 4 * want
	}
	var cands []candidate
	for i := range total {
		dir := filepath.Join(r.c.Root, "candidates", fmt.Sprintf("c%02d", i))
		addr := pool.take(1)[0]
		cluster.Run(t, append([]string{"node", "init", "--ring", r.c.RingDir, "--dir", dir, "--listen", addr,
			"--bootstrap", r.nodes[0].Addr}, noMail...)...)
		rn, err := ring.LoadNode(dir)
		if err != nil {
			t.Fatal(err)
		}
		cands = append(cands, candidate{dir: dir, addr: addr, id: rn.ID})
	}
	if !*flagPickLayout {
		return cands
	}
	keys := []ids.Key{r.headKey(r.bob, post.InboxLog), r.headKey(r.bob, post.RootLog)}
	fixed := []ids.ID{r.nodes[0].ID, r.alice.home.ID}
	bobID := r.bob.home.ID
	// score counts the keys for which bob's node would be fourth or fifth nearest.
	score := func(chosen []int) int {
		s := 0
		for _, k := range keys {
			rank := 1
			for _, id := range fixed {
				if ids.Closer(k.ID, id, bobID) {
					rank++
				}
			}
			for _, i := range chosen {
				if ids.Closer(k.ID, cands[i].id, bobID) {
					rank++
				}
			}
			if rank == 4 || rank == 5 {
				s++
			}
		}
		return s
	}
	var best [][]int
	bestScore := -1
	var walk func(from int, chosen []int)
	walk = func(from int, chosen []int) {
		if len(chosen) == want {
			switch sc := score(chosen); {
			case sc > bestScore:
				bestScore, best = sc, [][]int{slices.Clone(chosen)}
			case sc == bestScore:
				best = append(best, slices.Clone(chosen))
			}
			return
		}
		for i := from; i <= len(cands)-(want-len(chosen)); i++ {
			walk(i+1, append(chosen, i))
		}
	}
	walk(0, nil)
	var out []candidate
	for _, i := range best[r.rng.IntN(len(best))] {
		out = append(out, cands[i])
	}
	t.Logf("picked %d of %d enrolled nodes: bob's node is fourth or fifth nearest to %d of his 2 log heads (INBOX, root)", want, total, bestScore)
	return out
}

// addUser makes a user on node n with "epost user add" and a password from the seed.
func (r *churnRing) addUser(name string, n *mailNode) *user {
	r.t.Helper()
	addr := name + "@" + domain
	pw := fmt.Sprintf("pw-%s-%d", name, r.rng.Uint32())
	pwFile := filepath.Join(r.c.Root, addr+".pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		r.t.Fatal(err)
	}
	cluster.Run(r.t, "user", "add", "--ring", r.c.RingDir, "--node", n.Dir, "--address", addr, "--password-file", pwFile)
	return &user{addr: addr, pw: pw, home: n}
}

// headKey is where the ring keeps the head of u's log name: the key internal/post's headKey
// computes from the user's signing key, taken here from the CA-signed record on the user's
// node.
func (r *churnRing) headKey(u *user, log string) ids.Key {
	r.t.Helper()
	su, err := post.LoadStoredUser(u.home.Dir, u.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	rec, err := identity.DecodeRecord(su.Record.Body)
	if err != nil {
		r.t.Fatalf("record of %s: %v", u.addr, err)
	}
	return past.SignedKey(rec.Ring, rec.Keys.Signing, []byte("epost/v1/log/"+log))
}

// byCloseness lists the nodes nearest key first (PAST's replica order: ids.Closer).
func (r *churnRing) byCloseness(key ids.Key) []*mailNode {
	s := slices.Clone(r.nodes)
	slices.SortFunc(s, func(a, b *mailNode) int {
		if ids.Closer(key.ID, a.ID, b.ID) {
			return -1
		}
		return 1
	})
	return s
}

// headTargets picks the two nodes nearest key that are neither alice's nor bob's. They are
// two of the key's three replicas unless alice's or bob's node is among them; and when
// bob's node is fourth or fifth nearest, killing them makes bob's node a replica for the
// outage, so that it keeps a copy of the head that goes stale once they are back.
func (r *churnRing) headTargets(key ids.Key) (targets []*mailNode, layout string) {
	var parts []string
	for i, n := range r.byCloseness(key) {
		tag := ""
		switch {
		case n == r.alice.home:
			tag = "(alice)"
		case n == r.bob.home:
			tag = "(bob)"
		case len(targets) < 2:
			targets = append(targets, n)
			tag = "(target)"
		}
		parts = append(parts, fmt.Sprintf("%d:%s%s", i+1, n.Name, tag))
	}
	return targets, strings.Join(parts, " ")
}

// others are the nodes churn may take down: all but alice's and bob's.
func (r *churnRing) others() []*mailNode {
	var out []*mailNode
	for _, n := range r.nodes {
		if n != r.alice.home && n != r.bob.home {
			out = append(out, n)
		}
	}
	return out
}

// ready asks a running node whether it serves (status "ready").
func ready(n *mailNode) bool {
	if !n.running {
		return false
	}
	st, err := n.Status()
	return err == nil && st.Ready
}

// down lists the nodes that are stopped or not ready yet: what the two-down limit counts.
func (r *churnRing) down() []*mailNode {
	var out []*mailNode
	for _, n := range r.nodes {
		if !ready(n) {
			out = append(out, n)
		}
	}
	return out
}

// stop takes n down with sig: SIGKILL as a crash would, SIGTERM as an administrator would
// (cluster.Node.Stop, which wants a clean exit).
func (r *churnRing) stop(n *mailNode, sig syscall.Signal) {
	r.t.Helper()
	if !n.running {
		r.t.Fatalf("%s is not running", n.Name)
	}
	if sig == syscall.SIGKILL {
		n.Kill9()
	} else {
		n.Stop()
	}
	n.running = false
}

func (r *churnRing) start(n *mailNode) {
	r.t.Helper()
	n.Start()
	n.running = true
}

// randomSignal is SIGKILL or SIGTERM, evenly.
func (r *churnRing) randomSignal() syscall.Signal {
	if r.rng.IntN(2) == 0 {
		return syscall.SIGKILL
	}
	return syscall.SIGTERM
}

// waitReady waits until every node runs and reports ready.
func (r *churnRing) waitReady(nodes []*mailNode, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for !ready(n) {
			if time.Now().After(deadline) {
				r.t.Fatalf("%s (running=%v) not ready after %v:\n%s", n.Name, n.running, timeout, n.LogTail(30))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// restartAll starts every stopped node and waits until all are ready.
func (r *churnRing) restartAll() []string {
	r.t.Helper()
	var started []string
	for _, n := range r.nodes {
		if !n.running {
			r.start(n)
			started = append(started, n.Name)
		}
	}
	r.waitReady(r.nodes, 60*time.Second)
	return started
}

func sigName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "kill -9"
	}
	return "SIGTERM"
}

// relevantLog returns the last lines of a node's log that speak of warnings, errors, logs,
// heads and lookups, without the lines of the test's own IMAP logins and dropped
// connections. A run of lines alike but for times, client addresses and numbers (a retry
// loop) is shown as its first and last line and a count; lines are cut at 700 bytes.
func relevantLog(n *mailNode, lines int) string {
	type run struct {
		first, last string
		n           int
	}
	var runs []run
	noise := regexp.MustCompile(`^time=\S+ |remote=\S+ |[0-9]+`)
	lastKey := ""
	for _, l := range strings.Split(n.Log(), "\n") {
		if strings.Contains(l, `msg="imap login"`) || strings.Contains(l, `msg="tcp: dial failed"`) || strings.Contains(l, "broken pipe") {
			continue
		}
		low := strings.ToLower(l)
		for _, w := range []string{"level=warn", "level=error", "precondition", "replay", "head", "unavailable", "serverbug", "not found", "panic"} {
			if strings.Contains(low, w) {
				if len(l) > 700 {
					l = l[:700] + "..."
				}
				if key := noise.ReplaceAllString(l, ""); key == lastKey {
					runs[len(runs)-1].last = l
					runs[len(runs)-1].n++
				} else {
					runs, lastKey = append(runs, run{first: l, n: 1}), key
				}
				break
			}
		}
	}
	var out []string
	for _, r := range runs {
		out = append(out, r.first)
		if r.n > 1 {
			out = append(out, fmt.Sprintf("  ... %d more like it, the last:", r.n-1), r.last)
		}
	}
	if len(out) > lines {
		out = out[len(out)-lines:]
	}
	return strings.Join(out, "\n")
}
