package post

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"epost/internal/diskstat"
	"epost/internal/glacier"
	"epost/internal/ids"
)

// The held file: the bytes of archive members not yet in a stored aggregate, on the owner's
// disk. Until an object's aggregate is stored in Glacier (up to ArchiveFlush after its
// write) the object lives in PAST and in the archive's memory only (glacier.Aggregator.Held,
// which Node.restore reads when PAST lost it). This file carries that second copy over a
// restart of the owner's node: the next start adds its members to the archive again (those
// its index does not hold), so that a read after PAST lost them still finds them (restore),
// and they reach Glacier.
//
// Only content members are held (log entries, snapshots, the chunks of filed messages):
// their key is the hash of their bytes, so a record needs no key and a damaged one names
// another key, never a wrong object. Log heads are not: the writer's head record (heads.log)
// already keeps the newest, and replicas that lost it get it again (republish).
//
// Files, next to the archive state file: "archive.held" takes the members added since the
// last aggregate was cut; when one is cut it becomes "archive.held.SEQ" (SEQ: the newest
// aggregate cut), removed once a version of each aggregate cut then is stored. Records: uvarint length, the member's bytes, CRC-32C of the bytes. The
// file is written without fsync: it guards against the loss of every PAST replica while the
// owner's node restarts (a process crash keeps what it wrote), not against the owner's own
// disk failing in the same minutes.

const heldName = "archive.held"

var heldCRC = crc32.MakeTable(crc32.Castagnoli)

// heldPath is the held file next to the state file (an archive without a state file holds
// nothing on disk).
func (a *userArchive) heldPath() string {
	if a.file == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(a.file), heldName)
}

// holdLocked appends member m to the held file. Called with the node's mutex held, so that
// appends and rotations keep the order in which members enter aggregates.
func (u *User) holdLocked(m glacier.Member) {
	a := u.arch
	path := a.heldPath()
	if path == "" || !m.ContentHash || u.n.stop {
		return
	}
	if a.held == nil && !a.heldBroken {
		f, err := createAppendFile(path)
		if err != nil {
			u.heldFailed(err)
		}
		a.held = f
	}
	if a.held == nil {
		return
	}
	rec := binary.AppendUvarint(make([]byte, 0, len(m.Data)+binary.MaxVarintLen64+4), uint64(len(m.Data)))
	rec = append(rec, m.Data...)
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(m.Data, heldCRC))
	if err := a.held.append(rec, false); err != nil {
		u.heldFailed(err)
		return
	}
	diskstat.PostArchive.Write(len(rec))
}

// heldFailed stops holding members on disk until the next rotation (they stay in memory and
// in PAST), saying why once.
func (u *User) heldFailed(err error) {
	a := u.arch
	if a.held != nil {
		_ = a.held.Close()
		a.held = nil
	}
	if !a.heldBroken {
		u.n.cfg.Log.Warn("post: cannot keep archive members on disk until their aggregate is stored", "user", u.addr, "err", err)
	}
	a.heldBroken = true
}

// heldFile is a held file set aside at a cut: "archive.held.NAME", NAME the newest aggregate
// cut then, kept until a version of every aggregate in wait is stored.
type heldFile struct {
	name uint64
	wait []uint64
}

// rotateHeldLocked sets the held file aside at a cut: its members are in the aggregates gs
// (just cut), and it is removed once each of them is stored (dropHeld) — each one itself, in
// any version: a later aggregate stored first (a retry of gs that a repack superseded goes
// behind it) says nothing of theirs.
func (u *User) rotateHeldLocked(gs []*glacier.Aggregate) {
	a := u.arch
	path := a.heldPath()
	if path == "" || len(gs) == 0 {
		return
	}
	if a.held != nil {
		_ = a.held.Close()
		a.held = nil
	}
	a.heldBroken = false
	hf := heldFile{name: gs[len(gs)-1].Seq}
	for _, g := range gs {
		hf.wait = append(hf.wait, g.Seq)
	}
	if err := os.Rename(path, path+"."+strconv.FormatUint(hf.name, 10)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			u.n.cfg.Log.Warn("post: cannot set archive members aside on disk", "user", u.addr, "err", err)
		}
		return
	}
	a.heldSet = append(a.heldSet, hf)
}

