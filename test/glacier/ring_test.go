package glacier

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"epost/internal/post"
	"epost/test/cluster"
)

// runFlags are test/e2e's fast timers (overlay, PAST, POST) plus Glacier's: fragments are
// inserted, probed and rebuilt within seconds, and archived mail is packed into an aggregate
// at most 2 s after it was filed.
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

var glacierFlags = []string{
	"--glacier-tick", "100ms",
	"--glacier-request-timeout", "1s",
	"--glacier-sync-interval", "5s",
	"--glacier-sync-delay", "1s",
	"--archive-flush", "2s",
}

// mailNode is a cluster node with its mail servers' addresses (empty when it serves none).
type mailNode struct {
	*cluster.Node
	imap, smtp string
}

// user is a mail user, the node that currently holds the user's keys, and the copy of the
// user's key files taken right after "epost user add" (what a user keeps as a backup).
type user struct {
	addr, pw string
	home     *mailNode
	backup   string
}

// portPool hands out loopback ports, each at most once in the test: cluster.FreePorts
// closes its listeners, so two calls may return the same port, and a node's mail port must
// not be another node's listen port.
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

// enroll adds a node that joins through node1, with mail servers unless noServers.
func (p *portPool) enroll(c *cluster.Cluster, name string, noServers bool) *mailNode {
	p.t.Helper()
	a := p.take(4)
	if noServers {
		return &mailNode{Node: c.AddNode(name, a[0], true, noMail...)}
	}
	nd := c.AddNode(name, a[0], true, "--imap", a[1], "--smtp", a[2], "--pop3", a[3])
	return &mailNode{Node: nd, imap: a[1], smtp: a[2]}
}

// noMail is the "node init" flags of a node without mail servers.
var noMail = []string{"--imap", "", "--smtp", "", "--pop3", ""}

// addUser makes a user on node n with "epost user add" and copies the user's key files
// (sealed keys and CA-signed record) into the backup directory.
func addUser(t *testing.T, c *cluster.Cluster, n *mailNode, addr, pw, backupRoot string) *user {
	t.Helper()
	pwFile := filepath.Join(c.Root, addr+".pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster.Run(t, "user", "add", "--ring", c.RingDir, "--node", n.Dir, "--address", addr, "--password-file", pwFile)
	u := &user{addr: addr, pw: pw, home: n, backup: filepath.Join(backupRoot, addr)}
	copyKeys(t, post.UserDir(n.Dir, addr), u.backup)
	return u
}

// copyKeys copies a user's key files from one directory to another (made 0700, files 0600).
func copyKeys(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{post.FileSealedKeys, post.FileRecord} {
		if err := copyFile(filepath.Join(from, name), filepath.Join(to, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// glacierLines returns the last lines of each node's log that mention Glacier or archiving.
func glacierLines(nodes []*mailNode, perNode int) string {
	var b strings.Builder
	for _, n := range nodes {
		var hits []string
		for _, l := range strings.Split(n.Log(), "\n") {
			// The ring is named glacier and so is its mail domain: only other mentions count.
			low := strings.ToLower(strings.NewReplacer("@"+domain, "", "ring=glacier", "").Replace(l))
			if strings.Contains(low, "glacier") || strings.Contains(low, "archive") {
				hits = append(hits, l)
			}
		}
		fmt.Fprintf(&b, "\n--- %s: %d log lines about glacier/archive", n.Name, len(hits))
		if len(hits) > perNode {
			hits = hits[len(hits)-perNode:]
		}
		for _, l := range hits {
			b.WriteString("\n  " + l)
		}
	}
	return b.String()
}
