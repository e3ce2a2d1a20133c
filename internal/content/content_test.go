package content

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"epost/internal/ids"
)

var (
	ring      = ids.RingIDOf("test")
	otherRing = ids.RingIDOf("other")
)

func secret(seed byte) Secret {
	var s Secret
	for i := range s {
		s[i] = seed + byte(i)
	}
	return s
}

func ptr(s Secret) *Secret { return &s }

// payload returns n pseudo-random bytes; the seed is part of every failure message.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// memStore plays PAST: a map from location to bytes.
type memStore map[ids.Key][]byte

func (m memStore) put(cs []Chunk) {
	for _, c := range cs {
		m[c.Location] = c.Ciphertext
	}
}

func (m memStore) fetch(k ids.Key) ([]byte, error) {
	b, ok := m[k]
	if !ok {
		return nil, fmt.Errorf("no object at %s", k)
	}
	return b, nil
}

func TestRoundTripSizes(t *testing.T) {
	s := secret(1)
	const cs = 1000
	for _, n := range []int{0, 1, cs - 1, cs, cs + 1, 2 * cs, 3*cs + 7, 10 * cs} {
		seed := uint64(n)
		pt := payload(seed, n)
		chunks, ref, err := EncryptChunked(s, ring, pt, cs)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if want := (n + cs - 1) / cs; len(chunks) != want || len(ref.Chunks) != want {
			t.Fatalf("seed %d: %d bytes gave %d chunks, want %d", seed, n, len(chunks), want)
		}
		for i, c := range chunks {
			if len(c.Ciphertext) > MaxChunk || c.Location.Ring != ring || c.Location.ID != ids.Hash(c.Ciphertext) {
				t.Fatalf("seed %d: chunk %d badly formed", seed, i)
			}
			if i < len(chunks)-1 && ref.Chunks[i].Length != cs {
				t.Fatalf("seed %d: inner chunk %d has length %d", seed, i, ref.Chunks[i].Length)
			}
		}
		st := memStore{}
		st.put(chunks)
		for _, sec := range []*Secret{&s, nil} {
			got, err := Assemble(sec, ref, st.fetch)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("seed %d, secret %v: round trip of %d bytes: %v", seed, sec != nil, n, err)
			}
		}
		enc, err := ref.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != refHeaderSize+refEntrySize*len(ref.Chunks) {
			t.Fatalf("encoded ref is %d bytes", len(enc))
		}
		dec, err := UnmarshalRef(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Assemble(&s, dec, st.fetch); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("seed %d: round trip through encoded ref: %v", seed, err)
		}
	}
}

func TestEmptyPayload(t *testing.T) {
	chunks, ref := Encrypt(secret(1), ring, nil)
	if len(chunks) != 0 || len(ref.Chunks) != 0 || ref.Size != 0 || ref.Hash != PayloadHash(nil) {
		t.Fatalf("empty payload gave %d chunks, ref %+v", len(chunks), ref)
	}
	got, err := Assemble(ptr(secret(1)), ref, func(ids.Key) ([]byte, error) { t.Fatal("fetched"); return nil, nil })
	if err != nil || len(got) != 0 {
		t.Fatalf("assemble empty: %q, %v", got, err)
	}
	if _, _, err := SealChunk(secret(1), ring, nil); !errors.Is(err, ErrChunkSize) {
		t.Fatalf("sealed an empty chunk: %v", err)
	}
}

func TestDefaultChunkSizeFillsMaxChunk(t *testing.T) {
	pt := payload(7, 2*DefaultChunkSize)
	chunks, ref := Encrypt(secret(1), ring, pt)
	if len(chunks) != 2 {
		t.Fatalf("exact multiple of the chunk size gave %d chunks", len(chunks))
	}
	for _, c := range chunks {
		if len(c.Ciphertext) != MaxChunk {
			t.Fatalf("full chunk stored as %d bytes, want exactly MaxChunk", len(c.Ciphertext))
		}
	}
	st := memStore{}
	st.put(chunks)
	if got, err := Assemble(ptr(secret(1)), ref, st.fetch); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("round trip: %v", err)
	}
	if _, _, err := SealChunk(secret(1), ring, make([]byte, MaxPlain+1)); !errors.Is(err, ErrChunkSize) {
		t.Fatalf("oversized chunk sealed: %v", err)
	}
	for _, cs := range []int{0, -1, MaxPlain + 1} {
		if _, _, err := EncryptChunked(secret(1), ring, pt, cs); !errors.Is(err, ErrChunkSize) {
			t.Errorf("chunk size %d accepted: %v", cs, err)
		}
	}
}

