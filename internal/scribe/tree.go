package scribe

import (
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// Tree maintenance (Scribe paper, section 3): joining by routing SUBSCRIBE toward the topic
// and grafting at the first tree node on the route, leaving, heartbeats, and repair.

// HandleEvent takes one Pastry event. It returns true when the event was a Scribe message
// (handled, or rejected as malformed). Leaf-set changes are acted on (a root may have
// changed) but return false, since other applications want them too. It must be called
// outside the driver's lock, as Driver.OnEvent does.
func (s *Scribe) HandleEvent(e pastry.Event) bool {
	switch e.Kind {
	case pastry.EventLeafSetChanged, pastry.EventReady:
		s.checkRoots()
		return false
	case pastry.EventDeliver, pastry.EventDirect:
	default:
		return false
	}
	if len(e.Payload) == 0 || e.Payload[0] != s.cfg.Tag {
		return false
	}
	m, err := decode(s.cfg.Tag, e.Payload)
	s.mu.Lock()
	stopped := s.stopped
	if err != nil {
		s.stats.Rejected++
	} else {
		s.stats.Received++
	}
	s.mu.Unlock()
	if err != nil || stopped {
		return true
	}
	if e.Kind == pastry.EventDeliver {
		// Routed to us: we are the node closest to the topic, the tree's root.
		switch m.Type {
		case mSubscribe:
			s.onSubscribeAtRoot(m)
		case mMulticast:
			s.flood(m, ids.Zero)
		case mAnycast:
			s.searchAnycast(m)
		default:
			s.reject()
		}
		return true
	}
	from := e.Origin // authenticated by the transport and checked by pastry
	switch m.Type {
	case mSubscribeAck:
		s.onSubscribeAck(from, m)
	case mLeave:
		s.onLeave(from, m)
	case mHeartbeat:
		s.onHeartbeat(from, m)
	case mHeartbeatAck:
		s.onHeartbeatAck(from, m)
	case mMulticast:
		s.flood(m, from.ID)
	case mAnycast:
		s.searchAnycast(m)
	case mAnycastResult:
		s.onAnycastResult(from, m)
	default:
		s.reject()
	}
	return true
}

func (s *Scribe) reject() {
	s.mu.Lock()
	s.stats.Rejected++
	s.mu.Unlock()
}

// Forward is Scribe's Pastry Forward upcall; install it in the driver's Forwarder (through
// an appmux.Mux when the node runs other applications too). Payloads that are not Scribe's
// pass through unchanged.
//
// A SUBSCRIBE passing through makes this node a forwarder: the previous hop (named in the
// message, since Pastry's upcall does not say who sent it) becomes a child. If this node was
// already in the tree the message stops here; otherwise it goes on with this node as the
// child, so the next tree node on the route adopts it (paper, section 3.3). A multicast or
// anycast stops at the first attached tree node, which disseminates or searches from there.
// Forward runs inside the node's Step: replies are queued with Overlay.Defer.
func (s *Scribe) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	if len(payload) == 0 || payload[0] != s.cfg.Tag {
		return payload, true
	}
	m, err := decode(s.cfg.Tag, payload)
	if err != nil {
		s.reject()
		return nil, false // garbage is not worth carrying further
	}
	var fx effects
	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		if len(fx.routes)+len(fx.sends)+len(fx.calls) > 0 {
			s.ov.Defer(func() { s.run(&fx) })
		}
	}()
	if s.stopped || m.Topic != key {
		return payload, true
	}
	now := s.cfg.Now()
	t := s.topics[m.Topic]
	switch m.Type {
	case mSubscribe:
		if m.Child.ID == s.self.ID || next.ID == m.Child.ID {
			return payload, true // our own subscribe leaving, or one being routed back
		}
		if t != nil && t.parent.ID == m.Child.ID {
			// Our parent lost its own parent and is re-subscribing through us: adopting it
			// would make a two-node loop cut off from the root. Let it go on.
			return payload, true
		}
		t = s.topicLocked(m.Topic, true)
		t.addChild(m.Child, now)
		s.sendLocked(&fx, m.Child, &message{Type: mSubscribeAck, Topic: m.Topic, Depth: t.depth})
		if t.attached() || t.pending {
			return nil, false
		}
		s.markPendingLocked(t, now)
		m.Child = s.self
		return m.encode(s.cfg.Tag), true
	case mMulticast:
		if t != nil && t.attached() {
			fx.calls = append(fx.calls, func() { s.flood(m, ids.Zero) })
			return nil, false
		}
	case mAnycast:
		if t != nil && t.attached() {
			fx.calls = append(fx.calls, func() { s.searchAnycast(m) })
			return nil, false
		}
	}
	return payload, true
}

