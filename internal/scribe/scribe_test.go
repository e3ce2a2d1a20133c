package scribe

import (
	"errors"
	"testing"
	"time"

	"epost/internal/ids"
)

const ringSize = 200

func TestMulticastReachesEveryMemberOnce(t *testing.T) {
	r := newTestRing(t, 1, ringSize)
	topic := NewTopic(testRingID, "presence:alice@example.org")
	members := r.subscribe(topic, r.pick(50))
	r.settle(10 * time.Second)

	tree := r.treeNodes(topic)
	roots := 0
	for tn, st := range tree {
		if st.Root {
			roots++
			if want := r.closestLive(topic.ID); tn != want {
				t.Errorf("root is n%d, closest node is n%d", tn.idx, want.idx)
			}
		}
	}
	if roots != 1 {
		t.Fatalf("%d roots, want 1", roots)
	}
	t.Logf("tree: %d nodes for 50 members", len(tree))
	r.multicastAndCheck(topic, "m", 20, members, nil)

	// Idle cost: only heartbeats flow.
	before, start := r.scribeSent(), r.net.Elapsed()
	r.settle(60 * time.Second)
	secs := (r.net.Elapsed() - start).Seconds()
	perNode := float64(r.scribeSent()-before) / secs / float64(r.countReady())
	perTreeNode := float64(r.scribeSent()-before) / secs / float64(len(tree))
	t.Logf("idle overhead: %.3f scribe msgs/node/s over %d nodes (%.3f per tree node/s, heartbeat every %v)",
		perNode, r.countReady(), perTreeNode, r.scfg.HeartbeatInterval)
	if perTreeNode > 2.0/r.scfg.HeartbeatInterval.Seconds()+0.01 {
		t.Errorf("idle cost %.3f msgs per tree node per second exceeds one heartbeat and one answer per interval", perTreeNode)
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	r := newTestRing(t, 2, ringSize)
	topic := NewTopic(testRingID, "presence:bob@example.org")
	members := r.subscribe(topic, r.pick(50))
	r.settle(10 * time.Second)
	r.multicastAndCheck(topic, "before", 3, members, nil)

	stay, gone := members[:25], members[25:]
	for _, m := range gone {
		if err := m.node.sc.Unsubscribe(topic); err != nil {
			t.Fatal(err)
		}
	}
	r.settle(5 * time.Second)
	r.multicastAndCheck(topic, "after", 5, stay, gone)

	for _, m := range stay {
		if err := m.node.sc.Unsubscribe(topic); err != nil {
			t.Fatal(err)
		}
	}
	r.settle(10 * time.Second)
	if tree := r.treeNodes(topic); len(tree) != 0 {
		t.Errorf("%d nodes still hold the tree after every member left", len(tree))
	}
}

func TestAnycast(t *testing.T) {
	r := newTestRing(t, 3, ringSize)
	topic := NewTopic(testRingID, "gateways")
	members := r.subscribe(topic, r.pick(50))
	accepting := members[17]
	accepting.accept = true
	empty := NewTopic(testRingID, "nobody-here")
	declining := NewTopic(testRingID, "all-busy")
	r.subscribe(declining, r.pick(10))
	r.settle(10 * time.Second)

	type outcome struct {
		res  AnycastResult
		done bool
	}
	ask := func(topic ids.Key) []*outcome {
		var outs []*outcome
		for _, src := range r.pick(20) {
			o := &outcome{}
			outs = append(outs, o)
			if err := src.sc.Anycast(topic, []byte("ping"), func(res AnycastResult) {
				if o.done {
					t.Errorf("second result %+v", res)
				}
				o.res, o.done = res, true
			}); err != nil {
				t.Fatal(err)
			}
		}
		r.settle(15 * time.Second)
		return outs
	}
	searched := 0
	for i, o := range ask(topic) {
		if !o.done || o.res.Err != nil || o.res.Member.ID != accepting.node.ep.ID() {
			t.Errorf("anycast %d to members: %+v (done %v), want n%d", i, o.res, o.done, accepting.node.idx)
		}
		searched += o.res.Searched
	}
	t.Logf("anycast found the one accepting member of 50 after %.1f tree nodes on average", float64(searched)/20)
	for i, o := range ask(empty) {
		if !o.done || !errors.Is(o.res.Err, ErrNoMember) {
			t.Errorf("anycast %d to an empty topic: %+v (done %v), want ErrNoMember", i, o.res, o.done)
		}
	}
	for i, o := range ask(declining) {
		if !o.done || !errors.Is(o.res.Err, ErrNoMember) {
			t.Errorf("anycast %d to declining members: %+v (done %v), want ErrNoMember", i, o.res, o.done)
		}
	}
}

func TestRepairAfterFailures(t *testing.T) {
	r := newTestRing(t, 4, ringSize)
	topic := NewTopic(testRingID, "presence:carol@example.org")
	members := r.subscribe(topic, r.pick(50))
	r.settle(10 * time.Second)
	r.multicastAndCheck(topic, "before", 3, members, nil)

	// Kill 20% of the nodes: every pure forwarder of the tree (not the root; see
	// TestRootFailure), some members, and random others.
	kill := map[*testNode]bool{}
	forwarders := 0
	for tn, st := range r.treeNodes(topic) {
		if !st.Root && !st.Subscribed && len(kill) < ringSize/10 {
			kill[tn] = true
			forwarders++
		}
	}
	root := r.closestLive(topic.ID)
	for _, m := range members[:10] {
		if m.node != root {
			kill[m.node] = true
		}
	}
	for len(kill) < ringSize/5 {
		if tn := r.pick(1)[0]; tn != root {
			kill[tn] = true
		}
	}
	for _, tn := range r.nodes {
		if kill[tn] {
			r.crash(tn)
		}
	}
	t.Logf("crashed %d nodes: %d forwarders of the tree, then members and others", len(kill), forwarders)

	// Anycasts issued at once may meet dead tree nodes: each must still get exactly one
	// answer, a live member or a timeout, never silence.
	for _, m := range members {
		m.accept = true
	}
	results := make([]int, 10)
	timeouts := 0
	for i, src := range r.pick(10) {
		src.sc.Anycast(topic, []byte("now"), func(res AnycastResult) {
			results[i]++
			switch {
			case errors.Is(res.Err, ErrAnycastTimeout):
				timeouts++
			case res.Err != nil:
				t.Errorf("anycast during repair: %v", res.Err)
			}
		})
	}
	start := r.scribeSent()
	took, ok := r.awaitWhole(topic, members, 90*time.Second)
	if !ok {
		t.Errorf("tree not whole %v after the crash", took)
	}
	t.Logf("repair: tree whole again after %v (parent timeout %v), %d scribe messages meanwhile",
		took, r.scfg.HeartbeatInterval*3+r.scfg.HeartbeatInterval/5, r.scribeSent()-start)
	r.settle(r.scfg.AnycastTimeout)
	for i, n := range results {
		if n != 1 {
			t.Errorf("anycast %d issued during repair got %d results, want 1", i, n)
		}
	}
	t.Logf("anycasts issued right after the crash: %d of 10 timed out (a dead node on the search path)", timeouts)
	for i, src := range r.pick(10) {
		src.sc.Anycast(topic, []byte("later"), func(res AnycastResult) {
			if res.Err != nil {
				t.Errorf("anycast %d after repair: %v", i, res.Err)
			}
		})
	}
	r.multicastAndCheck(topic, "after", 5, members, nil)
}

func TestRootFailure(t *testing.T) {
	r := newTestRing(t, 5, ringSize)
	topic := NewTopic(testRingID, "presence:dave@example.org")
	oldRoot := r.closestLive(topic.ID)
	var nodes []*testNode
	for _, tn := range r.pick(51) {
		if tn != oldRoot && len(nodes) < 50 {
			nodes = append(nodes, tn)
		}
	}
	members := r.subscribe(topic, nodes)
	r.settle(10 * time.Second)
	if st, ok := oldRoot.sc.State(topic); !ok || !st.Root {
		t.Fatalf("n%d closest to the topic is not its root: %+v", oldRoot.idx, st)
	}
	r.crash(oldRoot)
	took, ok := r.awaitWhole(topic, members, 90*time.Second)
	if !ok {
		t.Errorf("tree not whole %v after the root crashed", took)
	}
	t.Logf("root failure: tree re-anchored and whole after %v", took)
	newRoot := r.closestLive(topic.ID)
	for tn, st := range r.treeNodes(topic) {
		if st.Root != (tn == newRoot) {
			t.Errorf("n%d root=%v; the closest live node is n%d", tn.idx, st.Root, newRoot.idx)
		}
	}
	r.multicastAndCheck(topic, "after", 5, members, nil)
}

func TestRootMovesToJoiningNode(t *testing.T) {
	r := newTestRing(t, 6, ringSize)
	topic := NewTopic(testRingID, "presence:erin@example.org")
	members := r.subscribe(topic, r.pick(50))
	r.settle(10 * time.Second)
	oldRoot := r.closestLive(topic.ID)

	// A node joins right at the topic id: it becomes the closest node, so the tree must
	// re-anchor there.
	joiner := r.addNode(ids.Add(topic.ID, ids.ID{31: 1}))
	for i := 0; i < 120 && !joiner.ready; i++ {
		r.net.RunFor(250 * time.Millisecond)
	}
	took, ok := r.awaitWhole(topic, members, 60*time.Second)
	if !ok {
		t.Errorf("tree not whole %v after the new root joined", took)
	}
	t.Logf("root move: tree re-anchored at the joiner and whole after %v", took)
	if !joiner.ready {
		t.Fatal("joiner never became ready")
	}
	if st, ok := joiner.sc.State(topic); !ok || !st.Root {
		t.Fatalf("joiner is not the root: %+v (in tree %v)", st, ok)
	}
	if st, ok := oldRoot.sc.State(topic); ok && (st.Root || st.Parent.ID.IsZero()) {
		t.Errorf("old root n%d still detached: %+v", oldRoot.idx, st)
	}
	r.multicastAndCheck(topic, "after", 5, members, nil)
}

// TestLossyNetwork runs the tree over links that lose 2% of frames: heartbeats must not
// tear it apart (three answers in a row must be lost), and after the churn of a crash it
// must still become whole. Multicast is best effort, so only the tree is checked.
func TestLossyNetwork(t *testing.T) {
	r := newTestRing(t, 7, ringSize)
	r.net.SetLoss(0.02)
	topic := NewTopic(testRingID, "presence:frank@example.org")
	members := r.subscribe(topic, r.pick(50))
	if took, ok := r.awaitWhole(topic, members, 60*time.Second); !ok {
		t.Fatalf("tree not whole %v after subscribing on a lossy network", took)
	}
	var repairs uint64
	for _, tn := range r.liveNodes() {
		repairs += tn.sc.Stats().Repairs
	}
	r.settle(2 * time.Minute)
	var after uint64
	for _, tn := range r.liveNodes() {
		after += tn.sc.Stats().Repairs
	}
	t.Logf("2%% loss: %d needless repairs in 2 idle minutes", after-repairs)
	if !r.treeWhole(topic, members) {
		took, ok := r.awaitWhole(topic, members, 30*time.Second)
		t.Logf("tree was broken at a random instant; whole again after %v (%v)", took, ok)
		if !ok {
			t.Error("tree does not stay whole on a lossy network")
		}
	}
}
