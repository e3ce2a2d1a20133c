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
// UIDVALIDITY, a UID that came back with another message, UIDs out of order, or a message
// that vanished (nothing is expunged in this test).
type inboxTrack struct {
	u           *user
	uidValidity uint32
	uidTok      map[imap.UID]string
	seen        map[string]time.Time // token -> first seen
	flagged     map[string]bool      // tokens whose STORE +FLAGS \Flagged answered OK
	forks       []string
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
	if tr.uidValidity != 0 && v.uidValidity != tr.uidValidity {
		fork("UIDVALIDITY changed from %d to %d", tr.uidValidity, v.uidValidity)
	}
	tr.uidValidity = v.uidValidity
	present := map[string]bool{}
	var last imap.UID
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
		}
	}
	for tok := range tr.seen {
		if !present[tok] {
			fork("%s vanished (seen since %s)", tok, tr.seen[tok].Format("15:04:05.000"))
		}
	}
}

// observer reads every user's INBOX in turn, checks it against what it showed before, and
// flags one message not yet flagged (IMAP flag changes during the partition).
type observer struct {
	r      *pring
	mu     sync.Mutex
	tracks map[*user]*inboxTrack
	errs   int
	stop   chan struct{}
	done   chan struct{}
}

func startObserver(r *pring, every time.Duration) *observer {
	o := &observer{r: r, tracks: map[*user]*inboxTrack{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, u := range r.users {
		o.tracks[u] = newTrack(u)
	}
	rng := rand.New(rand.NewPCG(r.seed, 0x0b5e))
	go func() {
		defer close(o.done)
		sess := map[*user]*imapSession{}
		defer func() {
			for _, s := range sess {
				s.close()
			}
		}()
		for {
			for _, u := range r.users {
				select {
				case <-o.stop:
					return
				default:
				}
				if err := o.observe(u, sess, rng); err != nil {
					o.mu.Lock()
					o.errs++
					o.mu.Unlock()
					if s := sess[u]; s != nil {
						s.close()
						delete(sess, u)
					}
				}
			}
			select {
			case <-o.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return o
}

func (o *observer) observe(u *user, sess map[*user]*imapSession, rng *rand.Rand) error {
	s := sess[u]
	if s == nil {
		var err error
		if s, err = dialIMAP(u); err != nil {
			return err
		}
		sess[u] = s
	}
	v, err := s.readInbox()
	if err != nil {
		return err
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
	if len(cands) == 0 {
		return nil
	}
	m := cands[rng.IntN(len(cands))]
	if err := s.flag(m.uid); err != nil {
		return err
	}
	o.mu.Lock()
	tr.flagged[m.tok] = true
	o.mu.Unlock()
	return nil
}

// finish stops the observer and returns its tracks.
func (o *observer) finish() map[*user]*inboxTrack {
	close(o.stop)
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tracks
}
