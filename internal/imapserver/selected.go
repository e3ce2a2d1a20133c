package imapserver

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// view is the client's picture of its selected mailbox: sequence number n is uids[n-1] (RFC
// 9051 section 2.3.1.2), and it changes only through the EXISTS and EXPUNGE responses the
// client is sent (sync).
type view struct {
	name     string
	folder   mailbox.Folder
	readOnly bool
	// uidValidity is the folder's UIDVALIDITY at SELECT: if it changes, this session's UIDs
	// may name other messages, and the session ends (sync).
	uidValidity uint32

	uids   []mailbox.UID
	recent map[mailbox.UID]bool // \Recent in this session (rev1)
	// flags are the flags announced in FLAGS: a keyword the client has not been told of is
	// announced (FLAGS and PERMANENTFLAGS) before the first response that shows it.
	flags []mailbox.Flag
	// modSeq is the folder's HIGHESTMODSEQ when the client was last brought up to date;
	// expungedSince the one when it was last told of expunges (sync may not send them).
	modSeq, expungedSince uint64
	// relist: a sync compared the whole list and could not send the expunges it found; the
	// next sync that may send them compares the whole list too (the folder's mod-sequence
	// may have gone back, so Expunged(expungedSince) would not name them).
	relist bool
	// own: flag changes this session already reported in its own FETCH responses.
	own map[mailbox.UID]uint64

	watch     <-chan struct{}
	stopWatch func()

	saved []mailbox.UID // SEARCH RETURN (SAVE): "$" (RFC 5182)

	// ownNew: messages this session put into the mailbox (APPEND, COPY to itself) that sync has
	// not reported yet: their EXISTS goes out, NOTIFY's MessageNew FETCH does not (RFC 5465
	// section 5: events the client caused SHOULD be omitted).
	ownNew map[mailbox.UID]bool
}

var systemFlags = []mailbox.Flag{mailbox.FlagSeen, mailbox.FlagAnswered, mailbox.FlagFlagged, mailbox.FlagDeleted, mailbox.FlagDraft}

func (s *session) rev2() bool { return s.enabled["IMAP4REV2"] }

// condstore: the client enabled CONDSTORE (ENABLE, or a command that uses it, RFC 7162
// section 3.1): flag updates then carry MODSEQ.
func (s *session) condstore() bool { return s.enabled["CONDSTORE"] }

func (s *session) enableCondstore() { s.enabled["CONDSTORE"] = true }

// qresync: the client enabled QRESYNC: expunges are reported as VANISHED (RFC 7162 3.2.10).
func (s *session) qresync() bool { return s.enabled["QRESYNC"] }

// removeFromView drops the messages at the given view indexes (ascending) and tells the
// client: EXPUNGE per message from the highest sequence number down, or one VANISHED.
func (s *session) removeFromView(idx []int) {
	v := s.sel
	if len(idx) == 0 {
		return
	}
	s.contextsExpunge(idx)
	if s.qresync() {
		nums := make([]uint32, len(idx))
		for k, i := range idx {
			nums[k] = uint32(v.uids[i])
		}
		s.w.StartUntagged().Atom("VANISHED").Atom(compress(nums)).End()
	}
	for k := len(idx) - 1; k >= 0; k-- {
		i := idx[k]
		uid := v.uids[i]
		if !s.qresync() {
			s.w.StartUntagged().Number(uint64(i + 1)).Atom("EXPUNGE").End()
		}
		v.uids = slices.Delete(v.uids, i, i+1)
		delete(v.recent, uid)
		delete(v.own, uid)
	}
}

func (s *session) unselect() {
	if s.sel != nil {
		s.sel.stopWatch()
		s.sel = nil
	}
	if s.state == selected {
		s.state = authenticated
	}
}

