package store

import (
	"bytes"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// The index in two tiers (see journal.go for why). Committed changes live first in the
// overlay, an in-memory layer of bucket entries that shadows index.db and is made durable by
// the journal; a checkpoint moves them into index.db in one bbolt commit. Every transaction
// therefore sees the index through layers, newest first: its own changes (writers only), the
// overlay, then a bbolt read transaction. bucket and cursor are what the rest of the package
// uses, so the same code runs on the layers and, at Open and in a checkpoint, on bbolt itself.

// bucket is a transaction's view of one index bucket, with bbolt's method names.
type bucket interface {
	Get(k []byte) []byte
	Put(k, v []byte) error
	Delete(k []byte) error
	Cursor() cursor
	ForEach(fn func(k, v []byte) error) error
}

// cursor walks a bucket in key order; a nil key means the end. Keys and values are valid
// until the transaction ends.
type cursor interface {
	First() (k, v []byte)
	Seek(seek []byte) (k, v []byte)
	Next() (k, v []byte)
}

// boltBucket is a bbolt bucket used directly (Open's repair, checkpoints).
type boltBucket struct{ *bolt.Bucket }

func (b boltBucket) Cursor() cursor { return b.Bucket.Cursor() }

const numBuckets = 6 // len(allBuckets)

func bucketIndex(name []byte) int {
	for i, n := range allBuckets {
		if bytes.Equal(n, name) {
			return i
		}
	}
	panic("store: unknown bucket " + string(name))
}

// entry is one key's newest value in a layer; del marks a deletion.
type entry struct {
	v   []byte
	del bool
}

// layer is a set of bucket changes: one transaction's, or the overlay's (all committed
// changes since the last checkpoint).
type layer struct {
	m    [numBuckets]map[string]entry
	size int // bytes of keys and values, for the checkpoint trigger

	sortMu sync.Mutex
	sorted [numBuckets][]string // cache of m's keys in order; nil when stale
}

func newLayer() *layer {
	l := &layer{}
	for i := range l.m {
		l.m[i] = map[string]entry{}
	}
	return l
}

func (l *layer) empty() bool {
	for _, m := range l.m {
		if len(m) > 0 {
			return false
		}
	}
	return true
}

func (l *layer) set(b int, k []byte, e entry) {
	if old, ok := l.m[b][string(k)]; ok {
		l.size -= len(k) + len(old.v)
	} else {
		l.sortMu.Lock()
		l.sorted[b] = nil
		l.sortMu.Unlock()
	}
	l.m[b][string(k)] = e
	l.size += len(k) + len(e.v)
}

// absorb copies src's changes over l's.
func (l *layer) absorb(src *layer) {
	for b, m := range src.m {
		for k, e := range m {
			l.set(b, []byte(k), e)
		}
	}
}

// keys returns bucket b's keys in order. The slice is shared; do not modify it.
func (l *layer) keys(b int) []string {
	l.sortMu.Lock()
	defer l.sortMu.Unlock()
	if l.sorted[b] == nil {
		ks := make([]string, 0, len(l.m[b]))
		for k := range l.m[b] {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		l.sorted[b] = ks
	}
	return l.sorted[b]
}

// applyTo writes l's changes into bbolt buckets (a checkpoint or a replay at Open).
func (l *layer) applyTo(tx *bolt.Tx) error {
	for b, m := range l.m {
		bk := tx.Bucket(allBuckets[b])
		for k, e := range m {
			var err error
			if e.del {
				err = bk.Delete([]byte(k))
			} else {
				err = bk.Put([]byte(k), e.v)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// split cuts l into layers of about max bytes of keys and values each, every bucket's keys in
// order (so each part touches a run of neighbouring index pages).
func (l *layer) split(max int) []*layer {
	var parts []*layer
	cur, size := newLayer(), 0
	for b := range l.m {
		for _, k := range l.keys(b) {
			e := l.m[b][k]
			if size > 0 && size+len(k)+len(e.v) > max {
				parts = append(parts, cur)
				cur, size = newLayer(), 0
			}
			cur.set(b, []byte(k), e)
			size += len(k) + len(e.v)
		}
	}
	if size > 0 || len(parts) == 0 {
		parts = append(parts, cur)
	}
	return parts
}

// layered is one bucket seen through layers (newest first) over bbolt. top, if not nil, is
// layers[0] and takes the writes.
type layered struct {
	b      int
	top    *layer
	layers []*layer
	base   *bolt.Bucket
}

func (x *layered) Get(k []byte) []byte {
	for _, l := range x.layers {
		if e, ok := l.m[x.b][string(k)]; ok {
			if e.del {
				return nil
			}
			return e.v
		}
	}
	return x.base.Get(k)
}

func (x *layered) Put(k, v []byte) error {
	x.top.set(x.b, k, entry{v: append([]byte{}, v...)})
	return nil
}

func (x *layered) Delete(k []byte) error {
	x.top.set(x.b, k, entry{del: true})
	return nil
}

func (x *layered) ForEach(fn func(k, v []byte) error) error {
	c := x.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (x *layered) Cursor() cursor {
	var keys []string
	for _, l := range x.layers {
		keys = mergeSorted(keys, l.keys(x.b))
	}
	return &mergedCursor{x: x, keys: keys, base: x.base.Cursor()}
}

// mergeSorted merges two sorted key lists without duplicates.
func mergeSorted(a, b []string) []string {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// mergedCursor merges the layers' keys with bbolt's cursor; a layer's entry shadows bbolt's
// entry of the same key, and deletions hide it. It always holds the next candidates: keys[i]
// and bk.
type mergedCursor struct {
	x      *layered
	keys   []string
	i      int
	base   *bolt.Cursor
	bk, bv []byte
}

func (c *mergedCursor) First() ([]byte, []byte) {
	c.bk, c.bv = c.base.First()
	c.i = 0
	return c.Next()
}

func (c *mergedCursor) Seek(seek []byte) ([]byte, []byte) {
	c.bk, c.bv = c.base.Seek(seek)
	c.i, _ = slices.BinarySearch(c.keys, string(seek))
	return c.Next()
}

func (c *mergedCursor) Next() ([]byte, []byte) {
	for {
		haveLayer := c.i < len(c.keys)
		if !haveLayer && c.bk == nil {
			return nil, nil
		}
		if haveLayer && (c.bk == nil || c.keys[c.i] <= string(c.bk)) {
			k := c.keys[c.i]
			c.i++
			if c.bk != nil && k == string(c.bk) {
				c.bk, c.bv = c.base.Next() // shadowed
			}
			v := c.x.Get([]byte(k))
			if v == nil {
				continue // deleted
			}
			return []byte(k), v
		}
		k, v := c.bk, c.bv
		c.bk, c.bv = c.base.Next()
		return k, v
	}
}

// readTx is a read transaction: the overlay over a bbolt read transaction.
type readTx struct {
	base   *bolt.Tx
	layers []*layer
}

// Bucket returns the named bucket, read-only.
func (r *readTx) Bucket(name []byte) bucket {
	return &layered{b: bucketIndex(name), layers: r.layers, base: r.base.Bucket(name)}
}
