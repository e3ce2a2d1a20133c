package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"epost/internal/diskstat"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/ring"
)

// FilePeers is the remembered-peers file in the node's data directory.
const FilePeers = "peers.json"

// Bounds on the remembered peers: enough to find the ring again after most of it restarted,
// small enough to probe all of them at once.
const (
	maxRememberedPeers = 64
	maxPeersFileSize   = 1 << 20
	peersFileVersion   = 1
)

// Peer is a remembered node.
type Peer struct {
	ID   ids.ID
	Addr string
}

type peersFile struct {
	Version int         `json:"version"`
	NodeID  string      `json:"node_id"`
	Saved   time.Time   `json:"saved"`
	Peers   []peerEntry `json:"peers"`
}

type peerEntry struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// peerStore reads and writes peers.json. Writes are atomic (temporary file, fsync, rename,
// fsync of the directory), so a crash leaves either the old list or the new one.
type peerStore struct {
	path string
	self ids.ID
}

func newPeerStore(path string, self ids.ID) *peerStore { return &peerStore{path: path, self: self} }

// load returns the remembered peers; a missing file is an empty list. Entries that do not parse
// are skipped: the file is a hint, never trusted (every peer is authenticated when dialed).
func (s *peerStore) load() ([]Peer, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPeersFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPeersFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: delete it", s.path, maxPeersFileSize)
	}
	var pf peersFile
	if err := json.Unmarshal(data, &pf); err != nil {
		return nil, fmt.Errorf("%s: %v (delete it; the node rejoins through its bootstrap nodes)", s.path, err)
	}
	if pf.Version != peersFileVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", s.path, pf.Version, peersFileVersion)
	}
	var out []Peer
	seen := map[ids.ID]bool{}
	for _, e := range pf.Peers {
		id, err := ids.Parse(e.ID)
		if err != nil || id.IsZero() || id == s.self || seen[id] || ring.ValidateAddr(e.Addr) != nil {
			continue
		}
		seen[id] = true
		out = append(out, Peer{ID: id, Addr: e.Addr})
		if len(out) == maxRememberedPeers {
			break
		}
	}
	return out, nil
}

// save replaces the file with peers. An empty list is not written: an isolated node keeps the
// memory of the ring it was in, which is exactly what it needs to find it again.
func (s *peerStore) save(peers []Peer, now time.Time) error {
	if len(peers) == 0 {
		return nil
	}
	pf := peersFile{Version: peersFileVersion, NodeID: s.self.String(), Saved: now.UTC()}
	for _, p := range peers {
		pf.Peers = append(pf.Peers, peerEntry{ID: p.ID.String(), Addr: p.Addr})
	}
	data, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return err
	}
	diskstat.Peers.Rewrite(len(data)+1, 2) // the file, then its directory
	return writeFileAtomic(s.path, append(data, '\n'), 0o600)
}

// writeFileAtomic writes data to a temporary file in path's directory, fsyncs it, renames it over
// path and fsyncs the directory, so that readers see the old or the new content, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		return err
	}
	return nil
}

// snapshotPeers lists the leaf set, then routing-table entries, up to the bound.
func snapshotPeers(drv *pastry.Driver) []Peer {
	var out []Peer
	seen := map[ids.ID]bool{}
	addH := func(h pastry.Handle) {
		if len(out) < maxRememberedPeers && h.Addr != "" && !h.ID.IsZero() && !seen[h.ID] {
			seen[h.ID] = true
			out = append(out, Peer{ID: h.ID, Addr: h.Addr})
		}
	}
	drv.With(func(n *pastry.Node) {
		for _, h := range n.LeafMembers() {
			addH(h)
		}
		t := n.Table()
		for r := 0; r < t.Rows(); r++ {
			for _, h := range t.Row(r) {
				addH(h)
			}
		}
	})
	return out
}

func (n *Node) savePeers(drv *pastry.Driver) {
	peers := snapshotPeers(drv)
	if err := n.peers.save(peers, time.Now()); err != nil {
		n.log.Warn("could not remember peers (a restart then depends on the bootstrap nodes): "+err.Error(), "file", n.peers.path)
		return
	}
	n.log.Debug("remembered peers saved", "count", len(peers))
}

// savePeersLoop rewrites peers.json after leaf-set changes, at most once per Timers.PeersSave,
// so that churn does not turn into a stream of fsyncs.
func (n *Node) savePeersLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.timers.PeersSave)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.leafDirty.Swap(false) {
			continue
		}
		n.mu.Lock()
		drv := n.drv
		n.mu.Unlock()
		if drv != nil {
			n.savePeers(drv)
		}
	}
}
