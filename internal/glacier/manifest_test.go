package glacier

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"epost/internal/pastry"
	"epost/internal/wire"
)

func testManifest(t *testing.T, seed uint64) (*Codec, *Manifest, [][]byte) {
	t.Helper()
	c, _ := NewCodec(12, 3)
	man, frags, err := NewManifest(c, testKey(seed), testRingID, []byte("agg"), 1, time.Unix(2e9, 0), bytes.Repeat([]byte("x"), 1000))
	if err != nil {
		t.Fatal(err)
	}
	return c, man, frags
}

func TestManifestRoundTripAndChecks(t *testing.T) {
	const seed = 2
	_, man, frags := testManifest(t, seed)
	got, err := NewManifestCache(0).Verified(man.Bytes())
	if err != nil {
		t.Fatalf("seed %d: verify: %v", seed, err)
	}
	if got.Key() != man.Key() || !got.SameContent(man) {
		t.Fatalf("seed %d: round trip changed the manifest", seed)
	}
	_, proofs := merkleTree(frags)
	if err := got.CheckFragment(3, frags[3], proofs[3]); err != nil {
		t.Fatalf("seed %d: good fragment refused: %v", seed, err)
	}
	bad := bytes.Clone(frags[3])
	bad[0] ^= 1
	if err := got.CheckFragment(3, bad, proofs[3]); !errors.Is(err, ErrBadFragment) {
		t.Fatalf("seed %d: corrupted fragment: %v", seed, err)
	}
	if err := got.CheckFragment(4, frags[3], proofs[3]); !errors.Is(err, ErrBadFragment) {
		t.Fatalf("seed %d: fragment under another index: %v", seed, err)
	}
	// Any change to a signed field breaks the signature; so does a stranger's signature.
	for name, mutate := range map[string]func(m *Manifest){
		"version": func(m *Manifest) { m.Version++ },
		"expiry":  func(m *Manifest) { m.Expiry++ },
		"root":    func(m *Manifest) { m.FragRoot[0] ^= 1 },
		"name":    func(m *Manifest) { m.Name = []byte("other") },
		"owner": func(m *Manifest) {
			m.Owner = testKey(seed + 1).Public().(ed25519.PublicKey)
		},
	} {
		forged := *man
		mutate(&forged)
		if _, err := NewManifestCache(0).Verified(forged.Bytes()); !errors.Is(err, ErrBadManifest) {
			t.Fatalf("seed %d: forged %s accepted: %v", seed, name, err)
		}
	}
}

// A holder refuses a fragment whose manifest signature is forged, and one that does not match
// its manifest; it stores neither and says why.
func TestHolderRefusesForgeries(t *testing.T) {
	const seed = 3
	cfg := testConfig()
	st := NewMemStore()
	self := pastry.Handle{ID: testRingID, Addr: "h"}
	n, err := NewNode(cfg, self, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, man, frags := testManifest(t, seed)
	client := pastry.Handle{ID: man.Key(), Addr: "c"}
	_, proofs := merkleTree(frags)
	store := func(m *Manifest, idx int, data []byte) code {
		p := (&message{Type: mStore, Op: 1, Index: uint16(idx), Manifest: m, Proof: proofs[idx], Data: data}).encode()
		if err := n.Deliver(time.Unix(1e9, 0), client, m.FragmentKey(idx), p); err != nil {
			t.Fatalf("seed %d: deliver: %v", seed, err)
		}
		out := n.TakeOutbox()
		if len(out) != 1 {
			t.Fatalf("seed %d: %d replies", seed, len(out))
		}
		r, err := decodeMessage(out[0].Payload)
		if err != nil || r.Type != mStoreAck {
			t.Fatalf("seed %d: reply %v %v", seed, r, err)
		}
		return r.Code
	}
	forged := *man
	forged.Expiry += int64(time.Hour) // e.g. a stranger extending the lease
	if c := store(&forged, 0, frags[0]); c != codeBadManifest {
		t.Fatalf("seed %d: forged signature: code %d", seed, c)
	}
	bad := bytes.Clone(frags[1])
	bad[5] ^= 0x80
	if c := store(man, 1, bad); c != codeBadFragment {
		t.Fatalf("seed %d: corrupted fragment: code %d", seed, c)
	}
	if st.Len() != 0 {
		t.Fatalf("seed %d: holder stored %d forged fragments", seed, st.Len())
	}
	if c := store(man, 2, frags[2]); c != codeOK || st.Len() != 1 {
		t.Fatalf("seed %d: good fragment: code %d, stored %d", seed, c, st.Len())
	}
}

// The manifest decoder never panics and refuses what does not round-trip.
func FuzzManifest(f *testing.F) {
	c, _ := NewCodec(12, 3)
	man, _, _ := NewManifest(c, testKey(1), testRingID, []byte("n"), 1, time.Unix(2e9, 0), []byte("hello"))
	f.Add(man.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := wire.NewReader(b)
		m := DecodeManifest(r)
		if r.Done() != nil {
			return
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatalf("decoded manifest does not re-encode to its input")
		}
		_, _ = NewManifestCache(0).Verified(b)
	})
}

