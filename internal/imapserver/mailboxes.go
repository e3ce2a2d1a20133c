package imapserver

import (
	"slices"
	"strconv"
	"strings"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

const delim = string(mailbox.Delim)

// canonical writes INBOX (and INBOX/...) in upper case: the name is case-insensitive (RFC 9051
// section 5.1).
func canonical(name string) string {
	head, rest, has := strings.Cut(name, delim)
	if strings.EqualFold(head, mailbox.Inbox) {
		if has {
			return mailbox.Inbox + delim + rest
		}
		return mailbox.Inbox
	}
	return name
}

func (s *session) create(tag string, a *imapwire.Create) {
	name := strings.TrimSuffix(a.Mailbox, delim) // RFC 9051 6.3.4: a trailing delimiter only says "a parent"
	if name == "" {
		s.no(tag, "CANNOT", "An empty mailbox name")
		return
	}
	if strings.EqualFold(name, mailbox.Inbox) {
		s.no(tag, "ALREADYEXISTS", "INBOX always exists")
		return
	}
	var use string
	switch len(a.SpecialUse) {
	case 0:
	case 1:
		use = a.SpecialUse[0]
	default:
		s.no(tag, "USEATTR", "One special use per mailbox")
		return
	}
	if use != "" && !slices.Contains([]string{`\Archive`, `\Drafts`, `\Junk`, `\Sent`, `\Trash`, `\All`, `\Flagged`}, use) {
		s.no(tag, "USEATTR", "Unknown special use "+use)
		return
	}
	if err := s.store.Create(canonical(name), mailboxAttr(use)); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.mailboxesChanged(mailboxEvent{kind: "MailboxName", name: canonical(name)})
	s.ok(tag, "CREATE completed")
}

func (s *session) delete(tag, name string) {
	name = canonical(name)
	if name == mailbox.Inbox {
		s.no(tag, "CANNOT", "INBOX cannot be deleted")
		return
	}
	if err := s.store.Delete(name); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.mailboxesChanged(mailboxEvent{kind: "MailboxName", name: name})
	s.ok(tag, "DELETE completed")
}

func (s *session) rename(tag, from, to string) {
	if err := s.store.Rename(canonical(from), canonical(to)); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.renamed(canonical(from), canonical(to))
	s.ok(tag, "RENAME completed")
}

func (s *session) subscribe(tag, name string, on bool) {
	if err := s.store.SetSubscribed(canonical(name), on); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.mailboxesChanged(mailboxEvent{kind: "SubscriptionChange", name: canonical(name)})
	if on {
		s.ok(tag, "SUBSCRIBE completed")
	} else {
		s.ok(tag, "UNSUBSCRIBE completed")
	}
}

// match reports whether name matches an IMAP list pattern: "*" matches anything, "%" anything
// but the hierarchy delimiter (RFC 9051 section 6.3.9).
func match(name, pattern string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*', '%':
			wild := pattern[0]
			rest := pattern[1:]
			for i := 0; i <= len(name); i++ {
				if match(name[i:], rest) {
					return true
				}
				if i < len(name) && wild == '%' && name[i] == mailbox.Delim {
					return false
				}
			}
			return false
		default:
			if len(name) == 0 || name[0] != pattern[0] {
				return false
			}
			name, pattern = name[1:], pattern[1:]
		}
	}
	return len(name) == 0
}

// listEntry is one mailbox a LIST may name: a folder, or a name that only exists as the parent
// of folders (or of subscriptions).
type listEntry struct {
	name       string
	exists     bool
	subscribed bool
	specialUse string
	children   bool
	subChild   bool // a descendant is subscribed
}

