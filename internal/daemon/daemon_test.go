package daemon

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/ring"
)

// fastTimers make an in-process ring converge in well under a second.
var fastTimers = Timers{
	Tick: 50 * time.Millisecond, ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 150 * time.Millisecond,
	JoinTimeout: time.Second, BootstrapBackoff: 100 * time.Millisecond, BootstrapMaxBackoff: time.Second,
	DialTimeout: 2 * time.Second, Keepalive: time.Second, PeersSave: 100 * time.Millisecond,
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// enroll makes a ring and n node directories; node 0 founds, the others bootstrap through it.
func enroll(t *testing.T, n int) []string {
	t.Helper()
	root := t.TempDir()
	now := time.Now()
	r, err := ring.Create(filepath.Join(root, "ring"), ring.DefaultParams("unit", "unit.example"), now)
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, n)
	var dirs []string
	for i, a := range addrs {
		cfg := ring.NodeConfig{Listen: a}
		if i > 0 {
			cfg.Bootstrap = []string{addrs[0]}
		}
		dir := filepath.Join(root, "n"+string(rune('0'+i)))
		if _, err := ring.InitNode(r, dir, cfg, ring.Validity{}, now); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

func startNode(t *testing.T, dir string, seed uint64) *Node {
	t.Helper()
	n, err := Open(Options{Dir: dir, Timers: fastTimers, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	return n
}

// TestInProcessRing runs three nodes in one process over real TLS on loopback: they join, report
// consistent status through the control socket, remember each other on disk, and a clean stop
// removes the control socket.
func TestInProcessRing(t *testing.T) {
	dirs := enroll(t, 3)
	var nodes []*Node
	for i, d := range dirs {
		nodes = append(nodes, startNode(t, d, uint64(i+1)))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		done := true
		for _, n := range nodes {
			st := n.Status()
			if !st.Ready || len(st.LeafSet) != 2 {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence: %+v", nodes[2].Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := Query(dirs[1], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeID != nodes[1].ID().String() || !st.Ready || st.Peers < 1 || st.RingName != "unit" {
		t.Fatalf("status over the control socket: %+v", st)
	}
	want := []string{nodes[0].ID().String(), nodes[2].ID().String()}
	slices.Sort(want)
	if got := st.SortedLeafSet(); !slices.Equal(got, want) {
		t.Fatalf("leaf set %v, want %v", got, want)
	}
	if fi, err := os.Stat(ControlPath(dirs[1])); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// A second daemon on the same directory is refused while the first runs.
	again, err := Open(Options{Dir: dirs[1], Timers: fastTimers})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(); err == nil || !strings.Contains(err.Error(), "already running") {
		again.Stop()
		t.Fatalf("second daemon on one directory: %v, want already running", err)
	}

	// Peers are remembered within a few save intervals, and the control socket goes on Stop.
	time.Sleep(5 * fastTimers.PeersSave)
	if err := nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	peers, err := newPeerStore(filepath.Join(dirs[1], "data", FilePeers), nodes[1].ID()).load()
	if err != nil || len(peers) != 2 {
		t.Fatalf("remembered peers %v, %v; want the 2 others", peers, err)
	}
	if _, err := os.Stat(ControlPath(dirs[1])); !os.IsNotExist(err) {
		t.Fatalf("control socket after Stop: %v", err)
	}
	if _, err := Query(dirs[1], time.Second); !errors.Is(err, ErrNotRunning) ||
		!strings.HasPrefix(err.Error(), "no node running in "+dirs[1]+" (control socket missing): start it with epost node run --dir ") {
		t.Fatalf("query of a stopped node: %v", err)
	}
}

// TestBootstrapUnreachable: with its bootstrap node down, a node stays in "starting" and
// reports it; once the bootstrap node runs, it joins.
func TestBootstrapUnreachable(t *testing.T) {
	dirs := enroll(t, 2)
	late := startNode(t, dirs[1], 7)
	time.Sleep(300 * time.Millisecond)
	if st := late.Status(); st.Ready || st.Phase != "starting" {
		t.Fatalf("without a bootstrap node: ready %v phase %s", st.Ready, st.Phase)
	}
	startNode(t, dirs[0], 8)
	deadline := time.Now().Add(15 * time.Second)
	for !late.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("did not join after the bootstrap node started: %+v", late.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestQueryStaleSocket(t *testing.T) {
	dir := t.TempDir()
	// A socket file nobody listens on, as a killed node leaves it.
	ln, err := net.Listen("unix", ControlPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = Query(dir, time.Second)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("stale socket: %v", err)
	}
	// A new node replaces a stale socket rather than refusing to start.
	ln2, err := listenControl(dir)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln2.Close()
}

func TestPeersFile(t *testing.T) {
	dir := t.TempDir()
	self := ids.HashString("self")
	s := newPeerStore(filepath.Join(dir, "data", FilePeers), self)
	if got, err := s.load(); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v", got, err)
	}
	a, b := Peer{ids.HashString("a"), "127.0.0.1:1"}, Peer{ids.HashString("b"), "10.0.0.2:7001"}
	if err := s.save([]Peer{a, b}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.save(nil, time.Now()); err != nil { // an empty list keeps the old one
		t.Fatal(err)
	}
	got, err := s.load()
	if err != nil || !slices.Equal(got, []Peer{a, b}) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "data"))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}

	// Entries that do not parse, this node itself and duplicates are skipped, not fatal.
	bad := `{"version":1,"peers":[{"id":"zz","addr":"127.0.0.1:1"},{"id":"` + self.String() + `","addr":"127.0.0.1:2"},
		{"id":"` + a.ID.String() + `","addr":"not an address"},{"id":"` + b.ID.String() + `","addr":"10.0.0.2:7001"},
		{"id":"` + b.ID.String() + `","addr":"10.0.0.3:7001"}]}`
	if err := os.WriteFile(s.path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.load(); err != nil || !slices.Equal(got, []Peer{b}) {
		t.Fatalf("filtered load: %v, %v", got, err)
	}
	if err := os.WriteFile(s.path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.load(); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("corrupt file: %v", err)
	}
}
