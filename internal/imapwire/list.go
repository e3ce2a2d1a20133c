package imapwire

import "strings"

// parseList: LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
// (RFC 9051 section 6.3.9, RFC 5258, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE).
func (r *Reader) parseList() *List {
	a := &List{}
	r.sp()
	if r.take('(') {
		a.Selection = []string{}
		base := false
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			opt := strings.ToUpper(r.atom("a selection option"))
			switch opt {
			case "SUBSCRIBED", "SPECIAL-USE":
				base = true
			case "REMOTE", "RECURSIVEMATCH":
			default:
				if r.ok() {
					// RFC 5258 section 3: unknown selection options are refused with BAD.
					r.failMsg(BAD, "", ErrSyntax, "unknown LIST selection option %s", opt)
				}
			}
			a.Selection = append(a.Selection, opt)
		}
		for _, o := range a.Selection {
			if o == "RECURSIVEMATCH" && !base && r.ok() {
				r.failMsg(BAD, "", ErrSyntax, "RECURSIVEMATCH needs another selection option such as SUBSCRIBED (RFC 5258 section 3)")
			}
		}
		r.sp()
	}
	a.Reference = r.mailboxRaw()
	r.sp()
	if r.take('(') {
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			a.Patterns = append(a.Patterns, r.listMailbox())
		}
		if r.ok() && len(a.Patterns) == 0 {
			r.syntax("expected at least one mailbox pattern")
		}
	} else {
		a.Patterns = []string{r.listMailbox()}
	}
	if r.take(' ') {
		r.needWord("RETURN")
		r.sp()
		r.need('(', "'(' of return options")
		a.ReturnOpts = true
		a.Return = []string{}
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			opt := strings.ToUpper(r.atom("a return option"))
			switch opt {
			case "SUBSCRIBED", "CHILDREN", "SPECIAL-USE":
			case "STATUS":
				r.sp()
				a.StatusItems = r.statusItems()
			default:
				if r.ok() {
					r.failMsg(BAD, "", ErrSyntax, "unknown LIST return option %s", opt)
				}
			}
			a.Return = append(a.Return, opt)
		}
	}
	return a
}
