package post

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"epost/internal/appmux"
	"epost/internal/content"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/pastry"
	"epost/internal/scribe"
	"epost/internal/store"
)

// Delivery (fixes ePOST weakness 5, the one-minute presence poll):
//
//  1. The sender looks up and verifies each recipient's record (unknown or revoked: refused,
//     before anything is accepted) and stores the parts, both at once; at the same time it
//     finds the recipient's node (whereIs: a cached answer, a verified "online"
//     announcement it saw as a holder, or an anycast probe on the recipient's presence
//     topic that only the recipient's own node accepts). The parts' references are known
//     before their insert starts (content.EncryptChunked), so as soon as a recipient's
//     record is in it builds that recipient's notification, signed and sealed to them. A
//     small message is not Put: its encrypted chunks travel inside the notifications, and
//     the recipient stores them before its receipt (carry.go).
//  2. It inserts the sealed notification as a PAST TypePending object at
//     PendingKey(recipient, id) with the long pending lease, while the parts are being
//     stored (sending); the send is accepted for that recipient only once a quorum of
//     replicas acknowledged the parts and this copy durably. One replica round trip before
//     the 250, not two in a row.
//  3. Once the parts are stored it pushes the notification straight to the recipient's node
//     (mNotifyStored), or anycasts it on the presence topic when the probe found nobody: an
//     online recipient files it at once. A holder's copy (step 4) may be stored before the
//     parts, or without them when their insert failed (the send then failed, and its retry
//     uses the same ids): the recipient files a notification a holder pushed only once the
//     ring has its parts (fileOnceStored).
//  4. Every holder (replica) of a pending object subscribes to the recipient's presence topic
//     (PAST's Observer tells it what it stores, inserts and repairs alike). When the
//     recipient's node comes online it multicasts a signed "online" on its topic (again after
//     2 s, 5 s, 15 s and 1 min, in case the tree was still under repair, then every 10 min:
//     OnlineBackoff, OnlineInterval), and holders push their pending notifications straight
//     to it. A holder whose notification is still
//     held after HolderDelay anycasts it itself (the sender may have died before pushing).
//  5. The recipient decrypts, verifies the sender against the sender's CA-certified record
//     and the revocation list, and files the notification exactly once into its received
//     set: its journal on the node's disk (filed: IMAP shows it), then the INBOX log in the
//     ring (see Journal and file). Once the INBOX head naming it is quorum-acknowledged it
//     refreshes the parts' leases and deletes the pending object with a proof signed by its
//     own key (the receipt); holders move it to the trash. Until then the pending copy
//     stays, so a crash anywhere on the way means a re-delivery, which the received set
//     turns into a no-op.

// Status is the outcome of a send for one recipient.
type Status uint8

const (
	Accepted         Status = iota + 1 // stored, replicated, pending until the recipient files it
	UnknownRecipient                   // no certified record in the ring
	RevokedRecipient                   // the recipient's record is revoked
	Failed                             // could not be stored; try again (Err says why)
)

func (s Status) String() string {
	switch s {
	case Accepted:
		return "accepted"
	case UnknownRecipient:
		return "unknown-recipient"
	case RevokedRecipient:
		return "revoked-recipient"
	case Failed:
		return "failed"
	}
	return "?"
}

// Result is a send's outcome for one recipient.
type Result struct {
	To     string
	Status Status
	ID     NotificationID
	Err    error
}

// Send sends a message of parts (MIME parts; each stored once in the ring) from the local
// user from to each recipient. cb gets one Result per recipient, in order, once every
// recipient's outcome is known. "Accepted" means the notification is durably replicated.
func (u *User) Send(to []string, parts [][]byte, cb func([]Result)) {
	nids := make([]NotificationID, len(to))
	for i := range nids {
		if _, err := io.ReadFull(u.n.cfg.Rand, nids[i][:]); err != nil {
			res := make([]Result, len(to))
			for i := range res {
				res[i] = Result{To: to[i], Status: Failed, Err: err}
			}
			cb(res)
			return
		}
	}
	u.SendWithIDs(to, nids, parts, cb)
}

