package imapwire

import (
	"strconv"
	"strings"
)

// Format returns the command as a client sends it, CRLF included, with every literal
// non-synchronizing ({n+}, so a Reader needs LiteralPlus for literals over 4096 bytes).
// Mailbox names are encoded in modified UTF-7 unless utf8 is set. It is the inverse of
// ReadCommand, used for round-trip tests and by test clients.
func (c *Command) Format(utf8 bool) []byte {
	f := &formatter{utf8: utf8}
	f.b.WriteString(c.Tag)
	if c.UID {
		f.b.WriteString(" UID")
	}
	f.word(c.Name)
	f.args(c)
	f.b.WriteString("\r\n")
	return []byte(f.b.String())
}

type formatter struct {
	b    strings.Builder
	utf8 bool
}

func (f *formatter) word(s string) { f.b.WriteString(" " + s) }
func (f *formatter) astr(s string) { f.word(formatAString(s, f.utf8)) }
func (f *formatter) str(s string)  { f.word(formatString(s, f.utf8)) }
func (f *formatter) num(n uint64)  { f.word(strconv.FormatUint(n, 10)) }
func (f *formatter) mailbox(s string) {
	if !f.utf8 {
		s = EncodeMailboxUTF7(s)
	}
	f.astr(s)
}

// pattern writes a list-mailbox: list-chars as they are, otherwise a string.
func (f *formatter) pattern(s string) {
	if !f.utf8 {
		s = EncodeMailboxUTF7(s)
	}
	for i := 0; i < len(s); i++ {
		if !isListChar(s[i]) {
			f.str(s)
			return
		}
	}
	if s == "" {
		f.str(s)
		return
	}
	f.word(s)
}

// charset formats charset = atom / quoted.
func (f *formatter) charset(s string) string {
	if isAtom(s, false) {
		return s
	}
	q, _ := quoteAny(s, true) // a parsed charset always can be quoted
	return q
}

func (f *formatter) list(items []string) {
	f.word("(" + strings.Join(items, " ") + ")")
}

func (f *formatter) literal(data []byte, binary bool) {
	p := ""
	if binary {
		p = "~"
	}
	f.word(p + "{" + strconv.Itoa(len(data)) + "+}\r\n" + string(data))
}

