package imapwire

// CancelUpdate: CANCELUPDATE 1*(SP quoted) (RFC 5267 sections 4.3.5 and 5): the tags of the
// searching commands whose UPDATE notifications end.
type CancelUpdate struct {
	Tags []string
}

func (r *Reader) parseCancelUpdate() *CancelUpdate {
	a := &CancelUpdate{}
	for first := true; r.ok() && (first || r.take(' ')); first = false {
		if first {
			r.sp()
		}
		if !r.ok() {
			break
		}
		if r.peek() != '"' {
			r.syntax("expected the quoted tag of a searching command")
			break
		}
		t := r.quoted()
		if r.ok() && !isTagString(t) {
			r.syntax("a quoted tag holds only the characters of a tag")
			break
		}
		a.Tags = append(a.Tags, t)
	}
	return a
}

// isTagString: t could be a tag (RFC 9051 tag: ASTRING-CHAR except "+"), which is what a
// CANCELUPDATE names.
func isTagString(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c >= 0x7f || c == '+' || c == '(' || c == ')' || c == '{' || c == '%' || c == '*' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
