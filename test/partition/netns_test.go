package partition

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// network is one test's private network: a namespace holding a bridge, one namespace per
// node joined to the bridge by a veth pair (the node's side is eth0 with 10.77.S.N/24), and a
// veth from the root namespace into the bridge (10.77.S.254), so that the test process reaches
// every node's mail servers over the bridge, as a mail client on the LAN would.
//
// Links are cut in two ways, neither needing tc or nftables (this machine has neither):
//   - isolate: the node's veth goes down, on both ends; the node reaches nobody, the test
//     process included;
//   - split: each node of one group gets a permanent neighbour entry with a MAC address no
//     port owns for every node of the other group. The bridge floods those frames and every
//     interface drops them (not its address), so packets between the groups vanish silently,
//     as on a partitioned LAN: dials time out and established connections stall, rather
//     than failing at once as a "blackhole" route would make them. Traffic within a group,
//     and between the test process and every node, is untouched.
//
// Every name starts with the prefix "ept" and this process's id, so parallel runs do not
// collide and a later run can remove what an aborted one left behind (sweepStale).
type network struct {
	t      *testing.T
	base   string // "ept<pid><letter>": every name of this network starts with it
	subnet string // "10.77.S."
	nodes  []string
	cut    map[[2]int]bool // node index pairs (i<j) with neighbour entries poisoned
}

// bogusMAC is owned by no interface: frames sent to it are dropped by every receiver.
const bogusMAC = "02:00:00:00:00:01"

// hostOctet is the test process's address on the bridge (10.77.S.254).
const hostOctet = 254

var networksMade atomic.Int32

// requireNetns skips the test, saying why, where the harness cannot run.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition tests need root (network namespaces, veth pairs, a bridge); CI runs them as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("partition tests need iproute2's ip command: ", err)
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("partition tests need network namespaces, and \"ip netns list\" failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
}

// ip runs one ip(8) command and fails the test on error.
func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out)
}

// ipQuiet runs one ip(8) command for cleanup: errors are returned, not fatal.
func ipQuiet(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

var staleRE = regexp.MustCompile(`^ept(\d+)[a-z]`)

// sweepStale removes namespaces and root-namespace links of earlier runs whose process is
// gone (an aborted run cannot clean up after itself).
func sweepStale(t *testing.T) {
	t.Helper()
	dead := func(name string) bool {
		m := staleRE.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			return false
		}
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return os.IsNotExist(err)
	}
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if dead(name) {
			t.Logf("removing stale link %s", name)
			ipQuiet("link", "del", name)
		}
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && dead(f[0]) {
			t.Logf("removing stale namespace %s", f[0])
			ipQuiet("netns", "del", f[0])
		}
	}
}

// newNetwork makes the bridge, n node namespaces and the root namespace's link; t.Cleanup
// removes all of it, whether the test passed, failed or was stopped by t.Fatal.
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	sweepStale(t)
	k := networksMade.Add(1) - 1
	nw := &network{t: t, base: fmt.Sprintf("ept%d%c", os.Getpid(), 'a'+rune(k%26)), cut: map[[2]int]bool{}}
	nw.subnet = nw.freeSubnet()
	t.Cleanup(nw.remove)

	br := nw.bridgeNS()
	ip(t, "netns", "add", br)
	ip(t, "-n", br, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", br, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%s-n%d", nw.base, i+1)
		port := fmt.Sprintf("n%d", i+1)
		ip(t, "netns", "add", ns)
		nw.nodes = append(nw.nodes, ns)
		ip(t, "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip(t, "-n", br, "link", "set", port, "master", "br0", "up")
		ip(t, "-n", ns, "addr", "add", nw.Addr(i)+"/24", "dev", "eth0")
		ip(t, "-n", ns, "link", "set", "eth0", "up")
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	host := nw.hostLink()
	ip(t, "link", "add", host, "type", "veth", "peer", "name", "host", "netns", br)
	ip(t, "-n", br, "link", "set", "host", "master", "br0", "up")
	ip(t, "addr", "add", fmt.Sprintf("%s%d/24", nw.subnet, hostOctet), "dev", host)
	ip(t, "link", "set", host, "up")
	t.Logf("network %s: bridge in namespace %s, nodes %s1-%d, this process %s%d", nw.base, br, nw.subnet, n, nw.subnet, hostOctet)
	return nw
}

func (nw *network) bridgeNS() string { return nw.base + "-br" }
func (nw *network) hostLink() string { return nw.base + "r" }

// NS is node i's namespace (i from 0).
func (nw *network) NS(i int) string { return nw.nodes[i] }

// Addr is node i's address (i from 0): 10.77.S.(i+1).
func (nw *network) Addr(i int) string { return fmt.Sprintf("%s%d", nw.subnet, i+1) }

// freeSubnet picks a 10.77.S.0/24 that no route of the root namespace uses (a parallel run's,
// or anything else), starting from one derived from the process id.
func (nw *network) freeSubnet() string {
	out, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	routes := string(out)
	start := os.Getpid() % 200
	for d := range 200 {
		s := fmt.Sprintf("10.77.%d.", 20+(start+d)%200)
		if !strings.Contains(routes, s) {
			return s
		}
	}
	nw.t.Fatal("no free 10.77.S.0/24 subnet for the test network")
	return ""
}

// remove deletes everything newNetwork made; it runs even when newNetwork failed midway.
func (nw *network) remove() {
	var errs []string
	if err := ipQuiet("link", "del", nw.hostLink()); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err.Error())
	}
	for _, ns := range append(nw.nodes, nw.bridgeNS()) {
		if err := ipQuiet("netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		nw.t.Errorf("cleaning up the test network: %s", strings.Join(errs, "; "))
	}
}

// Split cuts every link between a node of a and a node of b (indexes from 0); the links
// within each group and to the test process stay.
func (nw *network) Split(a, b []int) {
	nw.t.Helper()
	for _, i := range a {
		for _, j := range b {
			nw.poison(i, j)
			nw.poison(j, i)
			nw.cut[[2]int{min(i, j), max(i, j)}] = true
		}
	}
}

// HealAll restores every link Split cut.
func (nw *network) HealAll() {
	nw.t.Helper()
	for p := range nw.cut {
		ip(nw.t, "-n", nw.NS(p[0]), "neigh", "del", nw.Addr(p[1]), "dev", "eth0")
		ip(nw.t, "-n", nw.NS(p[1]), "neigh", "del", nw.Addr(p[0]), "dev", "eth0")
		delete(nw.cut, p)
	}
}

// poison makes node i send its frames for node j to bogusMAC.
func (nw *network) poison(i, j int) {
	ip(nw.t, "-n", nw.NS(i), "neigh", "replace", nw.Addr(j), "lladdr", bogusMAC, "nud", "permanent", "dev", "eth0")
}

// Isolate takes node i's link down (both ends): it reaches nobody, nor does anyone reach it.
func (nw *network) Isolate(i int) {
	nw.t.Helper()
	ip(nw.t, "-n", nw.bridgeNS(), "link", "set", fmt.Sprintf("n%d", i+1), "down")
	ip(nw.t, "-n", nw.NS(i), "link", "set", "eth0", "down")
}

// Reconnect brings node i's link up again; the address stays, so its route comes back.
func (nw *network) Reconnect(i int) {
	nw.t.Helper()
	ip(nw.t, "-n", nw.NS(i), "link", "set", "eth0", "up")
	ip(nw.t, "-n", nw.bridgeNS(), "link", "set", fmt.Sprintf("n%d", i+1), "up")
}
