package ids

import (
	"crypto/sha256"
	"fmt"
	"strings"
)

// RingID names a ring: the hash of its CA's public key (RingIDOfCA; rings made before
// federation: of its name, RingIDOf), or Zero for the global ring.
type RingID = ID

// GlobalRing is the ring id of the global ring that connects organizations.
var GlobalRing RingID = Zero

// RingIDOf derives a ring's id from its name: the ids of rings made before federation
// (descriptor version 1), and of rings in tests and the simulator. Anyone can compute it for
// any name, so it does not tell two rings of the same name apart.
func RingIDOf(name string) RingID { return HashString("epost-ring:" + name) }

// RingIDOfCA derives a ring's id from its CA's Ed25519 public key (descriptor version 2):
// nobody can claim the id without the CA's private key, and two rings of the same name differ.
// A CA certificate re-issued over the same key keeps the id.
func RingIDOfCA(caPub []byte) RingID {
	h := sha256.New()
	h.Write([]byte("epost-ring-id-v2\x00"))
	h.Write(caPub)
	var id RingID
	h.Sum(id[:0])
	return id
}

// Key is an id qualified by the ring it lives in. Every stored object and every node address
// carries one, so that rings never mix their data.
type Key struct {
	Ring RingID
	ID   ID
}

// String is "RING/ID" in short hex form, for logs.
func (k Key) String() string { return k.Ring.Short() + "/" + k.ID.Short() }

// Full is "RING/ID" in full hex, parseable by ParseKey.
func (k Key) Full() string { return k.Ring.String() + "/" + k.ID.String() }

// ParseKey reads the form printed by Full.
func ParseKey(s string) (Key, error) {
	r, i, ok := strings.Cut(s, "/")
	if !ok {
		return Key{}, fmt.Errorf("%w: key %q lacks a '/' between ring and id", ErrBadID, s)
	}
	ring, err := Parse(r)
	if err != nil {
		return Key{}, err
	}
	id, err := Parse(i)
	if err != nil {
		return Key{}, err
	}
	return Key{Ring: ring, ID: id}, nil
}
