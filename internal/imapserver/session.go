package imapserver

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

type state int

const (
	notAuthenticated state = iota
	authenticated
	selected
	loggedOut
)

// session is one connection's state machine.
type session struct {
	srv   *Server
	raw   net.Conn // the TCP connection (for its address)
	conn  net.Conn // raw, or TLS over it
	isTLS bool
	log   *slog.Logger

	br *bufio.Reader
	bw *bufio.Writer
	r  *imapwire.Reader
	w  *imapwire.Writer

	state      state
	compressed bool // COMPRESS DEFLATE is on
	user       string
	store      mailbox.Store
	sel        *view            // the selected mailbox, nil unless state == selected
	enabled    map[string]bool  // ENABLEd capabilities (upper case)
	contexts   []*searchContext // SEARCH RETURN (UPDATE) contexts (context.go)
	notify     *notifyState     // NOTIFY (notify.go); nil before the first
}

func newSession(srv *Server, raw, conn net.Conn, isTLS bool) *session {
	s := &session{srv: srv, raw: raw, isTLS: isTLS, log: srv.log.With("remote", raw.RemoteAddr().String()), enabled: map[string]bool{}}
	s.setConn(conn)
	return s
}

// setConn puts the reader and writer on conn (at the start, and after STARTTLS).
func (s *session) setConn(conn net.Conn) {
	s.conn = conn
	s.setStreams(conn, conn)
}

// setStreams puts the reader and writer on r and w (the connection, or COMPRESS's streams
// over it), keeping the negotiated options.
func (s *session) setStreams(r io.Reader, w io.Writer) {
	s.br = bufio.NewReaderSize(r, 16<<10)
	s.bw = bufio.NewWriterSize(w, 16<<10)
	cfg := imapwire.Config{MaxAppend: s.srv.cfg.AppendLimit, LiteralPlus: true}
	if s.r != nil {
		cfg = s.r.Config
	}
	s.r = imapwire.NewReader(s.br, cfg)
	s.r.Continue = func(int64) error {
		s.w.StartContinuation().Text("Ready for literal data").End()
		return s.w.Flush()
	}
	utf8 := s.w != nil && s.w.UTF8
	s.w = imapwire.NewWriter(s.bw)
	s.w.UTF8 = utf8
}

// loopback says whether the client is on this machine.
func (s *session) loopback() bool {
	a := mailbox.ClientAddr(s.raw.RemoteAddr())
	return a.IsValid() && a.IsLoopback()
}

// authAllowed is the plaintext-login policy (RFC 9051 section 6.2.3).
func (s *session) authAllowed() bool {
	return s.isTLS || s.srv.cfg.AllowPlaintextAuth || s.loopback()
}

func (s *session) capabilities() []string {
	caps := []string{"IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "SASL-IR"}
	if s.state == notAuthenticated {
		if s.srv.cfg.TLS != nil && !s.isTLS {
			caps = append(caps, "STARTTLS")
		}
		if s.authAllowed() {
			caps = append(caps, "AUTH=PLAIN")
		} else {
			caps = append(caps, "LOGINDISABLED")
		}
		return caps
	}
	caps = append(caps, "NAMESPACE", "IDLE", "MULTIAPPEND", "CATENATE", "COMPRESS=DEFLATE", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE", "UNSELECT", "ESEARCH", "SEARCHRES", "CONTEXT=SEARCH", "CONTEXT=SORT", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "NOTIFY", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE", "UTF8=ACCEPT",
		"APPENDLIMIT="+strconv.FormatInt(s.srv.cfg.AppendLimit, 10))
	return append(caps, s.quotaCaps()...)
}

func (s *session) run() {
	defer s.endNotify()
	s.w.StartUntagged().Atom("OK").Code("CAPABILITY", s.capabilities()...).Text("epost IMAP ready").End()
	if s.w.Flush() != nil {
		return
	}
	for s.state != loggedOut {
		timeout := s.srv.cfg.CommandTimeout
		if s.state != notAuthenticated {
			timeout = s.srv.cfg.IdleTimeout
		}
		s.conn.SetReadDeadline(time.Now().Add(timeout))
		cmd, err := s.readCommand()
		if err != nil {
			var we *imapwire.Error
			switch {
			case errors.As(err, &we):
				s.respond(we.ResponseTag(), string(we.Kind), we.Code, we.Msg)
				if we.Fatal {
					s.bye("Too much in one command; closing the connection")
					return
				}
				if s.w.Flush() != nil {
					return
				}
				continue
			case errors.Is(err, io.EOF):
				return
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					s.bye("Autologout; idle for too long")
				}
				return
			}
		}
		s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.CommandTimeout))
		var region *trace.Region // a command in a Go execution trace (epost demo --trace)
		if trace.IsEnabled() {
			region = trace.StartRegion(context.Background(), "imap "+cmd.Name)
		}
		s.dispatch(cmd)
		err = s.w.Flush()
		if region != nil {
			region.End()
		}
		if err != nil {
			return
		}
	}
}