func (s *session) listEntries() ([]*listEntry, error) {
	infos, err := s.store.Folders()
	if err != nil {
		return nil, err
	}
	byName := map[string]*listEntry{}
	var order []string
	get := func(name string) *listEntry {
		e := byName[name]
		if e == nil {
			e = &listEntry{name: name}
			byName[name] = e
			order = append(order, name)
		}
		return e
	}
	for _, fi := range infos {
		e := get(canonical(fi.Name))
		e.exists, e.subscribed, e.specialUse = true, fi.Subscribed, string(fi.SpecialUse)
	}
	if sl, ok := s.store.(mailbox.SubscriptionLister); ok {
		// Subscribed names that are not folders (deleted, or never made): \NonExistent.
		if subs, err := sl.Subscriptions(); err == nil {
			for _, n := range subs {
				get(canonical(n)).subscribed = true
			}
		}
	}
	for _, e := range slices.Clone(order) {
		name := e
		sub := byName[name].subscribed
		for i := strings.LastIndex(name, delim); i > 0; i = strings.LastIndex(name[:i], delim) {
			p := get(name[:i])
			if byName[name].exists {
				p.children = true
			}
			if sub {
				p.subChild = true
			}
		}
	}
	out := make([]*listEntry, 0, len(order))
	for _, n := range order {
		out = append(out, byName[n])
	}
	slices.SortStableFunc(out, func(a, b *listEntry) int {
		switch {
		case a.name == mailbox.Inbox:
			return -1
		case b.name == mailbox.Inbox:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return out, nil
}

func (s *session) list(tag string, a *imapwire.List) {
	verb := "LIST"
	if a.LSub {
		verb = "LSUB"
	}
	// RFC 9051 section 6.3.9: an empty pattern asks for the delimiter and the root of the
	// reference.
	if len(a.Patterns) == 1 && a.Patterns[0] == "" {
		root := ""
		if i := strings.Index(a.Reference, delim); i >= 0 {
			root = a.Reference[:i+1]
		}
		s.w.StartUntagged().Atom(verb).Open().Atom(`\Noselect`).Close().String(delim).Mailbox(root).End()
		s.ok(tag, verb+" completed")
		return
	}
	sel := map[string]bool{}
	for _, o := range a.Selection {
		sel[o] = true
	}
	ret := map[string]bool{}
	for _, o := range a.Return {
		ret[strings.ToUpper(o)] = true
	}
	extended := a.Selection != nil || a.ReturnOpts || len(a.Patterns) > 1
	subscribedOnly := a.LSub || sel["SUBSCRIBED"]
	entries, err := s.listEntries()
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	var patterns []string
	for _, p := range a.Patterns {
		if p == "" {
			continue
		}
		full := a.Reference + p
		if strings.HasPrefix(p, delim) && strings.HasSuffix(a.Reference, delim) {
			full = a.Reference + p[1:]
		}
		patterns = append(patterns, canonical(full))
	}
	matches := func(name string) bool {
		return slices.ContainsFunc(patterns, func(p string) bool { return match(name, p) })
	}
	for _, e := range entries {
		if !matches(e.name) {
			continue
		}
		var attrs []string
		childInfo := false
		switch {
		case subscribedOnly && e.subscribed:
		case subscribedOnly && (a.LSub || sel["RECURSIVEMATCH"]) && e.subChild && s.childOutside(e, entries, matches):
			// LSUB: the parent of a subscribed mailbox that "%" hides (RFC 9051 6.3.9 of
			// RFC 3501 LSUB); LIST-EXTENDED: CHILDINFO (RFC 5258 section 3.5).
			if a.LSub {
				attrs = append(attrs, `\Noselect`)
			} else {
				childInfo = true
			}
		case subscribedOnly:
			continue
		}
		if sel["SPECIAL-USE"] && e.specialUse == "" {
			continue
		}
		if !e.exists && !a.LSub {
			if !e.children && !e.subscribed && !childInfo {
				continue // a name that is only the parent of a subscription
			}
			if !subscribedOnly && !e.children {
				continue // plain LIST: only existing mailboxes and their parents
			}
			if extended {
				attrs = append(attrs, `\NonExistent`)
			} else {
				attrs = append(attrs, `\Noselect`)
			}
		}
		if e.children {
			attrs = append(attrs, `\HasChildren`)
		} else if !a.LSub {
			attrs = append(attrs, `\HasNoChildren`)
		}
		if e.subscribed && !a.LSub && (subscribedOnly || ret["SUBSCRIBED"]) {
			attrs = append(attrs, `\Subscribed`)
		}
		if e.specialUse != "" && !a.LSub {
			attrs = append(attrs, e.specialUse)
		}
		if sel["RECURSIVEMATCH"] && e.subscribed && e.subChild && s.childOutside(e, entries, matches) {
			childInfo = true
		}
		w := s.w.StartUntagged().Atom(verb).Open()
		for _, at := range attrs {
			w.Atom(at)
		}
		w.Close().String(delim).Mailbox(e.name)
		if childInfo {
			w.Open().String("CHILDINFO").Open().String("SUBSCRIBED").Close().Close()
		}
		w.End()
		if len(a.StatusItems) > 0 && e.exists {
			s.writeStatus(e.name, a.StatusItems)
		}
	}
	s.ok(tag, verb+" completed")
}

// childOutside: some subscribed descendant of e does not itself match the patterns (it is
// what "%" left out, and what the parent's answer stands for).
func (s *session) childOutside(e *listEntry, entries []*listEntry, matches func(string) bool) bool {
	prefix := e.name + delim
	for _, c := range entries {
		if c.subscribed && strings.HasPrefix(c.name, prefix) && !matches(c.name) {
			return true
		}
	}
	return false
}

func (s *session) status(tag, name string, items []string) {
	if err := s.writeStatus(canonical(name), items); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.ok(tag, "STATUS completed")
}

// writeStatus writes "* STATUS name (...)", or returns the store's error having written
// nothing.
func (s *session) writeStatus(name string, items []string) error {
	f, err := s.store.Folder(name)
	var st mailbox.Status
	if err == nil {
		st, err = f.Status()
	}
	if err != nil {
		return err
	}
	var delStorage uint64
	if slices.ContainsFunc(items, func(it string) bool { return strings.EqualFold(it, "DELETED-STORAGE") }) {
		if delStorage, err = deletedStorage(f); err != nil {
			return err
		}
	}
	w := s.w.StartUntagged().Atom("STATUS").Mailbox(name).Open()
	for _, it := range items {
		var v uint64
		switch strings.ToUpper(it) {
		case "MESSAGES":
			v = uint64(st.Messages)
		case "RECENT":
			v = uint64(st.Recent)
		case "UIDNEXT":
			v = uint64(st.UIDNext)
		case "UIDVALIDITY":
			v = uint64(st.UIDValidity)
		case "UNSEEN":
			v = uint64(st.Unseen)
		case "DELETED":
			v = uint64(st.Deleted)
		case "SIZE":
			v = uint64(st.Size)
		case "HIGHESTMODSEQ":
			v = st.HighestModSeq
		case "DELETED-STORAGE":
			v = delStorage
		default:
			continue
		}
		w.Atom(strings.ToUpper(it)).Atom(strconv.FormatUint(v, 10))
	}
	w.Close().End()
	return nil
}

// mailboxAttr is a special-use attribute as the store takes it.
func mailboxAttr(use string) mailbox.MailboxAttr { return mailbox.MailboxAttr(use) }
