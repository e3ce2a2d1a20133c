package post

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"io"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/wire"
)

// Single-writer logs (ePOST's folders), on PAST:
//
//   - Entry: a content object (TypeContent, key = SHA-256 of its bytes) holding
//     nonce || AES-256-GCM(log key, nonce, {index, previous entry's location, body}), with the
//     head key as associated data. The location of entry i-1 inside entry i links the chain.
//   - Entry segment: a content object holding consecutive entries, oldest first, exactly as
//     they would be stored on their own (entries are stored in batches: EntryBatch). An
//     entry's location stays the hash of its own bytes, so the chain does not change; the
//     head names the segments since the snapshot (Segs: the segment's location, its newest
//     entry's location, how many it holds), and replay, walking back, reads a whole segment
//     where the entry it needs is a segment's newest. One insert, one object in every
//     replica's index, one archive member per batch instead of one per entry.
//   - Head: a TypeSigned object owned by the user's signing key, named "epost/v1/log/"+name.
//     Its payload holds the log key wrapped to the owner (HPKE to the user's own X25519 key)
//     and, encrypted under the log key, the entry count, the newest entry's location, the
//     latest snapshot (a content.Ref of all bodies before SnapshotIndex), inline copies of
//     the entries written together with this head and the entry segments. PAST's
//     no-rollback rule makes the head's sequence number only grow.
//
// Appends write the new entries and the head at the same time (one round trip, not two); the
// inline copies make that safe: an entry whose own insert was not yet acknowledged can be
// recovered from the head, and the next head is written only after they were.

const (
	headV         = 1
	entryV        = 1
	maxEntryBody  = 256 << 10
	maxInline     = 512 << 10
	maxBatch      = 256
	nonceSize     = 12
	hpkeInfoLog   = "epost/v1/log-key"
	labelEntryAAD = "epost/v1/log-entry\x00"
	labelHeadAAD  = "epost/v1/log-head\x00"
)

// headState is the decrypted part of a head.
type headState struct {
	Count         uint64
	Newest        ids.ID // location id of entry Count-1 (zero when empty)
	SnapshotIndex uint64 // entries before this index are in Snapshot
	Snapshot      []byte // content.Ref encoding, or empty
	Inline        [][]byte
	InlineFrom    uint64 // index of Inline[0]
	// Segs are the entry segments above the snapshot, in the order they were stored
	// (heads written before segments have none: their entries are stored one by one).
	Segs []entrySeg
}

// entrySeg names an entry segment: its location, the location of its newest entry, and the
// number of entries it holds.
type entrySeg struct {
	Loc   ids.ID
	Last  ids.ID
	Count uint64
	first ids.ID // the writer's: location of its oldest entry (not in the head; zero when read from one)
}

// Bounds on entry segments: the entries of one segment, and the segments a head names.
const (
	maxSegEntries = maxBatch
	maxSegBytes   = maxInline / 2
	maxHeadSegs   = 4096 // read; a writer names at most 4*snapAtSegs
	// snapAtSegs: a head naming this many segments calls for a snapshot, which covers them.
	snapAtSegs    = 64
	entrySegMagic = "epost/v1/log-entries\x00"
)

// encodeEntrySeg makes an entry segment's payload from entries (ciphertexts), oldest first.
func encodeEntrySeg(cts [][]byte) []byte {
	w := wire.Writer{}
	w.B = append(w.B, entrySegMagic...)
	w.Uvarint(uint64(len(cts)))
	for _, ct := range cts {
		w.Bytes(ct)
	}
	return w.B
}

// decodeEntrySeg reads an entry segment that must hold count entries.
func decodeEntrySeg(b []byte, count uint64) ([][]byte, error) {
	if len(b) < len(entrySegMagic) || string(b[:len(entrySegMagic)]) != entrySegMagic {
		return nil, fmt.Errorf("%w: not an entry segment", ErrMalformed)
	}
	r := wire.NewReader(b[len(entrySegMagic):])
	n := r.Count(maxSegEntries, 1, "segment entries")
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, r.Bytes(maxInline, "segment entry"))
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: entry segment: %v", ErrMalformed, err)
	}
	if uint64(len(out)) != count {
		return nil, fmt.Errorf("%w: entry segment holds %d entries, head says %d", ErrMalformed, len(out), count)
	}
	return out, nil
}

func logAEAD(key *[32]byte) cipher.AEAD {
	b, _ := aes.NewCipher(key[:]) // 32-byte key: never fails
	g, _ := cipher.NewGCM(b)
	return g
}

func seal(key *[32]byte, rand io.Reader, pt, aad []byte) ([]byte, error) {
	out := make([]byte, nonceSize, nonceSize+len(pt)+16)
	if _, err := io.ReadFull(rand, out); err != nil {
		return nil, err
	}
	return logAEAD(key).Seal(out, out[:nonceSize], pt, aad), nil
}

func open(key *[32]byte, ct, aad []byte) ([]byte, error) {
	if len(ct) < nonceSize+16 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes", ErrMalformed, len(ct))
	}
	pt, err := logAEAD(key).Open(nil, ct[:nonceSize], ct[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: log data does not authenticate", ErrMalformed)
	}
	return pt, nil
}

