package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"epost/internal/mailbox"
	"epost/internal/mailstore"
	"epost/internal/post"
)

// Folder operations by recipients for `epost sim mail` (MailConfig.FolderOps), through the
// real mail store: internal/mailstore is the code behind IMAP CREATE, COPY and STORE, so the
// operations write the same log entries a mail client's commands would. Each operation runs
// synchronously: the store drives the virtual network until POST acknowledges it
// (mailstore.Config.Drive), so operations only ever start from the experiment's top level,
// never from a network callback. An operation is recorded only when it returned success;
// the audit (mailaudit.go) checks every recorded one.
//
// The operations: CREATE of folders F1, F2, ... (at most maxSimFolders per user; a name is
// never reused, even after a create that failed), COPY of 1 to 3 INBOX messages into a
// folder (never one already copied there, so that a copy is identified by its message),
// and STORE +FLAGS: \Flagged on an INBOX message, or \Answered on a copy in a folder.

const (
	maxSimFolders = 4
	storeTimeout  = time.Minute           // an operation that waits longer failed
	driveStep     = 10 * time.Millisecond // virtual time per Drive call
)

type folderOpKind uint8

const (
	opCreate folderOpKind = iota
	opCopy
	opFlag
)

// folderOp is an acknowledged folder operation.
type folderOp struct {
	kind   folderOpKind
	user   *simUser
	folder string       // the folder created, copied into, or flagged in (INBOX too)
	msg    *simMsg      // copy, flag
	flag   mailbox.Flag // flag
}

// userMail is a user's mail store and what its acknowledged operations left.
type userMail struct {
	ms      *mailstore.Store // nil until opened, and after each restart
	logs    *orderedLogs     // the POST session ms was opened on
	folders []string         // created (acknowledged), in order
	creates int              // folder names used
	copied  map[string]map[int]bool
	copies  map[string][]simCopy // by folder: the copies, for flags
}

type simCopy struct {
	uid mailbox.UID
	msg *simMsg
}

// orderedLogs is the mail store's view of a post.User. It holds back the OpenLog calls the
// store makes in map order (mailstore.Open opens every folder log at once) and hands them to
// POST sorted by name at the next Drive, so that a seed's run stays the same.
type orderedLogs struct {
	u       *post.User
	pending []pendingOpen
}

type pendingOpen struct {
	name string
	cb   func(error)
}

func (o *orderedLogs) CreateLog(name string, cb func(error)) { o.u.CreateLog(name, cb) }
func (o *orderedLogs) OpenLog(name string, cb func(error)) {
	o.pending = append(o.pending, pendingOpen{name, cb})
}
func (o *orderedLogs) Append(name string, body []byte, cb func(uint64, error)) {
	o.u.Append(name, body, cb)
}
func (o *orderedLogs) Entries(name string, since uint64) ([][]byte, error) {
	return o.u.Entries(name, since)
}

func (o *orderedLogs) flush() {
	p := o.pending
	o.pending = nil
	slices.SortStableFunc(p, func(a, b pendingOpen) int { return strings.Compare(a.name, b.name) })
	for _, x := range p {
		o.u.OpenLog(x.name, x.cb)
	}
}

var errUserDown = errors.New("sim: the user's node is down")

// openStore opens su's mail store on its current POST session (once per session).
func (run *mailRun) openStore(su *simUser) (*mailstore.Store, error) {
	if su.mail.ms != nil && su.mail.logs.u == su.u {
		return su.mail.ms, nil
	}
	if su.u == nil {
		return nil, errUserDown
	}
	logs := &orderedLogs{u: su.u}
	ms, err := mailstore.Open(context.Background(), mailstore.Config{
		Address: su.addr, Logs: logs, Contents: su.node.post, Clock: run.ring.net,
		Drive: func() { logs.flush(); run.ring.net.RunFor(driveStep) },
		Rand:  rand.NewChaCha8(seed2(run.opRng)), Timeout: storeTimeout,
	})
	if err != nil {
		return nil, err
	}
	if su.u != logs.u {
		return nil, errUserDown // restarted while opening
	}
	su.mail.ms, su.mail.logs = ms, logs
	return ms, nil
}

// inboxMsgs maps INBOX UIDs to messages (index uid-1): the mail store numbers the INBOX log's
// filed entries in log order (its own entries in INBOX, a header, take no UID).
func (run *mailRun) inboxMsgs(u *post.User) []*simMsg {
	es, err := u.Entries(post.InboxLog, 0)
	if err != nil {
		return nil
	}
	var out []*simMsg
	for _, b := range es {
		if f, err := post.DecodeFiled(b); err == nil {
			out = append(out, run.byID[f.ID])
		}
	}
	return out
}