func (s *session) selectMailbox(tag string, a *imapwire.Select) {
	if s.sel != nil && s.qresync() {
		// RFC 7162 section 3.2.11: the end of the old mailbox's responses.
		s.w.StartUntagged().Atom("OK").Code("CLOSED").Text("Previous mailbox closed").End()
	}
	s.unselect()
	if a.QResync != nil && !s.qresync() {
		s.bad(tag, "SELECT (QRESYNC ...) needs ENABLE QRESYNC first (RFC 7162 section 3.2.5)")
		return
	}
	if a.CondStore {
		s.enableCondstore()
	}
	name := canonical(a.Mailbox)
	f, err := s.store.Folder(name)
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	watch, stop := f.Watch() // before reading: no change falls between
	st, err := f.Status()
	var list []mailbox.Summary
	if err == nil {
		list, err = f.List()
	}
	if err != nil {
		stop()
		s.storeNo(tag, err)
		return
	}
	v := &view{name: name, folder: f, readOnly: a.ReadOnly, recent: map[mailbox.UID]bool{}, own: map[mailbox.UID]uint64{},
		uidValidity: st.UIDValidity, modSeq: st.HighestModSeq, expungedSince: st.HighestModSeq, watch: watch, stopWatch: stop, flags: slices.Clone(systemFlags)}
	var firstUnseen int
	for i, m := range list {
		v.uids = append(v.uids, m.UID)
		for _, fl := range m.Flags {
			if !slices.Contains(v.flags, fl) {
				v.flags = append(v.flags, fl)
			}
		}
		if firstUnseen == 0 && !slices.Contains(m.Flags, mailbox.FlagSeen) {
			firstUnseen = i + 1
		}
	}
	if a.ReadOnly {
		// EXAMINE claims nothing, but shows what is recent for the folder (RFC 3501 section
		// 6.3.2: the same untagged data as SELECT).
		for uid := st.UIDNext - mailbox.UID(st.Recent); uid < st.UIDNext; uid++ {
			v.recent[uid] = true
		}
	} else {
		v.claimRecent()
	}
	s.sel, s.state = v, selected
	s.writeFlags()
	s.w.StartUntagged().Number(uint64(len(v.uids))).Atom("EXISTS").End()
	if !s.rev2() {
		s.w.StartUntagged().Number(uint64(len(v.recent))).Atom("RECENT").End()
		if firstUnseen > 0 {
			s.w.StartUntagged().Atom("OK").Code("UNSEEN", strconv.Itoa(firstUnseen)).Text("First unseen message").End()
		}
	}
	s.w.StartUntagged().Atom("OK").Code("UIDVALIDITY", strconv.FormatUint(uint64(st.UIDValidity), 10)).Text("UIDs valid").End()
	s.w.StartUntagged().Atom("OK").Code("UIDNEXT", strconv.FormatUint(uint64(st.UIDNext), 10)).Text("Predicted next UID").End()
	s.w.StartUntagged().Atom("OK").Code("HIGHESTMODSEQ", strconv.FormatUint(st.HighestModSeq, 10)).Text("Highest").End()
	if q := a.QResync; q != nil && q.UIDValidity == st.UIDValidity {
		s.resync(q)
	}
	code := "READ-WRITE"
	if a.ReadOnly {
		code = "READ-ONLY"
	}
	s.w.StartTagged(tag).Atom("OK").Code(code).Text("Mailbox selected").End()
}

// writeFlags announces FLAGS and PERMANENTFLAGS.
func (s *session) writeFlags() {
	v := s.sel
	w := s.w.StartUntagged().Atom("FLAGS").Open()
	for _, f := range v.flags {
		w.Atom(string(f))
	}
	w.Close().End()
	perm := []string{}
	if !v.readOnly {
		for _, f := range v.flags {
			perm = append(perm, string(f))
		}
		perm = append(perm, `\*`)
	}
	s.w.StartUntagged().Atom("OK").Code("PERMANENTFLAGS", "("+strings.Join(perm, " ")+")").Text("Flags that stick").End()
}

// announce adds flags the client has not been told of to FLAGS and says so, before a response
// that shows them.
func (s *session) announce(flags []mailbox.Flag) {
	v := s.sel
	added := false
	for _, f := range flags {
		if f != mailbox.FlagRecent && !slices.Contains(v.flags, f) {
			v.flags = append(v.flags, f)
			added = true
		}
	}
	if added {
		s.writeFlags()
	}
}

func (v *view) claimRecent() {
	from, to := v.folder.ClaimRecent()
	for uid := from; uid < to; uid++ {
		v.recent[uid] = true
	}
}

func (s *session) shownFlags(m *mailbox.Summary) []mailbox.Flag {
	if s.rev2() || !s.sel.recent[m.UID] {
		return m.Flags
	}
	return append(slices.Clone(m.Flags), mailbox.FlagRecent)
}

// resolve gives the indexes into the view of a sequence set of sequence numbers or UIDs.
func (v *view) resolve(set imapwire.SeqSet, uid bool) []int {
	var out []int
	if set.Saved {
		for i, u := range v.uids {
			if slices.Contains(v.saved, u) {
				out = append(out, i)
			}
		}
		return out
	}
	if uid {
		var max uint32
		if n := len(v.uids); n > 0 {
			max = uint32(v.uids[n-1])
		}
		for i, u := range v.uids {
			if set.Contains(uint32(u), max) {
				out = append(out, i)
			}
		}
		return out
	}
	for i := range v.uids {
		if set.Contains(uint32(i+1), uint32(len(v.uids))) {
			out = append(out, i)
		}
	}
	return out
}

