package tcp

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Reasons a connection is closed by this side.
var (
	errConnClosed = errors.New("tcp: connection closed")
	errIdle       = errors.New("tcp: idle timeout")
	errReplaced   = errors.New("tcp: replaced by a newer connection from the peer")
)

// conn is one TLS connection to an authenticated peer (or, for an outbound connection still
// dialing, to the peer we expect). Its send queue exists from creation, so Send can queue while
// the dial is in progress; the writer drains it once the connection is up.
type conn struct {
	t        *Transport
	peer     ids.ID // expected (outbound, checked in the handshake) or authenticated (inbound)
	addr     string // dialed address (outbound) or remote socket address (inbound), for logs
	outbound bool

	// established is guarded by t.mu: true once reader and writer run.
	established bool

	// Clock times (UnixNano) of the last frame written and the last data frame either way.
	lastSend atomic.Int64
	lastData atomic.Int64

	wake chan struct{} // capacity 1: "the queue may be non-empty"
	done chan struct{} // closed by close
	once sync.Once

	mu     sync.Mutex
	closed bool
	nc     net.Conn // the TLS connection: reader and writer use it
	// raw is the TCP connection under nc; close closes it rather than nc, because tls.Conn.Close
	// sends close_notify and can block for seconds on a peer that does not read.
	raw net.Conn
	bc  *batchConn // raw, gathering TLS's records during writeBatch
	// advertised is the listening address from the peer's hello (From.Addr); set with nc.
	advertised string
	queue      []outFrame
	qBytes     int // bytes in queue plus the batch the writer is writing
	qFrames    int
	keepalive  bool // the maintenance run asked for a keepalive
}

func newConn(t *Transport, peer ids.ID, addr string, outbound bool) *conn {
	return &conn{
		t:        t,
		peer:     peer,
		addr:     addr,
		outbound: outbound,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// enqueue adds a frame to the send queue, or reports transport.ErrBackpressure when the queue is
// at its bound. Bytes count until the writer has handed the frame to TLS, so the memory held for
// a peer that does not read is bounded by QueueBytes (plus one frame).
func (c *conn) enqueue(frame outFrame) error {
	cfg := &c.t.cfg
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errConnClosed
	}
	if c.qFrames >= cfg.QueueFrames || (c.qFrames > 0 && c.qBytes+frame.len() > cfg.QueueBytes) {
		c.mu.Unlock()
		return transport.ErrBackpressure
	}
	c.queue = append(c.queue, frame)
	c.qFrames++
	c.qBytes += frame.len()
	c.mu.Unlock()
	c.wakeWriter()
	return nil
}

func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) requestKeepalive() {
	c.mu.Lock()
	c.keepalive = true
	c.mu.Unlock()
	c.wakeWriter()
}

// close closes the connection once, drops its queue, and removes it from the pool. Safe from any
// goroutine; the reader and writer notice through the closed socket and done.
func (c *conn) close(reason error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		raw := c.raw
		dropped := len(c.queue)
		c.queue = nil
		c.mu.Unlock()
		close(c.done)
		if raw != nil {
			raw.Close()
		}
		if dropped > 0 {
			c.t.st.droppedUnsent.Add(uint64(dropped))
		}
		if c.t.forget(c) {
			c.t.st.connsOpen.Add(-1)
			c.t.log.Debug("tcp: connection down", "peer", c.peer.Short(), "addr", c.addr,
				"outbound", c.outbound, "reason", reason.Error(), "dropped_frames", dropped)
		}
	})
}

// readLoop reads frames until the connection fails. Each frame must arrive completely within
// ReadTimeout; healthy idle peers send keepalives well within it.
func (c *conn) readLoop(br *bufio.Reader) {
	defer c.t.wg.Done()
	t := c.t
	from := transport.From{ID: c.peer, Addr: c.advertised} // set before this goroutine started
	var hdr [headerLen]byte
	for {
		if err := c.nc.SetReadDeadline(time.Now().Add(t.cfg.ReadTimeout)); err != nil {
			c.readFailed(err)
			return
		}
		kind, p, err := readFrame(br, &hdr, t.cfg.MaxFrame)
		if err != nil {
			c.readFailed(err)
			return
		}
		switch kind {
		case kindData:
			t.st.framesIn.Add(1)
			t.st.bytesIn.Add(uint64(len(p)))
			c.lastData.Store(t.clock.Now().UnixNano())
			t.deliver(from, p)
		case kindKeepalive:
		default:
			c.readFailed(ErrBadFrame) // a second hello
			return
		}
	}
}

// readFailed closes the connection and logs why, at a level that matches who is at fault.
func (c *conn) readFailed(err error) {
	c.mu.Lock()
	byUs := c.closed
	c.mu.Unlock()
	defer c.close(err)
	if byUs {
		return
	}
	log := c.t.log.With("peer", c.peer.Short(), "addr", c.addr)
	var tooLong *FrameSizeError
	var ne net.Error
	switch {
	case errors.As(err, &tooLong):
		c.t.st.framesTooLong.Add(1)
		log.Warn("tcp: frame over the size limit, closing connection", "size", tooLong.Size, "max", tooLong.Max)
		c.t.badFrame(c.peer, err)
	case errors.As(err, &ne) && ne.Timeout():
		log.Warn("tcp: read timeout, closing connection (dead or stalled peer)", "timeout", c.t.cfg.ReadTimeout)
	case errors.Is(err, io.EOF):
		log.Debug("tcp: peer closed the connection")
	case errors.Is(err, ErrBadFrame):
		c.t.st.protocolErrors.Add(1)
		log.Warn("tcp: protocol error, closing connection", "err", err)
		c.t.badFrame(c.peer, err)
	default:
		log.Info("tcp: connection failed", "err", err)
	}
}

// writeLoop drains the send queue in batches: frames go through one buffered writer and are
// flushed when the queue is empty, so small frames share TLS records.
func (c *conn) writeLoop(bw *bufio.Writer) {
	defer c.t.wg.Done()
	t := c.t
	var batch []outFrame
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			c.mu.Lock()
			batch, c.queue = c.queue, batch[:0]
			ka := c.keepalive
			c.keepalive = false
			c.mu.Unlock()
			if len(batch) == 0 && !ka {
				break
			}
			if err := c.writeBatch(bw, batch, ka); err != nil {
				c.mu.Lock()
				byUs := c.closed
				c.mu.Unlock()
				if !byUs {
					t.log.Warn("tcp: write failed, closing connection", "peer", c.peer.Short(), "addr", c.addr, "err", err)
				}
				c.close(err)
				return
			}
			for i := range batch {
				batch[i] = outFrame{} // let the frames be collected
			}
		}
	}
}

func (c *conn) writeBatch(bw *bufio.Writer, batch []outFrame, keepalive bool) error {
	t := c.t
	var bytes int
	c.bc.begin() // one write call for the batch's TLS records (batchconn.go)
	defer c.bc.end()
	for _, f := range batch {
		if err := c.nc.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
			return err
		}
		if err := writeFrameParts(bw, kindData, f.head, f.tail); err != nil {
			return err
		}
		bytes += f.len()
	}
	if keepalive && len(batch) == 0 {
		if err := c.nc.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
			return err
		}
		if err := writeFrame(bw, kindKeepalive, nil); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := c.bc.end(); err != nil {
		return err
	}
	c.mu.Lock()
	c.qFrames -= len(batch)
	c.qBytes -= bytes
	c.mu.Unlock()
	now := t.clock.Now().UnixNano()
	c.lastSend.Store(now)
	if len(batch) > 0 {
		c.lastData.Store(now)
		t.st.framesOut.Add(uint64(len(batch)))
		t.st.bytesOut.Add(uint64(bytes))
	}
	return nil
}
