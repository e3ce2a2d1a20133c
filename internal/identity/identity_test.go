package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/ids"
)

// seededReader is a deterministic byte source for keys and salts; tests print the seed.
func seededReader(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	s[0], s[1], s[2], s[3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
	return rand.NewChaCha8(s)
}

// cheap Argon2id parameters so tests stay fast.
var testSeal = SealOptions{Time: 1, MemoryKiB: 64, Threads: 1}

var testRing = ids.RingIDOf("test")

func mustKeys(t testing.TB, seed uint64) *Keys {
	t.Helper()
	k, err := NewKeys(seededReader(seed))
	if err != nil {
		t.Fatalf("seed %d: NewKeys: %v", seed, err)
	}
	return k
}

func TestNewKeysDeterministic(t *testing.T) {
	a, b, c := mustKeys(t, 1), mustKeys(t, 1), mustKeys(t, 2)
	if !a.Equal(b) || !a.Public().Equal(b.Public()) {
		t.Fatal("same seed gave different keys")
	}
	if a.Equal(c) || a.Public().Equal(c.Public()) {
		t.Fatal("different seeds gave the same keys")
	}
	if err := a.Public().Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeys(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Fatal("NewKeys accepted a short random source")
	}
	if _, err := NewKeys(nil); err != nil {
		t.Fatalf("NewKeys(nil): %v", err)
	}
}

func TestNormalizeAddress(t *testing.T) {
	good := map[string]string{
		"alice@example.com":           "alice@example.com",
		"  Alice@Example.COM ":        "alice@example.com",
		"a.b+tag@sub.example.org":     "a.b+tag@sub.example.org",
		"x@localhost":                 "x@localhost",
		"o'neil_{x}@xn--bcher-kva.de": "o'neil_{x}@xn--bcher-kva.de",
		"1@2.3":                       "1@2.3",
	}
	for in, want := range good {
		got, err := NormalizeAddress(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "alice", "@example.com", "alice@", "alice@@example.com", "al ice@example.com",
		".alice@example.com", "alice.@example.com", "a..b@example.com", "alice@example..com",
		"alice@.example.com", "alice@example.com.", "alice@-example.com", "alice@example-.com",
		"alice@exa_mple.com", "\"alice\"@example.com", "Alice <alice@example.com>",
		"alice@[192.0.2.1]", "älice@example.com", "alice@exämple.com", "a(b)@example.com",
		string(make([]byte, 65)) + "@example.com",
		"a@" + string(bytes.Repeat([]byte("a"), 64)) + ".com",
		bytesOf('a', 65) + "@example.com",
		"a@" + bytesOf('b', 250) + ".com",
	}
	for _, in := range bad {
		if got, err := NormalizeAddress(in); err == nil || !errors.Is(err, ErrBadAddress) {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want ErrBadAddress", in, got, err)
		}
	}
}

func bytesOf(c byte, n int) string { return string(bytes.Repeat([]byte{c}, n)) }

func TestRecordKey(t *testing.T) {
	k1 := RecordKey(testRing, "Alice@Example.com")
	k2 := RecordKey(testRing, " alice@example.com")
	if k1 != k2 {
		t.Fatal("record key depends on case or spaces")
	}
	if k1.Ring != testRing {
		t.Fatal("record key not qualified by the ring")
	}
	if RecordKey(testRing, "bob@example.com") == k1 {
		t.Fatal("two addresses share a record key")
	}
	if k1.ID == ids.HashString("alice@example.com") {
		t.Fatal("record key is not domain separated")
	}
	if RecordKey(ids.RingIDOf("other"), "alice@example.com") == k1 {
		t.Fatal("record key ignores the ring")
	}
}

func TestSignVerifyDomainSeparation(t *testing.T) {
	k := mustKeys(t, 3)
	pub := k.Public().Signing
	msg := []byte("hello")
	sig, err := Sign(k, "epost/v1/test", msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(pub, "epost/v1/test", msg, sig); err != nil {
		t.Fatalf("valid signature rejected: %v", err)
	}
	cases := []struct {
		name string
		pub  ed25519.PublicKey
		ctx  string
		msg  []byte
		sig  []byte
		want error
	}{
		{"other context", pub, "epost/v1/other", msg, sig, ErrBadSignature},
		{"context shift", pub, "epost/v1/tes", append([]byte("t"), msg...), sig, ErrBadSignature},
		{"other message", pub, "epost/v1/test", []byte("hellO"), sig, ErrBadSignature},
		{"flipped bit", pub, "epost/v1/test", msg, flip(sig, 10), ErrBadSignature},
		{"short sig", pub, "epost/v1/test", msg, sig[:63], ErrBadSignature},
		{"other key", mustKeys(t, 4).Public().Signing, "epost/v1/test", msg, sig, ErrBadSignature},
		{"short key", pub[:31], "epost/v1/test", msg, sig, ErrMalformed},
		{"nil key", nil, "epost/v1/test", msg, sig, ErrMalformed},
	}
	for _, c := range cases {
		if err := Verify(c.pub, c.ctx, c.msg, c.sig); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// A plain Ed25519 signature over msg is not a Sign signature.
	if err := Verify(pub, "epost/v1/test", msg, ed25519.Sign(k.SigningKey(), msg)); err == nil {
		t.Fatal("undomain-separated signature accepted")
	}
	if _, err := Sign(k, "", msg); err == nil {
		t.Fatal("empty context accepted")
	}
	if _, err := Sign(k, bytesOf('x', 256), msg); err == nil {
		t.Fatal("overlong context accepted")
	}
}

func flip(b []byte, i int) []byte {
	c := clone(b)
	c[i%len(c)] ^= 0x01
	return c
}

func TestHPKERoundTripAndTamper(t *testing.T) {
	alice, bob := mustKeys(t, 5), mustKeys(t, 6)
	info, aad := []byte("epost/v1/notification"), []byte("serial 7")
	for _, size := range []int{0, 1, 100, 70000} {
		pt := bytes.Repeat([]byte{0xab}, size)
		b, err := SealTo(bob.Public().Encryption, info, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != EncapsulatedKeySize+size+BundleTagSize {
			t.Fatalf("bundle size %d, want %d", len(b), EncapsulatedKeySize+size+BundleTagSize)
		}
		got, err := bob.Open(b, info, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: round trip: %v", size, err)
		}
		bad := map[string]func() ([]byte, error){
			"wrong key":  func() ([]byte, error) { return alice.Open(b, info, aad) },
			"wrong info": func() ([]byte, error) { return bob.Open(b, []byte("epost/v1/other"), aad) },
			"wrong aad":  func() ([]byte, error) { return bob.Open(b, info, nil) },
			"enc bit":    func() ([]byte, error) { return bob.Open(flip(b, 3), info, aad) },
			"ct bit":     func() ([]byte, error) { return bob.Open(flip(b, len(b)-1), info, aad) },
			"truncated":  func() ([]byte, error) { return bob.Open(b[:len(b)-1], info, aad) },
			"short":      func() ([]byte, error) { return bob.Open(b[:20], info, aad) },
			"empty":      func() ([]byte, error) { return bob.Open(nil, info, aad) },
		}
		for name, f := range bad {
			if _, err := f(); !errors.Is(err, ErrDecrypt) {
				t.Errorf("size %d, %s: got %v, want ErrDecrypt", size, name, err)
			}
		}
	}
	if _, err := SealTo(make([]byte, 31), info, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short recipient key: %v", err)
	}
	// The all-zero point is of low order: DH gives zero and HPKE must refuse.
	if _, err := SealTo(make([]byte, 32), info, nil, nil); err == nil {
		t.Fatal("sealed to a low-order point")
	}
}

// ca is a test ring CA.
func ca(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(seededReader(99))
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func issue(t testing.TB, k *Keys, address string, serial uint64) SignedRecord {
	t.Helper()
	_, caPriv := ca(t)
	req, err := NewRequest(k, testRing, address, t0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := req.Verify()
	if err != nil {
		t.Fatal(err)
	}
	sr, err := SignRecord(r.Record(serial, t0, t0.Add(365*24*time.Hour)), caPriv)
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

func TestRequestRecordFlow(t *testing.T) {
	caPub, _ := ca(t)
	k := mustKeys(t, 7)
	req, err := NewRequest(k, testRing, " Alice@Example.com", t0)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := DecodeSignedRequest(req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	r, err := dec.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if r.Address != "alice@example.com" || r.Ring != testRing || !r.Keys.Equal(k.Public()) || !r.Time.Equal(t0) {
		t.Fatalf("request decoded as %+v", r)
	}
	sr := issue(t, k, "alice@example.com", 42)
	wire := sr.Encode()
	sr2, err := DecodeSignedRecord(wire)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := sr2.Verify(caPub, t0.Add(time.Hour), func(uint64) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if rec.Address != "alice@example.com" || rec.Serial != 42 || !rec.Keys.Equal(k.Public()) ||
		!rec.NotBefore.Equal(t0) || rec.Key() != RecordKey(testRing, "ALICE@example.com") {
		t.Fatalf("record decoded as %+v", rec)
	}
	// The record's keys work: HPKE to them opens with k.
	b, err := SealTo(rec.Keys.Encryption, []byte("epost/v1/test"), []byte("hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(b, []byte("epost/v1/test"), nil); err != nil {
		t.Fatal(err)
	}
}

func TestProofOfPossession(t *testing.T) {
	k, mallory := mustKeys(t, 8), mustKeys(t, 9)
	req, err := NewRequest(k, testRing, "alice@example.com", t0)
	if err != nil {
		t.Fatal(err)
	}
	// Mallory substitutes her signing key into Alice's request body and signs it with her own
	// key: valid proof, but then the request certifies Mallory's key, not Alice's. The attack
	// that must fail is claiming Alice's key without holding it.
	forged := req
	forged.Proof, _ = Sign(mallory, ContextRequest, req.Body)
	if _, err := forged.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("proof by another key accepted: %v", err)
	}
	tampered := SignedRequest{Body: flip(req.Body, 40), Proof: req.Proof}
	if _, err := tampered.Verify(); err == nil {
		t.Fatal("tampered request body accepted")
	}
	// A signature under another context (say, a record signature by the same key) is no proof.
	other, _ := Sign(k, ContextRecord, req.Body)
	if _, err := (SignedRequest{Body: req.Body, Proof: other}).Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("proof under the wrong context accepted: %v", err)
	}
	if _, err := NewRequest(k, testRing, "not an address", t0); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("request for a bad address: %v", err)
	}
}

func TestRecordVerifyFailures(t *testing.T) {
	caPub, caPriv := ca(t)
	k := mustKeys(t, 10)
	sr := issue(t, k, "alice@example.com", 5)
	notAfter := t0.Add(365 * 24 * time.Hour)
	otherCA, _, _ := ed25519.GenerateKey(seededReader(100))
	never := func(uint64) bool { return false }
	cases := []struct {
		name    string
		sr      SignedRecord
		ca      ed25519.PublicKey
		now     time.Time
		revoked func(uint64) bool
		want    error
	}{
		{"valid at start", sr, caPub, t0, never, nil},
		{"valid at last second", sr, caPub, notAfter.Add(999 * time.Millisecond), nil, nil},
		{"not yet valid", sr, caPub, t0.Add(-time.Second), never, ErrNotYetValid},
		{"expired", sr, caPub, notAfter.Add(time.Second), never, ErrExpired},
		{"revoked", sr, caPub, t0, func(s uint64) bool { return s == 5 }, ErrRevoked},
		{"other serial revoked", sr, caPub, t0, func(s uint64) bool { return s == 6 }, nil},
		{"other CA", sr, otherCA, t0, never, ErrBadSignature},
		{"bad CA key size", sr, caPub[:5], t0, never, ErrMalformed},
		{"signature bit", SignedRecord{sr.Body, flip(sr.Signature, 0)}, caPub, t0, never, ErrBadSignature},
		{"no signature", SignedRecord{sr.Body, nil}, caPub, t0, never, ErrBadSignature},
		{"serial changed", SignedRecord{flip(sr.Body, len(sr.Body)-17), sr.Signature}, caPub, t0, never, ErrBadSignature},
		{"key changed", SignedRecord{flip(sr.Body, 60), sr.Signature}, caPub, t0, never, ErrBadSignature},
		{"version changed", SignedRecord{flip(sr.Body, 0), sr.Signature}, caPub, t0, never, ErrMalformed},
		{"truncated", SignedRecord{sr.Body[:len(sr.Body)-1], sr.Signature}, caPub, t0, never, ErrMalformed},
		{"trailing", SignedRecord{append(clone(sr.Body), 0), sr.Signature}, caPub, t0, never, ErrMalformed},
	}
	for _, c := range cases {
		_, err := c.sr.Verify(c.ca, c.now, c.revoked)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// A RecordCache answers the same, whether the record is new to it or verified before (its
	// signature good under this CA: the validity window and revocation are checked again).
	cache := NewRecordCache(4)
	if _, err := cache.Verify(sr, caPub, t0, never); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for _, c := range cases {
			r, err := cache.Verify(c.sr, c.ca, c.now, c.revoked)
			if c.want == nil && (err != nil || r.Address != "alice@example.com") || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("cached, round %d, %s: got %v, want %v", round, c.name, err, c.want)
			}
		}
	}
	if len(cache.m) > 4 {
		t.Fatalf("cache holds %d records, limit 4", len(cache.m))
	}
	// A user's key cannot stand in for the CA's, even over the same body.
	userSig, _ := Sign(k, ContextRecord, sr.Body)
	if _, err := (SignedRecord{sr.Body, userSig}).Verify(caPub, t0, nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("user-signed record accepted: %v", err)
	}
	// The CA refuses to sign records that would not decode.
	rec := Record{Ring: testRing, Address: "Alice@example.com", Keys: k.Public(), NotBefore: t0, NotAfter: notAfter}
	if _, err := SignRecord(rec, caPriv); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unnormalized address signed: %v", err)
	}
	rec.Address = "alice@example.com"
	rec.NotAfter = t0
	if _, err := SignRecord(rec, caPriv); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty validity window signed: %v", err)
	}
	rec.NotAfter = notAfter
	rec.Keys.Encryption = rec.Keys.Encryption[:31]
	if _, err := SignRecord(rec, caPriv); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short encryption key signed: %v", err)
	}
	if _, err := SignRecord(Record{}, nil); err == nil {
		t.Fatal("signed with no CA key")
	}
}

func TestSealPrivate(t *testing.T) {
	k := mustKeys(t, 11)
	pw := []byte("correct horse battery staple")
	blob, err := SealPrivate(k, "Alice@Example.com", pw, seededReader(12), testSeal)
	if err != nil {
		t.Fatal(err)
	}
	got, addr, err := OpenPrivate(blob, pw)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(k) || addr != "alice@example.com" {
		t.Fatalf("round trip gave other keys or address %q", addr)
	}
	if a, err := SealedAddress(blob); err != nil || a != "alice@example.com" {
		t.Fatalf("SealedAddress = %q, %v", a, err)
	}
	if _, _, err := OpenPrivate(blob, []byte("correct horse battery stapler")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := OpenPrivate(blob, nil); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("empty password: %v", err)
	}
	// Every single-bit change is caught: header bits through the AAD (or the KDF inputs),
	// ciphertext bits through the tag.
	for i := 0; i < len(blob); i++ {
		_, _, err := OpenPrivate(flip(blob, i), pw)
		if !errors.Is(err, ErrWrongPassword) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("bit flip at byte %d: %v", i, err)
		}
	}
	// Moving a blob to another address changes the AAD.
	moved := bytes.Replace(blob, []byte("alice@example.com"), []byte("alicf@example.com"), 1)
	if _, _, err := OpenPrivate(moved, pw); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("blob moved to another address: %v", err)
	}
	// Two seals of the same keys differ (fresh salt and nonce).
	blob2, _ := SealPrivate(k, "alice@example.com", pw, seededReader(13), testSeal)
	if bytes.Equal(blob, blob2) {
		t.Fatal("two seals are identical")
	}
	for _, o := range []SealOptions{{0, 64, 1}, {1, 7, 1}, {1, 64, 0}, {1, 64, 9}, {17, 64, 1}, {1, 1<<20 + 1, 1}} {
		if _, err := SealPrivate(k, "alice@example.com", pw, nil, o); !errors.Is(err, ErrMalformed) {
			t.Errorf("options %+v accepted: %v", o, err)
		}
	}
	if _, err := SealPrivate(k, "nobody", pw, nil, testSeal); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("bad address sealed: %v", err)
	}
}

func TestSealDefaultOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB Argon2id")
	}
	k := mustKeys(t, 14)
	blob, err := SealPrivate(k, "a@b.c", []byte("pw"), nil, DefaultSealOptions)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := OpenPrivate(blob, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	t.Logf("OpenPrivate with default options: %v", time.Since(start))
}

