package imapsort

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2008, 6, 1, 12, 0, 0, 0, time.UTC)

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func seqs(msgs []Msg) {
	for i := range msgs {
		msgs[i].Seq = uint32(i + 1)
		if msgs[i].UID == 0 {
			msgs[i].UID = uint32(100 + i)
		}
	}
}

func TestSortKeys(t *testing.T) {
	zone := time.FixedZone("-0700", -7*3600)
	msgs := []Msg{
		{InternalDate: at(5), Size: 300, Date: at(1), Subject: "Re: banana",
			From: Address{Mailbox: "bob", Host: "x"}, To: Address{Name: "Zed", Mailbox: "a", Host: "z"}, Cc: Address{Mailbox: "_c"}},
		{InternalDate: at(4), Size: 100, Date: at(3), Subject: "apple",
			From: Address{Mailbox: "Alice", Host: "x"}, To: Address{Mailbox: "b", Host: "y"}, Cc: Address{Mailbox: "c"}},
		{InternalDate: at(3), Size: 200, Subject: "[list] Cherry", // no Date: internal date is the sent date
			From: Address{Name: "=?utf-8?q?=C3=89mile?=", Mailbox: "e", Host: "x"}, To: Address{Name: "amy", Mailbox: "z", Host: "z"}},
		{InternalDate: at(2), Size: 200, Date: time.Date(2008, 6, 1, 5, 2, 0, 0, zone), Subject: "APPLE (fwd)", // 12:02 UTC
			From: Address{Mailbox: "_x"}, Cc: Address{Mailbox: "B"}},
	}
	seqs(msgs)
	tests := []struct {
		criteria []Criterion
		want     []uint32
	}{
		{[]Criterion{{Arrival, false}}, []uint32{4, 3, 2, 1}},
		{[]Criterion{{Arrival, true}}, []uint32{1, 2, 3, 4}},
		{[]Criterion{{Date, false}}, []uint32{1, 4, 2, 3}},    // 2 and 3 (its internal date) tie
		{[]Criterion{{Size, false}}, []uint32{2, 3, 4, 1}},    // 3 and 4 tie: sequence order
		{[]Criterion{{Size, true}}, []uint32{1, 3, 4, 2}},     // ties stay in sequence order reversed
		{[]Criterion{{Subject, false}}, []uint32{2, 4, 1, 3}}, // APPLE, apple, banana, Cherry
		{[]Criterion{{Subject, false}, {Date, true}}, []uint32{2, 4, 1, 3}},
		{[]Criterion{{Subject, false}, {Size, true}}, []uint32{4, 2, 1, 3}},
		// i;ascii-casemap folds to upper case: "_" (0x5F) sorts after "ALICE" and "BOB".
		{[]Criterion{{From, false}}, []uint32{2, 1, 3, 4}},
		{[]Criterion{{To, false}}, []uint32{4, 1, 2, 3}},          // no To is ""
		{[]Criterion{{Cc, false}}, []uint32{3, 4, 2, 1}},          // "", B, c, _c
		{[]Criterion{{DisplayFrom, false}}, []uint32{2, 1, 4, 3}}, // alice@x, bob@x, _x, Émile (0xC3)
		{[]Criterion{{DisplayTo, false}}, []uint32{4, 3, 2, 1}},   // "", amy, b@y, Zed
		{[]Criterion{{DisplayTo, true}}, []uint32{1, 2, 3, 4}},
	}
	for _, tc := range tests {
		got, err := Sort(msgs, tc.criteria, SeqNums)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Sort(%v) = %v, want %v", tc.criteria, got, tc.want)
		}
	}
}

// RFC 5256 section 4: "A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL" answered "* SORT 5 3 4 1
// 2", on a mailbox made to fit.
func TestSortRFCExample(t *testing.T) {
	msgs := []Msg{
		{Subject: "Gamma", Date: at(5)},
		{Subject: "Re: gamma", Date: at(1)},
		{Subject: "Beta", Date: at(9)},
		{Subject: "[fwd: BETA]", Date: at(2)},
		{Subject: "alpha", Date: at(7)},
	}
	seqs(msgs)
	got, err := Sort(msgs, []Criterion{{Subject, false}, {Date, true}}, SeqNums)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{5, 3, 4, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	got, _ = Sort(msgs, []Criterion{{Subject, false}, {Date, true}}, UIDs)
	if want := []uint32{104, 102, 103, 100, 101}; !slices.Equal(got, want) {
		t.Errorf("UID SORT: got %v, want %v", got, want)
	}
}

func TestSortEdges(t *testing.T) {
	if got, err := Sort(nil, []Criterion{{Date, false}}, SeqNums); err != nil || len(got) != 0 {
		t.Errorf("no messages: %v, %v", got, err)
	}
	if _, err := Sort(nil, []Criterion{{"COLOR", false}}, SeqNums); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	// Equal keys everywhere: mailbox order, whatever the order of the slice.
	msgs := []Msg{{Seq: 3}, {Seq: 1}, {Seq: 2}}
	got, _ := Sort(msgs, []Criterion{{Subject, true}, {From, false}, {Date, true}}, SeqNums)
	if want := []uint32{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("equal keys: got %v, want %v", got, want)
	}
	// No criteria at all is mailbox order too.
	got, _ = Sort(msgs, nil, SeqNums)
	if want := []uint32{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("no criteria: got %v, want %v", got, want)
	}
}

func TestDisplayName(t *testing.T) {
	for _, tc := range []struct {
		a    Address
		want string
	}{
		{Address{}, ""},
		{Address{Name: "Joe", Mailbox: "j", Host: "x"}, "Joe"},
		{Address{Mailbox: "j", Host: "x"}, "j@x"},
		{Address{Mailbox: "j"}, "j"},
		{Address{Name: "=?iso-8859-1?q?J=F6rg?=", Mailbox: "j", Host: "x"}, "Jörg"},
	} {
		if got := displayName(tc.a); got != tc.want {
			t.Errorf("displayName(%+v) = %q, want %q", tc.a, got, tc.want)
		}
	}
}