// SendWithIDs is Send with the notification ids chosen by the caller, one per recipient. A
// retried submission with the same ids lands on the same pending objects (PAST keeps the
// first and refuses a different one) and the recipient files each id once, so retries after
// a crash never duplicate mail.
func (u *User) SendWithIDs(to []string, nids []NotificationID, parts [][]byte, cb func([]Result)) {
	n := u.n
	n.foreground()
	fail := func(err error) {
		res := make([]Result, len(to))
		for i := range res {
			res[i] = Result{To: to[i], Status: Failed, Err: err}
		}
		cb(res)
	}
	if len(nids) != len(to) {
		fail(fmt.Errorf("post: %d ids for %d recipients", len(nids), len(to)))
		return
	}
	if len(parts) > MaxParts {
		fail(fmt.Errorf("%w: %d parts, at most %d", ErrMalformed, len(parts), MaxParts))
		return
	}
	if len(to) == 0 {
		cb([]Result{}) // nobody to send to: nothing is stored
		return
	}
	s := &sending{u: u, to: to, nids: nids, cb: cb, res: make([]Result, len(to)),
		recs: make([]*identity.Record, len(to)), sealed: make([][]byte, len(to)),
		pendDone: make([]bool, len(to)), pushed: make([]bool, len(to)), final: make([]bool, len(to))}
	for _, p := range parts {
		s.size += uint64(len(p))
	}
	// Every reference is known before anything is stored: a small message travels inside
	// the notifications (carry.go); of a larger one the small parts travel inside their
	// references (content.InlineRef: a message's header and the boundary lines around its
	// attachments are not worth objects of their own) and the rest is sealed into chunks
	// here and stored below.
	var toStore []func(func(error))
	if n.carryable(len(to), parts) {
		var err error
		if s.refs, s.carried, err = n.sealParts(parts); err != nil {
			fail(err)
			return
		}
	} else {
		s.refs = make([]content.Ref, len(parts))
		inline := n.inlineParts(parts)
		for i, p := range parts {
			if inline[i] {
				s.refs[i] = content.InlineRef(n.cfg.Ring, p)
				continue
			}
			ref, store, err := n.seal(p, nil)
			if err != nil {
				fail(err)
				return
			}
			s.refs[i] = ref
			toStore = append(toStore, store)
		}
	}
	s.partsLeft = len(toStore)
	for i, addr := range to {
		s.res[i].To = addr
		// Find the recipient's node while the record is looked up and the parts are stored,
		// so that the push, once the parts are in, is one direct message.
		if a, err := identity.NormalizeAddress(addr); err == nil {
			n.whereIs(a, nil)
		}
	}
	for i, addr := range to {
		n.LookupRecord(addr, func(rec *identity.Record, _ identity.SignedRecord, err error) {
			s.record(i, addr, rec, err)
		})
	}
	if len(toStore) == 0 {
		s.stored(nil)
	}
	for _, store := range toStore {
		store(s.stored)
	}
}

// sending is one SendWithIDs under way. The parts and every recipient's pending notification
// are stored at once: the notification names the parts by references known before either
// insert starts. A recipient is accepted once both are quorum-stored; the notification is
// pushed to the recipient only once the parts are (mNotifyStored). A holder's copy can reach
// the recipient before the parts are in, or without them if their insert failed (then the
// send failed, and a retry uses the same ids): the recipient files a notification that no
// sender pushed only once the ring has its parts (User.fileOnceStored).
type sending struct {
	u       *User
	to      []string
	nids    []NotificationID
	cb      func([]Result)
	size    uint64
	refs    []content.Ref
	carried [][]byte

	mu        sync.Mutex
	res       []Result
	recs      []*identity.Record
	sealed    [][]byte // per recipient, once its record is verified and the notification sealed
	pendDone  []bool   // the pending insert's outcome is in res
	pushed    []bool
	final     []bool
	partsLeft int
	partsDone bool
	partErr   error
	finished  int
}

// record takes recipient i's record lookup: the notification is sealed and its pending copy
// inserted at once.
func (s *sending) record(i int, addr string, rec *identity.Record, err error) {
	n := s.u.n
	var r Result
	switch {
	case errors.Is(err, ErrRevokedRecipient):
		r = Result{To: addr, Status: RevokedRecipient, Err: err}
	case errors.Is(err, ErrUnknownRecipient):
		r = Result{To: addr, Status: UnknownRecipient, Err: err}
	case err != nil:
		r = Result{To: addr, Status: Failed, Err: err}
	}
	if r.Status == RevokedRecipient || r.Status == UnknownRecipient {
		n.mu.Lock()
		n.stats.Refused++
		n.mu.Unlock()
	}
	if err != nil || rec == nil {
		if r.Status == 0 {
			r = Result{To: addr, Status: Failed, Err: errors.New("post: no record")}
		}
		s.mu.Lock()
		s.res[i], s.pendDone[i] = r, true
		s.mu.Unlock()
		s.settle()
		return
	}
	n.trace(s.nids[i], StageRecord)
	note := &Notification{ID: s.nids[i], From: s.u.addr, To: rec.Address, Time: n.now(), Size: s.size,
		Parts: s.refs, SenderRecord: s.u.record, Carried: s.carried}
	sealed, err := sealNotification(note, s.u.keys, n.cfg.Ring, rec.Keys.Encryption)
	if err != nil {
		s.mu.Lock()
		s.res[i], s.pendDone[i] = Result{To: rec.Address, Status: Failed, ID: s.nids[i], Err: err}, true
		s.mu.Unlock()
		s.settle()
		return
	}
	s.mu.Lock()
	s.recs[i], s.sealed[i] = rec, sealed
	s.mu.Unlock()
	n.insertPending(rec, s.nids[i], sealed, func(r Result) {
		s.mu.Lock()
		s.res[i], s.pendDone[i] = r, true
		s.mu.Unlock()
		s.settle()
	})
	s.settle() // pushes at once if the parts are in
}

