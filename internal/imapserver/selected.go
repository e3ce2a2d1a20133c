package imapserver

import (
	"cmp"
	"errors"
	"slices"
	"sort"

	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
	imapsrv "github.com/emersion/go-imap/v2/imapserver"
)

// selected is the client's view of its selected folder. The view is the
// list of UIDs the client has been told exist: message sequence number n is
// uids[n-1] (RFC 3501 section 2.3.1.2). The view changes only when the
// client is told, by EXISTS and EXPUNGE responses in sync.
type selected struct {
	folder   mailbox.Folder
	readOnly bool

	uids   []imap.UID
	recent map[imap.UID]bool // \Recent in this session (RFC 3501 section 2.3.2)

	// modSeq is the folder's HIGHESTMODSEQ when the client was last brought
	// up to date; flag changes above it are reported on the next sync. (The
	// store's modification sequences serve only this here: CONDSTORE is
	// not offered, see the package comment.)
	modSeq uint64
	// own holds modseqs of flag changes this session already reported in
	// its own FETCH responses, so that sync does not repeat them.
	own map[imap.UID]uint64

	watch     <-chan struct{}
	stopWatch func()

	searchRes []imap.UID // SEARCH SAVE result, "$" (RFC 5182)

	// rev2 is set once the client enabled IMAP4rev2, which has no \Recent
	// (RFC 9051 appendix E).
	rev2 bool

	// pendingExpunge is set when sync saw expunges it could not report
	// yet (during FETCH, STORE or SEARCH).
	pendingExpunge bool
}

// Select implements imapsrv.Session (SELECT and EXAMINE).
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	f, err := s.store.Folder(name)
	if err != nil {
		return nil, storeError(err)
	}
	// Watch before reading, so that no change falls between the two.
	watch, stop := f.Watch()
	st, err := f.Status()
	if err != nil {
		stop()
		return nil, storeError(err)
	}
	list, err := f.List()
	if err != nil {
		stop()
		return nil, storeError(err)
	}
	sel := &selected{
		folder:    f,
		readOnly:  options.ReadOnly,
		recent:    make(map[imap.UID]bool),
		own:       make(map[imap.UID]uint64),
		modSeq:    st.HighestModSeq,
		watch:     watch,
		stopWatch: stop,
	}
	sel.uids = make([]imap.UID, len(list))
	keywords := make(map[imap.Flag]bool)
	var firstUnseen uint32
	for i, m := range list {
		sel.uids[i] = m.UID
		for _, fl := range m.Flags {
			keywords[fl] = true
		}
		if firstUnseen == 0 && !slices.Contains(m.Flags, imap.FlagSeen) {
			firstUnseen = uint32(i + 1)
		}
	}
	if !options.ReadOnly {
		sel.claimRecent()
	}
	sel.rev2 = s.conn.EnabledCaps().Has(imap.CapIMAP4rev2)
	s.sel = sel

	flags := []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}
	for fl := range keywords {
		if !slices.Contains(flags, fl) {
			flags = append(flags, fl)
		}
	}
	var permanent []imap.Flag
	if !options.ReadOnly {
		// \* : clients may create keywords (RFC 3501 section 7.1).
		permanent = append(slices.Clone(flags), imap.FlagWildcard)
	}
	s.log.Debug("imap select", "folder", f.Info().Name, "messages", len(list), "readonly", options.ReadOnly)
	return &imap.SelectData{
		Flags:             flags,
		PermanentFlags:    permanent,
		NumMessages:       uint32(len(list)),
		NumRecent:         uint32(len(sel.recent)),
		FirstUnseenSeqNum: firstUnseen,
		UIDNext:           st.UIDNext,
		UIDValidity:       st.UIDValidity,
	}, nil
}

// claimRecent takes \Recent for messages no session has seen yet.
func (sel *selected) claimRecent() {
	from, to := sel.folder.ClaimRecent()
	for uid := from; uid < to; uid++ {
		sel.recent[uid] = true
	}
}

// Unselect implements imapsrv.Session (UNSELECT, CLOSE).
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel != nil {
		s.sel.stopWatch()
		s.sel = nil
	}
}

