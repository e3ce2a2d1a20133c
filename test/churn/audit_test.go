package churn

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// expected is what bob's mailbox must hold: everything the servers acknowledged (SMTP 250,
// IMAP OK), accumulated over all rounds. A command that failed, or whose answer never came,
// adds nothing; what it may have done anyway is not held against the ring.
type expected struct {
	inbox   map[string]int // token -> round of its 250
	folders map[string]*folderWant
	// flags are INBOX flags that a STORE +FLAGS set with OK: token -> flags.
	flags map[string][]imap.Flag
}

// folderWant is one folder whose CREATE answered OK.
type folderWant struct {
	name   string
	round  int
	copies map[string]bool // token -> a COPY into the folder answered OK
	// expunged are tokens whose message an EXPUNGE removed from the folder with OK: they must
	// stay gone (a copy came in only once, so nothing else can bring them back).
	expunged map[string]bool
	flags    map[string][]imap.Flag
}

func newExpected() *expected {
	return &expected{inbox: map[string]int{}, folders: map[string]*folderWant{}, flags: map[string][]imap.Flag{}}
}

func addFlags(m map[string][]imap.Flag, tok string, fl ...imap.Flag) {
	for _, f := range fl {
		if !slices.Contains(m[tok], f) {
			m[tok] = append(m[tok], f)
		}
	}
}

// findings is one audit's result; every list names what is wrong, one line each.
type findings struct {
	unreadable   string   // the mailbox could not be read at all
	lost         []string // 250'd tokens not in INBOX
	duplicates   []string // tokens in a mailbox more than once
	foldersLost  []string
	copiesLost   []string
	flagsLost    []string
	expungesLost []string // expunged messages back in their folder
	mailboxes    []string // what LIST showed
	inboxCount   int
}

func (f *findings) clean() bool {
	return f.unreadable == "" && len(f.lost)+len(f.duplicates)+len(f.foldersLost)+len(f.copiesLost)+len(f.flagsLost)+len(f.expungesLost) == 0
}

// summary is the counts, one key=value each, in the form the simulator's phase lines use.
func (f *findings) summary() string {
	s := fmt.Sprintf("lost=%d duplicates=%d folders_lost=%d copies_lost=%d flags_lost=%d expunges_lost=%d",
		len(f.lost), len(f.duplicates), len(f.foldersLost), len(f.copiesLost), len(f.flagsLost), len(f.expungesLost))
	if f.unreadable != "" {
		s += " unreadable=1"
	}
	return s
}

// details lists every finding, at most max per kind.
func (f *findings) details(max int) string {
	var b strings.Builder
	if f.unreadable != "" {
		fmt.Fprintf(&b, "\n  mailbox unreadable: %s", f.unreadable)
	}
	for _, k := range []struct {
		name string
		list []string
	}{
		{"lost (250'd, not in INBOX)", f.lost},
		{"duplicates", f.duplicates},
		{"folders lost (CREATE answered OK)", f.foldersLost},
		{"copies lost (COPY answered OK)", f.copiesLost},
		{"flags lost (STORE answered OK)", f.flagsLost},
		{"expunged messages back (EXPUNGE answered OK)", f.expungesLost},
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
	if f.unreadable == "" {
		fmt.Fprintf(&b, "\n  INBOX holds %d test messages; LIST shows %v", f.inboxCount, f.mailboxes)
	}
	return b.String()
}

// audit reads bob's whole mailbox once (INBOX and every expected folder) and compares it
// with want.
func audit(u *user, want *expected, timeout time.Duration) *findings {
	f := &findings{}
	c, err := login(u, timeout)
	if err != nil {
		f.unreadable = err.Error()
		return f
	}
	defer c.Close()
	if f.mailboxes, err = listMailboxes(c); err != nil {
		f.unreadable = err.Error()
		return f
	}
	inbox, err := fetchMailbox(c, "INBOX", true)
	if err != nil {
		f.unreadable = err.Error()
		return f
	}
	for _, ms := range inbox {
		f.inboxCount += len(ms)
	}
	for _, tok := range slices.Sorted(maps.Keys(want.inbox)) {
		if len(inbox[tok]) == 0 {
			f.lost = append(f.lost, fmt.Sprintf("%s (round %d)", tok, want.inbox[tok]))
		}
	}
	checkBox(f, "INBOX", inbox, nil, want.flags, nil)
	for _, name := range slices.Sorted(maps.Keys(want.folders)) {
		fw := want.folders[name]
		if !slices.Contains(f.mailboxes, name) {
			f.foldersLost = append(f.foldersLost, fmt.Sprintf("%s (round %d, %d copies): not in LIST", name, fw.round, len(fw.copies)))
		}
		box, err := fetchMailbox(c, name, true)
		if err != nil {
			if c.State() == imap.ConnStateLogout {
				f.unreadable = err.Error()
				return f
			}
			if slices.Contains(f.mailboxes, name) {
				f.foldersLost = append(f.foldersLost, fmt.Sprintf("%s (round %d): in LIST but %v", name, fw.round, err))
			}
			for _, tok := range slices.Sorted(maps.Keys(fw.copies)) {
				f.copiesLost = append(f.copiesLost, name+": "+tok+" (with the folder)")
			}
			continue
		}
		checkBox(f, name, box, fw.copies, fw.flags, fw.expunged)
	}
	c.Logout().Wait()
	return f
}

// checkBox compares one mailbox with what was acknowledged for it: copies (nil for INBOX,
// whose messages audit checks itself), flags and expunges.
func checkBox(f *findings, name string, box mailboxView, copies map[string]bool, flags map[string][]imap.Flag, expunged map[string]bool) {
	for _, tok := range slices.Sorted(maps.Keys(box)) {
		if n := len(box[tok]); n > 1 {
			f.duplicates = append(f.duplicates, fmt.Sprintf("%s: %s %d times", name, tok, n))
		}
	}
	for _, tok := range slices.Sorted(maps.Keys(copies)) {
		if len(box[tok]) == 0 {
			f.copiesLost = append(f.copiesLost, name+": "+tok)
		}
	}
	for _, tok := range slices.Sorted(maps.Keys(expunged)) {
		if len(box[tok]) > 0 {
			f.expungesLost = append(f.expungesLost, name+": "+tok)
		}
	}
	for _, tok := range slices.Sorted(maps.Keys(flags)) {
		ms := box[tok]
		if len(ms) == 0 {
			continue // counted as lost or as a lost copy already
		}
		for _, fl := range flags[tok] {
			if !slices.Contains(ms[0].flags, fl) {
				f.flagsLost = append(f.flagsLost, fmt.Sprintf("%s: %s %s (has %v)", name, tok, fl, ms[0].flags))
			}
		}
	}
}

// auditUntil polls audit until it is clean or deadline has passed, and returns the last
// result: mail still being pushed by its holders, or a log still replaying, gets its time.
func auditUntil(u *user, want *expected, deadline time.Duration) (*findings, time.Duration) {
	start := time.Now()
	for {
		f := audit(u, want, 30*time.Second)
		if f.clean() || time.Since(start) > deadline {
			return f, time.Since(start)
		}
		time.Sleep(2 * time.Second)
	}
}