func (s *session) bye(text string) {
	s.w.StartUntagged().Atom("BYE").Text(text).End()
	s.w.Flush()
}

// respond writes a tagged (or untagged, tag "*") status response.
func (s *session) respond(tag, kind, code, text string) {
	w := s.w.StartTagged(tag).Atom(kind)
	if code != "" {
		w.Code(code)
	}
	w.Text(text).End()
}

func (s *session) ok(tag, text string) { s.respond(tag, "OK", "", text) }
func (s *session) no(tag, code, text string) {
	s.respond(tag, "NO", code, text)
}
func (s *session) bad(tag, text string) { s.respond(tag, "BAD", "", text) }

// storeNo answers a store error: NO with the code that fits.
func (s *session) storeNo(tag string, err error) {
	switch {
	case errors.Is(err, mailbox.ErrNoFolder):
		s.no(tag, "NONEXISTENT", "No such mailbox")
	case errors.Is(err, mailbox.ErrInboxReserved):
		s.no(tag, "CANNOT", "INBOX cannot be deleted")
	case errors.Is(err, mailbox.ErrFolderExists):
		s.no(tag, "ALREADYEXISTS", "Mailbox already exists")
	case errors.Is(err, mailbox.ErrBadName):
		s.no(tag, "CANNOT", "That mailbox name cannot be used")
	default:
		s.log.Warn("imap store error", "err", err)
		s.no(tag, "UNAVAILABLE", "The mail store cannot do that right now; try again later")
	}
}

func (s *session) dispatch(cmd *imapwire.Command) {
	tag := cmd.Tag
	// Commands valid in any state.
	switch cmd.Name {
	case "CAPABILITY":
		s.w.StartUntagged().Atom("CAPABILITY")
		for _, c := range s.capabilities() {
			s.w.Atom(c)
		}
		s.w.End()
		s.ok(tag, "CAPABILITY completed")
		return
	case "NOOP":
		s.sync(true)
		s.ok(tag, "NOOP completed")
		return
	case "LOGOUT":
		s.unselect()
		s.w.StartUntagged().Atom("BYE").Text("Logging out").End()
		s.ok(tag, "LOGOUT completed")
		s.state = loggedOut
		return
	case "ID":
		s.id(tag)
		return
	}
	if s.state == notAuthenticated {
		switch cmd.Name {
		case "STARTTLS":
			s.startTLS(tag)
		case "LOGIN":
			a := cmd.Args.(*imapwire.Login)
			s.login(tag, a.Username, a.Password)
		case "AUTHENTICATE":
			s.authenticate(tag, cmd.Args.(*imapwire.Authenticate))
		default:
			s.bad(tag, cmd.Name+" needs a login first")
		}
		return
	}
	if s.state == selected && s.selectedCommand(cmd) {
		return
	}
	switch cmd.Name {
	case "STARTTLS", "LOGIN", "AUTHENTICATE":
		s.bad(tag, "Already logged in")
	case "SELECT", "EXAMINE":
		s.selectMailbox(tag, cmd.Args.(*imapwire.Select))
	case "IDLE":
		s.idle(tag)
	case "APPEND":
		s.appendMsg(tag, cmd.Args.(*imapwire.Append))
	case "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "STORE", "FETCH", "COPY", "MOVE", "SEARCH", "SORT", "THREAD", "CANCELUPDATE":
		if s.state != selected {
			s.bad(tag, "No mailbox selected")
			return
		}
		s.no(tag, "CANNOT", cmd.Name+" is not served by this engine yet")
	case "ENABLE":
		s.enable(tag, cmd.Args.(*imapwire.Enable))
	case "COMPRESS":
		s.compress(tag, cmd.Args.(*imapwire.Compress).Mechanism)
	case "NAMESPACE":
		s.w.StartUntagged().Atom("NAMESPACE").Open().Open().String("").String(string(mailbox.Delim)).Close().Close().NIL().NIL().End()
		s.ok(tag, "NAMESPACE completed")
	case "CREATE":
		s.create(tag, cmd.Args.(*imapwire.Create))
	case "DELETE":
		s.delete(tag, cmd.Args.(*imapwire.Delete).Mailbox)
	case "RENAME":
		a := cmd.Args.(*imapwire.Rename)
		s.rename(tag, a.From, a.To)
	case "SUBSCRIBE", "UNSUBSCRIBE":
		s.subscribe(tag, cmd.Args.(*imapwire.Subscribe).Mailbox, cmd.Name == "SUBSCRIBE")
	case "LIST", "LSUB":
		s.list(tag, cmd.Args.(*imapwire.List))
	case "STATUS":
		a := cmd.Args.(*imapwire.Status)
		s.status(tag, a.Mailbox, a.Items)
	case "NOTIFY":
		s.notifyCmd(tag, cmd.Args.(*imapwire.Notify))
	case "GETQUOTAROOT":
		s.getQuotaRoot(tag, cmd.Args.(*imapwire.GetQuotaRoot))
	case "GETQUOTA":
		s.getQuota(tag, cmd.Args.(*imapwire.GetQuota))
	case "SETQUOTA":
		s.setQuota(tag)
	default:
		s.no(tag, "CANNOT", cmd.Name+" is not served by this engine yet")
	}
}

