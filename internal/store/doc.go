// Package store is each ePOST node's durable local object store: the disk under PAST.
//
// An object is a ring-qualified key (ids.Key), an opaque type byte, a payload of at most
// Options.MaxPayload bytes, a lease expiry, a sequence number and a small opaque metadata blob
// (Aux). The store keeps objects; it never judges them. Content-hash checks, owner signatures and
// the rule "sequence numbers only grow" belong to the layer above, which enforces the last one
// race-free through a Precondition that runs inside the store's write transaction (SeqGreater).
//
// # Layout on disk
//
//	DIR/index.db      bbolt B+tree: index, metadata, reference counts, small payloads
//	DIR/index.journal changes committed since index.db's last checkpoint (journal.go), and
//	                  the payloads of at least Options.ValueLogMin bytes they put
//	DIR/index.journal.prev the changes a background checkpoint is writing into index.db
//	DIR/values/EPOCH  retired journal files whose payloads are still live (values.go)
//	DIR/blobs/HASH    payloads above Options.InlineMax, named by the hex SHA-256 of their bytes
//	DIR/tmp/          files being written; anything here at Open is debris of a crash
//
// Payloads are content-addressed in both places, so identical payloads are stored once and
// carry a reference count; a payload file is removed when no live or trashed object refers to it.
//
// # Durability
//
// Every mutating method returns only after its change is on disk. A large payload is written to
// DIR/tmp, fsynced, renamed into DIR/blobs and the directory fsynced before the index transaction
// that refers to it commits. An index commit is one record appended to the journal and
// fdatasynced, with the bytes of the payloads it puts into the value log; checkpoints move the
// journaled changes, but not those bytes, into index.db with bbolt's own synced commit
// (journal.go, values.go). A crash can therefore leave only debris that no index entry refers to: temporary files and orphan payload files, which Open
// removes. Open also reports (Store.Repairs) index entries whose payload is missing or damaged
// instead of hiding them, and Get verifies the payload hash on every read (ErrCorrupt).
//
// # Concurrency
//
// A Store is safe for concurrent use by any number of goroutines. Reads (Get, Has, Meta, Range,
// Summarize, Stats) see the journaled changes over a bbolt snapshot and wait only for the
// moment a commit joins them. Writes go through
// a group commit (commit.go): writes that arrive while a commit is in progress share the next
// transaction and its fsync, and a failing write is retried alone so it cannot spoil the others.
// Large payload files are written and fsynced before the index transaction begins, so
// concurrent writers overlap their file I/O too. PutBatch commits many objects with one index
// fsync and writes their payload files in parallel; prefer it when writes can be grouped.
//
// Two rules for callers:
//   - A Precondition runs inside the write transaction. It must be fast and must not call the
//     Store (that would deadlock). It may run more than once for one call.
//   - Iterators (Range, Expired) read in chunks, each in its own short transaction, so the loop
//     body may call any Store method, including writes. The price is that an iteration is not a
//     snapshot: keys written or removed meanwhile may or may not be seen, but no key is seen twice
//     and keys arrive in clockwise order.
//
// Only one process may open a directory at a time (bbolt holds an exclusive file lock).
//
// The store never reads the wall clock on its own: times come in as arguments, or from
// Options.Now, which defaults to time.Now.
package store
