package scribe

import (
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// Dissemination. The paper sends a multicast to the root, which pushes it down the tree. We
// let it enter at the first attached tree node on its route and flood it over tree edges,
// every node forwarding to all its tree neighbours except the one it came from: on a tree
// this is one message per edge, the same as the paper's when the entry point is the root,
// and it still reaches everyone when a re-anchoring has left the route's last hop outside
// the root's subtree. Message ids stop copies that a repair in progress might produce.

// flood delivers m here (once) and passes it to every tree neighbour except from.
func (s *Scribe) flood(m *message, from ids.ID) {
	var fx effects
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	now := s.cfg.Now()
	t := s.topics[m.Topic]
	if t != nil {
		// A message from a neighbour proves it alive, as the paper's implicit heartbeats.
		if t.parent.ID == from && !from.IsZero() {
			t.parentHeard = now
		} else if c := t.children[from]; c != nil {
			c.heard = now
		}
	}
	if !s.seen.add(m.MsgID, now, s.cfg.DedupeTTL, s.cfg.MaxDedupe) {
		s.stats.Duplicates++
		s.mu.Unlock()
		return
	}
	if t == nil {
		s.mu.Unlock()
		return // no tree here (a root that has not yet heard of any member): nobody to tell
	}
	var p []byte
	for _, nb := range t.neighbours() {
		if nb.ID == from || nb.ID == s.self.ID {
			continue
		}
		if p == nil {
			p = m.encode(s.cfg.Tag)
		}
		s.count(mMulticast, len(p))
		fx.sends = append(fx.sends, sent{nb, p})
	}
	app, key := t.app, t.key
	if app != nil {
		s.stats.Delivered++
	}
	s.mu.Unlock()
	s.run(&fx)
	if app != nil {
		app.Deliver(key, m.Payload)
	}
}

// searchAnycast continues an anycast's depth-first search at this node (Castro et al.,
// NGC 2003, section 3): offer it to the local member, else push this node's unvisited tree
// neighbours (children first, then the parent) on the to-visit stack and pass the message to
// the top of the stack. The search state travels in the message, so no node keeps any.
func (s *Scribe) searchAnycast(m *message) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	first := !slices.Contains(m.Visited, s.self.ID)
	var app App
	var key ids.Key
	if first {
		m.Visited = append(m.Visited, s.self.ID)
		if t := s.topics[m.Topic]; t != nil {
			app, key = t.app, t.key
		}
	}
	s.mu.Unlock()
	if app != nil && app.AnycastAccept(key, m.Payload) {
		s.finishAnycast(m, true)
		return
	}

	var fx effects
	s.mu.Lock()
	if t := s.topics[m.Topic]; t != nil {
		var front []pastry.Handle
		for _, nb := range t.neighbours() {
			if slices.Contains(m.Visited, nb.ID) || slices.ContainsFunc(m.ToVisit, func(h pastry.Handle) bool { return h.ID == nb.ID }) {
				continue
			}
			front = append(front, nb)
		}
		m.ToVisit = append(front, m.ToVisit...)
	}
	for len(m.ToVisit) > 0 && (slices.Contains(m.Visited, m.ToVisit[0].ID) || m.ToVisit[0].ID == s.self.ID) {
		m.ToVisit = m.ToVisit[1:]
	}
	if len(m.ToVisit) == 0 || len(m.Visited) >= maxSearch {
		s.mu.Unlock()
		s.finishAnycast(m, false)
		return
	}
	next := m.ToVisit[0]
	m.ToVisit = m.ToVisit[1:]
	if len(m.ToVisit) > maxSearch {
		m.ToVisit = m.ToVisit[:maxSearch] // the deepest pending branches are given up
	}
	s.sendLocked(&fx, next, m)
	s.mu.Unlock()
	s.run(&fx)
}

// finishAnycast reports the search's outcome to its origin.
func (s *Scribe) finishAnycast(m *message, accepted bool) {
	r := &message{Type: mAnycastResult, Topic: m.Topic, ReqID: m.ReqID, Accepted: accepted, Searched: len(m.Visited)}
	if accepted {
		r.Member = s.self
	}
	if m.Origin.ID == s.self.ID {
		s.onAnycastResult(s.self, r)
		return
	}
	var fx effects
	s.mu.Lock()
	s.sendLocked(&fx, m.Origin, r)
	s.mu.Unlock()
	s.run(&fx)
}

func (s *Scribe) onAnycastResult(from pastry.Handle, m *message) {
	s.mu.Lock()
	p := s.anycasts[m.ReqID]
	if p == nil || p.topic.ID != m.Topic {
		s.mu.Unlock()
		return // late (timed out) or forged: request ids are random 64-bit numbers
	}
	delete(s.anycasts, m.ReqID)
	s.mu.Unlock()
	res := AnycastResult{Topic: p.topic, Searched: m.Searched}
	switch {
	case m.Accepted:
		res.Member = from // the authenticated sender, not what the message claims
	case m.Searched >= maxSearch:
		res.Err = ErrSearchLimit
	default:
		res.Err = ErrNoMember
	}
	p.result(res)
}

func (s *Scribe) expireAnycastsLocked(fx *effects, now time.Time) {
	var expired []uint64
	for req, p := range s.anycasts {
		if !now.Before(p.deadline) {
			expired = append(expired, req)
		}
	}
	slices.Sort(expired) // deterministic callback order
	for _, req := range expired {
		p := s.anycasts[req]
		delete(s.anycasts, req)
		fx.calls = append(fx.calls, func() {
			p.result(AnycastResult{Topic: p.topic, Err: ErrAnycastTimeout})
		})
	}
}