// stored takes the outcome of one part's insert.
func (s *sending) stored(err error) {
	s.mu.Lock()
	if err != nil && s.partErr == nil {
		s.partErr = err
	}
	if s.partsLeft > 0 {
		s.partsLeft--
	}
	done := s.partsLeft == 0 && !s.partsDone
	if done {
		s.partsDone = true
	}
	partErr := s.partErr
	s.mu.Unlock()
	if done && partErr == nil {
		for _, id := range s.nids {
			s.u.n.trace(id, StageParts)
		}
	}
	s.settle()
}

// settle pushes the notifications whose parts are in and reports once every recipient's
// outcome is known.
func (s *sending) settle() {
	n := s.u.n
	var push []int
	report := false
	s.mu.Lock()
	for i := range s.to {
		if s.partsDone && s.partErr == nil && s.sealed[i] != nil && !s.pushed[i] {
			s.pushed[i] = true
			push = append(push, i)
		}
		if s.partsDone && s.pendDone[i] && !s.final[i] {
			s.final[i] = true
			if s.partErr != nil && s.res[i].Status == Accepted {
				s.res[i] = Result{To: s.res[i].To, Status: Failed, ID: s.nids[i], Err: s.partErr}
			}
			s.finished++
			report = s.finished == len(s.to)
		}
	}
	s.mu.Unlock()
	for _, i := range push {
		n.trace(s.nids[i], StagePushed)
		n.push(&postMsg{Type: mNotifyStored, Recipient: s.recs[i].Address, ID: s.nids[i], Sealed: s.sealed[i]})
	}
	if report {
		s.mu.Lock()
		res := slices.Clone(s.res)
		s.mu.Unlock()
		s.cb(res)
	}
}

// storePending inserts a sealed notification whose parts are stored (or carried) as rec's
// pending object and pushes it; cb hears Accepted once the insert is quorum-acknowledged.
func (n *Node) storePending(rec *identity.Record, id NotificationID, sealed []byte, cb func(Result)) {
	n.insertPending(rec, id, sealed, cb)
	// Push at once, concurrently with the pending insert: the parts are stored, so the
	// recipient may file it. A push that is lost or refused is covered by the pending copy,
	// which its holders push when the recipient announces itself or offer after HolderDelay.
	n.trace(id, StagePushed)
	n.push(&postMsg{Type: mNotifyStored, Recipient: rec.Address, ID: id, Sealed: sealed})
}

// insertPending inserts a sealed notification as rec's pending object; cb hears Accepted
// once the insert is quorum-acknowledged.
func (n *Node) insertPending(rec *identity.Record, id NotificationID, sealed []byte, cb func(Result)) {
	obj := past.NewPending(n.cfg.Ring, rec.Address, rec.Keys.Signing, id, sealed, n.now().Add(n.cfg.PendingLease))
	n.mu.Lock()
	n.stats.Sent++
	n.mu.Unlock()
	n.st.Insert(obj, func(r past.InsertResult) {
		if r.Err != nil && !storedBefore(r) {
			cb(Result{To: rec.Address, Status: Failed, ID: id, Err: r.Err})
			return
		}
		n.mu.Lock()
		n.stats.Accepted++
		n.mu.Unlock()
		n.trace(id, StageAccepted)
		cb(Result{To: rec.Address, Status: Accepted, ID: id})
	})
}

// storedBefore reports whether a pending insert that failed found the notification id taken
// on enough replicas that, with those that took this copy, a quorum holds a notification
// under the id: an earlier attempt of the same message (sealed anew, so with other bytes)
// was stored. Ids are 128 random or secret-derived bits, so a taken id is this message's.
func storedBefore(r past.InsertResult) bool {
	held := r.Acked
	for _, ref := range r.Refusals {
		if errors.Is(ref.Err, past.ErrConflict) {
			held++
		}
	}
	return r.Needed > 0 && held >= r.Needed && held > r.Acked
}

