package mailstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailbox"
	"epost/internal/post"
	"epost/internal/smtpserver"
)

// Submitter returns the SMTP server's Submitter: it stores the message's pieces (split as
// for folders, so the bytes the recipient reads are the bytes submitted, and attachments
// are shared with the sender's own copy) and sends a POST notification to each ring
// recipient, returning once POST reports every recipient accepted (durably replicated).
func (us *Users) Submitter() smtpserver.Submitter { return submitter{us} }

type submitter struct{ us *Users }

// Submit implements smtpserver.Submitter. Recipients POST could not reach are retried with
// the same notification ids (a retry lands on the same pending objects, and the recipient
// files an id once), until ctx or the timeout ends: then the error is transient (451) and
// the client retries. Unknown and revoked recipients (normally refused at RCPT already)
// are permanent: all of them refused is ErrRejected (554); some refused while others
// accepted is a 250 plus a bounce notice in the sender's INBOX, since SMTP cannot report
// per-recipient results after DATA (RFC 5321 section 3.3).
func (s submitter) Submit(ctx context.Context, env smtpserver.Envelope, raw []byte) error {
	us := s.us
	if int64(len(raw)) > us.cfg.MaxMessageBytes {
		return fmt.Errorf("mailstore: message of %d bytes, at most %d: %w", len(raw), us.cfg.MaxMessageBytes, mailbox.ErrTooBig)
	}
	from, err := identity.NormalizeAddress(env.From)
	if err != nil {
		return fmt.Errorf("mailstore: sender %q: %w", env.From, smtpserver.ErrRejected)
	}
	sess := us.session(from)
	if sess == nil {
		return fmt.Errorf("mailstore: %s has no running mail session; log in again", from)
	}
	if len(env.To) == 0 {
		return nil
	}
	// A small message is one piece: one content object (and one fsync per replica) instead
	// of a header piece and a body piece; splitting pays off for attachments sent again.
	pieces := [][]byte{raw}
	if len(raw) >= wholeBelow {
		pieces = splitMessage(raw)
	}
	if len(pieces) > post.MaxParts {
		pieces = [][]byte{raw} // cannot happen with maxSplitParts; be safe anyway
	}
	pieces = cloneAll(pieces) // Submit must not keep raw; POST may hold parts while retrying

	// Recipients of other rings go through this ring's gateways, one sealed bundle per ring.
	var local []string
	remote := map[ids.RingID][]string{}
	for _, a := range env.To {
		if r, ok := s.remoteRing(ctx, a); ok {
			remote[r] = append(remote[r], a)
		} else {
			local = append(local, a)
		}
	}
	var refused []post.Result
	accepted := 0
	for r, addrs := range remote {
		n, ref, err := s.submitRemote(ctx, sess, from, r, addrs, pieces)
		if err != nil {
			return err
		}
		accepted += n
		refused = append(refused, ref...)
	}

	to := make([]string, len(local))
	nids := make([]post.NotificationID, len(local))
	for i, a := range local {
		to[i] = a
		if _, err := io.ReadFull(us.cfg.Rand, nids[i][:]); err != nil {
			return fmt.Errorf("mailstore: notification id: %w", err)
		}
	}
	n, ref, err := s.us.sendLocal(ctx, sess, from, to, nids, pieces)
	if err != nil {
		return err
	}
	accepted += n
	refused = append(refused, ref...)
	if accepted == 0 {
		return fmt.Errorf("mailstore: %s: %w", describeRefused(refused), smtpserver.ErrRejected)
	}
	if len(refused) > 0 {
		s.bounce(sess, env, raw, refused)
	}
	return nil
}

// sendLocal sends pieces from the started session sess to ring users under the ids nids,
// retrying the recipients POST could not reach (with the same ids) until ctx ends. It
// returns how many were accepted and the ones refused for good.
func (us *Users) sendLocal(ctx context.Context, sess *session, from string, to []string, nids []post.NotificationID, pieces [][]byte) (accepted int, refused []post.Result, err error) {
	for attempt := 0; len(to) > 0; attempt++ {
		if attempt > 0 {
			if err := us.w.await(ctx, "retry delay", func(done func()) { us.cfg.Clock.AfterFunc(us.cfg.RetryDelay, done) }); err != nil {
				return accepted, refused, fmt.Errorf("mailstore: %d recipients not reached: %w", len(to), err)
			}
		}
		var res []post.Result
		if err := us.w.await(ctx, "send", func(done func()) {
			sess.user.SendWithIDs(to, nids, pieces, func(r []post.Result) { res = r; done() })
		}); err != nil {
			return accepted, refused, fmt.Errorf("mailstore: %d recipients not reached yet: %w", len(to), err)
		}
		var retryTo []string
		var retryIDs []post.NotificationID
		var lastErr error
		for i, r := range res {
			switch r.Status {
			case post.Accepted:
				accepted++
			case post.UnknownRecipient, post.RevokedRecipient:
				refused = append(refused, r)
			default:
				retryTo = append(retryTo, to[i])
				retryIDs = append(retryIDs, nids[i])
				lastErr = r.Err
			}
		}
		if len(retryTo) > 0 {
			us.cfg.Log.Warn("mailstore: recipients not reached; retrying", "from", from, "count", len(retryTo), "err", lastErr)
		}
		to, nids = retryTo, retryIDs
	}
	return accepted, refused, nil
}

