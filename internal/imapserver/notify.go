package imapserver

import (
	"slices"
	"strings"
	"sync"
	"time"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// NOTIFY (RFC 5465). After NOTIFY SET the session no longer only waits for the client's next
// command: it also waits for changes (readCommand) and sends what the client asked for as they
// happen, between commands and during IDLE (section 4):
//
//   - the selected mailbox (SELECTED, SELECTED-DELAYED): EXISTS and FETCH for new messages
//     (with the MessageNew fetch attributes), FETCH FLAGS for flag changes, EXPUNGE or VANISHED
//     (SELECTED-DELAYED keeps expunges for the next command that may report them, section
//     6.1.2); learnt from the folder's Watch, as IDLE learns it;
//   - other mailboxes (PERSONAL, INBOXES, SUBSCRIBED, SUBTREE, MAILBOXES): STATUS responses
//     (section 5.2, 5.3: MESSAGES UIDNEXT UIDVALIDITY, with HIGHESTMODSEQ under CONDSTORE;
//     section 5.1: UIDVALIDITY UNSEEN for flag changes), from a Watch on each such folder;
//   - MailboxName and SubscriptionChange: LIST responses (sections 5.4, 5.5: \NonExistent for
//     a deleted name, OLDNAME for a rename, \Subscribed when subscribed). The store has no
//     watch on its folder list, so sessions of this server tell each other of CREATE, DELETE,
//     RENAME and (UN)SUBSCRIBE (notifyHub); changes made elsewhere (the other IMAP engine,
//     another node) are found by comparing the list every notifyPoll. A session is not told
//     of its own changes (section 5: SHOULD).
//
// Unsupported events (AnnotationChange, MailboxMetadataChange, ServerMetadataChange: this
// server has no ANNOTATE or METADATA) get NO [BADEVENT (...)] (section 3.1). A NOTIFY watching
// more than maxNotifyMailboxes mailboxes gets NO [NOTIFICATIONOVERFLOW] (section 3.1), and a
// session that falls maxNotifyPending mailbox events behind gets an untagged
// OK [NOTIFICATIONOVERFLOW] and is treated as after NOTIFY NONE (section 5.8).
//
// Concurrency: the session's goroutine does all of it; while it waits, one goroutine reads
// ahead on the connection (a bufio Peek) and the watches' goroutines only signal notifyState.wake.
// The hub's and a notifyState's pending list are guarded by their mutexes.

// notifyPoll is how often a session with NOTIFY compares the folder list and statuses against
// what it last reported (changes the watches and the hub do not carry).
const notifyPoll = 30 * time.Second

const (
	maxNotifyMailboxes = 1000
	maxNotifyPending   = 1000
)

// supportedEvents are the events of RFC 5465 section 5 this server sends, as BADEVENT lists
// them.
var supportedEvents = []string{"MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange"}

var messageEvents = []string{"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"}

// mailboxEvent is a change to the folder list made by a session of this server.
type mailboxEvent struct {
	kind    string // "MailboxName" or "SubscriptionChange"
	name    string
	oldName string // a rename
}

// notifyHub connects the NOTIFY sessions of each user on one Server.
type notifyHub struct {
	poll time.Duration // 0: notifyPoll; tests set it before the first session

	mu       sync.Mutex
	sessions map[string]map[*notifyState]bool
}

func (h *notifyHub) pollEvery() time.Duration {
	if h.poll > 0 {
		return h.poll
	}
	return notifyPoll
}

func (h *notifyHub) add(user string, n *notifyState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions == nil {
		h.sessions = map[string]map[*notifyState]bool{}
	}
	if h.sessions[user] == nil {
		h.sessions[user] = map[*notifyState]bool{}
	}
	h.sessions[user][n] = true
}

func (h *notifyHub) remove(user string, n *notifyState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sessions[user], n)
	if len(h.sessions[user]) == 0 {
		delete(h.sessions, user)
	}
}

// post gives evs to every NOTIFY session of user but from.
func (h *notifyHub) post(user string, from *notifyState, evs []mailboxEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n := range h.sessions[user] {
		if n != from {
			n.queue(evs)
		}
	}
}

// notifyState is one session's NOTIFY SET.
type notifyState struct {
	groups []imapwire.NotifyGroup
	sel    *imapwire.NotifyGroup // the SELECTED or SELECTED-DELAYED group; nil: SELECTED NONE

	wake chan struct{} // a watched folder changed, or events were queued

	mu       sync.Mutex
	pending  []mailboxEvent
	overflow bool

	watches  map[string]*folderWatch // the non-selected folders whose message events count
	folders  map[string]bool         // the folder list as last reported: name → subscribed
	subs     map[string]bool         // subscribed names as last reported
	lastPoll time.Time
}

