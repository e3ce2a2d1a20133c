// Package e2e holds end-to-end mail tests on real processes: "epost node run" per node on
// loopback (TLS between nodes), users made with "epost user add", mail sent over SMTP
// submission and read over IMAP the way a mail client would, nodes stopped, restarted and
// killed with SIGKILL in between.
package e2e

import (
	"bytes"
	"encoding/json"
	"epost/test/cluster"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// fastFlags shorten the protocol timers so that joins, failure detection, repair and the
// holders' pushes take seconds.
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
	"--post-holder-delay", "3s",
	"--post-retry-delay", "1s",
	"--post-online-interval", "5s",
}

func testSeed(t *testing.T) uint64 { return cluster.Seed(t) }

func epost(t *testing.T, args ...string) string { return cluster.Run(t, args...) }

func freePorts(t *testing.T, n int) []string { return cluster.FreePorts(t, n) }

// node is one node directory and, while running, its process.
type node struct {
	t      *testing.T
	name   string
	dir    string
	logPth string
	seed   uint64
	imap   string
	smtp   string
	extra  []string // more "node run" flags

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (n *node) start() {
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
	args := append([]string{"node", "run", "--dir", n.dir, "--seed", strconv.FormatUint(n.seed, 10)}, fastFlags...)
	cmd := exec.Command(cluster.Bin, append(args, n.extra...)...)
	cmd.Stderr, cmd.Stdout = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	n.t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
}

// stop sends SIGTERM (a clean shutdown) or SIGKILL (a crash) and waits for the exit.
func (n *node) stop(sig syscall.Signal) {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		n.t.Fatalf("%s did not exit within 20 s of %v; log %s", n.name, sig, n.logPth)
	}
}

// keepLogsOnFailure copies the nodes' logs out of the test's temporary directory when the test
// fails (the directory is removed), and names where.
func keepLogsOnFailure(t *testing.T, seed uint64, nodes ...*node) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("epost-%s-%d", t.Name(), seed))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return
		}
		for _, n := range nodes {
			if b, err := os.ReadFile(n.logPth); err == nil {
				_ = os.WriteFile(filepath.Join(dir, n.name+".log"), b, 0o644)
			}
		}
		t.Logf("node logs kept in %s", dir)
	})
}

// running says whether the node's process was started and not stopped.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

type status struct {
	Ready   bool `json:"ready"`
	Gateway struct {
		Queue struct {
			Federation struct {
				Entries int `json:"entries"`
			} `json:"federation"`
		} `json:"queue"`
	} `json:"gateway"`
	Mail struct {
		Filed       uint64 `json:"filed"`
		PendingHeld int    `json:"pending_held"`
		Auth        struct {
			Locked uint64 `json:"locked"`
			Wrong  uint64 `json:"wrong"`
		} `json:"auth"`
		Outbox     int `json:"outbox"`
		ServersTLS struct {
			IMAP string `json:"imap"`
		} `json:"servers_tls"`
	} `json:"mail"`
}

func (n *node) status() (status, bool) {
	out, err := exec.Command(cluster.Bin, "status", "--dir", n.dir, "--json").Output()
	if err != nil {
		return status{}, false
	}
	var s status
	if json.Unmarshal(out, &s) != nil {
		return status{}, false
	}
	return s, true
}

func waitReady(t *testing.T, nodes ...*node) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		for {
			if s, ok := n.status(); ok && s.Ready {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after 60 s; log %s:\n%s", n.name, n.logPth, tail(n.logPth))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// tail returns the end of a node's log, without the lines of the test's own IMAP polling.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `msg="imap login"`) {
			keep = append(keep, l)
		}
	}
	s := strings.Join(keep, "\n")
	if len(s) > 6000 {
		s = s[len(s)-6000:]
	}
	return s
}

// ring is a ring of nodes with users on some of them.
type ring struct {
	t       *testing.T
	dir     string
	nodes   []*node
	pw      map[string]string // address -> password
	home    map[string]*node  // address -> the user's node
	marker  string
	cleanup []func()
}

// newRing makes a ring of n nodes; users[i] lives on node i+1 (node0 founds the ring).
func newRing(t *testing.T, seed uint64, n int, users ...string) *ring {
	t.Helper()
	dir := t.TempDir()
	r := &ring{t: t, dir: dir, pw: map[string]string{}, home: map[string]*node{}}
	epost(t, "ring", "init", "--dir", filepath.Join(dir, "ring"), "--name", "e2e", "--domain", "e2e.example")
	ports := freePorts(t, n+3*len(users))
	for i := range n {
		nd := &node{t: t, name: fmt.Sprintf("node%d", i), dir: filepath.Join(dir, fmt.Sprintf("node%d", i)),
			logPth: filepath.Join(dir, fmt.Sprintf("node%d.log", i)), seed: seed + uint64(1000*i)}
		args := []string{"node", "init", "--ring", filepath.Join(dir, "ring"), "--dir", nd.dir, "--listen", ports[i]}
		if i > 0 {
			args = append(args, "--bootstrap", ports[0])
		}
		if u := i - 1; u >= 0 && u < len(users) {
			p := ports[n+3*u : n+3*u+3]
			nd.imap, nd.smtp = p[0], p[1]
			args = append(args, "--imap", p[0], "--smtp", p[1], "--pop3", p[2])
		} else {
			args = append(args, "--imap", "", "--smtp", "", "--pop3", "")
		}
		epost(t, args...)
		r.nodes = append(r.nodes, nd)
	}
	for i, u := range users {
		addr := u + "@e2e.example"
		pw := fmt.Sprintf("pw-%s-%d", u, seed%100000)
		pwFile := filepath.Join(dir, u+".pw")
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		epost(t, "user", "add", "--ring", filepath.Join(dir, "ring"), "--node", r.nodes[i+1].dir, "--address", addr, "--password-file", pwFile)
		r.pw[addr], r.home[addr] = pw, r.nodes[i+1]
	}
	r.marker = fmt.Sprintf("E2E-PLAINTEXT-MARKER-%d", seed)
	return r
}

// scanPlaintext returns the files under the nodes' directories that hold the marker.
func (r *ring) scanPlaintext() []string {
	var hits []string
	for _, n := range r.nodes {
		filepath.Walk(n.dir, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || !info.Mode().IsRegular() {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(r.marker)) {
				hits = append(hits, path)
			}
			return nil
		})
	}
	return hits
}
