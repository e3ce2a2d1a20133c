package tcp

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

func TestTwoNodesExchangeOverOneConnection(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")

	// a dials first; b's frames must then travel over the connection a opened.
	pingPong(t, a, b)

	const n = 2000
	var wg sync.WaitGroup
	for _, p := range [][2]*testNode{{a, b}, {b, a}} {
		wg.Go(func() {
			for i := range n {
				sendRetry(t, p[0], p[1], seqFrame(i, 100+i%3000))
			}
		})
	}
	for _, p := range [][2]*testNode{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		for i := range n {
			r := to.recv(t, 5*time.Second)
			if r.from.ID != from.id {
				t.Fatalf("frame from %s attributed to %s", from.id.Short(), r.from.ID.Short())
			}
			if r.from.Addr != from.LocalAddr() {
				t.Fatalf("From.Addr = %q, want advertised %q", r.from.Addr, from.LocalAddr())
			}
			if got := seqOf(t, r.frame); got != i {
				t.Fatalf("%s -> %s: frame %d arrived as number %d (order broken)", from.id.Short(), to.id.Short(), got, i)
			}
			if len(r.frame) != 100+i%3000 {
				t.Fatalf("frame %d has %d bytes, want %d", i, len(r.frame), 100+i%3000)
			}
		}
	}
	wg.Wait()

	sa, sb := a.Stats(), b.Stats()
	if sa.ConnsOutbound != 1 || sa.ConnsInbound != 0 || sb.ConnsOutbound != 0 || sb.ConnsInbound != 1 {
		t.Fatalf("want one connection a->b reused both ways; a: %+v; b: %+v", sa, sb)
	}
	if sa.ConnsOpen != 1 || sb.ConnsOpen != 1 {
		t.Fatalf("open connections a=%d b=%d, want 1", sa.ConnsOpen, sb.ConnsOpen)
	}
	if sa.FramesOut != n+1 || sb.FramesIn != n+1 || sb.FramesOut != n+1 || sa.FramesIn != n+1 {
		t.Fatalf("frame counters: a %+v b %+v", sa, sb)
	}
	if sa.BytesOut != sb.BytesIn || sb.BytesOut != sa.BytesIn {
		t.Fatalf("byte counters disagree: a %+v b %+v", sa, sb)
	}
}

func TestSeveralNodesAllToAll(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	const nodes, frames = 5, 200
	var ns []*testNode
	for i := range nodes {
		ns = append(ns, newNode(t, ca, string(rune('a'+i))))
	}
	// Everyone sends to everyone at once: simultaneous dials happen and must not break order.
	var wg sync.WaitGroup
	for _, from := range ns {
		for _, to := range ns {
			if from == to {
				continue
			}
			wg.Go(func() {
				for i := range frames {
					sendRetry(t, from, to, seqFrame(i, 64))
				}
			})
		}
	}
	for _, to := range ns {
		next := map[ids.ID]int{}
		for range (nodes - 1) * frames {
			r := to.recv(t, 5*time.Second)
			if got := seqOf(t, r.frame); got != next[r.from.ID] {
				t.Fatalf("%s -> %s: got frame %d, want %d", r.from.ID.Short(), to.id.Short(), got, next[r.from.ID])
			}
			next[r.from.ID]++
		}
	}
	wg.Wait()
	for _, n := range ns {
		// One connection per pair, two at most when both dialed at the same moment.
		if s := n.Stats(); s.ConnsOpen < nodes-1 || s.ConnsOpen > 2*(nodes-1) {
			t.Errorf("%s has %d connections open", n.id.Short(), s.ConnsOpen)
		}
	}
}

func TestSendErrors(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a := newNode(t, ca, "a", func(c *Config) { c.MaxFrame = 1000 })
	b := newNode(t, ca, "b")
	if err := a.Send(b.id, b.LocalAddr(), make([]byte, 1001)); !errors.Is(err, transport.ErrFrameTooLong) {
		t.Errorf("oversized send: %v, want ErrFrameTooLong", err)
	}
	if err := a.Send(a.id, a.LocalAddr(), []byte("x")); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("send to self: %v, want ErrUnreachable", err)
	}
	if err := a.Send(b.id, "", []byte("x")); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("send without address: %v, want ErrUnreachable", err)
	}
	a.Close()
	if err := a.Send(b.id, b.LocalAddr(), []byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("send after close: %v, want ErrClosed", err)
	}
}

func TestDialFailureBacksOff(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a := newNode(t, ca, "a", func(c *Config) { c.MinBackoff = time.Hour; c.MaxBackoff = time.Hour })
	b := newNode(t, ca, "b")
	addr := b.LocalAddr()
	b.Close() // nobody listens there now

	if err := a.Send(b.id, addr, []byte("x")); err != nil {
		t.Fatalf("first send queues while dialing: %v", err)
	}
	a.logs.waitLog(t, 5*time.Second, "dial failed", b.id.Short())
	if err := a.Send(b.id, addr, []byte("x")); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("send during backoff: %v, want ErrUnreachable", err)
	}
	if s := a.Stats(); s.DialFailures != 1 || s.DroppedUnsent != 1 {
		t.Fatalf("stats %+v, want 1 dial failure and 1 dropped frame", s)
	}
}

func TestKeepaliveHoldsIdleConnection(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	pingPong(t, a, b)
	// Without keepalives each side's 1 s read deadline would close the connection.
	time.Sleep(2500 * time.Millisecond)
	pingPong(t, a, b)
	if s := a.Stats(); s.ConnsOutbound != 1 || s.ConnsOpen != 1 {
		t.Fatalf("connection did not survive idle period: %+v\n%s", s, a.logs.String())
	}
}

func TestIdleConnectionClosed(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	clk := newFakeClock()
	slow := func(c *Config) {
		c.Clock = clk
		c.IdleTimeout = time.Minute
		c.KeepaliveInterval = 10 * time.Second
		c.ReadTimeout = 20 * time.Second // wall clock; never reached in this test
	}
	a, b := newNode(t, ca, "a", slow), newNode(t, ca, "b", slow)
	pingPong(t, a, b)
	clk.Advance(30 * time.Second)
	if s := a.Stats(); s.ConnsOpen != 1 {
		t.Fatalf("closed before the idle timeout: %+v", s)
	}
	clk.Advance(31 * time.Second)
	a.logs.waitLog(t, 5*time.Second, "connection down", "idle timeout")
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats().ConnsOpen != 0 || b.Stats().ConnsOpen != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle connection still open: a %+v b %+v", a.Stats(), b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A later Send dials again.
	pingPong(t, a, b)
}

func TestCloseStopsEverything(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b, c := newNode(t, ca, "a"), newNode(t, ca, "b"), newNode(t, ca, "c")
	pingPong(t, a, b)
	pingPong(t, c, a)
	for range 100 {
		_ = a.Send(b.id, b.LocalAddr(), make([]byte, 10000))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // frames a had already written may still arrive
	b.drain()
	pingPong(t, b, c)
}

// fakeClock is a manual transport.Clock: Advance runs due callbacks on the caller's goroutine.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	f    func()
	done bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) transport.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{c: c, when: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	return tm
}

func (tm *fakeTimer) Stop() bool {
	tm.c.mu.Lock()
	defer tm.c.mu.Unlock()
	was := !tm.done
	tm.done = true
	return was
}

// Advance moves time forward and runs every callback that fell due, in time order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, tm := range c.timers {
			if !tm.done && !tm.when.After(c.now) && (next == nil || tm.when.Before(next.when)) {
				next = tm
			}
		}
		if next != nil {
			next.done = true
		}
		c.mu.Unlock()
		if next == nil {
			return
		}
		next.f()
	}
}

// SendParts delivers head followed by tail as one frame, in order with plain Sends, large
// tails (several TLS records) included; a frame over MaxFrame counts both parts.
func TestSendPartsArriveJoined(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	a, b := newNode(t, ca, "a"), newNode(t, ca, "b")
	pingPong(t, a, b)
	for i, size := range []int{0, 1, 1000, 70 << 10} {
		head := seqFrame(i, 8+i)
		tail := make([]byte, size)
		for j := range tail {
			tail[j] = byte(j * (i + 1))
		}
		if err := a.SendParts(b.id, b.LocalAddr(), head, tail); err != nil {
			t.Fatalf("send parts %d: %v", i, err)
		}
		sendRetry(t, a, b, seqFrame(100+i, 8))
		r := b.recv(t, 5*time.Second)
		if !bytes.Equal(r.frame, append(append([]byte{}, head...), tail...)) {
			t.Fatalf("frame %d: %d bytes arrived, want head %d + tail %d joined", i, len(r.frame), len(head), len(tail))
		}
		if r := b.recv(t, 5*time.Second); seqOf(t, r.frame) != 100+i {
			t.Fatalf("the Send after parts %d arrived out of order", i)
		}
	}
	big := make([]byte, a.cfg.MaxFrame)
	if err := a.SendParts(b.id, b.LocalAddr(), []byte{1}, big); !errors.Is(err, transport.ErrFrameTooLong) {
		t.Fatalf("head and tail over MaxFrame: %v", err)
	}
}
