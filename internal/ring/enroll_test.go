package ring

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCreateRing(t *testing.T) {
	r := newTestRing(t, "acme")
	for name, mode := range map[string]os.FileMode{
		FileCAKey: 0o600, FileConvergenceKey: 0o600, FileCACert: 0o644, FileDescriptor: 0o644, FileRevocations: 0o644,
	} {
		fi, err := os.Stat(filepath.Join(r.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if r.Trust.Revocations().Version != 1 || len(r.Trust.Revocations().Entries) != 0 {
		t.Errorf("initial revocation list: %+v", r.Trust.Revocations())
	}
	// The convergence secret is not in the public descriptor.
	desc, _ := os.ReadFile(filepath.Join(r.Dir, FileDescriptor))
	conv, _ := os.ReadFile(filepath.Join(r.Dir, FileConvergenceKey))
	if strings.Contains(string(desc), strings.TrimSpace(string(conv))) {
		t.Error("descriptor contains the convergence secret")
	}
	if _, err := Create(r.Dir, DefaultParams("acme", "acme.example"), testNow); !errors.Is(err, ErrRingExists) {
		t.Fatalf("second Create in the same dir: %v, want ErrRingExists", err)
	}
	// Invalid params write nothing.
	dir := filepath.Join(t.TempDir(), "bad")
	if _, err := Create(dir, DefaultParams("acme", "Bad Domain"), testNow); !errors.Is(err, ErrBadParams) {
		t.Fatalf("bad params: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bad params created %s", dir)
	}
}

func TestInitNodeLocal(t *testing.T) {
	r := newTestRing(t, "acme")
	dir := filepath.Join(t.TempDir(), "node")
	cfg := testConfig("127.0.0.1:7002")
	cfg.Bootstrap = []string{"10.0.0.9:7001"}
	cfg.POP3 = "" // disabled
	n, err := InitNode(r, dir, cfg, Validity{}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != NodeIDFromPublicKey(n.Key.Public().(ed25519.PublicKey)) {
		t.Fatal("node id is not derived from the key")
	}
	if err := n.CheckOwnCert(testNow); err != nil {
		t.Fatalf("own cert: %v", err)
	}
	if got := n.Cert.NotAfter.Sub(testNow); got != DefaultNodeValidity {
		t.Errorf("validity %v, want %v", got, DefaultNodeValidity)
	}
	// Flag's bootstrap first, then the descriptor's.
	if want := []string{"10.0.0.9:7001", "127.0.0.1:7001"}; !slices.Equal(n.Config.Bootstrap, want) {
		t.Errorf("bootstrap %v, want %v", n.Config.Bootstrap, want)
	}
	if n.Config.POP3 != "" || n.Config.IMAP != DefaultIMAP {
		t.Errorf("mail addresses %+v", n.Config)
	}
	for name, mode := range map[string]os.FileMode{
		FileNodeKey: 0o600, FileConvergenceKey: 0o600, FileNodeCert: 0o644, FileCACert: 0o644,
		FileDescriptor: 0o644, FileRevocations: 0o644, FileNodeConfig: 0o644,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, FileCAKey)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("node directory has the CA key")
	}
	if fi, err := os.Stat(n.DataDir()); err != nil || !fi.IsDir() {
		t.Fatalf("data dir: %v", err)
	}
	if n.ConvergenceKey != r.convergenceKey {
		t.Fatal("convergence key not handed over")
	}
	// The CA recorded the certificate.
	issued, err := r.IssuedCerts()
	if err != nil || len(issued) != 1 || issued[0].NodeID != n.ID.String() || issued[0].Serial != n.Cert.SerialNumber.String() {
		t.Fatalf("issued log: %+v %v", issued, err)
	}
	// A second enrollment into the same directory is refused; so is the ring dir as node dir.
	if _, err := InitNode(r, dir, cfg, Validity{}, testNow); !errors.Is(err, ErrEnrolled) {
		t.Fatalf("re-enroll: %v, want ErrEnrolled", err)
	}
	if _, err := InitNode(r, r.Dir, cfg, Validity{}, testNow); err == nil {
		t.Fatal("enrolled a node into the ring directory")
	}
	// Validity flags are honoured and checked.
	if _, err := InitNode(r, filepath.Join(t.TempDir(), "n"), cfg, Validity{NotBefore: testNow, NotAfter: testNow}, testNow); err == nil {
		t.Fatal("empty validity window accepted")
	}
}

func TestEnrollByRequestAndResponse(t *testing.T) {
	r := newTestRing(t, "acme")
	dir := filepath.Join(t.TempDir(), "node")

	// On the node's machine.
	if _, err := PrepareNode(dir, testConfig("192.0.2.7:7002")); err != nil {
		t.Fatal(err)
	}
	reqRaw, err := MakeRequest(dir, testNow)
	if err != nil {
		t.Fatal(err)
	}
	// Preparing again (the request got lost) keeps the key.
	if _, err := PrepareNode(dir, testConfig("192.0.2.7:7002")); err != nil {
		t.Fatal(err)
	}
	reqAgain, _ := MakeRequest(dir, testNow)
	if string(reqAgain) != string(reqRaw) {
		t.Fatal("re-prepared node made a different request")
	}

	// On the CA's machine.
	req, err := ParseRequest(reqRaw)
	if err != nil {
		t.Fatal(err)
	}
	if req.Listen != "192.0.2.7:7002" {
		t.Fatalf("listen %q", req.Listen)
	}
	resp, err := r.Enroll(req, Validity{NotAfter: testNow.Add(30 * 24 * time.Hour)}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	respRaw, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}

	// Back on the node.
	resp2, err := ParseResponse(respRaw)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Accept(dir, resp2)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != req.NodeID || !n.Cert.NotAfter.Equal(testNow.Add(30*24*time.Hour)) {
		t.Fatalf("node %s cert until %v", n.ID.Short(), n.Cert.NotAfter)
	}
	if _, err := r.Trust.VerifyPeer(n.Cert, testNow); err != nil {
		t.Fatalf("CA does not accept the enrolled node: %v", err)
	}
	if _, err := Accept(dir, resp2); !errors.Is(err, ErrEnrolled) {
		t.Fatalf("second accept: %v", err)
	}
}

func TestParseRequestRejects(t *testing.T) {
	_, key := newKey(t)
	raw, err := NewRequest(key, "127.0.0.1:7002", testNow)
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(env.Body, &body); err != nil {
		t.Fatal(err)
	}
	_, otherKey := newKey(t)
	otherPub := otherKey.Public().(ed25519.PublicKey)

	tests := []struct {
		name   string
		change func(body map[string]any, env *envelope)
		want   string
	}{
		{"changed listen", func(b map[string]any, e *envelope) { b["listen"] = "10.0.0.1:1" }, "not signed by the key"},
		{"other key", func(b map[string]any, e *envelope) { b["public_key"] = []byte(otherPub) }, "not signed by the key"},
		{"signed by other key", func(b map[string]any, e *envelope) {
			b["public_key"] = []byte(otherPub)
			b["node_id"] = NodeIDFromPublicKey(otherPub).String()
			body, _ := json.Marshal(b)
			e.Sig = signWith(otherKey, body)
		}, ""},
		{"node id not of key", func(b map[string]any, e *envelope) {
			b["node_id"] = NodeIDFromPublicKey(otherPub).String()
			body, _ := json.Marshal(b)
			e.Sig = signWith(key, body)
		}, "not the id of its key"},
		{"bad listen", func(b map[string]any, e *envelope) {
			b["listen"] = "nowhere"
			body, _ := json.Marshal(b)
			e.Sig = signWith(key, body)
		}, "HOST:PORT"},
		{"wrong type", func(b map[string]any, e *envelope) { e.Type = typeDescriptor }, "want \"node-request\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := map[string]any{}
			for k, v := range body {
				b[k] = v
			}
			e := env
			tc.change(b, &e)
			e.Body, _ = json.Marshal(b)
			data, _ := json.Marshal(e)
			_, err := ParseRequest(data)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func signWith(key ed25519.PrivateKey, body []byte) []byte {
	return ed25519.Sign(key, signedMessage(typeRequest, body))
}

func TestAcceptRejectsMismatchedResponse(t *testing.T) {
	r := newTestRing(t, "acme")
	other := newTestRing(t, "acme") // same name, different CA

	dir := filepath.Join(t.TempDir(), "node")
	if _, err := PrepareNode(dir, testConfig("127.0.0.1:7002")); err != nil {
		t.Fatal(err)
	}
	raw, _ := MakeRequest(dir, testNow)
	req, _ := ParseRequest(raw)
	good, err := r.Enroll(req, Validity{}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate for someone else's key.
	pub, _ := newKey(t)
	foreign, err := r.Enroll(&Request{PublicKey: pub, NodeID: NodeIDFromPublicKey(pub), Listen: "127.0.0.1:1"}, Validity{}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	otherResp, err := other.Enroll(req, Validity{}, testNow)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		resp   Response
		substr string
	}{
		{"cert for another key", *foreign, "another node's key"},
		{"descriptor of another CA", func() Response { x := *good; x.Descriptor = otherResp.Descriptor; return x }(), "bad signature"},
		{"revocations of another CA", func() Response { x := *good; x.Revocations = otherResp.Revocations; return x }(), "bad signature"},
		{"cert from another CA", func() Response { x := *good; x.Cert = otherResp.Cert; return x }(), "belongs to another ring"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Accept(dir, &tc.resp); err == nil || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("got %v, want error containing %q", err, tc.substr)
			}
		})
	}
	// Nothing was installed by the failures; the good response still goes in.
	if _, err := Accept(dir, good); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollRevokedNodeRefused(t *testing.T) {
	r := newTestRing(t, "acme")
	n := newTestNode(t, r, Validity{})
	if _, err := r.Revoke(nil, n.ID, "", testNow); err != nil {
		t.Fatal(err)
	}
	req := &Request{PublicKey: n.Key.Public().(ed25519.PublicKey), NodeID: n.ID, Listen: "127.0.0.1:7002"}
	if _, err := r.Enroll(req, Validity{}, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("enrolled a revoked node id: %v", err)
	}
	if _, err := r.Revoke(nil, n.ID, "", testNow); err == nil {
		t.Fatal("revoked twice")
	}
}

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]string{"42": "42", "0x2a": "42", "00:2A": "42"} {
		s, err := ParseSerial(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseSerial(%q) = %v, %v", in, s, err)
		}
	}
	for _, in := range []string{"", "0", "-1", "x", "0xzz"} {
		if _, err := ParseSerial(in); err == nil {
			t.Errorf("ParseSerial(%q) accepted", in)
		}
	}
}
