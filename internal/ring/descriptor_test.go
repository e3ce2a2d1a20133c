package ring

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"epost/internal/ids"
)

func TestDescriptorSignVerify(t *testing.T) {
	_, key := newKey(t)
	d := newDescriptor(DefaultParams("acme", "acme.example", "mail.acme.example"), key.Public().(ed25519.PublicKey), testNow)
	raw, err := SignDescriptor(key, d)
	if err != nil {
		t.Fatal(err)
	}
	caPub, _ := newKey(t)
	got, err := VerifyDescriptor(key.Public().(ed25519.PublicKey), raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "acme" || got.RingID != d.RingID || got.Replicas != 3 || got.FragmentsTotal != DefaultFragmentsTotal ||
		got.FragmentsNeeded != DefaultFragmentsNeeded || got.LeafSet != 24 || len(got.Domains) != 2 || !got.Created.Equal(d.Created) {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := VerifyDescriptor(caPub, raw); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v, want ErrBadSignature", err)
	}

	// Flip every byte of the signed body in turn: none may verify.
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	for i := range env.Body {
		e := env
		e.Body = append([]byte(nil), env.Body...)
		e.Body[i] ^= 0x01
		b, _ := json.Marshal(e)
		if _, err := VerifyDescriptor(key.Public().(ed25519.PublicKey), b); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("body byte %d flipped: %v, want ErrBadSignature", i, err)
		}
	}
	// And any byte of the file itself: either it no longer parses or the signature fails.
	for i := 0; i < len(raw); i++ {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		if _, err := VerifyDescriptor(key.Public().(ed25519.PublicKey), b); err == nil {
			// Flipping the case of a JSON field name's letter, or whitespace, may leave an
			// equivalent document; the body is what must be protected.
			var e2 envelope
			if json.Unmarshal(b, &e2) != nil || string(e2.Body) != string(env.Body) || string(e2.Sig) != string(env.Sig) {
				t.Fatalf("file byte %d flipped and still verified with a different body", i)
			}
		}
	}
}

func TestSignatureIsBoundToDocumentType(t *testing.T) {
	r := newTestRing(t, "acme")
	// A revocation list relabelled as a descriptor must not verify as one.
	var env envelope
	if err := json.Unmarshal(r.Trust.SignedRevocations(), &env); err != nil {
		t.Fatal(err)
	}
	env.Type = typeDescriptor
	b, _ := json.Marshal(env)
	if _, err := VerifyDescriptor(r.Trust.caPub, b); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("relabelled document: %v, want ErrBadSignature", err)
	}
}