// folderWatch is one watched folder and the status last reported for it.
type folderWatch struct {
	folder mailbox.Folder
	stop   func()
	done   chan struct{}
	last   mailbox.Status
}

func (n *notifyState) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifyState) queue(evs []mailboxEvent) {
	n.mu.Lock()
	if len(n.pending)+len(evs) > maxNotifyPending {
		n.overflow = true
	} else {
		n.pending = append(n.pending, evs...)
	}
	n.mu.Unlock()
	n.signal()
}

func (n *notifyState) stopWatches() {
	for name, fw := range n.watches {
		fw.stop()
		close(fw.done)
		delete(n.watches, name)
	}
}

// hasEvent: g asks for event (case-insensitively).
func hasEvent(g *imapwire.NotifyGroup, event string) bool {
	return g != nil && slices.ContainsFunc(g.Events, func(e imapwire.NotifyEvent) bool { return strings.EqualFold(e.Name, event) })
}

// groupFor returns the group that decides event for the non-selected mailbox name: the first
// whose filter matches and that names the event; a matching group with NONE ends the search
// (RFC 5465 section 6: NONE turns a mailbox's events off).
func (s *session) groupFor(name, event string) *imapwire.NotifyGroup {
	n := s.notify
	for i := range n.groups {
		g := &n.groups[i]
		if g.Filter == "SELECTED" || g.Filter == "SELECTED-DELAYED" || !s.filterMatches(g, name) {
			continue
		}
		if g.Events == nil {
			return nil
		}
		if hasEvent(g, event) {
			return g
		}
	}
	return nil
}

// filterMatches: name is one of the mailboxes g's filter names (RFC 5465 section 6).
func (s *session) filterMatches(g *imapwire.NotifyGroup, name string) bool {
	switch g.Filter {
	case "PERSONAL":
		return true // every mailbox of the user is in the personal namespace
	case "INBOXES":
		// Section 6.3: where messages are delivered; the ring delivers to INBOX only.
		return name == mailbox.Inbox
	case "SUBSCRIBED":
		return s.notify.subs[name]
	case "SUBTREE":
		return slices.ContainsFunc(g.Mailboxes, func(m string) bool {
			m = canonical(m)
			return name == m || strings.HasPrefix(name, m+delim)
		})
	case "MAILBOXES":
		// Section 6.6: names, not patterns.
		return slices.ContainsFunc(g.Mailboxes, func(m string) bool { return canonical(m) == name })
	}
	return false
}

// notifyCmd is NOTIFY (RFC 5465 section 3.1).
func (s *session) notifyCmd(tag string, a *imapwire.Notify) {
	if a.None {
		s.endNotify()
		s.notify = &notifyState{wake: make(chan struct{}, 1)} // no events, not even in IDLE (section 4)
		s.ok(tag, "NOTIFY completed")
		return
	}
	var sel *imapwire.NotifyGroup
	for i := range a.Groups {
		g := &a.Groups[i]
		for _, e := range g.Events {
			if !slices.ContainsFunc(supportedEvents, func(s string) bool { return strings.EqualFold(s, e.Name) }) {
				s.no(tag, "BADEVENT ("+strings.Join(supportedEvents, " ")+")", "Event "+e.Name+" is not offered")
				return
			}
		}
		if g.Events == nil {
			continue
		}
		newEv, expEv := hasEvent(g, "MessageNew"), hasEvent(g, "MessageExpunge")
		switch {
		case newEv != expEv:
			s.bad(tag, "MessageNew and MessageExpunge go together (RFC 5465 section 5)")
			return
		case hasEvent(g, "FlagChange") && !newEv:
			s.bad(tag, "FlagChange needs MessageNew and MessageExpunge (RFC 5465 section 5)")
			return
		}
		if g.Filter == "SELECTED" || g.Filter == "SELECTED-DELAYED" {
			if sel != nil {
				s.bad(tag, "Only one of SELECTED and SELECTED-DELAYED (RFC 5465 section 6.1)")
				return
			}
			for _, e := range g.Events {
				if !slices.ContainsFunc(messageEvents, func(m string) bool { return strings.EqualFold(m, e.Name) }) {
					s.bad(tag, e.Name+" is not a message event; SELECTED takes only those (RFC 5465 section 6.1)")
					return
				}
			}
			sel = g
		}
	}
	// A repeated SELECTED NONE is also only one selected filter.
	nsel := 0
	for _, g := range a.Groups {
		if g.Filter == "SELECTED" || g.Filter == "SELECTED-DELAYED" {
			nsel++
		}
	}
	if nsel > 1 {
		s.bad(tag, "Only one of SELECTED and SELECTED-DELAYED (RFC 5465 section 6.1)")
		return
	}
	n := &notifyState{groups: a.Groups, sel: sel, wake: make(chan struct{}, 1), watches: map[string]*folderWatch{}}
	old := s.notify
	s.notify = n // groupFor reads it
	err := s.snapshotFolders()
	if err == nil && len(n.watches) > maxNotifyMailboxes {
		n.stopWatches()
		s.notify = old
		s.no(tag, "NOTIFICATIONOVERFLOW", "Too many mailboxes to watch; name fewer (SUBTREE or MAILBOXES)")
		return
	}
	if err != nil {
		n.stopWatches()
		s.notify = old
		s.storeNo(tag, err)
		return
	}
	s.notify = old
	s.endNotify() // NOTIFY SET replaces the previous one (section 3.1)
	s.notify = n
	s.srv.notify.add(s.user, n)
	if a.Status {
		// Section 3.1: a STATUS for every mailbox other than the selected one whose message
		// events are on, before the tagged OK.
		names := make([]string, 0, len(n.watches))
		for name := range n.watches {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if s.sel == nil || s.sel.name != name {
				s.writeNotifyStatus(name, n.watches[name].last, true)
			}
		}
	}
	// Section 3.1: a successful NOTIFY SET implies a NOOP.
	s.sync(true)
	s.ok(tag, "NOTIFY completed")
}

