package glacier

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"epost/test/cluster"
)

// glacierStatus is the "glacier" object of "epost status --json", decoded here rather than
// through daemon.Status so that the test states the contract it relies on.
type glacierStatus struct {
	N         int   `json:"n"`
	M         int   `json:"m"`
	Fragments int   `json:"fragments"`
	Bytes     int64 `json:"bytes"`
	Placing   int   `json:"placing"`
	Archive   struct {
		Pending    int `json:"pending"`
		Inserting  int `json:"inserting"`
		Aggregates int `json:"aggregates"`
		Flushed    int `json:"flushed"`
		Failed     int `json:"failed"`
		Restored   int `json:"restored"`
		Recovering int `json:"recovering"`
	} `json:"archive"`
}

func (g *glacierStatus) String() string {
	a := g.Archive
	return fmt.Sprintf("%d/%d fragments=%d bytes=%d placing=%d pending=%d inserting=%d aggregates=%d flushed=%d failed=%d restored=%d recovering=%d",
		g.N, g.M, g.Fragments, g.Bytes, g.Placing, a.Pending, a.Inserting, a.Aggregates, a.Flushed, a.Failed, a.Restored, a.Recovering)
}

// glacierOf asks a node for its Glacier status.
func glacierOf(n *mailNode) (*glacierStatus, error) {
	out, err := cluster.RunErr("status", "--dir", n.Dir, "--json", "--timeout", "2s")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	var st struct {
		Glacier *glacierStatus `json:"glacier"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status --json: %v", err)
	}
	if st.Glacier == nil {
		return nil, fmt.Errorf(`status --json has no "glacier" object`)
	}
	return st.Glacier, nil
}

// glacierStatuses describes every node's Glacier status, one line each.
func glacierStatuses(nodes []*mailNode) string {
	var b strings.Builder
	for _, n := range nodes {
		g, err := glacierOf(n)
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: %v", n.Name, err)
			continue
		}
		fmt.Fprintf(&b, "\n  %s: %v", n.Name, g)
	}
	return b.String()
}

// waitArchived polls the nodes with users until each has nothing pending or being inserted,
// has flushed at least one aggregate into Glacier and has placed every fragment of its
// inserts (an insert is acknowledged at 3m of n fragments; a disaster right then could leave
// fewer than m of an aggregate alive), for two polls in a row.
func waitArchived(t *testing.T, homes []*mailNode, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	lastLog := start
	calm := 0
	for {
		var busy []string
		for _, n := range homes {
			g, err := glacierOf(n)
			switch {
			case err != nil:
				busy = append(busy, fmt.Sprintf("%s: %v", n.Name, err))
			case g.Archive.Pending != 0 || g.Archive.Inserting != 0 || g.Archive.Flushed < 1 || g.Placing != 0:
				busy = append(busy, fmt.Sprintf("%s: %v", n.Name, g))
			}
		}
		if len(busy) == 0 {
			calm++
			if calm == 2 {
				return time.Since(start)
			}
		} else {
			calm = 0
		}
		if time.Since(start) > timeout {
			t.Fatalf("mail not archived in Glacier after %v; statuses of the nodes with users:%s", timeout, glacierStatuses(homes))
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			t.Logf("archiving, %v: %d of %d nodes with users not done: %s", time.Since(start).Round(time.Second), len(busy), len(homes), strings.Join(busy, "; "))
		}
		time.Sleep(time.Second)
	}
}

// storageSummary totals PAST's and Glacier's bytes over nodes against the logical bytes of the
// mail submitted: the cost of durability, as measured on a real ring.
func storageSummary(nodes []*mailNode, logical int) string {
	var past, glacier, frags int64
	for _, n := range nodes {
		out, err := cluster.RunErr("status", "--dir", n.Dir, "--json", "--timeout", "2s")
		if err != nil {
			return fmt.Sprintf("status of %s: %v", n.Name, err)
		}
		var st struct {
			Past    struct{ Bytes int64 } `json:"past"`
			Glacier struct {
				Bytes     int64 `json:"bytes"`
				Fragments int64 `json:"fragments"`
			} `json:"glacier"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Sprintf("status of %s: %v", n.Name, err)
		}
		past += st.Past.Bytes
		glacier += st.Glacier.Bytes
		frags += st.Glacier.Fragments
	}
	return fmt.Sprintf("mail submitted %d bytes; PAST holds %d bytes (%.1fx), Glacier %d bytes of fragment data in %d fragments (%.1fx; each fragment also stores a 235-byte manifest and a 192-byte proof)",
		logical, past, float64(past)/float64(logical), glacier, frags, float64(glacier)/float64(logical))
}
