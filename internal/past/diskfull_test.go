package past

import (
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"epost/internal/store"
)

// fullDisk is a Store whose writes fail like a full disk's while full is set.
type fullDisk struct {
	Store
	full bool
}

func (f *fullDisk) PutIf(obj store.Object, cond store.Precondition) error {
	if f.full {
		return syscall.ENOSPC
	}
	return f.Store.PutIf(obj, cond)
}

// A replica whose disk is full never counts as an acknowledgement, not even its own to itself
// when it is the inserting node: with two of three replicas full (the client one of them) an
// insert fails for want of a quorum, and succeeds again once space returns. Before the fix the
// client counted its own acknowledgement before its write was durable, and reported success
// with one copy on disk.
func TestInsertWithFullDisks(t *testing.T) {
	const seed = 16
	r := newTestRing(t, seed, 8, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	lease := r.net.Now().Add(24 * time.Hour)
	obj := NewContent(r.ring, randomPayload(rng, 2000), lease)
	set := r.closest(obj.Key.ID, 3)
	disks := make([]*fullDisk, 2)
	for i, tn := range set[:2] { // the client (the key's root) and one more replica
		disks[i] = &fullDisk{Store: tn.drv.wb.base, full: true}
		tn.drv.wb.base = disks[i]
	}
	res := r.insert(set[0], obj)
	if res.Err == nil || !errors.Is(res.Err, ErrQuorum) || res.Acked != 1 {
		r.fail("two of three replicas full, the client one of them: acked %d, err %v; want 1 and a quorum error", res.Acked, res.Err)
	}
	if set[0].st.Has(obj.Key) || set[1].st.Has(obj.Key) {
		r.fail("a full replica holds the object")
	}
	for _, d := range disks {
		d.full = false
	}
	if res := r.insert(set[0], obj); res.Err != nil || res.Acked < 2 {
		r.fail("space back: acked %d, err %v; want a quorum", res.Acked, res.Err)
	}
}