func TestVerifyDescriptorChecksContents(t *testing.T) {
	_, key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	d := newDescriptor(DefaultParams("acme", "acme.example"), pub, testNow)
	if d.Version != DescriptorVersion || d.RingID != ids.RingIDOfCA(pub) || !d.Federable() {
		t.Fatalf("new descriptor: version %d, ring id %s, want %s", d.Version, d.RingID.Short(), ids.RingIDOfCA(pub).Short())
	}

	// The id is the CA key's: another id, even the one of its name, is refused.
	for _, id := range []ids.RingID{ids.RingIDOf("acme"), ids.RingIDOfCA(make([]byte, ed25519.PublicKeySize))} {
		wrongID := *d
		wrongID.RingID = id
		raw, _ := SignDescriptor(key, &wrongID)
		if _, err := VerifyDescriptor(pub, raw); err == nil || !strings.Contains(err.Error(), "not the id of the CA key") {
			t.Fatalf("ring id %s: %v", id.Short(), err)
		}
	}
	// Two rings of the same name have different ids.
	_, key2 := newKey(t)
	if d2 := newDescriptor(DefaultParams("acme", "acme.example"), key2.Public().(ed25519.PublicKey), testNow); d2.RingID == d.RingID {
		t.Fatal("two rings named acme share a ring id")
	}

	// Version 1 (the id of the name) still loads, but cannot federate.
	v1 := *d
	v1.Version, v1.RingID = descriptorV1, ids.RingIDOf("acme")
	raw, _ := SignDescriptor(key, &v1)
	got, err := VerifyDescriptor(pub, raw)
	if err != nil || got.RingID != ids.RingIDOf("acme") || got.Federable() {
		t.Fatalf("version 1: %v, %+v", err, got)
	}
	v1.RingID = d.RingID
	raw, _ = SignDescriptor(key, &v1)
	if _, err := VerifyDescriptor(pub, raw); err == nil || !strings.Contains(err.Error(), "not the id of name") {
		t.Fatalf("version 1 with another id: %v", err)
	}

	bad := *d
	bad.FragmentsNeeded = 100
	raw, _ = SignDescriptor(key, &bad)
	if _, err := VerifyDescriptor(pub, raw); !errors.Is(err, ErrBadParams) {
		t.Fatalf("signed but invalid params: %v", err)
	}

	newer := *d
	newer.Version = DescriptorVersion + 1
	raw, _ = SignDescriptor(key, &newer)
	if _, err := VerifyDescriptor(pub, raw); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("newer version: %v", err)
	}

	// A field this version does not know, even when signed, is refused.
	raw, _ = Sign(key, typeDescriptor, map[string]any{"version": DescriptorVersion, "name": "acme", "surprise": true})
	if _, err := VerifyDescriptor(pub, raw); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	ok := DefaultParams("acme", "acme.example")
	tests := []struct {
		name   string
		change func(*Params)
		want   string // substring of the error; "" for valid
	}{
		{"defaults", func(p *Params) {}, ""},
		{"several domains", func(p *Params) { p.Domains = []string{"a.example", "xn--bcher-kva.example", "localhost"} }, ""},
		{"bootstrap", func(p *Params) { p.Bootstrap = []string{"10.0.0.1:7001", "[::1]:7001", "node.acme.example:1"} }, ""},
		{"no name", func(p *Params) { p.Name = "" }, "ring name"},
		{"name with space", func(p *Params) { p.Name = "my ring" }, "no spaces"},
		{"no domain", func(p *Params) { p.Domains = nil }, "at least one mail domain"},
		{"upper-case domain", func(p *Params) { p.Domains = []string{"Acme.example"} }, "lower case"},
		{"domain with space", func(p *Params) { p.Domains = []string{"ac me.example"} }, "only a-z"},
		{"domain with at", func(p *Params) { p.Domains = []string{"user@acme.example"} }, "only a-z"},
		{"double dot", func(p *Params) { p.Domains = []string{"acme..example"} }, "empty label"},
		{"trailing dot", func(p *Params) { p.Domains = []string{"acme.example."} }, "empty label"},
		{"hyphen label", func(p *Params) { p.Domains = []string{"-acme.example"} }, "starting or ending"},
		{"long label", func(p *Params) { p.Domains = []string{strings.Repeat("a", 64) + ".example"} }, "63"},
		{"duplicate domain", func(p *Params) { p.Domains = []string{"a.example", "a.example"} }, "twice"},
		{"k zero", func(p *Params) { p.Replicas = 0 }, "replicas 0"},
		{"k above half leaf set", func(p *Params) { p.Replicas = 13 }, "replicas 13"},
		{"m > n", func(p *Params) { p.FragmentsTotal, p.FragmentsNeeded = 5, 6 }, "1 <= m <= n <= 256"},
		{"n > 256", func(p *Params) { p.FragmentsTotal = 257 }, "1 <= m <= n <= 256"},
		{"m zero", func(p *Params) { p.FragmentsNeeded = 0 }, "1 <= m <= n <= 256"},
		{"n = m", func(p *Params) { p.FragmentsTotal, p.FragmentsNeeded = 5, 5 }, ""},
		{"n = 256", func(p *Params) { p.FragmentsTotal = 256 }, ""},
		{"leaf set odd", func(p *Params) { p.LeafSet = 25 }, "even"},
		{"leaf set small", func(p *Params) { p.LeafSet = 2; p.Replicas = 1 }, "even and between 4"},
		{"leaf set 4", func(p *Params) { p.LeafSet = 4; p.Replicas = 2 }, ""},
		{"bootstrap no port", func(p *Params) { p.Bootstrap = []string{"10.0.0.1"} }, "HOST:PORT"},
		{"bootstrap port 0", func(p *Params) { p.Bootstrap = []string{"10.0.0.1:0"} }, "port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			p.Domains = append([]string(nil), ok.Domains...)
			tc.change(&p)
			err := p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadParams) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadParams containing %q", err, tc.want)
			}
		})
	}
}
