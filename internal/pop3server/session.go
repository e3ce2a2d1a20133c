package pop3server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"epost/internal/mailbox"
)

// state is the session state of RFC 1939 section 3.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
	stateUpdate
)

// Limits on misbehaving clients.
const (
	maxAuthFailures  = 3
	maxProtocolError = 10
)

// entry is one message of the session's maildrop snapshot; message
// number n is entries[n-1].
type entry struct {
	uid     mailbox.UID
	size    int64
	deleted bool
}

// session is one connection. Its methods run on the connection's
// goroutine only.
type session struct {
	srv   *Server
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	log   *slog.Logger
	isTLS bool

	state        state
	user         string // from USER, until PASS
	authFailures int
	errors       int

	// TRANSACTION state.
	locked      string // user whose maildrop lock this session holds
	inbox       mailbox.Folder
	uidValidity uint32
	msgs        []entry
}

// handle runs one connection to its end. It recovers from panics so that a
// bug triggered by one client never takes down the node.
func (s *Server) handle(c net.Conn, implicitTLS bool) {
	defer s.untrack(c)
	defer c.Close()
	ss := &session{srv: s, conn: c, log: s.log.With("remote", c.RemoteAddr().String())}
	defer func() {
		if ss.locked != "" {
			s.unlock(ss.locked)
		}
		if v := recover(); v != nil {
			ss.log.Error("pop3 session panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	if implicitTLS {
		tc := tls.Server(c, s.cfg.TLS)
		tc.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if err := tc.Handshake(); err != nil {
			ss.log.Info("pop3 TLS handshake failed", "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		ss.conn, ss.isTLS = tc, true
	}
	ss.r = bufio.NewReaderSize(ss.conn, 4096)
	ss.w = bufio.NewWriterSize(ss.conn, 32<<10)
	ss.log.Debug("pop3 connection", "tls", ss.isTLS)
	ss.run()
}

func (ss *session) run() {
	ss.reply(true, "ePOST POP3 server ready")
	for {
		if !ss.flush() {
			return
		}
		ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
		line, err := ss.readLine()
		if errors.Is(err, errTooLong) {
			ss.protocolError("command line too long")
			continue
		}
		if err != nil {
			// EOF, timeout or reset: RFC 1939 section 3 says such a
			// session does not enter UPDATE, so nothing is deleted.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				ss.reply(false, "autologout: idle for too long")
				ss.flush()
			}
			ss.log.Debug("pop3 connection ended", "err", err)
			return
		}
		cmd, err := parseCommand(line)
		if err != nil {
			ss.protocolError(err.Error())
			if ss.errors > maxProtocolError {
				ss.reply(false, "too many errors, closing")
				ss.flush()
				return
			}
			continue
		}
		if !ss.dispatch(cmd) {
			ss.flush()
			return
		}
	}
}

// readLine reads one line up to maxLine octets, without its CRLF (a bare
// LF is accepted too). A longer line is consumed and reported.
func (ss *session) readLine() (string, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := ss.r.ReadSlice('\n')
		if !tooLong {
			line = append(line, chunk...)
			if len(line) > maxLine+2 {
				tooLong, line = true, nil
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	if tooLong {
		return "", errTooLong
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// flush sends buffered replies unless more pipelined commands are already
// waiting (RFC 2449 section 6.6), in which case their replies go together.
func (ss *session) flush() bool {
	if ss.r != nil && ss.r.Buffered() > 0 {
		return true
	}
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	return ss.w.Flush() == nil
}

func (ss *session) reply(ok bool, text string) {
	if ok {
		ss.w.WriteString("+OK")
	} else {
		ss.w.WriteString("-ERR")
	}
	if text != "" {
		ss.w.WriteByte(' ')
		ss.w.WriteString(text)
	}
	ss.w.WriteString("\r\n")
}

func (ss *session) protocolError(text string) {
	ss.errors++
	ss.reply(false, text)
}

// dispatch runs one command; false ends the connection.
func (ss *session) dispatch(cmd command) bool {
	switch cmd.Name {
	case "QUIT":
		return ss.quit()
	case "CAPA":
		ss.capa()
		return true
	}
	switch ss.state {
	case stateAuthorization:
		switch cmd.Name {
		case "USER":
			ss.userCmd(cmd.Args)
		case "PASS":
			return ss.pass(cmd.Args)
		case "STLS":
			return ss.stls()
		case "APOP", "AUTH":
			ss.protocolError(cmd.Name + " is not supported: use USER and PASS")
		default:
			ss.protocolError("log in first with USER and PASS")
		}
	case stateTransaction:
		switch cmd.Name {
		case "STAT":
			ss.stat(cmd.Args)
		case "LIST":
			ss.list(cmd.Args, false)
		case "UIDL":
			ss.list(cmd.Args, true)
		case "RETR":
			return ss.retr(cmd.Args, false)
		case "TOP":
			return ss.retr(cmd.Args, true)
		case "DELE":
			ss.dele(cmd.Args)
		case "RSET":
			ss.rset(cmd.Args)
		case "NOOP":
			ss.reply(true, "")
		case "USER", "PASS", "STLS", "APOP", "AUTH":
			ss.protocolError("already logged in")
		default:
			ss.protocolError("unknown command " + cmd.Name)
		}
	}
	return true
}

// capa answers CAPA (RFC 2449 section 5) in any state.
func (ss *session) capa() {
	ss.reply(true, "capability list follows")
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"}
	if ss.state == stateAuthorization {
		if ss.srv.authAllowed(ss.conn, ss.isTLS) {
			caps = append(caps, "USER")
		}
		if ss.srv.cfg.TLS != nil && !ss.isTLS {
			caps = append(caps, "STLS")
		}
	}
	caps = append(caps, "IMPLEMENTATION ePOST")
	for _, c := range caps {
		ss.w.WriteString(c + "\r\n")
	}
	ss.w.WriteString(".\r\n")
}

// stls upgrades the connection (RFC 2595 section 4). Commands the client
// pipelined after STLS are thrown away with the old reader, so that nothing
// sent in clear text is taken as sent under TLS.
func (ss *session) stls() bool {
	if ss.isTLS || ss.srv.cfg.TLS == nil {
		ss.protocolError("STLS is not available on this connection")
		return true
	}
	ss.reply(true, "begin TLS negotiation")
	ss.r = nil // flush must not wait for pipelined input
	if !ss.flush() {
		return false
	}
	tc := tls.Server(ss.conn, ss.srv.cfg.TLS)
	tc.SetDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	if err := tc.Handshake(); err != nil {
		ss.log.Info("pop3 STLS handshake failed", "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	ss.conn, ss.isTLS = tc, true
	ss.r = bufio.NewReaderSize(tc, 4096)
	ss.w = bufio.NewWriterSize(tc, 32<<10)
	ss.user = "" // RFC 2595 section 4: forget what came before
	ss.log = ss.log.With("tls", true)
	return true
}

func (ss *session) userCmd(args []string) {
	if !ss.srv.authAllowed(ss.conn, ss.isTLS) {
		ss.log.Warn("pop3 plaintext login refused")
		ss.protocolError("clear-text passwords are refused here: use STLS (RFC 2595) or implicit TLS first")
		return
	}
	if len(args) != 1 {
		ss.protocolError("usage: USER name")
		return
	}
	ss.user = args[0]
	ss.reply(true, "send PASS")
}

func (ss *session) pass(args []string) bool {
	if !ss.srv.authAllowed(ss.conn, ss.isTLS) {
		ss.protocolError("clear-text passwords are refused here: use STLS (RFC 2595) or implicit TLS first")
		return true
	}
	if ss.user == "" {
		ss.protocolError("send USER first")
		return true
	}
	if len(args) != 1 {
		ss.protocolError("usage: PASS password")
		return true
	}
	user := ss.user
	ss.user = ""
	store, err := mailbox.AuthenticateFrom(ss.srv.cfg.Auth, user, args[0], mailbox.ClientAddr(ss.conn.RemoteAddr()))
	if err != nil {
		if !errors.Is(err, mailbox.ErrAuthFailed) {
			ss.log.Error("pop3 auth error", "user", user, "err", err)
			ss.reply(false, "[SYS/TEMP] cannot check the password now, try again later")
			return true
		}
		ss.authFailures++
		ss.log.Info("pop3 auth failed", "user", user)
		if d := ss.srv.cfg.AuthFailDelay; d > 0 {
			time.Sleep(d)
		}
		// RFC 3206 section 4: [AUTH] says the credentials were wrong.
		ss.reply(false, "[AUTH] wrong user name or password")
		if ss.authFailures >= maxAuthFailures {
			ss.reply(false, "too many failed logins, closing")
			return false
		}
		return true
	}
	if !ss.srv.lock(user) {
		// RFC 2449 section 8.1.1.
		ss.reply(false, "[IN-USE] another POP3 session of this user is open")
		return true
	}
	ss.locked = user
	if err := ss.open(store); err != nil {
		ss.log.Error("pop3 cannot open INBOX", "user", user, "err", err)
		ss.srv.unlock(user)
		ss.locked = ""
		ss.reply(false, "[SYS/TEMP] cannot open the INBOX, try again later")
		return true
	}
	ss.log = ss.log.With("user", user)
	ss.log.Info("pop3 login", "messages", len(ss.msgs))
	ss.state = stateTransaction
	ss.reply(true, fmt.Sprintf("maildrop has %d messages", len(ss.msgs)))
	return true
}

// open takes the maildrop snapshot.
func (ss *session) open(store mailbox.Store) error {
	inbox, err := store.Folder(mailbox.Inbox)
	if err != nil {
		return err
	}
	st, err := inbox.Status()
	if err != nil {
		return err
	}
	list, err := inbox.List()
	if err != nil {
		return err
	}
	ss.inbox, ss.uidValidity = inbox, st.UIDValidity
	ss.msgs = make([]entry, len(list))
	for i, m := range list {
		ss.msgs[i] = entry{uid: m.UID, size: m.Size}
	}
	return nil
}

// message resolves a message-number argument; deleted messages do not
// exist for commands (RFC 1939 section 5).
func (ss *session) message(arg string) (int, bool) {
	n, ok := parseNumber(arg)
	if !ok || n < 1 || n > len(ss.msgs) || ss.msgs[n-1].deleted {
		ss.protocolError("no such message")
		return 0, false
	}
	return n, true
}

func (ss *session) stat(args []string) {
	if len(args) != 0 {
		ss.protocolError("usage: STAT")
		return
	}
	var n int
	var size int64
	for _, m := range ss.msgs {
		if !m.deleted {
			n++
			size += m.size
		}
	}
	ss.reply(true, fmt.Sprintf("%d %d", n, size))
}

func (ss *session) uidl(m entry) string {
	// RFC 1939 section 7: 1 to 70 characters in 0x21-0x7E, unique and
	// stable across sessions.
	return strconv.FormatUint(uint64(ss.uidValidity), 10) + "." + strconv.FormatUint(uint64(m.uid), 10)
}

// list answers LIST and UIDL, for one message or all.
func (ss *session) list(args []string, uidl bool) {
	value := func(m entry) string {
		if uidl {
			return ss.uidl(m)
		}
		return strconv.FormatInt(m.size, 10)
	}
	switch len(args) {
	case 0:
		ss.reply(true, "")
		for i, m := range ss.msgs {
			if !m.deleted {
				ss.w.WriteString(strconv.Itoa(i+1) + " " + value(m) + "\r\n")
			}
		}
		ss.w.WriteString(".\r\n")
	case 1:
		if n, ok := ss.message(args[0]); ok {
			ss.reply(true, strconv.Itoa(n)+" "+value(ss.msgs[n-1]))
		}
	default:
		ss.protocolError("too many arguments")
	}
}

// retr answers RETR msg and TOP msg n; false ends the connection (a write
// failed half-way through a multi-line response).
func (ss *session) retr(args []string, top bool) bool {
	lines := -1
	if top {
		if len(args) != 2 {
			ss.protocolError("usage: TOP message lines")
			return true
		}
		var ok bool
		if lines, ok = parseNumber(args[1]); !ok {
			ss.protocolError("bad line count")
			return true
		}
	} else if len(args) != 1 {
		ss.protocolError("usage: RETR message")
		return true
	}
	n, ok := ss.message(args[0])
	if !ok {
		return true
	}
	m := ss.msgs[n-1]
	content, err := ss.inbox.Content(m.uid)
	if errors.Is(err, mailbox.ErrNoMessage) {
		ss.reply(false, "message was removed by another client")
		return true
	} else if err != nil {
		ss.log.Error("pop3 read failed", "uid", m.uid, "err", err)
		ss.reply(false, "[SYS/TEMP] cannot read the message now, try again later")
		return true
	}
	ss.reply(true, fmt.Sprintf("%d octets", content.Size()))
	if err := writeMessage(ss.w, io.NewSectionReader(content, 0, content.Size()), lines); err != nil {
		// Part of a response is on the wire; the client cannot resync.
		ss.log.Error("pop3 read failed mid-message", "uid", m.uid, "err", err)
		return false
	}
	return true
}

func (ss *session) dele(args []string) {
	if len(args) != 1 {
		ss.protocolError("usage: DELE message")
		return
	}
	if n, ok := ss.message(args[0]); ok {
		ss.msgs[n-1].deleted = true
		ss.reply(true, fmt.Sprintf("message %d marked for deletion at QUIT", n))
	}
}

func (ss *session) rset(args []string) {
	if len(args) != 0 {
		ss.protocolError("usage: RSET")
		return
	}
	for i := range ss.msgs {
		ss.msgs[i].deleted = false
	}
	ss.reply(true, fmt.Sprintf("maildrop has %d messages", len(ss.msgs)))
}

// quit ends the session; in TRANSACTION state it first enters UPDATE and
// expunges the marked messages (RFC 1939 section 6).
func (ss *session) quit() bool {
	if ss.state != stateTransaction {
		ss.reply(true, "bye")
		return false
	}
	ss.state = stateUpdate
	var uids []mailbox.UID
	for _, m := range ss.msgs {
		if m.deleted {
			uids = append(uids, m.uid)
		}
	}
	if len(uids) > 0 {
		gone, err := ss.inbox.Expunge(uids)
		if err != nil {
			ss.log.Error("pop3 expunge failed", "err", err)
			ss.reply(false, "[SYS/TEMP] some deleted messages were not removed: "+oneLine(err.Error()))
			return false
		}
		ss.log.Info("pop3 expunged", "count", len(gone))
	}
	ss.reply(true, fmt.Sprintf("bye, %d messages removed", len(uids)))
	return false
}

// oneLine keeps an error text from breaking a reply into lines.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
