package imapserver

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"

	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
	imapsrv "github.com/emersion/go-imap/v2/imapserver"
)

// session is one client connection's state. See the package comment for
// the concurrency rules.
type session struct {
	srv   *Server
	front *frontConn
	conn  *imapsrv.Conn
	log   *slog.Logger

	user  string
	store mailbox.Store
	sel   *selected // nil unless a folder is selected
}

var (
	_ imapsrv.SessionIMAP4rev2      = (*session)(nil)
	_ imapsrv.SessionAppendLimit    = (*session)(nil)
	_ imapsrv.SessionUnauthenticate = (*session)(nil)
)

// Close implements imapsrv.Session.
func (s *session) Close() error {
	s.unselect()
	if s.user != "" {
		s.log.Debug("imap session closed", "user", s.user)
	}
	return nil
}

// errPrivacyRequired refuses a login in clear text from another machine
// (RFC 9051 section 6.2.3, RFC 5530 PRIVACYREQUIRED).
var errPrivacyRequired = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired,
	Text: "Log in over TLS: use STARTTLS or the implicit-TLS port"}

// Login implements imapsrv.Session (LOGIN, and AUTHENTICATE PLAIN through
// the engine's default SASL server). It is where the plaintext-login
// policy is enforced: the engine sees no TLS (see Server) and allows both.
func (s *session) Login(username, password string) error {
	if !s.front.authAllowed() {
		s.log.Warn("imap plaintext login refused", "user", username)
		return errPrivacyRequired
	}
	store, err := mailbox.AuthenticateFrom(s.srv.cfg.Auth, username, password, mailbox.ClientAddr(s.conn.NetConn().RemoteAddr()))
	if err != nil {
		s.log.Warn("imap login failed", "user", username, "err", err)
		if errors.Is(err, mailbox.ErrAuthFailed) {
			return imapsrv.ErrAuthFailed
		}
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Your mail store cannot be opened right now; try again later"}
	}
	// RFC 6154: the special-use folders exist from the first login on.
	if err := mailbox.EnsureSpecialUse(store); err != nil {
		s.log.Error("imap special-use folders", "user", username, "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
			Text: "Your mail store cannot be opened right now; try again later"}
	}
	s.user, s.store = username, store
	s.log = s.log.With("user", username)
	s.log.Info("imap login")
	return nil
}

// Unauthenticate implements imapsrv.SessionUnauthenticate (RFC 8437): back
// to the not-authenticated state, folder closed, store let go.
func (s *session) Unauthenticate() error {
	s.unselect()
	s.log.Info("imap logout without disconnect")
	s.user, s.store = "", nil
	s.log = s.srv.log.With("remote", s.front.RemoteAddr().String())
	return nil
}

// AppendLimit implements imapsrv.SessionAppendLimit (RFC 7889).
func (s *session) AppendLimit() uint32 { return s.srv.cfg.AppendLimit }

// Namespace implements imapsrv.SessionNamespace (RFC 2342): one personal
// namespace, no others.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: mailbox.Delim}}}, nil
}

// storeError maps store errors to protocol replies with response codes
// (RFC 5530) and text that tells the user what to do.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mailbox.ErrNoFolder):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such folder"}
	case errors.Is(err, mailbox.ErrFolderExists):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Folder already exists"}
	case errors.Is(err, mailbox.ErrBadName):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Invalid folder name"}
	case errors.Is(err, mailbox.ErrInboxReserved):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	case errors.Is(err, mailbox.ErrTooBig):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	case errors.Is(err, mailbox.ErrUnavailable):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "The ring did not answer in time; try again"}
	}
	return err // imapconn logs it and answers NO [SERVERBUG]
}

// trycreate is the reply for APPEND/COPY/MOVE to a missing folder
// (RFC 3501 section 6.3.11).
var trycreate = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such folder; create it first"}

func (s *session) destFolder(name string) (mailbox.Folder, error) {
	f, err := s.store.Folder(name)
	if errors.Is(err, mailbox.ErrNoFolder) {
		return nil, trycreate
	}
	return f, storeError(err)
}

