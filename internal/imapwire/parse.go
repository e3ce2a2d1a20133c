package imapwire

import (
	"encoding/base64"
	"errors"
	"strings"
)

// ReadCommand reads and parses the next command. It returns io.EOF at the end of input between
// commands, an *Error for a command the server must refuse (see Error for the answer to give),
// or another error when reading failed or Continue failed (the connection is then unusable).
func (r *Reader) ReadCommand() (*Command, error) {
	r.err, r.cmd, r.budget = nil, "", r.Config.commandBudget()
	if err := r.readLine(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Tag = lineTag(r.line)
		}
		return nil, err
	}
	cmd := &Command{}
	r.parseCommand(cmd)
	if r.err == nil && !r.eol() {
		r.syntax("unexpected characters after the command")
	}
	if r.err != nil {
		var e *Error
		if !errors.As(r.err, &e) {
			return nil, r.err
		}
		e.Tag = cmd.Tag
		if !e.Fatal && !r.discardCommand() {
			e.Fatal = true
			e.Msg += "; closing the connection"
		}
		return nil, e
	}
	return cmd, nil
}

// lineTag returns the tag at the start of line, if there is a valid one.
func lineTag(line []byte) string {
	i := 0
	for i < len(line) && isAstringChar(line[i]) && line[i] != '+' {
		i++
	}
	if i == 0 || i >= len(line) || line[i] != ' ' {
		return ""
	}
	return string(line[:i])
}

func (r *Reader) parseCommand(cmd *Command) {
	if r.eol() {
		r.syntax("empty line; expected a tag and a command")
		return
	}
	cmd.Tag = r.run(func(c byte) bool { return isAstringChar(c) && c != '+' })
	if cmd.Tag == "" {
		r.syntax("expected a tag")
		return
	}
	r.need(' ', "a space and a command after the tag")
	name := strings.ToUpper(r.atom("a command name"))
	if !r.ok() {
		return
	}
	if name == "UID" {
		r.sp()
		name = strings.ToUpper(r.atom("a command after UID"))
		if !r.ok() {
			return
		}
		switch name {
		case "COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD":
		default:
			r.cmd = "UID"
			r.failMsg(BAD, "", ErrUnknownCommand, "UID %s is not a command (UID goes with COPY, MOVE, FETCH, SEARCH, STORE, EXPUNGE, SORT, THREAD)", name)
			return
		}
		cmd.UID = true
		r.cmd = "UID " + name
	} else {
		r.cmd = name
	}
	cmd.Name = name
	switch name {
	case "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE", "NAMESPACE":
	case "EXPUNGE":
		if cmd.UID {
			r.sp()
			cmd.Args = &Expunge{UIDs: r.seqSet(true)}
		}
	case "LOGIN":
		a := &Login{}
		r.sp()
		a.Username = r.astring("the user name")
		r.sp()
		a.Password = r.astring("the password")
		cmd.Args = a
	case "AUTHENTICATE":
		cmd.Args = r.parseAuthenticate()
	case "ENABLE":
		a := &Enable{}
		for r.take(' ') {
			a.Capabilities = append(a.Capabilities, strings.ToUpper(r.atom("a capability name")))
		}
		if len(a.Capabilities) == 0 {
			r.syntax("expected a capability to enable")
		}
		cmd.Args = a
	case "ID":
		r.sp()
		cmd.Args = r.parseID()
	case "COMPRESS":
		r.sp()
		cmd.Args = &Compress{Mechanism: strings.ToUpper(r.atom("a compression mechanism"))}
	case "SELECT", "EXAMINE":
		cmd.Args = r.parseSelect(name == "EXAMINE")
	case "CREATE":
		cmd.Args = r.parseCreate()
	case "DELETE":
		r.sp()
		cmd.Args = &Delete{Mailbox: r.mailbox()}
	case "RENAME":
		a := &Rename{}
		r.sp()
		a.From = r.mailbox()
		r.sp()
		a.To = r.mailbox()
		cmd.Args = a
	case "SUBSCRIBE", "UNSUBSCRIBE":
		r.sp()
		cmd.Args = &Subscribe{Mailbox: r.mailbox()}
	case "LIST":
		cmd.Args = r.parseList()
	case "LSUB":
		a := &List{LSub: true}
		r.sp()
		a.Reference = r.mailboxRaw()
		r.sp()
		a.Patterns = []string{r.listMailbox()}
		cmd.Args = a
	case "STATUS":
		a := &Status{}
		r.sp()
		a.Mailbox = r.mailbox()
		r.sp()
		a.Items = r.statusItems()
		cmd.Args = a
	case "APPEND":
		cmd.Args = r.parseAppend()
	case "SEARCH":
		cmd.Args = r.parseSearch()
	case "FETCH":
		cmd.Args = r.parseFetch(cmd.UID)
	case "STORE":
		cmd.Args = r.parseStore()
	case "COPY", "MOVE":
		a := &Copy{}
		r.sp()
		a.Seqs = r.seqSet(true)
		r.sp()
		a.Mailbox = r.mailbox()
		cmd.Args = a
	case "SORT":
		cmd.Args = r.parseSort()
	case "THREAD":
		cmd.Args = r.parseThread()
	case "GETQUOTA":
		r.sp()
		cmd.Args = &GetQuota{Root: r.astring("a quota root")}
	case "GETQUOTAROOT":
		r.sp()
		cmd.Args = &GetQuotaRoot{Mailbox: r.mailbox()}
	case "SETQUOTA":
		cmd.Args = r.parseSetQuota()
	case "NOTIFY":
		cmd.Args = r.parseNotify()
	case "CANCELUPDATE":
		cmd.Args = r.parseCancelUpdate()
	default:
		r.cmd = ""
		r.failMsg(BAD, "", ErrUnknownCommand, "unknown command %s", name)
	}
}

// parseAuthenticate: auth-type [SP (base64 / "=")] (RFC 9051, RFC 4959).
func (r *Reader) parseAuthenticate() *Authenticate {
	a := &Authenticate{}
	r.sp()
	a.Mechanism = strings.ToUpper(r.atom("a SASL mechanism name"))
	if r.take(' ') {
		if r.take('=') {
			a.InitialResponse = []byte{}
			return a
		}
		s := r.run(isBase64Char)
		if s == "" {
			r.syntax("expected a base64 initial response or '='")
			return a
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			r.pos -= len(s)
			r.syntax("initial response is not valid base64")
			return a
		}
		a.InitialResponse = b
	}
	return a
}

func isBase64Char(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || isDigit(c) || c == '+' || c == '/' || c == '='
}

// parseID: "(" *(string SP nstring) ")" / nil, with the limits of RFC 2971 section 3.3.
func (r *Reader) parseID() *ID {
	a := &ID{}
	if r.takeWord("NIL") {
		return a
	}
	r.need('(', "'(' or NIL")
	a.Params = []IDParam{}
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		var p IDParam
		p.Field = r.str("an ID field name")
		r.sp()
		p.Value, p.ValueNil = r.nstring("an ID value")
		if !r.ok() {
			break
		}
		if len(p.Field) > 30 || len(p.Value) > 1024 {
			r.failMsg(BAD, "", ErrSyntax, "ID field names are at most 30 bytes and values at most 1024 bytes (RFC 2971 section 3.3)")
			break
		}
		a.Params = append(a.Params, p)
		if len(a.Params) > 30 {
			r.failMsg(BAD, "", ErrSyntax, "ID takes at most 30 field-value pairs (RFC 2971 section 3.3)")
		}
	}
	return a
}

// mailbox reads a mailbox name: decoded from modified UTF-7 unless UTF8 is enabled, and
// "INBOX" in any case folded to "INBOX" (RFC 9051 section 5.1).
func (r *Reader) mailbox() string {
	name := r.mailboxRaw()
	if strings.EqualFold(name, "INBOX") {
		return "INBOX"
	}
	return name
}

// mailboxRaw reads a mailbox name without INBOX folding (the LIST reference).
func (r *Reader) mailboxRaw() string {
	return r.decodeName(r.astring("a mailbox name"))
}

// decodeName turns a name as sent into UTF-8.
func (r *Reader) decodeName(s string) string {
	if !r.ok() {
		return ""
	}
	if r.Config.UTF8 {
		if !validUTF8(s) {
			r.failMsg(BAD, "", ErrSyntax, "mailbox name is not valid UTF-8")
			return ""
		}
		return s
	}
	d, err := DecodeMailboxUTF7(s)
	if err != nil {
		r.failMsg(BAD, "", ErrSyntax, "mailbox name %q is not valid modified UTF-7 (RFC 3501 section 5.1.3; \"&\" is written \"&-\"); or ENABLE UTF8=ACCEPT", s)
		return ""
	}
	return d
}

// listMailbox reads list-mailbox = 1*list-char / string.
func (r *Reader) listMailbox() string {
	var s string
	switch r.peek() {
	case '"', '{':
		s = r.str("a mailbox pattern")
	default:
		s = r.run(isListChar)
		if s == "" {
			r.syntax("expected a mailbox pattern")
		}
	}
	return r.decodeName(s)
}

