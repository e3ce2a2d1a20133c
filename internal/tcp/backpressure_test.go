package tcp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"runtime"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// stuckPeer is a ring member that completes the handshake and hello, then never reads.
func stuckPeer(t *testing.T, ca *testCA, name string) (id ids.ID, addr string) {
	t.Helper()
	id = ids.HashString(name)
	cert := ca.node(t, id)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAnyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bw := bufio.NewWriter(c)
		writeFrame(bw, kindHello, encodeHello(hello{version: protocolVersion, addr: ln.Addr().String()}))
		bw.Flush()
		var hdr [headerLen]byte
		readFrame(c, &hdr, maxHelloPayload)
		<-stop // never read again: the socket buffers fill, then the transport's queue
	}()
	return id, ln.Addr().String()
}

func TestBackpressureBoundsMemory(t *testing.T) {
	checkNoLeak(t)
	ca := newTestCA(t, "ring")
	const queueBytes = 1 << 20
	a := newNode(t, ca, "a", func(c *Config) {
		c.QueueBytes = queueBytes
		c.WriteTimeout = 8 * time.Second // long enough to fill the queue on a loaded machine; then the peer is dropped
		c.ReadTimeout = 20 * time.Second // the stuck peer sends no keepalives
	})
	b := newNode(t, ca, "b")
	x, addr := stuckPeer(t, ca, "stuck")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Kernel socket buffers absorb some megabytes first; then the queue fills.
	const frame = 64 << 10
	var sent, refused int
	var slowest time.Duration
	deadline := time.Now().Add(20 * time.Second)
	for refused < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("no back-pressure after %d frames (%d MiB)", sent, sent*frame>>20)
		}
		start := time.Now()
		err := a.Send(x, addr, make([]byte, frame))
		slowest = max(slowest, time.Since(start))
		switch {
		case err == nil:
			sent++
		case errors.Is(err, transport.ErrBackpressure):
			refused++
		default:
			t.Fatalf("send: %v", err)
		}
		if refused == 0 && sent%16 == 0 {
			time.Sleep(time.Millisecond) // let the writer push into the socket
		}
	}
	// Send must never wait for the stuck peer (that would be WriteTimeout, 8 s); the bound is
	// loose so that a busy CI machine's scheduling pauses do not count as blocking.
	if slowest > 2*time.Second {
		t.Errorf("Send blocked for %v", slowest)
	}

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("sent %d frames (%d MiB) before back-pressure; heap grew %d KiB", sent, sent*frame>>20, grown>>10)
	if grown > 2*queueBytes+4<<20 {
		t.Errorf("heap grew by %d MiB with a %d MiB queue", grown>>20, queueBytes>>20)
	}
	if s := a.Stats(); s.DroppedBackpressure != uint64(refused) {
		t.Errorf("DroppedBackpressure %d, want %d", s.DroppedBackpressure, refused)
	}

	// The writer stays stuck until WriteTimeout, then the connection goes and its queue with it.
	a.logs.waitLog(t, 15*time.Second, "write failed", "peer="+x.Short())
	pingPong(t, a, b)
}
