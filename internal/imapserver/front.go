package imapserver

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// The front layer: frontConn is the net.Conn that the protocol engine
// (go-imap's imapserver) reads commands from and writes responses to. It
// stands between the engine and the client's transport and adds what the
// engine lacks:
//
//   - ID (RFC 2971) in every state, answered here;
//   - BAD for unknown commands before login: the engine hangs up on the
//     first one (against cross-protocol attacks); clients that probe with a
//     command we lack get maxUnknownBeforeAuth answers first;
//   - STARTTLS (RFC 9051 section 6.2.1), done here so that this layer keeps
//     seeing plaintext (the engine would put TLS above it);
//   - the capability lists completed with ID, STARTTLS and LOGINDISABLED;
//   - read timeouts chosen by protocol state;
//   - a refused non-synchronizing literal (RFC 7888) is dropped, never read
//     as commands (the engine would parse an oversized APPEND's message as
//     commands).
//
// How it knows where commands start: it hands the engine one line (or a
// piece of literal data) at a time, and the engine reads again only when it
// is done with what it was given. The engine writes a command's tagged
// response before it reads the next command, so a line read after the
// tagged response of the current command starts a new command, and a line
// read before it continues the current one (the rest of a line after a
// literal, an AUTHENTICATE response, IDLE's DONE). After a line ending in a
// literal marker, the engine's next read tells whether it took the literal:
// if it already wrote the tagged response, it refused it.
//
// Concurrency: Read runs on the engine's connection goroutine only. Write
// runs there and on the engine's IDLE goroutine; the engine serialises its
// own responses. mu guards what both sides share; wmu serialises writes to
// the transport.
type frontConn struct {
	srv     *Server
	raw     net.Conn
	release func() // frees the connection slot; called once, by Close

	mu     sync.Mutex
	tr     net.Conn // raw, or TLS over raw
	isTLS  bool
	authed bool
	cmd    inflight

	wmu  sync.Mutex
	scan respScanner
	obuf []byte

	// Read side, engine's connection goroutine only.
	br         *bufio.Reader
	pending    []byte // bytes for the engine
	lit        int64  // literal octets still to hand over
	decide     bool   // the last line handed over ended in a literal marker
	litSize    int64
	litNonSync bool
	midLine    bool   // a long line is being handed over in chunks
	lineTail   []byte // end of that line, for its literal marker
	unknown    int    // unknown commands answered before login
	readErr    error  // sticky
	closeOnce  sync.Once
}

// inflight is the command the engine is working on.
type inflight struct {
	tag, name string
	done      bool // its tagged response was written, or none is due
}

const (
	// maxUnknownBeforeAuth unknown commands before login get BAD; the
	// next one goes to the engine, which answers BAD and hangs up.
	maxUnknownBeforeAuth = 3
	// frontBufSize is the longest line examined whole; longer lines pass
	// to the engine in chunks (it refuses commands over 50 KiB).
	frontBufSize = 16 << 10
	// maxIDLiteral is RFC 2971 section 3.3's limit on a value's length.
	maxIDLiteral = 1024
	// engineMaxBufferedLiteral is the engine's limit on literals other
	// than APPEND's message (imapserver/conn.go, checkBufferedLiteral).
	engineMaxBufferedLiteral = 4096
	// maxDroppedLiteral is the largest refused LITERAL+ literal read and
	// dropped; beyond it the connection is closed instead (RFC 7888
	// section 4 allows either), rather than reading a huge upload for
	// nothing.
	maxDroppedLiteral = 1 << 20
	literalTimeout    = 5 * time.Minute
	frontWriteTimeout = 30 * time.Second
)