// remoteRing is the other ring addr's domain belongs to, if any.
func (s submitter) remoteRing(ctx context.Context, addr string) (ids.RingID, bool) {
	us := s.us
	domain := strings.ToLower(domainOf(addr))
	if us.cfg.Remote == nil || us.cfg.HasDomain != nil && us.cfg.HasDomain(domain) {
		return ids.RingID{}, false
	}
	r, ok, err := us.cfg.Remote.Route(ctx, domain)
	return r, ok && err == nil
}

// submitRemote seals pieces from the session's user to addrs of ring r and hands the bundle
// to a gateway of this ring, retrying (the same bundle: the same notification ids) until a
// gateway holds it or ctx ends. It returns how many recipients were handed over and those
// refused (unknown in r).
func (s submitter) submitRemote(ctx context.Context, sess *session, from string, r ids.RingID, addrs []string, pieces [][]byte) (int, []post.Result, error) {
	us := s.us
	var recs []*identity.Record
	var refused []post.Result
	for _, a := range addrs {
		addr, err := identity.NormalizeAddress(a)
		if err != nil {
			refused = append(refused, post.Result{To: a, Status: post.UnknownRecipient, Err: err})
			continue
		}
		rec, err := us.cfg.Remote.Record(ctx, r, addr)
		switch {
		case errors.Is(err, ErrNoRemoteUser):
			refused = append(refused, post.Result{To: a, Status: post.UnknownRecipient, Err: err})
			continue
		case err != nil:
			return 0, nil, fmt.Errorf("mailstore: record of %s in ring %s: %w", addr, r.Short(), err)
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return 0, refused, nil
	}
	nids := make([]post.NotificationID, len(recs))
	for i := range nids {
		if _, err := io.ReadFull(us.cfg.Rand, nids[i][:]); err != nil {
			return 0, nil, fmt.Errorf("mailstore: notification id: %w", err)
		}
	}
	var entry [16]byte
	if _, err := io.ReadFull(us.cfg.Rand, entry[:]); err != nil {
		return 0, nil, fmt.Errorf("mailstore: entry id: %w", err)
	}
	bundle, err := sess.user.SealRemote(r, recs, nids, pieces)
	if err != nil {
		return 0, nil, fmt.Errorf("mailstore: sealing for ring %s: %w", r.Short(), err)
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := us.w.await(ctx, "retry delay", func(done func()) { us.cfg.Clock.AfterFunc(us.cfg.RetryDelay, done) }); err != nil {
				return 0, nil, fmt.Errorf("mailstore: no gateway took the message for ring %s: %w", r.Short(), err)
			}
		}
		gone, err := us.cfg.Remote.HandOff(ctx, hex.EncodeToString(entry[:]), from, bundle)
		if err == nil {
			// Recipients the other ring refused after RCPT (removed meanwhile): a bounce
			// notice, or a 554 when nobody was reached.
			reached := 0
			for _, rec := range recs {
				if why, ok := gone[rec.Address]; ok {
					refused = append(refused, post.Result{To: rec.Address, Status: post.UnknownRecipient, Err: errors.New(why)})
				} else {
					reached++
				}
			}
			return reached, refused, nil
		}
		if errors.Is(err, ErrRemoteRefused) { // retrying cannot help: the client hears a 5xx
			return 0, nil, fmt.Errorf("mailstore: for ring %s: %v: %w", r.Short(), err, smtpserver.ErrRejected)
		}
		us.cfg.Log.Warn("mailstore: hand-off to a gateway failed; retrying", "from", from, "ring", r.Short(), "err", err)
		if ctx.Err() != nil {
			return 0, nil, fmt.Errorf("mailstore: no gateway took the message for ring %s: %w", r.Short(), err)
		}
	}
}

