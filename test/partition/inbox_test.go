package partition

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// imapSession is one logged-in IMAP session (STARTTLS) of a user at the user's node.
type imapSession struct {
	conn net.Conn
	c    *imapclient.Client
}

const imapTimeout = 30 * time.Second

func dialIMAP(u *user) (*imapSession, error) {
	conn, err := net.DialTimeout("tcp", u.home.imap, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("imap dial %s: %w", u.home.imap, err)
	}
	conn.SetDeadline(time.Now().Add(imapTimeout))
	c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("imap starttls: %w", err)
	}
	if err := c.Login(u.addr, u.pw).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("imap login %s: %w", u.addr, err)
	}
	return &imapSession{conn: conn, c: c}, nil
}

func (s *imapSession) close() { s.c.Close() }

// inboxMsg is one INBOX message as a client sees it, in sequence order.
type inboxMsg struct {
	uid     imap.UID
	tok     string // "" for a message not of the workload
	flagged bool
}

// inboxView is one read of INBOX.
type inboxView struct {
	uidValidity uint32
	msgs        []inboxMsg
}

// count is how often each token appears.
func (v *inboxView) count() map[string]int {
	m := map[string]int{}
	for _, x := range v.msgs {
		if x.tok != "" {
			m[x.tok]++
		}
	}
	return m
}

// readInbox selects INBOX (read-write: the observer stores flags in it) and fetches every
// message's UID, flags and subject.
func (s *imapSession) readInbox() (*inboxView, error) {
	s.conn.SetDeadline(time.Now().Add(imapTimeout))
	sel, err := s.c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("select INBOX: %w", err)
	}
	v := &inboxView{uidValidity: sel.UIDValidity}
	if sel.NumMessages == 0 {
		return v, nil
	}
	var seq imap.SeqSet
	seq.AddRange(1, sel.NumMessages)
	msgs, err := s.c.Fetch(seq, &imap.FetchOptions{UID: true, Flags: true, Envelope: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch INBOX: %w", err)
	}
	slices.SortFunc(msgs, func(a, b *imapclient.FetchMessageBuffer) int { return int(a.SeqNum) - int(b.SeqNum) })
	for _, m := range msgs {
		x := inboxMsg{uid: m.UID, flagged: slices.Contains(m.Flags, imap.FlagFlagged)}
		if m.Envelope != nil {
			x.tok = tokenRE.FindString(m.Envelope.Subject)
		}
		v.msgs = append(v.msgs, x)
	}
	return v, nil
}

// flag sets \Flagged on the message with uid; nil means the server answered OK.
func (s *imapSession) flag(uid imap.UID) error {
	s.conn.SetDeadline(time.Now().Add(imapTimeout))
	var set imap.UIDSet
	set.AddNum(uid)
	return s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
}

// inboxTrack is what one user's INBOX has shown over the run: a folder log that forked (two
// versions of the log, one of which the node later took for the truth) shows as a changed
// UIDVALIDITY, a UID that came back with another message, UIDs out of order, a new message
// below a UID seen before, or a message that vanished (nothing is expunged in this test).
//
// A node restarted from a disk that went back in time gives INBOX a new UIDVALIDITY
// (docs/consistency.md): a track told so (expectRewind) takes one larger UIDVALIDITY in a
// read after the restart as a client does, forgetting the UIDs seen before, and lets the
// messages first seen in the moments before the kill (shown from the journal the disk lost)
// be missing until they are filed again.
type inboxTrack struct {
	u           *user
	uidValidity uint32
	uidTok      map[imap.UID]string
	seen        map[string]time.Time // token -> first seen
	rewindFrom  time.Time            // reads from then on may show one larger UIDVALIDITY
	lenientFrom time.Time            // tokens first seen since may be missing after rewindFrom
	rewound     time.Time            // when the new UIDVALIDITY showed
	flagged     map[string]bool      // tokens whose STORE +FLAGS \Flagged answered OK
	forks       []string
	maxUID      imap.UID // the highest UID any read showed
	reads       int
}

func newTrack(u *user) *inboxTrack {
	return &inboxTrack{u: u, uidTok: map[imap.UID]string{}, seen: map[string]time.Time{}, flagged: map[string]bool{}}
}

