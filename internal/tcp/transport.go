package tcp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Transport is a TLS 1.3 transport.Transport. Create it with New; it is safe for concurrent use.
type Transport struct {
	cfg   Config
	log   *slog.Logger
	clock transport.Clock
	tls   *tls.Config
	ln    net.Listener
	addr  string // advertised in hellos

	// ctx is cancelled by Close; it interrupts dials and handshakes.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// deliverMu makes Handler calls one at a time.
	deliverMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	pool     map[ids.ID]*conn        // the connection Send uses per peer
	all      map[*conn]struct{}      // every connection, dialing or established
	backoff  map[ids.ID]*dialBackoff // peers whose last dial failed
	inbound  int                     // accepted TCP connections still open
	maintain transport.Timer

	st counters
}

// dialBackoff remembers failed dials to one peer id.
type dialBackoff struct {
	failures int
	until    time.Time
}

var _ transport.Transport = (*Transport)(nil)

// New listens on cfg.ListenAddr and starts accepting connections.
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("tcp: listen on %q: %w", cfg.ListenAddr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.ID.Short()),
		clock:   cfg.Clock,
		tls:     baseTLS(cfg),
		ln:      ln,
		addr:    cfg.AdvertiseAddr,
		ctx:     ctx,
		cancel:  cancel,
		pool:    make(map[ids.ID]*conn),
		all:     make(map[*conn]struct{}),
		backoff: make(map[ids.ID]*dialBackoff),
	}
	if t.addr == "" {
		t.addr = ln.Addr().String()
	}
	t.mu.Lock()
	t.wg.Add(2) // acceptLoop and the first maintenance run
	t.maintain = t.clock.AfterFunc(t.maintainEvery(), t.runMaintenance)
	t.mu.Unlock()
	go t.acceptLoop()
	t.log.Info("tcp: listening", "addr", ln.Addr().String(), "advertise", t.addr)
	return t, nil
}

// LocalAddr is the advertised address.
func (t *Transport) LocalAddr() string { return t.addr }

// Send queues frame for the peer to at addr; see transport.Transport. It dials when no
// connection to `to` exists, and never blocks on the network.
func (t *Transport) Send(to ids.ID, addr string, frame []byte) error {
	return t.send(to, addr, outFrame{head: frame})
}

// SendParts implements transport.PartsSender: the frame is head followed by tail.
func (t *Transport) SendParts(to ids.ID, addr string, head, tail []byte) error {
	return t.send(to, addr, outFrame{head: head, tail: tail})
}

func (t *Transport) send(to ids.ID, addr string, frame outFrame) error {
	if frame.len() > t.cfg.MaxFrame {
		return fmt.Errorf("%w: %d bytes, limit %d", transport.ErrFrameTooLong, frame.len(), t.cfg.MaxFrame)
	}
	if to == t.cfg.ID {
		return fmt.Errorf("%w: %s is this node", transport.ErrUnreachable, to.Short())
	}
	// A connection can close between lookup and enqueue; the second round dials afresh.
	for range 2 {
		c, queued, err := t.connFor(to, addr, frame)
		if err != nil || queued {
			return err
		}
		err = c.enqueue(frame)
		if errors.Is(err, errConnClosed) {
			continue
		}
		if errors.Is(err, transport.ErrBackpressure) {
			t.st.droppedBackpressure.Add(1)
		}
		return err
	}
	return fmt.Errorf("%w: connection to %s keeps closing", transport.ErrUnreachable, to.Short())
}

// connFor returns the pooled connection to `to`. If there is none it starts a dial, with frame
// already queued (queued is true), so that a Send to a new peer is accepted even when the dial
// fails at once.
func (t *Transport) connFor(to ids.ID, addr string, frame outFrame) (c *conn, queued bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false, transport.ErrClosed
	}
	if c := t.pool[to]; c != nil {
		return c, false, nil
	}
	if addr == "" {
		return nil, false, fmt.Errorf("%w: no connection to %s and no address", transport.ErrUnreachable, to.Short())
	}
	if b := t.backoff[to]; b != nil && t.clock.Now().Before(b.until) {
		return nil, false, fmt.Errorf("%w: %s failed %d times, next dial in %v", transport.ErrUnreachable,
			to.Short(), b.failures, b.until.Sub(t.clock.Now()).Round(time.Millisecond))
	}
	c = newConn(t, to, addr, true)
	c.queue, c.qFrames, c.qBytes = append(c.queue, frame), 1, frame.len() // c is not shared yet
	t.pool[to] = c
	t.all[c] = struct{}{}
	t.wg.Add(1)
	go t.dial(c)
	return c, true, nil
}

// Close stops the listener, closes every connection and waits for all goroutines.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	if t.maintain != nil && t.maintain.Stop() {
		t.wg.Done() // the pending maintenance run will not happen
	}
	conns := make([]*conn, 0, len(t.all))
	for c := range t.all {
		conns = append(conns, c)
	}
	t.mu.Unlock()

	t.cancel()
	err := t.ln.Close()
	for _, c := range conns {
		c.close(transport.ErrClosed)
	}
	t.wg.Wait()
	t.log.Info("tcp: closed")
	return err
}

// acceptLoop accepts TCP connections and hands each to its own handshake goroutine.
func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait instead of spinning (as net/http does).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("tcp: accept failed", "err", err, "retry_in", delay)
			select {
			case <-t.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			nc.Close()
			return
		}
		if t.inbound >= t.cfg.MaxInbound {
			t.mu.Unlock()
			nc.Close()
			t.refused(nc.RemoteAddr(), fmt.Errorf("too many inbound connections (limit %d)", t.cfg.MaxInbound))
			continue
		}
		t.inbound++
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveInbound(nc)
	}
}

// serveInbound runs the server side of the handshake and hello exchange.
func (t *Transport) serveInbound(nc net.Conn) {
	defer t.wg.Done()
	var peer ids.ID
	bc := newBatchConn(nc)
	tc := tls.Server(bc, t.connTLS(nc.RemoteAddr().String(), nil, &peer))
	h, br, bw, err := t.handshake(nc, tc)
	if err != nil {
		nc.Close()
		t.mu.Lock()
		t.inbound--
		t.mu.Unlock()
		if t.ctx.Err() == nil {
			t.refused(nc.RemoteAddr(), err)
		}
		return
	}
	t.onPeer(peer, tc)
	c := newConn(t, peer, nc.RemoteAddr().String(), false)
	t.start(c, bc, tc, br, bw, h.addr)
}

// dial runs the client side for a pooled connection created by connFor.
func (t *Transport) dial(c *conn) {
	defer t.wg.Done()
	err := t.dialOnce(c)
	if err == nil {
		return
	}
	if t.ctx.Err() != nil {
		c.close(err)
		return
	}
	t.st.dialFailures.Add(1)
	t.mu.Lock()
	b := t.backoff[c.peer]
	if b == nil {
		b = &dialBackoff{}
		t.backoff[c.peer] = b
	}
	b.failures++
	wait := t.cfg.MaxBackoff
	if b.failures < 32 {
		wait = min(t.cfg.MinBackoff<<(b.failures-1), t.cfg.MaxBackoff)
	}
	b.until = t.clock.Now().Add(wait)
	t.mu.Unlock()
	c.close(err) // after the backoff entry, so a concurrent Send does not redial at once

	var mismatch *PeerMismatchError
	if errors.As(err, &mismatch) {
		t.st.peerMismatches.Add(1)
		t.log.Warn("tcp: someone else is at that address, closing",
			"peer", mismatch.Expected.Short(), "got", mismatch.Got.Short(), "addr", mismatch.Addr, "retry_in", wait)
		return
	}
	t.log.Warn("tcp: dial failed", "peer", c.peer.Short(), "addr", c.addr, "err", err, "retry_in", wait)
}

