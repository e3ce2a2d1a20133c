package imapsort

import (
	"cmp"
	"slices"
	"time"
)

// container is one node of the REFERENCES working tree: a message, or a dummy for a Message
// ID that is referenced but belongs to no message threaded.
type container struct {
	msg      *Msg // nil: dummy
	sent     time.Time
	reply    bool // the subject marks a reply or forward (set in step 5)
	parent   *container
	children []*container
	slot     int // index in parent.children while step 1 builds the links
}

// threadReferences is THREAD=REFERENCES, RFC 5256 section 3, steps (1) to (6).
func threadReferences(msgs []Msg) []*Node {
	// Messages in mailbox order: the lowest sequence number keeps a duplicated Message ID.
	order := make([]int, len(msgs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(msgs[a].Seq, msgs[b].Seq) })

	cs := make([]container, len(msgs))
	byID := make(map[string]*container, len(msgs))
	var ids []string
	for k, i := range order {
		m := &msgs[i]
		cs[k] = container{msg: m, sent: m.sent()}
		// A message without a valid Message ID, or with one an earlier message has, gets a
		// unique ID: here, none at all, as nothing could refer to it.
		ids = msgIDs(ids[:0], m.MessageID, true)
		if len(ids) == 1 {
			if _, dup := byID[ids[0]]; !dup {
				byID[ids[0]] = &cs[k]
			}
		}
	}

	// (1) Links from each message's references, in mailbox order.
	var dummies []*container
	lookup := func(id string) *container {
		c := byID[id]
		if c == nil {
			c = &container{}
			dummies = append(dummies, c)
			byID[id] = c
		}
		return c
	}
	for k, i := range order {
		m := &msgs[i]
		// References; or if it holds no Message ID, the first one of In-Reply-To.
		ids = msgIDs(ids[:0], m.References, false)
		if len(ids) == 0 {
			ids = msgIDs(ids, m.InReplyTo, true)
		}
		// (1.A) Each reference is the parent of the next, unless the next already has a
		// parent (a References line may have been truncated) or the link would make a loop.
		var prev *container
		for _, id := range ids {
			c := lookup(id)
			if prev != nil && c.parent == nil && !wouldLoop(prev, c) {
				link(prev, c)
			}
			prev = c
		}
		// (1.B) The last reference is the message's parent, replacing a parent guessed from
		// other messages' references. With no references the message has no parent. When
		// the new link would make a loop the existing links stay as they are.
		me := &cs[k]
		switch {
		case prev == nil:
			if me.parent != nil {
				unlink(me)
			}
		case me.parent != prev && !wouldLoop(prev, me):
			if me.parent != nil {
				unlink(me)
			}
			link(prev, me)
		}
	}

	// (2) The messages and dummies without a parent are the children of the root.
	var roots []*container
	for k := range cs {
		if cs[k].parent == nil {
			roots = append(roots, &cs[k])
		}
	}
	for _, d := range dummies {
		if d.parent == nil {
			roots = append(roots, d)
		}
	}

	// (3) Prune dummies.
	roots = prune(roots, true)

	// (4) Sort the root's children by sent date; a dummy by its first child once its own
	// children are sorted.
	for _, r := range roots {
		if r.msg == nil {
			sortSiblings(r.children)
		}
	}
	sortSiblings(roots)

	// (5) Gather threads with the same base subject.
	roots = groupBySubject(roots)

	// (6) Sort every set of siblings by sent date, children before their parents, so that a
	// dummy sorts by its first child.
	sortTree(roots)

	out := make([]*Node, len(roots))
	for i, r := range roots {
		out[i] = r.node()
	}
	return out
}

// wouldLoop reports whether making parent the parent of child would make a loop: whether child
// is parent or one of its ancestors. A child without children cannot be anyone's ancestor,
// which keeps linking a new message to a long chain cheap.
func wouldLoop(parent, child *container) bool {
	if parent == child {
		return true
	}
	if len(child.children) == 0 {
		return false
	}
	for p := parent.parent; p != nil; p = p.parent {
		if p == child {
			return true
		}
	}
	return false
}