// push sends a notification to its recipient's node: straight to it when this node hosts the
// recipient or knows (or is finding out, whereIs) where it is, else by anycast on the
// recipient's presence topic, where only the recipient's node accepts it.
func (n *Node) push(m *postMsg) {
	n.mu.Lock()
	_, local := n.users[m.Recipient]
	n.mu.Unlock()
	if local {
		n.receive(m)
		return
	}
	n.whereIs(m.Recipient, func(h pastry.Handle, ok bool) {
		if ok {
			n.ov.Send(h, m.encode())
			return
		}
		// Nobody took the probe: the recipient is probably offline, but the tree may be
		// under repair. Anycasting the notification itself costs little and covers that.
		_ = n.topics.Anycast(n.presence(m.Recipient), m.encode(), func(r scribe.AnycastResult) {
			n.sawMember(m.Recipient, r)
		})
	})
}

// whereIs tells cb (if not nil) which node hosts addr's user: at once from the cache, else
// once an anycast probe on addr's presence topic is answered (one probe per address at a
// time; ok is false when no member took it).
func (n *Node) whereIs(addr string, cb func(h pastry.Handle, ok bool)) {
	n.mu.Lock()
	if s, ok := n.seen[addr]; ok && n.now().Before(s.until) {
		n.mu.Unlock()
		if cb != nil {
			cb(s.h, true)
		}
		return
	}
	waiting, probing := n.where[addr]
	if cb != nil {
		waiting = append(waiting, cb)
	}
	n.where[addr] = waiting
	n.mu.Unlock()
	if probing {
		return
	}
	m := &postMsg{Type: mWhere, Recipient: addr}
	err := n.topics.Anycast(n.presence(addr), m.encode(), func(r scribe.AnycastResult) {
		h, ok := n.sawMember(addr, r)
		n.mu.Lock()
		ws := n.where[addr]
		delete(n.where, addr)
		n.mu.Unlock()
		for _, w := range ws {
			w(h, ok)
		}
	})
	if err != nil {
		n.mu.Lock()
		ws := n.where[addr]
		delete(n.where, addr)
		n.mu.Unlock()
		for _, w := range ws {
			w(pastry.Handle{}, false)
		}
	}
}

// sawMember caches the node that accepted an anycast for addr (the answer's authenticated
// sender, not a claim in a message).
func (n *Node) sawMember(addr string, r scribe.AnycastResult) (pastry.Handle, bool) {
	if r.Err != nil || r.Member.ID.IsZero() {
		return pastry.Handle{}, false
	}
	n.mu.Lock()
	n.seen[addr] = seenAt{h: r.Member, until: n.now().Add(n.cfg.PresenceCacheTTL)}
	n.mu.Unlock()
	return r.Member, true
}

type seenAt struct {
	h     pastry.Handle
	until time.Time
}

// subscribe joins addr's presence topic once (as member for a local user, as holder, or both).
func (n *Node) subscribe(addr string) {
	n.mu.Lock()
	if n.subs[addr] {
		n.mu.Unlock()
		return
	}
	n.subs[addr] = true
	n.mu.Unlock()
	if err := n.topics.Subscribe(n.presence(addr), presenceApp{n: n, addr: addr}); err != nil {
		n.cfg.Log.Warn("post: presence subscribe failed", "address", addr, "err", err)
	}
}

// unsubscribeIfIdle leaves addr's topic when this node neither hosts the user nor holds
// anything for them.
func (n *Node) unsubscribeIfIdle(addr string) {
	n.mu.Lock()
	_, local := n.users[addr]
	idle := !local && len(n.held[addr]) == 0 && n.subs[addr]
	if idle {
		delete(n.subs, addr)
		delete(n.held, addr)
	}
	n.mu.Unlock()
	if idle {
		_ = n.topics.Unsubscribe(n.presence(addr))
	}
}

// presenceApp is the Scribe application of one presence topic on this node.
type presenceApp struct {
	n    *Node
	addr string
}

// Deliver gets "online" announcements: holders push what they hold.
func (a presenceApp) Deliver(topic ids.Key, payload []byte) {
	m, err := decodePostMsg(payload)
	if err != nil || m.Type != mOnline || m.Recipient != a.addr {
		return
	}
	a.n.onOnline(m)
}

// AnycastAccept takes a pushed notification if this node hosts the recipient and it opens
// and verifies.
func (a presenceApp) AnycastAccept(topic ids.Key, payload []byte) bool {
	m, err := decodePostMsg(payload)
	if err != nil || m.Recipient != a.addr {
		return false
	}
	switch m.Type {
	case mNotify, mNotifyStored:
		return a.n.receive(m)
	case mWhere:
		a.n.mu.Lock()
		u, ok := a.n.users[m.Recipient]
		ok = ok && u.online
		a.n.mu.Unlock()
		return ok
	}
	return false
}

// App returns the node's appmux application (tag appmux.TagPost): direct pushes from holders.
func (n *Node) App() appmux.App { return postApp{n} }

type postApp struct{ n *Node }

func (a postApp) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	return payload, true
}

