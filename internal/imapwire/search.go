package imapwire

import (
	"strings"
)

// maxSearchDepth bounds the nesting of NOT, OR and parentheses, so that a hostile program
// cannot exhaust the stack.
const maxSearchDepth = 100

// parseSearch: [search-return-opts] SP search-program (RFC 9051 section 6.4.4, RFC 4731).
func (r *Reader) parseSearch() *Search {
	a := &Search{}
	r.sp()
	if r.takeWord("RETURN") {
		a.Return = r.returnOpts()
		r.sp()
	}
	if r.takeWord("CHARSET") {
		r.sp()
		a.Charset = r.charset()
		r.sp()
	}
	a.Key = r.searchProgram()
	return a
}

// charset reads charset = atom / quoted.
func (r *Reader) charset() string {
	if r.peek() == '"' {
		return r.quoted()
	}
	return r.atom("a charset name")
}

// returnOpts reads "(" [search-return-opt *(SP search-return-opt)] ")" after RETURN SP.
func (r *Reader) returnOpts() *Return {
	ret := &Return{}
	r.sp()
	r.need('(', "'(' of return options")
	empty := true
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		empty = false
		opt := strings.ToUpper(r.atom("a return option"))
		switch opt {
		case "MIN":
			ret.Min = true
		case "MAX":
			ret.Max = true
		case "ALL":
			ret.All = true
		case "COUNT":
			ret.Count = true
		case "SAVE":
			ret.Save = true
		case "CONTEXT":
			ret.Context = true
		case "UPDATE":
			ret.Update = true
		case "PARTIAL":
			// RFC 9394: PARTIAL low:high, both non-zero and of one sign.
			r.sp()
			p := &PartialRange{}
			p.Low = r.partialNum()
			r.need(':', "':' in PARTIAL low:high")
			p.High = r.partialNum()
			if r.ok() && (p.Low < 0) != (p.High < 0) {
				r.failMsg(BAD, "", ErrSyntax, "PARTIAL range must be both positive or both negative")
			}
			ret.Partial = p
		default:
			if r.ok() {
				r.failMsg(BAD, "", ErrSyntax, "unknown return option %s", opt)
			}
		}
	}
	if empty {
		ret.All = true // RFC 4731 section 3.1: RETURN () means ALL.
	}
	return ret
}

func (r *Reader) partialNum() int64 {
	neg := r.take('-')
	if r.peek() == '0' {
		r.syntax("a PARTIAL bound cannot be 0")
		return 0
	}
	n := int64(r.number(1<<32-1, "a PARTIAL bound"))
	if neg {
		n = -n
	}
	return n
}

// searchProgram reads search-key *(SP search-key) to the end of the command.
func (r *Reader) searchProgram() *SearchKey {
	k := &SearchKey{Op: "AND"}
	k.Sub = append(k.Sub, r.searchKey(0))
	for r.ok() && r.take(' ') {
		k.Sub = append(k.Sub, r.searchKey(0))
	}
	return k
}

