// Package imapsort implements the orderings behind IMAP SORT and THREAD: RFC 5256 (SORT,
// THREAD=ORDEREDSUBJECT, THREAD=REFERENCES, base subjects, sent dates) and RFC 5957 (the
// DISPLAYFROM and DISPLAYTO sort keys).
//
// It works on message metadata the server already has (Msg, filled from cached envelopes)
// and is pure: no I/O, no clock, no locks, no knowledge of sessions or mailboxes. It must
// never panic on header values, which come from whoever sent the mail.
//
// Strings compare under the i;ascii-casemap collation (RFC 4790 section 9.2), which is what
// RFC 5256 requires of a server that does not advertise I18NLEVEL: the octets a-z are mapped
// to A-Z and the results are compared as octet strings (i;octet). Nothing outside ASCII is
// folded, so "É" and "é" differ and UTF-8 sorts by byte value.
package imapsort
