package identity_test

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
)

// The life of an identity: the user's node makes keys and a request, the CA verifies the proof
// of possession and signs a record, the node seals its private keys under the password, and a
// sender verifies the published record before encrypting to it.
func Example() {
	ring := ids.RingIDOf("example.org")
	caPub, caPriv, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	// On the user's node.
	keys, _ := identity.NewKeys(nil)
	req, _ := identity.NewRequest(keys, ring, "Alice@Example.org", now)
	wire := req.Encode()

	// At the CA: it sees public keys only.
	got, _ := identity.DecodeSignedRequest(wire)
	r, err := got.Verify()
	if err != nil {
		panic(err)
	}
	signed, _ := identity.SignRecord(r.Record(1, now, now.AddDate(1, 0, 0)), caPriv)

	// Back on the node: store the keys sealed, publish the record at its key.
	blob, _ := identity.SealPrivate(keys, r.Address, []byte("pw"), nil,
		identity.SealOptions{Time: 1, MemoryKiB: 64, Threads: 1}) // tests only; use DefaultSealOptions
	at := identity.RecordKey(ring, "alice@example.org")

	// A sender fetches the record from `at`, verifies it, and encrypts to it.
	rec, err := signed.Verify(caPub, now.Add(time.Hour), func(uint64) bool { return false })
	if err != nil || rec.Key() != at {
		panic(err)
	}
	bundle, _ := identity.SealTo(rec.Keys.Encryption, []byte("epost/v1/notification"), []byte("hello"), nil)

	// Alice logs in (her password opens her keys) and reads.
	mine, addr, _ := identity.OpenPrivate(blob, []byte("pw"))
	msg, _ := mine.Open(bundle, []byte("epost/v1/notification"), nil)
	fmt.Println(addr, string(msg))
	// Output: alice@example.org hello
}
