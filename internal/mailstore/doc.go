// Package mailstore is a user's mail store on POST (DESIGN.md layer 9): it implements
// mailbox.Store and mailbox.Folder, which the IMAP and POP3 servers use, over the user's
// POST logs and the ring's content store, and it provides the glue the SMTP submission
// server needs (Users.Submitter, Users.Recipients) and the login check (Users, a
// mailbox.Authenticator that opens the user's sealed key file and starts POST).
//
// Layout in the ring:
//
//   - The root log (post.RootLog) names the folders: create/delete/rename/subscribe
//     entries (entry.go). A folder's log has a random name that never changes, so RENAME is
//     one root entry and a Folder value survives it.
//   - Each folder is a log: a header entry fixing UIDVALIDITY, then insert, flags and
//     expunge entries. INBOX is POST's InboxLog: POST files delivered messages there itself
//     (exactly once: the INBOX log is POST's received set) and this package adds its own
//     entries to the same log, so there is no second filing step to lose or repeat.
//   - A message record lists the message's pieces (split.go): the bodies of large MIME
//     parts as content objects, stored once per ring however many messages or folders hold
//     them, and the bytes between them (inline when tiny). Concatenated they are exactly the
//     bytes received. COPY and MOVE write new records naming the same pieces; nothing is
//     uploaded again.
//
// UIDs and MODSEQs are not stored: they follow from replaying a log in index order
// (state.go), so every replay, on any node, with or without the local cache, agrees.
//
// The package never rewrites a message and never acknowledges a change before POST reports
// the log entry durable (a quorum acknowledged the head naming it). It must never write
// to a log it did not open or create, and never keep private keys beyond what Users holds
// for a running session.
package mailstore