// check compares one read with everything read before, and remembers it.
func (tr *inboxTrack) check(v *inboxView, now time.Time) {
	tr.reads++
	fork := func(format string, a ...any) {
		if len(tr.forks) < 20 {
			tr.forks = append(tr.forks, fmt.Sprintf("%s INBOX at %s: ", tr.u.name, now.Format("15:04:05.000"))+fmt.Sprintf(format, a...))
		}
	}
	after := !tr.rewindFrom.IsZero() && !now.Before(tr.rewindFrom)
	switch {
	case tr.uidValidity != 0 && v.uidValidity > tr.uidValidity && after && tr.rewound.IsZero():
		// A client drops what it knew of the folder's UIDs.
		tr.rewound = now
		tr.uidTok, tr.maxUID = map[imap.UID]string{}, 0
	case tr.uidValidity != 0 && v.uidValidity != tr.uidValidity:
		fork("UIDVALIDITY changed from %d to %d", tr.uidValidity, v.uidValidity)
	}
	tr.uidValidity = v.uidValidity
	present := map[string]bool{}
	var last imap.UID
	prevMax := tr.maxUID
	for _, m := range v.msgs {
		if m.uid <= last {
			fork("UID %d after UID %d in sequence order", m.uid, last)
		}
		last = m.uid
		if m.tok == "" {
			continue
		}
		present[m.tok] = true
		if was, ok := tr.uidTok[m.uid]; ok && was != m.tok {
			fork("UID %d reused: was %s, now %s", m.uid, was, m.tok)
		}
		tr.uidTok[m.uid] = m.tok
		if _, ok := tr.seen[m.tok]; !ok {
			tr.seen[m.tok] = now
			// RFC 9051 section 2.3.1.1: UIDs are assigned in strictly ascending order, so a
			// client that has seen UIDs up to prevMax fetches only above it and would miss this.
			if m.uid <= prevMax && tr.reads > 1 {
				fork("new message %s has UID %d, not above UID %d seen before", m.tok, m.uid, prevMax)
			}
		}
		tr.maxUID = max(tr.maxUID, m.uid)
	}
	for tok, at := range tr.seen {
		if !present[tok] && !(after && !at.Before(tr.lenientFrom)) {
			fork("%s vanished (seen since %s)", tok, at.Format("15:04:05.000"))
		}
	}
}

// observer reads every user's INBOX, each user in a goroutine of its own (a node cut off
// must not delay the others' reads), checks it against what it showed before, and flags one
// message not yet flagged (IMAP flag changes during the partition).
type observer struct {
	r      *pring
	mu     sync.Mutex
	tracks map[*user]*inboxTrack
	held   map[*user]bool        // users whose flags are left alone for now (hold)
	busy   map[*user]*sync.Mutex // held by a user's goroutine while it reads or flags
	errs   int
	stop   chan struct{}
	wg     sync.WaitGroup
}

// hold stops the observer's flag changes in u's INBOX (its reads go on), and returns once
// the one under way (if any) has its answer; release resumes them.
func (o *observer) hold(u *user) {
	o.mu.Lock()
	o.held[u] = true
	b := o.busy[u]
	o.mu.Unlock()
	b.Lock()
	b.Unlock()
}

// readNow reads u's INBOX once on a session of its own and checks the read like the others
// (observe, without a flag change).
func (o *observer) readNow(u *user) error {
	b := o.busy[u]
	b.Lock()
	defer b.Unlock()
	s, err := o.observe(u, nil, nil, false)
	if s != nil {
		s.close()
	}
	return err
}

// expectRewind tells u's track that u's node restarts at from with a disk that went back in
// time, and that the messages first seen since lenientFrom may be missing after it.
func (o *observer) expectRewind(u *user, from, lenientFrom time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	tr := o.tracks[u]
	tr.rewindFrom, tr.lenientFrom = from, lenientFrom
}

func (o *observer) release(u *user) {
	o.mu.Lock()
	delete(o.held, u)
	o.mu.Unlock()
}

func startObserver(r *pring, every time.Duration) *observer {
	o := &observer{r: r, tracks: map[*user]*inboxTrack{}, held: map[*user]bool{}, busy: map[*user]*sync.Mutex{}, stop: make(chan struct{})}
	for _, u := range r.users {
		o.tracks[u] = newTrack(u)
		o.busy[u] = &sync.Mutex{}
	}
	for i, u := range r.users {
		rng := rand.New(rand.NewPCG(r.seed, 0x0b5e00+uint64(i)))
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			var s *imapSession
			defer func() {
				if s != nil {
					s.close()
				}
			}()
			for {
				b := o.busy[u]
				b.Lock()
				o.mu.Lock()
				held := o.held[u]
				o.mu.Unlock()
				var err error
				s, err = o.observe(u, s, rng, !held)
				b.Unlock()
				if err != nil {
					o.mu.Lock()
					o.errs++
					o.mu.Unlock()
					if s != nil {
						s.close()
						s = nil
					}
				}
				select {
				case <-o.stop:
					return
				case <-time.After(every):
				}
			}
		}()
	}
	return o
}

// observe reads u's INBOX on s (a new session when nil) and, if flag, flags one message
// (picked with rng, unused otherwise); it returns the session to use next time.
func (o *observer) observe(u *user, s *imapSession, rng *rand.Rand, flag bool) (*imapSession, error) {
	if s == nil {
		var err error
		if s, err = dialIMAP(u); err != nil {
			return nil, err
		}
	}
	v, err := s.readInbox()
	if err != nil {
		return s, err
	}
	o.mu.Lock()
	tr := o.tracks[u]
	tr.check(v, time.Now())
	var cands []inboxMsg
	for _, m := range v.msgs {
		if m.tok != "" && !m.flagged && !tr.flagged[m.tok] {
			cands = append(cands, m)
		}
	}
	o.mu.Unlock()
	if len(cands) == 0 || !flag {
		return s, nil
	}
	m := cands[rng.IntN(len(cands))]
	if err := s.flag(m.uid); err != nil {
		return s, err
	}
	o.mu.Lock()
	tr.flagged[m.tok] = true
	o.mu.Unlock()
	return s, nil
}

// finish stops the observer and returns its tracks.
func (o *observer) finish() map[*user]*inboxTrack {
	close(o.stop)
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tracks
}
