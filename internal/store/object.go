package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"epost/internal/ids"
)

// Hash is the SHA-256 of a payload. Payloads are stored under their hash, so equal payloads are
// stored once whatever keys they are filed under.
type Hash [sha256.Size]byte

// String is the lower-case hex form, which is also the payload file's name.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Meta describes a stored object without its payload: what Meta, Range and Expired return.
type Meta struct {
	Key ids.Key
	// Type is the layer above's object type (content-hash, signed mutable, ...); opaque here.
	Type uint8
	// Seq is the sequence number of signed mutable objects. The store only keeps it; see
	// SeqGreater for the race-free check PAST needs.
	Seq uint64
	// Expiry is the end of the object's lease; the zero Time means the lease never ends.
	Expiry time.Time
	// Aux is small opaque metadata of the layer above (at most Options.MaxAux bytes).
	Aux []byte
	// Size and Hash describe the payload. Put computes them and ignores what the caller set.
	Size int64
	Hash Hash
}

// Expired reports whether the lease has ended at now (an Expiry equal to now has ended).
func (m *Meta) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !m.Expiry.After(now)
}

// Object is a stored object with its payload.
type Object struct {
	Meta
	Payload []byte
}

// Index layout. Every bucket lives at the top level of the bbolt file; every key that names an
// object is ring || id (64 bytes), so one ring's objects are contiguous and in circle order.
var (
	bucketObjects = []byte("objects") // ring||id -> record
	bucketTrash   = []byte("trash")   // ring||id -> trashedAt(8) || record
	bucketExpiry  = []byte("expiry")  // sortable(expiry)||ring||id -> nothing; live objects with a lease
	bucketTrashQ  = []byte("trashq")  // sortable(trashedAt)||ring||id -> nothing; purge order
	bucketPayload = []byte("payload") // hash -> payload entry (refs, location, size, inline bytes)
	bucketMeta    = []byte("meta")    // "format", "stats"

	allBuckets = [][]byte{bucketObjects, bucketTrash, bucketExpiry, bucketTrashQ, bucketPayload, bucketMeta}

	metaFormat = []byte("format")
	metaStats  = []byte("stats")
)

// formatVersion is bumped on any incompatible change of the encodings below.
const formatVersion = 1

const keyLen = 2 * ids.Bytes

func encodeKey(k ids.Key) []byte {
	b := make([]byte, keyLen)
	copy(b, k.Ring[:])
	copy(b[ids.Bytes:], k.ID[:])
	return b
}

func decodeKey(b []byte) ids.Key {
	var k ids.Key
	copy(k.Ring[:], b[:ids.Bytes])
	copy(k.ID[:], b[ids.Bytes:keyLen])
	return k
}

// sortableTime maps a time to 8 bytes whose byte order is time order (sign bit flipped).
func sortableTime(t time.Time) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano())^1<<63)
	return b
}

func timeFromSortable(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)^1<<63)).UTC()
}

// timeIndexKey is the key of an object in a time-ordered index (expiry, trashq).
func timeIndexKey(t time.Time, k ids.Key) []byte {
	return append(sortableTime(t), encodeKey(k)...)
}

// Record: version(1) type(1) flags(1) seq(8) expiry(8) size(8) hash(32) aux(rest).
const (
	recordHeader  = 1 + 1 + 1 + 8 + 8 + 8 + sha256.Size
	flagHasExpiry = 1 << 0
	recordVersion = 1
)

func encodeRecord(m *Meta) []byte {
	b := make([]byte, recordHeader+len(m.Aux))
	b[0] = recordVersion
	b[1] = m.Type
	if !m.Expiry.IsZero() {
		b[2] |= flagHasExpiry
		binary.BigEndian.PutUint64(b[11:], uint64(m.Expiry.UnixNano()))
	}
	binary.BigEndian.PutUint64(b[3:], m.Seq)
	binary.BigEndian.PutUint64(b[19:], uint64(m.Size))
	copy(b[27:], m.Hash[:])
	copy(b[recordHeader:], m.Aux)
	return b
}

// decodeRecord copies everything it keeps: bbolt's bytes are valid only inside the transaction.
func decodeRecord(k ids.Key, b []byte) (Meta, error) {
	if len(b) < recordHeader || b[0] != recordVersion {
		return Meta{}, fmt.Errorf("%w: index record of %s is malformed (%d bytes)", ErrCorrupt, k, len(b))
	}
	m := Meta{
		Key:  k,
		Type: b[1],
		Seq:  binary.BigEndian.Uint64(b[3:]),
		Size: int64(binary.BigEndian.Uint64(b[19:])),
	}
	if b[2]&flagHasExpiry != 0 {
		m.Expiry = time.Unix(0, int64(binary.BigEndian.Uint64(b[11:]))).UTC()
	}
	copy(m.Hash[:], b[27:recordHeader])
	if len(b) > recordHeader {
		m.Aux = append([]byte(nil), b[recordHeader:]...)
	}
	return m, nil
}