// endNotify stops the current NOTIFY's watches and takes it off the hub.
func (s *session) endNotify() {
	if s.notify == nil {
		return
	}
	s.notify.stopWatches()
	s.srv.notify.remove(s.user, s.notify)
	s.notify = nil
}

// snapshotFolders reads the folder list and subscriptions as the new baseline and watches the
// folders whose message events are on (a new folder's status is reported from its creation).
func (s *session) snapshotFolders() error {
	n := s.notify
	infos, err := s.store.Folders()
	if err != nil {
		return err
	}
	folders := map[string]bool{}
	for _, fi := range infos {
		folders[canonical(fi.Name)] = fi.Subscribed
	}
	subs := map[string]bool{}
	for name, sub := range folders {
		if sub {
			subs[name] = true
		}
	}
	if sl, ok := s.store.(mailbox.SubscriptionLister); ok {
		if l, err := sl.Subscriptions(); err == nil {
			for _, name := range l {
				subs[canonical(name)] = true
			}
		}
	}
	n.folders, n.subs, n.lastPoll = folders, subs, time.Now()
	for name, fw := range n.watches {
		if _, ok := folders[name]; !ok || s.groupFor(name, "MessageNew") == nil && s.groupFor(name, "FlagChange") == nil {
			fw.stop()
			close(fw.done)
			delete(n.watches, name)
		}
	}
	for name := range folders {
		if n.watches[name] != nil || s.groupFor(name, "MessageNew") == nil {
			continue
		}
		f, err := s.store.Folder(name)
		if err != nil {
			continue
		}
		ch, stop := f.Watch()
		st, err := f.Status()
		if err != nil {
			stop()
			continue
		}
		fw := &folderWatch{folder: f, stop: stop, done: make(chan struct{}), last: st}
		n.watches[name] = fw
		go func() {
			for {
				select {
				case <-ch:
					n.signal()
				case <-fw.done:
					return
				}
			}
		}()
	}
	return nil
}

// writeNotifyStatus writes the STATUS of a non-selected mailbox for message events (RFC 5465
// sections 5.2 and 5.3), or, when only flags changed, for FlagChange (section 5.1).
func (s *session) writeNotifyStatus(name string, st mailbox.Status, messages bool) {
	w := s.w.StartUntagged().Atom("STATUS").Mailbox(name).Open()
	if messages {
		w.Atom("MESSAGES").Number(uint64(st.Messages)).Atom("UIDNEXT").Number(uint64(st.UIDNext))
	}
	w.Atom("UIDVALIDITY").Number(uint64(st.UIDValidity)).Atom("UNSEEN").Number(uint64(st.Unseen))
	if s.condstore() {
		w.Atom("HIGHESTMODSEQ").Number(st.HighestModSeq)
	}
	w.Close().End()
}

// selectedWanted: changes to the selected mailbox are sent as they happen (IDLE without
// NOTIFY, or NOTIFY with message events for SELECTED or SELECTED-DELAYED, section 4).
func (s *session) selectedWanted() bool {
	return s.notify == nil || s.notify.sel != nil && len(s.notify.sel.Events) > 0
}

