package churn

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/post"
)

// TestChurnRestartAudit is issue 11's checker: rounds of mail under churn, folder changes by
// the recipient, a restart of the recipient's node and an audit of everything acknowledged.
func TestChurnRestartAudit(t *testing.T) {
	begin := time.Now()
	r := newChurnRing(t, 8)
	inboxKey, rootKey := r.headKey(r.bob, post.InboxLog), r.headKey(r.bob, post.RootLog)
	_, inboxLayout := r.headTargets(inboxKey)
	_, rootLayout := r.headTargets(rootKey)
	t.Logf("ready after %v; bob's INBOX head %s, nodes nearest first: %s", time.Since(begin).Round(time.Millisecond), inboxKey, inboxLayout)
	t.Logf("bob's root log head %s, nodes nearest first: %s", rootKey, rootLayout)
	want := newExpected()
	st := &stats{}
	for round := 1; round <= *flagRounds; round++ {
		start := time.Now()
		r.mailRound(round, want, inboxKey, st)
		sess := r.folderRound(round, want, rootKey, st)
		r.restartBob(round, want, sess)
		f, took := auditUntil(r.bob, want, *flagAuditDeadline)
		if !f.clean() {
			t.Errorf("round %d: after bob's node restarted, acknowledged mail or folder changes are missing (audit polled %v): %s%s\n%s",
				round, took.Round(time.Millisecond), f.summary(), f.details(25), st)
			r.logNodes(inboxKey, rootKey)
			return
		}
		t.Logf("round %d: audit clean after %v: %s; INBOX %d messages, %d folders; round took %v",
			round, took.Round(time.Millisecond), f.summary(), f.inboxCount, len(want.folders), time.Since(start).Round(time.Millisecond))
	}
	t.Logf("all %d rounds clean in %v\n%s", *flagRounds, time.Since(begin).Round(time.Millisecond), st)
}

// stats counts what the run did, for the final log line and the failure report.
type stats struct {
	sent, acked, kills, terms, imapOK, imapNO int
	refused                                   []string
}

func (s *stats) String() string {
	msg := fmt.Sprintf("run: %d of %d messages got 250; %d kill -9 and %d SIGTERM of nodes; %d IMAP commands OK, %d refused",
		s.acked, s.sent, s.kills, s.terms, s.imapOK, s.imapNO)
	for i, l := range s.refused {
		if i == 10 {
			msg += fmt.Sprintf("\n  ... and %d more refusals", len(s.refused)-10)
			break
		}
		msg += "\n  refused: " + l
	}
	return msg
}

// churnEvent is one planned action of the random churn: take node down with sig, or start it.
type churnEvent struct {
	gap  time.Duration
	node *mailNode
	stop bool
	sig  syscall.Signal
}

// planChurn draws a churn schedule over the other nodes from the seed alone, never planning
// more than two of them down at once; how much of it runs depends on how long the mail takes.
func (r *churnRing) planChurn(n int) []churnEvent {
	var plan []churnEvent
	stopped := map[*mailNode]bool{}
	for range n {
		ev := churnEvent{gap: time.Duration(500+r.rng.IntN(2000)) * time.Millisecond}
		var up, down []*mailNode
		for _, nd := range r.others() {
			if stopped[nd] {
				down = append(down, nd)
			} else {
				up = append(up, nd)
			}
		}
		if len(down) < 2 && (len(down) == 0 || r.rng.IntN(3) > 0) {
			ev.node, ev.stop, ev.sig = up[r.rng.IntN(len(up))], true, r.randomSignal()
			stopped[ev.node] = true
		} else {
			ev.node = down[r.rng.IntN(len(down))]
			delete(stopped, ev.node)
		}
		plan = append(plan, ev)
	}
	return plan
}

// sendAll sends toks from alice to bob one after another, gaps[i] before message i, and
// records each answer. It runs on its own goroutine while the test goroutine churns.
func (r *churnRing) sendAll(toks []string, gaps []time.Duration) []error {
	errs := make([]error, len(toks))
	for i, tok := range toks {
		time.Sleep(gaps[i])
		errs[i] = submit(r.alice, r.bob, tok, 60*time.Second)
	}
	return errs
}