func TestLargePayload(t *testing.T) {
	if testing.Short() {
		t.Skip("20 MiB")
	}
	pt := payload(20, 20<<20)
	chunks, ref := Encrypt(secret(2), ring, pt)
	if len(chunks) != 21 { // 20 MiB / (1 MiB - 48)
		t.Fatalf("20 MiB gave %d chunks", len(chunks))
	}
	st := memStore{}
	st.put(chunks)
	got, err := Assemble(ptr(secret(2)), ref, st.fetch)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("20 MiB round trip: %v", err)
	}
	// The streaming encryptor makes exactly the same chunks.
	var streamed []Chunk
	sref, err := EncryptStream(secret(2), ring, bytes.NewReader(pt), DefaultChunkSize, func(c Chunk) error {
		streamed = append(streamed, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sref) != fmt.Sprint(ref) || len(streamed) != len(chunks) {
		t.Fatal("EncryptStream and Encrypt disagree")
	}
	var buf bytes.Buffer
	if err := Stream(&buf, nil, sref, st.fetch); err != nil || !bytes.Equal(buf.Bytes(), pt) {
		t.Fatalf("Stream: %v", err)
	}
}

func TestConvergence(t *testing.T) {
	pt := payload(3, 5000)
	a, refA, _ := EncryptChunked(secret(1), ring, pt, 1024)
	b, refB, _ := EncryptChunked(secret(1), ring, append([]byte(nil), pt...), 1024)
	for i := range a {
		if a[i].Location != b[i].Location || !bytes.Equal(a[i].Ciphertext, b[i].Ciphertext) || a[i].Key != b[i].Key {
			t.Fatalf("chunk %d: same secret and plaintext gave different chunks", i)
		}
	}
	if fmt.Sprint(refA) != fmt.Sprint(refB) {
		t.Fatal("same payload gave different refs")
	}
	// A shared prefix dedups chunk by chunk.
	c, _, _ := EncryptChunked(secret(1), ring, append(append([]byte(nil), pt[:2048]...), 'x'), 1024)
	if c[0].Location != a[0].Location || c[1].Location != a[1].Location || c[2].Location == a[2].Location {
		t.Fatal("shared prefix did not dedup per chunk")
	}
	// Another secret (another ring's, or a guesser's) gives unrelated chunks.
	d, _, _ := EncryptChunked(secret(2), ring, pt, 1024)
	for i := range a {
		if d[i].Location == a[i].Location || d[i].Key == a[i].Key || bytes.Equal(d[i].Ciphertext[CommitSize:], a[i].Ciphertext[CommitSize:]) {
			t.Fatalf("chunk %d: another secret gave a related chunk", i)
		}
	}
	// Same secret, other ring: other locations.
	e, _, _ := EncryptChunked(secret(1), otherRing, pt, 1024)
	if e[0].Location == a[0].Location {
		t.Fatal("two rings share a location")
	}
}

func TestTamperRejected(t *testing.T) {
	s := secret(1)
	pt := payload(4, 3000)
	chunks, ref, _ := EncryptChunked(s, ring, pt, 1000)
	e0, c0 := ref.Chunks[0], chunks[0].Ciphertext

	// Keys from the same secret but another plaintext, and from another secret.
	other, _, _ := SealChunk(s, ring, payload(5, 1000))
	foreign, foreignEntry, _ := SealChunk(secret(9), ring, pt[:1000])

	withKey := func(e Entry, k [KeySize]byte) Entry { e.Key = k; return e }
	withLen := func(e Entry, n uint32) Entry { e.Length = n; return e }
	cases := []struct {
		name   string
		secret *Secret
		e      Entry
		ct     []byte
		want   error
	}{
		{"ok", &s, e0, c0, nil},
		{"bit in commitment", &s, e0, flip(c0, 3), ErrCorrupt},
		{"bit in body", &s, e0, flip(c0, 500), ErrCorrupt},
		{"bit in tag", &s, e0, flip(c0, len(c0)-1), ErrCorrupt},
		{"truncated", &s, e0, c0[:len(c0)-1], ErrCorrupt},
		{"empty", &s, e0, nil, ErrCorrupt},
		{"swapped chunk", &s, e0, chunks[1].Ciphertext, ErrCorrupt},
		{"other chunk's bytes", &s, e0, other.Ciphertext, ErrCorrupt},
		{"wrong key", &s, withKey(e0, ref.Chunks[1].Key), c0, ErrWrongKey},
		{"wrong key, no secret", nil, withKey(e0, ref.Chunks[1].Key), c0, ErrWrongKey},
		{"zero key", nil, withKey(e0, [KeySize]byte{}), c0, ErrWrongKey},
		{"wrong length", &s, withLen(e0, 999), c0, ErrCorrupt},
		{"zero length", &s, withLen(e0, 0), c0, ErrMalformed},
		{"huge length", &s, withLen(e0, 1<<31), c0, ErrMalformed},
		{"other secret's chunk", &s, foreignEntry, foreign.Ciphertext, ErrNotConvergent},
		{"other secret's chunk, no secret", nil, foreignEntry, foreign.Ciphertext, nil},
		{"moved to other ring", &s, Entry{Location: ids.Key{Ring: otherRing, ID: e0.Location.ID}, Key: e0.Key, Length: e0.Length}, c0, ErrCorrupt},
	}
	for _, c := range cases {
		_, err := DecryptChunk(c.secret, c.e, c.ct)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}

	// Assemble-level attacks: a store that swaps two chunks, a ref with reordered entries (its
	// chunks verify, the payload hash does not), a ref lying about the size.
	st := memStore{}
	st.put(chunks)
	swapped := memStore{}
	swapped.put(chunks)
	swapped[ref.Chunks[0].Location], swapped[ref.Chunks[1].Location] = chunks[1].Ciphertext, c0
	if _, err := Assemble(&s, ref, swapped.fetch); !errors.Is(err, ErrCorrupt) {
		t.Errorf("store swapping chunks: %v", err)
	}
	reordered := ref
	reordered.Chunks = []Entry{ref.Chunks[1], ref.Chunks[0], ref.Chunks[2]}
	if _, err := Assemble(&s, reordered, st.fetch); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reordered ref: %v", err)
	}
	lying := ref
	lying.Size++
	if _, err := Assemble(&s, lying, st.fetch); !errors.Is(err, ErrMalformed) {
		t.Errorf("ref lying about size: %v", err)
	}
	badHash := ref
	badHash.Hash[0] ^= 1
	if _, err := Assemble(&s, badHash, st.fetch); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ref with wrong hash: %v", err)
	}
	missing := memStore{}
	missing.put(chunks[:2])
	if _, err := Assemble(&s, ref, missing.fetch); err == nil {
		t.Error("missing chunk not reported")
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x80
	return c
}