// validSeqs: a message sequence set names only numbers in the view (RFC 9051 section 6.4.5:
// a bad number is BAD... Dovecot answers BAD "Invalid messageset").
func (v *view) validSeqs(set imapwire.SeqSet) bool {
	for _, r := range set.Ranges {
		for _, n := range []uint32{r.Start, r.Stop} {
			if n != 0 && int(n) > len(v.uids) {
				return false
			}
		}
	}
	return true
}

// sync brings the client up to date: EXPUNGE for messages gone (only where allowed), FETCH
// FLAGS for flags changed by others, EXISTS (and RECENT) for new messages. It asks the folder
// only for what changed since the view's mod-sequences (Changed, Expunged), not for the whole
// list: under other sessions' writes the folder changes between almost any two commands, and
// listing it each time cost every command the folder's size.
func (s *session) sync(allowExpunge bool) {
	v := s.sel
	if v == nil {
		return
	}
	st, err := v.folder.Status()
	if err != nil {
		return
	}
	if st.UIDValidity != v.uidValidity && v.uidValidity != 0 {
		// The store rebuilt the folder (a merge of two writers' logs) and gave it a new
		// UIDVALIDITY: UIDs and sequence numbers this session handed out may now name other
		// messages, which no untagged response can express (RFC 3501 section 2.3.1.1: UIDs
		// must not change during a session). End it; the client resynchronizes on reconnect.
		s.bye("Mailbox UIDVALIDITY changed; reconnect to resynchronize")
		s.state = loggedOut
		return
	}
	if st.HighestModSeq != 0 && st.HighestModSeq == v.modSeq && int(st.Messages) == len(v.uids) &&
		(len(v.uids) == 0 || st.UIDNext > v.uids[len(v.uids)-1]) {
		// Nothing changed since the last sync (every insert, flag change and expunge raises
		// the folder's mod-sequence).
		return
	}
	var changed []mailbox.Summary
	var gone []int
	if st.HighestModSeq >= v.modSeq && v.modSeq > 0 && !(allowExpunge && v.relist) {
		if changed, err = v.folder.Changed(v.modSeq); err != nil {
			return
		}
		if allowExpunge {
			uids, err := v.folder.Expunged(v.expungedSince)
			if err != nil {
				return
			}
			for _, u := range uids {
				if i, ok := slices.BinarySearch(v.uids, u); ok {
					gone = append(gone, i)
				}
			}
			slices.Sort(gone)
		}
	} else {
		// No mod-sequence to start from (a store without them), or the folder's went back:
		// compare the whole list.
		if changed, err = v.folder.List(); err != nil {
			return
		}
		if !allowExpunge {
			v.relist = true
		}
		if allowExpunge {
			for i, uid := range v.uids {
				if _, ok := slices.BinarySearchFunc(changed, uid, func(m mailbox.Summary, u mailbox.UID) int { return cmpUID(m.UID, u) }); !ok {
					gone = append(gone, i)
				}
			}
		}
	}
	if allowExpunge {
		s.removeFromView(gone)
		v.expungedSince, v.relist = st.HighestModSeq, false
	}
	var last mailbox.UID
	if n := len(v.uids); n > 0 {
		last = v.uids[n-1]
	}
	added := 0
	for i := range changed {
		m := &changed[i]
		if m.UID > last {
			v.uids = append(v.uids, m.UID)
			s.announce(m.Flags)
			added++
			continue
		}
		j, ok := slices.BinarySearch(v.uids, m.UID)
		if !ok || m.ModSeq <= v.modSeq || v.own[m.UID] == m.ModSeq {
			continue
		}
		s.announce(m.Flags)
		s.w.StartUntagged().Number(uint64(j + 1)).Atom("FETCH").Open().Atom("UID").Number(uint64(m.UID)).Atom("FLAGS")
		s.writeFlagList(s.shownFlags(m))
		if s.condstore() {
			s.w.Atom("MODSEQ").Atom("(" + strconv.FormatUint(m.ModSeq, 10) + ")")
		}
		s.w.Close().End()
	}
	if added > 0 {
		if !v.readOnly {
			v.claimRecent()
		}
		s.w.StartUntagged().Number(uint64(len(v.uids))).Atom("EXISTS").End()
		if !s.rev2() {
			s.w.StartUntagged().Number(uint64(len(v.recent))).Atom("RECENT").End()
		}
		s.notifyNew(len(v.uids) - added)
	}
	v.modSeq = st.HighestModSeq
	clear(v.own)
	s.updateContexts()
}

