package post

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"epost/internal/content"
	"epost/internal/ids"
)

func TestRemoteBundleCodec(t *testing.T) {
	b := &RemoteBundle{Dest: ids.RingIDOf("b"), Chunks: [][]byte{[]byte("chunk one"), bytes.Repeat([]byte{7}, 3000)},
		Notes: []RemoteNote{{To: "bob@b.example", ID: NotificationID{1}, Sealed: []byte("sealed")}, {To: "carol@b.example", ID: NotificationID{2}, Sealed: []byte("s2")}}}
	enc := b.Encode()
	got, err := DecodeRemoteBundle(enc)
	if err != nil || got.Dest != b.Dest || len(got.Chunks) != 2 || !bytes.Equal(got.Chunks[1], b.Chunks[1]) || len(got.Notes) != 2 || got.Notes[1].To != "carol@b.example" || got.Notes[0].ID != b.Notes[0].ID {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// Every truncation and a trailing byte are refused, never a panic.
	for i := range enc {
		if _, err := DecodeRemoteBundle(enc[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := DecodeRemoteBundle(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := DecodeRemoteBundle((&RemoteBundle{Dest: b.Dest, Chunks: b.Chunks}).Encode()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no recipients: %v", err)
	}
}

func TestFiledForeignFlag(t *testing.T) {
	_, ref, err := content.EncryptChunked(content.Secret{1}, ids.RingIDOf("b"), []byte("part"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, foreign := range []bool{false, true} {
		f := &Filed{ID: NotificationID{9}, From: "alice@a.example", Time: time.Unix(100, 0).UTC(), FiledAt: time.Unix(200, 0).UTC(), Size: 4, Parts: []content.Ref{ref}, Foreign: foreign}
		enc := EncodeFiled(f)
		if foreign != (enc[0] == filedV2) {
			t.Fatalf("foreign %v encoded as version %d", foreign, enc[0])
		}
		got, err := DecodeFiled(enc)
		if err != nil || got.Foreign != foreign || got.From != f.From || len(got.Parts) != 1 {
			t.Fatalf("foreign %v: %+v %v", foreign, got, err)
		}
	}
	bad := EncodeFiled(&Filed{Foreign: true})
	bad[1] = 0x80 // an unknown flag
	if _, err := DecodeFiled(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown flag: %v", err)
	}
}