func (f *formatter) args(c *Command) {
	switch a := c.Args.(type) {
	case *Expunge:
		f.word(a.UIDs.String())
	case *Login:
		f.astr(a.Username)
		f.astr(a.Password)
	case *Authenticate:
		f.word(a.Mechanism)
		if a.InitialResponse != nil {
			if len(a.InitialResponse) == 0 {
				f.word("=")
			} else {
				f.word(b64(a.InitialResponse))
			}
		}
	case *Enable:
		for _, c := range a.Capabilities {
			f.word(c)
		}
	case *ID:
		if a.Params == nil {
			f.word("NIL")
			return
		}
		var parts []string
		for _, p := range a.Params {
			v := "NIL"
			if !p.ValueNil {
				v = formatString(p.Value, f.utf8)
			}
			parts = append(parts, formatString(p.Field, f.utf8)+" "+v)
		}
		f.list(parts)
	case *Compress:
		f.word(a.Mechanism)
	case *Select:
		f.mailbox(a.Mailbox)
		var params []string
		if a.CondStore {
			params = append(params, "CONDSTORE")
		}
		if q := a.QResync; q != nil {
			s := "QRESYNC (" + strconv.FormatUint(uint64(q.UIDValidity), 10) + " " + strconv.FormatUint(q.ModSeq, 10)
			if q.KnownUIDs != nil {
				s += " " + q.KnownUIDs.String()
			}
			if q.SeqMatchSeqs != nil {
				s += " (" + q.SeqMatchSeqs.String() + " " + q.SeqMatchUIDs.String() + ")"
			}
			params = append(params, s+")")
		}
		if len(params) > 0 {
			f.list(params)
		}
	case *Create:
		f.mailbox(a.Mailbox)
		if len(a.SpecialUse) > 0 {
			f.word("(USE (" + strings.Join(a.SpecialUse, " ") + "))")
		}
	case *Delete:
		f.mailbox(a.Mailbox)
	case *Rename:
		f.mailbox(a.From)
		f.mailbox(a.To)
	case *Subscribe:
		f.mailbox(a.Mailbox)
	case *List:
		if a.Selection != nil {
			f.list(a.Selection)
		}
		f.mailbox(a.Reference)
		if len(a.Patterns) == 1 {
			f.pattern(a.Patterns[0])
		} else {
			f.b.WriteString(" (")
			for i, p := range a.Patterns {
				if i > 0 {
					f.b.WriteString(" ")
				}
				f2 := &formatter{utf8: f.utf8}
				f2.pattern(p)
				f.b.WriteString(f2.b.String()[1:])
			}
			f.b.WriteString(")")
		}
		if a.ReturnOpts {
			var opts []string
			for _, o := range a.Return {
				if o == "STATUS" {
					o += " (" + strings.Join(a.StatusItems, " ") + ")"
				}
				opts = append(opts, o)
			}
			f.word("RETURN")
			f.list(opts)
		}
	case *Status:
		f.mailbox(a.Mailbox)
		f.list(a.Items)
	case *Append:
		f.mailbox(a.Mailbox)
		for _, m := range a.Messages {
			if m.Flags != nil {
				f.list(m.Flags)
			}
			if !m.Date.IsZero() {
				f.word(FormatDateTime(m.Date))
			}
			switch {
			case m.Catenate != nil:
				f.word("CATENATE")
				f.b.WriteString(" (")
				for i, p := range m.Catenate {
					if i > 0 {
						f.b.WriteString(" ")
					}
					if p.IsText {
						f.b.WriteString("TEXT")
						f.literal(p.Text, p.Binary)
					} else {
						f.b.WriteString("URL")
						f.astr(p.URL)
					}
				}
				f.b.WriteString(")")
			case m.UTF8:
				f.word("UTF8 (~{" + strconv.Itoa(len(m.Data)) + "+}\r\n" + string(m.Data) + ")")
			default:
				f.literal(m.Data, m.Binary)
			}
		}
	case *Search:
		f.returnOpts(a.Return)
		if a.Charset != "" {
			f.word("CHARSET " + f.charset(a.Charset))
		}
		f.program(a.Key)
	case *Fetch:
		f.word(a.Seqs.String())
		if a.Macro != "" {
			f.word(a.Macro)
		} else {
			var items []string
			for _, it := range a.Items {
				items = append(items, it.String())
			}
			f.list(items)
		}
		var mods []string
		if a.ChangedSince != 0 {
			mods = append(mods, "CHANGEDSINCE "+strconv.FormatUint(a.ChangedSince, 10))
		}
		if a.Vanished {
			mods = append(mods, "VANISHED")
		}
		if mods != nil {
			f.list(mods)
		}
	case *Store:
		f.word(a.Seqs.String())
		if a.UnchangedSince != nil {
			f.word("(UNCHANGEDSINCE " + strconv.FormatUint(*a.UnchangedSince, 10) + ")")
		}
		op := [...]string{"FLAGS", "+FLAGS", "-FLAGS"}[a.Op]
		if a.Silent {
			op += ".SILENT"
		}
		f.word(op)
		f.list(a.Flags)
	case *Copy:
		f.word(a.Seqs.String())
		f.mailbox(a.Mailbox)
	case *Sort:
		f.returnOpts(a.Return)
		var crit []string
		for _, c := range a.Criteria {
			if c.Reverse {
				crit = append(crit, "REVERSE "+c.Key)
			} else {
				crit = append(crit, c.Key)
			}
		}
		f.list(crit)
		f.word(f.charset(a.Charset))
		f.program(a.Key)
	case *Thread:
		f.word(a.Algorithm)
		f.word(f.charset(a.Charset))
		f.program(a.Key)
	case *CancelUpdate:
		for _, t := range a.Tags {
			f.word(`"` + t + `"`) // tags need no quoting (isTagString)
		}
	case *GetQuota:
		f.astr(a.Root)
	case *GetQuotaRoot:
		f.mailbox(a.Mailbox)
	case *SetQuota:
		f.astr(a.Root)
		var rs []string
		for _, q := range a.Resources {
			rs = append(rs, q.Name+" "+strconv.FormatUint(q.Limit, 10))
		}
		f.list(rs)
	case *Notify:
		if a.None {
			f.word("NONE")
			return
		}
		f.word("SET")
		if a.Status {
			f.word("STATUS")
		}
		for _, g := range a.Groups {
			f.b.WriteString(" (" + g.Filter)
			switch len(g.Mailboxes) {
			case 0:
			case 1:
				f.mailbox(g.Mailboxes[0])
			default:
				f.b.WriteString(" (")
				for i, m := range g.Mailboxes {
					f2 := &formatter{utf8: f.utf8}
					f2.mailbox(m)
					if i > 0 {
						f.b.WriteString(" ")
					}
					f.b.WriteString(f2.b.String()[1:])
				}
				f.b.WriteString(")")
			}
			if g.Events == nil {
				f.word("NONE")
			} else {
				var evs []string
				for _, e := range g.Events {
					s := e.Name
					if e.Fetch != nil {
						var items []string
						for _, it := range e.Fetch {
							items = append(items, it.String())
						}
						s += " (" + strings.Join(items, " ") + ")"
					}
					evs = append(evs, s)
				}
				f.list(evs)
			}
			f.b.WriteString(")")
		}
	}
}

