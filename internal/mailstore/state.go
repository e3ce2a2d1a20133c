package mailstore

import (
	"crypto/sha256"
	"math"
	"slices"
	"strings"
	"time"

	"epost/internal/mailbox"
	"epost/internal/post"
)

// The folder state is a pure function of the folder log: replaying the same entries in index
// order gives the same UIDs, flags and modification sequences on every node, with or without
// the local cache. The rules:
//
//   - UIDVALIDITY is the value of the first header entry (RFC 3501 section 2.3.1.1: a
//     folder made again gets a new log and a larger value, see Store.nextUIDValidity), or of
//     a later header entry with a larger value: a node whose log was rebuilt under it by a
//     merge writes one, since the UIDs it had shown may now name other messages.
//   - Entry i (0-based) has modification sequence i+1; every message it inserts or changes and
//     every UID it expunges gets that modseq, and HIGHESTMODSEQ is the modseq of the last
//     entry that changed anything (RFC 7162 section 3.1: strictly increasing; messages
//     changed by one STORE may share a value).
//   - Each inserted message (an insert entry's records in order, or one POST filing) gets
//     UIDNEXT, which then grows by one (RFC 3501 section 2.3.1.1: strictly ascending, never
//     reused).
//   - A rewound entry makes UIDVALIDITY grow by one: the node's disk went back in time, and
//     UIDs it had shown may now name other messages.
//   - A flags entry applies its operation to the UIDs it lists that still exist; the writer
//     already left out those that failed UNCHANGEDSINCE, so replay never looks at bounds.

type message struct {
	UID      mailbox.UID
	ModSeq   uint64
	Flags    []mailbox.Flag
	Date     time.Time
	Size     int64
	Segments []segment
	// Structure is the parse cache; nil until computed (filed messages carry none).
	Structure *mailbox.Structure `json:"-"`
	// Entry is the index of the log entry that inserted the message.
	Entry uint64

	prefetching bool     // a background parse is under way (node-local)
	key         [32]byte // segmentsKey(Segments), the content cache's key: set by insert and the cache load
}

type tombstone struct {
	UID    mailbox.UID
	ModSeq uint64
}

// folderState is one folder's replayed log.
type folderState struct {
	Log         string
	Name        string
	Use         mailbox.MailboxAttr
	UIDValidity uint32
	UIDNext     mailbox.UID
	ModSeq      uint64
	Applied     uint64   // entries replayed
	LastHash    [32]byte // SHA-256 of the last replayed entry body: checks a cache against the log
	Msgs        []*message
	Expunged    []tombstone

	// Node-local, never in the log (RFC 3501 section 2.3.2).
	recentFrom mailbox.UID
	deleted    bool

	// Node-local: Status's counts over Msgs, kept up to date by insert, the flag changes
	// and expunge (recount after filling Msgs any other way), so that Status does not look
	// at every message; prefetchFrom: every message below this UID was prefetched or
	// tried (Store.prefetchMissing).
	unseen, deletedMsgs uint32
	size                int64
	prefetchFrom        mailbox.UID

	// bump, when not zero, is a new UIDVALIDITY this node gave the folder after its log
	// was rebuilt under it, still to be written to the log (Store.writeBumps).
	bump uint32
	// headerDue, when not zero, is such a UIDVALIDITY whose header entry is not applied
	// yet: it lands after every entry applied meanwhile, so a replay ends at that value
	// whatever those entries did to UIDVALIDITY (a rewound entry's +1 is then not applied).
	headerDue uint32
}

// count adds (sign 1) or removes (sign -1) m from the folder's counts.
func (f *folderState) count(m *message, sign int) {
	if !slices.Contains(m.Flags, mailbox.FlagSeen) {
		f.unseen += uint32(sign)
	}
	if slices.Contains(m.Flags, mailbox.FlagDeleted) {
		f.deletedMsgs += uint32(sign)
	}
	f.size += int64(sign) * m.Size
}

// recount computes the counts afresh.
func (f *folderState) recount() {
	f.unseen, f.deletedMsgs, f.size = 0, 0, 0
	for _, m := range f.Msgs {
		f.count(m, 1)
	}
}

func newFolderState(log, name string, use mailbox.MailboxAttr) *folderState {
	return &folderState{Log: log, Name: name, Use: use, UIDNext: 1, recentFrom: 1}
}