func cmpUID(a, b mailbox.UID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *session) writeFlagList(flags []mailbox.Flag) {
	s.w.Open()
	for _, f := range flags {
		s.w.Atom(string(f))
	}
	s.w.Close()
}

// selectedCommand runs a command of the selected state; it reports false for a command it
// does not know.
func (s *session) selectedCommand(cmd *imapwire.Command) bool {
	tag, v := cmd.Tag, s.sel
	switch cmd.Name {
	case "CHECK":
		s.sync(true)
		s.ok(tag, "CHECK completed")
	case "CLOSE":
		if !v.readOnly {
			s.expungeDeleted(nil, false)
		}
		s.unselect()
		s.ok(tag, "CLOSE completed")
	case "UNSELECT":
		s.unselect()
		s.ok(tag, "UNSELECT completed")
	case "EXPUNGE":
		if v.readOnly {
			s.no(tag, "CANNOT", "The mailbox is read-only (EXAMINE)")
			return true
		}
		var only *imapwire.SeqSet
		if a, ok := cmd.Args.(*imapwire.Expunge); ok && a != nil {
			only = &a.UIDs
		}
		if err := s.expungeDeleted(only, true); err != nil {
			s.storeNo(tag, err)
			return true
		}
		s.sync(true)
		s.ok(tag, "EXPUNGE completed")
	case "STORE":
		s.store1(tag, cmd.UID, cmd.Args.(*imapwire.Store))
	case "FETCH":
		s.fetch(tag, cmd.UID, cmd.Args.(*imapwire.Fetch))
	case "COPY", "MOVE":
		s.copyMove(tag, cmd.UID, cmd.Name == "MOVE", cmd.Args.(*imapwire.Copy))
	case "SEARCH":
		s.search(tag, cmd.UID, cmd.Args.(*imapwire.Search))
	case "SORT":
		s.sortCmd(tag, cmd.UID, cmd.Args.(*imapwire.Sort))
	case "THREAD":
		s.threadCmd(tag, cmd.UID, cmd.Args.(*imapwire.Thread))
	case "CANCELUPDATE":
		s.cancelUpdate(tag, cmd.Args.(*imapwire.CancelUpdate))
	default:
		return false
	}
	return true
}

