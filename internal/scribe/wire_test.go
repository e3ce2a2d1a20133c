package scribe

import (
	"errors"
	"reflect"
	"testing"

	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/wire"
)

const testTag = 0x01

func sampleMessages() []*message {
	h := pastry.Handle{ID: ids.HashString("a"), Addr: "n1"}
	h2 := pastry.Handle{ID: ids.HashString("b"), Addr: "n2"}
	topic := ids.HashString("topic")
	return []*message{
		{Type: mSubscribe, Topic: topic, Child: h},
		{Type: mSubscribeAck, Topic: topic, Depth: 3},
		{Type: mLeave, Topic: topic},
		{Type: mHeartbeat, Topics: []ids.ID{topic, h.ID}},
		{Type: mHeartbeatAck, Acks: []topicAck{{topic, 1}, {h.ID, depthNotParent}}},
		{Type: mMulticast, Topic: topic, MsgID: [16]byte{1, 2, 3}, Origin: h, Payload: []byte("hello")},
		{Type: mAnycast, Topic: topic, ReqID: 99, Origin: h, Visited: []ids.ID{h.ID}, ToVisit: []pastry.Handle{h2}, Payload: []byte("x")},
		{Type: mAnycastResult, Topic: topic, ReqID: 99, Accepted: true, Member: h2, Searched: 4},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		t.Run(m.Type.String(), func(t *testing.T) {
			b := m.encode(testTag)
			got, err := decode(testTag, b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			norm := func(x *message) *message {
				c := *x
				if len(c.Topics) == 0 {
					c.Topics = nil
				}
				if len(c.Acks) == 0 {
					c.Acks = nil
				}
				if len(c.Visited) == 0 {
					c.Visited = nil
				}
				if len(c.ToVisit) == 0 {
					c.ToVisit = nil
				}
				if len(c.Payload) == 0 {
					c.Payload = nil
				}
				return &c
			}
			if !reflect.DeepEqual(norm(got), norm(m)) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
			// Every strict prefix is an error, never a panic.
			for i := 0; i < len(b); i++ {
				if _, err := decode(testTag, b[:i]); !errors.Is(err, wire.ErrMalformed) {
					t.Fatalf("prefix %d/%d: got %v, want ErrMalformed", i, len(b), err)
				}
			}
			if _, err := decode(testTag, append(b, 0)); !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("trailing byte accepted: %v", err)
			}
		})
	}
}

func TestCodecRejects(t *testing.T) {
	good := (&message{Type: mLeave, Topic: ids.HashString("t")}).encode(testTag)
	cases := map[string][]byte{
		"empty":        nil,
		"other tag":    append([]byte{0x02}, good[1:]...),
		"version":      append([]byte{testTag, 9}, good[2:]...),
		"type zero":    append([]byte{testTag, wireVersion, 0}, good[3:]...),
		"type too big": append([]byte{testTag, wireVersion, byte(mTypeLimit)}, good[3:]...),
		"huge count":   {testTag, wireVersion, byte(mHeartbeat), 0xff, 0xff, 0xff, 0x7f},
		"no child":     (&message{Type: mSubscribe}).encode(testTag),
		"bad bool":     append((&message{Type: mAnycastResult}).encode(testTag)[:3+32+8], 7),
	}
	for name, b := range cases {
		if _, err := decode(testTag, b); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m.encode(testTag))
	}
	f.Add([]byte{testTag, wireVersion, byte(mAnycast)})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(testTag, b)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// What decodes must re-encode into something that decodes (varints may have been
		// written in a longer form than ours, so the bytes need not be identical).
		if _, err := decode(testTag, m.encode(testTag)); err != nil {
			t.Fatalf("re-encoding of %x does not decode: %v", b, err)
		}
	})
}