func (a postApp) HandleEvent(e pastry.Event) bool {
	if (e.Kind != pastry.EventDirect && e.Kind != pastry.EventDeliver) || len(e.Payload) == 0 || e.Payload[0] != appmux.TagPost {
		return false
	}
	m, err := decodePostMsg(e.Payload)
	if err != nil || (m.Type != mNotify && m.Type != mNotifyStored) {
		a.n.mu.Lock()
		a.n.stats.Rejected++
		a.n.mu.Unlock()
		return true
	}
	a.n.receive(m)
	return true
}

// receive handles a notification pushed to this node; it reports whether a local user took
// it (it verified, and is filed or being filed).
func (n *Node) receive(m *postMsg) bool {
	n.mu.Lock()
	u, ok := n.users[m.Recipient]
	n.mu.Unlock()
	if !ok {
		return false
	}
	reject := func(err error) {
		n.mu.Lock()
		n.stats.Rejected++
		n.mu.Unlock()
		n.cfg.Log.Warn("post: notification rejected", "user", u.addr, "err", err)
	}
	note, body, sig, err := openSealed(m.Sealed, m.ID, u.keys, u.addr, n.cfg.Ring)
	if err != nil {
		reject(err)
		return false
	}
	if _, err := carriedObjects(n.cfg.Ring, note.Parts, note.Carried); err != nil {
		reject(err)
		return false
	}
	senderRing, err := recordRing(note.SenderRecord)
	if err != nil {
		reject(err)
		return false
	}
	if senderRing == n.cfg.Ring {
		if err := verifySender(note, body, sig, n.senderCheck(), n.now()); err != nil {
			reject(err)
			return false
		}
		n.trace(note.ID, StageReceived)
		if m.Type == mNotifyStored {
			u.file(note, n.cfg.MaxFilingRetries)
		} else {
			u.fileOnceStored(note, n.cfg.MaxFilingRetries)
		}
		return true
	}
	// A sender of another ring: its ring's trust comes from the directory, asynchronously.
	if n.cfg.ForeignSender == nil || len(note.Carried) > 0 {
		reject(fmt.Errorf("%w: %s is of ring %s and this node takes no mail from other rings", ErrUnknownSender, note.From, senderRing.Short()))
		return false
	}
	u.verifyForeign(note, body, sig, senderRing, foreignTries)
	return true
}

// foreignTries bounds the directory questions for one foreign sender's notification (a
// temporary failure is asked again after RetryDelay, doubling).
const foreignTries = 5

// ErrForeignRefused is what Config.ForeignSender wraps when the sender's address does not
// belong to the ring its record names (a permanent refusal); other errors are retried.
var ErrForeignRefused = errors.New("post: the sender's domain does not belong to the sender's ring")

// verifyForeign checks a sender of another ring through the directory and files the
// notification once it verifies.
func (u *User) verifyForeign(note *Notification, body, sig []byte, senderRing ids.RingID, tries int) {
	n := u.n
	reject := func(err error) {
		n.mu.Lock()
		n.stats.Rejected++
		n.mu.Unlock()
		n.cfg.Log.Warn("post: notification rejected", "user", u.addr, "err", fmt.Errorf("%w: sender %s of ring %s: %v", ErrUnknownSender, note.From, senderRing.Short(), err))
	}
	n.cfg.ForeignSender(note.From, senderRing, func(t *RingTrust, err error) {
		if err == nil && (t == nil || t.Ring != senderRing) {
			err = fmt.Errorf("%w: the directory names no trust for ring %s", ErrForeignRefused, senderRing.Short())
		}
		if err != nil && !errors.Is(err, ErrForeignRefused) && tries > 1 && !n.stopped() {
			// The directory could not tell yet (DNS, the gateways): ask again later; the
			// holders keep the pending copy meanwhile.
			n.after(n.cfg.RetryDelay*time.Duration(1<<(foreignTries-tries)), func() { u.verifyForeign(note, body, sig, senderRing, tries-1) })
			return
		}
		if err == nil {
			err = verifyForeign(note, body, sig, t, n.recCache, n.now())
		}
		if err != nil {
			reject(err)
			return
		}
		if !u.current() { // taken off this node meanwhile
			return
		}
		note.foreign = true
		n.trace(note.ID, StageReceived)
		u.file(note, n.cfg.MaxFilingRetries)
	})
}

