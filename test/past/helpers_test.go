// Package past holds multi-process tests of PAST: real "epost" processes on loopback, talking
// TLS to each other, driven only through the command line ("epost ring init", "node init",
// "node run", "status --json", "object ...") the way an operator would. The binary is built once
// per test run. The cluster helpers follow test/ring's.
package past

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"epost/internal/daemon"
	"epost/internal/ids"
	"epost/internal/ring"
)

// bin is the epost binary built by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "epost-ring-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "epost")
	// One build for every test of the package; the race detector would slow eight nodes on two
	// cores beyond the tests' deadlines, so it is not passed on.
	build := exec.Command("go", "build", "-o", bin, "epost/cmd/epost")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build epost:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fastFlags shorten the protocol timers so that joins, failure detection and replica repair
// take seconds. PAST's drop grace stays long: a node keeps objects it is no longer a replica of,
// so the tests check that the k closest live nodes hold each object, not an exact count.
var fastFlags = []string{
	"--tick", "50ms",
	"--probe-interval", "500ms",
	"--probe-timeout", "150ms",
	"--join-timeout", "1s",
	"--bootstrap-backoff", "250ms",
	"--bootstrap-max-backoff", "2s",
	"--dial-timeout", "2s",
	"--keepalive", "1s",
	"--peers-save-interval", "300ms",
	"--past-tick", "100ms",
	"--past-request-timeout", "1s",
	"--past-maintenance-interval", "3s",
	"--past-maintenance-delay", "500ms",
	"--past-drop-grace", "1h",
}

// testSeed returns the run's seed ($EPOST_TEST_SEED or random) and logs it, so a failing run's
// overlay randomness can be replayed (the network's timing cannot).
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("EPOST_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EPOST_TEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with EPOST_TEST_SEED=%d)", seed, seed)
	return seed
}

// epost runs a short command and returns its stdout; it fails the test on a non-zero exit.
func epost(t *testing.T, args ...string) string {
	t.Helper()
	out, err := epostErr(args...)
	if err != nil {
		t.Fatalf("epost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func epostErr(args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var lns []net.Listener
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

// node is one node directory and, while running, its process.
type node struct {
	t      *testing.T
	name   string
	dir    string
	addr   string
	id     ids.ID
	seed   uint64
	logPth string

	// logMark is the log's length when the current process started: waitLog looks only at
	// what this run wrote.
	logMark int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// loadID reads the node id from the enrolled directory (the global truth tests compare with).
func (n *node) loadID() {
	n.t.Helper()
	rn, err := ring.LoadNode(n.dir)
	if err != nil {
		n.t.Fatal(err)
	}
	n.id = rn.ID
}

// start runs "epost node run" with the fast timers; stderr is appended to the node's log file.
// The process is killed when the test ends.
func (n *node) start(extra ...string) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("%s already running", n.name)
	}
	logf, err := os.OpenFile(n.logPth, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.seed++
	n.logMark = len(n.log())
	args := append([]string{"node", "run", "--dir", n.dir, "--seed", strconv.FormatUint(n.seed, 10)}, fastFlags...)
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stderr, cmd.Stdout = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(done)
	}()
	n.t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
}

// kill9 kills the process without giving it a chance to clean up, as a crash or power loss would.
func (n *node) kill9() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		n.t.Fatalf("%s is not running", n.name)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM and requires a clean exit (status 0) within a few seconds.
func (n *node) stop() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.t.Fatalf("%s did not exit within 10s of SIGTERM", n.name)
	}
	n.mu.Lock()
	err := n.err
	n.mu.Unlock()
	if err != nil {
		n.t.Fatalf("%s: exit after SIGTERM: %v (want status 0)\n%s", n.name, err, n.logTail(20))
	}
	if _, err := os.Stat(daemon.ControlPath(n.dir)); !os.IsNotExist(err) {
		n.t.Fatalf("%s: control socket left behind after a clean stop (stat: %v)", n.name, err)
	}
}

// status asks the node through "epost status --json".
func (n *node) status() (*daemon.Status, error) {
	out, err := epostErr("status", "--dir", n.dir, "--json", "--timeout", "2s")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status --json: %v\n%s", err, out)
	}
	return &st, nil
}

func (n *node) log() string {
	b, _ := os.ReadFile(n.logPth)
	return string(b)
}