func (f *formatter) returnOpts(r *Return) {
	if r == nil {
		return
	}
	var opts []string
	for _, o := range []struct {
		on   bool
		name string
	}{{r.Min, "MIN"}, {r.Max, "MAX"}, {r.All, "ALL"}, {r.Count, "COUNT"}, {r.Save, "SAVE"}, {r.Context, "CONTEXT"}, {r.Update, "UPDATE"}} {
		if o.on {
			opts = append(opts, o.name)
		}
	}
	if p := r.Partial; p != nil {
		opts = append(opts, "PARTIAL "+strconv.FormatInt(p.Low, 10)+":"+strconv.FormatInt(p.High, 10))
	}
	f.word("RETURN")
	f.list(opts)
}

// program writes the keys of a top-level AND.
func (f *formatter) program(k *SearchKey) {
	for _, s := range k.Sub {
		f.key(s)
	}
}

func (f *formatter) key(k *SearchKey) {
	switch k.Op {
	case "AND":
		f.b.WriteString(" (")
		f2 := &formatter{utf8: f.utf8}
		f2.program(k)
		f.b.WriteString(strings.TrimPrefix(f2.b.String(), " "))
		f.b.WriteString(")")
	case "SEQSET":
		f.word(k.Seq.String())
	case "UID":
		f.word("UID " + k.Seq.String())
	case "NOT", "OR":
		f.word(k.Op)
		for _, s := range k.Sub {
			f.key(s)
		}
	case "BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO":
		f.word(k.Op)
		f.astr(k.Str)
	case "KEYWORD", "UNKEYWORD", "EMAILID", "THREADID":
		f.word(k.Op + " " + k.Str)
	case "HEADER":
		f.word(k.Op)
		f.astr(k.Field)
		f.astr(k.Str)
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE":
		f.word(k.Op + " " + FormatDate(k.Date))
	case "LARGER", "SMALLER", "OLDER", "YOUNGER":
		f.word(k.Op)
		f.num(k.Num)
	case "MODSEQ":
		f.word(k.Op)
		if k.EntryName != "" {
			q, _ := quoteAny(k.EntryName, true) // entry-name is quoted only (RFC 7162)
			f.word(q)
			f.word(k.EntryType)
		}
		f.num(k.Num)
	default:
		f.word(k.Op)
	}
}
