// Package mailbox is one user's mail store as the node's mail servers (IMAP,
// POP3, SMTP submission) see it: folders of immutable messages with mutable
// flags, in the IMAP data model (RFC 3501 section 2.3, RFC 7162 for
// modification sequences).
//
// The interfaces are shaped for a log-structured, replicated backend (the
// POST folder logs of DESIGN.md layer 9): every change is one operation that
// can be an entry in a folder's log (append, change flags, expunge, copy,
// move), each returns only after the change is durable, and each bumps the
// folder's modification sequence so that clients resynchronise from a number
// rather than by rescanning. Memory is the in-memory implementation used by
// tests and until POST-backed folders exist.
//
// This package must never rewrite a message: the bytes given to Append are
// served back byte for byte, malformed MIME included. Parsing happens once,
// at Append, and only feeds the Structure cache; a parse failure degrades the
// cache, never the stored message.
//
// Concurrency: every Store and Folder method is safe for concurrent use by
// any number of sessions and by the delivery path (the POST layer filing a
// notification calls Folder.Append from its own goroutine). A Folder value
// stays valid across Rename; after Delete its methods return ErrNoFolder.
// Watch channels are signalled after the change is visible to readers and
// never block the writer: a signal means "look again", not "one change".
// Returned slices and structures are copies or immutable; callers must not
// modify a Structure.
package mailbox

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"epost/internal/connlimit"
)

// Sentinel errors. Servers map them to protocol replies.
var (
	ErrNoFolder      = errors.New("mailbox: no such folder")
	ErrFolderExists  = errors.New("mailbox: folder already exists")
	ErrNoMessage     = errors.New("mailbox: no such message")
	ErrBadName       = errors.New("mailbox: invalid folder name")
	ErrInboxReserved = errors.New("mailbox: INBOX cannot be deleted")
	ErrAuthFailed    = errors.New("mailbox: invalid user name or password")
	ErrTooBig        = errors.New("mailbox: message too big")
	// ErrUnavailable: the store could not reach what it needs right now (the ring did not
	// answer in time); nothing was changed that a retry would duplicate.
	ErrUnavailable = errors.New("mailbox: temporarily unavailable; try again")
)

// Inbox is the one folder every store has (RFC 3501 section 5.1: the name is
// case-insensitive).
const Inbox = "INBOX"

// Delim is the hierarchy delimiter of folder names.
const Delim = '/'

// SpecialUses are the special-use folders (RFC 6154) created at first login,
// with their default names.
var SpecialUses = []struct {
	Use  MailboxAttr
	Name string
}{
	{MailboxAttrSent, "Sent"},
	{MailboxAttrDrafts, "Drafts"},
	{MailboxAttrTrash, "Trash"},
	{MailboxAttrJunk, "Junk"},
	{MailboxAttrArchive, "Archive"},
}

// Authenticator checks a user's password and opens the user's store. The
// node plugs in the check of the user's key file; it may block for a
// deliberately slow key derivation. It returns an error wrapping
// ErrAuthFailed for a wrong user name or password.
type Authenticator interface {
	Authenticate(username, password string) (Store, error)
}

// AddrAuthenticator is an Authenticator that also takes the client's address: its guard
// against password guessing counts failures per address and lets a user's known-good address
// through a lock (mailstore's login guard). The servers use it when the Authenticator has it.
type AddrAuthenticator interface {
	AuthenticateFrom(username, password string, client netip.Addr) (Store, error)
}

// AuthenticateFrom calls a's AuthenticateFrom when it has one, else Authenticate.
func AuthenticateFrom(a Authenticator, username, password string, client netip.Addr) (Store, error) {
	if aa, ok := a.(AddrAuthenticator); ok {
		return aa.AuthenticateFrom(username, password, client)
	}
	return a.Authenticate(username, password)
}

// ClientAddr is the IP address of a connection's remote end (invalid when it has none).
func ClientAddr(a net.Addr) netip.Addr { return connlimit.AddrOf(a) }

// FolderInfo describes a folder in a listing.
type FolderInfo struct {
	Name       string
	SpecialUse MailboxAttr // "" or one of \Sent \Drafts \Trash \Junk \Archive \All \Flagged
	Subscribed bool
	// UIDValidity is only set by Folder.Info.
	UIDValidity uint32
}

// Status is a folder's counters (RFC 3501 section 6.3.10, RFC 7162 section
// 3.1.2.1 for HighestModSeq).
type Status struct {
	UIDValidity   uint32
	UIDNext       UID
	HighestModSeq uint64
	Messages      uint32
	Unseen        uint32
	Deleted       uint32
	Recent        uint32 // messages no session has claimed yet, see Folder.ClaimRecent
	Size          int64
}

// Summary is the mutable metadata of one message.
type Summary struct {
	UID          UID
	ModSeq       uint64 // modification sequence of the last change (RFC 7162 section 3.1.1)
	Flags        []Flag // system flags and keywords, sorted, never \Recent
	InternalDate time.Time
	Size         int64 // RFC822.SIZE: exact stored byte count
}

// Message is a message's metadata and its parse cache.
type Message struct {
	Summary
	Structure *Structure
}

// Structure is the parse cache computed once at Append (see Parse).
type Structure struct {
	Envelope      *Envelope
	BodyStructure BodyStructure
	// HeaderSize is the byte length of the top-level header including the
	// blank line that ends it; the body starts at this offset.
	HeaderSize int64
}