// onSubscribeAtRoot handles a SUBSCRIBE that Pastry delivered here: this node is the one
// closest to the topic, so it is the root (the paper's rendezvous point).
func (s *Scribe) onSubscribeAtRoot(m *message) {
	var fx effects
	s.mu.Lock()
	now := s.cfg.Now()
	t := s.topicLocked(m.Topic, true)
	if !t.root {
		s.becomeRootLocked(&fx, t)
	}
	if m.Child.ID != s.self.ID {
		t.addChild(m.Child, now)
		s.sendLocked(&fx, m.Child, &message{Type: mSubscribeAck, Topic: m.Topic, Depth: 0})
	}
	s.mu.Unlock()
	s.run(&fx)
}

func (s *Scribe) becomeRootLocked(fx *effects, t *topic) {
	if !t.parent.ID.IsZero() {
		s.sendLocked(fx, t.parent, &message{Type: mLeave, Topic: t.key.ID})
		s.stats.Reanchors++
	}
	t.parent = pastry.Handle{}
	t.root, t.pending = true, false
	t.tries = 0
	t.depth = 0
}

func (s *Scribe) markPendingLocked(t *topic, now time.Time) {
	t.pending = true
	t.tries++
	t.retryAt = now.Add(s.cfg.SubscribeTimeout << min(t.tries-1, 3))
}

// subscribeLocked routes a SUBSCRIBE for t with this node as the child.
func (s *Scribe) subscribeLocked(fx *effects, t *topic) {
	s.markPendingLocked(t, s.cfg.Now())
	s.routeLocked(fx, t.key.ID, &message{Type: mSubscribe, Topic: t.key.ID, Child: s.self})
}

// repairLocked detaches t from its parent and re-subscribes; Pastry routes the new SUBSCRIBE
// around the failed node, so the subtree grafts onto the tree elsewhere (paper, section 3.4).
func (s *Scribe) repairLocked(fx *effects, t *topic) {
	s.stats.Repairs++
	t.parent = pastry.Handle{}
	t.root = false
	t.tries = 0
	s.subscribeLocked(fx, t)
}

func (s *Scribe) onSubscribeAck(from pastry.Handle, m *message) {
	var fx effects
	s.mu.Lock()
	now := s.cfg.Now()
	t := s.topics[m.Topic]
	switch {
	case t == nil || t.root:
		s.sendLocked(&fx, from, &message{Type: mLeave, Topic: m.Topic})
	case t.parent.ID == from.ID:
		t.parentHeard = now
		t.depth = satDepth(m.Depth)
	case t.parent.ID.IsZero() && t.children[from.ID] == nil:
		t.parent = from
		t.parentHeard = now
		t.pending = false
		t.tries = 0
		t.depth = satDepth(m.Depth)
	default:
		// A second parent (a subscribe accepted twice after a reroute) or our own child
		// (a loop): decline it; a pending subscribe retries on its timer.
		s.sendLocked(&fx, from, &message{Type: mLeave, Topic: m.Topic})
	}
	s.mu.Unlock()
	s.run(&fx)
}

func satDepth(d uint8) uint8 {
	if d >= depthNotParent-1 {
		return depthNotParent - 1
	}
	return d + 1
}

func (s *Scribe) onLeave(from pastry.Handle, m *message) {
	var fx effects
	s.mu.Lock()
	if t := s.topics[m.Topic]; t != nil && t.removeChild(from.ID) {
		s.pruneLocked(&fx, t)
	}
	s.mu.Unlock()
	s.run(&fx)
}

// pruneLocked drops t once this node neither subscribes nor forwards for anyone.
func (s *Scribe) pruneLocked(fx *effects, t *topic) {
	if t.app != nil || len(t.children) > 0 {
		return
	}
	if !t.parent.ID.IsZero() {
		s.sendLocked(fx, t.parent, &message{Type: mLeave, Topic: t.key.ID})
	}
	s.deleteTopicLocked(t)
}

// onHeartbeat answers a child's heartbeat: per topic our depth, or "not your parent" when we
// have forgotten the topic (the child then re-subscribes). A child we had dropped (timed out
// during a partition) is taken back.
func (s *Scribe) onHeartbeat(from pastry.Handle, m *message) {
	var fx effects
	s.mu.Lock()
	now := s.cfg.Now()
	acks := make([]topicAck, 0, len(m.Topics))
	for _, id := range m.Topics {
		t := s.topics[id]
		if t == nil || t.parent.ID == from.ID {
			acks = append(acks, topicAck{Topic: id, Depth: depthNotParent})
			continue
		}
		t.addChild(from, now)
		acks = append(acks, topicAck{Topic: id, Depth: t.depth})
	}
	s.sendLocked(&fx, from, &message{Type: mHeartbeatAck, Acks: acks})
	s.mu.Unlock()
	s.run(&fx)
}

