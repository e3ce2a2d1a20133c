package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// lit expands "{N}" markers of a test input: "{5:hello}" becomes "{5}\r\nhello", and
// "{5+:hello}" becomes "{5+}\r\nhello". Inputs without markers are left as they are.
func lit(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "{<")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.Index(s[i:], ">}")
		body := s[i+2 : i+j]
		plus := ""
		if strings.HasPrefix(body, "+") {
			plus, body = "+", body[1:]
		}
		b.WriteString(s[:i])
		b.WriteString("{" + itoa(len(body)) + plus + "}\r\n" + body)
		s = s[i+j+2:]
	}
}

func itoa(n int) string { return uitoa(uint64(n)) }

// parseAll reads every command of input with cfg, returning the commands, the errors, and
// the sizes passed to Continue.
func parseAll(t *testing.T, input string, cfg Config) (cmds []*Command, errs []error, conts []int64) {
	t.Helper()
	r := NewReader(bufio.NewReader(strings.NewReader(input)), cfg)
	r.Continue = func(n int64) error { conts = append(conts, n); return nil }
	for i := 0; i < 1000; i++ {
		cmd, err := r.ReadCommand()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				if !errors.Is(err, io.EOF) {
					errs = append(errs, err)
				}
				return
			}
			errs = append(errs, err)
			if e.Fatal {
				return
			}
			continue
		}
		cmds = append(cmds, cmd)
	}
	t.Fatalf("more than 1000 commands")
	return
}

func parseOne(t *testing.T, input string, cfg Config) *Command {
	t.Helper()
	cmds, errs, _ := parseAll(t, input, cfg)
	if len(errs) > 0 || len(cmds) != 1 {
		t.Fatalf("%q: got %d commands, errors %v", input, len(cmds), errs)
	}
	return cmds[0]
}

// normalize makes commands comparable with reflect.DeepEqual: times in UTC.
func normalize(c *Command) *Command {
	if a, ok := c.Args.(*Append); ok {
		for i := range a.Messages {
			if !a.Messages[i].Date.IsZero() {
				a.Messages[i].Date = a.Messages[i].Date.UTC()
			}
		}
	}
	return c
}

// roundTrip checks that formatting cmd and parsing it again gives the same command, and
// that formatting is a fixpoint.
func roundTrip(t *testing.T, cmd *Command, cfg Config) {
	t.Helper()
	cfg.LiteralPlus = true
	out := cmd.Format(cfg.UTF8)
	again := parseOne(t, string(out), cfg)
	if out2 := again.Format(cfg.UTF8); !bytes.Equal(out, out2) {
		t.Fatalf("format not a fixpoint:\n%q\n%q", out, out2)
	}
	if !reflect.DeepEqual(normalize(cmd), normalize(again)) {
		t.Fatalf("round trip of %q:\n got %#v\nwant %#v", out, again.Args, cmd.Args)
	}
}

