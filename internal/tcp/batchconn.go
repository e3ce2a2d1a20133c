package tcp

import (
	"bufio"
	"net"
	"sync"
)

// batchConn is the TCP connection under TLS. crypto/tls writes every record (at most 16 KiB)
// with a write call of its own, so a 64 KB Glacier fragment took four or five system calls and
// as many wake-ups of the peer's reader. While the writer hands TLS a batch of frames
// (conn.writeBatch), batchConn gathers the records in a buffer and writes them with one call
// when the batch ends, or whenever the buffer fills; at all other times (the handshake, an
// alert, a key update the reader answers) writes go straight through. Reads go through a
// buffer too: TLS reads a record at a time, and one read call takes what has arrived.
type batchConn struct {
	net.Conn
	r        *bufio.Reader // only TLS's reader reads
	mu       sync.Mutex    // writes and flushes: TLS's reader and writer may both write
	w        *bufio.Writer
	batching bool
}

// batchBytes bounds the bytes gathered before a write call; readBytes those one read takes.
const (
	batchBytes = 256 << 10
	readBytes  = 64 << 10
)

func newBatchConn(nc net.Conn) *batchConn {
	return &batchConn{Conn: nc, r: bufio.NewReaderSize(nc, readBytes), w: bufio.NewWriterSize(nc, batchBytes)}
}

func (b *batchConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching {
		if b.w.Buffered() > 0 {
			if err := b.w.Flush(); err != nil {
				return 0, err
			}
		}
		return b.Conn.Write(p)
	}
	return b.w.Write(p)
}

// begin gathers writes until end.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// end writes what was gathered and goes back to writing straight through.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	return b.w.Flush()
}
