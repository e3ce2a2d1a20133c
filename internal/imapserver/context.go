package imapserver

import (
	"slices"
	"strconv"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4) and PARTIAL (RFC 5267 section 4.4,
// RFC 9394).
//
// SEARCH RETURN (UPDATE) makes the search a live context: the session keeps the set of
// matching messages and, whenever it brings the client up to date (sync, and IDLE and NOTIFY
// through it), tells the client how the set changed in ESEARCH responses with ADDTO and
// REMOVEFROM (section 4.3). Positions are always 0, which SEARCH results may use (sections
// 4.3.3 and 4.3.4), and the updates are in mailbox order. A REMOVEFROM for expunged messages is
// sent before their EXPUNGE (or VANISHED), an ADDTO for new ones after their EXISTS, so the
// message numbers in them are valid when read. UPDATE has no interaction with the other return
// options (section 4.3): updates are about the whole set, whatever MIN, MAX, COUNT or PARTIAL
// asked for. A context ends with CANCELUPDATE or when the mailbox is no longer selected.
//
// A SORT RETURN (UPDATE) context keeps its result in the requested order, and its ADDTO and
// REMOVEFROM carry context positions (sections 4.3.3 and 4.3.4): pairs of a 1-based position and
// the messages, in the requested order, inserted there or removed from there, each pair applied
// in turn. A message's sort keys never change (the envelope, size and dates are immutable, and
// ties go to mailbox order), so a change of the result is only messages joining or leaving it;
// the relative order of the rest stays. Removals are written from the front of the list, each
// position counted after the removals before it; additions likewise, into the list the removals
// left, so a run of adjacent new results is one pair: ADDTO (1 2731:2733).
//
// CONTEXT is a hint this server does not need (section 4.2): searches are not cached.

// maxContexts bounds the live contexts of a session; one more is refused with NOUPDATE
// (section 4.3.1: at least one must be offered).
const maxContexts = 16

// searchContext is one live SEARCH or SORT RETURN (UPDATE).
type searchContext struct {
	tag    string
	uid    bool
	key    *imapwire.SearchKey
	view   *view                // the selection it belongs to: it dies with it
	result map[mailbox.UID]bool // the matching messages, as the client knows them
	modSeq uint64               // messages changed at or below it have been evaluated
	full   bool                 // the key's result can change without a change of the message

	// SORT contexts: the requested order, and the result in it as the client knows it.
	criteria []imapwire.SortCriterion
	order    []*sortMsg
}

// volatileKeys are the search keys whose result can change without a change to the message:
// sequence numbers shift with expunges, "$" with SEARCH RETURN (SAVE), YOUNGER and OLDER with
// time. A context with one is evaluated afresh over every message on each update.
var volatileKeys = []string{"SEQSET", "YOUNGER", "OLDER"}

func usesVolatile(k *imapwire.SearchKey) bool {
	if k == nil {
		return false
	}
	if slices.Contains(volatileKeys, k.Op) || k.Op == "UID" && k.Seq.Saved {
		return true
	}
	return slices.ContainsFunc(k.Sub, usesVolatile)
}

// checkReturn refuses return options that cannot be served: more than one of PARTIAL and ALL
// (section 4.4), UPDATE with a tag an updating context already uses (section 4.3: BAD). It
// answers and reports false when it refuses.
func (s *session) checkReturn(tag string, r *imapwire.Return) bool {
	if r == nil {
		return true
	}
	if r.Partial != nil && r.All {
		s.bad(tag, "PARTIAL and ALL cannot be asked for together (RFC 5267 section 4.4)")
		return false
	}
	if r.Update && slices.ContainsFunc(s.liveContexts(), func(c *searchContext) bool { return c.tag == tag }) {
		s.bad(tag, "Tag reuse: a search with this tag is still sending updates (RFC 5267 section 4.3)")
		return false
	}
	return true
}

// liveContexts drops the contexts of an earlier selection and returns the rest.
func (s *session) liveContexts() []*searchContext {
	s.contexts = slices.DeleteFunc(s.contexts, func(c *searchContext) bool { return c.view != s.sel || s.sel == nil })
	return s.contexts
}

// writePartial adds "PARTIAL (low:high set)" to an ESEARCH response being written: the
// results at positions low to high, 1 the first (section 4.4); with RFC 9394's negative
// ranges, -1 the last. The range goes back as given; NIL when no result is in it. nums are in
// the requested order (mailbox order for SEARCH).
func (s *session) writePartial(p *imapwire.PartialRange, nums []uint32) {
	lo, hi := p.Low, p.High
	if lo > hi {
		lo, hi = hi, lo // 500:400 is 400:500
	}
	n := int64(len(nums))
	if lo < 0 {
		lo, hi = n+1+lo, n+1+hi
	}
	lo, hi = max(lo, 1), min(hi, n)
	rng := formatInt(p.Low) + ":" + formatInt(p.High)
	s.w.Atom("PARTIAL").Open().Atom(rng)
	if lo > hi {
		s.w.NIL()
	} else {
		s.w.Atom(compress(nums[lo-1 : hi]))
	}
	s.w.Close()
}

// startContext makes a SEARCH or SORT RETURN (UPDATE) live with the messages it found, or
// refuses with an untagged NO [NOUPDATE "tag"] when the session has too many (section 4.3.1)
// and returns nil; the command itself is answered either way.
func (s *session) startContext(tag string, uid bool, key *imapwire.SearchKey, matched []mailbox.UID) *searchContext {
	if len(s.liveContexts()) >= maxContexts {
		s.w.StartUntagged().Atom("NO").Code("NOUPDATE", quoteTag(tag)).Text("Too many searches are sending updates; CANCELUPDATE one").End()
		return nil
	}
	c := &searchContext{tag: tag, uid: uid, key: key, view: s.sel, result: map[mailbox.UID]bool{}, modSeq: s.sel.modSeq, full: usesVolatile(key)}
	for _, u := range matched {
		c.result[u] = true
	}
	s.contexts = append(s.contexts, c)
	return c
}

// cancelUpdate is CANCELUPDATE (section 4.3.5). Naming a tag that has no context is not an
// error: the client's wish, no updates for it, holds.
func (s *session) cancelUpdate(tag string, a *imapwire.CancelUpdate) {
	s.contexts = slices.DeleteFunc(s.liveContexts(), func(c *searchContext) bool { return slices.Contains(a.Tags, c.tag) })
	s.ok(tag, "CANCELUPDATE completed")
}

// contextsExpunge writes REMOVEFROM for the matching messages among those at view indexes idx,
// which are about to be expunged from the view: before the EXPUNGE, while their numbers are
// still valid (section 4.3.4).
func (s *session) contextsExpunge(idx []int) {
	v := s.sel
	for _, c := range s.liveContexts() {
		if c.criteria != nil {
			seq := map[mailbox.UID]uint32{}
			var gone []mailbox.UID
			for _, i := range idx {
				if u := v.uids[i]; c.result[u] {
					delete(c.result, u)
					gone = append(gone, u)
					seq[u] = uint32(i + 1)
				}
			}
			s.sortedUpdate(c, gone, nil, func(u mailbox.UID) uint32 {
				if c.uid {
					return uint32(u)
				}
				return seq[u]
			})
			continue
		}
		var nums []uint32
		for _, i := range idx {
			u := v.uids[i]
			if !c.result[u] {
				continue
			}
			delete(c.result, u)
			if c.uid {
				nums = append(nums, uint32(u))
			} else {
				nums = append(nums, uint32(i+1))
			}
		}
		if len(nums) > 0 {
			s.writeUpdate(c, "REMOVEFROM", nums)
		}
	}
}

// updateContexts re-evaluates each live context over the messages changed since it last did
// (every message, for a volatile key) and writes what left and joined its result: REMOVEFROM
// then ADDTO, in one ESEARCH. sync calls it after the EXISTS for new messages.
func (s *session) updateContexts() {
	v := s.sel
	if v == nil || len(s.liveContexts()) == 0 {
		return
	}
	var byUID map[mailbox.UID]*mailbox.Summary
	for _, c := range s.contexts {
		if !c.full && c.modSeq >= v.modSeq {
			continue
		}
		if byUID == nil {
			list, err := v.folder.List()
			if err != nil {
				return
			}
			byUID = make(map[mailbox.UID]*mailbox.Summary, len(list))
			for i := range list {
				byUID[list[i].UID] = &list[i]
			}
		}
		var added, removed []uint32
		var addedU, removedU []mailbox.UID
		for i, u := range v.uids {
			m := byUID[u]
			if m == nil || !c.full && m.ModSeq <= c.modSeq {
				continue // expunged elsewhere and not yet reported, or unchanged
			}
			cand := &candidate{s: s, seq: uint32(i + 1), sum: m}
			now := cand.match(c.key)
			if now == c.result[u] {
				continue
			}
			n := uint32(i + 1)
			if c.uid {
				n = uint32(u)
			}
			if now {
				c.result[u] = true
				added, addedU = append(added, n), append(addedU, u)
			} else {
				delete(c.result, u)
				removed, removedU = append(removed, n), append(removedU, u)
			}
		}
		c.modSeq = v.modSeq
		if c.criteria != nil {
			s.sortedUpdate(c, removedU, addedU, v.number(c.uid))
			continue
		}
		if len(added)+len(removed) == 0 {
			continue
		}
		w := s.w.StartUntagged().Atom("ESEARCH").Open().Atom("TAG").String(c.tag).Close()
		if c.uid {
			w.Atom("UID")
		}
		if len(removed) > 0 {
			w.Atom("REMOVEFROM").Open().Number(0).Atom(compress(removed)).Close()
		}
		if len(added) > 0 {
			w.Atom("ADDTO").Open().Number(0).Atom(compress(added)).Close()
		}
		w.End()
	}
}

// sortedUpdate brings a SORT context's order up to date with the messages that left and joined
// its result (c.result already says so) and writes one ESEARCH with REMOVEFROM, then ADDTO, as
// pairs of context positions and results in the requested order (sections 4.3.3 and 4.3.4).
// num gives the number the client knows a message by.
func (s *session) sortedUpdate(c *searchContext, removed, added []mailbox.UID, num func(mailbox.UID) uint32) {
	var removals, additions []contextRun
	if len(removed) > 0 {
		gone := make(map[mailbox.UID]bool, len(removed))
		for _, u := range removed {
			gone[u] = true
		}
		c.order, removals = removeFromOrder(c.order, gone)
	}
	if len(added) > 0 {
		var joined []*sortMsg
		for _, u := range added {
			m, err := s.sel.folder.Message(u)
			if err != nil {
				delete(c.result, u) // gone already: its expunge will not mention it
				continue
			}
			joined = append(joined, newSortMsg(0, u, m))
		}
		c.order, additions = insertIntoOrder(c.order, joined, sortOrder(c.criteria))
	}
	if len(removals)+len(additions) == 0 {
		return
	}
	w := s.w.StartUntagged().Atom("ESEARCH").Open().Atom("TAG").String(c.tag).Close()
	if c.uid {
		w.Atom("UID")
	}
	for _, item := range []struct {
		name string
		runs []contextRun
	}{{"REMOVEFROM", removals}, {"ADDTO", additions}} {
		if len(item.runs) == 0 {
			continue
		}
		w.Atom(item.name).Open()
		for _, r := range item.runs {
			nums := make([]uint32, len(r.msgs))
			for k, m := range r.msgs {
				nums[k] = num(m.uid)
			}
			w.Number(uint64(r.pos)).Atom(compress(nums))
		}
		w.Close()
	}
	w.End()
}

// contextRun is one pair of an ADDTO or REMOVEFROM of a sorted context: a context position and
// the results, in the requested order, inserted or removed there.
type contextRun struct {
	pos  int
	msgs []*sortMsg
}

// removeFromOrder drops the gone messages from a sorted result and returns what is left and
// the REMOVEFROM pairs that tell a client so: one per run of adjacent removed results, from the
// front, each position counted after the pairs before it were applied.
func removeFromOrder(order []*sortMsg, gone map[mailbox.UID]bool) ([]*sortMsg, []contextRun) {
	kept := make([]*sortMsg, 0, len(order))
	var runs []contextRun
	adjacent := false
	for _, m := range order {
		if !gone[m.uid] {
			adjacent = false
			kept = append(kept, m)
			continue
		}
		if !adjacent {
			runs = append(runs, contextRun{pos: len(kept) + 1})
			adjacent = true
		}
		runs[len(runs)-1].msgs = append(runs[len(runs)-1].msgs, m)
	}
	return kept, runs
}

// insertIntoOrder merges joined messages into a sorted result and returns it with the ADDTO
// pairs that tell a client so: one per run of adjacent new results, from the front, each
// position counted after the pairs before it were applied.
func insertIntoOrder(order, joined []*sortMsg, cmp func(x, y *sortMsg) int) ([]*sortMsg, []contextRun) {
	joined = slices.Clone(joined)
	slices.SortFunc(joined, cmp)
	merged := make([]*sortMsg, 0, len(order)+len(joined))
	var runs []contextRun
	adjacent := false
	for i, j := 0, 0; i < len(order) || j < len(joined); {
		if j == len(joined) || i < len(order) && cmp(order[i], joined[j]) < 0 {
			adjacent = false
			merged = append(merged, order[i])
			i++
			continue
		}
		if !adjacent {
			runs = append(runs, contextRun{pos: len(merged) + 1})
			adjacent = true
		}
		runs[len(runs)-1].msgs = append(runs[len(runs)-1].msgs, joined[j])
		merged = append(merged, joined[j])
		j++
	}
	return merged, runs
}

// number returns how a client knows a message of the view: its UID, or its message number.
func (v *view) number(uid bool) func(mailbox.UID) uint32 {
	return func(u mailbox.UID) uint32 {
		if uid {
			return uint32(u)
		}
		i, _ := slices.BinarySearch(v.uids, u)
		return uint32(i + 1)
	}
}

// writeUpdate writes "* ESEARCH (TAG "t") [UID] what (0 set)".
func (s *session) writeUpdate(c *searchContext, what string, nums []uint32) {
	slices.Sort(nums)
	w := s.w.StartUntagged().Atom("ESEARCH").Open().Atom("TAG").String(c.tag).Close()
	if c.uid {
		w.Atom("UID")
	}
	w.Atom(what).Open().Number(0).Atom(compress(nums)).Close().End()
}

// quoteTag writes a tag as the quoted string of a response code; a tag never needs escapes.
func quoteTag(tag string) string { return `"` + tag + `"` }

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }
