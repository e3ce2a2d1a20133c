package imapwire

import "strings"

// parseNotify: NOTIFY SP ("NONE" / "SET" [SP "STATUS"] 1*(SP event-group)) (RFC 5465
// section 8).
func (r *Reader) parseNotify() *Notify {
	a := &Notify{}
	r.sp()
	if r.takeWord("NONE") {
		a.None = true
		return a
	}
	r.needWord("SET")
	r.sp()
	if r.takeWord("STATUS") {
		a.Status = true
		r.sp()
	}
	for first := true; r.ok(); first = false {
		if !first && !r.take(' ') {
			break
		}
		a.Groups = append(a.Groups, r.notifyGroup())
	}
	return a
}

func (r *Reader) notifyGroup() NotifyGroup {
	var g NotifyGroup
	r.need('(', "'(' of an event group")
	g.Filter = strings.ToUpper(r.atom("a mailbox filter"))
	switch g.Filter {
	case "SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED":
	case "SUBTREE", "MAILBOXES":
		r.sp()
		if r.take('(') {
			for first := true; r.ok() && !r.take(')'); first = false {
				if !first {
					r.sp()
				}
				g.Mailboxes = append(g.Mailboxes, r.mailbox())
			}
			if r.ok() && len(g.Mailboxes) == 0 {
				r.syntax("expected at least one mailbox")
			}
		} else {
			g.Mailboxes = []string{r.mailbox()}
		}
	default:
		if r.ok() {
			r.failMsg(BAD, "", ErrSyntax, "unknown NOTIFY mailbox filter %s", g.Filter)
		}
	}
	r.sp()
	if !r.takeWord("NONE") {
		r.need('(', "'(' of events or NONE")
		g.Events = []NotifyEvent{}
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			var e NotifyEvent
			e.Name = r.atom("an event name")
			if strings.EqualFold(e.Name, "MessageNew") && r.peek() == ' ' && r.pos+1 < len(r.line) && r.line[r.pos+1] == '(' {
				r.pos += 2
				for first := true; r.ok() && !r.take(')'); first = false {
					if !first {
						r.sp()
					}
					e.Fetch = append(e.Fetch, r.fetchAtt())
				}
			}
			g.Events = append(g.Events, e)
		}
	}
	r.need(')', "')' closing an event group")
	return g
}
