// Package past holds multi-process tests of PAST: real "epost" processes on loopback, talking
// TLS to each other, driven only through the command line ("epost ring init", "node init",
// "node run", "status --json", "object ...") the way an operator would. The binary is built once
// per test run. The cluster helpers follow test/ring's.
package past

import (
	"testing"

	"epost/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// pastFlags shorten PAST's timers so that replica repair takes seconds. PAST's drop grace stays
// long: a node keeps objects it is no longer a replica of, so the tests check that the k closest
// live nodes hold each object, not an exact count.
var pastFlags = []string{
	"--past-tick", "100ms",
	"--past-request-timeout", "1s",
	"--past-maintenance-interval", "3s",
	"--past-maintenance-delay", "500ms",
	"--past-drop-grace", "1h",
}

// newCluster is cluster.New with PAST's test timers on every node.
func newCluster(t *testing.T, name string, n int, extraInit map[int][]string) *cluster.Cluster {
	c := cluster.New(t, name, n, extraInit)
	c.RunFlags = append(c.RunFlags, pastFlags...)
	return c
}
