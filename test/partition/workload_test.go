package partition

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"regexp"
	"sync"
	"time"
)

// outcome is what the submitting client learnt of one message.
type outcome int

const (
	pending   outcome = iota // no answer yet
	acked                    // 250 to the end of DATA: the ring must file it exactly once
	refused                  // a 4xx/5xx reply, or the connection failed before the end of DATA
	uncertain                // no answer to the end of DATA: it may or may not be filed (once)
)

// submission is one message of the workload; its token is its subject and Message-ID.
type submission struct {
	tok      string
	from, to *user
	phase    string // the test's phase when it was sent: before, split, healing, after
	at       time.Time
	result   outcome
	code     int // the SMTP reply code of a refusal, 0 for a connection failure
	err      string
}

// tokenRE finds a workload message's token in a subject.
var tokenRE = regexp.MustCompile(`\bpt\d+-[a-z]+-\d+\b`)

// workload sends mail continuously: each user, in a goroutine of its own, submits a message
// to another user (chosen by the seeded randomness) over one SMTP submission session to the
// user's node (reopened after an error), then pauses.
type workload struct {
	r     *pring
	pause time.Duration

	mu    sync.Mutex
	subs  []*submission
	phase string
	favor *user // when set, half the messages go to this user

	stop chan struct{}
	wg   sync.WaitGroup
}

func startWorkload(r *pring, pause time.Duration) *workload {
	w := &workload{r: r, pause: pause, phase: "before", stop: make(chan struct{})}
	for i, u := range r.users {
		rng := rand.New(rand.NewPCG(r.seed, uint64(i)+1))
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.sender(u, rng)
		}()
	}
	return w
}

// setPhase labels the submissions made from now on.
func (w *workload) setPhase(p string) {
	w.mu.Lock()
	w.phase = p
	w.mu.Unlock()
}

// setFavor makes half of every other user's messages go to u (nil: recipients uniform).
func (w *workload) setFavor(u *user) {
	w.mu.Lock()
	w.favor = u
	w.mu.Unlock()
}

// finish stops the senders and waits for their last submissions' answers.
func (w *workload) finish() []*submission {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*submission(nil), w.subs...)
}

func (w *workload) sender(u *user, rng *rand.Rand) {
	var s *smtpSession
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for n := 1; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		to := u
		for to == u {
			to = w.r.users[rng.IntN(len(w.r.users))]
		}
		w.mu.Lock()
		if fav := w.favor; fav != nil && fav != u && rng.IntN(2) == 0 {
			to = fav
		}
		sub := &submission{tok: fmt.Sprintf("pt%d-%s-%d", w.r.seed%1_000_000, u.name, n), from: u, to: to, phase: w.phase, at: time.Now()}
		w.subs = append(w.subs, sub)
		w.mu.Unlock()
		if s == nil {
			var err error
			if s, err = dialSMTP(u); err != nil {
				w.record(sub, refused, err)
				s = nil
				w.sleep(w.pause)
				continue
			}
		}
		res, err := s.send(sub)
		w.record(sub, res, err)
		if err != nil {
			s.close()
			s = nil
		}
		w.sleep(w.pause/2 + time.Duration(rng.Int64N(int64(w.pause))))
	}
}

func (w *workload) record(s *submission, res outcome, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s.result = res
	if err != nil {
		s.err = err.Error()
		var te *textproto.Error
		if errors.As(err, &te) {
			s.code = te.Code
		}
	}
}

func (w *workload) sleep(d time.Duration) {
	select {
	case <-w.stop:
	case <-time.After(d):
	}
}

// smtpSession is one authenticated SMTP submission session (STARTTLS, AUTH PLAIN) on which
// messages are sent one after another, so that the password is checked once, not per message.
type smtpSession struct {
	conn net.Conn
	c    *smtp.Client
	u    *user
}

const smtpTimeout = 30 * time.Second

func dialSMTP(u *user) (*smtpSession, error) {
	conn, err := net.DialTimeout("tcp", u.home.smtp, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("smtp dial %s: %w", u.home.smtp, err)
	}
	conn.SetDeadline(time.Now().Add(smtpTimeout))
	host, _, _ := net.SplitHostPort(u.home.smtp)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("smtp greeting: %w", err)
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		c.Close()
		return nil, fmt.Errorf("smtp starttls: %w", err)
	}
	if err := c.Auth(smtp.PlainAuth("", u.addr, u.pw, host)); err != nil {
		c.Close()
		return nil, fmt.Errorf("smtp auth %s: %w", u.addr, err)
	}
	return &smtpSession{conn: conn, c: c, u: u}, nil
}

func (s *smtpSession) close() { s.c.Close() }

// send submits one message; the outcome says whether the server acknowledged it.
func (s *smtpSession) send(sub *submission) (outcome, error) {
	s.conn.SetDeadline(time.Now().Add(smtpTimeout))
	fail := func(what string, err error) (outcome, error) { return refused, fmt.Errorf("%s: %w", what, err) }
	if err := s.c.Mail(sub.from.addr); err != nil {
		return fail("MAIL FROM", err)
	}
	if err := s.c.Rcpt(sub.to.addr); err != nil {
		return fail("RCPT TO", err)
	}
	wc, err := s.c.Data()
	if err != nil {
		return fail("DATA", err)
	}
	fmt.Fprintf(wc, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@partition.test>\r\n\r\npartition test message %s, sent %s\r\n",
		sub.from.addr, sub.to.addr, sub.tok, sub.tok, sub.tok, sub.phase)
	if err := wc.Close(); err != nil {
		var te *textproto.Error
		if errors.As(err, &te) {
			return refused, fmt.Errorf("end of DATA: %w", err)
		}
		return uncertain, fmt.Errorf("end of DATA, no answer: %w", err)
	}
	return acked, nil
}
