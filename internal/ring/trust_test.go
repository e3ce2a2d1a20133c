package ring

import (
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"epost/internal/ids"
)

func TestVerifyPeer(t *testing.T) {
	r := newTestRing(t, "acme")
	good := newTestNode(t, r, Validity{})
	expired := newTestNode(t, r, Validity{NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(-24 * time.Hour)})
	future := newTestNode(t, r, Validity{NotBefore: testNow.Add(24 * time.Hour), NotAfter: testNow.Add(48 * time.Hour)})
	revokedSerial := newTestNode(t, r, Validity{})
	revokedNode := newTestNode(t, r, Validity{})
	if _, err := r.Revoke(revokedSerial.Cert.SerialNumber, ids.Zero, "test", testNow); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Revoke(nil, revokedNode.ID, "stolen laptop", testNow); err != nil {
		t.Fatal(err)
	}
	// Same name, different CA: another ring (its id is its CA key's), and an impostor CA that
	// claims our ring id.
	sameName := newTestRing(t, "acme")
	impostor := newTestNode(t, sameName, Validity{})
	impPub, _ := newKey(t)
	claimed := craftCert(t, sameName, impPub, nodeURI(r.Descriptor.RingID, NodeIDFromPublicKey(impPub)), false)
	// Different name: a legitimate node of another ring.
	other := newTestNode(t, newTestRing(t, "globex"), Validity{})

	pub, _ := newKey(t)
	otherPub, _ := newKey(t)
	mismatch := craftCert(t, r, pub, nodeURI(r.Descriptor.RingID, NodeIDFromPublicKey(otherPub)), false)
	wrongRing := craftCert(t, r, pub, nodeURI(ids.RingIDOf("globex"), NodeIDFromPublicKey(pub)), false)
	noURI := craftCert(t, r, pub, nil, false)
	caCert := craftCert(t, r, pub, nodeURI(r.Descriptor.RingID, NodeIDFromPublicKey(pub)), true)

	tests := []struct {
		name string
		cert *x509.Certificate
		now  time.Time
		want error
	}{
		{"good", good.Cert, testNow, nil},
		{"good near expiry", good.Cert, good.Cert.NotAfter, nil},
		{"expired", expired.Cert, testNow, ErrExpired},
		{"good cert later expired", good.Cert, good.Cert.NotAfter.Add(time.Second), ErrExpired},
		{"not yet valid", future.Cert, testNow, ErrExpired},
		{"revoked serial", revokedSerial.Cert, testNow, ErrRevoked},
		{"revoked node id", revokedNode.Cert, testNow, ErrRevoked},
		{"other CA same name", impostor.Cert, testNow, ErrWrongRing},
		{"other CA claiming our ring id", claimed, testNow, ErrUnknownCA},
		{"other ring", other.Cert, testNow, ErrWrongRing},
		{"our CA, other ring id", wrongRing, testNow, ErrWrongRing},
		{"node id not hash of key", mismatch, testNow, ErrBadCert},
		{"no node identity", noURI, testNow, ErrBadCert},
		{"CA certificate", caCert, testNow, ErrBadCert},
		{"the ring CA itself", r.CA, testNow, ErrBadCert},
		{"nil", nil, testNow, ErrBadCert},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := r.Trust.VerifyPeer(tc.cert, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("VerifyPeer: %v", err)
				}
				if id != good.ID {
					t.Fatalf("VerifyPeer id %s, want %s", id.Short(), good.ID.Short())
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyPeer: %v, want %v", err, tc.want)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}

func TestUpdateRevocationsKeepsNewest(t *testing.T) {
	r := newTestRing(t, "acme")
	n := newTestNode(t, r, Validity{})
	old := r.Trust.SignedRevocations()
	if _, err := r.Revoke(n.Cert.SerialNumber, ids.Zero, "", testNow); err != nil {
		t.Fatal(err)
	}
	newer := r.Trust.SignedRevocations()

	// The node learnt its list at enrollment; the newer one reaches it later.
	if _, err := n.Trust.VerifyPeer(n.Cert, testNow); err != nil {
		t.Fatalf("before update: %v", err)
	}
	if ok, err := n.Trust.UpdateRevocations(newer); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	if _, err := n.Trust.VerifyPeer(n.Cert, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after update: %v, want ErrRevoked", err)
	}
	// A replayed older list is ignored: no rollback of a revocation.
	if ok, err := n.Trust.UpdateRevocations(old); ok || err != nil {
		t.Fatalf("old list: %v %v", ok, err)
	}
	if _, err := n.Trust.VerifyPeer(n.Cert, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after replay: %v, want ErrRevoked", err)
	}
	// Another ring's list does not verify.
	other := newTestRing(t, "globex")
	if _, err := n.Trust.UpdateRevocations(other.Trust.SignedRevocations()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other ring's list: %v", err)
	}
	// The file on disk has the new version too.
	again, err := LoadRing(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if v := again.Trust.Revocations().Version; v != 2 {
		t.Fatalf("revocations version on disk %d, want 2", v)
	}
}

// A node is a gateway only when the CA says so in its certificate; the role does not change
// how its ring's peers verify it, and a role in a certificate of another CA is worth nothing.
func TestGatewayRole(t *testing.T) {
	r := newTestRing(t, "acme")
	plain := newTestNode(t, r, Validity{})
	gwDir := filepath.Join(t.TempDir(), "gw")
	gw, err := InitNode(r, gwDir, testConfig("127.0.0.1:7009"), Validity{}, testNow, RoleGateway, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	if HasRole(plain.Cert, RoleGateway) || len(NodeRoles(plain.Cert)) != 0 {
		t.Fatalf("plain node has roles %v", NodeRoles(plain.Cert))
	}
	if roles := NodeRoles(gw.Cert); len(roles) != 1 || roles[0] != RoleGateway {
		t.Fatalf("gateway roles %v", roles)
	}
	for _, n := range []*Node{plain, gw} {
		if id, err := r.Trust.VerifyPeer(n.Cert, testNow); err != nil || id != n.ID {
			t.Fatalf("VerifyPeer: %v", err)
		}
	}
	if _, err := InitNode(r, filepath.Join(t.TempDir(), "x"), testConfig("127.0.0.1:7010"), Validity{}, testNow, Role("admin")); err == nil {
		t.Fatal("unknown role issued")
	}
	other := newTestRing(t, "acme")
	fake, err := InitNode(other, filepath.Join(t.TempDir(), "fake"), testConfig("127.0.0.1:7011"), Validity{}, testNow, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Trust.VerifyPeer(fake.Cert, testNow); err == nil {
		t.Fatal("a gateway of another CA verified")
	}
	issued, err := r.IssuedCerts()
	if err != nil {
		t.Fatal(err)
	}
	if last := issued[len(issued)-1]; len(last.Roles) != 1 || last.NodeID != gw.ID.String() {
		t.Fatalf("issuance log: %+v", last)
	}
}