// syncSelected brings the client up to date on the selected mailbox between commands or in
// IDLE: with SELECTED-DELAYED expunges wait (section 6.1.2) unless allowed (IDLE allows them).
func (s *session) syncSelected(inIdle bool) {
	allowExpunge := inIdle || s.notify == nil || s.notify.sel == nil || s.notify.sel.Filter == "SELECTED"
	s.sync(allowExpunge)
}

// notifyNew sends the MessageNew fetch attributes of the SELECTED or SELECTED-DELAYED group
// (section 5.2: NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From To)])
// ...))) for the messages of the view from index first on, which sync has just announced with
// EXISTS: whichever sync finds them, between commands, in IDLE or at the end of a command, so
// that no new message goes without its FETCH. Messages the session added itself are left out
// (section 5). The FETCH never sets \Seen, whether or not the client wrote .PEEK.
func (s *session) notifyNew(first int) {
	v := s.sel
	var items []imapwire.FetchItem
	if s.notify != nil && s.notify.sel != nil {
		for _, e := range s.notify.sel.Events {
			if strings.EqualFold(e.Name, "MessageNew") {
				items = e.Fetch
			}
		}
	}
	defer func() {
		// What the view now holds has been reported: an own message that was never reported
		// (expunged first) is forgotten too.
		for u := range v.ownNew {
			if u <= v.uids[len(v.uids)-1] {
				delete(v.ownNew, u)
			}
		}
	}()
	for j := first; j < len(v.uids); j++ {
		u := v.uids[j]
		if v.ownNew[u] {
			delete(v.ownNew, u)
			continue
		}
		if len(items) == 0 {
			continue
		}
		msg, err := v.folder.Message(u)
		if err != nil {
			continue // expunged already; its EXPUNGE follows
		}
		if err := s.fetchOne(j+1, true, msg, items, false); err != nil {
			s.log.Info("imap NOTIFY MessageNew fetch", "err", err)
			return
		}
	}
}

// notifyOthers sends what changed outside the selected mailbox: queued mailbox events from
// other sessions, the folder list and statuses when the poll is due, and the statuses of the
// watched folders.
func (s *session) notifyOthers() {
	n := s.notify
	if n == nil || n.groups == nil {
		return
	}
	n.mu.Lock()
	evs, overflow := n.pending, n.overflow
	n.pending, n.overflow = nil, false
	n.mu.Unlock()
	if overflow {
		// Section 5.8.
		s.w.StartUntagged().Atom("OK").Code("NOTIFICATIONOVERFLOW").Text("Too many changes at once; notifications are off, NOTIFY again").End()
		s.endNotify()
		s.notify = &notifyState{wake: make(chan struct{}, 1)}
		return
	}
	oldFolders, oldSubs := n.folders, n.subs
	if len(evs) > 0 || time.Since(n.lastPoll) >= s.srv.notify.pollEvery() {
		if err := s.snapshotFolders(); err != nil {
			return
		}
		s.reportListChanges(evs, oldFolders, oldSubs)
	}
	names := make([]string, 0, len(n.watches))
	for name := range n.watches {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fw := n.watches[name]
		st, err := fw.folder.Status()
		if err != nil || st == fw.last {
			continue
		}
		last := fw.last
		fw.last = st
		if s.sel != nil && s.sel.name == name {
			continue // the selected mailbox's events go by SELECTED (section 6.1)
		}
		msgs := st.Messages != last.Messages || st.UIDNext != last.UIDNext || st.UIDValidity != last.UIDValidity
		switch {
		case msgs:
			s.writeNotifyStatus(name, st, true)
		case st.HighestModSeq != last.HighestModSeq && s.groupFor(name, "FlagChange") != nil:
			s.writeNotifyStatus(name, st, false)
		}
	}
}

// reportListChanges writes LIST responses for MailboxName and SubscriptionChange: for the
// events other sessions queued (with OLDNAME for renames), and for differences between the
// old and new folder lists that no event explains (changes made elsewhere).
func (s *session) reportListChanges(evs []mailboxEvent, oldFolders, oldSubs map[string]bool) {
	n := s.notify
	explained := map[string]bool{}
	for _, ev := range evs {
		explained[ev.name] = true
		if ev.oldName != "" {
			explained[ev.oldName] = true
		}
		s.writeEventList(ev)
	}
	var changes []mailboxEvent
	for name := range n.folders {
		if _, ok := oldFolders[name]; !ok && !explained[name] {
			changes = append(changes, mailboxEvent{kind: "MailboxName", name: name})
		}
	}
	for name := range oldFolders {
		if _, ok := n.folders[name]; !ok && !explained[name] {
			changes = append(changes, mailboxEvent{kind: "MailboxName", name: name})
		}
	}
	for name := range n.subs {
		if !oldSubs[name] && !explained[name] {
			changes = append(changes, mailboxEvent{kind: "SubscriptionChange", name: name})
		}
	}
	for name := range oldSubs {
		if !n.subs[name] && !explained[name] {
			changes = append(changes, mailboxEvent{kind: "SubscriptionChange", name: name})
		}
	}
	slices.SortFunc(changes, func(a, b mailboxEvent) int { return strings.Compare(a.name, b.name) })
	for _, ev := range changes {
		s.writeEventList(ev)
	}
}

