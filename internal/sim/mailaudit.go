package sim

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"

	"epost/internal/mailbox"
	"epost/internal/post"
)

// MailAudit is the end-of-run check of `epost sim mail` with churn, restarts or folder
// operations: after everything settled and every user's node had a final process restart
// (so each log is reopened from the ring and the node's records), every message whose send
// was accepted must be in its recipient's INBOX log exactly once, and every acknowledged
// folder, copy and flag must be there, as a fresh mail store (the IMAP server's view) shows
// them.
type MailAudit struct {
	Restarts      int // process restarts of users' nodes before the final round
	ChurnSessions int // sessions of other nodes that churn ended
	// Acknowledged folder operations, and how many of them the audit did not find.
	Folders, Copies, Flags             int
	FoldersLost, CopiesLost, FlagsLost int
	// Forks: log forks POST merged, plus PAST lookups that met two versions at one sequence
	// number (all instances, restarted ones too).
	PostForks, PastForks uint64
	Unopened             int // users whose INBOX or mail store could not be opened (their losses are counted too)

	filed, dups, lost int // INBOX: messages present, extra copies, accepted and absent
}

func (a *MailAudit) String() string {
	return fmt.Sprintf("restarts=%d churn_sessions=%d folders=%d copies=%d flags=%d folders_lost=%d copies_lost=%d flags_lost=%d forks=%d unopened=%d",
		a.Restarts, a.ChurnSessions, a.Folders, a.Copies, a.Flags, a.FoldersLost, a.CopiesLost, a.FlagsLost, a.PostForks+a.PastForks, a.Unopened)
}

// maxAuditNotes bounds the notes of each kind sent to progress.
const maxAuditNotes = 10

func (run *mailRun) audit() *MailAudit {
	a := &MailAudit{Restarts: run.churn.userRestarts, ChurnSessions: run.churn.sessions}
	tot := run.totals()
	a.PostForks, a.PastForks = tot.postForks, tot.pastForks
	// Notes on what is missing go to progress, at most maxAuditNotes of each kind, and a
	// count per user.
	notes := map[string]int{}
	note := func(kind, format string, args ...any) {
		if notes[kind] < maxAuditNotes {
			run.progress("audit: " + fmt.Sprintf(format, args...))
		}
		notes[kind]++
	}
	type userLoss struct{ lost, dups, folders, copies, flags int }
	losses := map[*simUser]*userLoss{}
	unopened := map[*simUser]bool{}
	loss := func(su *simUser) *userLoss {
		if losses[su] == nil {
			losses[su] = &userLoss{}
		}
		return losses[su]
	}

	// INBOX: exactly once, by notification id.
	counts := map[*simUser]map[post.NotificationID]int{}
	filed := map[post.NotificationID]*post.Filed{}
	for _, su := range run.users {
		c := map[post.NotificationID]int{}
		counts[su] = c
		if su.u == nil {
			unopened[su] = true
			note("open", "%s was not started again after the final restart", su.addr)
			continue
		}
		es, err := su.u.Entries(post.InboxLog, 0)
		if err != nil {
			unopened[su] = true
			note("open", "INBOX of %s: %v", su.addr, err)
			continue
		}
		for _, b := range es {
			if f, err := post.DecodeFiled(b); err == nil {
				c[f.ID]++
				filed[f.ID] = f
			}
		}
	}
	for _, m := range run.msgs {
		switch c := counts[m.to][m.id]; {
		case c > 0 && m.accepted && !run.bodyStored(filed[m.id]):
			// In the INBOX, but its body is on no live node's disk (a recipient that files
			// a message whose chunks its notification carried stores them itself).
			a.lost++
			loss(m.to).lost++
			note("body", "message %d (accepted at %s) is in the INBOX of %s but its body is stored nowhere", m.n, m.acceptedAt, m.to.addr)
		case c > 0:
			a.filed++
			a.dups += c - 1
			if c > 1 {
				loss(m.to).dups += c - 1
				note("dup", "message %d in the INBOX of %s %d times", m.n, m.to.addr, c)
			}
		case m.accepted:
			a.lost++
			loss(m.to).lost++
			note("lost", "message %d (accepted at %s) missing from the INBOX of %s", m.n, m.acceptedAt, m.to.addr)
		}
	}

	// Folders, copies and flags, through a mail store opened afresh.
	byUser := map[*simUser][]folderOp{}
	for _, op := range run.ops {
		byUser[op.user] = append(byUser[op.user], op)
		switch op.kind {
		case opCreate:
			a.Folders++
		case opCopy:
			a.Copies++
		case opFlag:
			a.Flags++
		}
	}
	for _, su := range run.users {
		ops := byUser[su]
		if len(ops) == 0 {
			continue
		}
		view, err := run.auditView(su)
		if err != nil {
			unopened[su] = true
			note("open", "mail store of %s: %v", su.addr, err)
		}
		for _, op := range ops {
			f, ok := view[op.folder]
			switch op.kind {
			case opCreate:
				if !ok {
					a.FoldersLost++
					loss(su).folders++
					note("folder", "folder %s of %s missing", op.folder, su.addr)
				}
			case opCopy:
				if _, ok := f[op.msg.n]; !ok {
					a.CopiesLost++
					loss(su).copies++
					note("copy", "copy of message %d in %s of %s missing", op.msg.n, op.folder, su.addr)
				}
			case opFlag:
				if flags, ok := f[op.msg.n]; !ok || !slices.Contains(flags, op.flag) {
					a.FlagsLost++
					loss(su).flags++
					note("flag", "flag %s on message %d in %s of %s missing (flags %v, message there: %v)", op.flag, op.msg.n, op.folder, su.addr, flags, ok)
				}
			}
		}
	}
	a.Unopened = len(unopened)
	for _, kind := range slices.Sorted(maps.Keys(notes)) {
		if n := notes[kind]; n > maxAuditNotes {
			run.progress(fmt.Sprintf("audit: %d more notes (%s) not shown", n-maxAuditNotes, kind))
		}
	}
	for _, su := range run.users {
		if l := losses[su]; l != nil {
			run.progress(fmt.Sprintf("audit: %s (node %s, %d restarts): lost=%d duplicates=%d folders_lost=%d copies_lost=%d flags_lost=%d",
				su.addr, su.node.sn.ep.ID().String()[:8], len(su.node.backs), l.lost, l.dups, l.folders, l.copies, l.flags))
		}
	}
	run.progress(fmt.Sprintf("audit: forks: %d in logs (POST), %d met by lookups (PAST); writers continued from a newer head %d times, wrote a head back %d times; %d read repairs",
		a.PostForks, a.PastForks, tot.absorbed, tot.republished, tot.readRepairs))
	return a
}

