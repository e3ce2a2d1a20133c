package imapserver

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// SORT and THREAD (RFC 5256), and SORT's DISPLAYFROM/DISPLAYTO (RFC 5957), from the store's
// parse cache. Strings compare under i;ascii-casemap (ASCII letters folded to upper case).

// baseSubject is RFC 5256 section 2.1's base subject, and whether the subject was a reply
// or forward (a leader or a "(fwd)" trailer or "[fwd: ...]" wrapper was removed).
func baseSubject(subject string) (string, bool) {
	s := strings.Join(strings.Fields(decodeHeader(subject)), " ")
	reply := false
	for {
		// (2) trailers: "(fwd)" and white space.
		for {
			t := strings.TrimRight(s, " ")
			if low := strings.ToLower(t); strings.HasSuffix(low, "(fwd)") {
				t = t[:len(t)-5]
				reply = true
			}
			if t == s {
				break
			}
			s = t
		}
		// (3)-(5) leaders: blobs and re/fw/fwd with an optional blob, then ":".
		for changed := true; changed; {
			changed = false
			t := strings.TrimLeft(s, " ")
			if rest, ok := cutLeader(t); ok {
				t, changed, reply = rest, true, true
			} else if strings.HasPrefix(t, "[") {
				if j := strings.IndexByte(t, ']'); j > 0 && !strings.ContainsAny(t[1:j], "[") {
					if rest := strings.TrimLeft(t[j+1:], " "); rest != "" {
						t, changed = rest, true
					}
				}
			}
			s = t
		}
		// (6) the "[fwd: ...]" wrapper.
		if low := strings.ToLower(s); strings.HasPrefix(low, "[fwd:") && strings.HasSuffix(s, "]") {
			s = strings.TrimSpace(s[5 : len(s)-1])
			reply = true
			continue
		}
		return s, reply
	}
}

// cutLeader removes one subj-refwd: ("re" / "fw" / "fwd") *WSP [subj-blob] ":" *WSP.
func cutLeader(s string) (string, bool) {
	low := strings.ToLower(s)
	var n int
	switch {
	case strings.HasPrefix(low, "fwd"):
		n = 3
	case strings.HasPrefix(low, "fw"), strings.HasPrefix(low, "re"):
		n = 2
	default:
		return s, false
	}
	rest := strings.TrimLeft(s[n:], " ")
	if strings.HasPrefix(rest, "[") {
		j := strings.IndexByte(rest, ']')
		if j < 0 || strings.ContainsAny(rest[1:j], "[") {
			return s, false
		}
		rest = strings.TrimLeft(rest[j+1:], " ")
	}
	if !strings.HasPrefix(rest, ":") {
		return s, false
	}
	return strings.TrimLeft(rest[1:], " "), true
}

// sortMsg is what SORT and THREAD need of one message.
type sortMsg struct {
	seq     uint32
	uid     mailbox.UID
	arrival time.Time
	sent    time.Time
	size    int64
	env     *mailbox.Envelope
	subject string // base subject, upper case
	reply   bool
	id      string
	refs    []string
}

func (s *session) sortMsgs() ([]*sortMsg, error) {
	v := s.sel
	var out []*sortMsg
	for i, u := range v.uids {
		m, err := v.folder.Message(u)
		if err != nil {
			continue // expunged elsewhere
		}
		out = append(out, newSortMsg(uint32(i+1), u, m))
	}
	return out, nil
}

func newSortMsg(seq uint32, u mailbox.UID, m *mailbox.Message) *sortMsg {
	env := &mailbox.Envelope{}
	if m.Structure != nil && m.Structure.Envelope != nil {
		env = m.Structure.Envelope
	}
	sm := &sortMsg{seq: seq, uid: u, arrival: m.InternalDate, sent: env.Date, size: m.Size, env: env}
	if sm.sent.IsZero() {
		sm.sent = m.InternalDate // RFC 5256 section 2.2
	}
	base, reply := baseSubject(env.Subject)
	sm.subject, sm.reply = strings.ToUpper(base), reply
	sm.id = strings.Trim(env.MessageID, "<> ")
	return sm
}

func firstMailbox(l []mailbox.Address) string {
	if len(l) == 0 {
		return ""
	}
	return strings.ToUpper(l[0].Mailbox)
}