// writeEventList writes the LIST response of one event, if some group asks for it.
func (s *session) writeEventList(ev mailboxEvent) {
	n := s.notify
	if s.groupFor(ev.name, ev.kind) == nil && (ev.oldName == "" || s.groupFor(ev.oldName, ev.kind) == nil) {
		return
	}
	var attrs []string
	if _, exists := n.folders[ev.name]; !exists {
		attrs = append(attrs, `\NonExistent`)
	} else {
		children := false
		for name := range n.folders {
			if strings.HasPrefix(name, ev.name+delim) {
				children = true
				break
			}
		}
		if children {
			attrs = append(attrs, `\HasChildren`)
		} else {
			attrs = append(attrs, `\HasNoChildren`)
		}
	}
	if n.subs[ev.name] {
		attrs = append(attrs, `\Subscribed`)
	}
	w := s.w.StartUntagged().Atom("LIST").Open()
	for _, a := range attrs {
		w.Atom(a)
	}
	w.Close().String(delim).Mailbox(ev.name)
	if ev.oldName != "" {
		w.Open().String("OLDNAME").Open().Mailbox(ev.oldName).Close().Close()
	}
	w.End()
}

// mailboxesChanged is called after this session changed the folder list: the other NOTIFY
// sessions of the user are told, and this one's baseline moves on without a report.
func (s *session) mailboxesChanged(evs ...mailboxEvent) {
	var from *notifyState
	if s.notify != nil && s.notify.groups != nil {
		from = s.notify
		s.snapshotFolders()
	}
	s.srv.notify.post(s.user, from, evs)
}

// renamed is mailboxesChanged for a RENAME: the folder and those below it (RFC 5465 section
// 5.4: one LIST with OLDNAME for each mailbox renamed).
func (s *session) renamed(from, to string) {
	if from == mailbox.Inbox {
		// Renaming INBOX moves its messages to a new mailbox; INBOX stays (RFC 9051 6.3.6).
		s.mailboxesChanged(mailboxEvent{kind: "MailboxName", name: to})
		return
	}
	evs := []mailboxEvent{{kind: "MailboxName", name: to, oldName: from}}
	if infos, err := s.store.Folders(); err == nil {
		for _, fi := range infos {
			name := canonical(fi.Name)
			if strings.HasPrefix(name, to+delim) {
				evs = append(evs, mailboxEvent{kind: "MailboxName", name: name, oldName: from + strings.TrimPrefix(name, to)})
			}
		}
	}
	s.mailboxesChanged(evs...)
}

// readCommand reads the next command; with NOTIFY on, it sends notifications while it waits.
func (s *session) readCommand() (*imapwire.Command, error) {
	if s.notify == nil || s.state == notAuthenticated || s.br.Buffered() > 0 {
		return s.r.ReadCommand()
	}
	if err := s.waitInput(); err != nil {
		return nil, err
	}
	return s.r.ReadCommand()
}

// waitInput waits for the client's next bytes, sending notifications meanwhile. The read-ahead
// runs on its own goroutine; the session's goroutine only writes.
func (s *session) waitInput() error {
	in := make(chan error, 1)
	go func() {
		_, err := s.br.Peek(1)
		in <- err
	}()
	poll := time.NewTicker(s.srv.notify.pollEvery())
	defer poll.Stop()
	for {
		var selWatch <-chan struct{}
		if s.sel != nil && s.selectedWanted() {
			selWatch = s.sel.watch
		}
		var wake <-chan struct{}
		if s.notify != nil {
			wake = s.notify.wake
		}
		select {
		case err := <-in:
			return err
		case <-selWatch:
			s.syncSelected(false)
		case <-wake:
			s.notifyOthers()
		case <-poll.C:
			s.notifyOthers()
		}
		if err := s.w.Flush(); err != nil {
			return err
		}
	}
}

// notifyWake is the channel IDLE also waits on (nil without NOTIFY).
func (s *session) notifyWake() <-chan struct{} {
	if s.notify == nil {
		return nil
	}
	return s.notify.wake
}