// Create implements imapsrv.Session.
func (s *session) Create(name string, options *imap.CreateOptions) error {
	// RFC 3501 section 6.3.3: a trailing delimiter only declares intent
	// to create children.
	name = strings.TrimSuffix(name, string(mailbox.Delim))
	var use imap.MailboxAttr
	if options != nil && len(options.SpecialUse) > 0 {
		use = options.SpecialUse[0]
	}
	// Create missing parents so that the hierarchy stays listable.
	parts := strings.Split(name, string(mailbox.Delim))
	for i := 1; i < len(parts); i++ {
		err := s.store.Create(strings.Join(parts[:i], string(mailbox.Delim)), "")
		if err != nil && !errors.Is(err, mailbox.ErrFolderExists) {
			return storeError(err)
		}
	}
	return storeError(s.store.Create(name, use))
}

// Delete implements imapsrv.Session.
func (s *session) Delete(name string) error {
	if s.sel != nil && s.sel.folder.Info().Name == name {
		s.unselect()
	}
	return storeError(s.store.Delete(name))
}

// Rename implements imapsrv.Session.
func (s *session) Rename(oldName, newName string, _ *imap.RenameOptions) error {
	return storeError(s.store.Rename(oldName, newName))
}

// Subscribe implements imapsrv.Session.
func (s *session) Subscribe(name string) error {
	return storeError(s.store.SetSubscribed(name, true))
}

// Unsubscribe implements imapsrv.Session.
func (s *session) Unsubscribe(name string) error {
	return storeError(s.store.SetSubscribed(name, false))
}

// List implements imapsrv.Session: LIST, LSUB, LIST-EXTENDED (RFC 5258),
// SPECIAL-USE (RFC 6154) and LIST-STATUS (RFC 5819).
func (s *session) List(w *imapsrv.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if options == nil {
		options = &imap.ListOptions{}
	}
	// RFC 3501 section 6.3.8: an empty pattern asks for the delimiter.
	if len(patterns) == 1 && patterns[0] == "" {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailbox.Delim})
	}
	infos, err := s.store.Folders()
	if err != nil {
		return storeError(err)
	}
	hasChildren := func(name string) bool {
		prefix := name + string(mailbox.Delim)
		for _, fi := range infos {
			if strings.HasPrefix(fi.Name, prefix) {
				return true
			}
		}
		return false
	}
	for _, fi := range infos {
		if !slices.ContainsFunc(patterns, func(p string) bool { return imapsrv.MatchList(fi.Name, mailbox.Delim, ref, p) }) {
			continue
		}
		if options.SelectSubscribed && !fi.Subscribed {
			continue
		}
		if options.SelectSpecialUse && fi.SpecialUse == "" {
			continue
		}
		data := &imap.ListData{Mailbox: fi.Name, Delim: mailbox.Delim}
		if hasChildren(fi.Name) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if fi.Subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if fi.SpecialUse != "" {
			data.Attrs = append(data.Attrs, fi.SpecialUse)
		}
		if options.ReturnStatus != nil {
			if st, err := s.Status(fi.Name, options.ReturnStatus); err == nil {
				data.Status = st
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// Status implements imapsrv.Session (RFC 3501 section 6.3.10, RFC 8438
// SIZE, RFC 7162 HIGHESTMODSEQ).
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	f, err := s.store.Folder(name)
	if err != nil {
		return nil, storeError(err)
	}
	st, err := f.Status()
	if err != nil {
		return nil, storeError(err)
	}
	data := &imap.StatusData{Mailbox: f.Info().Name, UIDNext: st.UIDNext, UIDValidity: st.UIDValidity}
	if options.NumMessages {
		data.NumMessages = &st.Messages
	}
	if options.NumUnseen {
		data.NumUnseen = &st.Unseen
	}
	if options.NumDeleted {
		data.NumDeleted = &st.Deleted
	}
	if options.NumRecent {
		data.NumRecent = &st.Recent
	}
	if options.Size {
		data.Size = &st.Size
	}
	if options.AppendLimit {
		limit := s.srv.cfg.AppendLimit
		data.AppendLimit = &limit
	}
	return data, nil
}

// Append implements imapsrv.Session. The literal is read whole (its size
// is already bounded by AppendLimit) and stored byte for byte.
func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	f, err := s.destFolder(name)
	if err != nil {
		return nil, err
	}
	if r.Size() > int64(s.srv.cfg.AppendLimit) {
		return nil, storeError(mailbox.ErrTooBig)
	}
	raw := make([]byte, r.Size())
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, err
	}
	uid, err := f.Append(raw, options.Flags, options.Time)
	if err != nil {
		return nil, storeError(err)
	}
	s.log.Debug("imap append", "folder", name, "uid", uid, "size", len(raw))
	return &imap.AppendData{UID: uid, UIDValidity: f.Info().UIDValidity}, nil
}