func (t *Transport) dialOnce(c *conn) error {
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	nc, err := d.DialContext(t.ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	var got ids.ID
	bc := newBatchConn(nc)
	tc := tls.Client(bc, t.connTLS(c.addr, &c.peer, &got))
	h, br, bw, err := t.handshake(nc, tc)
	if err != nil {
		nc.Close()
		return err
	}
	t.onPeer(got, tc)
	advertised := h.addr
	if advertised == "" {
		advertised = c.addr
	}
	if !t.start(c, bc, tc, br, bw, advertised) {
		return transport.ErrClosed
	}
	return nil
}

// handshake runs TLS and the hello exchange under one deadline. Close interrupts it by closing
// nc. Nothing larger than a hello is read before the peer is authenticated and its hello checked.
func (t *Transport) handshake(nc net.Conn, tc *tls.Conn) (hello, *bufio.Reader, *bufio.Writer, error) {
	stop := context.AfterFunc(t.ctx, func() { nc.Close() })
	defer stop()
	if err := nc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return hello{}, nil, nil, err
	}
	if err := tc.Handshake(); err != nil {
		return hello{}, nil, nil, fmt.Errorf("tls handshake: %w", err)
	}
	br := bufio.NewReaderSize(tc, 32<<10)
	bw := bufio.NewWriterSize(tc, 32<<10)
	if err := writeFrame(bw, kindHello, encodeHello(hello{version: protocolVersion, addr: t.addr})); err != nil {
		return hello{}, nil, nil, fmt.Errorf("send hello: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return hello{}, nil, nil, fmt.Errorf("send hello: %w", err)
	}
	var hdr [headerLen]byte
	kind, p, err := readFrame(br, &hdr, maxHelloPayload)
	if err != nil {
		return hello{}, nil, nil, fmt.Errorf("read hello: %w", err)
	}
	if kind != kindHello {
		return hello{}, nil, nil, fmt.Errorf("%w: frame kind %d before hello", ErrBadFrame, kind)
	}
	h, err := decodeHello(p)
	if err != nil {
		return hello{}, nil, nil, fmt.Errorf("read hello: %w", err)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return hello{}, nil, nil, err
	}
	return h, br, bw, nil
}

// refused logs a connection turned away before authentication completed, with the reason.
func (t *Transport) refused(remote net.Addr, reason error) {
	t.st.rejectedHandshakes.Add(1)
	if errors.Is(reason, ErrPeerBarred) {
		t.log.Debug("tcp: refused connection", "remote", remote.String(), "reason", reason.Error())
		return
	}
	t.log.Warn("tcp: refused connection", "remote", remote.String(), "reason", reason.Error())
}

// start registers an authenticated connection and starts its reader and writer; advertised is the
// address from the peer's hello, reported as From.Addr; raw is the TCP connection under tc. It
// reports false (and closes raw) if the transport or the connection was closed meanwhile.
func (t *Transport) start(c *conn, bc *batchConn, tc *tls.Conn, br *bufio.Reader, bw *bufio.Writer, advertised string) bool {
	raw := bc.Conn
	now := t.clock.Now().UnixNano()
	c.lastData.Store(now)
	c.lastSend.Store(now)

	t.mu.Lock()
	c.mu.Lock()
	if t.closed || c.closed {
		// Closed meanwhile: close() saw no socket, so closing it is ours to do.
		c.mu.Unlock()
		t.mu.Unlock()
		raw.Close()
		c.close(transport.ErrClosed)
		return false
	}
	c.nc = tc
	c.raw = raw
	c.bc = bc
	c.advertised = advertised
	c.mu.Unlock()
	var replaced *conn
	if !c.outbound {
		// A newer inbound connection from the peer replaces an older inbound one: the peer
		// only dials when it has given up on the old one. Our own dial (done or pending) wins
		// over the peer's, so that frames already queued on it keep their order.
		if old := t.pool[c.peer]; old == nil || !old.outbound {
			t.pool[c.peer] = c
			replaced = old
		}
	}
	delete(t.backoff, c.peer)
	t.all[c] = struct{}{}
	c.established = true
	t.st.connsOpen.Add(1) // under t.mu, so that close's decrement cannot come first
	t.wg.Add(2)
	t.mu.Unlock()

	if c.outbound {
		t.st.connsOutbound.Add(1)
	} else {
		t.st.connsInbound.Add(1)
	}
	t.log.Debug("tcp: connection up", "peer", c.peer.Short(), "addr", c.addr, "advertised", advertised, "outbound", c.outbound)
	if replaced != nil {
		replaced.close(errReplaced)
	}
	go c.readLoop(br)
	go c.writeLoop(bw)
	c.wakeWriter() // frames queued while dialing
	return true
}

// forget removes a closing connection from the pool and, if another established connection to
// the same peer exists, pools that one instead of dialing again later.
func (t *Transport) forget(c *conn) (wasEstablished bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wasEstablished = c.established
	delete(t.all, c)
	if !c.outbound {
		t.inbound-- // counted by acceptLoop; an inbound conn exists only once authenticated
	}
	if t.pool[c.peer] != c {
		return wasEstablished
	}
	delete(t.pool, c.peer)
	for o := range t.all {
		if o.peer == c.peer && o.established {
			t.pool[c.peer] = o
			break
		}
	}
	return wasEstablished
}

// deliver hands a data frame to the Handler, one call at a time.
func (t *Transport) deliver(from transport.From, frame []byte) {
	t.deliverMu.Lock()
	defer t.deliverMu.Unlock()
	t.cfg.Handler(from, frame)
}

// maintainEvery is the period of the maintenance run.
func (t *Transport) maintainEvery() time.Duration {
	return max(min(t.cfg.KeepaliveInterval, t.cfg.IdleTimeout)/2, time.Millisecond)
}

// runMaintenance sends keepalives on quiet connections, closes idle ones, forgets old backoff
// entries, and schedules itself again. It runs on the clock's goroutine.
func (t *Transport) runMaintenance() {
	defer t.wg.Done()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	now := t.clock.Now()
	var idle []*conn
	for c := range t.all {
		if !c.established {
			continue
		}
		switch {
		case now.Sub(time.Unix(0, c.lastData.Load())) >= t.cfg.IdleTimeout:
			idle = append(idle, c)
		case now.Sub(time.Unix(0, c.lastSend.Load())) >= t.cfg.KeepaliveInterval:
			c.requestKeepalive()
		}
	}
	for id, b := range t.backoff {
		if now.Sub(b.until) > t.cfg.MaxBackoff {
			delete(t.backoff, id)
		}
	}
	t.wg.Add(1)
	t.maintain = t.clock.AfterFunc(t.maintainEvery(), t.runMaintenance)
	t.mu.Unlock()
	for _, c := range idle {
		c.close(errIdle)
	}
}

// Disconnect closes every connection to peer, dropping what is queued for it, and reports how
// many there were. It does not keep the peer away: VerifyPeer refusing it (ErrPeerBarred) does.
func (t *Transport) Disconnect(peer ids.ID, reason error) int {
	t.mu.Lock()
	var cs []*conn
	for c := range t.all {
		if c.peer == peer {
			cs = append(cs, c)
		}
	}
	t.mu.Unlock()
	for _, c := range cs {
		c.close(reason)
	}
	return len(cs)
}

// Identify learns which node listens at addr: a TLS handshake under the ring's trust rules
// and the hello exchange, on a connection that is then closed. The overlay uses it for
// bootstrap addresses, whose node id it does not know yet (Send needs the id it must find
// there). The peer sees an ordinary authenticated connection, not a refused one.
func (t *Transport) Identify(ctx context.Context, addr string) (ids.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ids.Zero, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	var got ids.ID
	tc := tls.Client(nc, t.connTLS(addr, nil, &got))
	// handshake also waits for the peer's hello, which proves the peer accepted our
	// certificate (a TLS 1.3 client finishes its handshake before the server has checked it).
	if _, _, _, err := t.handshake(nc, tc); err != nil {
		return ids.Zero, err
	}
	t.onPeer(got, tc)
	return got, nil
}

// badFrame reports a connection closed for a bad frame to Config.OnBadFrame.
func (t *Transport) badFrame(id ids.ID, err error) {
	if t.cfg.OnBadFrame != nil {
		t.cfg.OnBadFrame(id, err)
	}
}

// onPeer reports a completed handshake to Config.OnPeer.
func (t *Transport) onPeer(id ids.ID, tc *tls.Conn) {
	if t.cfg.OnPeer != nil {
		t.cfg.OnPeer(id, tc.ConnectionState().PeerCertificates)
	}
}
