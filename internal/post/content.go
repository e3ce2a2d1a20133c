package post

import (
	"fmt"
	"sync"

	"epost/internal/content"
	"epost/internal/ids"
	"epost/internal/past"
)

// Put stores data in the ring's content store: cut into chunks of at most ChunkSize bytes,
// each encrypted with keyed convergent encryption (package content) and inserted as a PAST
// content object at the hash of its ciphertext. A chunk the ring already holds is not sent
// again: its lease is extended (InsertDedupe), so identical parts are stored once per ring.
// cb gets the reference (which holds the keys: keep it secret) once every chunk is stored.
func (n *Node) Put(data []byte, cb func(content.Ref, error)) { n.put(data, nil, cb) }

// Seal encrypts data as Put does and returns its reference at once; store inserts its chunks
// and tells cb the outcome as Put would. A caller can write what names the reference while
// the chunks are being stored, and must not report either durable before both are.
func (n *Node) Seal(data []byte) (content.Ref, func(cb func(error)), error) { return n.seal(data, nil) }

// seal is Seal; keep, if set, hears of every chunk object once it is stored.
func (n *Node) seal(data []byte, keep func(past.Object)) (content.Ref, func(cb func(error)), error) {
	chunks, ref, err := content.EncryptChunked(n.cfg.Secret, n.cfg.Ring, data, n.cfg.ChunkSize)
	if err != nil {
		return content.Ref{}, nil, err
	}
	return ref, func(cb func(error)) { n.storeChunks(chunks, keep, cb) }, nil
}

// put is Put; keep, if set, hears of every chunk object once it is stored.
func (n *Node) put(data []byte, keep func(past.Object), cb func(content.Ref, error)) {
	chunks, ref, err := content.EncryptChunked(n.cfg.Secret, n.cfg.Ring, data, n.cfg.ChunkSize)
	if err != nil {
		cb(content.Ref{}, err)
		return
	}
	n.storeChunks(chunks, keep, func(err error) {
		if err != nil {
			cb(content.Ref{}, err)
			return
		}
		cb(ref, nil)
	})
}

// storeChunks inserts a payload's sealed chunks (content.EncryptChunked) as content objects;
// keep, if set, hears of every chunk object once it is stored; cb hears the first error, or
// nil once every chunk is quorum-stored.
func (n *Node) storeChunks(chunks []content.Chunk, keep func(past.Object), cb func(error)) {
	lease := n.now().Add(n.cfg.ContentLease)
	var mu sync.Mutex
	var first error
	j := newJoin(len(chunks), func() { cb(first) })
	for _, c := range chunks {
		obj := past.NewContent(n.cfg.Ring, c.Ciphertext, lease)
		n.st.InsertDedupe(obj, func(r past.InsertResult) {
			if r.Err == nil && keep != nil {
				keep(obj)
			}
			n.mu.Lock()
			if r.Err != nil {
				n.stats.ChunksPutFailed++
			} else {
				n.stats.ChunksPut++
			}
			n.mu.Unlock()
			if r.Err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("post put: %w", r.Err)
				}
				mu.Unlock()
			}
			j.one()
		})
	}
}

// Get fetches, decrypts and verifies (every chunk and the whole) the payload ref names.
func (n *Node) Get(ref content.Ref, cb func([]byte, error)) { n.get(ref, &n.cfg.Secret, cb) }

// GetForeign is Get for the parts of a message from another ring (Filed.Foreign): they were
// sealed with that ring's secret, so only the key commitment is checked, not convergence.
func (n *Node) GetForeign(ref content.Ref, cb func([]byte, error)) { n.get(ref, nil, cb) }

func (n *Node) get(ref content.Ref, secret *content.Secret, cb func([]byte, error)) {
	if err := ref.Validate(); err != nil {
		cb(nil, err)
		return
	}
	var mu sync.Mutex
	got := make(map[ids.Key][]byte, len(ref.Chunks))
	errs := make(map[ids.Key]error)
	j := newJoin(len(ref.Chunks), func() {
		data, err := content.Assemble(secret, ref, func(k ids.Key) ([]byte, error) {
			if e := errs[k]; e != nil {
				return nil, e
			}
			return got[k], nil
		})
		cb(data, err)
	})
	for _, e := range ref.Chunks {
		if p, ok := n.carriedPayload(e.Location); ok { // filed here, not yet stored
			mu.Lock()
			got[e.Location] = p
			mu.Unlock()
			j.one()
			continue
		}
		if obj, ok := n.recentChunk(e.Location, false); ok {
			mu.Lock()
			got[e.Location] = obj.Payload
			mu.Unlock()
			j.one()
			continue
		}
		n.lookup(e.Location, func(obj past.Object, err error) {
			if err == nil {
				n.rememberFetched(obj) // the archive reads it next (fetched.go)
			}
			mu.Lock()
			if err != nil {
				errs[e.Location] = err
			} else {
				got[e.Location] = obj.Payload
			}
			mu.Unlock()
			j.one()
		})
	}
}

// refKeys lists the locations of a ref's chunks.
func refKeys(ref content.Ref) []ids.Key {
	out := make([]ids.Key, 0, len(ref.Chunks))
	for _, e := range ref.Chunks {
		out = append(out, e.Location)
	}
	return out
}
