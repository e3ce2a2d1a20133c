package multiring

import (
	"fmt"
	"sync"
	"time"

	"epost/internal/ids"
)

// Payloads larger than one overlay message (a hand-off of a message with big attachments, to
// a gateway of the ring or between gateways) travel in parts of partSize: the sender keeps at
// most partWindow parts unacknowledged (the transport's queue per peer holds 8 MiB), the
// receiver acknowledges each part with how many it has and assembles them in memory, bounded
// per node (assemblyBudget) and in time (assemblyTTL), then handles the whole payload as if it
// had come in one message. Every acknowledgement shows the receiver alive, so the sender's
// receipt and answer timeouts start again from it: a long transfer is not mistaken for a dead
// gateway.

const (
	partSize       = 1 << 20
	partWindow     = 4
	MaxLarge       = 64 << 20 // the largest payload sent in parts
	assemblyTTL    = 2 * time.Minute
	assemblyBudget = 256 << 20
)

// partSender sends one payload's parts.
type partSender struct {
	mu    sync.Mutex
	data  []byte
	n     int // parts
	next  int // the next part to send
	acked int // parts the receiver has
	send  func(idx, n int, piece []byte)
}

func newPartSender(data []byte, send func(idx, n int, piece []byte)) *partSender {
	return &partSender{data: data, n: (len(data) + partSize - 1) / partSize, send: send}
}

func (s *partSender) piece(i int) []byte {
	return s.data[i*partSize : min((i+1)*partSize, len(s.data))]
}

// start sends the first window.
func (s *partSender) start() { s.ack(0) }

// ack records that the receiver has `have` parts and sends what the window allows.
func (s *partSender) ack(have int) {
	s.mu.Lock()
	if have > s.acked {
		s.acked = min(have, s.n)
	}
	var todo []int
	for s.next < s.n && s.next < s.acked+partWindow {
		todo = append(todo, s.next)
		s.next++
	}
	s.mu.Unlock()
	for _, i := range todo {
		s.send(i, s.n, s.piece(i))
	}
}

type asmKey struct {
	from ids.ID
	id   string
}

type assembly struct {
	total   int
	parts   [][]byte
	have    int
	started time.Time
}

// assembler puts incoming parts together.
type assembler struct {
	mu    sync.Mutex
	m     map[asmKey]*assembly
	bytes int
}

// add files part idx of n (of a payload of total bytes) from `from` for transfer id. It
// returns how many parts of it are here, and the whole payload once the last came.
func (a *assembler) add(from ids.ID, id string, total, idx, n int, piece []byte, now time.Time) (have int, whole []byte, err error) {
	if total <= 0 || total > MaxLarge || n != (total+partSize-1)/partSize || idx < 0 || idx >= n ||
		len(piece) != min(partSize, total-idx*partSize) {
		return 0, nil, fmt.Errorf("multiring: part %d/%d of %d bytes malformed", idx, n, total)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[asmKey]*assembly{}
	}
	for k, as := range a.m { // forget transfers that stalled
		if now.Sub(as.started) > assemblyTTL {
			a.bytes -= as.total
			delete(a.m, k)
		}
	}
	k := asmKey{from, id}
	as := a.m[k]
	if as == nil || as.total != total || len(as.parts) != n {
		if as != nil {
			a.bytes -= as.total
		}
		if a.bytes+total > assemblyBudget {
			return 0, nil, fmt.Errorf("multiring: %d bytes of transfers under way, no room for %d more", a.bytes, total)
		}
		as = &assembly{total: total, parts: make([][]byte, n), started: now}
		a.m[k] = as
		a.bytes += total
	}
	if as.parts[idx] == nil {
		as.parts[idx] = append([]byte(nil), piece...)
		as.have++
	}
	if as.have < n {
		return as.have, nil, nil
	}
	whole = make([]byte, 0, total)
	for _, p := range as.parts {
		whole = append(whole, p...)
	}
	delete(a.m, k)
	a.bytes -= total
	return n, whole, nil
}