func TestPasswordCache(t *testing.T) {
	k := mustKeys(t, 15)
	pw := []byte("hunter2")
	blob, _ := SealPrivate(k, "alice@example.com", pw, seededReader(16), testSeal)
	c, err := NewPasswordCache(seededReader(17), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, addr, err := c.Open(blob, pw)
		if err != nil || !got.Equal(k) || addr != "alice@example.com" {
			t.Fatalf("try %d: %v", i, err)
		}
	}
	if _, _, err := c.Open(blob, []byte("hunter3")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("cache accepted a wrong password: %v", err)
	}
	// The cache must not let a cached entry answer for another blob.
	other, _ := SealPrivate(mustKeys(t, 18), "bob@example.com", []byte("other"), seededReader(19), testSeal)
	if _, _, err := c.Open(other, pw); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("cached password opened another blob: %v", err)
	}
	c.Forget(blob)
	if _, _, err := c.Open(blob, pw); err != nil {
		t.Fatal(err)
	}
	// Eviction keeps the cache bounded.
	for i := uint64(0); i < 4; i++ {
		b, _ := SealPrivate(mustKeys(t, 20+i), "x@example.com", pw, seededReader(30+i), testSeal)
		if _, _, err := c.Open(b, pw); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.entries) > 2 {
		t.Fatalf("cache holds %d entries, max 2", len(c.entries))
	}
}

func TestPublicKeysCheck(t *testing.T) {
	good := mustKeys(t, 50).Public()
	// Low-order X25519 points (RFC 7748 section 6.1; the list from libsodium's blocklist).
	lowOrder := [][]byte{
		make([]byte, 32),
		append([]byte{1}, make([]byte, 31)...),
		{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
			0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	}
	for i, p := range lowOrder {
		k := PublicKeys{Signing: good.Signing, Encryption: p}
		if err := k.Check(); !errors.Is(err, ErrMalformed) {
			t.Errorf("low-order point %d accepted: %v", i, err)
		}
	}
	if err := (PublicKeys{Signing: good.Signing[:31], Encryption: good.Encryption}).Check(); !errors.Is(err, ErrMalformed) {
		t.Errorf("short signing key accepted: %v", err)
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
}
