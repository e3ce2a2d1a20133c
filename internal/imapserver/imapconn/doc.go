// Package imapconn is the IMAP connection engine of the node's IMAP server: a
// fork of github.com/emersion/go-imap/v2/imapserver at v2.0.0-beta.8 (MIT
// licence, see LICENSE in this directory), with its internal wire packages.
//
// It parses commands, keeps the connection state machine and writes
// responses; the mail logic lives behind the Session interfaces, implemented
// by package imapserver on top of package mailbox.
//
// Why a fork and not the module: v2.0.0-beta.8's server has no CONDSTORE
// (no MODSEQ fetch item, no SELECT (CONDSTORE), no UNCHANGEDSINCE, no
// HIGHESTMODSEQ status item, ENABLE knows only IMAP4rev2 and UTF8=ACCEPT), no
// ID command, hangs up on the first unknown command before login (many
// clients send ID first), has fixed timeouts and no connection limit, and
// after refusing an oversized LITERAL+ APPEND it would parse the literal's
// bytes as commands. Every local change is marked "epost:" so that it can be
// offered upstream or dropped when upstream catches up.
//
// This package must never hold mail state: it only translates between the
// wire and a Session.
package imapconn
