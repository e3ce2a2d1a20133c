package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"epost/internal/dnsres"
	"epost/internal/glacier"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailauth"
	"epost/internal/mailqueue"
	"epost/internal/mailstore"
	"epost/internal/multiring"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/store"
)

// This ring's nodes and its gateways (multiring.RingLink): which peers are gateways (the role
// in the certificate their handshake showed), what a gateway answers, and how a node checks a
// sender of another ring.

// notePeer is the ring transport's OnPeer: it remembers whether the peer is a gateway.
func (n *Node) notePeer(id ids.ID, chain []*x509.Certificate) {
	if len(chain) > 0 {
		n.roles.Store(id, ring.HasRole(chain[0], ring.RoleGateway))
	}
}

func (n *Node) isGatewayPeer(id ids.ID) bool {
	if id == n.rn.ID {
		return ring.HasRole(n.rn.Cert, ring.RoleGateway)
	}
	v, ok := n.roles.Load(id)
	return ok && v.(bool)
}

// gatewaySide is this node's answers to its ring's nodes, when it runs the global ring.
func (n *Node) gatewaySide() multiring.GatewaySide {
	n.mu.Lock()
	gs := n.global
	n.mu.Unlock()
	if gs == nil {
		return nil
	}
	return gatewayAnswers{n: n, gs: gs}
}

type gatewayAnswers struct {
	n  *Node
	gs *globalSide
}

func (g gatewayAnswers) Bundle(r ids.RingID) ([]byte, bool) { return g.gs.link.BundleOf(r) }

func (g gatewayAnswers) LookupRecord(r ids.RingID, addr string, cb func(*identity.Record, identity.SignedRecord, error)) {
	g.gs.dir.LookupRecord(r, addr, cb)
}

// beacon tells this ring's other gateways that this one runs (multiring.RingLink.Beacon), with
// its addresses in the ring and in the global ring: they name it in their rosters.
func (n *Node) beacon(gs *globalSide) {
	link := n.RingLink()
	if link == nil {
		return
	}
	if err := link.Beacon(multiring.RosterEntry{ID: n.rn.ID, RingAddr: n.self.Addr, GlobalAddr: gs.self.Addr}); err != nil {
		n.log.Debug("gateway beacon not sent", "err", err)
	}
}

// gatewayRoster is this ring's gateways heard from lately (this one first), for the answers
// to other rings' gateways.
func (n *Node) gatewayRoster() []multiring.RosterEntry {
	if link := n.RingLink(); link != nil {
		return link.Roster()
	}
	return nil
}

// federationDeadline is how long a gateway keeps trying to hand a message to another ring.
const federationDeadline = 5 * 24 * time.Hour

// DefaultHandOffWait is how long a gateway holds its answer to a node's hand-off while it passes the
// message on: when the other ring stores it within that time, the node's 250 means the message
// is in the recipient's ring, and a gateway that dies with it in its queue costs nothing (the
// node, unanswered, hands it to another gateway; the recipient files each id once). Past it
// the answer is "queued here", and the gateway's queue carries it on.
const DefaultHandOffWait = 5 * time.Second

func (n *Node) handOffWait() time.Duration {
	if n.opts.HandOffWait > 0 {
		return n.opts.HandOffWait
	}
	return DefaultHandOffWait
}

func (g gatewayAnswers) Queue(entry, from string, b *post.RemoteBundle, again bool) (map[string]string, bool, error) {
	// An entry this gateway has already: its queue's word stands (an origin offering it
	// again keeps it until the outcome is final).
	if q := g.gs.queue; q != nil {
		switch q.Has(entry) {
		case "queued":
			return nil, true, nil
		case "done":
			if d, ok := q.Finished(entry); ok {
				return failedOf(d.Rcpts), false, nil
			}
		}
	}
	// First straight to a gateway of the other ring: when its ring stores the message within
	// the wait, the node's 250 rests on that, and nothing is written here. A node that hears
	// nothing (this gateway died) hands it to another gateway; the same ids land on the same
	// keys there.
	type res struct {
		states map[string]mailqueue.RcptState
		err    error
	}
	ch := make(chan res, 1)
	g.gs.relay.HandOff(entry, b.Dest, b.Encode(), func(st map[string]mailqueue.RcptState, err error) { ch <- res{st, err} })
	t := time.NewTimer(g.n.handOffWait())
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err == nil && len(r.states) == len(b.Notes) {
			var refused map[string]string
			pending := false
			for addr, st := range r.states {
				switch st.State {
				case mailqueue.Failed:
					if refused == nil {
						refused = map[string]string{}
					}
					refused[addr] = st.Detail
				case mailqueue.Pending:
					pending = true
				}
			}
			// A refusal on an offer made again comes long after the sender's 250: it goes
			// through the queue, whose attempt files the delivery report (DSN).
			if !pending && (refused == nil || !again) {
				return refused, false, nil
			}
		}
	case <-t.C:
	}
	// Not stored over there yet: the queue carries it on (durably, before the node hears OK).
	deadline := time.Now().Add(federationDeadline)
	if pol, perr := g.n.gwPolicy.current(g.n, false); perr == nil {
		deadline = time.Now().Add(time.Duration(pol.OutboundDeadline))
	}
	_, err := g.n.QueueFederated(entry, from, b, deadline)
	if errors.Is(err, mailqueue.ErrExists) {
		err = nil // a repeated hand-off: queued meanwhile
	}
	return nil, err == nil, err
}

