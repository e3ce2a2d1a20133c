package churn

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"time"

	"epost/internal/ids"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// bobSession is bob's IMAP session of step 3. Every command that answers OK counts and
// moves lastOK; a refused one is logged and counted; a dropped connection is logged in again
// at the next command.
type bobSession struct {
	r        *churnRing
	round    int
	st       *stats
	c        *imapclient.Client
	selected string
	lastOK   time.Time
}

// do runs one command on mailbox (selected first unless empty) and reports whether it
// answered OK.
func (s *bobSession) do(what, mailbox string, fn func(c *imapclient.Client) error) bool {
	if s.c == nil {
		c, err := login(s.r.bob, 2*time.Minute)
		if err != nil {
			s.refused(what, err)
			return false
		}
		s.c, s.selected = c, ""
	}
	if mailbox != "" && s.selected != mailbox {
		if _, err := s.c.Select(mailbox, nil).Wait(); err != nil {
			s.refused("SELECT "+mailbox+" for "+what, err)
			return false
		}
		s.selected = mailbox
	}
	if err := fn(s.c); err != nil {
		s.refused(what, err)
		return false
	}
	s.st.imapOK++
	s.lastOK = time.Now()
	return true
}

func (s *bobSession) refused(what string, err error) {
	s.st.imapNO++
	s.st.refused = append(s.st.refused, fmt.Sprintf("round %d %s: %v", s.round, what, err))
	s.r.t.Logf("round %d: %s: %v", s.round, what, err)
	// A refusal is allowed (a temporary failure is honest); say why the node refused.
	for _, line := range strings.Split(s.r.bob.home.LogTail(400), "\n") {
		if strings.Contains(line, "mailstore:") && (strings.Contains(line, "refused") || strings.Contains(line, "failed")) {
			s.r.t.Logf("    bob's node: %s", line)
		}
	}
	if s.c != nil && s.c.State() == imap.ConnStateLogout {
		s.c.Close()
		s.c = nil
	}
}

func (s *bobSession) close() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// pick draws about frac of toks (at least one, at most limit) from the seed.
func (r *churnRing) pick(toks []string, frac float64, limit int) []string {
	n := min(max(1, int(float64(len(toks))*frac)), limit, len(toks))
	var out []string
	for _, i := range r.rng.Perm(len(toks))[:n] {
		out = append(out, toks[i])
	}
	slices.Sort(out)
	return out
}