func entryAAD(head ids.Key) []byte {
	b := append([]byte(labelEntryAAD), head.Ring[:]...)
	return append(b, head.ID[:]...)
}

// sealEntry encrypts entry index with its predecessor's location.
func sealEntry(key *[32]byte, rand io.Reader, head ids.Key, index uint64, prev ids.ID, body []byte) ([]byte, error) {
	w := wire.Writer{}
	w.U8(entryV)
	w.U64(index)
	w.ID(prev)
	w.Bytes(body)
	return seal(key, rand, w.B, entryAAD(head))
}

// openEntry decrypts an entry and returns its index, predecessor and body.
func openEntry(key *[32]byte, head ids.Key, ct []byte) (uint64, ids.ID, []byte, error) {
	pt, err := open(key, ct, entryAAD(head))
	if err != nil {
		return 0, ids.ID{}, nil, err
	}
	r := wire.NewReader(pt)
	if v := r.U8(); r.Err() == nil && v != entryV {
		return 0, ids.ID{}, nil, fmt.Errorf("%w: entry version %d", ErrMalformed, v)
	}
	idx := r.U64()
	prev := r.ID()
	body := r.Bytes(maxEntryBody, "body")
	if err := r.Done(); err != nil {
		return 0, ids.ID{}, nil, fmt.Errorf("%w: entry: %v", ErrMalformed, err)
	}
	return idx, prev, body, nil
}

func headAAD(head ids.Key) []byte {
	b := append([]byte(labelHeadAAD), head.Ring[:]...)
	return append(b, head.ID[:]...)
}

// encodeHead makes a head payload: wrapped key in clear, state sealed under the log key.
func encodeHead(key *[32]byte, rand io.Reader, head ids.Key, wrapped []byte, st *headState) ([]byte, error) {
	w := wire.Writer{}
	w.U64(st.Count)
	w.ID(st.Newest)
	w.U64(st.SnapshotIndex)
	w.Bytes(st.Snapshot)
	w.U64(st.InlineFrom)
	w.Uvarint(uint64(len(st.Inline)))
	for _, e := range st.Inline {
		w.Bytes(e)
	}
	if len(st.Segs) > 0 { // absent in heads written before segments
		w.Uvarint(uint64(len(st.Segs)))
		for _, sg := range st.Segs {
			w.ID(sg.Loc)
			w.ID(sg.Last)
			w.Uvarint(sg.Count)
		}
	}
	sealed, err := seal(key, rand, w.B, headAAD(head))
	if err != nil {
		return nil, err
	}
	out := wire.Writer{}
	out.U8(headV)
	out.Bytes(wrapped)
	out.Bytes(sealed)
	return out.B, nil
}

// decodeHead unwraps the log key with the owner's keys and decrypts the state.
func decodeHead(keys *identity.Keys, head ids.Key, payload []byte) (key [32]byte, wrapped []byte, st *headState, err error) {
	r := wire.NewReader(payload)
	if v := r.U8(); r.Err() == nil && v != headV {
		return key, nil, nil, fmt.Errorf("%w: head version %d", ErrMalformed, v)
	}
	wrapped = r.Bytes(256, "wrapped key")
	sealed := r.Bytes(maxInline+64<<10+maxHeadSegs*(2*ids.Bytes+10), "state")
	if err := r.Done(); err != nil {
		return key, nil, nil, fmt.Errorf("%w: head: %v", ErrMalformed, err)
	}
	k, err := keys.Open(wrapped, []byte(hpkeInfoLog), headAAD(head))
	if err != nil {
		return key, nil, nil, err
	}
	if len(k) != 32 {
		return key, nil, nil, fmt.Errorf("%w: log key of %d bytes", ErrMalformed, len(k))
	}
	copy(key[:], k)
	pt, err := open(&key, sealed, headAAD(head))
	if err != nil {
		return key, nil, nil, err
	}
	st, err = decodeHeadState(pt)
	return key, wrapped, st, err
}

func decodeHeadState(pt []byte) (*headState, error) {
	r := wire.NewReader(pt)
	st := &headState{Count: r.U64(), Newest: r.ID(), SnapshotIndex: r.U64()}
	st.Snapshot = r.Bytes(maxInline, "snapshot ref")
	st.InlineFrom = r.U64()
	n := r.Count(maxBatch, 1, "inline entries")
	for i := 0; i < n && r.Err() == nil; i++ {
		st.Inline = append(st.Inline, r.Bytes(maxInline, "inline entry"))
	}
	if r.Err() == nil && len(r.B) > 0 {
		ns := r.Count(maxHeadSegs, 2*ids.Bytes+1, "entry segments")
		for i := 0; i < ns && r.Err() == nil; i++ {
			sg := entrySeg{Loc: r.ID(), Last: r.ID(), Count: r.Uvarint()}
			if r.Err() == nil && (sg.Count == 0 || sg.Count > maxSegEntries) {
				r.Fail("entry segment of %d entries", sg.Count)
			}
			st.Segs = append(st.Segs, sg)
		}
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: head state: %v", ErrMalformed, err)
	}
	if st.SnapshotIndex > st.Count || st.InlineFrom+uint64(len(st.Inline)) != st.Count && len(st.Inline) > 0 {
		return nil, fmt.Errorf("%w: head state indices inconsistent", ErrMalformed)
	}
	if len(st.Snapshot) > 0 {
		if _, err := content.UnmarshalRef(st.Snapshot); err != nil {
			return nil, fmt.Errorf("%w: snapshot ref: %v", ErrMalformed, err)
		}
	}
	return st, nil
}

