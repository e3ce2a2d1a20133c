// Package content is the pure part of POST's encrypted, single-copy content store: it cuts a
// payload (a MIME part, an attachment) into chunks, encrypts each chunk with keyed convergent
// encryption, and names each ciphertext by its hash, so that identical chunks stored by anyone
// in a ring land on one PAST object, while outsiders cannot test guesses about the contents.
//
// Scheme, per chunk p (at most MaxPlain bytes) in ring R with the ring's convergence secret S:
//
//	K      = HMAC-SHA256(S, "epost/v1/content-key" || p)        the chunk's content key
//	k_enc  = HMAC-SHA256(K, "epost/v1/content-enc")
//	nonce  = HMAC-SHA256(K, "epost/v1/content-nonce")[:12]
//	commit = HMAC-SHA256(K, "epost/v1/content-commit")
//	c      = commit || AES-256-GCM(k_enc, nonce, p, aad = "epost/v1/content-chunk\x00" || R)
//	location = ids.Key{Ring: R, ID: ids.Hash(c)}
//
// Keying the convergence with S fixes weakness 2 of the original ePOST: plain convergent
// encryption (K = H(p)) lets anyone who can fetch objects confirm a guessed plaintext. The
// deterministic nonce is safe because k_enc is never used with any other plaintext: K is a
// PRF of p, so one key means one plaintext, and re-encrypting it yields the same bytes again.
//
// The commitment makes the scheme key-committing, which AES-GCM alone is not: a ciphertext
// (hence a location) opens under exactly one K and so to exactly one plaintext, even for a
// reader who does not hold S (a node of another ring reading through a gateway). A reader that
// holds S also re-derives K from the plaintext (the full convergent check), which proves the
// chunk was written by a holder of S with the honest key.
//
// Chunk size: a stored object is at most MaxChunk = 1 MiB, so a chunk carries at most
// MaxPlain = MaxChunk - Overhead plaintext bytes, and DefaultChunkSize = MaxPlain. (The
// original ePOST used 1,000,000-byte chunks; 1 MiB keeps PAST objects to a round bound.)
//
// The package never touches the network or the disk: Assemble fetches through a callback. It
// never panics on malformed input: decoders and decryption return errors.
package content

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"epost/internal/ids"
)

// Sizes.
const (
	MaxChunk         = 1 << 20 // largest stored chunk object, in bytes
	CommitSize       = 32      // key commitment at the front of a chunk object
	TagSize          = 16      // AES-GCM tag
	Overhead         = CommitSize + TagSize
	MaxPlain         = MaxChunk - Overhead // largest plaintext in one chunk
	DefaultChunkSize = MaxPlain
	KeySize          = 32
)

// Domain-separation labels.
const (
	labelKey    = "epost/v1/content-key"
	labelEnc    = "epost/v1/content-enc"
	labelNonce  = "epost/v1/content-nonce"
	labelCommit = "epost/v1/content-commit"
	labelAAD    = "epost/v1/content-chunk\x00"
	labelHash   = "epost/v1/content-hash\x00"
)

// Errors. Returned errors wrap one of these with the chunk index or location.
var (
	// ErrMalformed: a Ref or its encoding breaks the documented shape or bounds.
	ErrMalformed = errors.New("content: malformed reference")
	// ErrCorrupt: fetched bytes are not the chunk the reference names (wrong length, wrong
	// hash, failed authentication) or the assembled payload does not match the reference.
	ErrCorrupt = errors.New("content: corrupt chunk")
	// ErrWrongKey: the key in the reference is not the key of this chunk.
	ErrWrongKey = errors.New("content: wrong content key")
	// ErrNotConvergent: the chunk opened, but its key is not the ring's convergent key for its
	// plaintext (it was not made by Encrypt with this ring's secret).
	ErrNotConvergent = errors.New("content: chunk key is not convergent")
	// ErrChunkSize: a chunk size outside 1..MaxPlain was asked for.
	ErrChunkSize = errors.New("content: chunk size out of range")
)

// Secret is a ring's convergence secret. Every node of the ring holds it; nobody else does.
// It is made once, at ring creation, and can never change without losing deduplication against
// everything stored before.
type Secret [32]byte

// NewSecret draws a fresh secret from rand (crypto/rand if nil).
func NewSecret(rand io.Reader) (Secret, error) {
	var s Secret
	if rand == nil {
		rand = cryptorand.Reader
	}
	if _, err := io.ReadFull(rand, s[:]); err != nil {
		return s, fmt.Errorf("content: new secret: %w", err)
	}
	return s, nil
}

// Chunk is one encrypted chunk, ready to insert into PAST at Location.
type Chunk struct {
	Location   ids.Key
	Key        [KeySize]byte
	Ciphertext []byte
}

// Entry is what a Ref holds for one chunk: where it is, how to open it, and how long its
// plaintext is.
type Entry struct {
	Location ids.Key
	Key      [KeySize]byte
	Length   uint32 // plaintext bytes, 1..MaxPlain
}

