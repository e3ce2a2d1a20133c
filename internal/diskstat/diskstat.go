// Package diskstat counts, per storage layer, the fsyncs, the bytes written and the files
// rewritten whole by this process, so that a benchmark can say where the disk cost of a message
// goes (issue 12). The counters are process-wide: a node is one process, and "epost demo" runs
// all its nodes in one process, whose counters are then the sum over its nodes.
//
// Every durable write site adds to its layer's counter in one line. The package must never
// depend on other epost packages (every storage package imports it) and must stay cheap: a few
// atomic adds per write.
package diskstat

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Layer is one storage layer's counters.
type Layer struct {
	name     string
	fsyncs   atomic.Int64
	bytes    atomic.Int64
	rewrites atomic.Int64
}

// The layers. Names are the keys of Snapshot and of "epost status --json".
var (
	// StoreIndex: the index of the node's object store (PAST replicas): one journal record
	// and fdatasync per group of writes (index.journal), one bbolt commit per checkpoint
	// (index.db). StoreBlobs: its payload files above the inline limit and the fsyncs
	// of their directory.
	StoreIndex = newLayer("store_index")
	StoreBlobs = newLayer("store_blobs")
	// Glacier: glacier.db, the fragments this node holds for the ring.
	Glacier = newLayer("glacier")
	// PostJournal: each user's received.journal (notifications filed but not yet in INBOX).
	PostJournal = newLayer("post_journal")
	// PostHeads: heads.log, the last head each local log writer wrote.
	PostHeads = newLayer("post_heads")
	// PostArchive: each user's archive.state (the Glacier archive's tables of contents).
	PostArchive = newLayer("post_archive")
	// MailCache: each user's encrypted local mail cache (mail.cache).
	MailCache = newLayer("mail_cache")
	// Outbox: the SMTP outbox of mail for other rings and the internet.
	Outbox = newLayer("outbox")
	// Peers: peers.json, the remembered peers.
	Peers = newLayer("peers")
)

var layers []*Layer

func newLayer(name string) *Layer {
	l := &Layer{name: name}
	layers = append(layers, l)
	return l
}

// Sync counts one fsync that made n bytes durable (n = 0 for a directory).
func (l *Layer) Sync(n int) {
	l.fsyncs.Add(1)
	l.bytes.Add(int64(n))
}

// Write counts n bytes written without an fsync of their own.
func (l *Layer) Write(n int) { l.bytes.Add(int64(n)) }

// Rewrite counts a file of n bytes replaced whole, with the fsyncs that took.
func (l *Layer) Rewrite(n, fsyncs int) {
	l.rewrites.Add(1)
	l.fsyncs.Add(int64(fsyncs))
	l.bytes.Add(int64(n))
}

// BoltCommit counts tx's commit once it happens (call it inside a bbolt Update): two
// fdatasyncs (dirty pages, then the meta page) and the pages written, the meta page included.
// bbolt's occasional fsync when it grows the file is not counted.
func (l *Layer) BoltCommit(tx *bolt.Tx) {
	meta := int64(tx.DB().Info().PageSize)
	tx.OnCommit(func() {
		st := tx.Stats()
		l.fsyncs.Add(2)
		l.bytes.Add(st.GetPageAlloc() + meta)
	})
}

// Counts are one layer's totals since the process started.
type Counts struct {
	Fsyncs   int64 `json:"fsyncs"`
	Bytes    int64 `json:"bytes"`
	Rewrites int64 `json:"rewrites"` // whole-file replacements
}

// Snapshot returns every layer's totals by name.
func Snapshot() map[string]Counts {
	m := make(map[string]Counts, len(layers))
	for _, l := range layers {
		m[l.name] = Counts{Fsyncs: l.fsyncs.Load(), Bytes: l.bytes.Load(), Rewrites: l.rewrites.Load()}
	}
	return m
}

// ProcIO is the kernel's I/O accounting of this process (/proc/self/io, Linux only): WriteBytes
// are bytes the process caused to be sent to the storage layer, Syscw its write system calls,
// Wchar the bytes it passed to them (page cache included).
type ProcIO struct {
	WriteBytes int64 `json:"write_bytes"`
	Syscw      int64 `json:"syscw"`
	Wchar      int64 `json:"wchar"`
}

// ReadProcIO reads /proc/self/io; ok is false where it does not exist.
func ReadProcIO() (p ProcIO, ok bool) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return ProcIO{}, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, found := bytes.Cut(sc.Bytes(), []byte(": "))
		if !found {
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "write_bytes":
			p.WriteBytes = n
		case "syscw":
			p.Syscw = n
		case "wchar":
			p.Wchar = n
		}
	}
	return p, true
}