// auditView opens su's mail store on its current session and lists, per folder, the
// messages it holds (by message index, read from their content; INBOX by its filed
// entries) with their flags.
func (run *mailRun) auditView(su *simUser) (map[string]map[int][]mailbox.Flag, error) {
	view := map[string]map[int][]mailbox.Flag{}
	ms, err := run.openStore(su)
	if err != nil {
		return view, err
	}
	infos, err := ms.Folders()
	if err != nil {
		return view, err
	}
	inbox := run.inboxMsgs(su.u)
	for _, info := range infos {
		fo, err := ms.Folder(info.Name)
		if err != nil {
			return view, fmt.Errorf("folder %s: %w", info.Name, err)
		}
		list, err := fo.List()
		if err != nil {
			return view, fmt.Errorf("folder %s: %w", info.Name, err)
		}
		msgs := map[int][]mailbox.Flag{}
		view[info.Name] = msgs
		for _, s := range list {
			n := -1
			if info.Name == mailbox.Inbox {
				if i := int(s.UID) - 1; i < len(inbox) && inbox[i] != nil {
					n = inbox[i].n
				}
			} else {
				n, err = run.contentIndex(fo, s.UID)
				if err != nil {
					run.progress(fmt.Sprintf("audit: %s of %s, uid %d: %v", info.Name, su.addr, s.UID, err))
					continue
				}
			}
			if n >= 0 {
				msgs[n] = append(msgs[n], s.Flags...)
			}
		}
	}
	return view, nil
}

// contentIndex reads a message and finds the index its body carries (" Marker n ").
func (run *mailRun) contentIndex(fo mailbox.Folder, uid mailbox.UID) (int, error) {
	c, err := fo.Content(uid)
	if err != nil {
		return -1, err
	}
	raw, err := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
	if err != nil {
		return -1, err
	}
	mark := []byte(" " + run.cfg.Marker + " ")
	i := bytes.Index(raw, mark)
	if i < 0 {
		return -1, fmt.Errorf("no marker in %d bytes", len(raw))
	}
	rest := raw[i+len(mark):]
	end := bytes.IndexByte(rest, ' ')
	if end < 0 {
		return -1, fmt.Errorf("marker without an index")
	}
	return strconv.Atoi(string(rest[:end]))
}

// bodyStored reports whether every chunk of f's parts is in a live node's PAST store.
func (run *mailRun) bodyStored(f *post.Filed) bool {
	for _, p := range f.Parts {
		for _, e := range p.Chunks {
			held := false
			for _, mn := range run.nodes {
				if mn != nil && mn.sn.alive {
					if _, err := mn.st.Get(e.Location); err == nil {
						held = true
						break
					}
				}
			}
			if !held {
				return false
			}
		}
	}
	return true
}
