package mailstore

import (
	"bytes"
	"math"
	"slices"
	"testing"
	"time"

	"epost/internal/content"
	"epost/internal/ids"
	"epost/internal/mailbox"
)

func testRef(data []byte) *content.Ref {
	var secret content.Secret
	_, ref, err := content.EncryptChunked(secret, ids.RingIDOf("t"), data, 1000)
	if err != nil {
		panic(err)
	}
	return &ref
}

func TestEntryRoundTrip(t *testing.T) {
	st := encodeStructure(mailbox.Parse([]byte("Subject: s\r\n\r\nx")))
	for _, e := range []*entry{
		{Kind: kindHeader, UIDValidity: 42},
		{Kind: kindInsert, Records: []record{{Date: time.Unix(5, 0).UTC(), Size: 2520, Flags: []mailbox.Flag{"\\Seen", "$x"},
			Segments: []segment{{Inline: []byte("abc")}, {Ref: testRef(make([]byte, 2500))}, {Ref: testRef([]byte("from another ring")), Foreign: true}}, Structure: st}}},
		{Kind: kindFlags, Op: uint8(mailbox.FlagsRemove), Flags: []mailbox.Flag{"a"}, UIDs: []mailbox.UID{1, 5, 7}},
		{Kind: kindExpunge, UIDs: []mailbox.UID{3}},
		{Kind: kindRewound},
		{Kind: kindCreate, Name: "A/B", Log: "mail/00", Use: string(mailbox.MailboxAttrSent), UIDValidity: 9},
		{Kind: kindDelete, Log: "mail/00"},
		{Kind: kindRename, Log: "mail/00", Name: "C"},
		{Kind: kindSubscribe, Name: "C", On: true},
	} {
		b := e.encode()
		got, err := decodeEntry(b)
		if err != nil {
			t.Fatalf("kind %d: %v", e.Kind, err)
		}
		if !bytes.Equal(got.encode(), b) {
			t.Fatalf("kind %d: round trip differs", e.Kind)
		}
		if e.Kind == kindInsert && (got.Records[0].Segments[1].Foreign || !got.Records[0].Segments[2].Foreign) {
			t.Fatal("a foreign part's flag did not survive the round trip")
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add((&entry{Kind: kindInsert, Records: []record{{Size: 1, Segments: []segment{{Inline: []byte("x")}}}}}).encode())
	f.Add((&entry{Kind: kindFlags, Flags: []mailbox.Flag{"a"}, UIDs: []mailbox.UID{1}}).encode())
	f.Add((&entry{Kind: kindCreate, Name: "n", Log: "l"}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		if _, err := decodeEntry(e.encode()); err != nil {
			t.Fatalf("re-encoding a decoded entry fails: %v", err)
		}
		// Replaying garbage never panics either.
		f := newFolderState("mail/x", "x", "")
		f.apply(b)
		newRootState().apply(b)
	})
}

// Replay is a pure function of the entries: UIDs and modseqs follow the index rules.
func TestReplayRules(t *testing.T) {
	rec := func(s string) record {
		return record{Size: int64(len(s)), Segments: []segment{{Inline: []byte(s)}}, Flags: []mailbox.Flag{"\\seen"}}
	}
	bodies := [][]byte{
		(&entry{Kind: kindHeader, UIDValidity: 77}).encode(),                       // 0
		(&entry{Kind: kindInsert, Records: []record{rec("a"), rec("b")}}).encode(), // 1: uids 1, 2 ms 2
		[]byte("+some POST line"),                                                  // 2: ignored
		(&entry{Kind: kindFlags, Op: uint8(mailbox.FlagsAdd), Flags: []mailbox.Flag{"x"}, UIDs: []mailbox.UID{2, 9}}).encode(), // 3: ms 4
		(&entry{Kind: kindExpunge, UIDs: []mailbox.UID{1}}).encode(),                                                           // 4: ms 5
		(&entry{Kind: kindHeader, UIDValidity: 99}).encode(),                                                                   // 5: larger: replaces 77 (a rebuilt log)
		(&entry{Kind: kindInsert, Records: []record{rec("c")}}).encode(),                                                       // 6: uid 3 ms 7
	}
	var states []*folderState
	for range 2 {
		f := newFolderState("mail/x", "x", "")
		for _, b := range bodies {
			f.apply(b)
		}
		states = append(states, f)
	}
	f := states[0]
	if f.UIDValidity != 99 || f.UIDNext != 4 || f.ModSeq != 7 || f.Applied != 7 {
		t.Fatalf("state %+v", f)
	}
	// A header with a smaller value changes nothing.
	if g := *f; g.apply((&entry{Kind: kindHeader, UIDValidity: 50}).encode()) || g.UIDValidity != 99 {
		t.Fatalf("a smaller header entry: UIDVALIDITY %d", g.UIDValidity)
	}
	var got []string
	for _, m := range f.Msgs {
		got = append(got, string(rune('0'+m.UID))+":"+string(rune('0'+m.ModSeq)))
	}
	if !slices.Equal(got, []string{"2:4", "3:7"}) || !slices.Equal(f.Msgs[0].Flags, []mailbox.Flag{mailbox.FlagSeen, "x"}) {
		t.Fatalf("messages %v flags %v", got, f.Msgs[0].Flags)
	}
	if len(f.Expunged) != 1 || f.Expunged[0] != (tombstone{UID: 1, ModSeq: 5}) {
		t.Fatalf("tombstones %+v", f.Expunged)
	}
	if states[1].LastHash != f.LastHash || states[1].ModSeq != f.ModSeq {
		t.Fatal("two replays differ")
	}
}

// A rewound entry (post.Config.RewoundInbox after a disk went back in time) gives the folder
// a new UIDVALIDITY and leaves its messages and UIDs as they are; the kinds written before it
// keep their numbers.
func TestRewoundEntry(t *testing.T) {
	f := newFolderState("INBOX", "INBOX", "")
	ins := (&entry{Kind: kindInsert, Records: []record{{Size: 1, Segments: []segment{{Inline: []byte("a")}}}}}).encode()
	f.apply((&entry{Kind: kindHeader, UIDValidity: 70}).encode())
	f.apply(ins)
	if !f.apply(RewoundEntry()) || f.UIDValidity != 71 {
		t.Fatalf("UIDVALIDITY %d after a rewound entry; want 71", f.UIDValidity)
	}
	f.apply(ins)
	if f.Msgs[0].UID != 1 || f.Msgs[1].UID != 2 || f.UIDNext != 3 {
		t.Fatalf("UIDs %d %d, UIDNEXT %d; want 1 2 3", f.Msgs[0].UID, f.Msgs[1].UID, f.UIDNext)
	}
	f.UIDValidity = math.MaxUint32
	if f.apply(RewoundEntry()) || f.UIDValidity != math.MaxUint32 {
		t.Fatalf("UIDVALIDITY %d after a rewound entry at the top", f.UIDValidity)
	}
	// A UIDVALIDITY this node gave the folder (Store.bumpLocked) whose header comes after the
	// rewound entry in the log: the live state and a replay end at the same value.
	hdr := (&entry{Kind: kindHeader, UIDValidity: 500}).encode()
	live := newFolderState("INBOX", "INBOX", "")
	live.apply((&entry{Kind: kindHeader, UIDValidity: 70}).encode())
	live.UIDValidity, live.bump, live.headerDue = 500, 500, 500
	live.apply(RewoundEntry())
	live.apply(hdr)
	replay := newFolderState("INBOX", "INBOX", "")
	for _, b := range [][]byte{(&entry{Kind: kindHeader, UIDValidity: 70}).encode(), RewoundEntry(), hdr} {
		replay.apply(b)
	}
	if live.UIDValidity != 500 || replay.UIDValidity != 500 || live.headerDue != 0 {
		t.Fatalf("UIDVALIDITY live %d (header due %d), replayed %d; want 500 both", live.UIDValidity, live.headerDue, replay.UIDValidity)
	}
	for k, want := range map[entryKind]uint8{kindHeader: 1, kindExpunge: 4, kindRewound: 5, kindCreate: 11, kindSubscribe: 14} {
		if uint8(k) != want {
			t.Errorf("entry kind %d numbered %d: the log's entries would change meaning", want, k)
		}
	}
}
