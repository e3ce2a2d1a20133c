package ring

import (
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVerifyGatewayChain(t *testing.T) {
	r := newTestRing(t, "acme")
	other := newTestRing(t, "acme")
	gw, err := InitNode(r, filepath.Join(t.TempDir(), "gw"), testConfig("127.0.0.1:7100"), Validity{}, testNow, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	plain := newTestNode(t, r, Validity{})
	p, err := VerifyGatewayChain([]*x509.Certificate{gw.Cert, r.CA}, testNow)
	if err != nil || p.Ring != r.Descriptor.RingID || p.Node != gw.ID {
		t.Fatalf("gateway chain: %+v %v", p, err)
	}
	tests := []struct {
		name  string
		chain []*x509.Certificate
		now   time.Time
		want  error
		text  string
	}{
		{"leaf only", []*x509.Certificate{gw.Cert}, testNow, ErrBadCert, "got 1"},
		{"not a gateway", []*x509.Certificate{plain.Cert, r.CA}, testNow, ErrBadCert, "not a gateway"},
		{"another CA", []*x509.Certificate{gw.Cert, other.CA}, testNow, ErrWrongRing, "claims ring"},
		{"CA in the leaf's place", []*x509.Certificate{r.CA, r.CA}, testNow, ErrBadCert, ""},
		{"node certificate as CA", []*x509.Certificate{gw.Cert, plain.Cert}, testNow, ErrBadCert, "CA"},
		{"expired", []*x509.Certificate{gw.Cert, r.CA}, gw.Cert.NotAfter.Add(time.Second), ErrExpired, ""},
	}
	for _, tc := range tests {
		_, err := VerifyGatewayChain(tc.chain, tc.now)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.want, tc.text)
		}
	}
}
