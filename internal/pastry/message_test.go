package pastry

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"epost/internal/ids"
	"epost/internal/wire"
)

func sampleMessages(r *rand.Rand) []*message {
	h := func() Handle { return Handle{ID: randID(r), Addr: "127.0.0.1:7001"} }
	hs := []Handle{h(), h(), h()}
	var out []*message
	for t := mJoinRequest; t < mTypeLimit; t++ {
		m := &message{Type: t, Ring: randID(r), From: h(), Ready: t%2 == 0, Gone: t%3 == 0, Seq: r.Uint64(), Time: r.Int64(), Key: randID(r),
			Origin: h(), Hops: 3, Kind: kindJoin, Row: 5, Flag: true, Handles: hs, Payload: []byte("payload")}
		out = append(out, m)
	}
	return out
}

// TestMessageRoundTrip encodes every message type and decodes it back; fields a type does not
// carry must come back zero.
func TestMessageRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, m := range sampleMessages(r) {
		b := m.encode(nil)
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if got.Type != m.Type || got.Ring != m.Ring || got.From != m.From || got.Ready != m.Ready || got.Gone != m.Gone {
			t.Fatalf("%s: header differs", m.Type)
		}
		// Sender flags other than ready and gone are refused.
		flags := 2 + 2*ids.Bytes + 1 + len(m.From.Addr)
		bad := slices.Clone(b)
		bad[flags] |= 4
		if _, err := decodeMessage(bad); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("%s: unknown sender flag accepted: %v", m.Type, err)
		} else if !strings.Contains(err.Error(), "sender flags") {
			t.Fatalf("%s: refused for another reason: %v", m.Type, err)
		}
		again := got.encode(nil)
		if !reflect.DeepEqual(again, b) {
			t.Fatalf("%s: re-encoding differs", m.Type)
		}
		// Every strict prefix is an error, never a panic.
		for i := 0; i < len(b); i++ {
			if _, err := decodeMessage(b[:i]); err == nil {
				t.Fatalf("%s: prefix of %d/%d bytes decoded", m.Type, i, len(b))
			}
		}
		if _, err := decodeMessage(append(b, 0)); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("%s: trailing byte accepted: %v", m.Type, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, m := range sampleMessages(r) {
		f.Add(m.encode(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error does not wrap wire.ErrMalformed: %v", err)
			}
			return
		}
		// What decodes must re-encode to the same bytes: one encoding per message.
		if again := m.encode(nil); !reflect.DeepEqual(again, b) {
			t.Fatalf("decoded message re-encodes differently")
		}
	})
}

// TestMessageInParts: a route or direct message whose payload is given in two parts
// (RouteParts) encodes to the same bytes as with the payload joined, and its frame's tail is
// the payload's second part itself, not a copy.
func TestMessageInParts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, m := range sampleMessages(r) {
		if m.Type != mRoute && m.Type != mDirect {
			continue
		}
		joined := m.encode(nil)
		p := *m
		p.Payload, p.PayloadTail = []byte("pay"), []byte("load")
		head, tail := p.encodeParts(nil)
		if got := append(slices.Clone(head), tail...); !reflect.DeepEqual(got, joined) {
			t.Fatalf("%s: in parts encodes to %x, joined to %x", m.Type, got, joined)
		}
		if &tail[0] != &p.PayloadTail[0] {
			t.Fatalf("%s: the tail was copied", m.Type)
		}
		if got := p.payload(); string(got) != "payload" {
			t.Fatalf("%s: joined payload %q", m.Type, got)
		}
	}
}