// engineCommands are the commands go-imap v2.0.0-beta.8's server knows
// (imapserver/conn.go, readCommand). Before login, anything else would make
// it hang up, so the front layer answers BAD itself. TestEngineCommands
// checks this list against the engine.
var engineCommands = map[string]bool{
	"NOOP": true, "CHECK": true, "LOGOUT": true, "CAPABILITY": true, "STARTTLS": true,
	"AUTHENTICATE": true, "UNAUTHENTICATE": true, "LOGIN": true, "ENABLE": true,
	"CREATE": true, "DELETE": true, "RENAME": true, "SUBSCRIBE": true, "UNSUBSCRIBE": true,
	"STATUS": true, "LIST": true, "LSUB": true, "NAMESPACE": true, "IDLE": true,
	"SELECT": true, "EXAMINE": true, "CLOSE": true, "UNSELECT": true, "APPEND": true,
	"FETCH": true, "UID FETCH": true, "EXPUNGE": true, "UID EXPUNGE": true,
	"STORE": true, "UID STORE": true, "COPY": true, "UID COPY": true,
	"MOVE": true, "UID MOVE": true, "SEARCH": true, "UID SEARCH": true,
}

// errHangUp ends the connection after the front layer said BYE.
var errHangUp = errors.New("imapserver: connection closed by the front layer")

func newFrontConn(srv *Server, raw net.Conn, tr net.Conn, isTLS bool, release func()) *frontConn {
	return &frontConn{
		srv: srv, raw: raw, release: release,
		tr: tr, isTLS: isTLS,
		cmd: inflight{done: true},
		br:  bufio.NewReaderSize(tr, frontBufSize),
	}
}

func (f *frontConn) transport() net.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tr
}

// authAllowed is the plaintext-login policy (RFC 9051 section 6.2.3): TLS,
// loopback, or Config.AllowPlaintextAuth.
func (f *frontConn) authAllowed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authAllowedLocked()
}

func (f *frontConn) authAllowedLocked() bool {
	if f.isTLS || f.srv.cfg.AllowPlaintextAuth {
		return true
	}
	addr, ok := f.raw.RemoteAddr().(*net.TCPAddr)
	return ok && addr.IP.IsLoopback()
}

// Read hands the engine the client's bytes: one line, or literal data.
func (f *frontConn) Read(p []byte) (int, error) {
	for {
		switch {
		case len(f.pending) > 0:
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		case f.readErr != nil:
			return 0, f.readErr
		case f.decide:
			f.decide = false
			f.setErr(f.afterMarker())
		case f.lit > 0:
			f.setReadDeadline(literalTimeout)
			n, err := f.br.Read(p[:min(int64(len(p)), f.lit)])
			f.lit -= int64(n)
			if err != nil {
				f.setErr(f.readFailed(err))
			}
			if n > 0 {
				return n, nil
			}
		default:
			f.setErr(f.nextLine())
		}
	}
}

func (f *frontConn) setErr(err error) {
	if err == nil {
		return
	}
	if errors.Is(err, errHangUp) {
		err = io.EOF // the engine ends the session quietly
	}
	f.readErr = err
}

// afterMarker runs when the engine reads past a line that ended in a
// literal marker: it either wants the literal, or has refused it.
func (f *frontConn) afterMarker() error {
	f.mu.Lock()
	refused := f.cmd.done
	f.mu.Unlock()
	switch {
	case !refused:
		f.lit = f.litSize
		return nil
	case !f.litNonSync:
		return nil // the client waits for a "+" that will not come
	}
	// RFC 7888 section 4: the client sends a non-synchronizing literal
	// whatever the server says; it is data, never commands.
	f.srv.log.Info("imap refused literal dropped", "remote", f.raw.RemoteAddr().String(), "size", f.litSize)
	if err := f.dropLiteral(f.litSize); err != nil {
		return err
	}
	line, complete, err := f.readLine(f.srv.cfg.CommandTimeout)
	if err != nil {
		return err
	}
	return f.skipCommand(line, complete)
}

// nextLine reads the next line (or chunk of a long one) and either hands it
// to the engine or handles it here.
func (f *frontConn) nextLine() error {
	if f.midLine {
		chunk, complete, err := f.readLine(f.srv.cfg.CommandTimeout)
		if err != nil {
			return err
		}
		f.handOver(chunk, complete, false)
		return nil
	}
	f.mu.Lock()
	start, authed, idle := f.cmd.done, f.authed, f.cmd.name == "IDLE"
	f.mu.Unlock()
	timeout := f.srv.cfg.CommandTimeout
	if (start && authed) || (!start && idle) {
		timeout = f.srv.cfg.IdleTimeout
	}
	line, complete, err := f.readLine(timeout)
	if err != nil {
		return err
	}
	if start {
		if handled, err := f.command(line, complete, authed); handled || err != nil {
			return err
		}
	}
	f.handOver(line, complete, start)
	return nil
}

