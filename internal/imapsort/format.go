package imapsort

import "strconv"

// FormatThreads is the thread-list part of a THREAD response (RFC 5256 section 4), what
// follows "* THREAD ": for example "(2)(3 6 (4 23)(44 7 96))". No threads is "".
func FormatThreads(threads []*Node, num Numbering) string {
	return string(AppendThreads(nil, threads, num))
}

// AppendThreads appends FormatThreads's text to dst. The grammar:
//
//	thread-list    = "(" (thread-members / thread-nested) ")"
//	thread-members = nz-number *(SP nz-number) [SP thread-nested]
//	thread-nested  = 2*thread-list
//
// so a message with one child continues its list, a message with more children opens a list
// for each, and a dummy contributes only its children.
func AppendThreads(dst []byte, threads []*Node, num Numbering) []byte {
	for _, t := range threads {
		dst = append(dst, '(')
		dst = appendMembers(dst, t, num)
		dst = append(dst, ')')
	}
	return dst
}

// appendMembers writes n and its descendants as the inside of a thread-list. Chains of only
// children are written in a loop rather than by recursion: a long reply chain is one flat
// list.
func appendMembers(dst []byte, n *Node, num Numbering) []byte {
	sep := false
	for {
		if n.Msg != nil {
			if sep {
				dst = append(dst, ' ')
			}
			dst = strconv.AppendUint(dst, uint64(num.of(n.Msg)), 10)
			sep = true
		}
		switch len(n.Children) {
		case 0:
			return dst
		case 1:
			n = n.Children[0]
			continue
		}
		if sep {
			dst = append(dst, ' ')
		}
		for _, c := range n.Children {
			dst = append(dst, '(')
			dst = appendMembers(dst, c, num)
			dst = append(dst, ')')
		}
		return dst
	}
}
