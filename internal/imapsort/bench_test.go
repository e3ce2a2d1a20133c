package imapsort

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// mailbox is a synthetic mailbox of n messages: about 40% start a thread, the rest reply to an
// earlier message (mostly a recent one) with its References plus its Message-ID; subjects get
// "Re:", list blobs and now and then an encoded-word; 5% have no usable Date.
func mailbox(n int, seed uint64) []Msg {
	r := rand.New(rand.NewPCG(seed, 0))
	msgs := make([]Msg, n)
	topics := 0
	for i := range msgs {
		m := &msgs[i]
		m.Seq = uint32(i + 1)
		m.UID = uint32(3*i + 7)
		m.InternalDate = t0.Add(time.Duration(i) * time.Minute)
		if r.IntN(20) != 0 {
			m.Date = m.InternalDate.Add(-time.Duration(r.IntN(600)) * time.Second)
		}
		m.Size = int64(500 + r.IntN(100000))
		m.MessageID = fmt.Sprintf("<%d.%x@host%d.example>", i, r.Uint32(), r.IntN(50))
		m.From = Address{Name: fmt.Sprintf("Person %d", r.IntN(500)), Mailbox: fmt.Sprintf("user%d", r.IntN(500)), Host: "example.org"}
		m.To = Address{Mailbox: fmt.Sprintf("list%d", r.IntN(20)), Host: "lists.example"}
		if r.IntN(3) == 0 {
			m.Cc = Address{Mailbox: fmt.Sprintf("cc%d", r.IntN(100)), Host: "example.net"}
		}
		if i == 0 || r.IntN(10) < 4 {
			topics++
			m.Subject = fmt.Sprintf("[list] Topic number %d about things", topics)
			if r.IntN(10) == 0 {
				m.Subject = fmt.Sprintf("=?utf-8?q?Caf=C3=A9_topic_%d?=", topics)
			}
			continue
		}
		p := &msgs[max(0, i-1-int(r.ExpFloat64()*50)%i)]
		m.Subject = "Re: " + p.Subject
		if r.IntN(4) == 0 {
			m.Subject = "RE: [list] " + strings.TrimPrefix(p.Subject, "Re: ")
		}
		refs := p.References + " " + p.MessageID
		if len(refs) > 900 { // MUAs truncate long References lines
			refs = refs[len(refs)-900:]
		}
		m.References = refs
		m.InReplyTo = p.MessageID
	}
	return msgs
}

const benchSize = 50000

func BenchmarkSort(b *testing.B) {
	msgs := mailbox(benchSize, 1)
	for _, bc := range []struct {
		name     string
		criteria []Criterion
	}{
		{"ARRIVAL", []Criterion{{Arrival, false}}},
		{"REVERSE_DATE", []Criterion{{Date, true}}},
		{"SUBJECT_DATE", []Criterion{{Subject, false}, {Date, false}}},
		{"FROM", []Criterion{{From, false}}},
		{"DISPLAYFROM", []Criterion{{DisplayFrom, false}}},
		{"REVERSE_ARRIVAL_FROM_SIZE", []Criterion{{Arrival, true}, {From, false}, {Size, false}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Sort(msgs, bc.criteria, UIDs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkThread(b *testing.B) {
	msgs := mailbox(benchSize, 1)
	for _, alg := range []Algorithm{OrderedSubject, References} {
		b.Run(string(alg), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				threads, err := Thread(msgs, alg)
				if err != nil {
					b.Fatal(err)
				}
				_ = AppendThreads(nil, threads, SeqNums)
			}
		})
	}
}

// BenchmarkThreadChain is the worst shape for the loop checks: one reply chain of every
// message, each replying to the one before, with In-Reply-To only.
func BenchmarkThreadChain(b *testing.B) {
	msgs := make([]Msg, benchSize)
	for i := range msgs {
		msgs[i] = Msg{Seq: uint32(i + 1), MessageID: fmt.Sprintf("<%d@x>", i), Subject: "Re: chain", Date: at(i)}
		if i > 0 {
			msgs[i].InReplyTo = fmt.Sprintf("<%d@x>", i-1)
		}
	}
	// Arriving newest first, every message links under a parent that already has a subtree.
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
		msgs[i].Seq, msgs[j].Seq = msgs[j].Seq, msgs[i].Seq
	}
	b.ReportAllocs()
	for b.Loop() {
		threads, err := Thread(msgs, References)
		if err != nil {
			b.Fatal(err)
		}
		if len(threads) != 1 {
			b.Fatalf("%d threads", len(threads))
		}
	}
}

func TestMailboxThreads(t *testing.T) {
	msgs := mailbox(2000, 7)
	for _, alg := range []Algorithm{OrderedSubject, References} {
		threads, err := Thread(msgs, alg)
		if err != nil {
			t.Fatal(err)
		}
		if err := eachOnce(msgs, threads); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if _, err := parseThreads(FormatThreads(threads, UIDs)); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
	}
}