// expungeDeleted removes the \Deleted messages (of only, when set: UID EXPUNGE) and, when
// report is set, tells the client.
func (s *session) expungeDeleted(only *imapwire.SeqSet, report bool) error {
	v := s.sel
	list, err := v.folder.List()
	if err != nil {
		return err
	}
	var max uint32
	if n := len(v.uids); n > 0 {
		max = uint32(v.uids[n-1])
	}
	var uids []mailbox.UID
	for _, m := range list {
		if slices.Contains(m.Flags, mailbox.FlagDeleted) && (only == nil || only.Contains(uint32(m.UID), max)) {
			uids = append(uids, m.UID)
		}
	}
	if len(uids) == 0 {
		return nil
	}
	gone, err := v.folder.Expunge(uids)
	if err != nil || !report {
		return err
	}
	var idx []int
	for _, uid := range gone {
		if i, ok := slices.BinarySearch(v.uids, uid); ok {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	s.removeFromView(idx)
	return nil
}

func (s *session) store1(tag string, uid bool, a *imapwire.Store) {
	v := s.sel
	if v.readOnly {
		s.no(tag, "CANNOT", "The mailbox is read-only (EXAMINE)")
		return
	}
	if !uid && !v.validSeqs(a.Seqs) {
		s.bad(tag, "Invalid message sequence number")
		return
	}
	idx := v.resolve(a.Seqs, uid)
	uids := make([]mailbox.UID, len(idx))
	for i, j := range idx {
		uids[i] = v.uids[j]
	}
	flags := make([]mailbox.Flag, 0, len(a.Flags))
	for _, f := range a.Flags {
		if !strings.EqualFold(f, `\Recent`) {
			flags = append(flags, mailbox.Flag(canonicalFlag(f)))
		}
	}
	op := map[imapwire.StoreOp]mailbox.FlagOp{imapwire.StoreReplace: mailbox.FlagsSet, imapwire.StoreAdd: mailbox.FlagsAdd, imapwire.StoreRemove: mailbox.FlagsRemove}[a.Op]
	var since uint64
	if a.UnchangedSince != nil {
		s.enableCondstore()
		since = *a.UnchangedSince
		if since == 0 {
			// Every message has a mod-sequence above 0: none is changed, all are reported
			// (RFC 7162 section 3.1.3).
			var nums []uint32
			for i, j := range idx {
				if uid {
					nums = append(nums, uint32(uids[i]))
				} else {
					nums = append(nums, uint32(j+1))
				}
			}
			s.sync(false)
			if len(nums) == 0 {
				s.ok(tag, "STORE completed")
				return
			}
			s.w.StartTagged(tag).Atom("OK").Code("MODIFIED", compress(nums)).Text("Some messages changed since").End()
			return
		}
	}
	res, err := v.folder.ChangeFlags(uids, op, flags, since)
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	s.announce(flags)
	show := append(slices.Clone(res.Changed), res.Unchanged...)
	slices.SortFunc(show, func(x, y mailbox.Summary) int { return int(x.UID) - int(y.UID) })
	for i := range show {
		// A message may carry keywords another session set, not yet announced here.
		s.announce(show[i].Flags)
	}
	for _, m := range res.Changed {
		v.own[m.UID] = m.ModSeq
	}
	if !a.Silent {
		for i := range show {
			m := &show[i]
			j, ok := slices.BinarySearch(v.uids, m.UID)
			if !ok {
				continue
			}
			w := s.w.StartUntagged().Number(uint64(j + 1)).Atom("FETCH").Open()
			if uid {
				w.Atom("UID").Number(uint64(m.UID))
			}
			w.Atom("FLAGS")
			s.writeFlagList(s.shownFlags(m))
			if s.condstore() {
				w.Atom("MODSEQ").Atom("(" + strconv.FormatUint(m.ModSeq, 10) + ")")
			}
			w.Close().End()
		}
	}
	s.sync(false)
	if len(res.Modified) > 0 {
		var nums []uint32
		for _, u := range res.Modified {
			if uid {
				nums = append(nums, uint32(u))
			} else if j, ok := slices.BinarySearch(v.uids, u); ok {
				nums = append(nums, uint32(j+1))
			}
		}
		slices.Sort(nums)
		s.w.StartTagged(tag).Atom("OK").Code("MODIFIED", compress(nums)).Text("Some messages changed since").End()
		return
	}
	s.ok(tag, "STORE completed")
}

// canonicalFlag writes system flags in their usual case.
func canonicalFlag(f string) string {
	for _, sf := range systemFlags {
		if strings.EqualFold(f, string(sf)) {
			return string(sf)
		}
	}
	return f
}

func (s *session) copyMove(tag string, uid, move bool, a *imapwire.Copy) {
	v := s.sel
	if move && v.readOnly {
		s.no(tag, "CANNOT", "The mailbox is read-only (EXAMINE)")
		return
	}
	if !uid && !v.validSeqs(a.Seqs) {
		s.bad(tag, "Invalid message sequence number")
		return
	}
	dest, err := s.store.Folder(canonical(a.Mailbox))
	if err != nil {
		if errors.Is(err, mailbox.ErrNoFolder) {
			s.no(tag, "TRYCREATE", "No such mailbox")
			return
		}
		s.storeNo(tag, err)
		return
	}
	var uids []mailbox.UID
	for _, j := range v.resolve(a.Seqs, uid) {
		uids = append(uids, v.uids[j])
	}
	if len(uids) == 0 {
		s.ok(tag, "Nothing to do")
		return
	}
	if !move && s.copyOverQuota(tag, uids) {
		return
	}
	var res mailbox.CopyResult
	if move {
		res, err = v.folder.Move(uids, dest)
	} else {
		res, err = v.folder.Copy(uids, dest)
	}
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	if canonical(a.Mailbox) == v.name {
		v.markOwnNew(res.DestUIDs)
	}
	code := []string{strconv.FormatUint(uint64(res.UIDValidity), 10), uidList(res.SourceUIDs), uidList(res.DestUIDs)}
	if move {
		// RFC 6851: COPYUID in an untagged OK, then the expunges, then the tagged OK.
		s.w.StartUntagged().Atom("OK").Code("COPYUID", code...).Text("Moved").End()
		s.sync(true)
		s.ok(tag, "MOVE completed")
		return
	}
	s.w.StartTagged(tag).Atom("OK").Code("COPYUID", code...).Text("COPY completed").End()
}

func uidList(uids []mailbox.UID) string {
	parts := make([]string, len(uids))
	for i, u := range uids {
		parts[i] = strconv.FormatUint(uint64(u), 10)
	}
	return strings.Join(parts, ",")
}

func (s *session) appendMsg(tag string, a *imapwire.Append) {
	name := canonical(a.Mailbox)
	f, err := s.store.Folder(name)
	if err != nil {
		if errors.Is(err, mailbox.ErrNoFolder) {
			s.no(tag, "TRYCREATE", "No such mailbox")
			return
		}
		s.storeNo(tag, err)
		return
	}
	st, err := f.Status()
	if err != nil {
		s.storeNo(tag, err)
		return
	}
	datas := make([][]byte, len(a.Messages))
	for i, m := range a.Messages {
		datas[i] = m.Data
		if m.Catenate == nil {
			continue
		}
		b, err := s.catenate(m.Catenate)
		var bu *errBadURL
		switch {
		case errors.As(err, &bu):
			s.respond(tag, "NO", "BADURL "+bu.url, bu.why)
			return
		case errors.Is(err, errTooBigCat):
			s.no(tag, "TOOBIG", "The catenated message is too big")
			return
		case err != nil:
			s.storeNo(tag, err)
			return
		}
		datas[i] = b
	}
	if s.appendOverQuota(tag, datas) {
		return
	}
	// MULTIAPPEND (RFC 3502) is all or nothing: when a message fails, those appended before it
	// in this command are expunged again before the NO. (A crash in the middle leaves them:
	// the client, without an OK, sends the command again.)
	var uids []mailbox.UID
	undo := func() {
		if len(uids) == 0 {
			return
		}
		if _, err := f.Expunge(uids); err != nil {
			s.log.Warn("imap MULTIAPPEND: could not take back the messages appended before a failure", "uids", uidList(uids), "err", err)
		}
	}
	msgs := make([]mailbox.NewMessage, len(a.Messages))
	for i, m := range a.Messages {
		var flags []mailbox.Flag
		for _, fl := range m.Flags {
			if !strings.EqualFold(fl, `\Recent`) {
				flags = append(flags, mailbox.Flag(canonicalFlag(fl)))
			}
		}
		msgs[i] = mailbox.NewMessage{Raw: datas[i], Flags: flags, Date: m.Date}
	}
	// Several messages wait for durability once where the store can (a migration tool's
	// MULTIAPPEND); one message, or a store without it, one Append at a time.
	if ma, ok := f.(mailbox.MultiAppender); ok && len(msgs) > 1 {
		uids, err = ma.AppendAll(msgs)
	} else {
		for _, m := range msgs {
			var uid mailbox.UID
			if uid, err = f.Append(m.Raw, m.Flags, m.Date); err != nil {
				break
			}
			uids = append(uids, uid)
		}
	}
	if err != nil {
		undo()
		if errors.Is(err, mailbox.ErrTooBig) {
			s.no(tag, "TOOBIG", "The message is too big")
			return
		}
		s.storeNo(tag, err)
		return
	}
	if s.sel != nil && s.sel.name == name {
		s.sel.markOwnNew(uids)
		s.sync(false)
	}
	s.w.StartTagged(tag).Atom("OK").Code("APPENDUID", strconv.FormatUint(uint64(st.UIDValidity), 10), uidList(uids)).Text("APPEND completed").End()
}

func (s *session) fetch(tag string, uid bool, a *imapwire.Fetch) {
	v := s.sel
	if !uid && !v.validSeqs(a.Seqs) {
		s.bad(tag, "Invalid message sequence number")
		return
	}
	if a.Vanished {
		if !s.qresync() || !uid || a.ChangedSince == 0 {
			s.bad(tag, "VANISHED needs ENABLE QRESYNC, UID FETCH and CHANGEDSINCE (RFC 7162 section 3.2.6)")
			return
		}
		if gone, err := v.folder.Expunged(a.ChangedSince); err == nil {
			var nums []uint32
			var max uint32
			if n := len(v.uids); n > 0 {
				max = uint32(v.uids[n-1])
			}
			for _, u := range gone {
				if a.Seqs.Contains(uint32(u), max) {
					nums = append(nums, uint32(u))
				}
			}
			if len(nums) > 0 {
				s.w.StartUntagged().Atom("VANISHED").Open().Atom("EARLIER").Close().Atom(compress(nums)).End()
			}
		}
	}
	items := a.Items
	if a.ChangedSince > 0 {
		s.enableCondstore()
		if !slices.ContainsFunc(items, func(it imapwire.FetchItem) bool { return it.Name == "MODSEQ" }) {
			items = append(slices.Clone(items), imapwire.FetchItem{Name: "MODSEQ"})
		}
	}
	if slices.ContainsFunc(items, func(it imapwire.FetchItem) bool { return it.Name == "MODSEQ" }) {
		s.enableCondstore()
	}
	setSeen := false
	for _, it := range items {
		if (it.Name == "BODY" && it.Section != nil || it.Name == "BINARY" || it.Name == "RFC822" || it.Name == "RFC822.TEXT") && !it.Peek {
			setSeen = !v.readOnly
		}
	}
	for _, j := range v.resolve(a.Seqs, uid) {
		u := v.uids[j]
		msg, err := v.folder.Message(u)
		if errors.Is(err, mailbox.ErrNoMessage) {
			continue // expunged by another session, not yet reported (RFC 9051 6.4.5)
		} else if err != nil {
			s.storeNo(tag, err)
			return
		}
		if a.ChangedSince > 0 && msg.ModSeq <= a.ChangedSince {
			continue
		}
		flagsChanged := false
		if setSeen && !slices.Contains(msg.Flags, mailbox.FlagSeen) {
			if res, err := v.folder.ChangeFlags([]mailbox.UID{u}, mailbox.FlagsAdd, []mailbox.Flag{mailbox.FlagSeen}, 0); err == nil && len(res.Changed) == 1 {
				msg.Summary = res.Changed[0]
				v.own[u] = msg.ModSeq
				flagsChanged = true
			}
		}
		if err := s.fetchOne(j+1, uid, msg, items, flagsChanged); err != nil {
			if errors.Is(err, errNotServed) {
				s.no(tag, "CANNOT", err.Error())
				return
			}
			if errors.Is(err, errUnknownCTE) {
				s.no(tag, "UNKNOWN-CTE", "The part's content transfer encoding is unknown")
				return
			}
			if errors.Is(err, mailbox.ErrNoMessage) {
				continue // expunged by another session between its summary and its content
			}
			s.storeNo(tag, err)
			return
		}
	}
	s.sync(false)
	s.ok(tag, "FETCH completed")
}

var errNotServed = errors.New("that FETCH item is not served by this engine yet")

func (s *session) fetchOne(seq int, uid bool, msg *mailbox.Message, items []imapwire.FetchItem, flagsChanged bool) error {
	var content mailbox.Content
	body := func() (mailbox.Content, error) {
		if content == nil {
			c, err := s.sel.folder.Content(msg.UID)
			if err != nil {
				return nil, err
			}
			content = c
		}
		return content, nil
	}
	// Check and gather first: nothing of a response is written before it is known to work.
	type part struct {
		name      string
		data      []byte
		flag      bool
		structure func() error // ENVELOPE, BODY, BODYSTRUCTURE: written in place
	}
	var parts []part
	wantFlags, wantUID := flagsChanged, uid
	var headerSize int64
	if msg.Structure != nil {
		headerSize = msg.Structure.HeaderSize
	}
	for _, it := range items {
		switch it.Name {
		case "UID":
			wantUID = true
		case "FLAGS":
			wantFlags = true
		case "INTERNALDATE":
			parts = append(parts, part{name: "INTERNALDATE", data: []byte(`"` + msg.InternalDate.Format("02-Jan-2006 15:04:05 -0700") + `"`), flag: true})
		case "RFC822.SIZE":
			parts = append(parts, part{name: "RFC822.SIZE", data: []byte(strconv.FormatInt(msg.Size, 10)), flag: true})
		case "BODY", "BINARY", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY.SIZE":
			sec := it.Section
			if it.Name == "BODY" && sec == nil {
				if msg.Structure == nil || msg.Structure.BodyStructure == nil {
					return errNotServed
				}
				parts = append(parts, part{name: "BODY", structure: func() error { return s.writeBodyStructure(msg.Structure.BodyStructure, false) }})
				continue
			}
			c, err := body()
			if err != nil {
				return err
			}
			var data []byte
			fast := sec == nil || len(sec.Part) == 0 && (sec.Specifier == "" || sec.Specifier == "HEADER" || sec.Specifier == "TEXT")
			if it.Name != "BINARY" && it.Name != "BINARY.SIZE" && fast {
				start, end := int64(0), c.Size()
				spec := ""
				if sec != nil {
					spec = sec.Specifier
				}
				switch {
				case it.Name == "RFC822.HEADER" || spec == "HEADER":
					end = min(headerSize, end)
				case it.Name == "RFC822.TEXT" || spec == "TEXT":
					start = min(headerSize, end)
				}
				data = make([]byte, end-start)
				if _, err := c.ReadAt(data, start); err != nil && !errors.Is(err, io.EOF) {
					return err
				}
			} else {
				raw := make([]byte, c.Size())
				if _, err := c.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				if it.Name == "BODY" {
					data, err = section(raw, sec)
				} else {
					data, err = binarySection(raw, sec)
				}
				switch {
				case errors.Is(err, errNoSection):
					data = nil // an absent part is an empty string
				case err != nil:
					return err
				}
			}
			if p := it.Partial; p != nil {
				off := min(int(p.Offset), len(data))
				data = data[off:min(off+int(p.Count), len(data))]
			}
			if it.Name == "BINARY.SIZE" {
				parts = append(parts, part{name: it.ResponseName(), data: []byte(strconv.Itoa(len(data))), flag: true})
				continue
			}
			if it.Name != "BINARY" {
				data = withoutNUL(data)
			}
			parts = append(parts, part{name: it.ResponseName(), data: data})
		case "MODSEQ":
			parts = append(parts, part{name: "MODSEQ", data: []byte("(" + strconv.FormatUint(msg.ModSeq, 10) + ")"), flag: true})
		case "ENVELOPE":
			parts = append(parts, part{name: "ENVELOPE", structure: func() error {
				var e *mailbox.Envelope
				if msg.Structure != nil {
					e = msg.Structure.Envelope
				}
				s.writeEnvelope(e)
				return nil
			}})
		case "BODYSTRUCTURE":
			if msg.Structure == nil || msg.Structure.BodyStructure == nil {
				return errNotServed
			}
			parts = append(parts, part{name: "BODYSTRUCTURE", structure: func() error { return s.writeBodyStructure(msg.Structure.BodyStructure, true) }})
		default:
			return errNotServed
		}
	}
	if wantFlags {
		s.announce(msg.Flags)
	}
	if flagsChanged && s.condstore() && !slices.ContainsFunc(parts, func(p part) bool { return p.name == "MODSEQ" }) {
		parts = append(parts, part{name: "MODSEQ", data: []byte("(" + strconv.FormatUint(msg.ModSeq, 10) + ")"), flag: true})
	}
	w := s.w.StartUntagged().Number(uint64(seq)).Atom("FETCH").Open()
	if wantUID {
		w.Atom("UID").Number(uint64(msg.UID))
	}
	if wantFlags {
		w.Atom("FLAGS")
		s.writeFlagList(s.shownFlags(&msg.Summary))
	}
	for _, p := range parts {
		w.Atom(p.name)
		if p.structure != nil {
			if err := p.structure(); err != nil {
				return err
			}
		} else if p.flag {
			w.Atom(string(p.data))
		} else if strings.HasPrefix(p.name, "BINARY") {
			w.Binary(p.data)
		} else {
			w.Literal(p.data)
		}
	}
	w.Close().End()
	return s.w.Err()
}

// resync is the QRESYNC part of SELECT (RFC 7162 section 3.2.5.1): what was expunged since
// the client's mod-sequence, as VANISHED (EARLIER), then the messages changed since.
func (s *session) resync(q *imapwire.QResync) {
	v := s.sel
	gone, err := v.folder.Expunged(q.ModSeq)
	if err == nil {
		var nums []uint32
		var max uint32
		if n := len(v.uids); n > 0 {
			max = uint32(v.uids[n-1])
		}
		for _, u := range gone {
			if q.KnownUIDs == nil || q.KnownUIDs.Contains(uint32(u), max) {
				nums = append(nums, uint32(u))
			}
		}
		if len(nums) > 0 {
			s.w.StartUntagged().Atom("VANISHED").Open().Atom("EARLIER").Close().Atom(compress(nums)).End()
		}
	}
	changed, err := v.folder.Changed(q.ModSeq)
	if err != nil {
		return
	}
	for i := range changed {
		m := &changed[i]
		j, ok := slices.BinarySearch(v.uids, m.UID)
		if !ok {
			continue
		}
		s.announce(m.Flags)
		s.w.StartUntagged().Number(uint64(j + 1)).Atom("FETCH").Open().Atom("UID").Number(uint64(m.UID)).Atom("FLAGS")
		s.writeFlagList(s.shownFlags(m))
		s.w.Atom("MODSEQ").Atom("(" + strconv.FormatUint(m.ModSeq, 10) + ")").Close().End()
	}
}

// markOwnNew records messages this session put into the mailbox (see view.ownNew).
func (v *view) markOwnNew(uids []mailbox.UID) {
	if v.ownNew == nil {
		v.ownNew = map[mailbox.UID]bool{}
	}
	for _, u := range uids {
		v.ownNew[u] = true
	}
}