// failedOf names the recipients a finished entry failed for.
func failedOf(rcpts []mailqueue.RcptState) map[string]string {
	var m map[string]string
	for _, r := range rcpts {
		if r.State == mailqueue.Failed {
			if m == nil {
				m = map[string]string{}
			}
			m[r.Addr] = r.Detail
		}
	}
	return m
}

// QueueInternet implements multiring.GatewaySide: the message goes into the gateway's queue
// as an internet entry, delivered by SMTP (smtpout.Carrier).
func (g gatewayAnswers) QueueInternet(entry, from string, rcpts []string, raw []byte) error {
	// A message leaving the organization carries a Date and a Message-ID (RFC 5322 section
	// 3.6; RFC 6409 section 8.3 lets the submission side add them): added here when the
	// client did not, before signing, so that no relay adds them after the signature.
	raw = completeHeader(raw, entry, from, time.Now())
	// Signed once, as it enters the queue: every retry sends the same bytes.
	if _, dom, ok := strings.Cut(from, "@"); ok {
		if key, ok := g.gs.dkim[strings.ToLower(dom)]; ok {
			signed, err := mailauth.Sign(raw, key)
			if err != nil {
				return fmt.Errorf("DKIM signing for %s: %w", dom, err)
			}
			raw = signed
		}
	}
	now := time.Now()
	h := mailqueue.Header{ID: entry, Kind: mailqueue.KindInternet, From: from, Created: now, Deadline: now.Add(federationDeadline)}
	if pol, err := g.n.gwPolicy.current(g.n, false); err == nil {
		h.Deadline, h.DelayWarn = now.Add(time.Duration(pol.OutboundDeadline)), now.Add(time.Duration(pol.DelayWarn))
	}
	for _, r := range rcpts {
		h.Rcpts = append(h.Rcpts, mailqueue.Rcpt{Addr: r})
	}
	st, err := g.gs.queue.Stage(h, raw)
	if errors.Is(err, mailqueue.ErrExists) {
		return nil // a repeated hand-off
	}
	if err != nil {
		return err
	}
	if _, err := st.Commit(); err != nil {
		return err
	}
	select {
	case g.gs.kick <- struct{}{}:
	default:
	}
	return nil
}

// RingLink is this node's link to its ring's gateways.
func (n *Node) RingLink() *multiring.RingLink {
	if a := n.apps.Load(); a != nil {
		return a.link
	}
	return nil
}

type cachedTrust struct {
	t     *post.RingTrust
	until time.Time
}

// trustTTL bounds how long another ring's trust (its CA and revocations) is used before it is
// asked again.
const trustTTL = 10 * time.Minute

