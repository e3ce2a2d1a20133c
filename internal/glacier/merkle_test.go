package glacier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"epost/internal/wire"

	bolt "go.etcd.io/bbolt"
)

// Every fragment verifies at its index with its proof; a flipped bit in the data, in any
// proof hash or in the root, another index, or a proof of the wrong length, does not.
func TestMerkleProofs(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 64, 255, 256} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			seed := uint64(n)
			c, err := NewCodec(n, max(1, n/4))
			if err != nil {
				t.Fatal(err)
			}
			obj := randBytes(rand.New(rand.NewPCG(seed, 3)), 3000)
			man, frags, err := NewManifest(c, testKey(seed), testRingID, []byte("merkle"), 1, time.Unix(2e9, 0), obj)
			if err != nil {
				t.Fatal(err)
			}
			root, proofs := merkleTree(frags)
			if root != man.FragRoot {
				t.Fatalf("seed %d: tree root differs from the manifest's", seed)
			}
			forged := *man
			forged.FragRoot[31] ^= 1
			for i := range n {
				if len(proofs[i]) != ProofLen(n) {
					t.Fatalf("seed %d: proof %d has %d hashes, want %d", seed, i, len(proofs[i]), ProofLen(n))
				}
				if err := man.CheckFragment(i, frags[i], proofs[i]); err != nil {
					t.Fatalf("seed %d: fragment %d refused: %v", seed, i, err)
				}
				bad := bytes.Clone(frags[i])
				bad[len(bad)-1] ^= 1
				if err := man.CheckFragment(i, bad, proofs[i]); !errors.Is(err, ErrBadFragment) {
					t.Fatalf("seed %d: fragment %d with a flipped data bit: %v", seed, i, err)
				}
				for k := range proofs[i] {
					p := append([][32]byte(nil), proofs[i]...)
					p[k][0] ^= 0x80
					if err := man.CheckFragment(i, frags[i], p); !errors.Is(err, ErrBadFragment) {
						t.Fatalf("seed %d: fragment %d with proof hash %d flipped: %v", seed, i, k, err)
					}
				}
				if err := forged.CheckFragment(i, frags[i], proofs[i]); !errors.Is(err, ErrBadFragment) {
					t.Fatalf("seed %d: fragment %d against a flipped root: %v", seed, i, err)
				}
				if n > 1 {
					j := (i + 1) % n
					if err := man.CheckFragment(j, frags[i], proofs[i]); !errors.Is(err, ErrBadFragment) {
						t.Fatalf("seed %d: fragment %d under index %d: %v", seed, i, j, err)
					}
					if err := man.CheckFragment(i, frags[i], proofs[i][:len(proofs[i])-1]); !errors.Is(err, ErrBadFragment) {
						t.Fatalf("seed %d: fragment %d with a short proof: %v", seed, i, err)
					}
				}
				if err := man.CheckFragment(i, frags[i], append(proofs[i], [32]byte{})); !errors.Is(err, ErrBadFragment) {
					t.Fatalf("seed %d: fragment %d with a long proof: %v", seed, i, err)
				}
			}
			for _, i := range []int{-1, n} {
				if err := man.CheckFragment(i, frags[0], proofs[0]); !errors.Is(err, ErrBadFragment) {
					t.Fatalf("seed %d: index %d: %v", seed, i, err)
				}
			}
		})
	}
}

