package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"epost/internal/daemon"
	"epost/internal/post"
	"epost/internal/ring"
)

// "epost status --dir D" where D is not a node directory but holds some (a demo's folder, one
// ring of the two-ring demo, a folder of nodes made by hand): the answer says what D is and
// which nodes to ask, rather than advising to start a node there.

// folderAdvice returns the advice for dir when it is not a node directory but has node
// directories one or two levels below it, and ok=false otherwise.
func folderAdvice(dir string) (advice string, ok bool) {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return "", false
	}
	nodes := nodeDirsBelow(dir)
	if len(nodes) == 0 {
		return "", false
	}
	var b strings.Builder
	root, demoRing := demoRootOf(dir)
	switch {
	case root == "":
		fmt.Fprintf(&b, "%s is not a node directory; it holds %d of them. Ask one:\n", dir, len(nodes))
	default:
		what := "the folder of an epost demo"
		if demoRing != "" {
			what = fmt.Sprintf("ring %s of an epost demo (%s)", demoRing, root)
		}
		fmt.Fprintf(&b, "%s is %s, not a node directory: %s. Ask one of its nodes:\n", dir, what, demoState(root))
	}
	width := 0
	for _, nd := range nodes {
		width = max(width, len(nd))
	}
	for _, nd := range nodes {
		line := fmt.Sprintf("  epost status --dir %-*s  %s", width, nd, nodeSummary(nd))
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	return strings.TrimRight(b.String(), "\n"), true
}

// demoAdviceForNode turns "no node running in D: start it with epost node run" into advice to
// start the demo when D is one of a demo's nodes (its nodes run inside epost demo).
func demoAdviceForNode(dir string, err error) error {
	if !errors.Is(err, daemon.ErrNotRunning) {
		return err
	}
	for _, up := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
		if root, _ := demoRootOf(up); root != "" {
			return fmt.Errorf("no node running in %s: it is a node of the epost demo in %s, which runs its nodes itself; start it with %s", dir, root, demoCommand(root))
		}
	}
	return err
}

// demoRootOf says whether dir is a demo's folder (one ring: ring/ and node0/ beside each other;
// two rings: rings.json) or one ring of a two-ring demo, and returns the demo's folder and
// that ring's name.
func demoRootOf(dir string) (root, ringName string) {
	dir = filepath.Clean(dir)
	exists := func(p ...string) bool {
		_, err := os.Stat(filepath.Join(append([]string{dir}, p...)...))
		return err == nil
	}
	switch {
	case exists("rings.json"), exists("demo.json"):
		return dir, ""
	case exists("ring", ring.FileDescriptor) && exists("node0", "config.json"):
		parent := filepath.Dir(dir)
		if _, err := os.Stat(filepath.Join(parent, "rings.json")); err == nil {
			return parent, filepath.Base(dir)
		}
		return dir, ""
	}
	return "", ""
}

func demoCommand(root string) string {
	if _, err := os.Stat(filepath.Join(root, "rings.json")); err == nil {
		return "epost demo --rings 2 --dir " + root
	}
	return "epost demo --dir " + root
}

// demoState says whether the demo runs: it writes demo.json once ready and removes it at exit.
func demoState(root string) string {
	if _, err := os.Stat(filepath.Join(root, "demo.json")); err == nil {
		return "the demo is running (" + filepath.Join(root, "demo.json") + " lists its users)"
	}
	return "the demo is not running or not ready yet (start it with " + demoCommand(root) + ")"
}

// nodeDirsBelow lists the node directories (holding config.json) one or two levels below
// dir, in natural order (node2 before node10).
func nodeDirsBelow(dir string) []string {
	var out []string
	for _, pattern := range []string{"*/config.json", "*/*/config.json"} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, c := range m {
			out = append(out, filepath.Dir(c))
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(filepath.Dir(a), filepath.Dir(b)), naturalCompare(filepath.Base(a), filepath.Base(b)))
	})
	return out
}

// naturalCompare orders names by their text, then by the number they end with.
func naturalCompare(a, b string) int {
	split := func(s string) (string, int) {
		i := len(s)
		for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
			i--
		}
		n, err := strconv.Atoi(s[i:])
		if err != nil {
			return s, -1
		}
		return s[:i], n
	}
	ap, an := split(a)
	bp, bn := split(b)
	return cmp.Or(cmp.Compare(ap, bp), cmp.Compare(an, bn), cmp.Compare(a, b))
}

// nodeSummary is one line about a node directory: its role, users and mail ports.
func nodeSummary(dir string) string {
	rn, err := ring.LoadNode(dir)
	if err != nil {
		return ""
	}
	var parts []string
	if ring.HasRole(rn.Cert, ring.RoleGateway) {
		parts = append(parts, "gateway")
	}
	users, _ := post.ListUsers(dir)
	for _, u := range users {
		parts = append(parts, u.Address)
	}
	if c := rn.Config; c.IMAP != "" && len(users) > 0 {
		parts = append(parts, fmt.Sprintf("(IMAP %s, SMTP %s, POP3 %s)", orOff(c.IMAP), orOff(c.SMTP), orOff(c.POP3)))
	}
	return strings.Join(parts, " ")
}