// foreignSender is POST's ForeignSender: the sender's domain must name ring r in DNS (its
// _epost record, through this node's resolver), and r's trust comes from a gateway of this
// ring (the bundle r showed when the global ring admitted it), verified here.
func (n *Node) foreignSender(from string, r ids.RingID, cb func(*post.RingTrust, error)) {
	_, domain, ok := strings.Cut(from, "@")
	if !ok {
		cb(nil, fmt.Errorf("%w: sender %q has no domain", post.ErrForeignRefused, from))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		txts, _, err := (&dnsres.Resolver{Server: n.opts.Resolver}).TXT(ctx, strings.TrimSuffix(ring.DNSName(domain), "."))
		var named ids.RingID
		if err == nil {
			named, err = ring.ParseDNSRecords(txts)
		}
		switch {
		case errors.Is(err, dnsres.ErrTemporary):
			cb(nil, err) // asked again later
			return
		case err != nil:
			cb(nil, fmt.Errorf("%w: %s: %v", post.ErrForeignRefused, domain, err))
			return
		case named != r:
			cb(nil, fmt.Errorf("%w: %s belongs to ring %s, not %s", post.ErrForeignRefused, domain, named.Short(), r.Short()))
			return
		}
		if v, ok := n.trusts.Load(r); ok && time.Now().Before(v.(cachedTrust).until) {
			cb(v.(cachedTrust).t, nil)
			return
		}
		link := n.RingLink()
		if link == nil {
			cb(nil, errors.New("the ring's overlay is not running"))
			return
		}
		link.Trust(r, func(f *ring.Foreign, err error) {
			if err != nil {
				cb(nil, err)
				return
			}
			caPub, _ := f.Trust.CA().PublicKey.(ed25519.PublicKey)
			t := &post.RingTrust{Ring: r, CA: caPub, Revoked: f.Trust.IsRecordRevoked}
			n.trusts.Store(r, cachedTrust{t: t, until: time.Now().Add(trustTTL)})
			cb(t, nil)
		})
	}()
}

// remote is mailstore's Remote when the node is set up for federation (--resolver given): an
// address outside the ring's domains then costs a DNS question (_epost) at RCPT, which a node
// without a reachable resolver should not wait on.
func (n *Node) remote() mailstore.Remote {
	if n.opts.Resolver == "" {
		return nil
	}
	return remoteRouter{n}
}

// remoteRouter is mailstore's Remote: users of other rings, through DNS and this ring's
// gateways.
type remoteRouter struct{ n *Node }

type cachedForeign struct {
	f     *ring.Foreign
	until time.Time
}

// Route implements mailstore.Remote.
func (r remoteRouter) Route(ctx context.Context, domain string) (ids.RingID, bool, error) {
	txts, _, err := (&dnsres.Resolver{Server: r.n.opts.Resolver}).TXT(ctx, strings.TrimSuffix(ring.DNSName(domain), "."))
	if errors.Is(err, dnsres.ErrNotFound) {
		return ids.RingID{}, false, nil
	}
	if err != nil {
		return ids.RingID{}, false, err
	}
	id, err := ring.ParseDNSRecords(txts)
	switch {
	case errors.Is(err, ring.ErrNoDNSRecord):
		return ids.RingID{}, false, nil
	case err != nil:
		return ids.RingID{}, false, err
	case id == r.n.rn.Descriptor.RingID:
		return ids.RingID{}, false, nil
	}
	return id, true, nil
}