func TestProofLen(t *testing.T) {
	for n, want := range map[int]int{1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 8: 3, 9: 4, 48: 6, 64: 6, 65: 7, 255: 8, 256: 8} {
		if got := ProofLen(n); got != want {
			t.Errorf("ProofLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// oldManifestLen is the wire size a manifest had in format 1: no format byte, and instead of
// the 32-byte root a uvarint count and 32 bytes per fragment.
func oldManifestLen(m *Manifest) int {
	return len(m.Bytes()) - 1 - 32 + len(binary.AppendUvarint(nil, uint64(m.N))) + 32*int(m.N)
}

// oldDiskEntryLen is a format-1 DiskStore value: format, index, manifest, data.
func oldDiskEntryLen(m *Manifest, data []byte) int {
	ml := oldManifestLen(m)
	return 1 + 2 + len(binary.AppendUvarint(nil, uint64(ml))) + ml + len(data)
}

// The manifest no longer grows with n, and the bytes stored for a 2 KiB object at 64/8 drop
// from ≈ 78 times the object to ≈ 21 times (of which 8 is the code's stretch).
func TestManifestConstantSize(t *testing.T) {
	var size int
	for _, nm := range [][2]int{{1, 1}, {12, 3}, {48, 5}, {64, 8}, {256, 64}} {
		c, _ := NewCodec(nm[0], nm[1])
		man, _, err := NewManifest(c, testKey(1), testRingID, []byte("aggregate-12345"), 1, time.Unix(2e9, 0), make([]byte, 2048))
		if err != nil {
			t.Fatal(err)
		}
		if size == 0 {
			size = len(man.Bytes())
		}
		if len(man.Bytes()) != size || size > 256 {
			t.Fatalf("%d/%d: manifest of %d bytes, want %d (at most 256) for every n", nm[0], nm[1], len(man.Bytes()), size)
		}
	}

	c, _ := NewCodec(64, 8)
	obj := randBytes(rand.New(rand.NewPCG(1, 1)), 2048)
	man, frags, err := NewManifest(c, testKey(1), testRingID, []byte("aggregate-12345"), 1, time.Unix(2e9, 0), obj)
	if err != nil {
		t.Fatal(err)
	}
	_, proofs := merkleTree(frags)
	var before, after, wireBefore, wireAfter int
	for i := range frags {
		after += len(encodeInlineEntry(&Fragment{Manifest: man, Index: i, Data: frags[i], Proof: proofs[i]}))
		before += oldDiskEntryLen(man, frags[i])
		m := len((&message{Type: mStore, Op: 1, Index: uint16(i), Manifest: man, Proof: proofs[i], Data: frags[i]}).encode())
		wireAfter += m
		// format 1: the same message with the old manifest and without the proof
		wireBefore += m - len(man.Bytes()) - 1 - 32*len(proofs[i]) + oldManifestLen(man)
	}
	t.Logf("2 KiB object at 64/8: manifest %d bytes (format 1: %d), proof %d bytes; stored %d bytes = %.1f× (format 1: %d = %.1f×); insert messages %d bytes (format 1: %d)",
		len(man.Bytes()), oldManifestLen(man), 32*len(proofs[0]), after, float64(after)/2048, before, float64(before)/2048, wireAfter, wireBefore)
	if len(man.Bytes()) != size || 3*after > before {
		t.Fatalf("stored %d bytes, format 1 %d: want less than a third", after, before)
	}
}

// Encodings of earlier formats are refused with an error that says so.
func TestOldFormatsRefused(t *testing.T) {
	_, man, frags := testManifest(t, 4)
	old := man.Bytes()
	old[0] = 1
	r := wire.NewReader(old)
	DecodeManifest(r)
	if err := r.Done(); err == nil || !strings.Contains(err.Error(), "format 1") {
		t.Fatalf("manifest of format 1: %v", err)
	}
	if _, err := NewManifestCache(0).Verified(old); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("verified a manifest of format 1: %v", err)
	}
	// A message whose proof does not have ProofLen(n) hashes is malformed.
	_, proofs := merkleTree(frags)
	for _, p := range [][][32]byte{nil, proofs[1][:len(proofs[1])-1], append(proofs[1], [32]byte{})} {
		b := (&message{Type: mStore, Op: 1, Index: 1, Manifest: man, Proof: p, Data: frags[1]}).encode()
		if _, err := decodeMessage(b); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("store with a proof of %d hashes: %v", len(p), err)
		}
	}
	if _, err := decodeMessage((&message{Type: mStore, Op: 1, Index: 1, Manifest: man, Proof: proofs[1], Data: frags[1]}).encode()); err != nil {
		t.Fatalf("good store refused: %v", err)
	}
	// A fragment store file of format 1 is refused, naming the file and what to do.
	path := filepath.Join(t.TempDir(), "glacier.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(metaFormat, []byte{1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenDiskStore(path)
	if err == nil {
		s.Close()
		t.Fatal("a format-1 fragment store opened")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("error %q should name %s and say to move it aside", err, path)
	}
}
