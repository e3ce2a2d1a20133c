package glacier

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Fragment commitment: a binary Merkle tree over the n fragments, whose root the manifest
// signs (Manifest.FragRoot). Each fragment travels and is stored with its inclusion proof,
// so a manifest is of constant size (≈ 220 bytes) whatever n, and each fragment carries
// ceil(log2 n) hashes (6, 192 bytes, at n = 64) instead of a manifest listing all n.
//
//	leaf_i  = SHA-256(leafDomain ‖ i (u16, big-endian) ‖ fragment_i)
//	node    = SHA-256(nodeDomain ‖ left ‖ right)
//	padding = SHA-256(emptyDomain), for positions n..2^d-1
//
// The leaf count is padded to the next power of two, 2^d with d = ceil(log2 n), with the fixed
// empty leaf (rather than promoting odd nodes), so every proof has exactly d siblings and a
// decoder can demand that length from n alone. The domains keep a leaf, an inner node and the
// padding from ever being taken for one another, and binding i into the leaf keeps a fragment
// from verifying at another position even where two fragments happen to be equal.
const (
	leafDomain  = "epost-glacier-leaf-v2\x00"
	nodeDomain  = "epost-glacier-node-v2\x00"
	emptyDomain = "epost-glacier-empty-v2\x00"
)

// maxProofLen is the depth of the tree for MaxFragments leaves.
const maxProofLen = 8

var emptyLeaf = sha256.Sum256([]byte(emptyDomain))

// ProofLen is the number of sibling hashes in an inclusion proof for a tree of n leaves:
// ceil(log2 n) (0 for n = 1, 6 for n = 64, 8 for n = 256).
func ProofLen(n int) int {
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

func leafHash(i int, data []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(leafDomain))
	var idx [2]byte
	binary.BigEndian.PutUint16(idx[:], uint16(i))
	h.Write(idx[:])
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func nodeHash(l, r *[32]byte) [32]byte {
	var b [len(nodeDomain) + 64]byte
	copy(b[:], nodeDomain)
	copy(b[len(nodeDomain):], l[:])
	copy(b[len(nodeDomain)+32:], r[:])
	return sha256.Sum256(b[:])
}

// merkleTree returns the root over frags and every fragment's inclusion proof (siblings from
// the leaf up).
func merkleTree(frags [][]byte) (root [32]byte, proofs [][][32]byte) {
	n := len(frags)
	d := ProofLen(n)
	level := make([][32]byte, 1<<d)
	for i := range level {
		if i < n {
			level[i] = leafHash(i, frags[i])
		} else {
			level[i] = emptyLeaf
		}
	}
	proofs = make([][][32]byte, n)
	flat := make([][32]byte, n*d) // one allocation for all proofs
	for i := range proofs {
		proofs[i] = flat[i*d : (i+1)*d : (i+1)*d]
	}
	for k := 0; k < d; k++ {
		for i := range proofs {
			proofs[i][k] = level[(i>>k)^1]
		}
		next := make([][32]byte, len(level)/2)
		for j := range next {
			next[j] = nodeHash(&level[2*j], &level[2*j+1])
		}
		level = next
	}
	return level[0], proofs
}

// rootFromProof is the root implied by data being leaf i with proof.
func rootFromProof(i int, data []byte, proof [][32]byte) [32]byte {
	h := leafHash(i, data)
	for k := range proof {
		if (i>>k)&1 == 0 {
			h = nodeHash(&h, &proof[k])
		} else {
			h = nodeHash(&proof[k], &h)
		}
	}
	return h
}