func (s *Scribe) onHeartbeatAck(from pastry.Handle, m *message) {
	var fx effects
	s.mu.Lock()
	now := s.cfg.Now()
	for _, a := range m.Acks {
		t := s.topics[a.Topic]
		if t == nil || t.parent.ID != from.ID {
			continue
		}
		if a.Depth == depthNotParent {
			s.repairLocked(&fx, t)
			continue
		}
		t.parentHeard = now
		t.depth = satDepth(a.Depth)
		if int(t.depth) > s.cfg.MaxDepth {
			// Depth grows without bound only around a loop that has lost the root
			// (possible while leaf sets disagree): break it here.
			s.sendLocked(&fx, from, &message{Type: mLeave, Topic: a.Topic})
			s.repairLocked(&fx, t)
		}
	}
	s.mu.Unlock()
	s.run(&fx)
}

// Tick runs timers: parent and child timeouts, subscribe retries, heartbeats, anycast
// timeouts, and a periodic root check. Call it a few times per HeartbeatInterval.
func (s *Scribe) Tick(now time.Time) {
	var fx effects
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	for _, id := range slices.Clone(s.order) {
		t := s.topics[id]
		dropped := false
		for _, cid := range slices.Clone(t.childOrder) {
			if now.Sub(t.children[cid].heard) > s.cfg.ChildTimeout {
				t.removeChild(cid)
				dropped = true
			}
		}
		if !t.parent.ID.IsZero() && now.Sub(t.parentHeard) > s.cfg.ParentTimeout {
			// Tell the parent, in case only its answers were lost, then graft elsewhere.
			s.sendLocked(&fx, t.parent, &message{Type: mLeave, Topic: id})
			s.repairLocked(&fx, t)
		} else if t.pending && !now.Before(t.retryAt) {
			s.subscribeLocked(&fx, t)
		}
		if dropped {
			s.pruneLocked(&fx, t)
		}
	}
	heartbeat := !now.Before(s.nextHeartbeat)
	if heartbeat {
		// ±10% jitter keeps the nodes' heartbeats from synchronising.
		j := time.Duration(s.cfg.Rand.Int64N(int64(s.cfg.HeartbeatInterval)/5+1)) - s.cfg.HeartbeatInterval/10
		s.nextHeartbeat = now.Add(s.cfg.HeartbeatInterval + j)
		s.heartbeatLocked(&fx)
	}
	s.expireAnycastsLocked(&fx, now)
	s.mu.Unlock()
	s.run(&fx)
	if heartbeat {
		s.checkRoots()
	}
}

// heartbeatLocked sends each parent node one message naming every topic it is our parent
// for: the cost is per tree edge between two nodes, not per topic.
func (s *Scribe) heartbeatLocked(fx *effects) {
	var parents []pastry.Handle
	byParent := map[ids.ID][]ids.ID{}
	for _, id := range s.order {
		t := s.topics[id]
		if t.parent.ID.IsZero() {
			continue
		}
		if _, ok := byParent[t.parent.ID]; !ok {
			parents = append(parents, t.parent)
		}
		byParent[t.parent.ID] = append(byParent[t.parent.ID], id)
	}
	for _, p := range parents {
		list := byParent[p.ID]
		for len(list) > 0 {
			n := min(len(list), maxHBTopics)
			s.sendLocked(fx, p, &message{Type: mHeartbeat, Topics: list[:n]})
			list = list[n:]
		}
	}
}

// checkRoots re-anchors trees after the leaf set changed (paper, section 3.4): a root that
// is no longer closest to its topic subscribes toward the new root, keeping its children; a
// node that has become closest takes over as root and leaves its old parent.
func (s *Scribe) checkRoots() {
	s.mu.Lock()
	if s.stopped || len(s.order) == 0 {
		s.mu.Unlock()
		return
	}
	topics := slices.Clone(s.order)
	s.mu.Unlock()

	closest := make([]bool, len(topics))
	ready := false
	s.ov.With(func(n *pastry.Node) {
		if ready = n.Ready(); !ready {
			return
		}
		for i, id := range topics {
			closest[i] = n.InRange(id) && n.ReplicaSet(id, 1)[0].ID == s.self.ID
		}
	})
	if !ready {
		return
	}
	var fx effects
	s.mu.Lock()
	for i, id := range topics {
		t := s.topics[id]
		if t == nil {
			continue
		}
		switch {
		case closest[i] && !t.root:
			s.becomeRootLocked(&fx, t)
		case !closest[i] && t.root:
			s.stats.Reanchors++
			t.root = false
			t.tries = 0
			s.subscribeLocked(&fx, t)
		}
	}
	s.mu.Unlock()
	s.run(&fx)
}