// fileOnceStored files a notification of this ring that a holder pushed, once the ring has
// its parts. Its sender stores the pending copy and the parts at once (sending), so a copy
// can arrive before its parts are in, or without them for good if their insert failed (the
// sender was then not told it was accepted). Every chunk of its stored parts is asked of its
// root (a lease refresh, which the receipt sends anyway); while one is missing it is
// asked again after RetryDelay, doubling, tries times, and then left with its holders, who
// push it again at the recipient's next announcement. A notification filed already (or
// carried, or of inline parts only) needs no question.
func (u *User) fileOnceStored(note *Notification, tries int) {
	n := u.n
	var keys []ids.Key
	if len(note.Carried) == 0 {
		for _, p := range note.Parts {
			keys = append(keys, refKeys(p)...)
		}
	}
	n.mu.Lock()
	known := u.recv[note.ID] || u.filing[note.ID]
	if known || len(keys) == 0 {
		n.mu.Unlock()
		u.file(note, tries)
		return
	}
	if u.checking[note.ID] {
		n.mu.Unlock()
		return // another holder's push of it is being checked
	}
	u.checking[note.ID] = true
	n.mu.Unlock()
	u.checkParts(note, keys, tries)
}

// checkParts is fileOnceStored's question to the ring, asked again while parts are missing.
func (u *User) checkParts(note *Notification, keys []ids.Key, tries int) {
	n := u.n
	n.st.Refresh(keys, n.now().Add(n.cfg.ContentLease), func(err error) {
		if err == nil {
			n.mu.Lock()
			delete(u.checking, note.ID)
			n.mu.Unlock()
			u.file(note, tries)
			return
		}
		n.mu.Lock()
		n.stats.PartsMissing++
		n.mu.Unlock()
		if tries <= 1 || n.stopped() || !u.current() {
			n.mu.Lock()
			delete(u.checking, note.ID)
			n.mu.Unlock()
			n.cfg.Log.Warn("post: a pending notification's parts are not in the ring; left with its holders", "user", u.addr, "id", note.ID, "err", err)
			return
		}
		n.after(n.cfg.RetryDelay*time.Duration(1<<min(n.cfg.MaxFilingRetries-tries, 10)), func() { u.checkParts(note, keys, tries-1) })
	})
}

// file puts a verified notification into the user's received set unless it is there
// already. With a journal it is filed once the journal has it on disk, and the INBOX head
// write and the receipt follow (see Journal for why that is safe); without one it is filed
// once the INBOX head naming it is quorum-acknowledged. Either way the receipt (the drop of
// the pending copy) is sent only after the INBOX head write.
func (u *User) file(note *Notification, tries int) {
	n := u.n
	n.foreground()
	objs, err := carriedObjects(n.cfg.Ring, note.Parts, note.Carried) // checked by receive
	if err != nil {
		return
	}
	n.mu.Lock()
	inbox := u.logs[InboxLog]
	if inbox == nil || !inbox.loaded {
		u.waiting = append(u.waiting, func() { u.file(note, tries) })
		n.mu.Unlock()
		return
	}
	if u.recv[note.ID] {
		n.stats.Duplicates++
		logged := u.logged[note.ID]
		n.mu.Unlock()
		if logged {
			// A holder still has it: tell it again, once its carried chunks are stored
			// (they may not be, if this node lost its disk before it stored them).
			n.storeCarried(objs, tries, func(err error) {
				if err == nil {
					u.drop(note.ID)
				}
			})
		} // else its INBOX head write is under way, and the receipt follows it
		return
	}
	if u.filing[note.ID] {
		n.stats.Duplicates++
		n.mu.Unlock()
		return
	}
	u.filing[note.ID] = true
	j := u.journal
	n.mu.Unlock()
	f := &Filed{User: u.addr, ID: note.ID, From: note.From, Time: note.Time, Size: note.Size, Parts: note.Parts, FiledAt: n.now(), Foreign: note.foreign}
	entry := EncodeFiled(f)
	if j != nil {
		recorded := func(err error) bool {
			if err != nil {
				n.cfg.Log.Warn("post: received journal write failed; filing through the ring log", "user", u.addr, "err", err)
				return false
			}
			// In the received set now (a re-delivery is a duplicate), but reported only once
			// Entries shows the entry, so that whoever OnFiled wakes finds it.
			n.holdCarried(objs)
			u.received(f.ID)
			var once sync.Once
			u.logEntry(note.ID, entry, note.Parts, objs, tries, func() { once.Do(func() { u.reportFiled(f) }) })
			return true
		}
		if aj, ok := j.(AsyncJournal); ok {
			// The disk's wait is not the event loop's (AsyncJournal).
			aj.RecordAsync(note.ID, entry, note.Carried, func(err error) {
				if !recorded(err) {
					u.fileWithoutJournal(note, f, entry, objs, tries)
				}
			})
			return
		}
		if recorded(j.Record(note.ID, entry, note.Carried)) {
			return
		}
	}
	u.fileWithoutJournal(note, f, entry, objs, tries)
}

