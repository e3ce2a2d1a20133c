package partition

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"epost/test/cluster"
)

// auditResult is what the ring holds against what its servers acknowledged.
type auditResult struct {
	submitted, acked, refused, uncertain int
	permanent                            int      // refusals with a 5xx reply (a client would bounce them)
	filed                                int      // distinct workload messages in their recipient's INBOX
	lost                                 []string // acknowledged, not in the recipient's INBOX
	duplicates                           []string // in an INBOX more than once
	misfiled                             []string // in the INBOX of someone else than the recipient
	forks                                []string // a folder log seen to fork (see inboxTrack), or a node's "FORK" log line
	flagsSet                             int      // STORE +FLAGS \Flagged answered OK
	flagsLost                            []string
	unreadable                           []string // users whose INBOX could not be read
	latency                              map[string][]time.Duration
}

// line is the audit in one line of key=value counts.
func (a *auditResult) line() string {
	s := fmt.Sprintf("audit: submitted=%d acknowledged=%d refused=%d refused_5xx=%d uncertain=%d filed=%d duplicates=%d lost=%d forks=%d misfiled=%d flags_set=%d flags_lost=%d",
		a.submitted, a.acked, a.refused, a.permanent, a.uncertain, a.filed, len(a.duplicates), len(a.lost), len(a.forks), len(a.misfiled), a.flagsSet, len(a.flagsLost))
	if len(a.unreadable) > 0 {
		s += fmt.Sprintf(" unreadable=%d", len(a.unreadable))
	}
	return s
}

// log records the audit line (and in EPOST_AUDIT_LOG, which CI prints).
func (a *auditResult) log(t *testing.T) {
	t.Helper()
	cluster.Audit(t, a.line())
}

func (a *auditResult) clean() bool {
	return len(a.lost)+len(a.duplicates)+len(a.misfiled)+len(a.forks)+len(a.flagsLost)+len(a.unreadable) == 0
}

// details lists the findings, at most max of each kind.
func (a *auditResult) details(max int) string {
	var b strings.Builder
	for _, k := range []struct {
		name string
		list []string
	}{
		{"lost (250'd, not in the recipient's INBOX)", a.lost},
		{"duplicates", a.duplicates},
		{"misfiled", a.misfiled},
		{"forks", a.forks},
		{"flags lost (STORE answered OK)", a.flagsLost},
		{"unreadable", a.unreadable},
	} {
		if len(k.list) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n  %s: %d", k.name, len(k.list))
		for i, l := range k.list {
			if i == max {
				fmt.Fprintf(&b, "\n    ... and %d more", len(k.list)-max)
				break
			}
			b.WriteString("\n    " + l)
		}
	}
	return b.String()
}

// phases summarizes the submissions per phase of the test, in the order they began.
func phases(subs []*submission) string {
	type counts struct{ n, acked, refused, uncertain int }
	var order []string
	by := map[string]*counts{}
	for _, s := range subs {
		c := by[s.phase]
		if c == nil {
			c = &counts{}
			by[s.phase] = c
			order = append(order, s.phase)
		}
		c.n++
		switch s.result {
		case acked:
			c.acked++
		case refused:
			c.refused++
		case uncertain:
			c.uncertain++
		}
	}
	var parts []string
	for _, p := range order {
		c := by[p]
		parts = append(parts, fmt.Sprintf("%s: %d sent, %d acknowledged, %d refused, %d uncertain", p, c.n, c.acked, c.refused, c.uncertain))
	}
	return strings.Join(parts, "; ")
}

// firstErrors lists a few distinct errors the workload's submissions met.
func firstErrors(subs []*submission, max int) string {
	seen := map[string]int{}
	var order []string
	for _, s := range subs {
		if s.err == "" {
			continue
		}
		if seen[s.err] == 0 {
			order = append(order, s.err)
		}
		seen[s.err]++
	}
	var b strings.Builder
	for i, e := range order {
		if i == max {
			fmt.Fprintf(&b, "\n    ... and %d more kinds", len(order)-max)
			break
		}
		fmt.Fprintf(&b, "\n    %dx %s", seen[e], e)
	}
	return b.String()
}