// Content is a message's stored bytes, exactly as received.
type Content interface {
	io.ReaderAt
	Size() int64
}

// FlagOp says how ChangeFlags combines the given flags with the current ones.
type FlagOp int

const (
	FlagsSet FlagOp = iota
	FlagsAdd
	FlagsRemove
)

// FlagResult reports a ChangeFlags call.
type FlagResult struct {
	// Changed holds the new summary of every message whose flags changed.
	Changed []Summary
	// Unchanged holds the summaries of addressed messages that needed no
	// change (a client without .SILENT still expects their FETCH).
	Unchanged []Summary
	// Modified lists messages left alone because their modseq was above
	// the UNCHANGEDSINCE bound (RFC 7162 section 3.1.3).
	Modified []UID
	// ModSeq is the folder's highest modseq after the call.
	ModSeq uint64
}

// CopyResult maps source UIDs to the UIDs the copies got (RFC 4315
// COPYUID), in the same order.
type CopyResult struct {
	UIDValidity uint32
	SourceUIDs  []UID
	DestUIDs    []UID
}

// Store is one user's mail.
type Store interface {
	// Folders lists every folder, INBOX first, the rest sorted by name.
	Folders() ([]FolderInfo, error)
	// Folder opens a folder by name (INBOX case-insensitively).
	Folder(name string) (Folder, error)
	// Create makes a folder; use is "" or a special-use attribute.
	Create(name string, use MailboxAttr) error
	// Delete removes a folder and its messages; folders below it stay
	// (RFC 3501 section 6.3.4).
	Delete(name string) error
	// Rename renames a folder and the folders below it. Renaming INBOX
	// moves its messages to the new folder and leaves INBOX empty
	// (RFC 3501 section 6.3.5).
	Rename(oldName, newName string) error
	// SetSubscribed adds or removes a name from the subscription list.
	SetSubscribed(name string, subscribed bool) error
}

// SubscriptionLister is a Store that lists its subscriptions, including names that are not
// (or no longer) folders: LIST (SUBSCRIBED) shows those as \NonExistent (RFC 5258 section
// 3.1). Both stores of this project implement it.
type SubscriptionLister interface {
	Subscriptions() ([]string, error)
}

// Folder is one folder of a store.
type Folder interface {
	Info() FolderInfo
	Status() (Status, error)
	// Append files a message and returns its UID once it is durable. The
	// store keeps raw as given (the caller must not modify it afterwards).
	// A zero date means now.
	Append(raw []byte, flags []Flag, date time.Time) (UID, error)
	// List returns the summaries of all messages in ascending UID order.
	List() ([]Summary, error)
	// Message returns one message's summary and parse cache.
	Message(uid UID) (*Message, error)
	// Content returns one message's stored bytes.
	Content(uid UID) (Content, error)
	// ChangeFlags changes the flags of the given messages; unknown UIDs are
	// skipped. unchangedSince 0 means no bound.
	ChangeFlags(uids []UID, op FlagOp, flags []Flag, unchangedSince uint64) (FlagResult, error)
	// Expunge removes the given messages and returns the UIDs it removed,
	// ascending. The caller chooses the set (for example the \Deleted ones).
	Expunge(uids []UID) ([]UID, error)
	// Copy copies messages to dest, keeping flags and internal dates.
	Copy(uids []UID, dest Folder) (CopyResult, error)
	// Move copies messages to dest and expunges them here, atomically.
	Move(uids []UID, dest Folder) (CopyResult, error)
	// Changed returns the summaries of the messages whose modseq is above
	// since (added or flagged since), in ascending UID order: what a session
	// last synchronized at since must learn, without a copy of the rest.
	Changed(since uint64) ([]Summary, error)
	// Expunged lists UIDs expunged with a modseq above since, ascending:
	// what QRESYNC's VANISHED (EARLIER) reports (RFC 7162 section 3.2.5).
	Expunged(since uint64) ([]UID, error)
	// ClaimRecent makes the caller the one session for which the messages
	// in UIDs [from, to) are \Recent (RFC 3501 section 2.3.2: a message is
	// recent in exactly one session). Later calls return only newer
	// messages. \Recent is node-local state, never replicated.
	ClaimRecent() (from, to UID)
	// Watch returns a channel that receives a value soon after any change
	// to the folder, whoever made it, and a function that stops the watch.
	Watch() (<-chan struct{}, func())
}

// NewMessage is one message for MultiAppender.AppendAll: the arguments of Folder.Append.
type NewMessage struct {
	Raw   []byte
	Flags []Flag
	Date  time.Time
}

// MultiAppender is a Folder that files several messages with one wait for durability
// instead of one per message (RFC 3502 MULTIAPPEND, a migration's bulk APPEND). Servers
// discover it by type assertion and fall back to Append.
type MultiAppender interface {
	// AppendAll files msgs, in order, and returns their UIDs once all are durable. On an
	// error, uids names the messages that were filed before it (the caller may expunge
	// them); after ErrUnavailable others may still become durable.
	AppendAll(msgs []NewMessage) (uids []UID, err error)
}

// ContentsReader is a Folder that returns several messages' contents in one call: a search
// over a whole folder reads every message, and one call per message costs it the folder's
// lock once per message, behind every writer waiting for that lock. Servers discover it by
// type assertion and fall back to Content.
type ContentsReader interface {
	// Contents returns the content of each of uids, in order; an entry is nil for a message
	// that is gone or cannot be read now (Content would have failed for it).
	Contents(uids []UID) ([]Content, error)
}
