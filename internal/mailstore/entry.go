package mailstore

import (
	"errors"
	"fmt"
	"time"

	"epost/internal/content"
	"epost/internal/mailbox"
	"epost/internal/wire"
)

// Log entries written by this package. Every body starts with entryMagic and a version, so
// that they never decode as POST's own entries (post.DecodeFiled wants version byte 1; the
// root log's "+name" lines start with '+') and POST's never decode as ours.
//
// Folder log (one POST log per folder; INBOX is POST's InboxLog):
//
//	header  {uidvalidity u32}                 first entry of a folder; INBOX: first one found
//	insert  {records}                         each record gets the next UID, in order
//	flags   {op, flags, uids}                 STORE (RFC 3501 section 6.4.6)
//	expunge {uids}                            EXPUNGE / UID EXPUNGE / the second half of MOVE
//	rewound {}                                UIDVALIDITY grows by one (INBOX, after its node's
//	                                          disk went back in time: RewoundEntry)
//
// plus, in INBOX only, POST's filed notifications (post.Filed), each one inserted message.
//
// Root log (post.RootLog):
//
//	create    {name, log, use, uidvalidity}
//	delete    {log}
//	rename    {log, name}
//	subscribe {name, on}
const (
	entryMagic   = 0xE5
	entryVersion = 1
)

type entryKind uint8

const (
	kindHeader entryKind = iota + 1
	kindInsert
	kindFlags
	kindExpunge
	kindRewound
	kindCreate entryKind = iota + 6
	kindDelete
	kindRename
	kindSubscribe
)

// Limits of decoded entries (POST caps an entry body at 256 KiB).
const (
	maxEntryBytes  = 200 << 10 // we split batches below this
	maxSegments    = 4096
	maxInline      = 512 // pieces up to this size ride inline in the record
	maxFlagLen     = 256
	maxFlags       = 256
	maxUIDsInEntry = 16 << 10
	maxStructure   = 64 << 10
	maxNameLen     = 1024
)

var errEntry = errors.New("mailstore: malformed log entry")

// segment is one piece of a stored message: inline bytes or a content object.
type segment struct {
	Inline []byte       `json:"i,omitempty"`
	Ref    *content.Ref `json:"r,omitempty"`
	// Foreign: Ref is a part of a message from another ring (post.Filed.Foreign), read with
	// Contents.GetForeign.
	Foreign bool `json:"f,omitempty"`
}

// get fetches a ref segment's bytes through cs.
func (s segment) get(cs Contents, cb func([]byte, error)) {
	if s.Foreign {
		cs.GetForeign(*s.Ref, cb)
		return
	}
	cs.Get(*s.Ref, cb)
}

func (s segment) size() int64 {
	if s.Ref != nil {
		return int64(s.Ref.Size)
	}
	return int64(len(s.Inline))
}

// record is one message as an insert entry holds it.
type record struct {
	Date      time.Time
	Size      int64
	Flags     []mailbox.Flag
	Segments  []segment
	Structure []byte // encodeStructure output; empty: computed from the bytes on demand
}

// entry is a decoded log entry of this package.
type entry struct {
	Kind entryKind

	UIDValidity uint32   // header, create
	Records     []record // insert
	Op          uint8    // flags: mailbox.FlagOp
	Flags       []mailbox.Flag
	UIDs        []mailbox.UID // flags, expunge

	Name, Log, Use string // create, delete, rename, subscribe
	On             bool   // subscribe
}

func (e *entry) encode() []byte {
	w := wire.Writer{}
	w.U8(entryMagic)
	w.U8(entryVersion)
	w.U8(uint8(e.Kind))
	switch e.Kind {
	case kindHeader:
		w.U32(e.UIDValidity)
	case kindInsert:
		w.Uvarint(uint64(len(e.Records)))
		for i := range e.Records {
			encodeRecord(&w, &e.Records[i])
		}
	case kindFlags:
		w.U8(e.Op)
		encodeFlags(&w, e.Flags)
		encodeUIDs(&w, e.UIDs)
	case kindExpunge:
		encodeUIDs(&w, e.UIDs)
	case kindCreate:
		w.String(e.Name)
		w.String(e.Log)
		w.String(e.Use)
		w.U32(e.UIDValidity)
	case kindDelete:
		w.String(e.Log)
	case kindRename:
		w.String(e.Log)
		w.String(e.Name)
	case kindSubscribe:
		w.String(e.Name)
		if e.On {
			w.U8(1)
		} else {
			w.U8(0)
		}
	}
	return w.B
}

func encodeFlags(w *wire.Writer, flags []mailbox.Flag) {
	w.Uvarint(uint64(len(flags)))
	for _, f := range flags {
		w.String(string(f))
	}
}

func encodeUIDs(w *wire.Writer, uids []mailbox.UID) {
	w.Uvarint(uint64(len(uids)))
	for _, u := range uids {
		w.Uvarint(uint64(u))
	}
}

