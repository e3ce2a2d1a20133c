// Package cluster runs rings of real "epost" processes on loopback for the multi-process tests
// (test/ring, test/past, ...): it builds the binary once per test binary, enrolls nodes with
// "epost ring init" and "epost node init", starts and kills "epost node run" processes, and
// reads "epost status --json", the way an administrator would. It is test support only: no
// production code imports it.
package cluster

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

// Bin is the epost binary built by Main.
var Bin string

// Main builds the binary once (without the race detector: eight nodes on two cores would miss
// the tests' deadlines), runs the tests and removes the binary. Call it from TestMain.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "epost-cluster-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	Bin = filepath.Join(dir, "epost")
	build := exec.Command("go", "build", "-o", Bin, "epost/cmd/epost")
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

// FastFlags shorten the protocol timers so that joins and failure detection take seconds.
var FastFlags = []string{
	"--tick", "50ms",
	"--probe-interval", "500ms",
	"--probe-timeout", "150ms",
	"--join-timeout", "1s",
	"--bootstrap-backoff", "250ms",
	"--bootstrap-max-backoff", "2s",
	"--dial-timeout", "2s",
	"--keepalive", "1s",
	"--peers-save-interval", "300ms",
}

// Seed returns the run's seed ($EPOST_TEST_SEED or random) and logs it, so a failing run's
// overlay randomness can be replayed (the network's timing cannot).
func Seed(t *testing.T) uint64 {
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

// Run runs a short epost command and returns its stdout; it fails the test on a non-zero exit.
func Run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := RunErr(args...)
	if err != nil {
		t.Fatalf("epost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func RunErr(args ...string) (string, error) {
	cmd := exec.Command(Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// FreePorts returns n loopback addresses that were free a moment ago.
func FreePorts(t *testing.T, n int) []string {
	t.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	dir := filepath.Join(os.TempDir(), "epost-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if nextPort == 0 {
		nextPort = portLow + rand.IntN(portHigh-portLow)
	}
	var addrs []string
	for tries := 0; len(addrs) < n; tries++ {
		if tries > portHigh-portLow {
			t.Fatalf("no free loopback port in %d-%d", portLow, portHigh)
		}
		// Below the kernel's ephemeral range (32768 and up), so that no outgoing connection
		// takes a port between this check and the node's bind; and claimed by a lock file that
		// other test processes (packages run in parallel) respect while this one lives.
		port := nextPort
		if nextPort++; nextPort >= portHigh {
			nextPort = portLow
		}
		if !claimPort(t, dir, port) {
			continue
		}
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", a)
		if err != nil {
			continue // in use by something else
		}
		ln.Close()
		addrs = append(addrs, a)
	}
	return addrs
}

// claimPort creates dir/PORT holding this process's pid, or takes over one left by a process
// that is gone; the test's cleanup removes it.
func claimPort(t *testing.T, dir string, port int) bool {
	p := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprint(f, os.Getpid())
			f.Close()
			t.Cleanup(func() { os.Remove(p) })
			return true
		}
		b, rerr := os.ReadFile(p)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if rerr != nil || perr != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			return false // held by a live process (or this one)
		}
		os.Remove(p) // stale: its process is gone
	}
	return false
}

const (
	portLow  = 10000
	portHigh = 32000
)

var (
	handedMu sync.Mutex
	nextPort int
)

// Node is one node directory and, while running, its process.
type Node struct {
	t      *testing.T
	c      *Cluster
	Name   string
	Dir    string
	Addr   string
	ID     ids.ID
	seed   uint64
	logPth string

	// Exec, when set, is the command Start runs the binary under (its arguments follow):
	// "ip netns exec NS" runs the node in a network namespace of its own (test/partition).
	Exec []string

	// logMark is the log's length when the current process started: waitLog looks only at
	// what this run wrote.
	logMark int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// loadID reads the node id from the enrolled directory (the global truth tests compare with).
func (n *Node) loadID() {
	n.t.Helper()
	rn, err := ring.LoadNode(n.Dir)
	if err != nil {
		n.t.Fatal(err)
	}
	n.ID = rn.ID
}

// Start runs "epost node run" with the fast timers; stderr is appended to the node's log file.
// The process is killed when the test ends.
func (n *Node) Start(extra ...string) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("%s already running", n.Name)
	}
	logf, err := os.OpenFile(n.logPth, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.seed++
	n.logMark = len(n.Log())
	args := append([]string{"node", "run", "--dir", n.Dir, "--seed", strconv.FormatUint(n.seed, 10)}, n.c.RunFlags...)
	argv := append(append(slices.Clone(n.Exec), Bin), append(args, extra...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
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

// Kill9 kills the process without giving it a chance to clean up, as a crash or power loss would.
func (n *Node) Kill9() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		n.t.Fatalf("%s is not running", n.Name)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and requires a clean exit (status 0) within a few seconds.
func (n *Node) Stop() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.t.Fatalf("%s did not exit within 10s of SIGTERM", n.Name)
	}
	n.mu.Lock()
	err := n.err
	n.mu.Unlock()
	if err != nil {
		n.t.Fatalf("%s: exit after SIGTERM: %v (want status 0)\n%s", n.Name, err, n.LogTail(20))
	}
	if _, err := os.Stat(daemon.ControlPath(n.Dir)); !os.IsNotExist(err) {
		n.t.Fatalf("%s: control socket left behind after a clean stop (stat: %v)", n.Name, err)
	}
}

// Status asks the node through "epost status --json".
func (n *Node) Status() (*daemon.Status, error) {
	out, err := RunErr("status", "--dir", n.Dir, "--json", "--timeout", "2s")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status --json: %v\n%s", err, out)
	}
	return &st, nil
}

func (n *Node) Log() string {
	b, _ := os.ReadFile(n.logPth)
	return string(b)
}

func (n *Node) LogTail(lines int) string {
	l := strings.Split(strings.TrimRight(n.Log(), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Cluster is one ring directory and its nodes, all under one temporary directory.
type Cluster struct {
	// RunFlags are the "epost node run" flags every Start passes (FastFlags by default); a
	// test may append its own layer's timers before starting nodes.
	RunFlags []string

	// Seed is the run's seed (logged by New); tests derive their own randomness from it.
	Seed uint64

	t       *testing.T
	Root    string
	RingDir string
	Nodes   []*Node
}

// New runs "epost ring init" and "epost node init" for n nodes: node 0 founds the ring
// (no bootstrap), the others bootstrap through it. extraInit[i] adds flags to node i's init.
func New(t *testing.T, name string, n int, extraInit map[int][]string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Root: t.TempDir(), Seed: Seed(t), RunFlags: slices.Clone(FastFlags)}
	c.RingDir = filepath.Join(c.Root, "ring")
	Run(t, "ring", "init", "--dir", c.RingDir, "--name", name, "--domain", name+".example", "--leafset", "24")
	for i, addr := range FreePorts(t, n) {
		c.AddNode(fmt.Sprintf("node%d", i+1), addr, i > 0, extraInit[i]...)
	}
	return c
}

// AddNode enrolls a node with the cluster's CA; bootstrap makes it join through node 1.
func (c *Cluster) AddNode(name, addr string, bootstrap bool, extra ...string) *Node {
	c.t.Helper()
	nd := &Node{t: c.t, c: c, Name: name, Dir: filepath.Join(c.Root, name), Addr: addr,
		logPth: filepath.Join(c.Root, name+".log"), seed: c.Seed + uint64(len(c.Nodes))*1000}
	args := []string{"node", "init", "--ring", c.RingDir, "--dir", nd.Dir, "--listen", addr}
	if bootstrap {
		args = append(args, "--bootstrap", c.Nodes[0].Addr)
	}
	Run(c.t, append(args, extra...)...)
	return c.adopt(nd)
}

// AdoptEnrolled adds a node that the test enrolled itself with "epost node init" (to choose
// nodes by their ids among several enrolled, say) as AddNode would have: with a seed of its
// own, a log file beside the others, and its log's tail shown when the test fails.
func (c *Cluster) AdoptEnrolled(name, dir, addr string) *Node {
	c.t.Helper()
	return c.adopt(&Node{t: c.t, c: c, Name: name, Dir: dir, Addr: addr,
		logPth: filepath.Join(c.Root, name+".log"), seed: c.Seed + uint64(len(c.Nodes))*1000})
}

func (c *Cluster) adopt(nd *Node) *Node {
	c.t.Helper()
	nd.loadID()
	c.Nodes = append(c.Nodes, nd)
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.t.Logf("--- %s log (%s), last lines:\n%s", nd.Name, nd.ID.Short(), nd.LogTail(40))
		}
	})
	return nd
}