// apply replays the entry at index idx = f.Applied and reports whether the folder changed.
func (f *folderState) apply(body []byte) bool {
	idx := f.Applied
	f.Applied++
	f.LastHash = sha256.Sum256(body)
	modSeq := idx + 1
	if !isOurs(body) {
		if f.Log != post.InboxLog {
			return false
		}
		filed, err := post.DecodeFiled(body)
		if err != nil {
			return false // not ours, not a filing: ignore (forward compatible)
		}
		segs := make([]segment, len(filed.Parts))
		for i := range filed.Parts {
			segs[i] = segment{Ref: &filed.Parts[i], Foreign: filed.Foreign}
		}
		f.insert(&message{Date: filed.FiledAt.Round(time.Second), Size: int64(filed.Size), Segments: segs}, idx, modSeq)
		return true
	}
	e, err := decodeEntry(body)
	if err != nil {
		return false
	}
	switch e.Kind {
	case kindHeader:
		// The first header gives UIDVALIDITY; a later, larger one replaces it: the log was
		// rebuilt (a merge of two writers' heads) and UIDs beyond the part both shared may
		// now name other messages (Store.syncLocked).
		if e.UIDValidity == f.headerDue {
			f.headerDue = 0
		}
		if e.UIDValidity > f.UIDValidity {
			f.UIDValidity = e.UIDValidity
			return true
		}
	case kindInsert:
		for _, r := range e.Records {
			st, _ := decodeStructure(r.Structure)
			f.insert(&message{Flags: normalizeFlags(r.Flags), Date: r.Date, Size: r.Size, Segments: r.Segments, Structure: st}, idx, modSeq)
		}
		return len(e.Records) > 0
	case kindFlags:
		flags := normalizeFlags(e.Flags)
		changed := false
		for _, uid := range e.UIDs {
			m := f.find(uid)
			if m == nil {
				continue
			}
			next := combineFlags(m.Flags, mailbox.FlagOp(e.Op), flags)
			if slices.Equal(next, m.Flags) {
				continue
			}
			f.count(m, -1)
			m.Flags, m.ModSeq, changed = next, modSeq, true
			f.count(m, 1)
		}
		if changed {
			f.ModSeq = modSeq
		}
		return changed
	case kindExpunge:
		gone := f.expunge(e.UIDs, modSeq)
		return len(gone) > 0
	case kindRewound:
		// A new UIDVALIDITY (it stops short of wrapping: then nothing changes). One this node
		// gave the folder already, its header still due, is above it on a replay too.
		if f.UIDValidity == math.MaxUint32 || f.headerDue != 0 {
			return false
		}
		f.UIDValidity++
		return true
	}
	return false
}

func (f *folderState) insert(m *message, idx, modSeq uint64) {
	m.UID = f.UIDNext
	f.UIDNext++
	m.ModSeq = modSeq
	m.Entry = idx
	m.key = segmentsKey(m.Segments)
	f.ModSeq = modSeq
	f.Msgs = append(f.Msgs, m)
	f.count(m, 1)
}

func (f *folderState) expunge(uids []mailbox.UID, modSeq uint64) []mailbox.UID {
	drop := make(map[mailbox.UID]bool, len(uids))
	for _, u := range uids {
		drop[u] = true
	}
	var gone []mailbox.UID
	kept := f.Msgs[:0]
	for _, m := range f.Msgs {
		if drop[m.UID] {
			gone = append(gone, m.UID)
			f.count(m, -1)
			continue
		}
		kept = append(kept, m)
	}
	clear(f.Msgs[len(kept):])
	f.Msgs = kept
	if len(gone) > 0 {
		// RFC 7162 section 3.2.10: expunges raise HIGHESTMODSEQ.
		f.ModSeq = modSeq
		for _, u := range gone {
			f.Expunged = append(f.Expunged, tombstone{UID: u, ModSeq: modSeq})
		}
	}
	return gone
}

func (f *folderState) index(uid mailbox.UID) (int, bool) {
	return slices.BinarySearchFunc(f.Msgs, uid, func(m *message, u mailbox.UID) int {
		switch {
		case m.UID < u:
			return -1
		case m.UID > u:
			return 1
		}
		return 0
	})
}

func (f *folderState) find(uid mailbox.UID) *message {
	if i, ok := f.index(uid); ok {
		return f.Msgs[i]
	}
	return nil
}