// flag reads a flag: "\" atom (system flag or flag-extension) or a keyword. System flags are
// returned in their canonical case.
func (r *Reader) flag(allowRecent bool) string {
	if r.take('\\') {
		a := r.atom("a flag name after '\\'")
		f := "\\" + a
		for _, sys := range []string{`\Answered`, `\Flagged`, `\Deleted`, `\Seen`, `\Draft`, `\Recent`} {
			if strings.EqualFold(f, sys) {
				if sys == `\Recent` && !allowRecent {
					r.failMsg(BAD, "", ErrSyntax, `\Recent cannot be stored or appended`)
				}
				return sys
			}
		}
		return f
	}
	return r.atom("a flag")
}

// flagList reads flag-list = "(" [flag *(SP flag)] ")".
func (r *Reader) flagList() []string {
	r.need('(', "'(' of a flag list")
	flags := []string{}
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		flags = append(flags, r.flag(false))
	}
	return flags
}

// statusItems reads "(" status-att *(SP status-att) ")".
func (r *Reader) statusItems() []string {
	r.need('(', "'(' of status items")
	var items []string
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		it := strings.ToUpper(r.atom("a status item"))
		switch it {
		case "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
			"HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "DELETED-STORAGE":
		default:
			if r.ok() {
				r.failMsg(BAD, "", ErrSyntax, "unknown status item %s", it)
			}
		}
		items = append(items, it)
	}
	if r.ok() && len(items) == 0 {
		r.syntax("expected at least one status item")
	}
	return items
}

func (r *Reader) parseSelect(readOnly bool) *Select {
	a := &Select{ReadOnly: readOnly}
	r.sp()
	a.Mailbox = r.mailbox()
	if !r.take(' ') {
		return a
	}
	r.need('(', "'(' of select parameters")
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		switch {
		case r.takeWord("CONDSTORE"):
			a.CondStore = true
		case r.takeWord("QRESYNC"):
			// RFC 7162 section 3.2.5.
			q := &QResync{}
			r.sp()
			r.need('(', "'(' of QRESYNC parameters")
			q.UIDValidity = r.nzNumber32("UIDVALIDITY")
			r.sp()
			q.ModSeq = r.modSeq(false)
			if r.take(' ') && r.peek() != '(' {
				s := r.seqSet(false)
				for _, rg := range s.Ranges {
					if rg.Start == 0 || rg.Stop == 0 {
						r.failMsg(BAD, "", ErrSyntax, "known UIDs of QRESYNC may not use '*' (RFC 7162 section 3.2.5)")
					}
				}
				q.KnownUIDs = &s
				r.take(' ')
			}
			if r.take('(') {
				s1 := r.seqSet(false)
				r.sp()
				s2 := r.seqSet(false)
				r.need(')', "')' closing the sequence match data")
				q.SeqMatchSeqs, q.SeqMatchUIDs = &s1, &s2
			}
			r.need(')', "')' closing QRESYNC parameters")
			a.QResync = q
		default:
			r.syntax("unknown select parameter (CONDSTORE or QRESYNC)")
		}
	}
	return a
}

// modSeq reads mod-sequence-value (1 and up) or, with zeroOK, mod-sequence-valzer.
func (r *Reader) modSeq(zeroOK bool) uint64 {
	if r.peek() == '0' && !zeroOK {
		r.syntax("expected a mod-sequence (a number from 1)")
		return 0
	}
	return r.number64("a mod-sequence")
}

func (r *Reader) parseCreate() *Create {
	a := &Create{}
	r.sp()
	a.Mailbox = r.mailbox()
	if r.take(' ') {
		r.need('(', "'(' of create parameters")
		r.needWord("USE")
		r.sp()
		r.need('(', "'(' of special-use attributes")
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			r.need('\\', "a special-use attribute like \\Drafts")
			a.SpecialUse = append(a.SpecialUse, "\\"+r.atom("a special-use attribute"))
		}
		r.need(')', "')' closing create parameters")
	}
	return a
}

func (r *Reader) parseSetQuota() *SetQuota {
	a := &SetQuota{}
	r.sp()
	a.Root = r.astring("a quota root")
	r.sp()
	r.need('(', "'(' of quota limits")
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		var q QuotaResource
		q.Name = strings.ToUpper(r.atom("a quota resource name"))
		r.sp()
		q.Limit = r.number64("a quota limit")
		a.Resources = append(a.Resources, q)
	}
	return a
}