// ExpectedLeafSet computes, from the global truth (every live id), the leaf set a node with id
// self must have: the l/2 nearest ids clockwise and the l/2 nearest counter-clockwise.
func ExpectedLeafSet(self ids.ID, live []ids.ID, l int) []string {
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

// WaitConverged polls "epost status --json" on the live nodes until each is ready and has
// exactly the leaf set the global truth dictates, and returns how long that took.
func (c *Cluster) WaitConverged(live []*Node, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	var liveIDs []ids.ID
	for _, n := range live {
		liveIDs = append(liveIDs, n.ID)
	}
	var last string
	for time.Since(start) < timeout {
		last = ""
		for _, n := range live {
			st, err := n.Status()
			if err != nil {
				last += fmt.Sprintf("\n  %s: %v", n.Name, err)
				continue
			}
			if st.NodeID != n.ID.String() {
				c.t.Fatalf("%s reports node id %s, its certificate says %s", n.Name, st.NodeID, n.ID)
			}
			want := ExpectedLeafSet(n.ID, liveIDs, st.LeafSetSize)
			if got := st.SortedLeafSet(); !st.Ready || !slices.Equal(got, want) {
				last += fmt.Sprintf("\n  %s (%s): ready=%v phase=%s leaf set %s, want %s", n.Name, n.ID.Short(),
					st.Ready, st.Phase, ShortIDs(got), ShortIDs(want))
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

func ShortIDs(hex []string) string {
	s := make([]string, len(hex))
	for i, h := range hex {
		s[i] = h[:min(8, len(h))]
	}
	return "[" + strings.Join(s, " ") + "]"
}

// WaitLog waits until the log of the node's current run contains every one of substrings.
func (n *Node) WaitLog(timeout time.Duration, substrings ...string) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := n.Log()
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
			n.t.Fatalf("%s: log lacks %q after %v:\n%s", n.Name, missing, timeout, n.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Attach makes a Cluster for a ring directory made some other way (the README's commands,
// say), so that its nodes can be adopted and checked with the same helpers.
func Attach(t *testing.T, root, ringDir string) *Cluster {
	return &Cluster{t: t, Root: root, RingDir: ringDir, RunFlags: slices.Clone(FastFlags)}
}

// Adopt adds an enrolled node directory (not started by this package) to the cluster.
func (c *Cluster) Adopt(name, dir, addr, logPath string) *Node {
	c.t.Helper()
	n := &Node{t: c.t, c: c, Name: name, Dir: dir, Addr: addr, logPth: logPath}
	n.loadID()
	c.Nodes = append(c.Nodes, n)
	return n
}

// Cmd makes an epost command for the caller to wire up (stdin, pipes).
func Cmd(args ...string) *exec.Cmd { return exec.Command(Bin, args...) }

// Audit logs a scenario's audit line (its counts: submitted, acknowledged, filed, duplicates,
// lost, forks...) and, when EPOST_AUDIT_LOG names a file, appends it there with the test's
// name: go test shows a passing test's log only with -v, and CI prints that file after the
// run, so that every scenario's counts are on record, not only a failing one's.
func Audit(t testing.TB, line string) {
	t.Helper()
	t.Log(line)
	path := os.Getenv("EPOST_AUDIT_LOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Logf("EPOST_AUDIT_LOG: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s: %s\n", t.Name(), line); err != nil {
		t.Logf("EPOST_AUDIT_LOG: %v", err)
	}
}
