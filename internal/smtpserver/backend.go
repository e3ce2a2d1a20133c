package smtpserver

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"epost/internal/mailbox"
)

// Envelope is what the client said in MAIL and RCPT (RFC 5321 section
// 2.3.1), plus what the server learned about the session.
type Envelope struct {
	// From is the reverse-path: always the authenticated user's address.
	From string `json:"from"`
	// To holds the recipients this envelope is for: ring users for
	// Submitter.Submit, addresses outside the ring for the Outbox.
	To []string `json:"to"`
	// User is the authenticated user name (AUTH, RFC 4954).
	User string `json:"user"`
	// UTF8 is set when the client sent MAIL FROM with SMTPUTF8
	// (RFC 6531 section 3.4): addresses or headers may hold UTF-8.
	UTF8 bool `json:"utf8,omitempty"`
	// Body is the BODY parameter (RFC 6152): "", "7BIT" or "8BITMIME".
	Body string `json:"body,omitempty"`
	// Received is when the server accepted the message.
	Received time.Time `json:"received"`
}

// Submitter hands a message to the ring (DESIGN.md layers 8-9: the POST
// parts, then pending notifications to each recipient).
type Submitter interface {
	// Submit stores raw for env.To and returns only when the message is
	// durable: the server answers 250 after Submit returns nil and never
	// earlier (DESIGN.md: never acknowledge first). raw is the message as
	// received with the server's Received: field prepended; Submit must not
	// modify it and must not keep it after returning unless it copies.
	// Submit may block for a long time; it must give up when ctx is done.
	//
	// An error wrapping ErrRejected is permanent (554, the client must not
	// retry the same message); one wrapping mailbox.ErrTooBig becomes 552;
	// any other error is transient (451, the client keeps the message and
	// retries).
	Submit(ctx context.Context, env Envelope, raw []byte) error
}

// ErrRejected marks a Submit or Outbox failure that retrying cannot fix.
var ErrRejected = errors.New("smtpserver: message rejected")

// RecipientClass says where a recipient address lives.
type RecipientClass int

const (
	// NoSuchUser is an address in the ring's domains that no ring user
	// has. It is the zero value so that a forgotten case refuses mail.
	NoSuchUser RecipientClass = iota
	// RingUser is a user of this ring (or of another ePOST ring reached
	// through the global ring): the message goes to the Submitter.
	RingUser
	// Outside is an ordinary internet address: the message goes to the
	// Outbox for the ring's SMTP gateway (DESIGN.md layer 12).
	Outside
)

func (c RecipientClass) String() string {
	switch c {
	case RingUser:
		return "ring"
	case Outside:
		return "outside"
	}
	return "no-such-user"
}

// Recipients classifies RCPT TO addresses. Classify may block (a directory
// lookup in the ring); it must give up when ctx is done. An error means the
// answer is unknown for now (451, the client retries).
type Recipients interface {
	Classify(ctx context.Context, address string) (RecipientClass, error)
}

// Authenticator checks the user name and password of AUTH and returns the
// address the user may send from (MAIL FROM must equal it). It may block for
// a deliberately slow key derivation; it returns an error wrapping
// mailbox.ErrAuthFailed for a wrong user name or password.
type Authenticator interface {
	Authenticate(username, password string) (address string, err error)
}

// AddrAuthenticator is an Authenticator that also takes the client's address (see
// mailbox.AddrAuthenticator); the server uses it when the Authenticator has it.
type AddrAuthenticator interface {
	AuthenticateFrom(username, password string, client netip.Addr) (address string, err error)
}

// MailboxAuth adapts the mail store's Authenticator, for which the user name
// is the user's address, to an SMTP Authenticator. The store is opened and
// dropped: SMTP submission never reads the user's folders.
func MailboxAuth(a mailbox.Authenticator) Authenticator { return mailboxAuth{a} }

type mailboxAuth struct{ a mailbox.Authenticator }

func (m mailboxAuth) Authenticate(username, password string) (string, error) {
	return m.AuthenticateFrom(username, password, netip.Addr{})
}

func (m mailboxAuth) AuthenticateFrom(username, password string, client netip.Addr) (string, error) {
	if _, err := mailbox.AuthenticateFrom(m.a, username, password, client); err != nil {
		return "", err
	}
	return username, nil
}

// sameAddress compares a MAIL FROM path with the user's address. RFC 5321
// section 2.4 leaves the local part's case to the receiving domain; ring
// addresses are case-insensitive, so the whole address compares folded.
func sameAddress(a, b string) bool {
	return a != "" && strings.EqualFold(a, b)
}