// The message decoder never panics; what it accepts re-encodes to the same bytes.
func FuzzMessage(f *testing.F) {
	c, _ := NewCodec(12, 3)
	man, frags, _ := NewManifest(c, testKey(1), testRingID, []byte("n"), 1, time.Unix(2e9, 0), []byte("hello world"))
	_, proofs := merkleTree(frags)
	c1, _ := NewCodec(1, 1)
	man1, frags1, _ := NewManifest(c1, testKey(1), testRingID, []byte("n"), 1, time.Unix(2e9, 0), []byte("one"))
	for _, m := range []*message{
		{Type: mStore, Op: 7, Index: 2, Manifest: man, Proof: proofs[2], Data: frags[2]},
		{Type: mStore, Op: 7, Index: 0, Manifest: man1, Proof: [][32]byte{}, Data: frags1[0]},
		{Type: mStoreAck, Op: 7, Index: 2, Code: codeBadFragment},
		{Type: mFetch, Op: 8, Key: man.Key(), Index: 3, Maint: true},
		{Type: mFetchReply, Op: 8, Index: 3, Manifest: man, Proof: proofs[3], Data: frags[3]},
		{Type: mFetchReply, Op: 8, Index: 3, Code: codeNotFound},
		{Type: mSyncRequest, Op: 9, Requester: pastry.Handle{ID: man.Key(), Addr: "a:1"}, From: man.Key(), Offset: 3, Want: 16, Salt: 5, Bloom: []byte{1, 2, 3}},
		{Type: mSyncOffer, Op: 9, Offers: []Offer{{Key: man.Key(), Index: 1, SrcIndex: 4, Version: 3}}},
		{Type: mRenew, Op: 10, Index: 5, Manifest: man},
		{Type: mRenewAck, Op: 10, Index: 5, Code: codeStale},
	} {
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if m.RawMan != nil {
			r := wire.NewReader(m.RawMan)
			m.Manifest = DecodeManifest(r)
			if r.Done() != nil {
				t.Fatalf("delimited manifest does not decode")
			}
		}
		if got := m.encode(); !bytes.Equal(got, b) {
			t.Fatalf("message does not re-encode to its input:\n%x\n%x", b, got)
		}
	})
}

// A node holding positions of its own insert takes them without hashing them again only when
// they are byte for byte what it encoded: a routed message claiming to come from the node
// itself with other bytes is checked against the manifest and refused.
func TestOwnFragmentsTakenOnlyUnchanged(t *testing.T) {
	const seed = 4
	cfg := testConfig()
	st := NewMemStore()
	_, man, frags := testManifest(t, seed)
	self := pastry.Handle{ID: man.FragmentKey(0), Addr: "h"}
	n, err := NewNode(cfg, self, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	n.Insert(now, man, frags, func(InsertResult) {})
	out := n.TakeOutbox()
	if len(out) == 0 || len(out[0].Tail) == 0 {
		t.Fatalf("seed %d: the insert's first message carries no fragment in its tail: %d messages", seed, len(out))
	}
	m, err := decodeMessage(append(slices.Clone(out[0].Payload), out[0].Tail...))
	if err != nil || m.Type != mStore {
		t.Fatalf("seed %d: insert message %v %v", seed, m, err)
	}
	_, proofs := merkleTree(frags)
	// Answers to ourselves are handled here, not sent: the counters tell.
	deliver := func(idx int, data []byte) (stored, refused uint64) {
		before := n.Stats()
		p := (&message{Type: mStore, Op: m.Op, Index: uint16(idx), Manifest: man, Proof: proofs[idx], Data: data}).encode()
		if err := n.Deliver(now, self, man.FragmentKey(idx), p); err != nil {
			t.Fatalf("seed %d: deliver: %v", seed, err)
		}
		after := n.Stats()
		return after.Stored - before.Stored, after.Refused - before.Refused
	}
	if !n.ownFragment(self, man, &message{Op: m.Op, Index: 0, Proof: proofs[0], Data: frags[0]}) {
		t.Fatalf("seed %d: own fragment not recognised", seed)
	}
	if n.ownFragment(pastry.Handle{ID: man.FragmentKey(1), Addr: "c"}, man, &message{Op: m.Op, Index: 0, Proof: proofs[0], Data: frags[0]}) {
		t.Fatalf("seed %d: another node's message taken for our own", seed)
	}
	bad := bytes.Clone(frags[1])
	bad[7] ^= 0x40
	if n.ownFragment(self, man, &message{Op: m.Op, Index: 1, Proof: proofs[1], Data: bad}) {
		t.Fatalf("seed %d: altered bytes taken for our own fragment", seed)
	}
	if stored, refused := deliver(1, bad); stored != 0 || refused != 1 {
		t.Fatalf("seed %d: altered own fragment: stored %d, refused %d", seed, stored, refused)
	}
	if stored, refused := deliver(0, frags[0]); stored != 1 || refused != 0 || st.Len() != 1 {
		t.Fatalf("seed %d: own fragment: stored %d, refused %d, held %d", seed, stored, refused, st.Len())
	}
}