// fileWithoutJournal files a notification through the ring's INBOX log alone (no journal, or
// its write failed).
func (u *User) fileWithoutJournal(note *Notification, f *Filed, entry []byte, objs []past.Object, tries int) {
	n := u.n
	fail := func() {
		n.mu.Lock()
		delete(u.filing, note.ID)
		n.mu.Unlock()
		if tries > 1 {
			n.after(n.cfg.RetryDelay, func() { u.file(note, tries-1) })
		}
	}
	// Without a journal the carried chunks are stored before the entry that names them.
	n.storeCarried(objs, 1, func(err error) {
		if err != nil {
			fail()
			return
		}
		u.Append(InboxLog, entry, func(_ uint64, err error) {
			if err != nil {
				fail()
				return
			}
			f.FiledAt = n.now()
			u.received(f.ID)
			u.reportFiled(f) // the head write is acknowledged: Entries shows it
			u.afterLogged(note.ID, note.Parts, nil)
		})
	})
}

// received adds id to the received set.
func (u *User) received(id NotificationID) {
	n := u.n
	n.mu.Lock()
	delete(u.filing, id)
	u.recv[id] = true
	n.stats.Filed++
	n.mu.Unlock()
}

// reportFiled tells OnFiled; Entries(InboxLog) shows f's entry already.
func (u *User) reportFiled(f *Filed) {
	n := u.n
	n.mu.Lock()
	onFiled := n.OnFiled
	n.mu.Unlock()
	n.trace(f.ID, StageFiled)
	if onFiled != nil {
		onFiled(*f)
	}
}

// logEntry appends a journaled entry to INBOX (locally visible, Entries shows it, once the
// entries queued before it are: then shown runs) and sends the receipt once the head naming
// it is acknowledged. If every try fails the entry stays in the journal, the pending copy
// stays with its holders, and the next start appends it again. shown may be nil; it must be
// safe to call more than once (each try may show the entry).
func (u *User) logEntry(id NotificationID, entry []byte, parts []content.Ref, carried []past.Object, tries int, shown func()) {
	n := u.n
	u.appendLocal(InboxLog, entry, shown, func(_ uint64, err error) {
		if err != nil {
			if tries > 1 {
				n.after(n.cfg.RetryDelay, func() { u.logEntry(id, entry, parts, carried, tries-1, shown) })
			}
			return
		}
		u.afterLogged(id, parts, carried)
	})
}

// afterLogged runs once id's INBOX entry is in the ring: the chunks its notification carried
// (held on this node, see holdCarried) are stored in the ring, then the journal forgets it,
// the parts' leases are extended and the holders are told to drop the pending copy. If the
// chunks cannot be stored the entry stays in the journal and the pending copy with its
// holders: the next start tries again.
func (u *User) afterLogged(id NotificationID, parts []content.Ref, carried []past.Object) {
	n := u.n
	if len(carried) > 0 {
		n.storeCarried(carried, n.cfg.MaxFilingRetries, func(err error) {
			if err != nil {
				n.cfg.Log.Warn("post: cannot store a message's carried chunks; the next start tries again", "user", u.addr, "err", err)
				return
			}
			u.logged1(id, parts, false) // just stored with a fresh lease
			n.releaseCarried(carried)
		})
		return
	}
	u.logged1(id, parts, true)
}

// logged1 is afterLogged once the carried chunks, if any, are stored; refresh extends the
// parts' leases.
func (u *User) logged1(id NotificationID, parts []content.Ref, refresh bool) {
	n := u.n
	n.mu.Lock()
	u.logged[id] = true
	j := u.journal
	n.mu.Unlock()
	n.trace(id, StageLogged)
	if j != nil {
		if err := j.Forget(id); err != nil {
			n.cfg.Log.Warn("post: received journal", "user", u.addr, "err", err)
		}
	}
	var keys []ids.Key
	for _, p := range parts {
		keys = append(keys, refKeys(p)...)
	}
	if len(keys) > 0 && refresh {
		n.st.Refresh(keys, n.now().Add(n.cfg.ContentLease), nil)
	}
	u.keepRefs(parts)
	u.drop(id)
}

// drop tells the holders to move the pending copy to the trash (the receipt).
func (u *User) drop(id NotificationID) {
	key := past.PendingKey(u.n.cfg.Ring, u.addr, id)
	proof, err := past.DropProof(u.keys, key)
	if err != nil {
		return
	}
	u.n.trace(id, StageDropped)
	u.n.st.Delete(key, proof, nil)
}

// Holder side. PAST's observer calls run inside PAST's lock: queue them and act later.

// Stored implements past.Observer.
func (n *Node) Stored(meta store.Meta) {
	if past.Type(meta.Type) != past.TypePending {
		return
	}
	n.queueObserved(observed{meta: meta})
}

// Removed implements past.Observer.
func (n *Node) Removed(key ids.Key) {
	n.queueObserved(observed{meta: store.Meta{Key: key}, removed: true})
}