// insertedBy lists the UIDs inserted by entry idx, ascending.
func (f *folderState) insertedBy(idx uint64) []mailbox.UID {
	var out []mailbox.UID
	for i := len(f.Msgs) - 1; i >= 0 && f.Msgs[i].Entry >= idx; i-- {
		if f.Msgs[i].Entry == idx {
			out = append(out, f.Msgs[i].UID)
		}
	}
	slices.Reverse(out)
	return out
}

func (m *message) summary() mailbox.Summary {
	return mailbox.Summary{UID: m.UID, ModSeq: m.ModSeq, Flags: slices.Clone(m.Flags), InternalDate: m.Date, Size: m.Size}
}

// combineFlags applies a STORE operation (RFC 3501 section 6.4.6).
func combineFlags(cur []mailbox.Flag, op mailbox.FlagOp, flags []mailbox.Flag) []mailbox.Flag {
	switch op {
	case mailbox.FlagsSet:
		return slices.Clone(flags)
	case mailbox.FlagsAdd:
		return normalizeFlags(append(slices.Clone(cur), flags...))
	case mailbox.FlagsRemove:
		return slices.DeleteFunc(slices.Clone(cur), func(fl mailbox.Flag) bool { return slices.Contains(flags, fl) })
	}
	return slices.Clone(cur)
}

var systemFlags = []mailbox.Flag{mailbox.FlagSeen, mailbox.FlagAnswered, mailbox.FlagFlagged, mailbox.FlagDeleted, mailbox.FlagDraft, mailbox.FlagRecent}

// normalizeFlags drops \Recent (never stored, RFC 3501 section 2.3.2) and duplicates,
// canonicalises system flags (case-insensitive, RFC 3501 section 2.3.2) and sorts, exactly
// as mailbox.Memory does.
func normalizeFlags(flags []mailbox.Flag) []mailbox.Flag {
	out := make([]mailbox.Flag, 0, len(flags))
	for _, fl := range flags {
		for _, sf := range systemFlags {
			if strings.EqualFold(string(fl), string(sf)) {
				fl = sf
			}
		}
		if fl == "" || fl == mailbox.FlagRecent || slices.Contains(out, fl) {
			continue
		}
		out = append(out, fl)
	}
	slices.Sort(out)
	return out
}

// rootState is the replayed root log: which folders exist, under which names.
type rootState struct {
	Applied    uint64
	LastHash   [32]byte
	Folders    map[string]*folderEntry // by log name
	Subscribed map[string]bool
	// MaxUIDValidity is the largest UIDVALIDITY ever given to a folder of this user.
	MaxUIDValidity uint32
}

type folderEntry struct {
	Name        string
	Use         mailbox.MailboxAttr
	UIDValidity uint32
}

func newRootState() *rootState {
	return &rootState{
		Folders:    map[string]*folderEntry{post.InboxLog: {Name: mailbox.Inbox}},
		Subscribed: map[string]bool{mailbox.Inbox: true},
	}
}

// apply replays the next root entry; it reports whether the folder list changed.
func (r *rootState) apply(body []byte) bool {
	r.Applied++
	r.LastHash = sha256.Sum256(body)
	e, err := decodeEntry(body)
	if err != nil {
		return false // POST's "+log" lines and anything unknown
	}
	switch e.Kind {
	case kindCreate:
		if e.Log == post.InboxLog || e.Log == post.RootLog || r.Folders[e.Log] != nil {
			return false
		}
		r.Folders[e.Log] = &folderEntry{Name: e.Name, Use: mailbox.MailboxAttr(e.Use), UIDValidity: e.UIDValidity}
		r.MaxUIDValidity = max(r.MaxUIDValidity, e.UIDValidity)
	case kindDelete:
		if e.Log == post.InboxLog {
			return false
		}
		delete(r.Folders, e.Log)
	case kindRename:
		fe := r.Folders[e.Log]
		if fe == nil || e.Log == post.InboxLog {
			return false
		}
		fe.Name = e.Name
	case kindSubscribe:
		if e.On {
			r.Subscribed[e.Name] = true
		} else {
			delete(r.Subscribed, e.Name)
		}
	case kindHeader:
		r.MaxUIDValidity = max(r.MaxUIDValidity, e.UIDValidity)
	default:
		return false
	}
	return true
}

// byName finds the log of a folder name (canonical).
func (r *rootState) byName(name string) (string, *folderEntry) {
	for log, fe := range r.Folders {
		if fe.Name == name {
			return log, fe
		}
	}
	return "", nil
}