// handOver queues a line or chunk for the engine and notes a literal marker
// at the line's end. first is set for a command's first line.
func (f *frontConn) handOver(chunk []byte, complete, first bool) {
	f.pending = chunk
	end := chunk
	if f.midLine || !complete {
		f.lineTail = appendTail(f.lineTail, chunk)
		end = f.lineTail
	}
	f.midLine = !complete
	if !complete {
		return
	}
	f.lineTail = f.lineTail[:0]
	n, nonSync, ok := literalMarker(end)
	if !ok {
		return
	}
	f.decide, f.litSize, f.litNonSync = true, n, nonSync
	if n <= engineMaxBufferedLiteral || !f.bufferedLiteral(chunk, first) {
		return
	}
	// The engine refuses a buffered literal over 4096 octets but then
	// parses on as if there were none: it waits for a synchronizing
	// literal's data (which the client sends only after a "+"), or reads
	// a non-synchronizing literal's data as arguments and commands. Hand
	// it a NUL in the literal's place instead, which no argument can
	// start with, so that it answers BAD and ends the command; the client
	// takes that as the refusal, and afterMarker drops a LITERAL+ literal.
	if i := bytes.LastIndexByte(chunk, '{'); i >= 0 {
		f.pending = append(chunk[:i:i], "\x00\r\n"...)
	}
}

// bufferedLiteral reports whether the literal a line ends with is one the
// engine reads into memory: every literal except APPEND's message (whose
// limit is AppendLimit, checked by the engine before it answers "+").
// APPEND's mailbox name is a buffered literal when it is one: "tag APPEND
// {n}" (RFC 9051 section 6.3.12; flags and date are never literals).
func (f *frontConn) bufferedLiteral(line []byte, first bool) bool {
	f.mu.Lock()
	tag, name := f.cmd.tag, f.cmd.name
	f.mu.Unlock()
	if name != "APPEND" {
		return true
	}
	if !first {
		return false
	}
	rest := trimEOL(line)[len(tag)+len(" APPEND"):]
	return bytes.HasPrefix(rest, []byte(" {")) && bytes.IndexByte(rest[2:], ' ') < 0
}

// appendTail keeps the last 64 bytes of a long line.
func appendTail(tail, chunk []byte) []byte {
	tail = append(tail, chunk...)
	if len(tail) > 64 {
		tail = append(tail[:0], tail[len(tail)-64:]...)
	}
	return tail
}

// command looks at a line that starts a command. It handles ID, STARTTLS
// and, before login, unknown commands; anything else goes to the engine.
func (f *frontConn) command(line []byte, complete, authed bool) (handled bool, err error) {
	tag, name, ok := commandStart(line)
	switch {
	case ok && name == "ID":
		return true, f.handleID(tag, line, complete)
	case ok && name == "STARTTLS" && f.canStartTLS():
		return true, f.startTLS(tag, line, complete)
	case !authed && (!ok || !engineCommands[name]) && f.unknown < maxUnknownBeforeAuth:
		f.unknown++
		f.srv.log.Debug("imap unknown command before login", "remote", f.raw.RemoteAddr().String(), "command", name)
		if err := f.reply(tag, "BAD Unknown command"); err != nil {
			return true, err
		}
		return true, f.skipCommand(line, complete)
	}
	f.mu.Lock()
	f.cmd = inflight{tag: tag, name: name}
	f.mu.Unlock()
	return false, nil
}

func (f *frontConn) canStartTLS() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.srv.cfg.TLS != nil && !f.isTLS && !f.authed
}

