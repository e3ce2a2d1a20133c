package store

import (
	"log/slog"
	"time"
)

// Defaults for Options fields left zero.
const (
	DefaultInlineMax   = 128 << 10          // payloads up to this size live inside the index
	DefaultMaxPayload  = 1<<20 + 64<<10     // POST chunks are at most 1 MiB; the rest is header slack
	DefaultMaxAux      = 4 << 10            // Aux is for small per-object metadata, not data
	DefaultTrashGrace  = 7 * 24 * time.Hour // long enough to undo a wrong expiry over a weekend
	DefaultLockTimeout = 2 * time.Second

	// A checkpoint writes each index page its keys fall on. Keys are hashes, so once the index
	// has more leaves than a checkpoint has keys, every key costs a whole page; larger
	// checkpoints share pages between more keys (at 8 MiB and one minute, a node holding
	// 30,000 objects wrote about 40 KB of index per 2 KB message in checkpoints, three times
	// its journal). An index larger than this raises the limit to its own size, up to 4 times
	// this (checkpointLimit).
	DefaultCheckpointBytes = 32 << 20 // the overlay's keys and values (journal.go)
	DefaultCheckpointAge   = 10 * time.Minute

	// initialMmap is index.db's first mapping: address space only, read-only and shared, so
	// it costs no memory, and files below it are never remapped.
	initialMmap = 1 << 30
)

// Options tune a Store. The zero value is usable: every zero field takes its default.
type Options struct {
	// InlineMax is the largest payload kept inside the index; larger ones go to files.
	// Small payloads are cheaper in the B+tree (no extra fsyncs); large ones would bloat it.
	InlineMax int
	// ValueLogMin is the smallest payload (up to InlineMax) written once into the journal
	// and read from there, instead of being copied into index.db by the next checkpoint
	// (values.go). 0 means DefaultValueLogMin; negative keeps every such payload in the index.
	ValueLogMin int
	// MaxPayload is the largest payload Put accepts (ErrTooLarge above it).
	MaxPayload int
	// MaxAux is the largest Aux blob Put accepts (ErrTooLarge above it).
	MaxAux int
	// TrashGrace is how long deleted and expired objects stay restorable before PurgeTrash
	// removes them for good.
	TrashGrace time.Duration
	// Now is the clock used to stamp objects moved to the trash by Delete. Default time.Now.
	Now func() time.Time
	// VerifyPayloads makes Open read and hash every payload file (slow on big stores); without
	// it Open checks only that each file exists and has the right size.
	VerifyPayloads bool
	// LockTimeout bounds the wait for another process's lock on the directory.
	LockTimeout time.Duration
	// CheckpointBytes and CheckpointAge bound the committed changes held in memory and in the
	// journal before a checkpoint writes them into index.db (journal.go): the larger, the fewer
	// bbolt commits and the longer a replay at Open. An index.db larger than CheckpointBytes
	// raises the limit to its own size, up to 4 × CheckpointBytes (checkpointLimit).
	CheckpointBytes int
	CheckpointAge   time.Duration
	// Logger receives repair findings at Open. Default: slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.InlineMax <= 0 {
		o.InlineMax = DefaultInlineMax
	}
	if o.ValueLogMin == 0 {
		o.ValueLogMin = DefaultValueLogMin
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.MaxAux <= 0 {
		o.MaxAux = DefaultMaxAux
	}
	if o.TrashGrace <= 0 {
		o.TrashGrace = DefaultTrashGrace
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.CheckpointBytes <= 0 {
		o.CheckpointBytes = DefaultCheckpointBytes
	}
	if o.CheckpointAge <= 0 {
		o.CheckpointAge = DefaultCheckpointAge
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