func (n *Node) queueObserved(o observed) {
	n.mu.Lock()
	first := len(n.observed) == 0
	n.observed = append(n.observed, o)
	n.mu.Unlock()
	if first {
		n.after(0, n.drainObserved)
	}
}

func (n *Node) drainObserved() {
	n.mu.Lock()
	obs := n.observed
	n.observed = nil
	n.mu.Unlock()
	for _, o := range obs {
		if o.removed {
			n.mu.Lock()
			var addr string
			for a, keys := range n.held {
				if keys[o.meta.Key] {
					delete(keys, o.meta.Key)
					addr = a
					break
				}
			}
			n.mu.Unlock()
			if addr != "" {
				n.unsubscribeIfIdle(addr)
			}
			continue
		}
		p, err := past.DecodePending(o.meta.Aux)
		if err != nil {
			continue
		}
		n.hold(p.Recipient, o.meta.Key)
	}
}

// hold indexes a pending object and subscribes to its recipient's presence.
func (n *Node) hold(addr string, key ids.Key) {
	n.mu.Lock()
	if n.held[addr] == nil {
		n.held[addr] = map[ids.Key]bool{}
	}
	n.held[addr][key] = true
	n.mu.Unlock()
	n.subscribe(addr)
	n.after(n.cfg.HolderDelay, func() { n.offer(addr, key) })
}

// RebuildHolderIndex re-reads the pending objects in this node's store (after a restart).
func (n *Node) RebuildHolderIndex() {
	for _, meta := range n.st.LocalMetas(past.TypePending) {
		if p, err := past.DecodePending(meta.Aux); err == nil {
			n.hold(p.Recipient, meta.Key)
		}
	}
}

// offer anycasts a notification this node still holds, for when the sender died before
// pushing it or its push was lost.
func (n *Node) offer(addr string, key ids.Key) {
	obj, ok := n.st.LocalGet(key)
	if !ok {
		return
	}
	p, err := past.DecodePending(obj.Aux)
	if err != nil {
		return
	}
	n.mu.Lock()
	n.stats.HolderOffers++
	n.mu.Unlock()
	m := &postMsg{Type: mNotify, Recipient: addr, ID: p.ID, Sealed: obj.Payload}
	_ = n.topics.Anycast(n.presence(addr), m.encode(), func(scribe.AnycastResult) {})
}

// onOnline pushes what this node holds for the announcing recipient, if the announcement is
// signed by the key the pending objects name and is fresh.
func (n *Node) onOnline(m *postMsg) {
	if d := n.now().Sub(time.Unix(0, m.Time)); d > n.cfg.OnlineMaxAge || d < -n.cfg.OnlineMaxAge {
		return
	}
	n.mu.Lock()
	keys := make([]ids.Key, 0, len(n.held[m.Recipient]))
	for k := range n.held[m.Recipient] {
		keys = append(keys, k)
	}
	n.mu.Unlock()
	slices.SortFunc(keys, func(a, b ids.Key) int { return ids.Cmp(a.ID, b.ID) }) // deterministic order
	msg := onlineMessage(m.Recipient, m.Handle, m.Time)
	var verifiedKey []byte
	self := n.ov.Self()
	for _, k := range keys {
		obj, ok := n.st.LocalGet(k)
		if !ok {
			n.mu.Lock()
			delete(n.held[m.Recipient], k)
			n.mu.Unlock()
			continue
		}
		p, err := past.DecodePending(obj.Aux)
		if err != nil {
			continue
		}
		if !bytes.Equal(verifiedKey, p.RecipientKey) {
			if identity.Verify(p.RecipientKey, contextOnline, msg, m.Sig) != nil {
				continue
			}
			verifiedKey = p.RecipientKey
			// Signed by the recipient: mail this node sends them goes straight there too.
			n.mu.Lock()
			n.seen[m.Recipient] = seenAt{h: m.Handle, until: n.now().Add(n.cfg.PresenceCacheTTL)}
			n.mu.Unlock()
		}
		push := &postMsg{Type: mNotify, Recipient: m.Recipient, ID: p.ID, Sealed: obj.Payload}
		n.mu.Lock()
		n.stats.Pushed++
		n.mu.Unlock()
		if m.Handle.ID == self.ID {
			n.receive(push)
		} else {
			n.ov.Send(m.Handle, push.encode())
		}
	}
	n.unsubscribeIfIdle(m.Recipient)
}

func sortBackup(es []backupEntry) {
	slices.SortFunc(es, func(a, b backupEntry) int { return ids.Cmp(a.Head.ID, b.Head.ID) })
}

func unmarshalRef(b []byte) (content.Ref, error) { return content.UnmarshalRef(b) }
