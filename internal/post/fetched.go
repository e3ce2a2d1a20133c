package post

import (
	"time"

	"epost/internal/ids"
	"epost/internal/past"
)

// Chunks fetched lately. A recipient's node reads a delivered message's parts from the ring
// twice: the mail store's prefetch right after the filing (IMAP clients ask for the envelope
// as soon as IDLE wakes them), and the archive once the INBOX head names the message
// (keepKeys: the chunks go into the user's Glacier aggregate). Both want the same immutable,
// validated bytes, a fraction of a second apart, and the second lookup cost a second transfer
// of the chunk from a replica (50 KB read, encoded, sent over TLS, decoded and hashed again).
// So the node keeps content chunks it fetched for fetchedTTL, at most fetchedMaxBytes of them,
// oldest dropped first, and the archive takes its copy from there.
//
// Only content objects are kept: their key is the hash of their bytes, which the lookup
// checked, so a kept chunk is exactly what another lookup would return.

const (
	fetchedTTL      = 30 * time.Second
	fetchedMaxBytes = 16 << 20
)

// fetchedChunks is guarded by the node's mutex.
type fetchedChunks struct {
	m     map[ids.Key]fetchedChunk
	order []ids.Key // oldest first; may name keys dropped since (taken, or replaced)
	bytes int
}

type fetchedChunk struct {
	obj past.Object
	at  time.Time
}

// rememberFetched keeps obj, a content object a lookup returned, for the next reader.
func (n *Node) rememberFetched(obj past.Object) {
	if past.Type(obj.Type) != past.TypeContent || len(obj.Payload) > fetchedMaxBytes {
		return
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	f := &n.fetched
	if f.m == nil {
		f.m = map[ids.Key]fetchedChunk{}
	}
	if old, ok := f.m[obj.Key]; ok {
		f.bytes -= len(old.obj.Payload)
	} else {
		f.order = append(f.order, obj.Key)
	}
	f.m[obj.Key] = fetchedChunk{obj: obj, at: now}
	f.bytes += len(obj.Payload)
	f.trim(now)
}

// recentChunk returns the content object at key if it was fetched within fetchedTTL; take
// also forgets it (its last reader).
func (n *Node) recentChunk(key ids.Key, take bool) (past.Object, bool) {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	f := &n.fetched
	f.trim(now)
	c, ok := f.m[key]
	if !ok {
		return past.Object{}, false
	}
	if take {
		delete(f.m, key)
		f.bytes -= len(c.obj.Payload)
	}
	n.stats.ChunkFetchesSaved++
	return c.obj, true
}

// trim drops chunks older than fetchedTTL, and the oldest ones while over fetchedMaxBytes.
func (f *fetchedChunks) trim(now time.Time) {
	i := 0
	for ; i < len(f.order); i++ {
		k := f.order[i]
		c, ok := f.m[k]
		if !ok {
			continue // taken or dropped already
		}
		if f.bytes <= fetchedMaxBytes && now.Sub(c.at) < fetchedTTL {
			break
		}
		delete(f.m, k)
		f.bytes -= len(c.obj.Payload)
	}
	f.order = f.order[i:]
	if len(f.m) == 0 {
		f.order, f.bytes = nil, 0
	}
}
