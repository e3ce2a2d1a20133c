// Package imapwire is the wire layer of our IMAP server: a strict parser of client commands
// and a writer of server responses, for IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) with
// the extensions the server offers or means to offer (issue 15). It does not depend on
// go-imap and knows nothing about mailboxes, sessions or storage.
//
// # Reading commands
//
// A Reader reads from a bufio.Reader, one command per ReadCommand, and returns a *Command
// whose Args is a typed struct per command (see Command). Literals are handled inside the
// reader: synchronizing ones ({n}) call Reader.Continue, which must send "+" and flush,
// before their bytes are read; non-synchronizing ones ({n+}) obey LITERAL+ or, without it,
// the 4096-byte LITERAL- limit (RFC 7888); literal8 (~{n}, RFC 3516) is accepted only where
// the grammar allows it (APPEND data and CATENATE TEXT). Sizes are checked before anything is
// read or a continuation is sent: Config.MaxLiteral for string arguments, Config.MaxAppend
// for messages, and Config.MaxLine for each line of a command.
//
// Malformed input never panics or blocks past the end of its line: the reader returns an
// *Error that says how to answer (BAD or NO, an optional response code, a message naming the
// problem and where it is), after skipping the rest of the command, so that the next
// ReadCommand starts at the next command. Error.Fatal says when that was not possible (a
// line over MaxLine, a non-synchronizing literal too large to skip): the server then sends
// BYE and closes. Any other error (I/O, Continue's) means the connection is gone.
//
// Covered: all RFC 9051 commands, and CAPABILITY-era RFC 3501 additions (LSUB, CHECK, \Recent
// and NEW/OLD/RECENT search keys); UID prefixes; LOGIN and AUTHENTICATE with SASL-IR (RFC
// 4959); ENABLE (RFC 5161); ID (RFC 2971, with its size limits); IDLE and DONE (RFC 2177,
// via ReadLine); SELECT/EXAMINE with CONDSTORE and QRESYNC, FETCH with CHANGEDSINCE and
// VANISHED, STORE with UNCHANGEDSINCE, SEARCH MODSEQ (RFC 7162); SEARCH with the full grammar,
// CHARSET, ESEARCH return options (RFC 4731), SAVE and "$" (RFC 5182), CONTEXT/UPDATE (RFC
// 5267), PARTIAL (RFC 9394), WITHIN (RFC 5032), SAVEDATE (RFC 8514), OBJECTID keys (RFC
// 8474); SORT and THREAD (RFC 5256) with ESORT (RFC 5267); LIST with selection and return
// options (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154);
// APPEND with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), literal8 (RFC 3516) and UTF8 (RFC
// 6855); BINARY fetch items; UID EXPUNGE (RFC 4315); MOVE (RFC 6851); COMPRESS (RFC 4978);
// GETQUOTA, GETQUOTAROOT, SETQUOTA (RFC 9208); NOTIFY (RFC 5465, parsed only). Mailbox names
// are decoded from modified UTF-7 (RFC 3501 section 5.1.3), or taken as UTF-8 once
// Config.UTF8 is set after ENABLE UTF8=ACCEPT or IMAP4rev2; INBOX is case-folded.
//
// Not yet covered: ACL (RFC 4314), METADATA (RFC 5464), URLAUTH, UNAUTHENTICATE, REPLACE (RFC
// 8508), SEARCH FUZZY, LIST-METADATA and other return options; search strings are kept as
// sent (the charset is not applied); APPEND data is read into memory (up to MaxAppend) rather
// than streamed to the store; the grammar of the payload of SASL exchanges is the caller's.
//
// # Writing responses
//
// A Writer builds responses token by token: untagged, tagged and continuation responses,
// atoms, numbers, NIL, parenthesized lists, response codes, resp-text (sanitized so that it
// cannot break framing), strings (quoted when possible, a literal when they hold CR, LF,
// 8-bit data without UTF-8 enabled, or are long), mailbox names (modified UTF-7 unless UTF8
// is enabled), literal8 for BINARY data that holds NUL, and fetch item names with the
// partial origin (BODY[1]<0>, BINARY[5]<0>). It never sends a NUL byte outside a literal8.
//
// Command.Format is the inverse of ReadCommand, for round-trip tests and test clients.
//
// The package must never panic on peer input, never read past what a command announces, and
// never send a continuation for a literal it is going to refuse.
package imapwire