// audit reads every user's INBOX once, on a new session, and compares them with the
// submissions. With check, each read is also checked against what the observer saw before
// (the final audit; earlier polls only wait for mail still on its way).
func audit(r *pring, subs []*submission, tracks map[*user]*inboxTrack, check bool) *auditResult {
	a := &auditResult{submitted: len(subs), latency: map[string][]time.Duration{}}
	views := map[*user]map[string]int{}
	for _, u := range r.users {
		s, err := dialIMAP(u)
		if err != nil {
			a.unreadable = append(a.unreadable, fmt.Sprintf("%s: %v", u.name, err))
			continue
		}
		v, err := s.readInbox()
		s.close()
		if err != nil {
			a.unreadable = append(a.unreadable, fmt.Sprintf("%s: %v", u.name, err))
			continue
		}
		views[u] = v.count()
		tr := tracks[u]
		if check {
			tr.check(v, time.Now())
		}
		for _, m := range v.msgs {
			if m.tok != "" && tr.flagged[m.tok] && !m.flagged {
				a.flagsLost = append(a.flagsLost, fmt.Sprintf("%s: %s (UID %d)", u.name, m.tok, m.uid))
			}
		}
		a.flagsSet += len(tr.flagged)
	}
	byTok := map[string]*submission{}
	for _, s := range subs {
		byTok[s.tok] = s
		switch s.result {
		case acked:
			a.acked++
		case refused:
			a.refused++
			if s.code >= 500 {
				a.permanent++
			}
		case uncertain:
			a.uncertain++
		}
		v, ok := views[s.to]
		if !ok {
			continue // unreadable: reported as such
		}
		switch n := v[s.tok]; {
		case n == 0 && s.result == acked:
			a.lost = append(a.lost, fmt.Sprintf("%s %s -> %s (sent %s, %s)", s.tok, s.from.name, s.to.name, s.phase, s.at.Format("15:04:05.000")))
		case n > 1:
			a.duplicates = append(a.duplicates, fmt.Sprintf("%s in %s's INBOX %d times (sent %s)", s.tok, s.to.name, n, s.phase))
		}
		if v[s.tok] > 0 {
			a.filed++
			if tr := tracks[s.to]; s.result == acked && !tr.seen[s.tok].IsZero() {
				a.latency[s.phase] = append(a.latency[s.phase], tr.seen[s.tok].Sub(s.at))
			}
		}
	}
	for u, v := range views {
		for _, tok := range slices.Sorted(maps.Keys(v)) {
			if s := byTok[tok]; s == nil || s.to != u {
				a.misfiled = append(a.misfiled, fmt.Sprintf("%s in %s's INBOX", tok, u.name))
			}
		}
	}
	if check {
		for _, u := range r.users {
			a.forks = append(a.forks, tracks[u].forks...)
		}
		_, lines := r.forkLines()
		a.forks = append(a.forks, lines...)
	}
	return a
}

// auditUntil polls audit until nothing acknowledged is missing (mail held during the split
// is still being pushed by its holders) or deadline has passed, then audits once more with
// the fork checks; it returns that result and how long the wait took.
func auditUntil(r *pring, subs []*submission, tracks map[*user]*inboxTrack, deadline time.Duration) (*auditResult, time.Duration) {
	start := time.Now()
	for {
		a := audit(r, subs, tracks, false)
		if (len(a.lost) == 0 && len(a.unreadable) == 0) || time.Since(start) > deadline {
			break
		}
		time.Sleep(3 * time.Second)
	}
	waited := time.Since(start)
	return audit(r, subs, tracks, true), waited
}

// latencies summarizes, per phase, how long acknowledged messages took from the 250 to the
// observer's first sight of them in the recipient's INBOX (at most its read interval late).
func (a *auditResult) latencies() string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(a.latency)) {
		l := a.latency[p]
		slices.Sort(l)
		parts = append(parts, fmt.Sprintf("%s: median %v, max %v (%d)", p, l[len(l)/2].Round(100*time.Millisecond), l[len(l)-1].Round(100*time.Millisecond), len(l)))
	}
	return strings.Join(parts, "; ")
}