// Poll implements imapsrv.Session: after each command, report what changed
// (RFC 3501 section 7: unsolicited responses). It costs nothing when the
// folder's watch has not fired.
func (s *session) Poll(w *imapsrv.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	select {
	case <-s.sel.watch:
		return s.sync(w, allowExpunge)
	default:
		if s.sel.pendingExpunge && allowExpunge {
			return s.sync(w, true)
		}
		return nil
	}
}

// Idle implements imapsrv.Session (RFC 2177): every change to the selected
// folder is pushed the moment its watch fires.
func (s *session) Idle(w *imapsrv.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		<-stop
		return nil
	}
	if err := s.Poll(w, true); err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		case <-s.sel.watch:
			if err := s.sync(w, true); err != nil {
				return err
			}
		}
	}
}

// sync brings the client's view up to date with the folder: EXPUNGE for
// messages gone (only where allowed: not during FETCH, STORE, SEARCH, RFC
// 3501 section 7.4.1), FETCH FLAGS for changed flags, EXISTS and RECENT for
// new messages.
func (s *session) sync(w *imapsrv.UpdateWriter, allowExpunge bool) error {
	sel := s.sel
	st, err := sel.folder.Status()
	if errors.Is(err, mailbox.ErrNoFolder) {
		// Deleted under us: the client will get NO on its next command.
		return nil
	} else if err != nil {
		return err
	}
	if done, err := s.syncSince(w, st, allowExpunge); done || err != nil {
		return err
	}
	list, err := sel.folder.List()
	if err != nil {
		return storeError(err)
	}
	current := make(map[imap.UID]*mailbox.Summary, len(list))
	for i := range list {
		current[list[i].UID] = &list[i]
	}
	sel.pendingExpunge = false
	if !allowExpunge {
		for _, uid := range sel.uids {
			if current[uid] == nil {
				sel.pendingExpunge = true
				break
			}
		}
	} else {
		// Highest sequence number first, so that each number is still
		// valid when the client applies it.
		for i := len(sel.uids) - 1; i >= 0; i-- {
			uid := sel.uids[i]
			if current[uid] != nil {
				continue
			}
			if err := w.WriteExpunge(uint32(i + 1)); err != nil {
				return err
			}
			sel.uids = slices.Delete(sel.uids, i, i+1)
			delete(sel.recent, uid)
			delete(sel.own, uid)
		}
	}
	var last imap.UID
	if n := len(sel.uids); n > 0 {
		last = sel.uids[n-1]
	}
	for i, uid := range sel.uids {
		m := current[uid]
		if m == nil || m.ModSeq <= sel.modSeq || sel.own[uid] == m.ModSeq {
			continue
		}
		if err := w.WriteMessageFlags(uint32(i+1), uid, sel.flags(m)); err != nil {
			return err
		}
	}
	added := 0
	for _, m := range list {
		if m.UID > last {
			sel.uids = append(sel.uids, m.UID)
			added++
		}
	}
	if added > 0 {
		if !sel.readOnly {
			sel.claimRecent()
		}
		if err := w.WriteNumMessages(uint32(len(sel.uids))); err != nil {
			return err
		}
		if err := w.WriteNumRecent(uint32(len(sel.recent))); err != nil {
			return err
		}
	}
	sel.modSeq = st.HighestModSeq
	clear(sel.own)
	return nil
}