func display(l []mailbox.Address) string {
	if len(l) == 0 {
		return ""
	}
	if l[0].Name != "" {
		return strings.ToUpper(decodeHeader(l[0].Name))
	}
	return strings.ToUpper(l[0].Mailbox + "@" + l[0].Host)
}

// matching is the selected mailbox's messages that meet a SORT or THREAD search program; on
// a refusal it has answered the command and reports false.
func (s *session) matching(tag, charset string, key *imapwire.SearchKey) ([]*sortMsg, bool) {
	if cs := strings.ToUpper(charset); cs != "UTF-8" && cs != "US-ASCII" {
		s.no(tag, "BADCHARSET (UTF-8 US-ASCII)", "Only UTF-8 and US-ASCII")
		return nil, false
	}
	msgs, err := s.sortMsgs()
	if err != nil {
		s.storeNo(tag, err)
		return nil, false
	}
	v := s.sel
	return slices.DeleteFunc(msgs, func(m *sortMsg) bool {
		l, err := v.folder.Message(m.uid)
		if err != nil {
			return true
		}
		return !(&candidate{s: s, seq: m.seq, sum: &l.Summary}).match(key)
	}), true
}

// sortOrder compares two messages under SORT criteria; ties go to mailbox order (RFC 5256
// section 3), which is UID order, so that a message's place among others never changes while
// it stays in the mailbox (what CONTEXT=SORT's positions rely on).
func sortOrder(criteria []imapwire.SortCriterion) func(x, y *sortMsg) int {
	return func(x, y *sortMsg) int {
		for _, c := range criteria {
			var r int
			switch c.Key {
			case "ARRIVAL":
				r = x.arrival.Compare(y.arrival)
			case "DATE":
				r = x.sent.Compare(y.sent)
			case "SIZE":
				r = cmp.Compare(x.size, y.size)
			case "SUBJECT":
				r = strings.Compare(x.subject, y.subject)
			case "FROM":
				r = strings.Compare(firstMailbox(x.env.From), firstMailbox(y.env.From))
			case "TO":
				r = strings.Compare(firstMailbox(x.env.To), firstMailbox(y.env.To))
			case "CC":
				r = strings.Compare(firstMailbox(x.env.Cc), firstMailbox(y.env.Cc))
			case "DISPLAYFROM":
				r = strings.Compare(display(x.env.From), display(y.env.From))
			case "DISPLAYTO":
				r = strings.Compare(display(x.env.To), display(y.env.To))
			}
			if c.Reverse {
				r = -r
			}
			if r != 0 {
				return r
			}
		}
		return cmp.Compare(x.uid, y.uid)
	}
}

// sortCmd is SORT and UID SORT (RFC 5256), with ESORT's return options, PARTIAL and UPDATE
// (RFC 5267 sections 3 and 4: CONTEXT=SORT, see context.go).
func (s *session) sortCmd(tag string, uid bool, a *imapwire.Sort) {
	if !s.checkReturn(tag, a.Return) {
		return
	}
	msgs, ok := s.matching(tag, a.Charset, a.Key)
	if !ok {
		return
	}
	slices.SortFunc(msgs, sortOrder(a.Criteria))
	var nums []uint32
	for _, m := range msgs {
		if uid {
			nums = append(nums, uint32(m.uid))
		} else {
			nums = append(nums, m.seq)
		}
	}
	if r := a.Return; r != nil {
		w := s.w.StartUntagged().Atom("ESEARCH").Open().Atom("TAG").String(tag).Close()
		if uid {
			w.Atom("UID")
		}
		if len(nums) > 0 && r.Min {
			w.Atom("MIN").Number(uint64(nums[0]))
		}
		if len(nums) > 0 && r.Max {
			w.Atom("MAX").Number(uint64(nums[len(nums)-1]))
		}
		if len(nums) > 0 && (r.All || !r.Min && !r.Max && !r.Count && r.Partial == nil) {
			w.Atom("ALL").Atom(compress(nums)) // in the sorted order (section 3.2)
		}
		if r.Count {
			w.Atom("COUNT").Number(uint64(len(nums)))
		}
		if r.Partial != nil {
			s.writePartial(r.Partial, nums)
		}
		w.End()
		if r.Update {
			matched := make([]mailbox.UID, len(msgs))
			for i, m := range msgs {
				matched[i] = m.uid
			}
			if c := s.startContext(tag, uid, a.Key, matched); c != nil {
				c.criteria, c.order = a.Criteria, msgs
			}
		}
	} else {
		w := s.w.StartUntagged().Atom("SORT")
		for _, n := range nums {
			w.Number(uint64(n))
		}
		w.End()
	}
	s.sync(false)
	s.ok(tag, "SORT completed")
}

