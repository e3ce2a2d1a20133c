package mailbox

import "time"

// The IMAP data model the store and the protocol servers share: UIDs, flags, special-use
// attributes and the parse cache (ENVELOPE and BODYSTRUCTURE, RFC 3501 section 7.4.2). They
// were go-imap v2's types until the server got its own protocol engine; the field names and
// shapes are kept as they were because mailstore persists Envelope and the body-structure
// parts as JSON with the default field names (mail caches and folder logs written by older
// builds must keep decoding).

// UID is a message's unique identifier within a folder (RFC 3501 section 2.3.1.1).
type UID uint32

// Flag is a system flag or a keyword (RFC 3501 section 2.3.2).
type Flag string

// System flags. \Recent is FlagRecent, a session flag.
const (
	FlagSeen     Flag = "\\Seen"
	FlagAnswered Flag = "\\Answered"
	FlagFlagged  Flag = "\\Flagged"
	FlagDeleted  Flag = "\\Deleted"
	FlagDraft    Flag = "\\Draft"
)

// FlagRecent is the session flag \Recent (RFC 3501 section 2.3.2), dropped by IMAP4rev2.
// It is never stored.
const FlagRecent Flag = "\\Recent"

// MailboxAttr is a mailbox attribute of a LIST response; the store keeps only the
// special-use ones (RFC 6154).
type MailboxAttr string

// Special-use attributes (RFC 6154 section 2).
const (
	MailboxAttrAll     MailboxAttr = "\\All"
	MailboxAttrArchive MailboxAttr = "\\Archive"
	MailboxAttrDrafts  MailboxAttr = "\\Drafts"
	MailboxAttrFlagged MailboxAttr = "\\Flagged"
	MailboxAttrJunk    MailboxAttr = "\\Junk"
	MailboxAttrSent    MailboxAttr = "\\Sent"
	MailboxAttrTrash   MailboxAttr = "\\Trash"
)

// Envelope is a message's ENVELOPE (RFC 3501 section 7.4.2). Address lists hold group
// markers as RFC 3501 does: a start with Mailbox set to the group name and no Host, an end
// with neither.
type Envelope struct {
	Date      time.Time
	Subject   string
	From      []Address
	Sender    []Address
	ReplyTo   []Address
	To        []Address
	Cc        []Address
	Bcc       []Address
	InReplyTo []string
	MessageID string
}

// Address is one address of an envelope.
type Address struct {
	Name    string
	Mailbox string
	Host    string
}

// Addr is "mailbox@host", or "" for a group marker.
func (a *Address) Addr() string {
	if a.Mailbox == "" || a.Host == "" {
		return ""
	}
	return a.Mailbox + "@" + a.Host
}

// BodyStructure is a message's MIME tree: a *SinglePart or a *MultiPart.
type BodyStructure interface {
	bodyStructure()
}

// SinglePart is a non-multipart body part.
type SinglePart struct {
	Type, Subtype string
	Params        map[string]string
	ID            string
	Description   string
	Encoding      string
	Size          uint32

	MessageRFC822 *MessageRFC822 // only for message/rfc822
	Text          *TextInfo      // only for text/*
	Extended      *SinglePartExt
}

// Filename is the part's file name: the Content-Disposition filename, else the
// Content-Type name.
func (p *SinglePart) Filename() string {
	if p.Extended != nil && p.Extended.Disposition != nil {
		if f := p.Extended.Disposition.Params["filename"]; f != "" {
			return f
		}
	}
	return p.Params["name"]
}

// MessageRFC822 is what a message/rfc822 part adds: the attached message's envelope and
// structure, and the part's line count.
type MessageRFC822 struct {
	Envelope      *Envelope
	BodyStructure BodyStructure
	NumLines      int64
}

// TextInfo is what a text/* part adds: its line count.
type TextInfo struct {
	NumLines int64
}

// SinglePartExt is a single part's extension data (BODYSTRUCTURE, not BODY).
type SinglePartExt struct {
	Disposition *Disposition
	Language    []string
	Location    string
}

// MultiPart is a multipart body part.
type MultiPart struct {
	Children []BodyStructure
	Subtype  string

	Extended *MultiPartExt
}

// MultiPartExt is a multipart's extension data.
type MultiPartExt struct {
	Params      map[string]string
	Disposition *Disposition
	Language    []string
	Location    string
}

// Disposition is a part's Content-Disposition (RFC 2183).
type Disposition struct {
	Value  string
	Params map[string]string
}

func (*SinglePart) bodyStructure() {}
func (*MultiPart) bodyStructure()  {}