// foreign is ring id's verified bundle, from this ring's gateways (cached for trustTTL).
func (r remoteRouter) foreign(ctx context.Context, id ids.RingID) (*ring.Foreign, error) {
	if v, ok := r.n.foreigns.Load(id); ok && time.Now().Before(v.(cachedForeign).until) {
		return v.(cachedForeign).f, nil
	}
	link := r.n.RingLink()
	if link == nil {
		return nil, errors.New("the ring's overlay is not running")
	}
	type res struct {
		f   *ring.Foreign
		err error
	}
	ch := make(chan res, 1)
	link.Trust(id, func(f *ring.Foreign, err error) { ch <- res{f, err} })
	select {
	case v := <-ch:
		if v.err == nil {
			r.n.foreigns.Store(id, cachedForeign{f: v.f, until: time.Now().Add(trustTTL)})
		}
		return v.f, v.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type cachedRecord struct {
	rec   *identity.Record
	until time.Time
}

// recordTTL bounds how long a verified record of another ring's user is used before it is
// asked again (docs/gateway-design.md §5.2): mail to a correspondent then costs no round trip
// over the global ring, and a short outage of that ring's gateways does not stop the sending.
const recordTTL = 10 * time.Minute

// Record implements mailstore.Remote.
func (r remoteRouter) Record(ctx context.Context, id ids.RingID, addr string) (*identity.Record, error) {
	key := id.String() + "/" + addr
	if v, ok := r.n.records.Load(key); ok && time.Now().Before(v.(cachedRecord).until) {
		return v.(cachedRecord).rec, nil
	}
	rec, err := r.record(ctx, id, addr)
	if err == nil {
		r.n.records.Store(key, cachedRecord{rec: rec, until: time.Now().Add(recordTTL)})
	}
	return rec, err
}

func (r remoteRouter) record(ctx context.Context, id ids.RingID, addr string) (*identity.Record, error) {
	f, err := r.foreign(ctx, id)
	if err != nil {
		return nil, err
	}
	type res struct {
		rec *identity.Record
		err error
	}
	ch := make(chan res, 1)
	r.n.RingLink().LookupRecord(f, addr, func(rec *identity.Record, _ identity.SignedRecord, err error) { ch <- res{rec, err} })
	select {
	case v := <-ch:
		if errors.Is(v.err, multiring.ErrRemoteUnknown) || errors.Is(v.err, multiring.ErrRemoteRevoked) {
			return nil, fmt.Errorf("%w: %v", mailstore.ErrNoRemoteUser, v.err)
		}
		return v.rec, v.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// HandOff implements mailstore.Remote.
func (r remoteRouter) HandOff(ctx context.Context, entry, from string, b *post.RemoteBundle) (map[string]string, error) {
	link := r.n.RingLink()
	if link == nil {
		return nil, errors.New("the ring's overlay is not running")
	}
	type res struct {
		o   multiring.Outcome
		err error
	}
	ch := make(chan res, 1)
	link.Offer(entry, from, b, false, func(o multiring.Outcome, err error) { ch <- res{o, err} })
	select {
	case v := <-ch:
		if errors.Is(v.err, multiring.ErrHandOffRefused) {
			return nil, fmt.Errorf("%w: %v", mailstore.ErrRemoteRefused, v.err)
		}
		if v.err == nil && v.o.Queued {
			// Only in that gateway's queue: this node keeps custody until a gateway reports
			// the outcome (custody.go), on disk before the sender hears 250.
			if err := r.n.custodyStore().keep(entry, from, b, time.Now(), r.n.custodyTimeout()); err != nil {
				return nil, err
			}
		}
		return v.o.Refused, v.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// LocalityStatus is the audit of the autonomy promise (issue 13): every object in this node's
// store and every Glacier fragment it holds belongs to its own ring.
type LocalityStatus struct {
	ForeignObjects   int64     `json:"foreign_objects"`   // objects keyed in another ring
	ForeignFragments int       `json:"foreign_fragments"` // fragments of another ring's objects
	CheckedAt        time.Time `json:"checked_at"`
}

// Locality counts what this node holds of other rings, now (a scan of the store's index).
func (n *Node) Locality() (LocalityStatus, error) {
	n.mu.Lock()
	st, fr := n.store, n.frags
	n.mu.Unlock()
	l := LocalityStatus{CheckedAt: time.Now().UTC()}
	if st == nil {
		return l, errors.New("daemon: the node is not running")
	}
	all, err := st.Stats()
	if err != nil {
		return l, err
	}
	own, err := st.Summarize(store.WholeRing(n.rn.Descriptor.RingID))
	if err != nil {
		return l, err
	}
	l.ForeignObjects = all.Objects - own.Count
	if fr != nil {
		fr.Range(func(_ ids.ID, f *glacier.Fragment) bool {
			if f.Manifest.Ring != n.rn.Descriptor.RingID {
				l.ForeignFragments++
			}
			return true
		})
	}
	return l, nil
}

// recentLocality is the last Locality count, made again when it is older than a minute (it
// scans the store's index); nil while the node is not running.
func (n *Node) recentLocality() *LocalityStatus {
	n.locMu.Lock()
	defer n.locMu.Unlock()
	if n.loc != nil && time.Since(n.loc.CheckedAt) < time.Minute {
		c := *n.loc
		return &c
	}
	l, err := n.Locality()
	if err != nil {
		return nil
	}
	n.loc = &l
	c := l
	return &c
}

// completeHeader adds a Date and a Message-ID field (made of the queue entry's id) at the top
// of msg's header when it has none.
func completeHeader(msg []byte, entry, from string, now time.Time) []byte {
	hasDate, hasID := false, false
	for _, line := range bytes.Split(msg, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "date":
			hasDate = true
		case "message-id":
			hasID = true
		}
	}
	var add []byte
	if !hasDate {
		add = append(add, "Date: "+now.Format(time.RFC1123Z)+"\r\n"...)
	}
	if !hasID {
		dom := "localhost"
		if _, d, ok := strings.Cut(from, "@"); ok {
			dom = d
		}
		add = append(add, "Message-ID: <"+entry+"@"+dom+">\r\n"...)
	}
	if add == nil {
		return msg
	}
	return append(add, msg...)
}