// wholeBelow: messages smaller than this are submitted as one piece.
const wholeBelow = 16 << 10

func cloneAll(pieces [][]byte) [][]byte {
	out := make([][]byte, len(pieces))
	for i, p := range pieces {
		out[i] = bytes.Clone(p)
	}
	return out
}

func describeRefused(rs []post.Result) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s: %s", r.To, r.Status))
	}
	return strings.Join(parts, "; ")
}

// bounce files a short notice in the sender's INBOX naming the recipients that were
// refused after others had been accepted. Best effort: the 250 stands either way.
func (s submitter) bounce(sess *session, env smtpserver.Envelope, raw []byte, refused []post.Result) {
	inbox, err := sess.store.Folder(mailbox.Inbox)
	if err != nil {
		return
	}
	now := s.us.cfg.Clock.Now().UTC()
	subject := ""
	if st := mailbox.Parse(raw); st.Envelope != nil {
		subject = st.Envelope.Subject
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: Mail Delivery System <mailer-daemon@%s>\r\n", domainOf(env.From))
	fmt.Fprintf(&b, "To: <%s>\r\nDate: %s\r\nSubject: Undelivered Mail: %s\r\n", env.From, now.Format(time.RFC1123Z), subject)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nAuto-Submitted: auto-replied\r\n\r\n")
	b.WriteString("Your message was delivered to the other recipients, but not to these:\r\n\r\n")
	for _, r := range refused {
		fmt.Fprintf(&b, "  %s: %s\r\n", r.To, r.Status)
	}
	if _, err := inbox.Append([]byte(b.String()), nil, now); err != nil {
		s.us.cfg.Log.Warn("mailstore: bounce notice not filed", "user", env.From, "err", err)
	}
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return "localhost"
}

// Recipients returns the SMTP server's Recipients: addresses in the ring's domains are ring
// users when the ring holds a valid certified record for them (post.Node.LookupRecord),
// no such user when it holds none or a revoked one; other domains are outside.
func (us *Users) Recipients() smtpserver.Recipients { return recipients{us} }

type recipients struct{ us *Users }

// Classify implements smtpserver.Recipients. An inconclusive lookup is an error (451).
func (r recipients) Classify(ctx context.Context, address string) (smtpserver.RecipientClass, error) {
	us := r.us
	domain := strings.ToLower(domainOf(address))
	if us.cfg.HasDomain == nil || !us.cfg.HasDomain(domain) {
		return r.classifyOther(ctx, domain, address)
	}
	addr, err := identity.NormalizeAddress(address)
	if err != nil {
		return smtpserver.NoSuchUser, nil
	}
	var lerr error
	if err := us.w.await(ctx, "look up "+addr, func(done func()) {
		us.cfg.Node.LookupRecord(addr, func(_ *identity.Record, _ identity.SignedRecord, err error) { lerr = err; done() })
	}); err != nil {
		return smtpserver.NoSuchUser, err
	}
	switch {
	case lerr == nil:
		return smtpserver.RingUser, nil
	case errors.Is(lerr, post.ErrUnknownRecipient), errors.Is(lerr, post.ErrRevokedRecipient):
		return smtpserver.NoSuchUser, nil
	}
	return smtpserver.NoSuchUser, fmt.Errorf("mailstore: look up %s: %w", addr, lerr)
}

// classifyOther classifies an address outside the ring's domains: a user of another ring
// (reached through the gateways, so a ring recipient for SMTP), an unknown one there, or the
// internet.
func (r recipients) classifyOther(ctx context.Context, domain, address string) (smtpserver.RecipientClass, error) {
	us := r.us
	if us.cfg.Remote == nil {
		return smtpserver.Outside, nil
	}
	ring, ok, err := us.cfg.Remote.Route(ctx, domain)
	switch {
	case err != nil:
		return smtpserver.NoSuchUser, fmt.Errorf("mailstore: which ring %s belongs to: %w", domain, err)
	case !ok:
		return smtpserver.Outside, nil
	}
	addr, err := identity.NormalizeAddress(address)
	if err != nil {
		return smtpserver.NoSuchUser, nil
	}
	_, err = us.cfg.Remote.Record(ctx, ring, addr)
	switch {
	case err == nil:
		return smtpserver.RingUser, nil
	case errors.Is(err, ErrNoRemoteUser):
		return smtpserver.NoSuchUser, nil
	}
	return smtpserver.NoSuchUser, fmt.Errorf("mailstore: look up %s in ring %s: %w", addr, ring.Short(), err)
}
