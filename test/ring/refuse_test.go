package ring

import (
	"crypto/tls"
	"epost/test/cluster"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"epost/internal/ring"
)

// TestRefusesBadCertificates: nodes with a certificate from another ring's CA, an expired one or
// a revoked one, and a client with no certificate at all, are refused by the good nodes with a
// log line that says why, and never appear in a leaf set.
func TestRefusesBadCertificates(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, "good", 3, nil)
	ports := cluster.FreePorts(t, 3)
	boot := c.Nodes[0].Addr

	// Expired: valid for a month, two years ago.
	expired := c.AddNode("expired", ports[0], true, "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-02-01T00:00:00Z")
	// Revoked: enrolled, then revoked by node id; the new list is copied to every node dir.
	revoked := c.AddNode("revoked", ports[1], true)
	cluster.Run(t, "ring", "revoke", "--dir", c.RingDir, "--node-id", revoked.ID.String(), "--reason", "test")
	list, err := os.ReadFile(filepath.Join(c.RingDir, ring.FileRevocations))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := os.WriteFile(filepath.Join(n.Dir, ring.FileRevocations), list, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Foreign: a node of another ring (its own CA) told to bootstrap through a good node.
	other := cluster.New(t, "other", 1, nil)
	foreign := other.AddNode("foreign", ports[2], false)
	{
		// Point the foreign node at the good ring; node init took no bootstrap for it.
		cfgPath := filepath.Join(foreign.Dir, ring.FileNodeConfig)
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.Replace(string(b), `"bootstrap": []`, `"bootstrap": ["`+boot+`"]`, 1))
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	good := c.Nodes[:3]
	for _, n := range good {
		n.Start()
	}
	c.WaitConverged(good, 30*time.Second)
	for _, n := range []*cluster.Node{expired, revoked, foreign} {
		n.Start()
	}
	expired.WaitLog(10*time.Second, "own certificate will be refused by peers", "expired")

	// A raw TLS client with no certificate, and one presenting the foreign node's certificate
	// without checking the server (so the refusal is the server's, with its reason).
	for _, creds := range []*tls.Certificate{nil, &loadNode(t, foreign.Dir).Creds} {
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		if creds != nil {
			cfg.Certificates = []tls.Certificate{*creds}
		}
		conn, err := tls.Dial("tcp", boot, cfg)
		if err == nil {
			// TLS 1.3 clients finish before the server checks them; the server then closes.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Errorf("raw TLS client (cert %v) got data from a good node", creds != nil)
		}
	}

	bootNode := c.Nodes[0]
	bootNode.WaitLog(20*time.Second,
		"reason=\"tls handshake: peer certificate refused: ring: certificate outside its validity period: node "+expired.ID.Short()+": expired",
		"reason=\"tls handshake: peer certificate refused: ring: certificate revoked: node "+revoked.ID.Short(),
		"reason=\"tls handshake: peer certificate refused: ring: certificate belongs to another ring: node "+foreign.ID.Short(),
		"reason=\"tls handshake: tls: client didn't provide a certificate\"",
	)
	// The foreign node, for its part, refuses the good node and says so while it retries.
	foreign.WaitLog(10*time.Second, "bootstrap "+boot+" unreachable", "certificate belongs to another ring")

	// None of them is ever in a leaf set, and the good ring is unchanged.
	bad := map[string]string{expired.ID.String(): "expired", revoked.ID.String(): "revoked", foreign.ID.String(): "foreign"}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range good {
			st, err := n.Status()
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range st.LeafSet {
				if what, ok := bad[id]; ok {
					t.Fatalf("%s has the %s node in its leaf set", n.Name, what)
				}
			}
			// The bad nodes know only the bootstrap node's address, so it alone refuses them.
			if n == bootNode && st.Transport.RejectedHandshakes < 4 {
				t.Fatalf("%s: rejected_handshakes is %d, want at least 4", n.Name, st.Transport.RejectedHandshakes)
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, n := range []*cluster.Node{expired, revoked, foreign} {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Ready || len(st.LeafSet) != 0 {
			t.Errorf("%s: ready=%v leaf set %v; want not ready, empty", n.Name, st.Ready, cluster.ShortIDs(st.LeafSet))
		}
	}
	c.WaitConverged(good, 5*time.Second)
}

func loadNode(t *testing.T, dir string) *ring.Node {
	t.Helper()
	n, err := ring.LoadNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
