package ring

import (
	"epost/test/cluster"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docPath is the "Create your own ring" section pasted into the README.
const docPath = "../../README.md"

// codeBlocks returns the ```sh blocks of md, with their indentation removed.
func codeBlocks(md string) []string {
	re := regexp.MustCompile("(?ms)^([ \t]*)```sh\n(.*?)^[ \t]*```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(md, -1) {
		indent := m[1]
		var lines []string
		for _, l := range strings.Split(m[2], "\n") {
			lines = append(lines, strings.TrimPrefix(l, indent))
		}
		out = append(out, strings.Join(lines, "\n"))
	}
	return out
}

// TestRingSetupDoc runs the commands of the README's "Create your own ring" section exactly as written, in a shell with
// HOME set to a temporary directory and the freshly built epost first on PATH; only the example
// ports are replaced by free ones. Then the three nodes must form a ring, and the remote
// enrollment commands must work too. If the doc and the program drift apart, this fails.
func TestRingSetupDoc(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin := strings.Index(doc, "<!-- ring-setup:test:begin")
	end := strings.Index(doc, "<!-- ring-setup:test:end -->")
	if begin < 0 || end < begin {
		t.Fatalf("%s: test markers missing", docPath)
	}
	blocks := codeBlocks(doc[begin:end])
	if len(blocks) != 3 {
		t.Fatalf("%s: %d sh blocks between the test markers, want 3 (init, run, status)", docPath, len(blocks))
	}
	script := strings.Join(blocks, "\n")
	ports := cluster.FreePorts(t, 3)
	for i, p := range ports {
		script = strings.ReplaceAll(script, "127.0.0.1:700"+string(rune('1'+i)), p)
	}

	home := t.TempDir()
	out, pgid := runShell(t, home, "set -e\n"+script)
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // the nodes started with &
	for _, want := range []string{"Created ring \"example\"", "Enrolled node", "listen    " + ports[0], `"ready":`} {
		if !strings.Contains(out, want) {
			t.Errorf("doc commands' output lacks %q:\n%s", want, out)
		}
	}

	ringHome := filepath.Join(home, "epost-ring")
	c := cluster.Attach(t, ringHome, filepath.Join(ringHome, "ring"))
	for i, name := range []string{"node1", "node2", "node3"} {
		c.Adopt(name, filepath.Join(ringHome, name), ports[i], filepath.Join(ringHome, name+".log"))
	}
	took := c.WaitConverged(c.Nodes, 30*time.Second)
	t.Logf("the doc's three nodes converged %v after its commands ran", took.Round(time.Millisecond))

	// The remote enrollment block, run on one machine: the "carry" steps become a copy, and the
	// final "node run" is left out (its example address is not this machine's).
	var remote string
	for _, b := range codeBlocks(doc[end:]) {
		if strings.Contains(b, "epost node request") {
			remote = b
		}
	}
	if remote == "" {
		t.Fatalf("%s: no block with epost node request after the test markers", docPath)
	}
	var lines []string
	for _, l := range strings.Split(remote, "\n") {
		switch {
		case strings.HasPrefix(l, "epost node run"):
			continue
		case strings.HasPrefix(l, "epost ring enroll"):
			lines = append(lines, "cp node4/request.json request.json")
		}
		lines = append(lines, l)
	}
	out, _ = runShell(t, home, "set -e\ncd ~/epost-ring\n"+strings.Join(lines, "\n"))
	if !strings.Contains(out, "CA fingerprint") && !strings.Contains(out, "fingerprint") {
		t.Errorf("node accept output lacks the CA fingerprint:\n%s", out)
	}
	loadNode(t, filepath.Join(ringHome, "node4"))
}

// runShell runs script with bash in its own process group, HOME=home and epost on PATH, and
// returns its combined output and the group id (background jobs stay in the group).
func runShell(t *testing.T, home, script string) (string, int) {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "HOME="+home, "PATH="+filepath.Dir(cluster.Bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A file, not a pipe: the background jobs inherit it, and Wait would wait for a pipe's
	// writers, which run until the test ends.
	outf, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	cmd.Stdout, cmd.Stderr = outf, outf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	err = cmd.Wait()
	out, _ := os.ReadFile(outf.Name())
	if err != nil {
		syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatalf("doc commands failed: %v\n--- script\n%s\n--- output\n%s", err, script, out)
	}
	return string(out), pgid
}