// searchKey reads one search-key, RFC 9051 section 9, with RFC 3501 NEW OLD RECENT, RFC 7162
// MODSEQ, RFC 5032 OLDER YOUNGER, RFC 8514 SAVED*, RFC 8474 EMAILID THREADID.
func (r *Reader) searchKey(depth int) *SearchKey {
	if !r.ok() {
		return nil
	}
	if depth > maxSearchDepth {
		r.failMsg(BAD, "", ErrSyntax, "search program is nested deeper than %d levels", maxSearchDepth)
		return nil
	}
	switch c := r.peek(); {
	case c == '(':
		r.pos++
		k := &SearchKey{Op: "AND"}
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			k.Sub = append(k.Sub, r.searchKey(depth+1))
		}
		if r.ok() && len(k.Sub) == 0 {
			r.syntax("empty parentheses in a search program")
		}
		return k
	case c == '*' || c == '$' || c >= '0' && c <= '9':
		return &SearchKey{Op: "SEQSET", Seq: r.seqSet(true)}
	}
	start := r.pos
	op := strings.ToUpper(r.atom("a search key"))
	k := &SearchKey{Op: op}
	switch op {
	case "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED", "UNDELETED",
		"UNDRAFT", "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT", "SAVEDATESUPPORTED":
	case "BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO":
		r.sp()
		k.Str = r.astring("a search string")
	case "KEYWORD", "UNKEYWORD":
		r.sp()
		k.Str = r.flag(true)
		if strings.HasPrefix(k.Str, `\`) {
			r.failMsg(BAD, "", ErrSyntax, "%s takes a keyword, not a system flag", op)
		}
	case "EMAILID", "THREADID":
		r.sp()
		k.Str = r.atom("an object id")
	case "HEADER":
		r.sp()
		k.Field = r.astring("a header field name")
		r.sp()
		k.Str = r.astring("a search string")
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE":
		r.sp()
		k.Date = r.date()
	case "LARGER", "SMALLER":
		r.sp()
		k.Num = r.number64("a size")
	case "OLDER", "YOUNGER":
		r.sp()
		if r.peek() == '0' {
			r.syntax("%s takes a number of seconds from 1", op)
		}
		k.Num = uint64(r.number32("a number of seconds"))
	case "UID":
		r.sp()
		k.Seq = r.seqSet(true)
	case "NOT":
		r.sp()
		k.Sub = []*SearchKey{r.searchKey(depth + 1)}
	case "OR":
		r.sp()
		a := r.searchKey(depth + 1)
		r.sp()
		b := r.searchKey(depth + 1)
		k.Sub = []*SearchKey{a, b}
	case "MODSEQ":
		// RFC 7162 section 3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer.
		r.sp()
		if r.peek() == '"' {
			k.EntryName = r.quoted()
			if r.ok() && !strings.HasPrefix(k.EntryName, "/flags/") {
				r.failMsg(BAD, "", ErrSyntax, "MODSEQ entry name must be \"/flags/<flag>\"")
			}
			r.sp()
			k.EntryType = strings.ToLower(r.atom("priv, shared or all"))
			switch k.EntryType {
			case "priv", "shared", "all":
			default:
				if r.ok() {
					r.failMsg(BAD, "", ErrSyntax, "MODSEQ entry type must be priv, shared or all")
				}
			}
			r.sp()
		}
		k.Num = r.modSeq(true)
	default:
		if r.ok() {
			r.pos = start
			r.syntax("unknown search key")
		}
	}
	return k
}

var sortKeys = map[string]bool{"ARRIVAL": true, "CC": true, "DATE": true, "FROM": true, "SIZE": true,
	"SUBJECT": true, "TO": true, "DISPLAYFROM": true, "DISPLAYTO": true}

// parseSort: [RETURN (...)] SP sort-criteria SP charset 1*(SP search-key) (RFC 5256, RFC 5267).
func (r *Reader) parseSort() *Sort {
	a := &Sort{}
	r.sp()
	if r.takeWord("RETURN") {
		a.Return = r.returnOpts()
		r.sp()
	}
	r.need('(', "'(' of sort criteria")
	for first := true; r.ok() && !r.take(')'); first = false {
		if !first {
			r.sp()
		}
		var c SortCriterion
		if r.takeWord("REVERSE") {
			c.Reverse = true
			r.sp()
		}
		start := r.pos
		c.Key = strings.ToUpper(r.atom("a sort key"))
		if r.ok() && !sortKeys[c.Key] {
			r.pos = start
			r.syntax("unknown sort key (ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO)")
		}
		a.Criteria = append(a.Criteria, c)
	}
	if r.ok() && len(a.Criteria) == 0 {
		r.syntax("expected at least one sort criterion")
	}
	r.sp()
	a.Charset = r.charset()
	r.sp()
	a.Key = r.searchProgram()
	return a
}

// parseThread: SP thread-alg SP charset 1*(SP search-key) (RFC 5256).
func (r *Reader) parseThread() *Thread {
	a := &Thread{}
	r.sp()
	a.Algorithm = strings.ToUpper(r.atom("a threading algorithm"))
	r.sp()
	a.Charset = r.charset()
	r.sp()
	a.Key = r.searchProgram()
	return a
}
