package post

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
)

type testCA struct {
	ring ids.RingID
	key  ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newCA(seed uint64) testCA {
	r := rand.NewChaCha8([32]byte{byte(seed)})
	var s [32]byte
	r.Read(s[:])
	k := ed25519.NewKeyFromSeed(s[:])
	return testCA{ring: ids.RingIDOf("t"), key: k, pub: k.Public().(ed25519.PublicKey)}
}

func (c testCA) user(t *testing.T, addr string, serial uint64, seed byte) (*identity.Keys, identity.SignedRecord) {
	t.Helper()
	keys, err := identity.NewKeys(rand.NewChaCha8([32]byte{seed}))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	sr, err := identity.SignRecord(identity.Record{Ring: c.ring, Address: addr, Keys: keys.Public(), Serial: serial,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return keys, sr
}

func testNote(t *testing.T, ca testCA, sender identity.SignedRecord, to string) *Notification {
	_, ref := content.Encrypt(content.Secret{1}, ca.ring, []byte("hello"))
	return &Notification{ID: NotificationID{7}, From: "a@x.org", To: to, Time: time.Unix(1_800_000_000, 0), Size: 5, Parts: []content.Ref{ref}, SenderRecord: sender}
}

// A notification is accepted only when signed by the sender's CA-certified key, for us.
func TestNotificationVerification(t *testing.T) {
	ca := newCA(1)
	other := newCA(2)
	now := time.Unix(1_800_000_000, 0)
	aKeys, aRec := ca.user(t, "a@x.org", 1, 1)
	bKeys, bRec := ca.user(t, "b@x.org", 2, 2)
	bPub, _ := identity.DecodeRecord(bRec.Body)
	_, forgedRec := other.user(t, "a@x.org", 1, 1) // same keys, uncertified by our CA
	chk := &SenderCheck{Ring: ca.ring, CA: ca.pub}
	seal := func(rec identity.SignedRecord, signer *identity.Keys, to string) []byte {
		b, err := sealNotification(testNote(t, ca, rec, to), signer, ca.ring, bPub.Keys.Encryption)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := openNotification(seal(aRec, aKeys, "b@x.org"), NotificationID{7}, bKeys, "b@x.org", chk, now); err != nil {
		t.Fatalf("good notification refused: %v", err)
	}
	if _, err := openNotification(seal(forgedRec, aKeys, "b@x.org"), NotificationID{7}, bKeys, "b@x.org", chk, now); !errors.Is(err, ErrUnknownSender) {
		t.Fatalf("uncertified sender: %v", err)
	}
	if _, err := openNotification(seal(aRec, bKeys, "b@x.org"), NotificationID{7}, bKeys, "b@x.org", chk, now); !errors.Is(err, ErrUnknownSender) {
		t.Fatalf("signature by a key not in the record: %v", err)
	}
	if _, err := openNotification(seal(aRec, aKeys, "c@x.org"), NotificationID{7}, bKeys, "b@x.org", chk, now); !errors.Is(err, ErrNotForUs) {
		t.Fatalf("re-addressed notification: %v", err)
	}
	revoked := &SenderCheck{Ring: ca.ring, CA: ca.pub, Revoked: func(s uint64) bool { return s == 1 }}
	if _, err := openNotification(seal(aRec, aKeys, "b@x.org"), NotificationID{7}, bKeys, "b@x.org", revoked, now); !errors.Is(err, ErrRevokedSender) {
		t.Fatalf("revoked sender: %v", err)
	}
	if _, err := openNotification(seal(aRec, aKeys, "b@x.org"), NotificationID{8}, bKeys, "b@x.org", chk, now); err == nil {
		t.Fatal("notification opened under another id")
	}
}

// Log entries and heads round-trip and refuse tampering.
func TestLogCodec(t *testing.T) {
	ca := newCA(3)
	keys, _ := ca.user(t, "a@x.org", 1, 3)
	rnd := rand.NewChaCha8([32]byte{9})
	head := past.SignedKey(ca.ring, keys.Public().Signing, []byte("epost/v1/log/INBOX"))
	var lk [32]byte
	rnd.Read(lk[:])
	ct, err := sealEntry(&lk, rnd, head, 4, ids.Hash([]byte("prev")), []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	idx, prev, body, err := openEntry(&lk, head, ct)
	if err != nil || idx != 4 || prev != ids.Hash([]byte("prev")) || string(body) != "body" {
		t.Fatalf("entry round trip: %v %d %q", err, idx, body)
	}
	ct[len(ct)-1] ^= 1
	if _, _, _, err := openEntry(&lk, head, ct); err == nil {
		t.Fatal("tampered entry opened")
	}
	wrapped, err := wrapLogKey(keys.Public().Encryption, head, &lk)
	if err != nil {
		t.Fatal(err)
	}
	st := &headState{Count: 5, Newest: ids.Hash([]byte("n")), InlineFrom: 4, Inline: [][]byte{[]byte("x")}}
	p, err := encodeHead(&lk, rnd, head, wrapped, st)
	if err != nil {
		t.Fatal(err)
	}
	k2, _, st2, err := decodeHead(keys, head, p)
	if err != nil || k2 != lk || st2.Count != 5 || st2.Newest != st.Newest {
		t.Fatalf("head round trip: %v", err)
	}
}

func FuzzDecodePostMsg(f *testing.F) {
	f.Add((&postMsg{Type: mNotify, Recipient: "a@x.org", Sealed: []byte("abc")}).encode())
	f.Add((&postMsg{Type: mNotifyStored, Recipient: "a@x.org", ID: NotificationID{1}, Sealed: []byte("abc")}).encode())
	f.Add((&postMsg{Type: mOnline, Recipient: "a@x.org", Sig: make([]byte, 64)}).encode())
	f.Add((&postMsg{Type: mWhere, Recipient: "a@x.org"}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodePostMsg(b); err == nil {
			if _, err := decodePostMsg(m.encode()); err != nil {
				t.Fatalf("re-encoding does not decode: %v", err)
			}
		}
	})
}

func FuzzDecodeNotification(f *testing.F) {
	ca := newCA(4)
	_, ref := content.Encrypt(content.Secret{1}, ca.ring, []byte("hello"))
	n := &Notification{From: "a@x.org", To: "b@x.org", Size: 5, Parts: []content.Ref{ref}}
	b, _ := n.encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeNotification(b) })
}

func FuzzDecodeFiled(f *testing.F) {
	f.Add(EncodeFiled(&Filed{ID: NotificationID{1}, From: "a@x.org"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if x, err := DecodeFiled(b); err == nil {
			if _, err := DecodeFiled(EncodeFiled(x)); err != nil {
				t.Fatalf("re-encoding does not decode: %v", err)
			}
		}
	})
}

func FuzzDecodeLogData(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(encodeSnapshot([][]byte{[]byte("a"), []byte("b")}))
	f.Add(encodeBackup([]backupEntry{{Seq: 3}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeHeadState(b)
		_, _ = decodeSnapshot(b, 2)
		_, _ = decodeBackup(b)
		_, _ = past.DecodePending(b)
	})
}

// A snapshot written before segments existed (a plain list from entry 0) reads as one
// segment; a segment's range and link are checked.
func TestSnapshotSegmentCodec(t *testing.T) {
	bodies := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc")}
	from, prev, got, err := decodeSegment(encodeSnapshot(bodies), 3)
	if err != nil || from != 0 || prev != nil || len(got) != 3 || string(got[2]) != "ccc" {
		t.Fatalf("legacy snapshot: %d %v %q %v", from, prev, got, err)
	}
	ref := content.Ref{Size: 3, Chunks: []content.Entry{{Length: 3}}}
	raw, _ := ref.MarshalBinary()
	from, prev, got, err = decodeSegment(encodeSegment(5, raw, bodies), 8)
	if err != nil || from != 5 || string(prev) != string(raw) || len(got) != 3 {
		t.Fatalf("segment: %d %v %v", from, got, err)
	}
	if _, _, _, err := decodeSegment(encodeSegment(5, raw, bodies), 9); err == nil {
		t.Fatal("a segment that does not end where the head says was accepted")
	}
	if _, _, _, err := decodeSegment(encodeSegment(5, nil, bodies), 8); err == nil {
		t.Fatal("a segment after 0 without a link was accepted")
	}
}