// syncSince is sync from what changed since the session's modseq (Changed, Expunged) rather
// than from the whole folder, so that a session IDLE on a large INBOX pays for the new
// message, not for the mailbox. It reports false, having written nothing, when the changes
// do not add up to the folder's message count (a change raced with the reads, or a
// tombstone is gone): sync then compares whole lists.
func (s *session) syncSince(w *imapsrv.UpdateWriter, st mailbox.Status, allowExpunge bool) (bool, error) {
	sel := s.sel
	if st.HighestModSeq < sel.modSeq {
		return false, nil
	}
	gone, err := sel.folder.Expunged(sel.modSeq)
	if err != nil {
		return false, storeError(err)
	}
	changed, err := sel.folder.Changed(sel.modSeq)
	if err != nil {
		return false, storeError(err)
	}
	var last imap.UID
	if n := len(sel.uids); n > 0 {
		last = sel.uids[n-1]
	}
	var goneAt []int // indexes into sel.uids, ascending
	for _, uid := range gone {
		if i, ok := slices.BinarySearch(sel.uids, uid); ok {
			goneAt = append(goneAt, i)
		}
	}
	added := 0
	for _, m := range changed {
		if m.UID > last {
			added++
		}
	}
	if len(sel.uids)-len(goneAt)+added != int(st.Messages) {
		return false, nil
	}
	sel.pendingExpunge = false
	if len(goneAt) > 0 && !allowExpunge {
		sel.pendingExpunge = true
		goneAt = nil
	}
	// Highest sequence number first, so that each number is still valid when the client
	// applies it.
	for j := len(goneAt) - 1; j >= 0; j-- {
		i := goneAt[j]
		uid := sel.uids[i]
		if err := w.WriteExpunge(uint32(i + 1)); err != nil {
			return true, err
		}
		sel.uids = slices.Delete(sel.uids, i, i+1)
		delete(sel.recent, uid)
		delete(sel.own, uid)
	}
	for i := range changed {
		m := &changed[i]
		if m.UID > last || sel.own[m.UID] == m.ModSeq {
			continue
		}
		seq, ok := slices.BinarySearch(sel.uids, m.UID)
		if !ok {
			continue
		}
		if err := w.WriteMessageFlags(uint32(seq+1), m.UID, sel.flags(m)); err != nil {
			return true, err
		}
	}
	for _, m := range changed {
		if m.UID > last {
			sel.uids = append(sel.uids, m.UID)
		}
	}
	if added > 0 {
		if !sel.readOnly {
			sel.claimRecent()
		}
		if err := w.WriteNumMessages(uint32(len(sel.uids))); err != nil {
			return true, err
		}
		if err := w.WriteNumRecent(uint32(len(sel.recent))); err != nil {
			return true, err
		}
	}
	sel.modSeq = st.HighestModSeq
	clear(sel.own)
	return true, nil
}

// flags returns a message's flags as this session shows them.
func (sel *selected) flags(m *mailbox.Summary) []imap.Flag {
	if sel.rev2 || !sel.recent[m.UID] {
		return m.Flags
	}
	return append(slices.Clone(m.Flags), mailbox.FlagRecent)
}

// seqOf returns the sequence number of uid in the view, or 0.
func (sel *selected) seqOf(uid imap.UID) uint32 {
	i, ok := slices.BinarySearch(sel.uids, uid)
	if !ok {
		return 0
	}
	return uint32(i + 1)
}

// resolve turns a sequence or UID set into view indexes, ascending. "*" is
// the last message (RFC 3501 section 6.4.8: n:* includes the last message
// even when n is larger); numbers outside the view are skipped.
func (sel *selected) resolve(numSet imap.NumSet) []int {
	n := len(sel.uids)
	var idx []int
	if imap.IsSearchRes(numSet) {
		for _, uid := range sel.searchRes {
			if seq := sel.seqOf(uid); seq != 0 {
				idx = append(idx, int(seq-1))
			}
		}
		return idx
	}
	switch set := numSet.(type) {
	case imap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = uint32(n)
			}
			if stop == 0 {
				stop = uint32(n)
			}
			if start > stop {
				start, stop = stop, start
			}
			for seq := start; seq <= stop && seq <= uint32(n); seq++ {
				if seq >= 1 {
					idx = append(idx, int(seq-1))
				}
			}
		}
	case imap.UIDSet:
		if n == 0 {
			return nil
		}
		maxUID := sel.uids[n-1]
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = maxUID
			}
			if stop == 0 {
				stop = maxUID
			}
			if start > stop {
				start, stop = stop, start
			}
			lo := sort.Search(n, func(i int) bool { return sel.uids[i] >= start })
			for i := lo; i < n && sel.uids[i] <= stop; i++ {
				idx = append(idx, i)
			}
		}
	}
	slices.Sort(idx)
	return slices.Compact(idx)
}

func (sel *selected) uidsOf(idx []int) []imap.UID {
	uids := make([]imap.UID, len(idx))
	for i, j := range idx {
		uids[i] = sel.uids[j]
	}
	return uids
}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "READ-ONLY", Text: "Folder is open read-only (EXAMINE); SELECT it to change it"}

var errNotSelected = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No folder selected"}