// waitDelivered polls bob's INBOX until every 250'd message is there (or the deadline has
// passed: the audit after the restart reports what never came).
func (r *churnRing) waitDelivered(round int, want *expected, deadline time.Duration) {
	start := time.Now()
	for {
		v, err := readMailbox(r.bob, "INBOX", 30*time.Second)
		missing := 0
		for tok := range want.inbox {
			if len(v[tok]) == 0 {
				missing++
			}
		}
		if err == nil && missing == 0 {
			r.t.Logf("round %d: all %d acknowledged messages in bob's INBOX %v after the last 250", round, len(want.inbox), time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > deadline {
			r.t.Logf("round %d: %d of %d acknowledged messages still not in bob's INBOX after %v (err %v); going on", round, missing, len(want.inbox), deadline, err)
			return
		}
		time.Sleep(time.Second)
	}
}

// folderRound is step 3: bob creates a folder while two of the nodes nearest his root log's
// head are down, copies and flags INBOX messages into and in it; the two come back; bob
// copies a few messages into an older folder, creates a second folder with copies, flags
// messages in the first and expunges one there. Everything that answered OK goes into want.
// It returns the session still logged in, for step 4 to restart bob's node under it.
func (r *churnRing) folderRound(round int, want *expected, rootKey ids.Key, st *stats) *bobSession {
	t := r.t
	t.Helper()
	r.waitDelivered(round, want, 60*time.Second)
	start := time.Now()
	s := &bobSession{r: r, round: round, st: st}
	var inbox mailboxView
	s.do("SELECT INBOX", "", func(c *imapclient.Client) error {
		v, err := fetchMailbox(c, "INBOX", false)
		inbox = v
		if err == nil {
			s.selected = "INBOX"
		}
		return err
	})
	var present []string // tokens in INBOX exactly once
	for _, tok := range slices.Sorted(maps.Keys(inbox)) {
		if len(inbox[tok]) == 1 {
			present = append(present, tok)
		}
	}
	if len(present) == 0 {
		t.Logf("round %d: bob's INBOX shows no test message; no folder changes this round", round)
		return s
	}
	keyword := imap.Flag(fmt.Sprintf("$Churn%d", round))
	flagsAdd := func(fl ...imap.Flag) *imap.StoreFlags {
		return &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: fl}
	}
	create := func(name string) *folderWant {
		if !s.do("CREATE "+name, "", func(c *imapclient.Client) error { return c.Create(name, nil).Wait() }) {
			return nil
		}
		fw := &folderWant{name: name, round: round, copies: map[string]bool{}, expunged: map[string]bool{}, flags: map[string][]imap.Flag{}}
		want.folders[name] = fw
		return fw
	}
	copyTo := func(fw *folderWant, toks []string) {
		if fw == nil {
			return
		}
		// A message copied into a folder twice is there twice: copy each only once.
		toks = slices.DeleteFunc(toks, func(tok string) bool { return fw.copies[tok] || fw.expunged[tok] })
		if len(toks) == 0 {
			return
		}
		if s.do(fmt.Sprintf("UID COPY of %d messages to %s", len(toks), fw.name), "INBOX", func(c *imapclient.Client) error {
			_, err := c.Copy(uidSet(inbox, toks), fw.name).Wait()
			return err
		}) {
			for _, tok := range toks {
				fw.copies[tok] = true
			}
		}
	}

	// The root log's head replicas go down while the folder is made and filled.
	targets, layout := r.headTargets(rootKey)
	var sigs []string
	for _, n := range targets {
		sig := r.randomSignal()
		r.stop(n, sig)
		r.countStop(sig, st)
		sigs = append(sigs, sigName(sig)+" "+n.Name)
	}
	tag := fmt.Sprintf("Churn-%d-r%d", r.seed%1000, round)
	a := create(tag + "-a")
	copyTo(a, r.pick(present, 0.5, 20))
	flagged := r.pick(present, 0.34, 10)
	if s.do(fmt.Sprintf("UID STORE +FLAGS (\\Flagged %s) on %d INBOX messages", keyword, len(flagged)), "INBOX", func(c *imapclient.Client) error {
		return c.Store(uidSet(inbox, flagged), flagsAdd(imap.FlagFlagged, keyword), nil).Close()
	}) {
		for _, tok := range flagged {
			addFlags(want.flags, tok, imap.FlagFlagged, keyword)
		}
	}
	for _, n := range targets {
		r.start(n)
	}
	r.waitReady(targets, 60*time.Second)

	// Back with stale copies of the root head: an older folder gets copies, a new one is made.
	var older []*folderWant
	for _, name := range slices.Sorted(maps.Keys(want.folders)) {
		if fw := want.folders[name]; fw.round < round {
			older = append(older, fw)
		}
	}
	if len(older) > 0 {
		fw := older[r.rng.IntN(len(older))]
		fresh := slices.DeleteFunc(slices.Clone(present), func(tok string) bool { return fw.copies[tok] || fw.expunged[tok] })
		if len(fresh) > 0 {
			copyTo(fw, r.pick(fresh, 0.1, 3))
		}
	}
	copyTo(create(tag+"-b"), r.pick(present, 0.25, 10))

	// In the first folder: flags on some copies, one message deleted and expunged.
	if a != nil && len(a.copies) > 0 {
		var inA mailboxView
		if s.do("SELECT "+a.name, "", func(c *imapclient.Client) error {
			v, err := fetchMailbox(c, a.name, false)
			inA = v
			if err == nil {
				s.selected = a.name
			}
			return err
		}) {
			toks := slices.Sorted(maps.Keys(inA))
			fl := r.pick(toks, 0.5, 5)
			if s.do(fmt.Sprintf("UID STORE +FLAGS (\\Flagged %s) on %d messages in %s", keyword, len(fl), a.name), a.name, func(c *imapclient.Client) error {
				return c.Store(uidSet(inA, fl), flagsAdd(imap.FlagFlagged, keyword), nil).Close()
			}) {
				for _, tok := range fl {
					addFlags(a.flags, tok, imap.FlagFlagged, keyword)
				}
			}
			if len(toks) >= 2 {
				victim := r.pick(toks, 0, 1)
				if s.do("UID STORE +FLAGS (\\Deleted) in "+a.name, a.name, func(c *imapclient.Client) error {
					return c.Store(uidSet(inA, victim), flagsAdd(imap.FlagDeleted), nil).Close()
				}) && s.do("EXPUNGE in "+a.name, a.name, func(c *imapclient.Client) error {
					return c.Expunge().Close()
				}) {
					a.expunged[victim[0]] = true
					delete(a.copies, victim[0])
					delete(a.flags, victim[0])
				}
			}
		}
	}
	copies := 0
	for _, fw := range want.folders {
		copies += len(fw.copies)
	}
	t.Logf("round %d: bob's folder changes with root head replicas [%s] (%s) down for the first half: now %d folders, %d copies, %d flagged INBOX messages; %v",
		round, strings.Join(sigs, ", "), layout, len(want.folders), copies, len(want.flags), time.Since(start).Round(time.Millisecond))
	return s
}

// restartBob is step 4: bob's node goes down, kill -9 in odd rounds and SIGTERM in even
// ones, either right after the last OK or a few seconds later (then the mailbox is audited
// once first, to tell a loss before the restart from one caused by it), and comes back.
func (r *churnRing) restartBob(round int, want *expected, s *bobSession) {
	t := r.t
	t.Helper()
	sig := syscall.SIGTERM
	if round%2 == 1 {
		sig = syscall.SIGKILL
	}
	delay := time.Duration(0)
	if r.rng.IntN(2) == 1 {
		delay = time.Duration(1000+r.rng.IntN(4000)) * time.Millisecond
	}
	when := "right after the last OK"
	if delay > 0 {
		s.close()
		f := audit(r.bob, want, 30*time.Second)
		t.Logf("round %d: before the restart: %s", round, f.summary())
		if !f.clean() {
			t.Logf("round %d: already before the restart:%s", round, f.details(10))
		}
		time.Sleep(time.Until(s.lastOK.Add(delay)))
		when = fmt.Sprintf("%v after the last OK", time.Since(s.lastOK).Round(time.Millisecond))
	}
	r.stop(r.bob.home, sig)
	s.close()
	r.countStop(sig, s.st)
	start := time.Now()
	r.start(r.bob.home)
	r.waitReady([]*mailNode{r.bob.home}, 60*time.Second)
	t.Logf("round %d: bob's node: %s %s, ready again after %v", round, sigName(sig), when, time.Since(start).Round(time.Millisecond))
}
