package imapsort

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Algorithm is a THREAD algorithm (RFC 5256 section 3), spelled as on the wire.
type Algorithm string

const (
	OrderedSubject Algorithm = "ORDEREDSUBJECT"
	References     Algorithm = "REFERENCES"
)

// ErrUnknownAlgorithm is returned for a threading algorithm this package does not implement.
var ErrUnknownAlgorithm = errors.New("imapsort: unknown threading algorithm")

// Node is one message of a thread tree, or a dummy (Msg nil) that holds messages together
// whose common parent is not among the messages threaded. A dummy has two or more children,
// except that REFERENCES can nest a dummy in a dummy (RFC 5256 step 5.C, "Otherwise"); a
// thread's top Node is the first message of the thread or a dummy.
type Node struct {
	Msg      *Msg // into the slice given to Thread; nil for a dummy
	Children []*Node
}

// Thread threads msgs with the algorithm and returns the threads in order, each as its top
// Node. Every message of msgs appears exactly once in the result. msgs is not modified and
// must outlive the result, which points into it.
func Thread(msgs []Msg, alg Algorithm) ([]*Node, error) {
	switch alg {
	case OrderedSubject:
		return threadOrderedSubject(msgs), nil
	case References:
		return threadReferences(msgs), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownAlgorithm, string(alg))
}

// threadOrderedSubject is ORDEREDSUBJECT (RFC 5256 section 3): sort by base subject, then by
// sent date; each run of one base subject is a thread whose first message is the parent of
// all the others; threads in order of their first message's sent date.
func threadOrderedSubject(msgs []Msg) []*Node {
	type row struct {
		m    *Msg
		base string
		sent time.Time
	}
	rows := make([]row, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		rows[i] = row{m: m, base: foldASCII(BaseSubject(m.Subject)), sent: m.sent()}
	}
	slices.SortFunc(rows, func(x, y row) int {
		if r := strings.Compare(x.base, y.base); r != 0 {
			return r
		}
		if r := x.sent.Compare(y.sent); r != 0 {
			return r
		}
		return cmp.Compare(x.m.Seq, y.m.Seq)
	})
	nodes := make([]Node, len(rows)) // one allocation for the whole forest
	var threads []*Node
	var sent []time.Time // of each thread's first message
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j].base == rows[i].base {
			j++
		}
		top := &nodes[i]
		top.Msg = rows[i].m
		if j > i+1 {
			top.Children = make([]*Node, 0, j-i-1)
			for k := i + 1; k < j; k++ {
				nodes[k].Msg = rows[k].m
				top.Children = append(top.Children, &nodes[k])
			}
		}
		threads = append(threads, top)
		sent = append(sent, rows[i].sent)
		i = j
	}
	idx := make([]int, len(threads))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if r := sent[a].Compare(sent[b]); r != 0 {
			return r
		}
		return cmp.Compare(threads[a].Msg.Seq, threads[b].Msg.Seq)
	})
	out := make([]*Node, len(idx))
	for i, k := range idx {
		out[i] = threads[k]
	}
	return out
}
