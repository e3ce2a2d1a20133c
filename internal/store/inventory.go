package store

import (
	"bytes"
	"fmt"
	"iter"

	"epost/internal/ids"
)

// Inventory. PAST's replica maintenance compares what neighbouring replicas hold over an arc
// of the circle (Bloom filters, range hashes); Range and Summarize give it the local side.

// Arc is the clockwise arc (From, To] of one ring's circle. Unlike ids.Between, which treats
// (x, x] as empty, an Arc with From == To is the whole circle: that is what a node alone in its
// ring is responsible for, and an empty arc is never worth asking about.
type Arc struct {
	Ring     ids.RingID
	From, To ids.ID
}

// WholeRing is the arc covering every key of ring.
func WholeRing(ring ids.RingID) Arc { return Arc{Ring: ring} }

// Contains reports whether k lies on the arc.
func (a Arc) Contains(k ids.Key) bool {
	if k.Ring != a.Ring {
		return false
	}
	if a.From == a.To {
		return true
	}
	return ids.Between(a.From, k.ID, a.To)
}

// segment is a contiguous run of ids [lo, hi] (lo excluded if loOpen) in index order.
type segment struct {
	lo     ids.ID
	loOpen bool
	hi     ids.ID
}

var maxID = ids.ID(bytes.Repeat([]byte{0xff}, ids.Bytes))

// segments splits the arc, in clockwise order starting just after From, into at most two runs
// that are contiguous in the index (it wraps past zero when From >= To).
func (a Arc) segments() []segment {
	if ids.Less(a.From, a.To) {
		return []segment{{lo: a.From, loOpen: true, hi: a.To}}
	}
	segs := []segment{}
	if a.From != maxID {
		segs = append(segs, segment{lo: a.From, loOpen: true, hi: maxID})
	}
	return append(segs, segment{lo: ids.Zero, hi: a.To})
}

// Summary is the size of one arc's live content.
type Summary struct {
	Count int64
	Bytes int64
}

// Summarize counts the live objects on arc and their payload bytes, in one consistent snapshot.
func (s *Store) Summarize(arc Arc) (Summary, error) {
	var sum Summary
	err := s.view(func(tx *readTx) error {
		c := tx.Bucket(bucketObjects).Cursor()
		for _, seg := range arc.segments() {
			err := scanSegment(c, arc.Ring, seg, -1, func(k ids.Key, v []byte) error {
				m, err := decodeRecord(k, v)
				if err != nil {
					return err
				}
				sum.Count++
				sum.Bytes += m.Size
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Summary{}, fmt.Errorf("store summarize %s: %w", arc, err)
	}
	return sum, nil
}

// Range yields the metadata of the live objects on arc in clockwise order from just after
// arc.From. It reads in chunks, so the loop body may call the Store; see the package comment.
func (s *Store) Range(arc Arc) iter.Seq2[Meta, error] {
	return func(yield func(Meta, error) bool) {
		for _, seg := range arc.segments() {
			for {
				var batch []Meta
				err := s.view(func(tx *readTx) error {
					c := tx.Bucket(bucketObjects).Cursor()
					return scanSegment(c, arc.Ring, seg, chunkSize, func(k ids.Key, v []byte) error {
						m, err := decodeRecord(k, v)
						batch = append(batch, m)
						return err
					})
				})
				if err != nil {
					yield(Meta{}, fmt.Errorf("store range %s: %w", arc, err))
					return
				}
				for _, m := range batch {
					if !yield(m, nil) {
						return
					}
				}
				if len(batch) < chunkSize {
					break
				}
				// Resume just after the last key seen.
				seg.lo, seg.loOpen = batch[len(batch)-1].Key.ID, true
			}
		}
	}
}

// scanSegment calls fn for up to limit (unlimited if negative) objects of ring in seg, in order.
func scanSegment(c cursor, ring ids.RingID, seg segment, limit int, fn func(ids.Key, []byte) error) error {
	start := encodeKey(ids.Key{Ring: ring, ID: seg.lo})
	k, v := c.Seek(start)
	if seg.loOpen && k != nil && bytes.Equal(k, start) {
		k, v = c.Next()
	}
	for n := 0; k != nil && n != limit; k, v = c.Next() {
		if len(k) != keyLen || !bytes.Equal(k[:ids.Bytes], ring[:]) {
			break
		}
		key := decodeKey(k)
		if ids.Less(seg.hi, key.ID) {
			break
		}
		if err := fn(key, v); err != nil {
			return err
		}
		n++
	}
	return nil
}

// String is "RING/(FROM,TO]" in short hex, for errors and logs.
func (a Arc) String() string {
	return fmt.Sprintf("%s/(%s,%s]", a.Ring.Short(), a.From.Short(), a.To.Short())
}