// folderStep runs one folder operation by a random user whose node is up.
func (run *mailRun) folderStep() {
	var cands []*simUser
	for _, su := range run.users {
		if su.u != nil && su.node.userUp() {
			cands = append(cands, su)
		}
	}
	if len(cands) == 0 {
		return
	}
	run.folderOpOn(cands[run.opRng.IntN(len(cands))])
}

// folderOpOn runs one operation of su's (when its node is up) and records it if it succeeded.
func (run *mailRun) folderOpOn(su *simUser) {
	if su.u == nil || !su.node.userUp() {
		return
	}
	ms, err := run.openStore(su)
	if err != nil {
		run.progress(fmt.Sprintf("mail store of %s: %v", su.addr, err))
		return
	}
	um := &su.mail
	inbox := run.inboxMsgs(su.mail.logs.u)
	r := run.opRng.Float64()
	nf := len(um.folders)
	switch {
	case nf == 0 || nf < maxSimFolders && r < 0.1 || len(inbox) == 0 && nf < maxSimFolders:
		run.create(su, ms)
	case len(inbox) == 0:
	case r < 0.6:
		run.copyToFolder(su, ms, inbox)
	default:
		run.flag(su, ms, inbox)
	}
}

func (run *mailRun) create(su *simUser, ms *mailstore.Store) {
	um := &su.mail
	um.creates++
	name := fmt.Sprintf("F%d", um.creates)
	if err := ms.Create(name, ""); err != nil {
		run.progress(fmt.Sprintf("create %s of %s: %v", name, su.addr, err))
		return
	}
	um.folders = append(um.folders, name)
	run.ops = append(run.ops, folderOp{kind: opCreate, user: su, folder: name})
}

func (run *mailRun) copyToFolder(su *simUser, ms *mailstore.Store, inbox []*simMsg) {
	um := &su.mail
	name := um.folders[run.opRng.IntN(len(um.folders))]
	var cands []mailbox.UID
	for i, m := range inbox {
		if m != nil && !um.copied[name][m.n] && !slices.Contains(cands, mailbox.UID(i+1)) {
			cands = append(cands, mailbox.UID(i+1))
		}
	}
	if len(cands) == 0 {
		return
	}
	k := min(len(cands), 1+run.opRng.IntN(3))
	for i := 0; i < k; i++ {
		j := i + run.opRng.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
	}
	uids := cands[:k]
	src, err := ms.Folder(mailbox.Inbox)
	if err != nil {
		run.progress(fmt.Sprintf("copy by %s: %v", su.addr, err))
		return
	}
	dst, err := ms.Folder(name)
	if err != nil {
		run.progress(fmt.Sprintf("copy by %s: %v", su.addr, err))
		return
	}
	res, err := src.Copy(uids, dst)
	if err != nil {
		run.progress(fmt.Sprintf("copy to %s by %s: %v", name, su.addr, err))
		return
	}
	if um.copied == nil {
		um.copied, um.copies = map[string]map[int]bool{}, map[string][]simCopy{}
	}
	if um.copied[name] == nil {
		um.copied[name] = map[int]bool{}
	}
	for i, s := range res.SourceUIDs {
		m := inbox[s-1]
		um.copied[name][m.n] = true
		um.copies[name] = append(um.copies[name], simCopy{uid: res.DestUIDs[i], msg: m})
		run.ops = append(run.ops, folderOp{kind: opCopy, user: su, folder: name, msg: m})
	}
}

func (run *mailRun) flag(su *simUser, ms *mailstore.Store, inbox []*simMsg) {
	um := &su.mail
	var withCopies []string
	for _, name := range um.folders {
		if len(um.copies[name]) > 0 {
			withCopies = append(withCopies, name)
		}
	}
	name, flag := mailbox.Inbox, mailbox.FlagFlagged
	var uid mailbox.UID
	var m *simMsg
	if len(withCopies) > 0 && run.opRng.Float64() < 0.5 {
		name, flag = withCopies[run.opRng.IntN(len(withCopies))], mailbox.FlagAnswered
		c := um.copies[name][run.opRng.IntN(len(um.copies[name]))]
		uid, m = c.uid, c.msg
	} else {
		i := run.opRng.IntN(len(inbox))
		uid, m = mailbox.UID(i+1), inbox[i]
	}
	if m == nil {
		return
	}
	fo, err := ms.Folder(name)
	if err != nil {
		run.progress(fmt.Sprintf("flag in %s by %s: %v", name, su.addr, err))
		return
	}
	res, err := fo.ChangeFlags([]mailbox.UID{uid}, mailbox.FlagsAdd, []mailbox.Flag{flag}, 0)
	if err != nil {
		run.progress(fmt.Sprintf("flag in %s by %s: %v", name, su.addr, err))
		return
	}
	if len(res.Changed)+len(res.Unchanged) == 0 {
		return // no such UID (the folder's state is not what we recorded: the audit says so)
	}
	run.ops = append(run.ops, folderOp{kind: opFlag, user: su, folder: name, msg: m, flag: flag})
}