// Store implements imapsrv.Session (RFC 3501 section 6.4.6). Without
// .SILENT every addressed message's flags are reported, changed or not.
func (s *session) Store(w *imapsrv.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	sel := s.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		return errReadOnly
	}
	op := mailbox.FlagsSet
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = mailbox.FlagsAdd
	case imap.StoreFlagsDel:
		op = mailbox.FlagsRemove
	}
	res, err := sel.folder.ChangeFlags(sel.uidsOf(sel.resolve(numSet)), op, flags.Flags, 0)
	if err != nil {
		return storeError(err)
	}
	// Our own change is reported here, not again by the next sync.
	for _, m := range res.Changed {
		sel.own[m.UID] = m.ModSeq
	}
	if flags.Silent {
		return nil
	}
	all := append(res.Changed, res.Unchanged...)
	slices.SortFunc(all, func(a, b mailbox.Summary) int { return cmp.Compare(a.UID, b.UID) })
	_, byUID := numSet.(imap.UIDSet)
	for _, m := range all {
		seq := sel.seqOf(m.UID)
		if seq == 0 {
			continue
		}
		rw := w.CreateMessage(seq)
		if byUID {
			rw.WriteUID(m.UID)
		}
		rw.WriteFlags(sel.flags(&m))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Expunge implements imapsrv.Session (EXPUNGE, UID EXPUNGE of RFC 4315,
// and CLOSE, whose writer discards the responses).
func (s *session) Expunge(w *imapsrv.ExpungeWriter, uids *imap.UIDSet) error {
	sel := s.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		if uids == nil {
			return nil // CLOSE after EXAMINE expunges nothing
		}
		return errReadOnly
	}
	list, err := sel.folder.List()
	if err != nil {
		return storeError(err)
	}
	var doomed []imap.UID
	for _, m := range list {
		if !slices.Contains(m.Flags, imap.FlagDeleted) || sel.seqOf(m.UID) == 0 {
			continue
		}
		if uids != nil && !uids.Contains(m.UID) {
			continue
		}
		doomed = append(doomed, m.UID)
	}
	gone, err := sel.folder.Expunge(doomed)
	if err != nil {
		return storeError(err)
	}
	return sel.removeFromView(gone, w.WriteExpunge)
}

// removeFromView drops expunged UIDs from the view, reporting each one's
// sequence number, highest first.
func (sel *selected) removeFromView(gone []imap.UID, write func(uint32) error) error {
	slices.Sort(gone)
	for i := len(gone) - 1; i >= 0; i-- {
		seq := sel.seqOf(gone[i])
		if seq == 0 {
			continue
		}
		if err := write(seq); err != nil {
			return err
		}
		sel.uids = slices.Delete(sel.uids, int(seq-1), int(seq))
		delete(sel.recent, gone[i])
	}
	return nil
}

// Copy implements imapsrv.Session (RFC 4315 COPYUID).
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	sel := s.sel
	if sel == nil {
		return nil, errNotSelected
	}
	d, err := s.destFolder(dest)
	if err != nil {
		return nil, err
	}
	res, err := sel.folder.Copy(sel.uidsOf(sel.resolve(numSet)), d)
	if err != nil {
		return nil, storeError(err)
	}
	return copyData(res), nil
}

func copyData(res mailbox.CopyResult) *imap.CopyData {
	data := &imap.CopyData{UIDValidity: res.UIDValidity}
	data.SourceUIDs.AddNum(res.SourceUIDs...)
	data.DestUIDs.AddNum(res.DestUIDs...)
	return data
}

// Move implements imapsrv.SessionMove (RFC 6851: COPYUID first, then the
// EXPUNGEs).
func (s *session) Move(w *imapsrv.MoveWriter, numSet imap.NumSet, dest string) error {
	sel := s.sel
	if sel == nil {
		return errNotSelected
	}
	if sel.readOnly {
		return errReadOnly
	}
	d, err := s.destFolder(dest)
	if err != nil {
		return err
	}
	res, err := sel.folder.Move(sel.uidsOf(sel.resolve(numSet)), d)
	if err != nil {
		return storeError(err)
	}
	if len(res.SourceUIDs) > 0 {
		if err := w.WriteCopyData(copyData(res)); err != nil {
			return err
		}
	}
	return sel.removeFromView(slices.Clone(res.SourceUIDs), w.WriteExpunge)
}