func TestRefDecodeRejects(t *testing.T) {
	_, ref, _ := EncryptChunked(secret(1), ring, payload(6, 2500), 1000)
	enc, _ := ref.MarshalBinary()
	bad := map[string][]byte{
		"empty":        nil,
		"short header": enc[:refHeaderSize-1],
		"version":      flip(enc, 0),
		"truncated":    enc[:len(enc)-1],
		"trailing":     append(append([]byte(nil), enc...), 0),
		"size":         flip(enc, 1+32+7),
		"count":        flip(enc, refHeaderSize-1),
		"huge count":   append(append([]byte(nil), enc[:refHeaderSize-4]...), 0xff, 0xff, 0xff, 0xff),
		"zero length":  setLen(enc, 0, 0),
		"long length":  setLen(enc, 0, MaxPlain+1),
	}
	for name, b := range bad {
		if _, err := UnmarshalRef(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	mixed := ref
	mixed.Chunks = append([]Entry(nil), ref.Chunks...)
	mixed.Chunks[1].Location.Ring = otherRing
	if _, err := mixed.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("ref mixing rings encoded: %v", err)
	}
}

func setLen(enc []byte, i int, n uint32) []byte {
	b := append([]byte(nil), enc...)
	off := refHeaderSize + i*refEntrySize + ids.Bytes + KeySize
	b[off], b[off+1], b[off+2], b[off+3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return b
}

// An inline Ref carries its payload: it round-trips through its encoding, Assemble returns
// the bytes without fetching anything, and a payload that does not match the hash, a Ref
// with chunks too, or one over MaxInline is refused.
func TestInlineRef(t *testing.T) {
	for _, n := range []int{0, 1, 700, MaxInline} {
		p := payload(uint64(n), n)
		ref := InlineRef(ring, p)
		enc, err := ref.MarshalBinary()
		if err != nil {
			t.Fatalf("%d bytes: marshal: %v", n, err)
		}
		back, err := UnmarshalRef(enc)
		if err != nil || back.Size != uint64(n) || !bytes.Equal(back.Inline, p) || back.Inline == nil || back.Hash != ref.Hash {
			t.Fatalf("%d bytes: round trip: %+v, %v", n, back, err)
		}
		got, err := Assemble(nil, back, func(ids.Key) ([]byte, error) { t.Fatal("an inline ref fetched"); return nil, nil })
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: assemble: %v", n, err)
		}
	}
	ref := InlineRef(ring, []byte("hello"))
	bad := ref
	bad.Inline = []byte("hellO")
	if _, err := Assemble(nil, bad, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered inline payload: %v", err)
	}
	_, chunked := Encrypt(secret(1), ring, []byte("x"))
	both := chunked
	both.Inline = []byte("x")
	if _, err := both.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a ref with chunks and an inline payload: %v", err)
	}
	if _, err := InlineRef(ring, make([]byte, MaxInline+1)).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an inline payload over MaxInline: %v", err)
	}
	enc, _ := ref.MarshalBinary()
	if _, err := UnmarshalRef(append(enc, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an inline ref with a byte too many: %v", err)
	}
}

