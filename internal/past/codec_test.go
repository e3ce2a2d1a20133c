package past

import (
	"bytes"
	"crypto/ed25519"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

func sampleMessages() []*message {
	rng := rand.New(rand.NewPCG(1, 2))
	ring := ids.RingIDOf("codec")
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	lease := time.Unix(0, 1_800_000_000_000_000_000).UTC()
	signed := NewSigned(priv, ring, []byte("head"), 7, []byte("payload"), lease)
	content := NewContent(ring, []byte("chunk"), lease)
	h := pastry.Handle{ID: ids.HashString("a"), Addr: "10.0.0.1:4000"}
	k := content.Key
	return []*message{
		{Type: mLocate, Op: 1, Key: k},
		{Type: mLocateReply, Op: 2, Key: k, Handles: []pastry.Handle{h, h}},
		{Type: mStore, Op: 3, Objects: []Object{signed}},
		{Type: mStoreAck, Op: 4, Key: k, Code: codeStale, Detail: "older"},
		{Type: mLookup, Op: 5, Key: k, Origin: h},
		{Type: mLookupReply, Op: 6, Key: k, Objects: []Object{content}},
		{Type: mRefresh, Op: 7, Key: k, Flag: true, Expiry: 99},
		{Type: mRefreshReply, Op: 8, Key: k, Code: codeNotFound},
		{Type: mSyncRequest, Op: 9, Arc: store.Arc{Ring: ring, From: ids.HashString("x"), To: ids.HashString("y")}, Count: 3, Digest: 4, Salt: 5, Bloom: []byte{1, 2, 3}},
		{Type: mSyncOffer, Op: 10, Key: ids.Key{Ring: ring}, Flag: true, Keys: []KeySeq{{ID: k.ID, Seq: 3}}},
		{Type: mFetch, Op: 11, Key: ids.Key{Ring: ring}, Keys: []KeySeq{{ID: k.ID}}},
		{Type: mFetchReply, Op: 12, Objects: []Object{content, signed}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := m.encode(nil)
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", m.Type, got, m)
		}
		for cut := 0; cut < len(b); cut++ {
			if _, err := decodeMessage(b[:cut]); err == nil {
				t.Fatalf("%s: truncated to %d bytes decoded", m.Type, cut)
			}
		}
	}
}

// FuzzDecodeMessage: PAST messages come from peers; decoding must never panic, and whatever
// decodes must re-encode to the same bytes.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m.encode(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if again := m.encode(nil); !bytes.Equal(again, b) {
			// Non-canonical varints may decode; then the re-encoding must decode the same.
			m2, err := decodeMessage(again)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("re-encoding differs: %v", err)
			}
		}
		_ = Validate(&Object{}, ids.Zero, time.Time{})
		for i := range m.Objects {
			_ = Validate(&m.Objects[i], m.Objects[i].Key.Ring, time.Unix(0, 0))
		}
	})
}

func TestMidpointAndArc(t *testing.T) {
	a := ids.Fraction(1, 8)
	b := ids.Fraction(3, 8)
	if got := midpoint(a, b); got != ids.Fraction(2, 8) {
		t.Fatalf("midpoint: %s", got)
	}
	// Across zero: from 7/8 clockwise to 1/8 the middle is 0.
	if got := midpoint(ids.Fraction(7, 8), ids.Fraction(1, 8)); got != ids.Zero {
		t.Fatalf("midpoint across zero: %s", got)
	}
	// A node at 4/8 with neighbours every 1/8: with k=2 its arc is (2.5/8... computed from
	// L_2 = 2/8 and R_2 = 6/8: (3/8, 5/8].
	cfg := DefaultConfig()
	cfg.Replicas = 2
	n := NewNode(cfg, pastry.Handle{ID: ids.Fraction(4, 8)}, NewMemStore(time.Now, 0), rand.New(rand.NewPCG(1, 1)))
	hs := func(is ...int) []pastry.Handle {
		var out []pastry.Handle
		for _, i := range is {
			out = append(out, pastry.Handle{ID: ids.Fraction(i, 8), Addr: "x"})
		}
		return out
	}
	n.SetLeafSet(time.Now(), hs(3, 2, 1), hs(5, 6, 7))
	arc, whole := n.responsibleArc()
	if whole || arc.From != ids.Fraction(3, 8) || arc.To != ids.Fraction(5, 8) {
		t.Fatalf("arc %s whole %v", arc, whole)
	}
	// Brute force: keys in the arc are exactly those for which the node is among the 2 closest.
	rng := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 2000; i++ {
		var key ids.ID
		for j := range key {
			key[j] = byte(rng.Uint32())
		}
		in := slices.ContainsFunc(n.replicaSet(key), func(h pastry.Handle) bool { return h.ID == n.self.ID })
		if in != arc.Contains(ids.Key{Ring: cfg.Ring, ID: key}) {
			t.Fatalf("key %s: in replica set %v, in arc %v", key.Short(), in, !in)
		}
	}
}