// Trash record: trashedAt(8, sortable) || record.
func encodeTrash(at time.Time, rec []byte) []byte {
	return append(sortableTime(at), rec...)
}

func decodeTrash(k ids.Key, b []byte) (time.Time, Meta, error) {
	if len(b) < 8 {
		return time.Time{}, Meta{}, fmt.Errorf("%w: trash record of %s is malformed", ErrCorrupt, k)
	}
	m, err := decodeRecord(k, b[8:])
	return timeFromSortable(b[:8]), m, err
}

// Payload entry: refs(8) location(1) size(8), then the inline bytes (inIndex) or the segment
// and offset of the bytes in the value log (inLog: epoch(8) offset(8)). The location is a
// property of the content, not of a reference, so a payload stays where it was first put even
// if InlineMax or ValueLogMin change later.
type location byte

const (
	inIndex location = 1
	inFile  location = 2
	inLog   location = 3 // values.go
)

const (
	payloadHeader = 8 + 1 + 8
	logRefLen     = 8 + 8
)

type payloadEntry struct {
	refs uint64
	loc  location
	size int64
	data []byte // inline bytes (aliases bbolt memory when decoded; copy before the tx ends)
	seg  uint64 // inLog: the journal epoch whose file holds the bytes
	off  uint64 // inLog: where in it
}

func (p *payloadEntry) encode() []byte {
	n := len(p.data)
	if p.loc == inLog {
		n = logRefLen
	}
	b := make([]byte, payloadHeader+n)
	binary.BigEndian.PutUint64(b, p.refs)
	b[8] = byte(p.loc)
	binary.BigEndian.PutUint64(b[9:], uint64(p.size))
	if p.loc == inLog {
		binary.BigEndian.PutUint64(b[payloadHeader:], p.seg)
		binary.BigEndian.PutUint64(b[payloadHeader+8:], p.off)
	} else {
		copy(b[payloadHeader:], p.data)
	}
	return b
}

func decodePayloadEntry(h Hash, b []byte) (payloadEntry, error) {
	if len(b) < payloadHeader || (location(b[8]) != inIndex && location(b[8]) != inFile && location(b[8]) != inLog) {
		return payloadEntry{}, fmt.Errorf("%w: payload entry %s is malformed", ErrCorrupt, h)
	}
	p := payloadEntry{
		refs: binary.BigEndian.Uint64(b),
		loc:  location(b[8]),
		size: int64(binary.BigEndian.Uint64(b[9:])),
		data: b[payloadHeader:],
	}
	switch {
	case p.loc == inIndex && int64(len(p.data)) != p.size:
		return payloadEntry{}, fmt.Errorf("%w: inline payload %s has %d bytes, want %d", ErrCorrupt, h, len(p.data), p.size)
	case p.loc == inLog && len(p.data) != logRefLen:
		return payloadEntry{}, fmt.Errorf("%w: value log entry %s is malformed", ErrCorrupt, h)
	case p.loc == inLog:
		p.seg = binary.BigEndian.Uint64(p.data)
		p.off = binary.BigEndian.Uint64(p.data[8:])
		p.data = nil
	}
	return p, nil
}

// Stats counts what the store holds. Bytes count payload bytes per object (logical size);
// UniqueBytes counts each distinct payload once (what the disk actually holds).
type Stats struct {
	Objects      int64
	Bytes        int64
	TrashObjects int64
	TrashBytes   int64
	Payloads     int64 // distinct payloads (live or trashed)
	UniqueBytes  int64
}

func (s *Stats) encode() []byte {
	b := make([]byte, 6*8)
	for i, v := range []int64{s.Objects, s.Bytes, s.TrashObjects, s.TrashBytes, s.Payloads, s.UniqueBytes} {
		binary.BigEndian.PutUint64(b[i*8:], uint64(v))
	}
	return b
}

func decodeStats(b []byte) Stats {
	var v [6]int64
	for i := range v {
		if len(b) >= (i+1)*8 {
			v[i] = int64(binary.BigEndian.Uint64(b[i*8:]))
		}
	}
	return Stats{v[0], v[1], v[2], v[3], v[4], v[5]}
}
