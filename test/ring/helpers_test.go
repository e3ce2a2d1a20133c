// Package ring holds multi-process tests: real "epost" processes on loopback, talking TLS to each
// other, driven only through the command line ("epost ring init", "node init", "node run",
// "status --json") the way an administrator would. The harness is test/cluster.
package ring

import (
	"testing"

	"epost/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }
