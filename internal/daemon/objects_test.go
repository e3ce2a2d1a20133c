package daemon

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
)

// fastPast shortens PAST's timers for in-process rings.
func fastPast(t Timers) Timers {
	t.PastTick = 50 * time.Millisecond
	t.PastRequestTimeout = 500 * time.Millisecond
	t.PastMaintenance = time.Second
	t.PastMaintenanceDelay = 200 * time.Millisecond
	return t
}

func waitReady(t *testing.T, nodes []*Node, leaf int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		done := true
		for _, n := range nodes {
			if st := n.Status(); !st.Ready || len(st.LeafSet) != leaf {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence: %+v", nodes[len(nodes)-1].Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestObjectsOverControl runs PAST on a 4-node in-process ring (k = 3) through the control
// socket: put, get (verified), bulk insert with streamed keys, bulk lookup, the held listing
// on every node (each object on exactly k nodes) and the status's past section.
func TestObjectsOverControl(t *testing.T) {
	dirs := enroll(t, 4)
	var nodes []*Node
	for i, d := range dirs {
		n, err := Open(Options{Dir: d, Timers: fastPast(fastTimers), Seed: uint64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Stop() })
		nodes = append(nodes, n)
	}
	waitReady(t, nodes, 3)

	data := []byte("hello, replicated world")
	resp, err := Call(dirs[1], &ControlRequest{Op: "object_put", Data: data}, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o := resp.Object; o == nil || o.Key != ids.Hash(data).String() || o.Acked < 2 || o.Replicas != 3 {
		t.Fatalf("put: %+v", resp.Object)
	}
	resp, err = Call(dirs[2], &ControlRequest{Op: "object_get", Key: ids.Hash(data).String()}, 10*time.Second, nil)
	if err != nil || !bytes.Equal(resp.Object.Data, data) {
		t.Fatalf("get: %+v, %v", resp.Object, err)
	}
	_, err = Call(dirs[2], &ControlRequest{Op: "object_get", Key: ids.Hash([]byte("never stored")).String()}, 10*time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "no replica holds it") {
		t.Fatalf("get of a missing object: %v", err)
	}
	if _, err := Call(dirs[2], &ControlRequest{Op: "object_get", Key: "nothex"}, 5*time.Second, nil); err == nil ||
		!strings.Contains(err.Error(), "64 hex digits") {
		t.Fatalf("bad key: %v", err)
	}

	// Bulk insert: one streamed line per insert, then the summary.
	var keys []string
	resp, err = Call(dirs[0], &ControlRequest{Op: "object_bulk_put", Count: 50, Size: 2000, Concurrency: 8}, 30*time.Second,
		func(item json.RawMessage) error {
			var r ObjectResult
			if err := json.Unmarshal(item, &r); err != nil {
				return err
			}
			if r.Error != "" || r.SHA256 != r.Key || r.Size != 2000 {
				t.Errorf("bulk item %+v", r)
			}
			keys = append(keys, r.Key)
			return nil
		})
	if err != nil || resp.Summary == nil || resp.Summary.OK != 50 || len(keys) != 50 {
		t.Fatalf("bulk put: %+v, %v, %d keys", resp.Summary, err, len(keys))
	}
	found := 0
	resp, err = Call(dirs[3], &ControlRequest{Op: "object_bulk_get", Keys: keys}, 30*time.Second, func(item json.RawMessage) error {
		found++
		return nil
	})
	if err != nil || resp.Summary.OK != 50 || found != 50 {
		t.Fatalf("bulk get: %+v, %v", resp.Summary, err)
	}

	// Every object is on exactly k = 3 of the 4 nodes once the third replica, which the
	// insert did not wait for, has written it too.
	all := append(keys, ids.Hash(data).String())
	deadline := time.Now().Add(10 * time.Second)
	for {
		holders := map[string]int{}
		for _, d := range dirs {
			_, err := Call(d, &ControlRequest{Op: "object_held"}, 5*time.Second, func(item json.RawMessage) error {
				var h HeldObject
				if err := json.Unmarshal(item, &h); err != nil {
					return err
				}
				holders[h.Key]++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		var wrong []string
		for _, k := range all {
			if holders[k] != 3 {
				wrong = append(wrong, k[:8])
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects not on exactly 3 nodes: %v", wrong)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var objects int64
	var stored uint64
	for _, n := range nodes {
		p := n.Status().Past
		objects += p.Objects
		stored += p.Stored
		if p.Replicas != 3 {
			t.Errorf("status replicas %d", p.Replicas)
		}
	}
	if objects != 51*3 || stored < 51*3 {
		t.Errorf("status: %d objects, %d stored in all; want %d", objects, stored, 51*3)
	}
	if p := nodes[0].Status().Past; p.Inserts != 50 || p.InsertsFailed != 0 {
		t.Errorf("client counters of node 0: %+v", p)
	}
}
