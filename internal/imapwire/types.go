package imapwire

import "time"

// Command is one parsed client command.
//
// Name is the command name in upper case ("FETCH", "UID FETCH" is Name "FETCH" with UID set).
// Args holds the command's arguments as a pointer to the struct named after the command
// (*Fetch for FETCH and UID FETCH, *Select for SELECT and EXAMINE, *List for LIST and LSUB),
// or nil for commands without arguments: CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE,
// UNSELECT, EXPUNGE, IDLE, NAMESPACE.
type Command struct {
	Tag  string
	Name string
	UID  bool // the command was prefixed with UID: sequence sets are UIDs
	Args any
}

// Login: LOGIN userid password.
type Login struct {
	Username, Password string
}

// Authenticate: AUTHENTICATE mechanism [initial-response] (RFC 9051 6.2.2, SASL-IR RFC 4959).
type Authenticate struct {
	Mechanism string // upper case
	// InitialResponse is the decoded initial response: nil if none was sent, empty (non-nil)
	// for "=".
	InitialResponse []byte
}

// Enable: ENABLE capability... (RFC 5161). Capabilities are upper case.
type Enable struct {
	Capabilities []string
}

// ID: ID (field value ...) / ID NIL (RFC 2971).
type ID struct {
	Params []IDParam // nil for ID NIL
}

// IDParam is one field of ID. Values may be NIL.
type IDParam struct {
	Field    string
	Value    string
	ValueNil bool
}

// Compress: COMPRESS mechanism (RFC 4978). Mechanism is upper case.
type Compress struct {
	Mechanism string
}

// Select: SELECT and EXAMINE (ReadOnly), with the CONDSTORE and QRESYNC parameters of
// RFC 7162 section 3.1.8 / 3.2.5.
type Select struct {
	Mailbox   string
	ReadOnly  bool // EXAMINE
	CondStore bool
	QResync   *QResync
}

// QResync: QRESYNC (uidvalidity modseq [known-uids] [(seq-match-data)]).
type QResync struct {
	UIDValidity uint32
	ModSeq      uint64
	KnownUIDs   *SeqSet // nil if absent
	// SeqMatch (known-sequence-set known-uid-set) is nil if absent.
	SeqMatchSeqs, SeqMatchUIDs *SeqSet
}

// Create: CREATE mailbox [(USE (special-use...))] (RFC 6154 CREATE-SPECIAL-USE).
type Create struct {
	Mailbox    string
	SpecialUse []string // e.g. `\Drafts`
}

// Delete: DELETE mailbox.
type Delete struct{ Mailbox string }

// Rename: RENAME from to.
type Rename struct{ From, To string }

// Subscribe: SUBSCRIBE and UNSUBSCRIBE (Name tells which).
type Subscribe struct{ Mailbox string }

// List: LIST and LSUB (LSub), with RFC 5258 selection and return options and LIST-STATUS
// (RFC 5819). Patterns holds one pattern, or several for "(pat1 pat2)"; an empty pattern ""
// is kept (it asks for the hierarchy delimiter).
type List struct {
	LSub      bool
	Reference string
	Patterns  []string
	// Selection options in upper case: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE.
	Selection []string
	// Return options in upper case: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS (with
	// StatusItems). ReturnOpts is true when RETURN (...) was given, even empty.
	Return      []string
	ReturnOpts  bool
	StatusItems []string
}

// Status: STATUS mailbox (items). Items are upper case.
type Status struct {
	Mailbox string
	Items   []string
}

// Append: APPEND mailbox message... (MULTIAPPEND RFC 3502: one or more messages).
type Append struct {
	Mailbox  string
	Messages []AppendMessage
}

// AppendMessage is one message of APPEND: a literal (Data), or CATENATE parts (RFC 4469).
type AppendMessage struct {
	Flags    []string
	Date     time.Time // zero if not given
	Data     []byte
	Binary   bool // Data came as literal8 ~{n} (RFC 3516)
	UTF8     bool // Data came as UTF8 (~{n}) (RFC 6855)
	Catenate []CatPart
}

// CatPart is a CATENATE part: URL or TEXT.
type CatPart struct {
	URL    string // set for a URL part
	Text   []byte // set for a TEXT part
	IsText bool
	Binary bool // TEXT came as literal8
}

// Search: SEARCH, with ESEARCH return options (RFC 4731, RFC 5267, RFC 5182 SAVE).
type Search struct {
	Charset string     // "" if not given
	Return  *Return    // nil without RETURN
	Key     *SearchKey // an AND of the top-level keys
}

// Return holds search-return-opts (also for SORT, RFC 5267). RETURN () is All.
type Return struct {
	Min, Max, All, Count, Save bool
	Context, Update            bool // RFC 5267 CONTEXT=SEARCH
	Partial                    *PartialRange
}

// PartialRange is PARTIAL low:high (RFC 9394); negative values count from the end.
type PartialRange struct {
	Low, High int64
}

