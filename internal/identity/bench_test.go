package identity

import "testing"

func BenchmarkSignVerify(b *testing.B) {
	k := mustKeys(b, 60)
	pub, msg := k.Public().Signing, make([]byte, 256)
	for b.Loop() {
		sig, _ := Sign(k, "epost/v1/bench", msg)
		if err := Verify(pub, "epost/v1/bench", msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealToOpen(b *testing.B) {
	k := mustKeys(b, 61)
	pub, msg := k.Public().Encryption, make([]byte, 4096)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		bundle, err := SealTo(pub, []byte("epost/v1/bench"), msg, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Open(bundle, []byte("epost/v1/bench"), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenPrivateDefault(b *testing.B) {
	blob, err := SealPrivate(mustKeys(b, 62), "a@b.c", []byte("pw"), nil, DefaultSealOptions)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := OpenPrivate(blob, []byte("pw")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPasswordCacheHit(b *testing.B) {
	blob, _ := SealPrivate(mustKeys(b, 63), "a@b.c", []byte("pw"), nil, testSeal)
	c, _ := NewPasswordCache(nil, 8)
	for b.Loop() {
		if _, _, err := c.Open(blob, []byte("pw")); err != nil {
			b.Fatal(err)
		}
	}
}