// contentKey is K = HMAC-SHA256(S, labelKey || p).
func contentKey(s *Secret, p []byte) [KeySize]byte {
	m := hmac.New(sha256.New, s[:])
	m.Write([]byte(labelKey))
	m.Write(p)
	var k [KeySize]byte
	m.Sum(k[:0])
	return k
}

func derive(k *[KeySize]byte, label string) [32]byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(label))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// chunkAEAD returns the AEAD and nonce of content key k.
func chunkAEAD(k *[KeySize]byte) (cipher.AEAD, []byte) {
	ek := derive(k, labelEnc)
	block, err := aes.NewCipher(ek[:])
	if err != nil {
		panic("content: aes with a 32-byte key: " + err.Error()) // unreachable
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("content: gcm: " + err.Error()) // unreachable
	}
	n := derive(k, labelNonce)
	return aead, n[:aead.NonceSize()]
}

func chunkAAD(ring ids.RingID) []byte {
	return append([]byte(labelAAD), ring[:]...)
}

// SealChunk encrypts one chunk of 1..MaxPlain bytes. Encrypt and EncryptStream call it; call
// it directly to store chunks as they are produced.
func SealChunk(secret Secret, ring ids.RingID, plaintext []byte) (Chunk, Entry, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxPlain {
		return Chunk{}, Entry{}, fmt.Errorf("%w: chunk of %d bytes, want 1..%d", ErrChunkSize, len(plaintext), MaxPlain)
	}
	k := contentKey(&secret, plaintext)
	aead, nonce := chunkAEAD(&k)
	commit := derive(&k, labelCommit)
	ct := make([]byte, CommitSize, len(plaintext)+Overhead)
	copy(ct, commit[:])
	ct = aead.Seal(ct, nonce, plaintext, chunkAAD(ring))
	loc := ids.Key{Ring: ring, ID: ids.Hash(ct)}
	return Chunk{Location: loc, Key: k, Ciphertext: ct},
		Entry{Location: loc, Key: k, Length: uint32(len(plaintext))}, nil
}

// DecryptChunk opens one chunk fetched from e.Location, checking, in order: the length
// matches e.Length (ErrCorrupt), the bytes hash to the location (ErrCorrupt), the commitment
// matches e.Key (ErrWrongKey), AES-GCM authenticates (ErrCorrupt), and, if secret is not nil,
// that the plaintext re-derives e.Key under the ring's secret (ErrNotConvergent).
//
// Pass the ring's secret whenever the reader holds it. A nil secret (a reader outside the
// ring) still gets a plaintext that is the only one this location can ever yield. (Writers
// always need the secret and take it by value; readers take it by pointer so nil can say
// "not a ring member".)
func DecryptChunk(secret *Secret, e Entry, ciphertext []byte) ([]byte, error) {
	if e.Length == 0 || e.Length > MaxPlain {
		return nil, fmt.Errorf("%w: entry length %d not in 1..%d", ErrMalformed, e.Length, MaxPlain)
	}
	if len(ciphertext) != int(e.Length)+Overhead {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d", ErrCorrupt, e.Location, len(ciphertext), int(e.Length)+Overhead)
	}
	if ids.Hash(ciphertext) != e.Location.ID {
		return nil, fmt.Errorf("%w: bytes fetched for %s do not hash to it", ErrCorrupt, e.Location)
	}
	commit := derive(&e.Key, labelCommit)
	if !hmac.Equal(commit[:], ciphertext[:CommitSize]) {
		return nil, fmt.Errorf("%w: for %s", ErrWrongKey, e.Location)
	}
	aead, nonce := chunkAEAD(&e.Key)
	pt, err := aead.Open(make([]byte, 0, e.Length), nonce, ciphertext[CommitSize:], chunkAAD(e.Location.Ring))
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not authenticate", ErrCorrupt, e.Location)
	}
	if secret != nil {
		if k := contentKey(secret, pt); !hmac.Equal(k[:], e.Key[:]) {
			return nil, fmt.Errorf("%w: %s", ErrNotConvergent, e.Location)
		}
	}
	return pt, nil
}

// payloadHash is the running hash of a whole payload kept in a Ref.
func payloadHash() hash.Hash {
	h := sha256.New()
	h.Write([]byte(labelHash))
	return h
}

