package multiring

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
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
	r, err := ring.Create(filepath.Join(t.TempDir(), "ring"), ring.DefaultParams(name, domains...), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayIn(t, r, res, plain)
}

// startGatewayIn enrolls a gateway (or, plain, a node without the role) in r and starts its
// global-ring transport with r's bundle as it is now.
func startGatewayIn(t *testing.T, r *ring.Ring, res TXTResolver, plain bool) *testGateway {
	t.Helper()
	var roles []ring.Role
	if !plain {
		roles = append(roles, ring.RoleGateway)
	}
	n, err := ring.InitNode(r, filepath.Join(t.TempDir(), "gw"), ring.NodeConfig{Listen: "127.0.0.1:1"}, ring.Validity{}, time.Now(), roles...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ring.LoadBundle(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return startWithCreds(t, r, n, b, res, tls.Certificate{Certificate: [][]byte{n.Cert.Raw, r.CA.Raw}, PrivateKey: n.Key})
}

func startWithCreds(t *testing.T, r *ring.Ring, n *ring.Node, b ring.Bundle, res TXTResolver, creds tls.Certificate) *testGateway {
	t.Helper()
	tg := &testGateway{name: r.Descriptor.Name, ring: r, node: n, log: &syncBuffer{}, names: map[ids.ID]string{}}
	tg.g = NewGlobal(GlobalConfig{Self: b, Admission: &Admission{Resolver: res},
		Log: slog.New(slog.NewTextHandler(tg.log, nil)),
		Handler: func(from transport.From, frame []byte) {
			tg.mu.Lock()
			tg.got = append(tg.got, from.ID.Short()+":"+string(frame))
			tg.mu.Unlock()
		}})
	tr, err := tcp.New(tcp.Config{ListenAddr: "127.0.0.1:0", ID: n.ID, Certificate: creds,
		VerifyPeerChain: tg.g.VerifyChain, OnPeer: tg.g.OnPeer, Handler: tg.g.Handle,
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

// Someone with a CA of their own issues a gateway certificate for another gateway's public key
// and tries handshakes with it: they cannot finish one (no private key), and the real
// gateway's standing is untouched (state is recorded only after a completed handshake).
func TestGlobalImpersonationAttempt(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res := &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}
	acme := startGateway(t, "acme", []string{"acme.example"}, res, false)
	globex := startGateway(t, "globex", []string{"globex.example"}, res, false)
	publish(srv, acme)
	publish(srv, globex)
	if !sendUntil(globex, acme, "before", 5*time.Second) {
		t.Fatal("globex could not reach acme")
	}
	// mallory's CA signs a gateway certificate for globex's key, in mallory's ring.
	mr, err := ring.Create(filepath.Join(t.TempDir(), "mring"), ring.DefaultParams("mallory", "mallory.example"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := mr.CAKey()
	if err != nil {
		t.Fatal(err)
	}
	victimPub := globex.node.Key.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "forged"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{{Scheme: "epost", Host: "node", Path: "/" + mr.Descriptor.RingID.String() + "/" + globex.node.ID.String()},
			{Scheme: "epost", Host: "role", Path: "/gateway"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, mr.CA, victimPub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	_, mKey, _ := ed25519.GenerateKey(nil) // not the victim's key: the handshake cannot complete
	mb, _ := ring.LoadBundle(mr.Dir)
	mallory := startWithCreds(t, mr, globex.node, mb, res, tls.Certificate{Certificate: [][]byte{der, mr.CA.Raw}, PrivateKey: mKey})
	for range 5 {
		_ = mallory.g.Send(acme.node.ID, acme.tr.LocalAddr(), []byte("impostor"))
		time.Sleep(50 * time.Millisecond)
	}
	if got, ok := acme.g.PeerRing(globex.node.ID); !ok || got != globex.ring.Descriptor.RingID {
		t.Fatalf("after the attempts acme thinks globex's gateway is of ring %s (%v)", got.Short(), ok)
	}
	if !sendUntil(globex, acme, "after", 5*time.Second) {
		t.Fatalf("globex was cut off by the impersonation attempts; acme log:\n%s", acme.log)
	}
}

// A gateway revoked by its ring's CA, which shows an old revocation list, is cut off once
// another gateway of its ring shows the newer list.
func TestGlobalRevokedGateway(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res := &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}
	globex := startGateway(t, "globex", []string{"globex.example"}, res, false)
	publish(srv, globex)
	ar, err := ring.Create(filepath.Join(t.TempDir(), "ring"), ring.DefaultParams("acme", "acme.example"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetTXT(ring.DNSName("acme.example"), time.Hour, ring.DNSValue(ar.Descriptor.RingID))
	bad := startGatewayIn(t, ar, res, false) // its bundle predates its revocation
	if !sendUntil(bad, globex, "while valid", 5*time.Second) {
		t.Fatal("the gateway could not reach globex before its revocation")
	}
	if _, err := ar.Revoke(nil, bad.node.ID, "stolen", time.Now()); err != nil {
		t.Fatal(err)
	}
	good := startGatewayIn(t, ar, res, false) // shows the newer list
	if !sendUntil(good, globex, "hello", 5*time.Second) {
		t.Fatal("the good gateway could not reach globex")
	}
	if sendUntil(bad, globex, "after revocation", 2*time.Second) {
		t.Fatal("the revoked gateway still reaches globex")
	}
	if !strings.Contains(globex.log.String(), "no longer admitted") {
		t.Fatalf("globex's log does not say it dropped the revoked gateway:\n%s", globex.log)
	}
}
