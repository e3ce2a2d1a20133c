package imapserver

import (
	"slices"
	"strconv"

	"epost/internal/imapwire"
	"epost/internal/mailbox"
)

// QUOTA (RFC 9208). A user's mail has one quota root, named "" as in the RFC's examples, that
// governs every mailbox (section 3.2: root names are opaque to clients). The mail store has no
// per-user limit of its own (mailstore, post and the node keep none), so the limits are the
// server's: Config.StorageQuota and Config.MessageQuota. Usage is computed from the mailboxes
// when asked (the store keeps each folder's size and count), never cached.
//
// SETQUOTA is not offered (no QUOTASET capability, section 4.1.3): the ring's administrator sets
// limits, not the user's mail client, and section 3.2 has clients prepared for it to fail.
//
// Only APPEND and COPY add to the usage through IMAP; both are refused with NO [OVERQUOTA]
// (section 4.3.1) when they would take the user over a limit. Mail delivered by the ring is
// not refused here: the limit is what IMAP reports and enforces, not a delivery policy.

const (
	defaultStorageQuota = 10 << 30 // bytes
	defaultMessageQuota = 1_000_000
)

// quotaRoot is the one quota root's name.
const quotaRoot = ""

// quotaLimits returns the limits in force: storage in bytes and a message count, each 0 when
// there is none.
func (s *session) quotaLimits() (storage, messages int64) {
	storage, messages = s.srv.cfg.StorageQuota, s.srv.cfg.MessageQuota
	if storage == 0 {
		storage = defaultStorageQuota
	}
	if messages == 0 {
		messages = defaultMessageQuota
	}
	return max(storage, 0), max(messages, 0)
}

// quotaCaps are the capabilities of QUOTA: one QUOTA=RES-<name> per resource (section 3.1.1).
func (s *session) quotaCaps() []string {
	caps := []string{"QUOTA"}
	storage, messages := s.quotaLimits()
	if storage > 0 {
		caps = append(caps, "QUOTA=RES-STORAGE")
	}
	if messages > 0 {
		caps = append(caps, "QUOTA=RES-MESSAGE")
	}
	return caps
}

// usage sums the user's mailboxes: bytes and messages.
func (s *session) usage() (bytes, messages int64, err error) {
	infos, err := s.store.Folders()
	if err != nil {
		return 0, 0, err
	}
	for _, fi := range infos {
		f, err := s.store.Folder(fi.Name)
		if err != nil {
			continue // deleted since the listing
		}
		st, err := f.Status()
		if err != nil {
			continue
		}
		bytes += st.Size
		messages += int64(st.Messages)
	}
	return bytes, messages, nil
}

// kib is a byte count in STORAGE's unit, 1024 octets, rounded up (section 5.1).
func kib(n int64) uint64 { return uint64((n + 1023) / 1024) }

// writeQuota writes "* QUOTA "" (STORAGE used limit MESSAGE used limit)" (section 4.2.1), or
// nothing when no resource has a limit: quota-list needs at least one resource (section 7).
func (s *session) writeQuota() error {
	storage, messages := s.quotaLimits()
	if storage == 0 && messages == 0 {
		return nil
	}
	used, count, err := s.usage()
	if err != nil {
		return err
	}
	w := s.w.StartUntagged().Atom("QUOTA").AString(quotaRoot).Open()
	if storage > 0 {
		w.Atom("STORAGE").Number(kib(used)).Number(kib(storage))
	}
	if messages > 0 {
		w.Atom("MESSAGE").Number(uint64(count)).Number(uint64(messages))
	}
	w.Close().End()
	return nil
}

// getQuotaRoot is GETQUOTAROOT (section 4.1.2). The mailbox need not exist: a client may ask
// which roots a mailbox it is about to create would fall under.
func (s *session) getQuotaRoot(tag string, a *imapwire.GetQuotaRoot) {
	storage, messages := s.quotaLimits()
	w := s.w.StartUntagged().Atom("QUOTAROOT").Mailbox(canonical(a.Mailbox))
	if storage > 0 || messages > 0 {
		w.AString(quotaRoot)
	}
	w.End()
	if err := s.writeQuota(); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.ok(tag, "GETQUOTAROOT completed")
}

// getQuota is GETQUOTA (section 4.1.1).
func (s *session) getQuota(tag string, a *imapwire.GetQuota) {
	storage, messages := s.quotaLimits()
	if a.Root != quotaRoot || storage == 0 && messages == 0 {
		s.no(tag, "", "No such quota root; GETQUOTAROOT names the roots of a mailbox")
		return
	}
	if err := s.writeQuota(); err != nil {
		s.storeNo(tag, err)
		return
	}
	s.ok(tag, "GETQUOTA completed")
}

// setQuota is SETQUOTA, which this server does not offer (no QUOTASET, section 4.1.3).
func (s *session) setQuota(tag string) {
	s.no(tag, "NOPERM", "Quotas are set by the ring's administrator, not from a mail client")
}

// overQuota reports whether adding messages of the given sizes would take the user over a
// limit, and if so answers NO [OVERQUOTA] (section 4.3.1). A store error is answered too.
func (s *session) overQuota(tag string, sizes []int64) bool {
	storage, messages := s.quotaLimits()
	if storage == 0 && messages == 0 || len(sizes) == 0 {
		return false
	}
	used, count, err := s.usage()
	if err != nil {
		s.storeNo(tag, err)
		return true
	}
	var add int64
	for _, n := range sizes {
		add += n
	}
	switch {
	case storage > 0 && used+add > storage:
		s.no(tag, "OVERQUOTA", "Your mail is over its storage quota of "+strconv.FormatUint(kib(storage), 10)+" KiB; expunge some messages first")
		return true
	case messages > 0 && count+int64(len(sizes)) > messages:
		s.no(tag, "OVERQUOTA", "Your mail is over its quota of "+strconv.FormatInt(messages, 10)+" messages; expunge some first")
		return true
	}
	return false
}

// appendOverQuota is overQuota for the messages of an APPEND.
func (s *session) appendOverQuota(tag string, datas [][]byte) bool {
	sizes := make([]int64, len(datas))
	for i, d := range datas {
		sizes[i] = int64(len(d))
	}
	return s.overQuota(tag, sizes)
}

// copyOverQuota is overQuota for the messages of a COPY (MOVE stays within the one root, so it
// changes no usage).
func (s *session) copyOverQuota(tag string, uids []mailbox.UID) bool {
	if storage, messages := s.quotaLimits(); storage == 0 && messages == 0 {
		return false
	}
	list, err := s.sel.folder.List()
	if err != nil {
		s.storeNo(tag, err)
		return true
	}
	var sizes []int64
	for _, m := range list {
		if _, ok := slices.BinarySearch(uids, m.UID); ok {
			sizes = append(sizes, m.Size)
		}
	}
	return s.overQuota(tag, sizes)
}

// deletedStorage is STATUS DELETED-STORAGE (section 4.1.4): what an EXPUNGE would free, the
// sum of the RFC822.SIZE of the \Deleted messages (the value the section allows), in STORAGE's
// unit of 1024 octets.
func deletedStorage(f mailbox.Folder) (uint64, error) {
	list, err := f.List()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, m := range list {
		if slices.Contains(m.Flags, mailbox.FlagDeleted) {
			n += m.Size
		}
	}
	return kib(n), nil
}