// PayloadHash is the Ref.Hash of plaintext: SHA-256(labelHash || plaintext).
func PayloadHash(plaintext []byte) [32]byte {
	h := payloadHash()
	h.Write(plaintext)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Encrypt cuts plaintext into DefaultChunkSize chunks and encrypts them. An empty plaintext
// gives no chunks and a Ref of size 0.
func Encrypt(secret Secret, ring ids.RingID, plaintext []byte) ([]Chunk, Ref) {
	chunks, ref, err := EncryptChunked(secret, ring, plaintext, DefaultChunkSize)
	if err != nil {
		panic("content: default chunk size rejected: " + err.Error()) // unreachable
	}
	return chunks, ref
}

// EncryptChunked is Encrypt with a chunk size of 1..MaxPlain bytes. Deduplication works only
// between payloads cut with the same chunk size, so a ring should keep one.
func EncryptChunked(secret Secret, ring ids.RingID, plaintext []byte, chunkSize int) ([]Chunk, Ref, error) {
	if chunkSize < 1 || chunkSize > MaxPlain {
		return nil, Ref{}, fmt.Errorf("%w: %d, want 1..%d", ErrChunkSize, chunkSize, MaxPlain)
	}
	n := (len(plaintext) + chunkSize - 1) / chunkSize
	if n > MaxRefChunks {
		return nil, Ref{}, fmt.Errorf("%w: %d bytes need %d chunks, more than %d", ErrChunkSize, len(plaintext), n, MaxRefChunks)
	}
	chunks := make([]Chunk, 0, n)
	ref := Ref{Ring: ring, Size: uint64(len(plaintext)), Hash: PayloadHash(plaintext), Chunks: make([]Entry, 0, n)}
	for off := 0; off < len(plaintext); off += chunkSize {
		c, e, err := SealChunk(secret, ring, plaintext[off:min(off+chunkSize, len(plaintext))])
		if err != nil {
			return nil, Ref{}, err
		}
		chunks = append(chunks, c)
		ref.Chunks = append(ref.Chunks, e)
	}
	return chunks, ref, nil
}

// EncryptStream reads r to its end, encrypting chunkSize chunks and handing each to store
// (typically a PAST insert) as soon as it is made, so a large payload is never held whole.
// The Ref is returned once every store call has succeeded.
func EncryptStream(secret Secret, ring ids.RingID, r io.Reader, chunkSize int, store func(Chunk) error) (Ref, error) {
	if chunkSize < 1 || chunkSize > MaxPlain {
		return Ref{}, fmt.Errorf("%w: %d, want 1..%d", ErrChunkSize, chunkSize, MaxPlain)
	}
	ref := Ref{Ring: ring}
	h := payloadHash()
	buf := make([]byte, chunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if len(ref.Chunks) == MaxRefChunks {
				return Ref{}, fmt.Errorf("%w: payload exceeds %d chunks", ErrChunkSize, MaxRefChunks)
			}
			c, e, serr := SealChunk(secret, ring, buf[:n])
			if serr != nil {
				return Ref{}, serr
			}
			if serr := store(c); serr != nil {
				return Ref{}, fmt.Errorf("content: store chunk %d (%s): %w", len(ref.Chunks), c.Location, serr)
			}
			h.Write(buf[:n])
			ref.Size += uint64(n)
			ref.Chunks = append(ref.Chunks, e)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return Ref{}, fmt.Errorf("content: read payload: %w", err)
		}
	}
	h.Sum(ref.Hash[:0])
	return ref, nil
}

// Fetch returns the stored bytes at a location (a PAST lookup). Nothing it returns is trusted.
type Fetch func(ids.Key) ([]byte, error)

// Assemble fetches and decrypts every chunk of ref in order and returns the payload, verifying
// each chunk (DecryptChunk, with secret as there) and then the payload's size and hash.
func Assemble(secret *Secret, ref Ref, fetch Fetch) ([]byte, error) {
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	// Grow as chunks arrive rather than trusting ref.Size for one large allocation.
	out := make([]byte, 0, min(ref.Size, 64<<20))
	w := appendWriter{&out}
	if err := Stream(w, secret, ref, fetch); err != nil {
		return nil, err
	}
	return out, nil
}

type appendWriter struct{ b *[]byte }

func (a appendWriter) Write(p []byte) (int, error) { *a.b = append(*a.b, p...); return len(p), nil }

// Stream is Assemble writing to w chunk by chunk. Each chunk is verified before it is written,
// so w receives only authentic bytes in the right order; but if a later chunk fails, w has
// received a prefix of the payload and the caller must discard it.
func Stream(w io.Writer, secret *Secret, ref Ref, fetch Fetch) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if ref.Inline != nil { // nothing to fetch: the bytes came with the reference
		if h := PayloadHash(ref.Inline); !hmac.Equal(h[:], ref.Hash[:]) {
			return fmt.Errorf("%w: inline payload does not match the reference's hash", ErrCorrupt)
		}
		if _, err := w.Write(ref.Inline); err != nil {
			return fmt.Errorf("content: write inline payload: %w", err)
		}
		return nil
	}
	h := payloadHash()
	for i, e := range ref.Chunks {
		ct, err := fetch(e.Location)
		if err != nil {
			return fmt.Errorf("content: fetch chunk %d/%d (%s): %w", i, len(ref.Chunks), e.Location, err)
		}
		pt, err := DecryptChunk(secret, e, ct)
		if err != nil {
			return fmt.Errorf("content: chunk %d/%d: %w", i, len(ref.Chunks), err)
		}
		h.Write(pt)
		if _, err := w.Write(pt); err != nil {
			return fmt.Errorf("content: write chunk %d: %w", i, err)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	// Not secret, but comparing in constant time costs nothing.
	if !hmac.Equal(sum[:], ref.Hash[:]) {
		return fmt.Errorf("%w: payload does not match the reference's hash", ErrCorrupt)
	}
	return nil
}