// startTLS implements STARTTLS (RFC 9051 section 6.2.1).
func (f *frontConn) startTLS(tag string, line []byte, complete bool) error {
	if !complete || len(trimEOL(line)) != len(tag)+len(" STARTTLS") {
		if err := f.reply(tag, "BAD STARTTLS takes no arguments"); err != nil {
			return err
		}
		return f.skipCommand(line, complete)
	}
	if err := f.reply(tag, "OK Begin TLS negotiation now"); err != nil {
		return err
	}
	// Plaintext sent after STARTTLS but before the handshake would be
	// read as if it came over TLS (the STARTTLS command injection
	// attack); drop it.
	if n := f.br.Buffered(); n > 0 {
		f.br.Discard(n)
		f.srv.log.Warn("imap plaintext after STARTTLS dropped", "remote", f.raw.RemoteAddr().String(), "bytes", n)
	}
	tc := tls.Server(f.raw, f.srv.cfg.TLS)
	tc.SetDeadline(time.Now().Add(f.srv.cfg.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		f.srv.log.Info("imap STARTTLS handshake failed", "remote", f.raw.RemoteAddr().String(), "err", err)
		return errHangUp
	}
	tc.SetDeadline(time.Time{})
	f.wmu.Lock()
	f.mu.Lock()
	f.tr, f.isTLS = tc, true
	f.mu.Unlock()
	f.wmu.Unlock()
	f.br.Reset(tc)
	return nil
}

// handleID answers ID (RFC 2971 section 3.1) in any state. The client's
// fields go to the log; they never change behaviour (section 3.1).
func (f *frontConn) handleID(tag string, line []byte, complete bool) error {
	pieces := []cmdPiece{}
	text := trimEOL(line)[len(tag)+len(" ID"):]
	for {
		if !complete {
			if err := f.reply(tag, "BAD ID command too long"); err != nil {
				return err
			}
			return f.skipCommand(line, complete)
		}
		n, nonSync, ok := literalMarker(line)
		if !ok {
			pieces = append(pieces, cmdPiece{text: text})
			break
		}
		pieces = append(pieces, cmdPiece{text: text[:bytes.LastIndexByte(text, '{')]})
		if n > maxIDLiteral || len(pieces) > 4*maxIDPairs {
			if err := f.reply(tag, "BAD ID values are limited to 1024 octets and 30 pairs (RFC 2971)"); err != nil {
				return err
			}
			return f.skipCommand(line, complete)
		}
		if !nonSync {
			if err := f.reply("+", "Ready for literal data"); err != nil {
				return err
			}
		}
		data := make([]byte, n)
		f.setReadDeadline(literalTimeout)
		if _, err := io.ReadFull(f.br, data); err != nil {
			return f.readFailed(err)
		}
		pieces = append(pieces, cmdPiece{text: data, isLit: true})
		var err error
		if line, complete, err = f.readLine(f.srv.cfg.CommandTimeout); err != nil {
			return err
		}
		text = trimEOL(line)
	}
	fields, err := parseIDArgs(pieces)
	if err != nil {
		return f.reply(tag, "BAD "+err.Error())
	}
	if len(fields) > 0 {
		attrs := []any{"remote", f.raw.RemoteAddr().String()}
		for k, v := range fields {
			attrs = append(attrs, "id."+truncate(k, 30), truncate(v, 100))
		}
		f.srv.log.Info("imap client id", attrs...)
	}
	return f.write([]byte("* ID " + f.srv.idList + "\r\n" + tag + " OK ID completed\r\n"))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// idParamsList formats the server's ID fields (RFC 2971 section 3.2).
func idParamsList(fields map[string]string) string {
	if len(fields) == 0 {
		return "NIL"
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, quoteString(k), quoteString(fields[k]))
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// skipCommand drops the rest of a command the front layer refused, given
// its last line read: to the line's end, then any non-synchronizing literal
// and the line after it. A synchronizing literal ends it: the client waits
// for a "+" that will not come, and takes the tagged reply instead.
func (f *frontConn) skipCommand(line []byte, complete bool) error {
	tail := appendTail(nil, line)
	for {
		for !complete {
			var err error
			if line, complete, err = f.readLine(f.srv.cfg.CommandTimeout); err != nil {
				return err
			}
			tail = appendTail(tail, line)
		}
		n, nonSync, ok := literalMarker(tail)
		if !ok || !nonSync {
			return nil
		}
		if err := f.dropLiteral(n); err != nil {
			return err
		}
		var err error
		if line, complete, err = f.readLine(f.srv.cfg.CommandTimeout); err != nil {
			return err
		}
		tail = appendTail(tail[:0], line)
	}
}

func (f *frontConn) dropLiteral(n int64) error {
	if n > maxDroppedLiteral {
		f.bye("Literal too big; closing the connection")
		return errHangUp
	}
	f.setReadDeadline(literalTimeout)
	if _, err := io.CopyN(io.Discard, f.br, n); err != nil {
		return f.readFailed(err)
	}
	return nil
}

// readLine reads one line, or a chunk of a line longer than the buffer
// (complete false). The result is the caller's.
func (f *frontConn) readLine(timeout time.Duration) (line []byte, complete bool, err error) {
	f.setReadDeadline(timeout)
	b, err := f.br.ReadSlice('\n')
	switch {
	case err == nil:
		return bytes.Clone(b), true, nil
	case errors.Is(err, bufio.ErrBufferFull):
		return bytes.Clone(b), false, nil
	}
	return nil, false, f.readFailed(err)
}

// readFailed turns a read timeout into BYE (RFC 9051 section 5.4:
// autologout) and a quiet end of the session.
func (f *frontConn) readFailed(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		f.srv.log.Info("imap connection timed out", "remote", f.raw.RemoteAddr().String())
		f.bye("Autologout; idle for too long")
		return errHangUp
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.EOF
	}
	return err
}

func (f *frontConn) setReadDeadline(d time.Duration) {
	f.transport().SetReadDeadline(time.Now().Add(d))
}

// reply writes "tag text" (tag "*" when the line had none).
func (f *frontConn) reply(tag, text string) error {
	if tag == "" {
		tag = "*"
	}
	return f.write([]byte(tag + " " + text + "\r\n"))
}

func (f *frontConn) bye(text string) {
	f.write([]byte("* BYE " + text + "\r\n"))
}

// write sends the front layer's own responses, which never contain
// capability lists.
func (f *frontConn) write(b []byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	tr := f.transport()
	tr.SetWriteDeadline(time.Now().Add(frontWriteTimeout))
	_, err := tr.Write(b)
	tr.SetWriteDeadline(time.Time{})
	return err
}

// Write passes the engine's responses to the client, completing capability
// lists and noting tagged responses.
func (f *frontConn) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	f.obuf = f.scan.feed(f.obuf[:0], p, f.serverLine)
	tr := f.tr
	f.mu.Unlock()
	if len(f.obuf) > 0 {
		if _, err := tr.Write(f.obuf); err != nil {
			return 0, err
		}
	}
	if cap(f.obuf) > 64<<10 {
		f.obuf = nil
	}
	return len(p), nil
}

// serverLine sees each response line of the engine, with f.mu held.
func (f *frontConn) serverLine(line []byte) []byte {
	tag, rest, _ := bytes.Cut(line, []byte(" "))
	switch {
	case string(tag) == "*":
		if bytes.HasPrefix(rest, []byte("BYE")) {
			f.cmd.done = true
		}
	case !f.cmd.done && string(tag) == f.cmd.tag:
		f.cmd.done = true
		if bytes.HasPrefix(rest, []byte("OK")) {
			switch f.cmd.name {
			case "LOGIN", "AUTHENTICATE":
				f.authed = true
			case "UNAUTHENTICATE":
				f.authed = false
			}
		}
	}
	return rewriteCaps(line, capPolicy{
		startTLS:      f.srv.cfg.TLS != nil && !f.isTLS && !f.authed,
		loginDisabled: !f.authed && !f.authAllowedLocked(),
	})
}

// Close closes the transport and frees the connection slot.
func (f *frontConn) Close() error {
	err := f.transport().Close()
	f.closeOnce.Do(f.release)
	return err
}

func (f *frontConn) LocalAddr() net.Addr  { return f.raw.LocalAddr() }
func (f *frontConn) RemoteAddr() net.Addr { return f.raw.RemoteAddr() }

// SetDeadline and SetWriteDeadline set the write deadline only: the front
// layer chooses read deadlines itself, from the protocol state.
func (f *frontConn) SetDeadline(t time.Time) error      { return f.transport().SetWriteDeadline(t) }
func (f *frontConn) SetReadDeadline(time.Time) error    { return nil }
func (f *frontConn) SetWriteDeadline(t time.Time) error { return f.transport().SetWriteDeadline(t) }

var _ net.Conn = (*frontConn)(nil)
