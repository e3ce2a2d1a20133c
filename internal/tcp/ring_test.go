package tcp

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"epost/internal/ring"
	"epost/internal/transport"
)

// TestWithRingTrust wires the transport to the ring package the way the node daemon will: the
// ring's TLS configuration as the base, its Verifier as VerifyPeer. Nodes of one ring talk; a
// node of another ring is refused with the ring package's reason.
func TestWithRingTrust(t *testing.T) {
	checkNoLeak(t)
	now := time.Now()
	mkRing := func(name string) *ring.Ring {
		p := ring.DefaultParams(name, name+".example")
		r, err := ring.Create(filepath.Join(t.TempDir(), "ring"), p, now)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	mkNode := func(r *ring.Ring) *ring.Node {
		cfg := ring.NodeConfig{Listen: "127.0.0.1:7000", DataDir: "data"}
		n, err := ring.InitNode(r, filepath.Join(t.TempDir(), "node"), cfg, ring.Validity{}, now)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	acme, globex := mkRing("acme"), mkRing("globex")
	start := func(n *ring.Node) *testNode {
		tn := &testNode{id: n.ID, logs: &logBuffer{}, got: make(chan received, 16)}
		tr, err := New(Config{
			ListenAddr: "127.0.0.1:0",
			ID:         n.ID,
			TLSConfig:  n.Trust.TLSConfig(n.Creds, time.Now),
			VerifyPeer: n.Trust.Verifier(time.Now),
			Handler:    func(from transport.From, f []byte) { tn.got <- received{from, f} },
			Logger:     slog.New(slog.NewTextHandler(tn.logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		tn.Transport = tr
		t.Cleanup(func() {
			tr.Close()
			if t.Failed() {
				t.Logf("log of %s:\n%s", n.ID.Short(), tn.logs.String())
			}
		})
		return tn
	}
	a, b, stranger := start(mkNode(acme)), start(mkNode(acme)), start(mkNode(globex))
	pingPong(t, a, b)

	if err := stranger.Send(a.id, a.LocalAddr(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	// The stranger checks a's certificate first (the client verifies the server), refuses it
	// with the ring package's reason, and a sees the alert.
	stranger.logs.waitLog(t, 5*time.Second, "dial failed", "peer="+a.id.Short(), "peer certificate refused: ring:")
	a.logs.waitLog(t, 5*time.Second, "refused connection", "bad certificate")
	select {
	case r := <-a.got:
		t.Fatalf("a received %q from a stranger", r.frame)
	default:
	}
	pingPong(t, a, b)
}
