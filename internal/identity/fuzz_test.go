package identity

import (
	"bytes"
	"testing"
)

// Every decoder of bytes that come from peers or from disk gets a fuzz target: malformed input
// must produce an error, never a panic, and whatever decodes must re-encode to the same bytes.

func FuzzDecodeSignedRecord(f *testing.F) {
	k := mustKeys(f, 40)
	f.Add(issue(f, k, "alice@example.com", 1).Encode())
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 1})
	caPub, _ := ca(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := DecodeSignedRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(sr.Encode(), b) {
			t.Fatal("signed record does not re-encode to its input")
		}
		if r, err := DecodeRecord(sr.Body); err == nil {
			body, err := r.encode()
			if err != nil || !bytes.Equal(body, sr.Body) {
				t.Fatalf("record body is not canonical: %v", err)
			}
		}
		_, _ = sr.Verify(caPub, t0, func(uint64) bool { return false })
	})
}

func FuzzDecodeSignedRequest(f *testing.F) {
	req, err := NewRequest(mustKeys(f, 41), testRing, "bob@example.org", t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req.Encode())
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := DecodeSignedRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(sr.Encode(), b) {
			t.Fatal("signed request does not re-encode to its input")
		}
		if r, err := sr.Verify(); err == nil && !bytes.Equal(r.encode(), sr.Body) {
			t.Fatal("request body is not canonical")
		}
	})
}

func FuzzOpenPrivate(f *testing.F) {
	blob, err := SealPrivate(mustKeys(f, 42), "alice@example.com", []byte("pw"), seededReader(43), testSeal)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob, []byte("pw"))
	f.Add([]byte{1, 1}, []byte(""))
	f.Fuzz(func(t *testing.T, b, pw []byte) {
		s, err := parseSealed(b)
		if err != nil {
			return
		}
		// Keep the fuzzer fast: a crafted blob may legitimately ask for 1 GiB of Argon2id.
		if s.opts.MemoryKiB > 1024 || s.opts.Time > 2 {
			return
		}
		_, _, _ = OpenPrivate(b, pw)
	})
}

func FuzzHPKEOpen(f *testing.F) {
	k := mustKeys(f, 44)
	b, err := SealTo(k.Public().Encryption, []byte("i"), []byte("plaintext"), []byte("a"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(make([]byte, 48))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = k.Open(b, []byte("i"), []byte("a"))
	})
}

func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{"alice@example.com", " A@B ", "a..b@c", "x@y.", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := NormalizeAddress(s)
		if err != nil {
			return
		}
		if b, err := NormalizeAddress(a); err != nil || a != b {
			t.Fatalf("normalization of %q is not idempotent: %q, %v", a, b, err)
		}
		_ = RecordKey(testRing, s)
	})
}
