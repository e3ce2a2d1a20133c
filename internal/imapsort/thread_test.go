package imapsort

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// m is a message for thread tests: sequence number, Message-ID, References, Subject, and the
// minute of its Date.
func m(seq uint32, id, refs, subject string, minute int) Msg {
	return Msg{Seq: seq, UID: seq + 1000, MessageID: id, References: refs, Subject: subject, Date: at(minute), InternalDate: at(minute)}
}

func thread(t *testing.T, msgs []Msg, alg Algorithm) string {
	t.Helper()
	threads, err := Thread(msgs, alg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eachOnce(msgs, threads); err != nil {
		t.Fatal(err)
	}
	return FormatThreads(threads, SeqNums)
}

// eachOnce checks that every message of msgs is in threads exactly once, and that no dummy is
// empty.
func eachOnce(msgs []Msg, threads []*Node) error {
	seen := make(map[*Msg]int)
	var walk func(n *Node) error
	walk = func(n *Node) error {
		if n.Msg == nil && len(n.Children) == 0 {
			return errors.New("a dummy without children")
		}
		if n.Msg != nil {
			seen[n.Msg]++
		}
		for _, c := range n.Children {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range threads {
		if err := walk(n); err != nil {
			return err
		}
	}
	for i := range msgs {
		if seen[&msgs[i]] != 1 {
			return fmt.Errorf("message %d (seq %d) appears %d times", i, msgs[i].Seq, seen[&msgs[i]])
		}
	}
	if len(seen) != len(msgs) {
		return fmt.Errorf("%d messages in the threads, %d given", len(seen), len(msgs))
	}
	return nil
}

// TestFormatRFC writes the trees of RFC 5256 section 4's examples.
func TestFormatRFC(t *testing.T) {
	leaf := func(seq uint32, children ...*Node) *Node {
		return &Node{Msg: &Msg{Seq: seq, UID: seq * 10}, Children: children}
	}
	threads := []*Node{
		leaf(2),
		leaf(3, leaf(6, leaf(4, leaf(23)), leaf(44, leaf(7, leaf(96))))),
	}
	if got, want := FormatThreads(threads, SeqNums), "(2)(3 6 (4 23)(44 7 96))"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got, want := FormatThreads(threads, UIDs), "(20)(30 60 (40 230)(440 70 960))"; got != want {
		t.Errorf("UIDs: got %s, want %s", got, want)
	}
	dummy := []*Node{{Children: []*Node{leaf(3), leaf(5)}}}
	if got, want := FormatThreads(dummy, SeqNums), "((3)(5))"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	nested := []*Node{{Children: []*Node{{Children: []*Node{leaf(1), leaf(2)}}, leaf(3, leaf(4), leaf(5))}}}
	if got, want := FormatThreads(nested, SeqNums), "(((1)(2))(3 (4)(5)))"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := FormatThreads(nil, SeqNums); got != "" {
		t.Errorf("no threads: %q", got)
	}
}

// TestReferencesRFCTree builds RFC 5256 section 4's example tree from References headers.
func TestReferencesRFCTree(t *testing.T) {
	msgs := []Msg{
		m(2, "<2@x>", "", "other", 0),
		m(3, "<3@x>", "", "subject", 1),
		m(4, "<4@x>", "<3@x> <6@x>", "Re: subject", 3),
		m(6, "<6@x>", "<3@x>", "Re: subject", 2),
		m(7, "<7@x>", "<3@x> <6@x> <44@x>", "Re: subject", 6),
		m(23, "<23@x>", "<3@x> <6@x> <4@x>", "Re: subject", 4),
		m(44, "<44@x>", "<3@x> <6@x>", "Re: subject", 5),
		m(96, "<96@x>", "<3@x> <6@x> <44@x> <7@x>", "Re: subject", 7),
	}
	if got, want := thread(t, msgs, References), "(2)(3 6 (4 23)(44 7 96))"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestOrderedSubjectRFC reproduces RFC 5256 section 4's THREAD ORDEREDSUBJECT response from a
// mailbox made to fit it: one base subject per thread, dates rising in the order the response
// lists the messages. REFERENCES, with no references and every later message a reply, gives
// the same threads.
func TestOrderedSubjectRFC(t *testing.T) {
	const want = "(166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))(179)" +
		"(177 (183)(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)(194 195)(196 (197)(198))" +
		"(199)(200 202)(201)(203)(204)(205)(206 207)(208)"
	msgs := make([]Msg, 208-166+1)
	minute, topic := 0, 0
	for _, th := range topLevel(want) {
		topic++
		for i, f := range strings.Fields(strings.NewReplacer("(", " ", ")", " ").Replace(th)) {
			seq, _ := strconv.Atoi(f)
			subject := fmt.Sprintf("Topic %d", topic)
			if i > 0 {
				subject = []string{"Re: ", "RE: [list] ", "Fwd: ", "re: re: "}[i%4] + strings.ToLower(subject)
			}
			msgs[seq-166] = m(uint32(seq), fmt.Sprintf("<%d@x>", seq), "", subject, minute)
			minute++
		}
	}
	if got := thread(t, msgs, OrderedSubject); got != want {
		t.Errorf("ORDEREDSUBJECT:\n got %s\nwant %s", got, want)
	}
	if got := thread(t, msgs, References); got != want {
		t.Errorf("REFERENCES:\n got %s\nwant %s", got, want)
	}
}

// topLevel splits a thread-list response into its threads.
func topLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			if depth == 0 {
				start = i
			}
			depth++
		case ')':
			depth--
			if depth == 0 {
				out = append(out, s[start:i+1])
			}
		}
	}
	return out
}

func TestOrderedSubject(t *testing.T) {
	msgs := []Msg{
		m(1, "", "", "b", 5),
		m(2, "", "", "Re: A", 3),
		m(3, "", "", "a", 4),
		m(4, "", "", "", 1), // empty base subjects make a thread too
		m(5, "", "", "Re:", 2),
		m(6, "", "", "B", 5), // the date of 1: sequence order
		m(7, "", "", "c", 0),
	}
	if got, want := thread(t, msgs, OrderedSubject), "(7)(4 5)(2 3)(1 6)"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestReferences(t *testing.T) {
	tests := []struct {
		name string
		msgs []Msg
		want string
	}{
		{"no messages", nil, ""},
		{"one", []Msg{m(1, "<a@x>", "", "s", 0)}, "(1)"},
		{"dummy parent kept at the root",
			[]Msg{m(3, "<3@x>", "<gone@x>", "Re: one", 0), m(5, "<5@x>", "<gone@x>", "two", 1)},
			"((3)(5))"},
		{"dummy parent with one child is promoted",
			[]Msg{m(1, "<1@x>", "<gone@x>", "one", 0), m(2, "<2@x>", "", "two", 1)},
			"(1)(2)"},
		{"dummies inside a thread are spliced out",
			[]Msg{m(1, "<1@x>", "", "s", 0), m(2, "<2@x>", "<1@x> <gone@x>", "Re: s", 1), m(3, "<3@x>", "<1@x> <gone@x>", "Re: s", 2)},
			"(1 (2)(3))"},
		{"In-Reply-To when there are no References",
			[]Msg{m(1, "<1@x>", "", "s", 0), {Seq: 2, MessageID: "<2@x>", InReplyTo: "<1@x> <9@x>", Subject: "t", Date: at(1)}},
			"(1 2)"},
		{"In-Reply-To when References holds no Message ID",
			[]Msg{m(1, "<1@x>", "", "s", 0), {Seq: 2, MessageID: "<2@x>", References: "<junk>", InReplyTo: "<1@x>", Subject: "t", Date: at(1)}},
			"(1 2)"},
		{"References wins over In-Reply-To",
			[]Msg{m(1, "<1@x>", "", "s", 0), m(2, "<2@x>", "", "t", 1), {Seq: 3, MessageID: "<3@x>", References: "<2@x>", InReplyTo: "<1@x>", Subject: "u", Date: at(2)}},
			"(1)(2 3)"},
		{"quoted and unquoted Message IDs match",
			[]Msg{m(1, `<"01KF8JCEOCBS0045PS"@xxx.yyy.com>`, "", "s", 0), m(2, "<2@x>", "<01KF8JCEOCBS0045PS@xxx.yyy.com>", "t", 1)},
			"(1 2)"},
		{"Message ID comparison is case-sensitive",
			[]Msg{m(1, "<A@x>", "", "s", 0), m(2, "<2@x>", "<a@x>", "t", 1)},
			"(1)(2)"},
		{"missing and invalid Message IDs",
			[]Msg{m(1, "", "", "s", 0), m(2, "junk", "", "t", 1), m(3, "<3@x>", "<junk>", "u", 2)},
			"(1)(2)(3)"},
		{"a message without Message ID still has a parent",
			[]Msg{m(1, "<1@x>", "", "s", 0), m(2, "", "<1@x>", "t", 1)},
			"(1 2)"},
		{"duplicate Message ID: the lowest sequence number keeps it",
			[]Msg{m(2, "<d@x>", "", "second", 1), m(1, "<d@x>", "", "first", 0), m(3, "<3@x>", "<d@x>", "third", 2)},
			"(1 3)(2)"},
		{"reference loop between two messages",
			[]Msg{m(1, "<1@x>", "<2@x>", "s", 0), m(2, "<2@x>", "<1@x>", "t", 1)},
			"(2 1)"},
		{"reference loop in a References line",
			[]Msg{m(1, "<1@x>", "<a@x> <b@x> <a@x>", "s", 0)},
			"(1)"},
		{"self reference",
			[]Msg{m(1, "<1@x>", "<1@x>", "s", 0), m(2, "<2@x>", "<1@x> <2@x>", "t", 1)},
			"(1 2)"},
		{"self reference making an earlier message a child",
			[]Msg{m(1, "<1@x>", "", "s", 0), m(2, "<2@x>", "<2@x> <1@x> <2@x>", "t", 1)},
			"(2 1)"},
		{"a message's own last reference replaces a guessed parent (truncated References)",
			[]Msg{m(1, "<1@x>", "<p@x> <2@x>", "s", 2), m(2, "<2@x>", "<q@x>", "t", 1)},
			"(2 1)"},
		{"a message with no references loses a guessed parent",
			[]Msg{m(1, "<1@x>", "<0@x> <2@x>", "s", 2), m(2, "<2@x>", "", "t", 1), m(3, "<0@x>", "", "u", 0)},
			"(3)(2 1)"},
		{"a message's own References replace a parent an earlier message's gave it",
			[]Msg{m(1, "<1@x>", "", "a", 0), m(2, "<2@x>", "", "b", 1), m(3, "<3@x>", "<1@x> <4@x>", "c", 3), m(4, "<4@x>", "<2@x>", "d", 2)},
			"(1)(2 4 3)"},
		// Step (5): threads with one base subject.
		{"a reply joins the original",
			[]Msg{m(1, "<1@x>", "", "Hello", 0), m(2, "<2@x>", "", "Re: hello", 1)},
			"(1 2)"},
		{"the original can come later",
			[]Msg{m(1, "<1@x>", "", "Re: Hello", 0), m(2, "<2@x>", "", "Hello", 1)},
			"(2 1)"},
		{"two originals share a dummy",
			[]Msg{m(1, "<1@x>", "", "Hello", 0), m(2, "<2@x>", "", "hello", 1), m(3, "<3@x>", "", "Re: Hello", 2)},
			"((1)(2)(3))"},
		{"two replies share a dummy",
			[]Msg{m(1, "<1@x>", "", "Re: Hello", 0), m(2, "<2@x>", "", "Fwd: Hello", 1)},
			"((1)(2))"},
		{"a dummy's thread takes in others",
			[]Msg{m(1, "<1@x>", "<g@x>", "Re: s", 0), m(2, "<2@x>", "<g@x>", "Re: s", 2), m(3, "<3@x>", "", "s", 1)},
			"((1)(3)(2))"},
		{"two dummies merge",
			[]Msg{m(1, "<1@x>", "<g@x>", "s", 0), m(2, "<2@x>", "<g@x>", "s", 1), m(3, "<3@x>", "<h@x>", "Re: s", 2), m(4, "<4@x>", "<h@x>", "Re: s", 3)},
			"((1)(2)(3)(4))"},
		{"empty base subjects are not grouped",
			[]Msg{m(1, "<1@x>", "", "Re:", 0), m(2, "<2@x>", "", "", 1), m(3, "<3@x>", "", "Re: ", 2)},
			"(1)(2)(3)"},
		{"subjects group under i;ascii-casemap only",
			[]Msg{m(1, "<1@x>", "", "Été", 0), m(2, "<2@x>", "", "Re: été", 1), m(3, "<3@x>", "", "Re: =?utf-8?q?=C3=89t=C3=A9?=", 2)},
			"(1 3)(2)"},
		// Sent dates.
		{"the internal date stands in for a missing Date",
			[]Msg{{Seq: 1, Subject: "a", InternalDate: at(5)}, {Seq: 2, Subject: "b", Date: at(3), InternalDate: at(1)}},
			"(2)(1)"},
		{"equal sent dates: sequence order",
			[]Msg{m(2, "<2@x>", "", "a", 0), m(1, "<1@x>", "", "b", 0), m(3, "<3@x>", "<2@x>", "c", 1), m(4, "<4@x>", "<2@x>", "d", 1)},
			"(1)(2 (3)(4))"},
		{"children sorted by date, not by sequence",
			[]Msg{m(1, "<1@x>", "", "a", 0), m(2, "<2@x>", "<1@x>", "b", 9), m(3, "<3@x>", "<1@x>", "c", 5)},
			"(1 (3)(2))"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := thread(t, tc.msgs, References); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestThreadUnknownAlgorithm(t *testing.T) {
	if _, err := Thread(nil, "JWZ"); !errors.Is(err, ErrUnknownAlgorithm) {
		t.Errorf("got %v", err)
	}
}