// node is one container of the thread tree.
type node struct {
	msg      *sortMsg // nil for a dummy
	parent   *node
	children []*node
}

func (n *node) date() time.Time {
	if n.msg != nil {
		return n.msg.sent
	}
	if len(n.children) > 0 {
		return n.children[0].date()
	}
	return time.Time{}
}

func (n *node) seq() uint32 {
	if n.msg != nil {
		return n.msg.seq
	}
	if len(n.children) > 0 {
		return n.children[0].seq()
	}
	return 0
}

func (n *node) isAncestor(of *node) bool {
	for p := of; p != nil; p = p.parent {
		if p == n {
			return true
		}
	}
	return false
}

func (n *node) adopt(c *node) {
	if c.parent != nil {
		c.parent.children = slices.DeleteFunc(c.parent.children, func(x *node) bool { return x == c })
	}
	c.parent = n
	n.children = append(n.children, c)
}

func sortNodes(ns []*node) {
	slices.SortStableFunc(ns, func(x, y *node) int {
		if r := x.date().Compare(y.date()); r != 0 {
			return r
		}
		return cmp.Compare(x.seq(), y.seq())
	})
}

func sortTree(ns []*node) {
	for _, n := range ns {
		sortTree(n.children)
	}
	sortNodes(ns)
}

// threadReferences is RFC 5256's REFERENCES algorithm.
func threadReferences(msgs []*sortMsg, refsOf func(*sortMsg) []string) []*node {
	byID := map[string]*node{}
	var all []*node
	get := func(id string) *node {
		n := byID[id]
		if n == nil {
			n = &node{}
			byID[id] = n
			all = append(all, n)
		}
		return n
	}
	for i, m := range msgs {
		id := m.id
		if id == "" || byID[id] != nil && byID[id].msg != nil {
			id = "\x00unique-" + strconv.Itoa(i) // missing or duplicate Message-ID
		}
		c := get(id)
		c.msg = m
		refs := refsOf(m)
		var prev *node
		for _, r := range refs {
			rc := get(r)
			if prev != nil && rc.parent == nil && !rc.isAncestor(prev) && rc != prev {
				prev.adopt(rc)
			}
			prev = rc
		}
		if c.parent != nil {
			c.parent.children = slices.DeleteFunc(c.parent.children, func(x *node) bool { return x == c })
			c.parent = nil
		}
		if prev != nil && prev != c && !c.isAncestor(prev) {
			prev.adopt(c)
		}
	}
	var roots []*node
	for _, n := range all {
		if n.parent == nil {
			roots = append(roots, n)
		}
	}
	roots = prune(roots, true)
	sortTree(roots)
	// Group the roots by base subject (step 5).
	bySubject := map[string]*node{}
	subjectOf := func(n *node) (*sortMsg, bool) {
		if n.msg != nil {
			return n.msg, true
		}
		if len(n.children) > 0 && n.children[0].msg != nil {
			return n.children[0].msg, true
		}
		return nil, false
	}
	for _, r := range roots {
		m, ok := subjectOf(r)
		if !ok || m.subject == "" {
			continue
		}
		cur := bySubject[m.subject]
		if cur == nil || r.msg == nil && cur.msg != nil || cur.msg != nil && cur.msg.reply && !m.reply {
			bySubject[m.subject] = r
		}
	}
	var out []*node
	for _, r := range roots {
		m, ok := subjectOf(r)
		if !ok || m.subject == "" || bySubject[m.subject] == nil || bySubject[m.subject] == r {
			out = append(out, r)
			continue
		}
		g := bySubject[m.subject]
		switch {
		case g.msg == nil && r.msg == nil:
			for _, c := range slices.Clone(r.children) {
				g.adopt(c)
			}
		case g.msg == nil:
			g.adopt(r)
		case r.msg != nil && r.msg.reply && !g.msg.reply:
			g.adopt(r)
		default:
			d := &node{}
			parent := g.parent
			if parent != nil {
				parent.children = slices.DeleteFunc(parent.children, func(x *node) bool { return x == g })
			}
			g.parent = nil
			d.adopt(g)
			d.adopt(r)
			bySubject[m.subject] = d
			for i, x := range out {
				if x == g {
					out[i] = d
				}
			}
		}
	}
	sortTree(out)
	return out
}