// record adds the messages that got a 250 to want and logs the others.
func (r *churnRing) record(round int, want *expected, toks []string, errs []error, st *stats) (acked int) {
	for i, tok := range toks {
		st.sent++
		if errs[i] != nil {
			r.t.Logf("round %d: %s not acknowledged: %v", round, tok, errs[i])
			continue
		}
		st.acked++
		acked++
		want.inbox[tok] = round
	}
	return acked
}

// mailRound is steps 1 and 2: alice mails bob while random other nodes go down and come
// back; then, with every node up, the two nodes nearest bob's INBOX head (but alice's and
// bob's) are taken down, mail is sent, they come back, and more mail is sent, so that they
// hold stale copies of the head.
func (r *churnRing) mailRound(round int, want *expected, inboxKey ids.Key, st *stats) {
	t := r.t
	t.Helper()
	next := 0
	newToks := func(n int) ([]string, []time.Duration) {
		var toks []string
		var gaps []time.Duration
		for range n {
			toks = append(toks, token(r.seed, round, next))
			gaps = append(gaps, time.Duration(100+r.rng.IntN(700))*time.Millisecond)
			next++
		}
		return toks, gaps
	}

	// Random churn while mail flows.
	start := time.Now()
	toks, gaps := newToks(6 + r.rng.IntN(3))
	plan := r.planChurn(12)
	done := make(chan []error)
	go func() { done <- r.sendAll(toks, gaps) }()
	var errs []error
	var did []string
churn:
	for _, ev := range plan {
		select {
		case errs = <-done:
			break churn
		case <-time.After(ev.gap):
		}
		if !ev.stop {
			r.start(ev.node)
			did = append(did, "start "+ev.node.Name)
			continue
		}
		// The plan keeps at most two stopped; a started node still joining counts as down too.
		for len(r.down()) >= 2 {
			select {
			case errs = <-done:
				break churn
			case <-time.After(300 * time.Millisecond):
			}
		}
		r.stop(ev.node, ev.sig)
		r.countStop(ev.sig, st)
		did = append(did, sigName(ev.sig)+" "+ev.node.Name)
	}
	if errs == nil {
		errs = <-done
	}
	acked := r.record(round, want, toks, errs, st)
	restarted := r.restartAll()
	t.Logf("round %d: %d of %d messages got 250 under churn [%s] in %v; restarted %v",
		round, acked, len(toks), strings.Join(did, ", "), time.Since(start).Round(time.Millisecond), restarted)

	// Two of the nodes nearest the INBOX head go down, mail is sent, they return, more mail.
	start = time.Now()
	targets, layout := r.headTargets(inboxKey)
	var sigs []string
	for _, n := range targets {
		sig := r.randomSignal()
		r.stop(n, sig)
		r.countStop(sig, st)
		sigs = append(sigs, sigName(sig)+" "+n.Name)
	}
	toks, gaps = newToks(3 + r.rng.IntN(3))
	acked = r.record(round, want, toks, r.sendAll(toks, gaps), st)
	for _, n := range targets {
		r.start(n)
	}
	r.waitReady(targets, 60*time.Second)
	toks2, gaps2 := newToks(3 + r.rng.IntN(3))
	acked2 := r.record(round, want, toks2, r.sendAll(toks2, gaps2), st)
	t.Logf("round %d: INBOX head replicas [%s] (%s): %d of %d messages got 250 while down, %d of %d after they returned; %v",
		round, strings.Join(sigs, ", "), layout, acked, len(toks), acked2, len(toks2), time.Since(start).Round(time.Millisecond))
}

func (r *churnRing) countStop(sig syscall.Signal, st *stats) {
	if sig == syscall.SIGKILL {
		st.kills++
	} else {
		st.terms++
	}
}

// logNodes logs the relevant lines of bob's node's log and of the nodes nearest his heads.
func (r *churnRing) logNodes(keys ...ids.Key) {
	r.t.Logf("--- %s (bob's node), warnings and log/head lines:\n%s", r.bob.home.Name, relevantLog(r.bob.home, 40))
	seen := map[*mailNode]bool{r.bob.home: true}
	for _, k := range keys {
		for _, n := range r.byCloseness(k)[:3] {
			if !seen[n] {
				seen[n] = true
				r.t.Logf("--- %s (near %s), warnings and log/head lines:\n%s", n.Name, k, relevantLog(n, 15))
			}
		}
	}
}
