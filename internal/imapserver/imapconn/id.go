package imapconn

import (
	"sort"

	"epost/internal/imapserver/imapconn/internal/imapwire"
)

// maxIDFields bounds the client's ID list (RFC 2971 section 3.3 allows 30).
const maxIDFields = 30

// handleID answers the ID command in any state (RFC 2971 section 3.1). The
// client's fields are read and dropped: they are for logs, never for
// behaviour. epost addition.
func (c *Conn) handleID(dec *imapwire.Decoder) error {
	if !dec.ExpectSP() {
		return dec.Err()
	}
	n := 0
	isList, err := dec.List(func() error {
		var s string
		if !dec.ExpectNString(&s) {
			return dec.Err()
		}
		if n++; n > 2*maxIDFields {
			return newClientBugError("Too many ID fields")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !isList && !dec.ExpectNIL() {
		return dec.Err()
	}
	if !dec.ExpectCRLF() {
		return dec.Err()
	}

	enc := newResponseEncoder(c)
	defer enc.end()
	enc.Atom("*").SP().Atom("ID").SP()
	id := c.server.options.ID
	if len(id) == 0 {
		enc.NIL()
		return enc.CRLF()
	}
	keys := make([]string, 0, len(id))
	for k := range id {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	enc.List(len(keys)*2, func(i int) {
		if i%2 == 0 {
			enc.String(keys[i/2])
		} else {
			enc.String(id[keys[i/2]])
		}
	})
	return enc.CRLF()
}
