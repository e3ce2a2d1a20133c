package imapwire

import (
	"errors"
	"fmt"
)

// Sentinel errors, reachable through errors.Is on an *Error.
var (
	// ErrSyntax: the command does not follow the grammar. Answer BAD.
	ErrSyntax = errors.New("imapwire: syntax error")
	// ErrUnknownCommand: the command name is not one this package parses. Answer BAD.
	ErrUnknownCommand = errors.New("imapwire: unknown command")
	// ErrLineTooLong: a line (literals excluded) is over Config.MaxLine. The rest of the line
	// was not read, so the connection cannot be resynchronized: answer BAD, then BYE and close.
	ErrLineTooLong = errors.New("imapwire: line too long")
	// ErrLiteralTooLarge: a literal announced more bytes than allowed. Its bytes were not read
	// (a synchronizing literal got no "+"); see Error.Fatal for whether the connection is usable.
	ErrLiteralTooLarge = errors.New("imapwire: literal too large")
)

// Kind is the status response a server gives for an *Error.
type Kind string

// Status kinds of an *Error.
const (
	BAD Kind = "BAD"
	NO  Kind = "NO"
)

// Error is a problem with one command, caused by the client. The server answers it with
// "<Tag> <Kind> [<Code>] <Msg>" (Tag "*" when the tag could not be read). When Fatal is set,
// the reader could not find the end of the command and the server must follow with an untagged
// BYE and close the connection. Otherwise the reader has already skipped the rest of the
// command and the next ReadCommand starts on the next one.
type Error struct {
	Tag   string
	Kind  Kind
	Code  string // response code without brackets, e.g. "TOOBIG"; may be empty
	Msg   string // a sentence for the user, saying what was wrong
	Fatal bool
	Err   error // one of the sentinel errors above
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s [%s] %s", e.Kind, e.Code, e.Msg)
	}
	return fmt.Sprintf("%s %s", e.Kind, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ResponseTag is the tag to answer with: the command's tag, or "*" if none was read.
func (e *Error) ResponseTag() string {
	if e.Tag == "" {
		return "*"
	}
	return e.Tag
}