func (s *session) id(tag string) {
	name := "epost"
	s.w.StartUntagged().Atom("ID").Open().String("name").String(name).String("vendor").String("ePOST in Go")
	if v := s.srv.cfg.Version; v != "" {
		s.w.String("version").String(v)
	}
	s.w.Close().End()
	s.ok(tag, "ID completed")
}

func (s *session) startTLS(tag string) {
	if s.srv.cfg.TLS == nil || s.isTLS {
		s.bad(tag, "STARTTLS is not available here")
		return
	}
	if s.br.Buffered() > 0 {
		// RFC 9051 section 6.2.1: nothing may follow STARTTLS before the handshake.
		s.bad(tag, "Data after STARTTLS before the TLS handshake")
		s.state = loggedOut
		return
	}
	s.ok(tag, "Begin TLS negotiation now")
	if s.w.Flush() != nil {
		s.state = loggedOut
		return
	}
	tc := tls.Server(s.conn, s.srv.cfg.TLS)
	tc.SetDeadline(time.Now().Add(s.srv.cfg.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		s.log.Info("imap STARTTLS handshake failed", "err", err)
		s.state = loggedOut
		return
	}
	tc.SetDeadline(time.Time{})
	s.isTLS = true
	s.setConn(tc)
}

func (s *session) login(tag, user, password string) {
	if !s.authAllowed() {
		s.no(tag, "PRIVACYREQUIRED", "Log in over TLS (STARTTLS or port 993)")
		return
	}
	store, err := mailbox.AuthenticateFrom(s.srv.cfg.Auth, user, password, mailbox.ClientAddr(s.raw.RemoteAddr()))
	if err != nil {
		s.log.Warn("imap login failed", "user", user, "err", err)
		if errors.Is(err, mailbox.ErrAuthFailed) {
			s.no(tag, "AUTHENTICATIONFAILED", "Invalid user name or password")
		} else {
			s.no(tag, "UNAVAILABLE", "Your mail store cannot be opened right now; try again later")
		}
		return
	}
	if err := mailbox.EnsureSpecialUse(store); err != nil {
		s.log.Error("imap special-use folders", "user", user, "err", err)
		s.no(tag, "UNAVAILABLE", "Your mail store cannot be opened right now; try again later")
		return
	}
	s.user, s.store, s.state = user, store, authenticated
	s.log = s.log.With("user", user)
	s.log.Info("imap login")
	s.w.StartTagged(tag).Atom("OK").Code("CAPABILITY", s.capabilities()...).Text("Logged in").End()
}

func (s *session) authenticate(tag string, a *imapwire.Authenticate) {
	if a.Mechanism != "PLAIN" {
		s.no(tag, "CANNOT", "Only AUTHENTICATE PLAIN is offered")
		return
	}
	if !s.authAllowed() {
		s.no(tag, "PRIVACYREQUIRED", "Log in over TLS (STARTTLS or port 993)")
		return
	}
	resp := a.InitialResponse
	if resp == nil {
		s.w.StartContinuation().End()
		if s.w.Flush() != nil {
			s.state = loggedOut
			return
		}
		var err error
		resp, err = s.r.ReadSASLResponse()
		var we *imapwire.Error
		switch {
		case errors.Is(err, imapwire.ErrAuthCanceled):
			s.bad(tag, "AUTHENTICATE canceled")
			return
		case errors.As(err, &we):
			s.bad(tag, we.Msg)
			return
		case err != nil:
			s.state = loggedOut
			return
		}
	}
	// RFC 4616: [authzid] NUL authcid NUL passwd.
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || (len(parts[0]) > 0 && string(parts[0]) != string(parts[1])) {
		s.no(tag, "AUTHENTICATIONFAILED", "Invalid PLAIN response")
		return
	}
	s.login(tag, string(parts[1]), string(parts[2]))
}

func (s *session) enable(tag string, a *imapwire.Enable) {
	var done []string
	for _, c := range a.Capabilities {
		switch c {
		case "UTF8=ACCEPT", "IMAP4REV2":
			if !s.enabled[c] {
				s.enabled[c] = true
				done = append(done, c)
			}
			s.r.Config.UTF8, s.w.UTF8 = true, true
		case "CONDSTORE", "QRESYNC":
			if !s.enabled[c] {
				s.enabled[c] = true
				done = append(done, c)
			}
			s.enabled["CONDSTORE"] = true // QRESYNC implies it (RFC 7162 section 3.2.3)
		}
	}
	s.w.StartUntagged().Atom("ENABLED")
	for _, c := range done {
		s.w.Atom(c)
	}
	s.w.End()
	s.ok(tag, "ENABLE completed")
}

// String is for logs.
func (st state) String() string {
	return [...]string{"not authenticated", "authenticated", "selected", "logged out"}[st]
}

// idle is IDLE (RFC 2177, RFC 9051 section 6.3.13): updates of the selected mailbox as they
// happen, until the client sends DONE. The client's line is read on another goroutine; all
// writing stays on this one.
func (s *session) idle(tag string) {
	s.w.StartContinuation().Text("idling").End()
	if s.w.Flush() != nil {
		s.state = loggedOut
		return
	}
	s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.IdleTimeout))
	done := make(chan error, 1)
	go func() {
		line, err := s.r.ReadLine()
		if err == nil && !strings.EqualFold(strings.TrimSpace(line), "DONE") {
			err = errNotDone
		}
		done <- err
	}()
	for {
		var watch <-chan struct{}
		if s.sel != nil && s.selectedWanted() {
			watch = s.sel.watch
		}
		select {
		case <-watch:
			s.syncSelected(true)
			if s.w.Flush() != nil || s.state == loggedOut {
				// Write failed, or sync ended the session (BYE): stop the DONE reader too.
				_ = s.conn.SetReadDeadline(time.Now())
				<-done
				s.state = loggedOut
				return
			}
		case <-s.notifyWake():
			s.notifyOthers()
			if s.w.Flush() != nil {
				<-done
				s.state = loggedOut
				return
			}
		case err := <-done:
			switch {
			case err == nil:
				s.ok(tag, "IDLE terminated")
			case errors.Is(err, errNotDone):
				s.bad(tag, "Expected DONE")
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					s.bye("Autologout; idle for too long")
				}
				s.state = loggedOut
			}
			return
		}
	}
}