func encodeRecord(w *wire.Writer, r *record) {
	w.I64(r.Date.UnixNano())
	w.U64(uint64(r.Size))
	encodeFlags(w, r.Flags)
	w.Uvarint(uint64(len(r.Segments)))
	for _, s := range r.Segments {
		if s.Ref != nil {
			b, _ := s.Ref.MarshalBinary() // refs come from Put or a validated notification
			if s.Foreign {
				w.U8(2)
			} else {
				w.U8(1)
			}
			w.Bytes(b)
		} else {
			w.U8(0)
			w.Bytes(s.Inline)
		}
	}
	w.Bytes(r.Structure)
}

// isOurs says whether a log entry body was written by this package.
func isOurs(b []byte) bool { return len(b) >= 2 && b[0] == entryMagic }

// decodeEntry parses an entry body; it never panics.
func decodeEntry(b []byte) (*entry, error) {
	if !isOurs(b) {
		return nil, errEntry
	}
	r := wire.NewReader(b[1:])
	if v := r.U8(); v != entryVersion {
		return nil, fmt.Errorf("%w: version %d", errEntry, v)
	}
	e := &entry{Kind: entryKind(r.U8())}
	switch e.Kind {
	case kindHeader:
		e.UIDValidity = r.U32()
	case kindInsert:
		n := r.Count(maxEntryBytes, 10, "records")
		for i := 0; i < n && r.Err() == nil; i++ {
			e.Records = append(e.Records, decodeRecord(r))
		}
	case kindFlags:
		e.Op = r.U8()
		e.Flags = decodeFlags(r)
		e.UIDs = decodeUIDs(r)
	case kindExpunge:
		e.UIDs = decodeUIDs(r)
	case kindRewound:
	case kindCreate:
		e.Name = r.String(maxNameLen, "name")
		e.Log = r.String(maxNameLen, "log")
		e.Use = r.String(maxNameLen, "use")
		e.UIDValidity = r.U32()
	case kindDelete:
		e.Log = r.String(maxNameLen, "log")
	case kindRename:
		e.Log = r.String(maxNameLen, "log")
		e.Name = r.String(maxNameLen, "name")
	case kindSubscribe:
		e.Name = r.String(maxNameLen, "name")
		e.On = r.U8() == 1
	default:
		return nil, fmt.Errorf("%w: kind %d", errEntry, e.Kind)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: %v", errEntry, err)
	}
	return e, nil
}

func decodeFlags(r *wire.Reader) []mailbox.Flag {
	n := r.Count(maxFlags, 1, "flags")
	var out []mailbox.Flag
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, mailbox.Flag(r.String(maxFlagLen, "flag")))
	}
	return out
}

func decodeUIDs(r *wire.Reader) []mailbox.UID {
	n := r.Count(maxUIDsInEntry, 1, "uids")
	out := make([]mailbox.UID, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		v := r.Uvarint()
		if v == 0 || v > 1<<32-1 {
			r.Fail("uid %d out of range", v)
		}
		out = append(out, mailbox.UID(v))
	}
	return out
}

func decodeRecord(r *wire.Reader) record {
	rec := record{Date: time.Unix(0, r.I64()).UTC()}
	size := r.U64()
	if size > 1<<40 {
		r.Fail("size %d", size)
	}
	rec.Size = int64(size)
	rec.Flags = decodeFlags(r)
	n := r.Count(maxSegments, 2, "segments")
	var sum int64
	for i := 0; i < n && r.Err() == nil; i++ {
		switch kind := r.U8(); kind {
		case 0:
			b := r.Bytes(maxEntryBytes, "inline")
			rec.Segments = append(rec.Segments, segment{Inline: b})
			sum += int64(len(b))
		case 1, 2: // 2: a part of a message from another ring
			raw := r.Bytes(maxEntryBytes, "ref")
			if r.Err() != nil {
				break
			}
			ref, err := content.UnmarshalRef(raw)
			if err != nil {
				r.Fail("segment %d: %v", i, err)
				break
			}
			rec.Segments = append(rec.Segments, segment{Ref: &ref, Foreign: kind == 2})
			sum += int64(ref.Size)
		default:
			r.Fail("segment kind")
		}
	}
	rec.Structure = r.Bytes(maxStructure, "structure")
	if r.Err() == nil && sum != rec.Size {
		r.Fail("segments sum to %d bytes, record says %d", sum, rec.Size)
	}
	return rec
}

// RewoundEntry is the INBOX entry (post.Config.RewoundInbox) written first when the node
// finds that its disk went back in time: messages it showed from its journal before the disk
// lost them are filed again, possibly under UIDs a client saw for other messages, and their
// modification sequences are given out again. UIDs of an earlier session that do not persist
// mean a new UIDVALIDITY (RFC 9051 section 2.3.1.1): clients drop what they cached of INBOX
// and read it again.
func RewoundEntry() []byte {
	return (&entry{Kind: kindRewound}).encode()
}
