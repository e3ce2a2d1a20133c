package store

import "errors"

// Sentinel errors. Methods wrap them with the key and the cause; test with errors.Is.
var (
	// ErrNotFound: no live object (or, for Restore, no trashed object) has the key.
	ErrNotFound = errors.New("store: object not found")
	// ErrTooLarge: the payload or the Aux blob exceeds the configured maximum.
	ErrTooLarge = errors.New("store: object too large")
	// ErrCorrupt: a stored payload is missing or does not hash to the hash recorded for it.
	// The object's metadata is still in the index; the layer above should fetch a good copy
	// from another replica and Put it again, which heals the store.
	ErrCorrupt = errors.New("store: payload corrupt")
	// ErrPrecondition: a Precondition refused the write (for example a stale sequence number),
	// or Restore found a live object in the way.
	ErrPrecondition = errors.New("store: precondition failed")
	// ErrClosed: the Store has been closed.
	ErrClosed = errors.New("store: closed")
)