func (n *node) logTail(lines int) string {
	l := strings.Split(strings.TrimRight(n.log(), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// cluster is one ring directory and its nodes, all under one temporary directory.
type cluster struct {
	t       *testing.T
	root    string
	ringDir string
	nodes   []*node
	seed    uint64
}

// newCluster runs "epost ring init" and "epost node init" for n nodes: node 0 founds the ring
// (no bootstrap), the others bootstrap through it. extraInit[i] adds flags to node i's init.
func newCluster(t *testing.T, name string, n int, extraInit map[int][]string) *cluster {
	t.Helper()
	c := &cluster{t: t, root: t.TempDir(), seed: testSeed(t)}
	c.ringDir = filepath.Join(c.root, "ring")
	epost(t, "ring", "init", "--dir", c.ringDir, "--name", name, "--domain", name+".example", "--leafset", "24")
	for i, addr := range freePorts(t, n) {
		c.addNode(fmt.Sprintf("node%d", i+1), addr, i > 0, extraInit[i]...)
	}
	return c
}

// addNode enrolls a node with the cluster's CA; bootstrap makes it join through node 1.
func (c *cluster) addNode(name, addr string, bootstrap bool, extra ...string) *node {
	c.t.Helper()
	nd := &node{t: c.t, name: name, dir: filepath.Join(c.root, name), addr: addr,
		logPth: filepath.Join(c.root, name+".log"), seed: c.seed + uint64(len(c.nodes))*1000}
	args := []string{"node", "init", "--ring", c.ringDir, "--dir", nd.dir, "--listen", addr}
	if bootstrap {
		args = append(args, "--bootstrap", c.nodes[0].addr)
	}
	epost(c.t, append(args, extra...)...)
	nd.loadID()
	c.nodes = append(c.nodes, nd)
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.t.Logf("--- %s log (%s), last lines:\n%s", nd.name, nd.id.Short(), nd.logTail(40))
		}
	})
	return nd
}

// expectedLeafSet computes, from the global truth (every live id), the leaf set a node with id
// self must have: the l/2 nearest ids clockwise and the l/2 nearest counter-clockwise.
func expectedLeafSet(self ids.ID, live []ids.ID, l int) []string {
	var others []ids.ID
	for _, id := range live {
		if id != self {
			others = append(others, id)
		}
	}
	byDist := func(dist func(a, b ids.ID) ids.ID) []ids.ID {
		s := slices.Clone(others)
		slices.SortFunc(s, func(a, b ids.ID) int { return ids.Cmp(dist(self, a), dist(self, b)) })
		return s[:min(len(s), l/2)]
	}
	set := map[string]bool{}
	for _, id := range byDist(ids.Clockwise) {
		set[id.String()] = true
	}
	for _, id := range byDist(func(a, b ids.ID) ids.ID { return ids.Clockwise(b, a) }) {
		set[id.String()] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// waitConverged polls "epost status --json" on the live nodes until each is ready and has
// exactly the leaf set the global truth dictates, and returns how long that took.
func (c *cluster) waitConverged(live []*node, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	var liveIDs []ids.ID
	for _, n := range live {
		liveIDs = append(liveIDs, n.id)
	}
	var last string
	for time.Since(start) < timeout {
		last = ""
		for _, n := range live {
			st, err := n.status()
			if err != nil {
				last += fmt.Sprintf("\n  %s: %v", n.name, err)
				continue
			}
			if st.NodeID != n.id.String() {
				c.t.Fatalf("%s reports node id %s, its certificate says %s", n.name, st.NodeID, n.id)
			}
			want := expectedLeafSet(n.id, liveIDs, st.LeafSetSize)
			if got := st.SortedLeafSet(); !st.Ready || !slices.Equal(got, want) {
				last += fmt.Sprintf("\n  %s (%s): ready=%v phase=%s leaf set %s, want %s", n.name, n.id.Short(),
					st.Ready, st.Phase, shortIDs(got), shortIDs(want))
			}
		}
		if last == "" {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("ring did not converge within %v:%s", timeout, last)
	return 0
}

func shortIDs(hex []string) string {
	s := make([]string, len(hex))
	for i, h := range hex {
		s[i] = h[:min(8, len(h))]
	}
	return "[" + strings.Join(s, " ") + "]"
}

// waitLog waits until the log of the node's current run contains every one of substrings.
func (n *node) waitLog(timeout time.Duration, substrings ...string) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := n.log()
		log = log[min(n.logMark, len(log)):]
		missing := ""
		for _, s := range substrings {
			if !strings.Contains(log, s) {
				missing = s
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: log lacks %q after %v:\n%s", n.name, missing, timeout, n.logTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// epostCmd makes an epost command for the caller to wire up (stdin, pipes).
func epostCmd(args ...string) *exec.Cmd { return exec.Command(bin, args...) }