// MemStore.Range must yield exactly the keys on the arc, wrapping or not, in clockwise order.
func TestMemStoreRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	ring := ids.RingIDOf("r")
	m := NewMemStore(time.Now, 0)
	var keys []ids.Key
	for i := 0; i < 300; i++ {
		o := NewContent(ring, randomPayload(rng, 16), time.Time{})
		keys = append(keys, o.Key)
		if err := m.PutIf(o, nil); err != nil {
			t.Fatal(err)
		}
	}
	other := NewContent(ids.RingIDOf("other"), []byte("x"), time.Time{})
	_ = m.PutIf(other, nil)
	for trial := 0; trial < 200; trial++ {
		arc := store.Arc{Ring: ring, From: ids.Hash(randomPayload(rng, 4)), To: ids.Hash(randomPayload(rng, 4))}
		switch trial % 4 {
		case 0:
			arc.To = arc.From // whole ring
		case 1:
			arc.From = keys[rng.IntN(len(keys))].ID // boundary on a key
		}
		want := 0
		for _, k := range keys {
			if arc.Contains(k) {
				want++
			}
		}
		got := 0
		var prev ids.ID
		for meta := range m.Range(arc) {
			if !arc.Contains(meta.Key) {
				t.Fatalf("trial %d: %s not on %s", trial, meta.Key, arc)
			}
			if got > 0 && ids.Cmp(ids.Clockwise(arc.From, prev), ids.Clockwise(arc.From, meta.Key.ID)) >= 0 {
				t.Fatalf("trial %d: not clockwise", trial)
			}
			prev = meta.Key.ID
			got++
		}
		if got != want {
			t.Fatalf("trial %d: %d keys on %s, want %d", trial, got, arc, want)
		}
	}
}

// A neighbour cannot push: unsolicited or invalid maintenance transfers are not stored.
func TestMaintenanceTransfersAreValidated(t *testing.T) {
	ring := ids.RingIDOf("test")
	cfg := DefaultConfig()
	cfg.Ring = ring
	now := time.Unix(1_800_000_000, 0)
	st := NewMemStore(func() time.Time { return now }, 0)
	n := NewNode(cfg, pastry.Handle{ID: ids.HashString("self"), Addr: "self"}, st, rand.New(rand.NewPCG(1, 1)))
	peer := pastry.Handle{ID: ids.HashString("peer"), Addr: "peer"}
	good := NewContent(ring, []byte("good"), now.Add(time.Hour))
	bad := NewContent(ring, []byte("bad"), now.Add(time.Hour))
	bad.Payload = []byte("garbage")
	deliver := func(objs ...Object) {
		p := (&message{Type: mFetchReply, Objects: objs}).encode(nil)
		if err := n.Direct(now, peer, p); err != nil {
			t.Fatal(err)
		}
	}
	deliver(good) // unsolicited
	if st.Has(good.Key) {
		t.Fatal("stored an unsolicited push")
	}
	n.fetching[good.Key] = now.Add(time.Minute)
	n.fetching[bad.Key] = now.Add(time.Minute)
	deliver(good, bad)
	if !st.Has(good.Key) || st.Has(bad.Key) {
		t.Fatalf("good stored %v, bad stored %v", st.Has(good.Key), st.Has(bad.Key))
	}
	if n.Stats().Refused != 1 || n.Stats().Repaired != 1 {
		t.Fatalf("stats %+v", n.Stats())
	}
}

// TestEncodeParts: a message ending with a large object payload is cut in front of it, the
// tail being the payload itself (not a copy), and the parts joined are encode's bytes; a small
// last payload stays in the head.
func TestEncodeParts(t *testing.T) {
	big := bytes.Repeat([]byte("chunk "), minTail)
	small := NewContent(ids.RingIDOf("codec"), []byte("small"), time.Unix(0, 1_800_000_000_000_000_000).UTC())
	for _, m := range []*message{
		{Type: mStore, Op: 1, Objects: []Object{NewContent(ids.RingIDOf("codec"), big, time.Unix(0, 1_800_000_000_000_000_000).UTC())}},
		{Type: mFetchReply, Op: 2, Objects: []Object{small, NewContent(ids.RingIDOf("codec"), big, time.Time{})}},
		{Type: mLookupReply, Op: 3, Objects: []Object{NewContent(ids.RingIDOf("codec"), big, time.Time{})}},
		{Type: mStore, Op: 4, Objects: []Object{small}},
	} {
		head, tail := m.encodeParts(nil)
		last := m.Objects[len(m.Objects)-1].Payload
		if len(last) >= minTail && (len(tail) != len(last) || &tail[0] != &last[0]) {
			t.Fatalf("%s: tail of %d bytes is not the last payload (%d bytes)", m.Type, len(tail), len(last))
		}
		if len(last) < minTail && tail != nil {
			t.Fatalf("%s: a tail of %d bytes for a small payload", m.Type, len(tail))
		}
		joined := append(slices.Clone(head), tail...)
		if !bytes.Equal(joined, m.encode(nil)) {
			t.Fatalf("%s: parts differ from encode", m.Type)
		}
		got, err := decodeMessage(joined)
		if err != nil || len(got.Objects) != len(m.Objects) || !bytes.Equal(got.Objects[len(got.Objects)-1].Payload, last) {
			t.Fatalf("%s: round trip: %v", m.Type, err)
		}
	}
}