// dropHeld notes that a version of aggregate seq is stored, and removes the held files that
// waited for nothing else.
func (u *User) dropHeld(seq uint64) {
	n := u.n
	n.mu.Lock()
	a := u.arch
	path := a.heldPath()
	var drop []uint64
	keep := a.heldSet[:0]
	for _, hf := range a.heldSet {
		hf.wait = slices.DeleteFunc(hf.wait, func(s uint64) bool { return s == seq })
		if len(hf.wait) == 0 {
			drop = append(drop, hf.name)
			continue
		}
		keep = append(keep, hf)
	}
	a.heldSet = keep
	n.mu.Unlock()
	for _, s := range drop {
		if err := os.Remove(path + "." + strconv.FormatUint(s, 10)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			n.cfg.Log.Warn("post: cannot remove archive members set aside on disk", "user", u.addr, "err", err)
		}
	}
}

// loadHeld is called when the archive is made, before anything of this run can be held on
// disk (members wait in the backlog until the archive is ready): it sets the previous run's
// current file aside under a name of its own and returns the members of every file that run
// left, with the files, to be removed once those members are in the archive again
// (archiveReady). Until then Node.restore finds them in the backlog.
func (n *Node) loadHeld(a *userArchive) ([]glacier.Member, []string, error) {
	path := a.heldPath()
	if path == "" {
		return nil, nil, nil
	}
	// Every file the previous run left takes a name of this start's (a number far above any
	// aggregate seq): this run's cuts name their files by seq, and must not overwrite one of
	// these before archiveReady removes them.
	base := n.now().UnixNano()
	names, err := filepath.Glob(path + "*")
	if err != nil {
		return nil, nil, err
	}
	names = slices.DeleteFunc(names, func(name string) bool {
		suffix := strings.TrimPrefix(name, path)
		return suffix != "" && !isHeldSuffix(suffix)
	})
	var errs []error
	var taken []string
	for i, name := range names {
		to := path + "." + strconv.FormatInt(base+int64(i), 10)
		if err := os.Rename(name, to); err != nil {
			errs = append(errs, err) // left for the next start
			continue
		}
		taken = append(taken, to)
	}
	ms, read, err := readHeld(n.cfg.Ring, taken)
	exp := n.now().Add(n.cfg.ContentLease)
	for i := range ms {
		ms[i].Expiry = exp
	}
	return ms, read, errors.Join(append(errs, err)...)
}

// readHeld returns the members of the held files, and the files it could read (a file that
// failed to open or read stays for the next start; one damaged part way is read up to the
// damage, which is all it holds that can be used).
func readHeld(ring ids.RingID, files []string) ([]glacier.Member, []string, error) {
	var out []glacier.Member
	var read []string
	var errs []error
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		read = append(read, name)
		ms, err := decodeHeld(ring, b)
		out = append(out, ms...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(name), err))
		}
	}
	return out, read, errors.Join(errs...)
}

func isHeldSuffix(s string) bool {
	if len(s) < 2 || s[0] != '.' {
		return false
	}
	_, err := strconv.ParseUint(s[1:], 10, 64)
	return err == nil
}

// decodeHeld returns the members of a held file up to its first damaged record (a write
// torn by a crash ends a file; it is then reported with what came before it).
func decodeHeld(ring ids.RingID, b []byte) ([]glacier.Member, error) {
	var out []glacier.Member
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) || uint64(len(b)-w)-n < 4 {
			return out, fmt.Errorf("%w: damaged record after %d", ErrMalformed, len(out))
		}
		data := b[w : w+int(n)]
		if binary.BigEndian.Uint32(b[w+int(n):]) != crc32.Checksum(data, heldCRC) {
			return out, fmt.Errorf("%w: record %d fails its checksum", ErrMalformed, len(out))
		}
		out = append(out, glacier.Member{Key: ids.Key{Ring: ring, ID: ids.Hash(data)}, Data: slices.Clone(data), ContentHash: true})
		b = b[w+int(n)+4:]
	}
	return out, nil
}
