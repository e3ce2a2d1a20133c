package smtpserver

import (
	"net"
	"strings"
	"time"
)

type receivedInfo struct {
	helo   string
	remote net.Addr
	by, id string
	tls    bool
	auth   bool
	utf8   bool
	rcpts  []string
	when   time.Time
}

// received builds the trace field of RFC 5321 section 4.4, with CRLF line
// ends, folded:
//
//	Received: from HELO ([IP])
//		by DOMAIN (epost) with ESMTPSA id ID
//		for <rcpt>; DATE
//
// The protocol names are those of RFC 3848 (ESMTPA, ESMTPS, ESMTPSA) and RFC
// 6531 section 4.3 (UTF8SMTP...). "for" names the recipient only when there
// is exactly one, so that a message copied to several people does not
// reveal its Bcc recipients (RFC 5321 section 7.2).
func received(ri receivedInfo) string {
	with := "ESMTP"
	if ri.utf8 {
		with = "UTF8SMTP"
	}
	if ri.tls {
		with += "S"
	}
	if ri.auth {
		with += "A"
	}
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(clean(ri.helo))
	if tcp, ok := ri.remote.(*net.TCPAddr); ok {
		b.WriteString(" ([" + addrLiteral(tcp.IP) + "])")
	}
	b.WriteString("\r\n\tby " + clean(ri.by) + " (epost) with " + with + " id " + ri.id)
	if len(ri.rcpts) == 1 {
		b.WriteString("\r\n\tfor <" + clean(ri.rcpts[0]) + ">")
	}
	// RFC 5322 section 3.3 date-time.
	b.WriteString("; " + ri.when.Format("Mon, 02 Jan 2006 15:04:05 -0700") + "\r\n")
	return b.String()
}

// addrLiteral formats an address literal (RFC 5321 section 4.1.3).
func addrLiteral(ip net.IP) string {
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return "IPv6:" + ip.String()
}

// clean keeps client-chosen text (the HELO name, addresses) from adding
// lines, controls or comment delimiters to the header.
func clean(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x21 || r == 0x7f || r == '(' || r == ')' || r == ';' || r == '<' || r == '>':
			return '_'
		}
		return r
	}, s)
}