func link(parent, child *container) {
	child.parent = parent
	child.slot = len(parent.children)
	parent.children = append(parent.children, child)
}

// unlink removes child from its parent's children in constant time. The order of siblings is
// not kept: steps (4) and (6) sort every set of siblings before it matters.
func unlink(child *container) {
	p := child.parent
	last := len(p.children) - 1
	moved := p.children[last]
	p.children[child.slot] = moved
	moved.slot = child.slot
	p.children[last] = nil
	p.children = p.children[:last]
	child.parent = nil
}

// prune is step (3) over one set of siblings, depth first: a dummy without children goes, a
// dummy with children gives way to them, except that at the root a dummy with two or more
// children stays.
func prune(list []*container, atRoot bool) []*container {
	dummy := false
	for _, c := range list {
		// Pruning below first leaves no dummy under c, whatever its level.
		c.children = prune(c.children, false)
		dummy = dummy || c.msg == nil
	}
	if !dummy {
		return list
	}
	out := make([]*container, 0, len(list))
	for _, c := range list {
		switch {
		case c.msg != nil:
			out = append(out, c)
		case len(c.children) == 0:
		case !atRoot || len(c.children) == 1:
			for _, g := range c.children {
				g.parent = c.parent
			}
			out = append(out, c.children...)
		default:
			out = append(out, c)
		}
	}
	return out
}

// first is the message a container sorts and is named by: itself, or a dummy's first child.
func (c *container) first() *container {
	for c.msg == nil && len(c.children) > 0 {
		c = c.children[0]
	}
	return c
}

// compareSent orders by sent date, then by sequence number (RFC 5256 section 2.2).
func compareSent(x, y *container) int {
	x, y = x.first(), y.first()
	if r := x.sent.Compare(y.sent); r != 0 {
		return r
	}
	var xs, ys uint32
	if x.msg != nil {
		xs = x.msg.Seq
	}
	if y.msg != nil {
		ys = y.msg.Seq
	}
	return cmp.Compare(xs, ys)
}

func sortSiblings(list []*container) {
	slices.SortStableFunc(list, compareSent)
}

func sortTree(list []*container) {
	for _, c := range list {
		sortTree(c.children)
	}
	sortSiblings(list)
}

// groupBySubject is step (5): threads whose subjects have the same base subject are joined,
// under the one that is not a reply, or under a dummy.
func groupBySubject(roots []*container) []*container {
	bases := make([]string, len(roots))
	for i, r := range roots {
		f := r.first()
		if f.msg == nil {
			continue
		}
		base, reply := BaseSubjectReply(f.msg.Subject)
		bases[i] = foldASCII(base) // subject comparisons are case-insensitive
		if r.msg != nil {
			r.reply = reply
		}
	}
	// (5.A, 5.B) The subject table: for each base subject the thread the others join. A
	// dummy wins over a message, and a message that is not a reply over one that is.
	table := make(map[string]int, len(roots))
	for i, r := range roots {
		if bases[i] == "" {
			continue
		}
		j, ok := table[bases[i]]
		if !ok {
			table[bases[i]] = i
			continue
		}
		if t := roots[j]; t.msg != nil && (r.msg == nil || t.reply && !r.reply) {
			table[bases[i]] = i
		}
	}
	// (5.C) Merge every other thread into the table's.
	for i, r := range roots {
		if bases[i] == "" {
			continue
		}
		j := table[bases[i]]
		if j == i {
			continue
		}
		t := roots[j]
		switch {
		case t.msg == nil && r.msg == nil:
			t.children = append(t.children, r.children...)
		case t.msg == nil:
			t.children = append(t.children, r)
		case r.msg != nil && r.reply && !t.reply:
			t.children = append(t.children, r)
		default:
			roots[j] = &container{children: []*container{t, r}}
		}
		roots[i] = nil
	}
	return slices.DeleteFunc(roots, func(c *container) bool { return c == nil })
}

// node converts the working tree to the result.
func (c *container) node() *Node {
	n := &Node{Msg: c.msg}
	if len(c.children) > 0 {
		n.Children = make([]*Node, len(c.children))
		for i, k := range c.children {
			n.Children[i] = k.node()
		}
	}
	return n
}
