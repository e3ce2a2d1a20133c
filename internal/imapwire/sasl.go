package imapwire

import (
	"encoding/base64"
	"errors"
)

// ErrAuthCanceled is returned by ReadSASLResponse when the client cancels the exchange with
// "*"; the server answers the AUTHENTICATE command with BAD (RFC 9051 section 6.2.2).
var ErrAuthCanceled = errors.New("imapwire: authentication canceled by the client")

// ReadSASLResponse reads the client's answer to a SASL challenge during AUTHENTICATE: a line
// of base64 (decoded; an empty line is an empty response), or "*" to cancel. Malformed base64
// is an *Error to answer with BAD; the command then ends.
func (r *Reader) ReadSASLResponse() ([]byte, error) {
	line, err := r.ReadLine()
	if err != nil {
		return nil, err
	}
	if line == "*" {
		return nil, ErrAuthCanceled
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, &Error{Kind: BAD, Err: ErrSyntax, Msg: "AUTHENTICATE: the response is not valid base64"}
	}
	return b, nil
}
