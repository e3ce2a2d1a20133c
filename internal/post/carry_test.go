package post

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
)

// A notification that carries its chunks round-trips through sealing, and the recipient
// accepts the chunks only when they are exactly the ones its parts name.
func TestCarriedNotification(t *testing.T) {
	ca := newCA(4)
	aKeys, aRec := ca.user(t, "a@x.org", 1, 1)
	bKeys, bRec := ca.user(t, "b@x.org", 2, 2)
	bPub, _ := identity.DecodeRecord(bRec.Body)
	chk := &SenderCheck{Ring: ca.ring, CA: ca.pub}
	now := testNote(t, ca, aRec, "b@x.org").Time

	n := &Node{cfg: Config{Secret: content.Secret{1}, Ring: ca.ring}}
	n.cfg.fill()
	parts := [][]byte{[]byte("Subject: hi\r\n\r\n"), bytes.Repeat([]byte("body "), 500)}
	if !n.carryable(1, parts) || n.carryable(1, [][]byte{make([]byte, n.cfg.CarryMax+1)}) || n.carryable(40, parts) {
		t.Fatal("carryable: wrong limits")
	}
	refs, carried, err := n.sealParts(parts)
	if err != nil {
		t.Fatal(err)
	}
	note := testNote(t, ca, aRec, "b@x.org")
	note.Parts, note.Size, note.Carried = refs, uint64(len(parts[0])+len(parts[1])), carried
	sealed, err := sealNotification(note, aKeys, ca.ring, bPub.Keys.Encryption)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openNotification(sealed, note.ID, bKeys, "b@x.org", chk, now)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := carriedObjects(ca.ring, got.Parts, got.Carried)
	if err != nil || len(objs) != len(carried) {
		t.Fatalf("carried objects: %d, %v", len(objs), err)
	}
	// The chunks decrypt to the parts through the refs, as a later Get would.
	byKey := map[string][]byte{}
	for _, o := range objs {
		byKey[o.Key.String()] = o.Payload
	}
	for i, ref := range got.Parts {
		pt, err := content.Assemble(&content.Secret{1}, ref, func(k ids.Key) ([]byte, error) { return byKey[k.String()], nil })
		if err != nil || !bytes.Equal(pt, parts[i]) {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	// A missing, foreign or extra chunk is refused.
	for name, bad := range map[string][][]byte{
		"missing": carried[:1],
		"foreign": {carried[0], []byte("not a chunk of these parts")},
		"extra":   append(append([][]byte{}, carried...), []byte("extra")),
	} {
		if _, err := carriedObjects(ca.ring, got.Parts, bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s chunk: %v", name, err)
		}
	}
	// Without carried chunks there is nothing to store.
	if objs, err := carriedObjects(ca.ring, got.Parts, nil); err != nil || objs != nil {
		t.Fatalf("no carried chunks: %v %v", objs, err)
	}
}

// inlineParts: the small parts of a message, smallest first, up to maxInlineTotal together;
// parts over content.MaxInline never.
func TestInlineParts(t *testing.T) {
	n := &Node{}
	sized := func(sizes ...int) [][]byte {
		ps := make([][]byte, len(sizes))
		for i, s := range sizes {
			ps[i] = make([]byte, s)
		}
		return ps
	}
	for _, c := range []struct {
		name  string
		parts [][]byte
		want  []bool
	}{
		{"a 50 KB mail's pieces", sized(600, 1200, 200, 50<<10, 40), []bool{true, true, true, false, true}},
		{"over MaxInline", sized(content.MaxInline+1, 10), []bool{false, true}},
		{"the total bound keeps the smallest", sized(4000, 3000, 2000, 1000), []bool{false, true, true, true}},
		{"nothing small", sized(60 << 10), []bool{false}},
	} {
		got := n.inlineParts(c.parts)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