// prune removes dummies without children and promotes the children of dummies (except at the
// root, where a dummy with several children stays: RFC 5256 step 4).
func prune(ns []*node, root bool) []*node {
	var out []*node
	for _, n := range ns {
		n.children = prune(n.children, false)
		for _, c := range n.children {
			c.parent = n
		}
		switch {
		case n.msg == nil && len(n.children) == 0:
		case n.msg == nil && (!root || len(n.children) == 1):
			for _, c := range n.children {
				c.parent = n.parent
				out = append(out, c)
			}
		default:
			out = append(out, n)
		}
	}
	return out
}

// threadOrderedSubject is RFC 5256's ORDEREDSUBJECT: messages of one base subject, in date
// order, all children of the first.
func threadOrderedSubject(msgs []*sortMsg) []*node {
	sorted := slices.Clone(msgs)
	slices.SortStableFunc(sorted, func(x, y *sortMsg) int {
		if r := strings.Compare(x.subject, y.subject); r != 0 {
			return r
		}
		if r := x.sent.Compare(y.sent); r != 0 {
			return r
		}
		return cmp.Compare(x.seq, y.seq)
	})
	var roots []*node
	var cur *node
	for _, m := range sorted {
		n := &node{msg: m}
		if cur != nil && cur.msg.subject == m.subject {
			cur.adopt(n)
			continue
		}
		cur = n
		roots = append(roots, n)
	}
	sortNodes(roots)
	return roots
}

// formatThread writes one thread: "(3 6 (4 23)(44 7 96))".
func formatThread(b *strings.Builder, n *node, num func(*sortMsg) uint32) {
	if n.msg != nil {
		b.WriteString(strconv.FormatUint(uint64(num(n.msg)), 10))
	}
	switch {
	case len(n.children) == 1 && n.msg != nil:
		b.WriteByte(' ')
		formatThread(b, n.children[0], num)
	case len(n.children) > 0:
		if n.msg != nil {
			b.WriteByte(' ')
		}
		for _, c := range n.children {
			b.WriteByte('(')
			formatThread(b, c, num)
			b.WriteByte(')')
		}
	}
}

func (s *session) threadCmd(tag string, uid bool, a *imapwire.Thread) {
	msgs, ok := s.matching(tag, a.Charset, a.Key)
	if !ok {
		return
	}
	var roots []*node
	switch strings.ToUpper(a.Algorithm) {
	case "ORDEREDSUBJECT":
		roots = threadOrderedSubject(msgs)
	case "REFERENCES":
		roots = threadReferences(msgs, func(m *sortMsg) []string { return s.references(m) })
	default:
		s.bad(tag, "Unknown THREAD algorithm "+a.Algorithm)
		return
	}
	num := func(m *sortMsg) uint32 {
		if uid {
			return uint32(m.uid)
		}
		return m.seq
	}
	var b strings.Builder
	for _, r := range roots {
		b.WriteByte('(')
		formatThread(&b, r, num)
		b.WriteByte(')')
	}
	w := s.w.StartUntagged().Atom("THREAD")
	if b.Len() > 0 {
		w.Atom(b.String())
	}
	w.End()
	s.sync(false)
	s.ok(tag, "THREAD completed")
}

// references lists a message's References (or else its first In-Reply-To) message ids.
func (s *session) references(m *sortMsg) []string {
	c, err := s.sel.folder.Content(m.uid)
	if err != nil {
		return nil
	}
	hs := int64(0)
	if msg, err := s.sel.folder.Message(m.uid); err == nil && msg.Structure != nil {
		hs = msg.Structure.HeaderSize
	}
	if hs <= 0 || hs > c.Size() {
		hs = min(c.Size(), 256<<10)
	}
	raw := make([]byte, hs)
	c.ReadAt(raw, 0)
	h := newEntity(raw).header()
	ids := msgIDs(h.Get("References"))
	if len(ids) == 0 {
		if irt := msgIDs(h.Get("In-Reply-To")); len(irt) > 0 {
			ids = irt[:1]
		}
	}
	return ids
}

// msgIDs extracts the <...> message ids of a header value.
func msgIDs(v string) []string {
	var out []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return out
		}
		if id := strings.TrimSpace(v[i+1 : i+j]); id != "" {
			out = append(out, id)
		}
		v = v[i+j+1:]
	}
}