var errNotDone = errors.New("imapserver: IDLE ended without DONE")

// compress is COMPRESS DEFLATE (RFC 4978): both directions become a raw DEFLATE stream, each
// flush of the writer a sync flush, so that a response is never held back in the compressor.
func (s *session) compress(tag, mech string) {
	switch {
	case mech != "DEFLATE":
		s.no(tag, "CANNOT", "Only COMPRESS DEFLATE is offered")
		return
	case s.compressed:
		s.no(tag, "COMPRESSIONACTIVE", "Compression is already on")
		return
	}
	s.ok(tag, "DEFLATE active")
	if s.w.Flush() != nil {
		s.state = loggedOut
		return
	}
	// Bytes the client sent after the command are compressed already.
	pending, _ := s.br.Peek(s.br.Buffered())
	in := flate.NewReader(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), s.conn))
	fw, _ := flate.NewWriter(s.conn, flate.DefaultCompression)
	s.compressed = true
	s.setStreams(in, syncFlusher{fw})
}

// syncFlusher sync-flushes the compressor after every write it is given (one per flush of the
// session's bufio.Writer).
type syncFlusher struct{ fw *flate.Writer }

func (f syncFlusher) Write(p []byte) (int, error) {
	n, err := f.fw.Write(p)
	if err == nil {
		err = f.fw.Flush()
	}
	return n, err
}