func FuzzUnmarshalRef(f *testing.F) {
	_, ref, _ := EncryptChunked(secret(1), ring, payload(8, 2500), 1000)
	enc, _ := ref.MarshalBinary()
	f.Add(enc)
	_, empty := Encrypt(secret(1), ring, nil)
	e, _ := empty.MarshalBinary()
	f.Add(e)
	f.Add([]byte{1})
	in, _ := InlineRef(ring, []byte("Subject: hi")).MarshalBinary()
	f.Add(in)
	f.Add([]byte{RefVersionInline})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalRef(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded ref does not re-encode to its input: %v", err)
		}
		_, _ = Assemble(nil, r, func(ids.Key) ([]byte, error) { return b, nil })
	})
}

func FuzzDecryptChunk(f *testing.F) {
	s := secret(1)
	c, e, _ := SealChunk(s, ring, []byte("hello, world"))
	f.Add(c.Ciphertext, uint32(12))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, ct []byte, n uint32) {
		e2 := e
		e2.Length = n
		e2.Location.ID = ids.Hash(ct) // get past the location check to exercise the rest
		if pt, err := DecryptChunk(&s, e2, ct); err == nil && !bytes.Equal(ct, c.Ciphertext) {
			t.Fatalf("forged chunk opened: %q", pt)
		}
	})
}

func benchmarkPayload(b *testing.B, size int) ([]byte, []Chunk, Ref) {
	pt := payload(1, size)
	chunks, ref := Encrypt(secret(1), ring, pt)
	return pt, chunks, ref
}

func BenchmarkEncrypt(b *testing.B) {
	pt, _, _ := benchmarkPayload(b, 8<<20)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		Encrypt(secret(1), ring, pt)
	}
}

func BenchmarkAssemble(b *testing.B) {
	for _, sec := range []*Secret{ptr(secret(1)), nil} {
		b.Run(fmt.Sprintf("convergent-check=%v", sec != nil), func(b *testing.B) {
			pt, chunks, ref := benchmarkPayload(b, 8<<20)
			st := memStore{}
			st.put(chunks)
			b.SetBytes(int64(len(pt)))
			for b.Loop() {
				if _, err := Assemble(sec, ref, st.fetch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