// RFC examples: each must parse, and survive a round trip.
var rfcExamples = []string{
	// RFC 9051 section 6.
	"a001 CAPABILITY\r\n",
	"a002 NOOP\r\n",
	"A023 LOGOUT\r\n",
	"a002 STARTTLS\r\n",
	"A001 AUTHENTICATE GSSAPI\r\n",
	"a001 LOGIN SMITH SESAME\r\n",
	"A142 SELECT INBOX\r\n",
	"A932 EXAMINE blurdybloop\r\n",
	"A003 CREATE owatagusiam/\r\n",
	"A004 CREATE owatagusiam/blurdybloop\r\n",
	"A683 DELETE blurdybloop\r\n",
	"A683 RENAME blurdybloop sarasoop\r\n",
	"Z432 RENAME INBOX old-mail\r\n",
	"A002 SUBSCRIBE #news.comp.mail.mime\r\n",
	"A002 UNSUBSCRIBE #news.comp.mail.mime\r\n",
	"A101 LIST \"\" \"\"\r\n",
	"A102 LIST #news.comp.mail.misc \"\"\r\n",
	"A103 LIST /usr/staff/jones \"\"\r\n",
	"A202 LIST ~/Mail/ %\r\n",
	"A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n",
	"A003 APPEND saved-messages (\\Seen) {<Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>\r\nSubject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n>}\r\n",
	"A341 CLOSE\r\n",
	"A342 UNSELECT\r\n",
	"A202 EXPUNGE\r\n",
	"A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
	"A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
	"A284 SEARCH TEXT \"string not in mailbox\"\r\n",
	"A285 SEARCH CHARSET UTF-8 TEXT {<Отпуск>}\r\n",
	"A286 SEARCH CHARSET UTF-8 TEXT {<+Отпуск>}\r\n",
	"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
	"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
	"A003 COPY 2:4 MEETING\r\n",
	"A003 MOVE 2:4 MEETING\r\n",
	"A999 UID FETCH 4827313:4828442 FLAGS\r\n",
	"A999 UID SEARCH 1:100 UID 443:557\r\n",
	"A001 IDLE\r\n",
	"A001 NAMESPACE\r\n",
	"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n",
	"a ENABLE UTF8=ACCEPT\r\n",
	"a CHECK\r\n",
	"a FETCH 1:* ALL\r\n",
	"a FETCH 1:* FAST\r\n",
	"a FETCH 1:* FULL\r\n",
	"a FETCH 1 (BODY.PEEK[1.2.MIME] BODY[] BODY[TEXT]<0.2048> BODY[4.2.HEADER.FIELDS.NOT (Subject X-Foo)] BODYSTRUCTURE BODY ENVELOPE INTERNALDATE UID RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE)\r\n",
	// RFC 4959 SASL-IR.
	"a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
	"a01 AUTHENTICATE EXTERNAL =\r\n",
	// RFC 3516 BINARY.
	"a FETCH 1 (BINARY[1] BINARY.PEEK[5]<0.7> BINARY.SIZE[1.2] BINARY[])\r\n",
	"a APPEND INBOX ~{<+bin\x00ary>}\r\n",
	// RFC 7162 CONDSTORE / QRESYNC.
	"a142 SELECT INBOX (CONDSTORE)\r\n",
	"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)\r\n",
	"d106 STORE 7,5,9 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Deleted)\r\n",
	"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
	"s101 FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345)\r\n",
	"a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
	"t SEARCH OR NOT MODSEQ 720162338 LARGER 50000\r\n",
	"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
	"B02 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))\r\n",
	"A02 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))\r\n",
	"A03 SELECT INBOX (QRESYNC (67890007 90060115194045000))\r\n",
	"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
	"a STATUS blurdybloop (HIGHESTMODSEQ MESSAGES UNSEEN)\r\n",
	"a ENABLE QRESYNC\r\n",
	// RFC 4315 UIDPLUS.
	"A003 UID EXPUNGE 3000:3002\r\n",
	// RFC 5182 SEARCHRES.
	"A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
	"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)\r\n",
	"A301 UID SEARCH UID $ SMALLER 4096\r\n",
	"A302 COPY $ \"Other Messages\"\r\n",
	"A303 SEARCH $ SMALLER 4096\r\n",
	// RFC 5256 SORT / THREAD.
	"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n",
	"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n",
	"A284 SORT (SUBJECT) US-ASCII TEXT \"not in mailbox\"\r\n",
	"A285 UID SORT (REVERSE ARRIVAL FROM SIZE) UTF-8 UNDELETED\r\n",
	"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n",
	"A284 THREAD ORDEREDSUBJECT US-ASCII TEXT \"gewp\"\r\n",
	"A285 UID THREAD REFERENCES UTF-8 ALL\r\n",
	// RFC 5267 ESORT, CONTEXT.
	"C1 SORT RETURN (COUNT MIN) (DATE) UTF-8 UNDELETED UNKEYWORD $Junk\r\n",
	"A02 SEARCH RETURN (CONTEXT UPDATE COUNT) FROM \"smith\"\r\n",
	"A03 UID SEARCH RETURN (PARTIAL 1:500) UNDELETED\r\n",
	// RFC 3502 MULTIAPPEND.
	"A003 APPEND saved-messages (\\Seen) {<+Date: Mon, 7 Feb 1994\r\n\r\nHello Joe\r\n>} (\\Seen) \" 1-Aug-2002 22:00:00 +0200\" {<Date: Mon, 7 Feb 1994\r\n\r\nHello Fred\r\n>}\r\n",
	// RFC 4469 CATENATE.
	"A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER\" TEXT {<\r\n--------------030308070208000400050907\r\n>} URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME\" URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1\" TEXT {<+\r\n--------------030308070208000400050907--\r\n>})\r\n",
	// RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE.
	"A02 LIST (SUBSCRIBED) \"\" \"*\"\r\n",
	"A03 LIST () \"\" \"%\" RETURN (CHILDREN)\r\n",
	"A04 LIST (REMOTE) \"\" \"%\" RETURN (CHILDREN)\r\n",
	"A05 LIST (REMOTE SUBSCRIBED) \"/\" \"*\"\r\n",
	"A06 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"\r\n",
	"C04 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)\r\n",
	"A01 LIST \"\" (\"INBOX\" \"Drafts\" \"Sent/%\")\r\n",
	"A02 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n",
	"t1 LIST (SPECIAL-USE) \"\" \"*\"\r\n",
	"t3 LIST \"\" \"%\" RETURN (SPECIAL-USE)\r\n",
	"t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n",
	"A02 LSUB \"#news.\" \"comp.mail.*\"\r\n",
	// RFC 2971 ID.
	"a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n",
	"a023 ID NIL\r\n",
	"a024 ID (\"name\" NIL)\r\n",
	// RFC 4978 COMPRESS, RFC 9208 QUOTA.
	"a COMPRESS DEFLATE\r\n",
	"G0001 GETQUOTA \"!partition/sda4\"\r\n",
	"A003 GETQUOTAROOT INBOX\r\n",
	"S0000 SETQUOTA \"#user/alice\" (STORAGE 510 MESSAGE 1000)\r\n",
	// RFC 5465 NOTIFY.
	"a NOTIFY SET (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew))\r\n",
	"a NOTIFY SET STATUS (personal (MessageNew FlagChange MessageExpunge)) (mailboxes (INBOX Sent) NONE)\r\n",
	"a NOTIFY NONE\r\n",
	// RFC 5032 WITHIN, RFC 8474 OBJECTID, RFC 8514 SAVEDATE.
	"a SEARCH YOUNGER 3600 OR OLDER 60 EMAILID M6d99ac3275bb4e\r\n",
	"a SEARCH SAVEDSINCE 1-Jan-2020 SAVEDATESUPPORTED\r\n",
	"a SEARCH CHARSET \"x y\" ALL\r\n",
	"a SEARCH MODSEQ \"/flags/" + strings.Repeat("k", 1100) + "\" priv 5\r\n",
	"a SORT (DATE) \"UTF-8\" ALL\r\n",
	// Assorted search keys, nesting.
	"a SEARCH (OR (SEEN FLAGGED) NOT (DELETED ANSWERED)) HEADER X-Spam yes BCC a CC b TO c SUBJECT d BODY e KEYWORD $Forwarded SENTBEFORE 1-Jan-2020 SENTON 2-Feb-2020 SENTSINCE 3-Mar-2020 BEFORE 4-Apr-2020 ON 5-May-2020 1,3:5,7:* UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN DRAFT NEW OLD RECENT\r\n",
	// UTF-7 names.
	"a SELECT \"Entw&APw-rfe\"\r\n",
	"a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n",
}

