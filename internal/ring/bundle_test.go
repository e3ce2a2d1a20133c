package ring

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/wire"
)

func TestBundle(t *testing.T) {
	r := newTestRing(t, "acme")
	other := newTestRing(t, "globex")
	b, err := LoadBundle(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBundle(b.Encode())
	if err != nil || !bytes.Equal(got.CA, b.CA) || !bytes.Equal(got.Descriptor, b.Descriptor) || !bytes.Equal(got.Revocations, b.Revocations) {
		t.Fatalf("round trip: %v", err)
	}
	f, err := VerifyBundle(got, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if f.Descriptor.RingID != r.Descriptor.RingID || f.Trust.RingID() != r.Descriptor.RingID || !f.Descriptor.HasDomain("acme.example") {
		t.Fatalf("verified bundle: ring %s, want %s", f.Descriptor.RingID.Short(), r.Descriptor.RingID.Short())
	}
	// A node of the ring verifies under the bundle's trust, one of another ring does not.
	n := newTestNode(t, r, Validity{})
	if _, err := f.Trust.VerifyPeer(n.Cert, testNow); err != nil {
		t.Fatalf("node of the ring: %v", err)
	}
	if _, err := f.Trust.VerifyPeer(newTestNode(t, other, Validity{}).Cert, testNow); err == nil {
		t.Fatal("node of another ring verified under the bundle")
	}

	ob, err := LoadBundle(other.Dir)
	if err != nil {
		t.Fatal(err)
	}
	key := mustCAKey(t, r)
	v1 := *r.Descriptor
	v1.Version, v1.RingID = descriptorV1, ids.RingIDOf("acme")
	v1Raw, err := SignDescriptor(key, &v1)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Clone(b.Descriptor)
	body[len(body)/2] ^= 1
	tests := []struct {
		name   string
		b      Bundle
		now    time.Time
		substr string
	}{
		{"descriptor of another ring", Bundle{CA: b.CA, Descriptor: ob.Descriptor, Revocations: b.Revocations}, testNow, "signature"},
		{"CA of another ring", Bundle{CA: ob.CA, Descriptor: b.Descriptor, Revocations: b.Revocations}, testNow, "signature"},
		{"revocations of another ring", Bundle{CA: b.CA, Descriptor: b.Descriptor, Revocations: ob.Revocations}, testNow, "signature"},
		{"descriptor changed", Bundle{CA: b.CA, Descriptor: body, Revocations: b.Revocations}, testNow, ""},
		{"version 1 descriptor", Bundle{CA: b.CA, Descriptor: v1Raw, Revocations: b.Revocations}, testNow, "cannot federate"},
		{"node certificate as CA", Bundle{CA: n.Cert.Raw, Descriptor: b.Descriptor, Revocations: b.Revocations}, testNow, "CA certificate"},
		{"CA expired", b, testNow.Add(100 * 365 * 24 * time.Hour), "valid"},
		{"not a certificate", Bundle{CA: []byte("x"), Descriptor: b.Descriptor}, testNow, "certificate"},
	}
	for _, tc := range tests {
		if _, err := VerifyBundle(tc.b, tc.now); err == nil || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.substr)
		}
	}
	// Shape: version, truncation, trailing bytes, size.
	enc := b.Encode()
	for name, data := range map[string][]byte{
		"version":   append([]byte{9}, enc[1:]...),
		"truncated": enc[:len(enc)-1],
		"trailing":  append(bytes.Clone(enc), 0),
		"too large": make([]byte, MaxBundle+1),
	} {
		if _, err := DecodeBundle(data); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
