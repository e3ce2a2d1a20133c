package imapsort

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzMsgs builds up to 64 messages from fuzz input: Message IDs, references and subjects come
// from small vocabularies, so that links, duplicates, loops and subject merges are common,
// and now and then from raw input bytes, to exercise the parsers.
func fuzzMsgs(data []byte) []Msg {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	raw := func() string {
		n := int(next() % 24)
		n = min(n, len(data))
		s := string(data[:n])
		data = data[n:]
		return s
	}
	id := func(b byte) string {
		switch b % 10 {
		case 0:
			return ""
		case 1:
			return raw()
		case 2:
			return fmt.Sprintf(`<"q%d"@x>`, b%7)
		}
		return fmt.Sprintf("<m%d@x>", b%13)
	}
	subjects := []string{"", "Hello", "Re: hello", "Fwd: Hello", "[list] Re: HELLO", "Re:", "[fwd: hello]",
		"other", "Re: other (fwd)", "=?utf-8?q?Re=3A_=C3=A9t=C3=A9?=", "été", "[x]", "Re: [x]"}
	n := int(next() % 65)
	msgs := make([]Msg, n)
	perm := make([]uint32, n)
	for i := range perm {
		perm[i] = uint32(i + 1)
	}
	for i := range perm { // a shuffle driven by the input: mailbox order differs from slice order
		j := i + int(next())%(n-i)
		perm[i], perm[j] = perm[j], perm[i]
	}
	for i := range msgs {
		m := &msgs[i]
		m.Seq = perm[i]
		m.UID = 10 * perm[i]
		m.MessageID = id(next())
		for k := int(next() % 5); k > 0; k-- {
			m.References += id(next()) + " "
		}
		m.InReplyTo = id(next())
		if b := next(); b%5 == 0 {
			m.Subject = raw()
		} else {
			m.Subject = subjects[int(b)%len(subjects)]
		}
		m.Size = int64(next() % 4)
		m.InternalDate = at(int(next() % 8))
		if b := next(); b%3 != 0 {
			m.Date = at(int(b % 8))
		}
		m.From = Address{Name: raw(), Mailbox: string(rune('a' + next()%4)), Host: "x"}
		m.To = Address{Mailbox: string(rune('A' + next()%4))}
	}
	return msgs
}

func FuzzThreadSort(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x10abcdefghijklmnopqrstuvwxyz0123456789"))
	f.Add([]byte("\x40\x03\x05\x07\x09\x0b\x0d\x0f\x11\x13\x15\x17\x19\x1b\x1d\x1f\x21\x23\x25\x27\x29\x2b\x2d\x2f\x31\x33\x35\x37\x39\x3b\x3d\x3f\x41\x43\x45\x47\x49\x4b\x4d\x4f\x51\x53\x55\x57\x59\x5b\x5d\x5f"))
	f.Add([]byte("\x20" + strings.Repeat("\x04\x03\x04\x05\x06\x07", 40)))
	keys := []Key{Arrival, Cc, Date, From, Size, Subject, To, DisplayFrom, DisplayTo}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := fuzzMsgs(data)
		for _, alg := range []Algorithm{OrderedSubject, References} {
			threads, err := Thread(msgs, alg)
			if err != nil {
				t.Fatal(err)
			}
			if err := eachOnce(msgs, threads); err != nil {
				t.Fatalf("%s: %v", alg, err)
			}
			out := FormatThreads(threads, SeqNums)
			nums, err := parseThreads(out)
			if err != nil {
				t.Fatalf("%s: %q: %v", alg, out, err)
			}
			if len(nums) != len(msgs) {
				t.Fatalf("%s: %q names %d messages, %d given", alg, out, len(nums), len(msgs))
			}
			slices.Sort(nums)
			for i, n := range nums {
				if n != uint32(i+1) {
					t.Fatalf("%s: %q: sequence numbers %v", alg, out, nums)
				}
			}
		}
		var criteria []Criterion
		for i, b := range data {
			if i >= 4 {
				break
			}
			criteria = append(criteria, Criterion{keys[int(b)%len(keys)], b&0x80 != 0})
		}
		got, err := Sort(msgs, criteria, SeqNums)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(msgs) {
			t.Fatalf("Sort returned %d of %d", len(got), len(msgs))
		}
		slices.Sort(got)
		for i, n := range got {
			if n != uint32(i+1) {
				t.Fatalf("Sort: not a permutation: %v", got)
			}
		}
	})
}

// parseThreads checks out against RFC 5256's thread-list grammar and returns the numbers in it.
func parseThreads(s string) ([]uint32, error) {
	var nums []uint32
	p := 0
	number := func() bool {
		q := p
		var n uint32
		for p < len(s) && '0' <= s[p] && s[p] <= '9' {
			n = n*10 + uint32(s[p]-'0')
			p++
		}
		if p == q || s[q] == '0' {
			return false
		}
		nums = append(nums, n)
		return true
	}
	// list parses one thread-list: "(" (thread-members / thread-nested) ")".
	var list func() error
	nested := func() error { // 2*thread-list
		k := 0
		for p < len(s) && s[p] == '(' {
			if err := list(); err != nil {
				return err
			}
			k++
		}
		if k < 2 {
			return fmt.Errorf("thread-nested with %d thread-list at %d", k, p)
		}
		return nil
	}
	list = func() error {
		if p >= len(s) || s[p] != '(' {
			return fmt.Errorf("expected ( at %d", p)
		}
		p++
		if p < len(s) && s[p] == '(' {
			if err := nested(); err != nil {
				return err
			}
		} else {
			if !number() {
				return fmt.Errorf("expected nz-number at %d", p)
			}
			for p < len(s) && s[p] == ' ' {
				p++
				if p < len(s) && s[p] == '(' {
					if err := nested(); err != nil {
						return err
					}
					break
				}
				if !number() {
					return fmt.Errorf("expected nz-number at %d", p)
				}
			}
		}
		if p >= len(s) || s[p] != ')' {
			return fmt.Errorf("expected ) at %d", p)
		}
		p++
		return nil
	}
	for p < len(s) {
		if err := list(); err != nil {
			return nums, err
		}
	}
	return nums, nil
}

func FuzzBaseSubject(f *testing.F) {
	for _, s := range []string{"", "Re: [list] Fwd: x (fwd)", "[fwd: [fwd: x]]", "=?utf-8?q?Re=3A_x?=", "[a] [b]", "re [", "Re:\t\r\n x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		base, _ := BaseSubjectReply(s)
		if strings.HasPrefix(base, " ") || strings.HasSuffix(base, " ") || strings.Contains(base, "  ") {
			t.Fatalf("%q: base %q has white space left", s, base)
		}
		if strings.Contains(s, "=?") {
			return // decoding again could find new encoded-words
		}
		if again, _ := BaseSubjectReply(base); again != base {
			t.Fatalf("%q: base %q is not its own base subject: %q", s, base, again)
		}
		if utf8.ValidString(s) && !utf8.ValidString(base) {
			t.Fatalf("%q: base %q is not UTF-8", s, base)
		}
	})
}

func FuzzMsgIDs(f *testing.F) {
	for _, s := range []string{"<a@b>", `<"a\"b"@c> (x <y@z>) <d@e`, "<<a@b>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, id := range msgIDs(nil, s, false) {
			if at := strings.LastIndexByte(id, '@'); at <= 0 || at == len(id)-1 {
				t.Fatalf("%q: %q is no Message ID", s, id)
			}
		}
	})
}