func TestRFCExamples(t *testing.T) {
	for _, in := range rfcExamples {
		in := lit(in)
		cmd := parseOne(t, in, Config{LiteralPlus: true})
		roundTrip(t, cmd, Config{})
		roundTrip(t, cmd, Config{UTF8: true})
	}
}

func u64(v uint64) *uint64 { return &v }
func seq(r ...uint32) SeqSet {
	var s SeqSet
	for i := 0; i < len(r); i += 2 {
		s.Ranges = append(s.Ranges, SeqRange{r[i], r[i+1]})
	}
	return s
}
func seqp(r ...uint32) *SeqSet { s := seq(r...); return &s }

// Exact parses of some examples.
func TestParseExact(t *testing.T) {
	cases := []struct {
		in   string
		cfg  Config
		want Command
	}{
		{"a001 LOGIN SMITH SESAME\r\n", Config{}, Command{Tag: "a001", Name: "LOGIN", Args: &Login{"SMITH", "SESAME"}}},
		{"a LOGIN {<fred>} \"pa\\\"ss\"\r\n", Config{}, Command{Tag: "a", Name: "LOGIN", Args: &Login{"fred", "pa\"ss"}}},
		{"A101 LIST \"\" \"\"\r\n", Config{}, Command{Tag: "A101", Name: "LIST", Args: &List{Reference: "", Patterns: []string{""}}}},
		{"a select inbox\r\n", Config{}, Command{Tag: "a", Name: "SELECT", Args: &Select{Mailbox: "INBOX"}}},
		{"a SELECT \"Entw&APw-rfe\"\r\n", Config{}, Command{Tag: "a", Name: "SELECT", Args: &Select{Mailbox: "Entwürfe"}}},
		{"a SELECT \"Entwürfe\"\r\n", Config{UTF8: true}, Command{Tag: "a", Name: "SELECT", Args: &Select{Mailbox: "Entwürfe"}}},
		{"a SELECT \"Entw&APw-rfe\"\r\n", Config{UTF8: true}, Command{Tag: "a", Name: "SELECT", Args: &Select{Mailbox: "Entw&APw-rfe"}}},
		{"A02 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 15000,22500)))\r\n", Config{},
			Command{Tag: "A02", Name: "SELECT", Args: &Select{Mailbox: "INBOX", QResync: &QResync{
				UIDValidity: 67890007, ModSeq: 90060115194045000, KnownUIDs: seqp(1, 29997),
				SeqMatchSeqs: seqp(5000, 5000, 7500, 7500), SeqMatchUIDs: seqp(15000, 15000, 22500, 22500)}}}},
		{"a103 UID STORE 6,4:* (UNCHANGEDSINCE 0) -FLAGS.SILENT \\deleted $Junk\r\n", Config{},
			Command{Tag: "a103", Name: "STORE", UID: true, Args: &Store{Seqs: seq(6, 6, 4, 0), UnchangedSince: u64(0),
				Op: StoreRemove, Silent: true, Flags: []string{`\Deleted`, "$Junk"}}}},
		{"s UID FETCH 300:500 (FLAGS BINARY.PEEK[5]<0.7>) (CHANGEDSINCE 12345 VANISHED)\r\n", Config{},
			Command{Tag: "s", Name: "FETCH", UID: true, Args: &Fetch{Seqs: seq(300, 500),
				Items:        []FetchItem{{Name: "FLAGS"}, {Name: "BINARY", Peek: true, Section: &Section{Part: []uint32{5}}, Partial: &Partial{0, 7}}},
				ChangedSince: 12345, Vanished: true}}},
		{"a FETCH 1 BODY[1.2.HEADER.FIELDS (From To)]\r\n", Config{},
			Command{Tag: "a", Name: "FETCH", Args: &Fetch{Seqs: seq(1, 1),
				Items: []FetchItem{{Name: "BODY", Section: &Section{Part: []uint32{1, 2}, Specifier: "HEADER.FIELDS", Fields: []string{"From", "To"}}}}}}},
		{"a SEARCH OR NOT MODSEQ 7 LARGER 50000\r\n", Config{},
			Command{Tag: "a", Name: "SEARCH", Args: &Search{Key: &SearchKey{Op: "AND", Sub: []*SearchKey{
				{Op: "OR", Sub: []*SearchKey{{Op: "NOT", Sub: []*SearchKey{{Op: "MODSEQ", Num: 7}}}, {Op: "LARGER", Num: 50000}}}}}}}},
		{"a SEARCH CHARSET UTF-8 SINCE 1-Feb-1994 $\r\n", Config{},
			Command{Tag: "a", Name: "SEARCH", Args: &Search{Charset: "UTF-8", Key: &SearchKey{Op: "AND", Sub: []*SearchKey{
				{Op: "SINCE", Date: time.Date(1994, 2, 1, 0, 0, 0, 0, time.UTC)}, {Op: "SEQSET", Seq: SeqSet{Saved: true}}}}}}},
		{"a ID (\"name\" \"x\" \"os\" NIL)\r\n", Config{},
			Command{Tag: "a", Name: "ID", Args: &ID{Params: []IDParam{{Field: "name", Value: "x"}, {Field: "os", ValueNil: true}}}}},
		{"a AUTHENTICATE plain =\r\n", Config{}, Command{Tag: "a", Name: "AUTHENTICATE", Args: &Authenticate{Mechanism: "PLAIN", InitialResponse: []byte{}}}},
		{"a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0\r\n", Config{}, Command{Tag: "a", Name: "AUTHENTICATE", Args: &Authenticate{Mechanism: "PLAIN", InitialResponse: []byte("\x00fred\x00secret")}}},
		{"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX \"Sent/%\") RETURN (CHILDREN STATUS (MESSAGES))\r\n", Config{},
			Command{Tag: "a", Name: "LIST", Args: &List{Selection: []string{"SUBSCRIBED", "RECURSIVEMATCH"}, Patterns: []string{"INBOX", "Sent/%"},
				ReturnOpts: true, Return: []string{"CHILDREN", "STATUS"}, StatusItems: []string{"MESSAGES"}}}},
		{"a SORT RETURN () (REVERSE DATE) UTF-8 ALL\r\n", Config{},
			Command{Tag: "a", Name: "SORT", Args: &Sort{Return: &Return{All: true}, Criteria: []SortCriterion{{"DATE", true}}, Charset: "UTF-8",
				Key: &SearchKey{Op: "AND", Sub: []*SearchKey{{Op: "ALL"}}}}}},
		{"a APPEND INBOX (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" CATENATE (URL \"/INBOX;UID=20\" TEXT {<hi>})\r\n", Config{},
			Command{Tag: "a", Name: "APPEND", Args: &Append{Mailbox: "INBOX", Messages: []AppendMessage{{
				Flags: []string{`\Seen`}, Date: time.Date(1994, 2, 8, 5, 52, 25, 0, time.UTC),
				Catenate: []CatPart{{URL: "/INBOX;UID=20"}, {IsText: true, Text: []byte("hi")}}}}}}},
	}
	for _, c := range cases {
		got := normalize(parseOne(t, lit(c.in), c.cfg))
		if !reflect.DeepEqual(got, &c.want) {
			t.Errorf("%q:\n got %#v\nwant %#v", c.in, got.Args, c.want.Args)
		}
	}
}

// The issue 15 failures that live in the parser, and other malformed input.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		in       string
		cfg      Config
		sentinel error
		kind     Kind
		code     string
		fatal    bool
		msg      string // a substring of the message
		tag      string
	}{
		{"a LOGIN \"fred secret\r\n", Config{}, ErrSyntax, BAD, "", false, "unterminated quoted string", "a"},
		{"a LOGIN {999999999}\r\n", Config{}, ErrLiteralTooLarge, BAD, "TOOBIG", false, "literal of 999999999 bytes", "a"},
		{"a LOGIN {999999999+}\r\n", Config{LiteralPlus: true}, ErrLiteralTooLarge, BAD, "TOOBIG", true, "literal of 999999999 bytes", "a"},
		{"a UID FETCH x FLAGS\r\n", Config{}, ErrSyntax, BAD, "", false, "expected a sequence set", "a"},
		{"a FETCH 0 FLAGS\r\n", Config{}, ErrSyntax, BAD, "", false, "sequence set", "a"},
		{"a FETCH 01 FLAGS\r\n", Config{}, ErrSyntax, BAD, "", false, "sequence set", "a"},
		{"a FETCH 1 (FLAGS\r\n", Config{}, ErrSyntax, BAD, "", false, "", "a"},
		{"a FETCH 1 (BODY[1.])\r\n", Config{}, ErrSyntax, BAD, "", false, "", "a"},
		{"a FETCH 1 (BINARY[HEADER])\r\n", Config{}, ErrSyntax, BAD, "", false, "", "a"},
		{"a FETCH 1 BODY[]<0.0>\r\n", Config{}, ErrSyntax, BAD, "", false, "at least 1", "a"},
		{"a FETCH 1 FOO\r\n", Config{}, ErrSyntax, BAD, "", false, "unknown fetch item", "a"},
		{"a FETCH 1 FLAGS (CHANGEDSINCE 5 VANISHED)\r\n", Config{}, ErrSyntax, BAD, "", false, "UID FETCH", "a"},
		{"a UID FETCH 1 FLAGS (VANISHED)\r\n", Config{}, ErrSyntax, BAD, "", false, "CHANGEDSINCE", "a"},
		{"a FETCH 1 FLAGS (CHANGEDSINCE 0)\r\n", Config{}, ErrSyntax, BAD, "", false, "mod-sequence", "a"},
		{"a FOO\r\n", Config{}, ErrUnknownCommand, BAD, "", false, "unknown command FOO", "a"},
		{"a UID LIST 1\r\n", Config{}, ErrUnknownCommand, BAD, "", false, "UID LIST", "a"},
		{"a\r\n", Config{}, ErrSyntax, BAD, "", false, "command after the tag", "a"},
		{"\r\n", Config{}, ErrSyntax, BAD, "", false, "empty line", ""},
		{"+ foo\r\n", Config{}, ErrSyntax, BAD, "", false, "expected a tag", ""},
		{"a NOOP extra\r\n", Config{}, ErrSyntax, BAD, "", false, "unexpected characters", "a"},
		{"a NOOP \r\n", Config{}, ErrSyntax, BAD, "", false, "unexpected characters", "a"},
		{"a SELECT \"a&b\"\r\n", Config{}, ErrSyntax, BAD, "", false, "modified UTF-7", "a"},
		{"a SELECT \"Entwürfe\"\r\n", Config{}, ErrSyntax, BAD, "", false, "modified UTF-7", "a"},
		{"a SELECT \"\xff\"\r\n", Config{UTF8: true}, ErrSyntax, BAD, "", false, "UTF-8", "a"},
		{"a LOGIN \"a\x00b\" c\r\n", Config{}, ErrSyntax, BAD, "", false, "NUL", "a"},
		{"a LOGIN \"a\\nb\" c\r\n", Config{}, ErrSyntax, BAD, "", false, "escape", "a"},
		{"a LOGIN ~{<+x>} c\r\n", Config{}, ErrSyntax, BAD, "", false, "literal8", "a"},
		{"a LOGIN {3} c\r\n", Config{}, ErrSyntax, BAD, "", false, "must end the line", "a"},
		{"a SEARCH\r\n", Config{}, ErrSyntax, BAD, "", false, "a space", "a"},
		{"a SEARCH FOO\r\n", Config{}, ErrSyntax, BAD, "", false, "unknown search key", "a"},
		{"a SEARCH SINCE 30-Feb-2020\r\n", Config{}, ErrSyntax, BAD, "", false, "no such day", "a"},
		{"a SEARCH " + strings.Repeat("NOT ", 200) + "ALL\r\n", Config{}, ErrSyntax, BAD, "", false, "nested", "a"},
		{"a SEARCH " + strings.Repeat("(", 200) + "ALL" + strings.Repeat(")", 200) + "\r\n", Config{}, ErrSyntax, BAD, "", false, "nested", "a"},
		{"a STORE 1 FLAGS (\\Recent)\r\n", Config{}, ErrSyntax, BAD, "", false, "Recent", "a"},
		{"a STORE 1 FLAG (\\Seen)\r\n", Config{}, ErrSyntax, BAD, "", false, "FLAGS", "a"},
		{"a LIST (RECURSIVEMATCH) \"\" *\r\n", Config{}, ErrSyntax, BAD, "", false, "RECURSIVEMATCH", "a"},
		{"a LIST (FOO) \"\" *\r\n", Config{}, ErrSyntax, BAD, "", false, "FOO", "a"},
		{"a STATUS INBOX (FOO)\r\n", Config{}, ErrSyntax, BAD, "", false, "FOO", "a"},
		{"a SELECT INBOX (QRESYNC (0 5))\r\n", Config{}, ErrSyntax, BAD, "", false, "UIDVALIDITY", "a"},
		{"a APPEND INBOX\r\n", Config{}, ErrSyntax, BAD, "", false, "", "a"},
		{"a APPEND INBOX {<a\x00b>}\r\n", Config{}, ErrSyntax, BAD, "", false, "literal8", "a"},
		{"a APPEND INBOX {99999999999}\r\n", Config{}, ErrLiteralTooLarge, NO, "TOOBIG", false, "over this server's limit", "a"},
		{"a APPEND INBOX {5000+}\r\n" + strings.Repeat("x", 5000) + "\r\n", Config{}, ErrLiteralTooLarge, BAD, "TOOBIG", false, "LITERAL-", "a"},
		{"a AUTHENTICATE PLAIN !!!\r\n", Config{}, ErrSyntax, BAD, "", false, "initial response", "a"},
		{"a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV\r\n", Config{}, ErrSyntax, BAD, "", false, "base64", "a"},
		{"a ID (" + strings.Repeat("\"k\" \"v\" ", 30) + "\"k\" \"v\")\r\n", Config{}, ErrSyntax, BAD, "", false, "30 field-value pairs", "a"},
		{"a ENABLE\r\n", Config{}, ErrSyntax, BAD, "", false, "capability", "a"},
		{"a SORT () UTF-8 ALL\r\n", Config{}, ErrSyntax, BAD, "", false, "sort criterion", "a"},
		{"a SORT (FOO) UTF-8 ALL\r\n", Config{}, ErrSyntax, BAD, "", false, "sort key", "a"},
		{"a NOTIFY SET (foo (MessageNew))\r\n", Config{}, ErrSyntax, BAD, "", false, "filter", "a"},
		{"a SEARCH RETURN (FOO) ALL\r\n", Config{}, ErrSyntax, BAD, "", false, "FOO", "a"},
		{"a LOGIN " + strings.Repeat("x", 70000) + " y\r\n", Config{}, ErrLineTooLong, BAD, "TOOBIG", true, "longer than 65536", "a"},
		{"a FOO {99999999999999999999+}\r\nb LOGOUT\r\n", Config{}, ErrUnknownCommand, BAD, "", true, "closing the connection", "a"},
		{"a APPEND INBOX {99999999+}\r\nb LOGOUT\r\n", Config{LiteralPlus: true}, ErrLiteralTooLarge, NO, "TOOBIG", true, "closing the connection", "a"},
		{"a SELECT INBOX (QRESYNC (1 2 1:*))\r\n", Config{}, ErrSyntax, BAD, "", false, "'*'", "a"},
		{"a SEARCH" + strings.Repeat(" TEXT {<+abcdefgh>}", 1000) + "\r\n", Config{MaxLine: 100, MaxLiteral: 100}, ErrLiteralTooLarge, BAD, "TOOBIG", false, "command is too large", "a"},
		{"a LOGIN x y\r\n", Config{MaxLine: 8}, ErrLineTooLong, BAD, "TOOBIG", true, "longer than 8", "a"},
	}
	for _, c := range cases {
		in := lit(c.in)
		cmds, errs, conts := parseAll(t, in, c.cfg)
		if len(cmds) != 0 || len(errs) != 1 {
			t.Errorf("%q: got %d commands and errors %v, want one error", trunc(c.in), len(cmds), errs)
			continue
		}
		var e *Error
		if !errors.As(errs[0], &e) || !errors.Is(e, c.sentinel) || e.Kind != c.kind || e.Code != c.code || e.Fatal != c.fatal ||
			!strings.Contains(e.Msg, c.msg) || e.Tag != c.tag {
			t.Errorf("%q: got %#v, want %v %s [%s] fatal=%v %q tag %q", trunc(c.in), errs[0], c.sentinel, c.kind, c.code, c.fatal, c.msg, c.tag)
		}
		if errors.Is(e, ErrLiteralTooLarge) && len(conts) != 0 {
			t.Errorf("%q: continuation sent for a refused literal", trunc(c.in))
		}
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// After a refused command the reader is back in step: the next command parses.
func TestResync(t *testing.T) {
	cases := []string{
		"a LOGIN \"unterminated\r\n",
		"a LOGIN {999999999}\r\n",
		"a APPEND INBOX {5000+}\r\n" + strings.Repeat("x", 5000) + "\r\n",
		"a APPEND INBOX ~{<+x>} {<+abc>} (\r\n",
		"a LOGIN ~{<+abc>} x\r\n",
		"a FOO {<+abc>} {<+defg>}\r\n",
	}
	for _, in := range cases {
		cmds, errs, _ := parseAll(t, lit(in)+"b NOOP\r\n", Config{})
		if len(errs) != 1 || len(cmds) != 1 || cmds[0].Tag != "b" {
			t.Errorf("%q: got %d commands, errors %v; want the error then b NOOP", in, len(cmds), errs)
		}
	}
}

// ID at the maximum size of RFC 2971 (30 pairs, 1024-byte values) is accepted.
func TestIDMaximum(t *testing.T) {
	var b strings.Builder
	b.WriteString("a ID (")
	for i := 0; i < 30; i++ {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("\"" + strings.Repeat("k", 28) + itoa(10+i) + "\" \"" + strings.Repeat("v", 1024) + "\"")
	}
	b.WriteString(")\r\n")
	cmd := parseOne(t, b.String(), Config{})
	if p := cmd.Args.(*ID).Params; len(p) != 30 || len(p[29].Value) != 1024 {
		t.Fatalf("got %d params", len(p))
	}
	roundTrip(t, cmd, Config{})
}

// Synchronizing literals call Continue before their bytes are read; non-synchronizing ones
// do not.
func TestContinuation(t *testing.T) {
	in := lit("a LOGIN {<fred>} {<+secret>}\r\nb APPEND INBOX {<hello>} {<+again>}\r\n")
	cmds, errs, conts := parseAll(t, in, Config{})
	if len(errs) != 0 || len(cmds) != 2 || !reflect.DeepEqual(conts, []int64{4, 5}) {
		t.Fatalf("got %d commands, errors %v, continuations %v", len(cmds), errs, conts)
	}
	if m := cmds[1].Args.(*Append).Messages; len(m) != 2 || string(m[0].Data) != "hello" || string(m[1].Data) != "again" {
		t.Fatalf("got %+v", m)
	}
	// Continue's error ends the command and is returned as is.
	r := NewReader(bufio.NewReader(strings.NewReader("a LOGIN {4}\r\n")), Config{})
	boom := errors.New("boom")
	r.Continue = func(int64) error { return boom }
	if _, err := r.ReadCommand(); err != boom {
		t.Fatalf("got %v", err)
	}
}

// Input that ends inside a command is an I/O error, not a hang.
func TestTruncatedInput(t *testing.T) {
	for _, in := range []string{"a LOGIN {10}\r\nabc", "a NOOP", "a LOGIN {3}\r\nabc"} {
		r := NewReader(bufio.NewReader(strings.NewReader(in)), Config{})
		_, err := r.ReadCommand()
		var e *Error
		if err == nil || errors.As(err, &e) {
			t.Errorf("%q: got %v, want an I/O error", in, err)
		}
	}
}

func TestIdleDone(t *testing.T) {
	r := NewReader(bufio.NewReader(strings.NewReader("a IDLE\r\nDONE\r\nb NOOP\r\n")), Config{})
	if cmd, err := r.ReadCommand(); err != nil || cmd.Name != "IDLE" {
		t.Fatalf("%v %v", cmd, err)
	}
	if l, err := r.ReadLine(); err != nil || l != "DONE" {
		t.Fatalf("%q %v", l, err)
	}
	if cmd, err := r.ReadCommand(); err != nil || cmd.Name != "NOOP" {
		t.Fatalf("%v %v", cmd, err)
	}
}

func TestResponseName(t *testing.T) {
	cases := map[string]string{
		"BINARY.PEEK[5]<0.7>":             "BINARY[5]<0>",
		"BODY.PEEK[1.2.MIME]":             "BODY[1.2.MIME]",
		"BODY[]<100.50>":                  "BODY[]<100>",
		"BINARY.SIZE[1]":                  "BINARY.SIZE[1]",
		"BODY[HEADER.FIELDS (a \"b c\")]": "BODY[HEADER.FIELDS (a \"b c\")]",
		"RFC822.HEADER":                   "RFC822.HEADER",
	}
	for in, want := range cases {
		cmd := parseOne(t, "a FETCH 1 "+in+"\r\n", Config{})
		if got := cmd.Args.(*Fetch).Items[0].ResponseName(); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

func TestSASLResponse(t *testing.T) {
	r := NewReader(bufio.NewReader(strings.NewReader("AGZyZWQAc2VjcmV0\r\n\r\n*\r\n!!\r\n")), Config{})
	if b, err := r.ReadSASLResponse(); err != nil || string(b) != "\x00fred\x00secret" {
		t.Fatalf("%q %v", b, err)
	}
	if b, err := r.ReadSASLResponse(); err != nil || len(b) != 0 {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := r.ReadSASLResponse(); err != ErrAuthCanceled {
		t.Fatalf("%v", err)
	}
	if _, err := r.ReadSASLResponse(); !errors.Is(err, ErrSyntax) {
		t.Fatalf("%v", err)
	}
}

// A MULTIAPPEND's messages are bounded together (a server holds them all until the command
// completes) and in number; the refused literal gets no continuation, a non-synchronizing one
// is skipped, and the next command parses.
func TestMultiappendBounds(t *testing.T) {
	cases := []struct {
		in        string
		cfg       Config
		code, msg string
		conts     int // continuations sent: the accepted synchronizing literals
	}{
		{"a APPEND INBOX {6}\r\nabcdef {6}\r\n", Config{MaxAppend: 8, MaxAppendTotal: 10}, "TOOBIG", "add up to more than this server's limit of 10", 1},
		{"a APPEND INBOX {6+}\r\nabcdef {6+}\r\nabcdef {6+}\r\nabcdef\r\n", Config{MaxAppend: 8, LiteralPlus: true}, "TOOBIG", "add up to more than this server's limit of 16", 0},
		{"a APPEND INBOX {1+}\r\na {1+}\r\nb {1+}\r\nc\r\n", Config{MaxAppendMessages: 2, LiteralPlus: true}, "LIMIT", "more than 2 messages", 0},
		{"a APPEND INBOX {1}\r\na {1}\r\nb {1}\r\n", Config{MaxAppendMessages: 2}, "LIMIT", "more than 2 messages", 2},
	}
	for _, c := range cases {
		cmds, errs, conts := parseAll(t, c.in+"b NOOP\r\n", c.cfg)
		if len(errs) != 1 || len(cmds) != 1 || cmds[0].Tag != "b" {
			t.Errorf("%q: got commands %v and errors %v, want the error then b NOOP", c.in, cmds, errs)
			continue
		}
		var e *Error
		if !errors.As(errs[0], &e) || e.Kind != NO || e.Code != c.code || e.Fatal || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%q: got %#v, want NO [%s] %q", c.in, errs[0], c.code, c.msg)
		}
		if len(conts) != c.conts {
			t.Errorf("%q: %d continuations, want %d", c.in, len(conts), c.conts)
		}
	}
}