// SearchKey is one node of a search program. Op is the key name in upper case; which other
// fields are set depends on Op:
//
//	AND (a parenthesized list, and the top of a program): Sub
//	OR: Sub[0], Sub[1]; NOT: Sub[0]
//	SEQSET (a bare sequence set), UID: Seq
//	BCC BODY CC FROM SUBJECT TEXT TO KEYWORD UNKEYWORD EMAILID THREADID: Str
//	HEADER: Field, Str
//	BEFORE ON SINCE SENTBEFORE SENTON SENTSINCE SAVEDBEFORE SAVEDON SAVEDSINCE: Date
//	LARGER SMALLER OLDER YOUNGER: Num
//	MODSEQ: Num, with EntryName and EntryType when given (RFC 7162 3.1.5)
//	ALL ANSWERED DELETED DRAFT FLAGGED SEEN UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN
//	NEW OLD RECENT SAVEDATESUPPORTED: nothing
type SearchKey struct {
	Op        string
	Sub       []*SearchKey
	Seq       SeqSet
	Str       string
	Field     string
	Date      time.Time
	Num       uint64
	EntryName string
	EntryType string
}

// Fetch: FETCH sequence-set items [(CHANGEDSINCE modseq [VANISHED])] (RFC 7162).
// The macros ALL, FAST and FULL are expanded into their items; Macro keeps the name.
type Fetch struct {
	Seqs         SeqSet
	Items        []FetchItem
	Macro        string
	ChangedSince uint64 // 0: not given (the value must be at least 1)
	Vanished     bool
}

// FetchItem is a fetch-att. Name is upper case: ENVELOPE, FLAGS, INTERNALDATE, RFC822,
// RFC822.SIZE, RFC822.HEADER, RFC822.TEXT, BODY, BODYSTRUCTURE, UID, MODSEQ, SAVEDATE,
// EMAILID, THREADID, BODY[...] and BODY.PEEK[...] (Name "BODY" with Section set, Peek),
// BINARY[...] and BINARY.PEEK[...] (Name "BINARY"), BINARY.SIZE[...].
type FetchItem struct {
	Name    string
	Peek    bool
	Section *Section // nil for BODY (the structure) and items without a section
	Partial *Partial
}

// Section is a section-spec (or section-binary, which has only Part).
type Section struct {
	Part []uint32
	// Specifier is "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME.
	Specifier string
	Fields    []string // for HEADER.FIELDS[.NOT], as sent
}

// Partial is <offset.count>.
type Partial struct {
	Offset, Count uint64
}

// Store: STORE sequence-set [(UNCHANGEDSINCE modseq)] [+|-]FLAGS[.SILENT] flags.
type Store struct {
	Seqs           SeqSet
	UnchangedSince *uint64 // nil if not given; 0 is a valid value (RFC 7162 3.1.3)
	Op             StoreOp
	Silent         bool
	Flags          []string
}

// StoreOp is what STORE does with the flags.
type StoreOp int

// STORE operations.
const (
	StoreReplace StoreOp = iota // FLAGS
	StoreAdd                    // +FLAGS
	StoreRemove                 // -FLAGS
)

// Copy: COPY and MOVE (Name tells which).
type Copy struct {
	Seqs    SeqSet
	Mailbox string
}

// Expunge: UID EXPUNGE sequence-set (RFC 4315). Plain EXPUNGE has nil Args.
type Expunge struct {
	UIDs SeqSet
}

// Sort: SORT [RETURN (...)] (criteria) charset key... (RFC 5256, RFC 5267 ESORT).
type Sort struct {
	Criteria []SortCriterion
	Charset  string
	Return   *Return
	Key      *SearchKey
}

// SortCriterion is one sort key: ARRIVAL CC DATE FROM SIZE SUBJECT TO DISPLAYFROM DISPLAYTO.
type SortCriterion struct {
	Key     string
	Reverse bool
}

// Thread: THREAD algorithm charset key... (RFC 5256). Algorithm is upper case.
type Thread struct {
	Algorithm string
	Charset   string
	Key       *SearchKey
}

// GetQuota: GETQUOTA root (RFC 9208).
type GetQuota struct{ Root string }

// GetQuotaRoot: GETQUOTAROOT mailbox (RFC 9208).
type GetQuotaRoot struct{ Mailbox string }

// SetQuota: SETQUOTA root (resource limit ...) (RFC 9208).
type SetQuota struct {
	Root      string
	Resources []QuotaResource
}

// QuotaResource is a resource name (upper case) and its limit.
type QuotaResource struct {
	Name  string
	Limit uint64
}

// Notify: NOTIFY NONE / NOTIFY SET [STATUS] (event-group ...) (RFC 5465).
type Notify struct {
	None   bool
	Status bool
	Groups []NotifyGroup
}

// NotifyGroup is one event group: a mailbox filter and its events.
type NotifyGroup struct {
	// Filter is SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE or
	// MAILBOXES; the last two have Mailboxes.
	Filter    string
	Mailboxes []string
	Events    []NotifyEvent // nil for NONE
}

// NotifyEvent is an event name as sent (MessageNew, MessageExpunge, FlagChange,
// AnnotationChange, MailboxName, SubscriptionChange, MailboxMetadataChange,
// ServerMetadataChange); MessageNew may carry fetch attributes.
type NotifyEvent struct {
	Name  string
	Fetch []FetchItem
}
