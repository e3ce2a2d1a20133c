package store

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"epost/internal/ids"
)

// writeTx bundles one write transaction's buckets with the bookkeeping every mutation must keep
// in step: reference counts, the expiry and trash-time indexes, and the statistics. All index
// invariants are maintained here and nowhere else.
type writeTx struct {
	objects, trash, expiry, trashq, payload, meta bucket
	stats                                         Stats
	freed                                         []Hash // file payloads whose last reference went
	// vals takes the values the transaction puts into the value log; nil where there is none
	// (Open's repair writes into index.db directly). liveDelta is the change of live value bytes
	// per segment, for the value log once the commit is durable (values.go).
	vals      *valueBuf
	liveDelta map[uint64]int64
}

// newWriteTx writes straight into a bbolt write transaction (Open's repair).
func newWriteTx(tx *bolt.Tx) *writeTx {
	return newWriteTxOn(func(name []byte) bucket { return boltBucket{tx.Bucket(name)} })
}

// newLayeredWriteTx writes into top, reading through top, the overlay and base (commit.go).
func newLayeredWriteTx(top *layer, lower []*layer, base *bolt.Tx) *writeTx {
	layers := append([]*layer{top}, lower...)
	return newWriteTxOn(func(name []byte) bucket {
		return &layered{b: bucketIndex(name), top: top, layers: layers, base: base.Bucket(name)}
	})
}

func newWriteTxOn(b func(name []byte) bucket) *writeTx {
	w := &writeTx{
		objects: b(bucketObjects),
		trash:   b(bucketTrash),
		expiry:  b(bucketExpiry),
		trashq:  b(bucketTrashQ),
		payload: b(bucketPayload),
		meta:    b(bucketMeta),
	}
	w.stats = decodeStats(w.meta.Get(metaStats))
	return w
}

func (w *writeTx) flushStats() error { return w.meta.Put(metaStats, w.stats.encode()) }

// live returns the live object under k, or nil.
func (w *writeTx) live(k ids.Key) (*Meta, error) {
	v := w.objects.Get(encodeKey(k))
	if v == nil {
		return nil, nil
	}
	m, err := decodeRecord(k, v)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// trashed returns the trashed object under k and when it was trashed, or nil.
func (w *writeTx) trashed(k ids.Key) (*Meta, time.Time, error) {
	v := w.trash.Get(encodeKey(k))
	if v == nil {
		return nil, time.Time{}, nil
	}
	at, m, err := decodeTrash(k, v)
	if err != nil {
		return nil, time.Time{}, err
	}
	return &m, at, nil
}

// addRef counts one more reference to payload h, creating its entry if new: at loc, with
// payload (the bytes, for the index or the value log; nil for a file the caller has written).
func (w *writeTx) addRef(h Hash, size int64, payload []byte, loc location) error {
	p := payloadEntry{refs: 1, loc: loc, size: size}
	if v := w.payload.Get(h[:]); v != nil {
		old, err := decodePayloadEntry(h, v)
		if err != nil {
			return err
		}
		// Keep the content where it already is; only the count changes. A value the log
		// lost is written again from these bytes (values.go).
		p = old
		p.refs++
		if p.loc == inLog && loc == inLog && w.vals != nil && w.vals.log.healing(h) {
			w.addLive(p.seg, -p.size)
			p.seg, p.off = w.vals.add(payload)
			w.addLive(p.seg, p.size)
		}
	} else {
		switch loc {
		case inIndex:
			p.data = payload
		case inLog:
			p.seg, p.off = w.vals.add(payload)
			w.addLive(p.seg, size)
		}
		w.stats.Payloads++
		w.stats.UniqueBytes += size
	}
	return putFresh(w.payload, h[:], p.encode())
}

// addLive notes d more live bytes in segment seg.
func (w *writeTx) addLive(seg uint64, d int64) {
	if w.liveDelta == nil {
		w.liveDelta = map[uint64]int64{}
	}
	w.liveDelta[seg] += d
}

// putFresh is b.Put for a value v made for this put and never touched again: a layer keeps v
// itself instead of the copy Put makes (an inline payload entry holds the payload).
func putFresh(b bucket, k, v []byte) error {
	if l, ok := b.(*layered); ok && l.top != nil {
		l.top.set(l.b, k, entry{v: v})
		return nil
	}
	return b.Put(k, v)
}

// release drops one reference to h and forgets the payload when it was the last. The file of
// a file payload is removed by Store.update after the commit.
func (w *writeTx) release(h Hash) error {
	v := w.payload.Get(h[:])
	if v == nil {
		return fmt.Errorf("%w: payload %s is referenced but has no entry", ErrCorrupt, h)
	}
	p, err := decodePayloadEntry(h, v)
	if err != nil {
		return err
	}
	if p.refs > 1 {
		p.refs--
		return w.payload.Put(h[:], p.encode())
	}
	w.stats.Payloads--
	w.stats.UniqueBytes -= p.size
	switch p.loc {
	case inFile:
		w.freed = append(w.freed, h)
	case inLog:
		w.addLive(p.seg, -p.size)
	}
	return w.payload.Delete(h[:])
}

// putLive writes m's record and expiry index entry. If old is the record being replaced, its
// expiry entry and counts are removed first; payload references are the caller's business.
func (w *writeTx) putLive(old, m *Meta) error {
	if old != nil {
		if err := w.deleteLive(old); err != nil {
			return err
		}
	}
	if err := w.objects.Put(encodeKey(m.Key), encodeRecord(m)); err != nil {
		return err
	}
	if !m.Expiry.IsZero() {
		if err := w.expiry.Put(timeIndexKey(m.Expiry, m.Key), nil); err != nil {
			return err
		}
	}
	w.stats.Objects++
	w.stats.Bytes += m.Size
	return nil
}

func (w *writeTx) deleteLive(m *Meta) error {
	if err := w.objects.Delete(encodeKey(m.Key)); err != nil {
		return err
	}
	if !m.Expiry.IsZero() {
		if err := w.expiry.Delete(timeIndexKey(m.Expiry, m.Key)); err != nil {
			return err
		}
	}
	w.stats.Objects--
	w.stats.Bytes -= m.Size
	return nil
}

func (w *writeTx) deleteTrash(m *Meta, at time.Time) error {
	if err := w.trash.Delete(encodeKey(m.Key)); err != nil {
		return err
	}
	if err := w.trashq.Delete(timeIndexKey(at, m.Key)); err != nil {
		return err
	}
	w.stats.TrashObjects--
	w.stats.TrashBytes -= m.Size
	return nil
}

// moveToTrash turns live object m into a trashed one stamped at. The trash holds one version
// per key: an older trashed version of the same key is dropped for good.
func (w *writeTx) moveToTrash(m *Meta, at time.Time) error {
	old, oldAt, err := w.trashed(m.Key)
	if err != nil {
		return err
	}
	if err := w.deleteLive(m); err != nil {
		return err
	}
	if old != nil {
		if err := w.deleteTrash(old, oldAt); err != nil {
			return err
		}
	}
	if err := w.trash.Put(encodeKey(m.Key), encodeTrash(at, encodeRecord(m))); err != nil {
		return err
	}
	if err := w.trashq.Put(timeIndexKey(at, m.Key), nil); err != nil {
		return err
	}
	w.stats.TrashObjects++
	w.stats.TrashBytes += m.Size
	// Release after the new reference is in place so a shared payload never drops to zero.
	if old != nil {
		return w.release(old.Hash)
	}
	return nil
}