// wrapLogKey encrypts a new log key to the owner.
func wrapLogKey(owner []byte, head ids.Key, key *[32]byte) ([]byte, error) {
	return identity.SealTo(owner, []byte(hpkeInfoLog), key[:], headAAD(head))
}

// Snapshots are segments: each covers the entries [from, to) and names the segment before
// it (prev, a content.Ref; empty for the one starting at 0), and the head names the newest
// (to = SnapshotIndex). A new snapshot covers the entries since the last one, merged with
// the segments before it as long as they are not larger (a binary counter): each entry is
// rewritten O(log n) times over the log's life instead of once per snapshot, so the cost of
// a snapshot does not grow with the mailbox, and replay reads O(log n) segments. A snapshot
// written before segments (a plain list of bodies from 0) reads as one segment without prev.
const segmentMagic = "epost/v1/log-segment\x00"

// snapSeg is one segment of a log's snapshot chain, as the writer keeps it.
type snapSeg struct {
	from, to uint64
	ref      []byte // content.Ref encoding
}

func encodeSegment(from uint64, prev []byte, bodies [][]byte) []byte {
	w := wire.Writer{}
	w.B = append(w.B, segmentMagic...)
	w.U64(from)
	w.Bytes(prev)
	w.B = append(w.B, encodeSnapshot(bodies)...)
	return w.B
}

// decodeSegment reads a segment (or a snapshot of the old format: from 0, no prev) that
// must end at to.
func decodeSegment(b []byte, to uint64) (from uint64, prev []byte, bodies [][]byte, err error) {
	if len(b) < len(segmentMagic) || string(b[:len(segmentMagic)]) != segmentMagic {
		bodies, err = decodeSnapshot(b, to)
		return 0, nil, bodies, err
	}
	r := wire.NewReader(b[len(segmentMagic):])
	from = r.U64()
	prev = r.Bytes(maxInline, "previous segment")
	if err := r.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("%w: snapshot segment: %v", ErrMalformed, err)
	}
	if from >= to || (from == 0) != (len(prev) == 0) {
		return 0, nil, nil, fmt.Errorf("%w: snapshot segment from %d to %d with prev %d bytes", ErrMalformed, from, to, len(prev))
	}
	if len(prev) > 0 {
		if _, err := content.UnmarshalRef(prev); err != nil {
			return 0, nil, nil, fmt.Errorf("%w: snapshot segment prev: %v", ErrMalformed, err)
		}
	}
	bodies, err = decodeSnapshot(r.B, to-from)
	return from, prev, bodies, err
}

// encodeSnapshot lists bodies; decodeSnapshot reads it back.
func encodeSnapshot(bodies [][]byte) []byte {
	w := wire.Writer{}
	w.Uvarint(uint64(len(bodies)))
	for _, b := range bodies {
		w.Bytes(b)
	}
	return w.B
}

func decodeSnapshot(b []byte, want uint64) ([][]byte, error) {
	r := wire.NewReader(b)
	n := r.Count(1<<24, 1, "snapshot entries")
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, r.Bytes(maxEntryBody, "snapshot entry"))
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: snapshot: %v", ErrMalformed, err)
	}
	if uint64(len(out)) != want {
		return nil, fmt.Errorf("%w: snapshot has %d entries, head says %d", ErrMalformed, len(out), want)
	}
	return out, nil
}

// backup lists every log head of a user: (head key, seq, SHA-256 of the head payload).
type backupEntry struct {
	Head ids.Key
	Seq  uint64
	Hash [32]byte
}

func encodeBackup(es []backupEntry) []byte {
	w := wire.Writer{}
	w.Uvarint(uint64(len(es)))
	for _, e := range es {
		w.ID(e.Head.Ring)
		w.ID(e.Head.ID)
		w.U64(e.Seq)
		w.B = append(w.B, e.Hash[:]...)
	}
	return w.B
}

func decodeBackup(b []byte) ([]backupEntry, error) {
	r := wire.NewReader(b)
	n := r.Count(1<<16, 2*ids.Bytes+8+32, "backup entries")
	out := make([]backupEntry, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		e := backupEntry{Head: ids.Key{Ring: r.ID(), ID: r.ID()}, Seq: r.U64()}
		for j := range e.Hash {
			e.Hash[j] = r.U8()
		}
		out = append(out, e)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: backup: %v", ErrMalformed, err)
	}
	return out, nil
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }
