package post

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"epost/internal/diskstat"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/wire"
)

// Starting a user's archive: from the state file when the node has one and Glacier holds
// nothing newer, else from Glacier alone (the root, forward probes past it, the chain back).

// recoverArchive makes u's archive ready. done runs once it is (loaded, found, or certainly
// absent) or, if Glacier gives no clear answer, after recoverPatience attempts; the recovery
// then goes on in the background, and nothing is archived until it ends (a new aggregate must
// never take the seq of one the ring may still hold).
func (u *User) recoverArchive(done func()) {
	n := u.n
	n.mu.Lock()
	n.stats.ArchiveRecoveries++
	if done != nil {
		u.arch.onReady = append(u.arch.onReady, done)
	}
	file := u.arch.file
	n.mu.Unlock()
	start := time.Now()
	if file != "" {
		b, err := os.ReadFile(file)
		switch {
		case err == nil:
			if err := u.loadArchiveState(b); err == nil {
				u.checkLoaded(0, start)
				return
			} else {
				n.cfg.Log.Warn("post: archive state file unusable; reading the archive from Glacier", "user", u.addr, "file", file, "err", err)
				u.resetArchive()
			}
		case !errors.Is(err, fs.ErrNotExist):
			n.cfg.Log.Warn("post: cannot read the archive state file; reading the archive from Glacier", "user", u.addr, "file", file, "err", err)
		}
	}
	u.recoverAttempt(0, start)
}

// recoverPatience is how many inconclusive attempts a waiting start sits through.
const recoverPatience = 3

// inconclusive schedules again after a step that got no clear answer from Glacier; after
// recoverPatience attempts the start waiting for the archive goes on without it.
func (u *User) inconclusive(attempt int, what string, err error, again func()) {
	n := u.n
	d := min(n.cfg.RetryDelay<<min(attempt, 6), time.Minute)
	n.cfg.Log.Warn("post: archive recovery inconclusive; retrying", "user", u.addr, "step", what, "attempt", attempt+1, "retry_in", d, "err", err)
	var cbs []func()
	if attempt+1 == recoverPatience {
		n.mu.Lock()
		cbs, u.arch.onReady = u.arch.onReady, nil
		n.mu.Unlock()
	}
	for _, f := range cbs {
		f() // the start goes on; archiving waits for the recovery
	}
	n.after(d, again)
}

// checkLoaded makes sure Glacier holds no aggregate newer than the loaded state (one stored
// before a crash that kept it from the file), then makes the archive ready.
func (u *User) checkLoaded(attempt int, start time.Time) {
	n := u.n
	n.mu.Lock()
	next := u.arch.agg.NextSeq()
	n.mu.Unlock()
	n.cfg.Archive.Retrieve(glacier.AggregateKey(n.cfg.Ring, u.keys.Public().Signing, next), func(_ []byte, _ *glacier.Manifest, err error) {
		switch {
		case errors.Is(err, glacier.ErrNoObject):
			u.archiveReady(nil, next-1, nil, start, nil, "state file")
		case err == nil:
			// The file lags (it is saved now and then, not after every aggregate): read
			// the newer aggregates forward and add them.
			n.cfg.Log.Info("post: Glacier holds aggregates newer than the archive state file; reading them", "user", u.addr, "from", next)
			u.extendLoaded(next, next, map[uint64]retrieved{}, attempt, start)
		default:
			u.inconclusive(attempt, fmt.Sprintf("aggregate %d after the state file", next), err, func() { u.checkLoaded(attempt+1, start) })
		}
	})
}

// extendLoaded retrieves aggregates seq, seq+1, … (from is the first the loaded state lacks)
// until Glacier says the next one does not exist, then adds them to the loaded state and makes
// the archive ready. Anything unclear falls back to reading the whole archive from Glacier.
func (u *User) extendLoaded(from, seq uint64, found map[uint64]retrieved, attempt int, start time.Time) {
	n := u.n
	owner := u.keys.Public().Signing
	n.cfg.Archive.Retrieve(glacier.AggregateKey(n.cfg.Ring, owner, seq), func(blob []byte, man *glacier.Manifest, err error) {
		switch {
		case err == nil:
			found[seq] = retrieved{blob, man}
			u.extendLoaded(from, seq+1, found, attempt, start)
			return
		case !errors.Is(err, glacier.ErrNoObject):
			u.inconclusive(attempt, fmt.Sprintf("aggregate %d after the state file", seq), err, func() { u.checkLoaded(attempt+1, start) })
			return
		}
		newest := seq - 1
		n.mu.Lock()
		w := u.arch.agg.Walk(glacier.AggregateKey(n.cfg.Ring, owner, newest))
		n.mu.Unlock()
		mans := map[ids.ID]*glacier.Manifest{}
		var werr error
		for s := newest; s >= from && werr == nil; s-- {
			r := found[s]
			werr = w.Feed(r.blob, r.man.Version, r.man.ExpiryTime())
			mans[r.man.Key()] = r.man
		}
		n.mu.Lock()
		if werr == nil {
			werr = u.arch.agg.Extend(w)
		}
		if werr == nil {
			for k, m := range mans {
				u.arch.mans[k] = m
				u.arch.agg.Release(k)
			}
			u.arch.dirty = true
		}
		n.mu.Unlock()
		if werr != nil {
			n.cfg.Log.Warn("post: the archive state file cannot be brought up to date; reading the archive from Glacier", "user", u.addr, "err", werr)
			u.resetArchive()
			u.recoverAttempt(0, start)
			return
		}
		u.archiveReady(nil, newest, nil, start, nil, "state file and Glacier")
	})
}

// resetArchive empties the aggregator (a state file that turned out stale or unusable).
func (u *User) resetArchive() {
	agg, err := u.newAggregator()
	if err != nil {
		panic(err) // the same configuration was accepted by newArchive
	}
	u.n.mu.Lock()
	u.arch.agg, u.arch.newest, u.arch.rootVer = agg, 0, 0
	u.arch.mans = map[ids.ID]*glacier.Manifest{} // the file's manifests go with it
	u.n.mu.Unlock()
}

func (u *User) recoverAttempt(attempt int, start time.Time) {
	n := u.n
	owner := u.keys.Public().Signing
	found := map[uint64]retrieved{}
	retry := func(what string, err error) {
		u.inconclusive(attempt, what, err, func() { u.recoverAttempt(attempt+1, start) })
	}
	var probe func(seq, from uint64)
	probe = func(seq, from uint64) {
		n.cfg.Archive.Retrieve(glacier.AggregateKey(n.cfg.Ring, owner, seq), func(blob []byte, man *glacier.Manifest, err error) {
			switch {
			case err == nil:
				found[seq] = retrieved{blob, man}
				probe(seq+1, from)
			case errors.Is(err, glacier.ErrNoObject):
				if seq == from && from > 1 {
					// The aggregate the root names has expired everywhere: so has everything
					// older (leases never decrease along the chain). Nothing to restore, but
					// new aggregates go after it.
					u.archiveReady(nil, from, nil, start, nil, "Glacier")
					return
				}
				u.walkArchive(seq-1, found, start, func(err error) { retry("chain", err) })
			default:
				retry(fmt.Sprintf("aggregate %d", seq), err)
			}
		})
	}
	n.cfg.Archive.Retrieve(glacier.ObjectKey(n.cfg.Ring, owner, []byte(archiveRootName)), func(blob []byte, man *glacier.Manifest, err error) {
		from := uint64(1)
		switch {
		case err == nil:
			if seq, derr := decodeRoot(blob); derr == nil && seq > 0 {
				from = seq
				n.mu.Lock()
				u.arch.rootVer = max(u.arch.rootVer, man.Version)
				n.mu.Unlock()
			} else {
				n.cfg.Log.Warn("post: archive root unreadable; probing from the first aggregate", "user", u.addr, "err", derr)
			}
		case errors.Is(err, glacier.ErrNoObject):
		default:
			retry("root", err)
			return
		}
		probe(from, from)
	})
}

type retrieved struct {
	blob []byte
	man  *glacier.Manifest
}

// walkArchive walks u's chain back from aggregate newest and makes the archive ready; an
// aggregate that cannot be retrieved (but may exist) calls fail instead. One that exists
// nowhere any more (expired) ends the walk: what was found is restored.
func (u *User) walkArchive(newest uint64, found map[uint64]retrieved, start time.Time, fail func(error)) {
	n := u.n
	owner := u.keys.Public().Signing
	n.mu.Lock()
	w := u.arch.agg.Walk(ids.Zero)
	if newest > 0 {
		w = u.arch.agg.Walk(glacier.AggregateKey(n.cfg.Ring, owner, newest))
	}
	n.mu.Unlock()
	mans := map[ids.ID]*glacier.Manifest{}
	var step func()
	step = func() {
		want, ok := w.Want()
		if !ok {
			u.archiveReady(w, newest, mans, start, nil, "Glacier")
			return
		}
		feed := func(r retrieved) {
			if err := w.Feed(r.blob, r.man.Version, r.man.ExpiryTime()); err != nil {
				u.archiveReady(w, newest, mans, start, err, "Glacier")
				return
			}
			mans[want] = r.man
			step()
		}
		for _, r := range found {
			if r.man.Key() == want {
				feed(r)
				return
			}
		}
		n.cfg.Archive.Retrieve(want, func(blob []byte, man *glacier.Manifest, err error) {
			switch {
			case err == nil:
				feed(retrieved{blob, man})
			case errors.Is(err, glacier.ErrNoObject):
				u.archiveReady(w, newest, mans, start, fmt.Errorf("aggregate %s: %w", want.Short(), err), "Glacier")
			default:
				fail(fmt.Errorf("aggregate %s: %w", want.Short(), err))
			}
		})
	}
	step()
}

// archiveReady ends a recovery: the walk w (nil: none) is loaded, blobs are released, and
// what was kept meanwhile is aggregated.
func (u *User) archiveReady(w *glacier.ChainWalk, newest uint64, mans map[ids.ID]*glacier.Manifest, start time.Time, werr error, from string) {
	n := u.n
	n.mu.Lock()
	a := u.arch
	if a.ready {
		n.mu.Unlock()
		return
	}
	if w != nil {
		if err := a.agg.Restore(w); err != nil {
			werr = errors.Join(werr, err)
		}
		for k, m := range mans {
			a.mans[k] = m
			a.agg.Release(k)
		}
		a.dirty = true
	}
	a.newest = max(a.newest, newest)
	a.agg.Reserve(a.newest + 1)
	a.ready = true
	backlog, cbs, heldOld := a.backlog, a.onReady, a.heldOld
	a.backlog, a.onReady, a.heldOld = nil, nil, nil
	count := a.agg.Aggregates()
	n.mu.Unlock()
	if werr != nil {
		n.cfg.Log.Warn("post: archive index restored only in part", "user", u.addr, "newest", newest, "aggregates", count, "err", werr)
	} else if newest > 0 {
		n.cfg.Log.Info("post: archive index ready", "user", u.addr, "from", from, "aggregates", count, "newest", newest, "took", time.Since(start).Round(time.Millisecond))
	}
	var out []*glacier.Aggregate
	for _, m := range backlog {
		out = append(out, u.aggregate(m)...)
	}
	u.enqueueInserts(out)
	// The previous run's held files (archiveheld.go): their members were in the backlog, and
	// are now aggregated and held again, or in a stored aggregate already.
	for _, f := range heldOld {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			n.cfg.Log.Warn("post: cannot remove archive members held on disk", "user", u.addr, "err", err)
		}
	}
	u.runQueue() // saves the state
	for _, f := range cbs {
		f()
	}
}

// The state file: magic, newest stored seq, root version, glacier.Aggregator.State (length
// first), then the stored manifests (count, then each length first: about 235 bytes each), so
// that a renewal after a restart re-signs the manifest instead of fetching the aggregate.
const archiveStateMagic = "epost/v2/archive-state\x00"

// maxStateBytes bounds what loadArchiveState accepts of each part.
const maxStateBytes = 1 << 30

// saveAfter is how many aggregates the state file may lag behind before it is written anyway.
const saveAfter = 64

// saveArchive writes the state file when the archive is idle (nothing queued or in flight:
// the aggregator then describes only what Glacier holds) and changed; unless force, at most
// once per ArchiveFlush or saveAfter aggregates.
func (u *User) saveArchive(force bool) {
	n := u.n
	n.mu.Lock()
	a := u.arch
	file := a.file
	n.mu.Unlock()
	if file == "" {
		return
	}
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	n.mu.Lock()
	if !a.ready || a.busy || len(a.queue) > 0 || !a.dirty {
		n.mu.Unlock()
		return
	}
	// The file is the whole index (it grows with the mailbox): write it at most once per
	// ArchiveFlush, or after saveAfter aggregates, not after each. A crash in between only
	// makes the next start read the newer aggregates from Glacier (extendLoaded).
	if !force && a.saved+saveAfter > a.newest && n.now().Sub(a.savedAt) < n.cfg.ArchiveFlush {
		if !a.saveLater {
			a.saveLater = true
			wait := n.cfg.ArchiveFlush - n.now().Sub(a.savedAt)
			n.after(wait, func() {
				n.mu.Lock()
				a.saveLater = false
				n.mu.Unlock()
				u.saveArchive(false)
			})
		}
		n.mu.Unlock()
		return
	}
	a.saved, a.savedAt = a.newest, n.now()
	w := wire.Writer{}
	w.B = append(w.B, archiveStateMagic...)
	w.U64(a.newest)
	w.U64(a.rootVer)
	w.Bytes(a.agg.State())
	keys := slices.SortedFunc(maps.Keys(a.mans), ids.Cmp)
	w.Uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.Bytes(a.mans[k].Bytes())
	}
	a.dirty = false
	n.mu.Unlock()
	diskstat.PostArchive.Rewrite(len(w.B), 2) // the file, then its directory
	if err := writeAtomic(file, w.B); err != nil {
		n.mu.Lock()
		a.dirty = true
		n.mu.Unlock()
		n.cfg.Log.Warn("post: cannot save the archive state (the next start reads it from Glacier)", "user", u.addr, "err", err)
	}
}

func (u *User) loadArchiveState(b []byte) error {
	if len(b) < len(archiveStateMagic)+16 || string(b[:len(archiveStateMagic)]) != archiveStateMagic {
		return fmt.Errorf("%w: archive state file", ErrMalformed)
	}
	r := wire.NewReader(b[len(archiveStateMagic):])
	newest, rootVer := r.U64(), r.U64()
	state := r.Bytes(maxStateBytes, "aggregator state")
	count := r.Count(maxStateBytes, 100, "manifests")
	mans := make(map[ids.ID]*glacier.Manifest, count)
	for range count {
		raw := r.Bytes(maxStateBytes, "manifest")
		if r.Err() != nil {
			break
		}
		mr := wire.NewReader(raw)
		m := glacier.DecodeManifest(mr)
		if err := mr.Done(); err != nil {
			return fmt.Errorf("%w: archive state manifest: %v", ErrMalformed, err)
		}
		mans[m.Key()] = m
	}
	if err := r.Done(); err != nil {
		return fmt.Errorf("%w: archive state file: %v", ErrMalformed, err)
	}
	n := u.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := u.arch.agg.LoadState(state); err != nil {
		return err
	}
	for k, m := range mans {
		if _, ok := u.arch.agg.Aggregate(k); ok {
			u.arch.mans[k] = m
		}
	}
	u.arch.newest, u.arch.rootVer = newest, rootVer
	return nil
}

// writeAtomic replaces path with data: a synced temporary file renamed over it, then the
// directory synced.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := writeSynced(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("post: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// archiveReconcile archives the user's reachable objects that the archive lacks: what a crash
// took before it reached an aggregate, or what was written before the archive existed.
func (u *User) archiveReconcile() {
	n := u.n
	if !n.archiveOn() {
		return
	}
	n.mu.Lock()
	a := u.arch
	if a == nil {
		n.mu.Unlock()
		return
	}
	if !a.ready {
		a.onReady = append(a.onReady, u.archiveReconcile)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	keys := u.reachableKeys()
	u.keepKeys(keys[1:]) // not the CA-signed record: the user's key backup has it
}
