package multiring

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
	"epost/internal/ids"
	"epost/internal/ring"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// syncBuffer is a log sink safe for the transport's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testGateway struct {
	name  string
	ring  *ring.Ring
	node  *ring.Node
	g     *Global
	tr    *tcp.Transport
	log   *syncBuffer
	mu    sync.Mutex
	got   []string // overlay frames received, as "from-name:payload"
	names map[ids.ID]string
}

func (tg *testGateway) received() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]string(nil), tg.got...)
}

func startGateway(t *testing.T, name string, domains []string, res TXTResolver, plain bool) *testGateway {
	t.Helper()
	dir := t.TempDir()
	r, err := ring.Create(filepath.Join(dir, "ring"), ring.DefaultParams(name, domains...), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var roles []ring.Role
	if !plain {
		roles = append(roles, ring.RoleGateway)
	}
	n, err := ring.InitNode(r, filepath.Join(dir, "gw"), ring.NodeConfig{Listen: "127.0.0.1:1"}, ring.Validity{}, time.Now(), roles...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ring.LoadBundle(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	tg := &testGateway{name: name, ring: r, node: n, log: &syncBuffer{}, names: map[ids.ID]string{}}
	tg.g = NewGlobal(GlobalConfig{Self: b, Admission: &Admission{Resolver: res},
		Log: slog.New(slog.NewTextHandler(tg.log, nil)),
		Handler: func(from transport.From, frame []byte) {
			tg.mu.Lock()
			tg.got = append(tg.got, from.ID.Short()+":"+string(frame))
			tg.mu.Unlock()
		}})
	tr, err := tcp.New(tcp.Config{ListenAddr: "127.0.0.1:0", ID: n.ID,
		Certificate:     tls.Certificate{Certificate: [][]byte{n.Cert.Raw, r.CA.Raw}, PrivateKey: n.Key},
		VerifyPeerChain: tg.g.VerifyChain, Handler: tg.g.Handle,
		Logger: slog.New(slog.NewTextHandler(tg.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tg.tr = tr
	tg.g.SetTransport(tr)
	t.Cleanup(func() { tg.g.Close(); tr.Close() })
	return tg
}

// publish puts the ring's _epost records in DNS.
func publish(srv *dnstest.Server, tg *testGateway) {
	for _, d := range tg.ring.Descriptor.Domains {
		srv.SetTXT(ring.DNSName(d), 10*time.Minute, ring.DNSValue(tg.ring.Descriptor.RingID))
	}
}

// sendUntil sends an overlay frame from a to b every 100 ms (the overlay retries the same way
// while admission is under way) until b has it or the time is up.
func sendUntil(a, b *testGateway, payload string, d time.Duration) bool {
	want := a.node.ID.Short() + ":" + payload
	for end := time.Now().Add(d); time.Now().Before(end); {
		_ = a.g.Send(b.node.ID, b.tr.LocalAddr(), []byte(payload))
		time.Sleep(100 * time.Millisecond)
		for _, got := range b.received() {
			if got == want {
				return true
			}
		}
	}
	return false
}

// Three rings' gateways meet on loopback: acme and globex publish their _epost records and
// admit each other; a third ring claims globex's domain (DNS names globex's ring there) and is
// refused by both, and both sides' logs say why; a non-gateway node of acme cannot even
// connect.
func TestGlobalAdmission(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res := &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}
	acme := startGateway(t, "acme", []string{"acme.example"}, res, false)
	globex := startGateway(t, "globex", []string{"globex.example", "globex.test"}, res, false)
	evil := startGateway(t, "evil", []string{"evil.example", "globex.example"}, res, false)
	publish(srv, acme)
	publish(srv, globex)
	srv.SetTXT("_epost.evil.example", time.Hour, ring.DNSValue(evil.ring.Descriptor.RingID))

	if !sendUntil(acme, globex, "hello globex", 5*time.Second) {
		t.Fatalf("acme's frame never reached globex; globex log:\n%s", globex.log)
	}
	if !sendUntil(globex, acme, "hello acme", 5*time.Second) {
		t.Fatalf("globex's frame never reached acme; acme log:\n%s", acme.log)
	}
	if !acme.g.Admitted(globex.ring.Descriptor.RingID) || !globex.g.Admitted(acme.ring.Descriptor.RingID) {
		t.Fatal("acme and globex did not admit each other")
	}

	if sendUntil(evil, acme, "let me in", 2*time.Second) {
		t.Fatal("the ring claiming globex.example got a frame through")
	}
	reason := fmt.Sprintf("domain globex.example: its _epost TXT record names ring %s, not %s", globex.ring.Descriptor.RingID.Short(), evil.ring.Descriptor.RingID.Short())
	for _, l := range []string{acme.log.String(), evil.log.String()} {
		if !strings.Contains(l, reason) {
			t.Fatalf("log does not say why evil was refused (%q):\n%s", reason, l)
		}
	}
	if !strings.Contains(acme.log.String(), "global ring: ring refused") || !strings.Contains(evil.log.String(), "global ring: refused by a peer") {
		t.Fatalf("acme log:\n%s\nevil log:\n%s", acme.log, evil.log)
	}
	if s := acme.g.Stats(); s.Refused != 1 || s.Admitted != 1 || s.Unadmitted == 0 {
		t.Fatalf("acme's counters: %+v", s)
	}
	if acme.g.Admitted(evil.ring.Descriptor.RingID) {
		t.Fatal("evil admitted")
	}

	// A node of acme without the gateway role: its handshake is refused outright.
	plain := startGateway(t, "plain", []string{"plain.example"}, res, true)
	publish(srv, plain)
	if sendUntil(plain, globex, "not a gateway", time.Second) {
		t.Fatal("a node without the gateway role reached the global ring")
	}
	if !strings.Contains(globex.log.String()+plain.log.String(), "is not a gateway") {
		t.Fatalf("no log says the node is not a gateway:\n%s\n%s", globex.log, plain.log)
	}
}
