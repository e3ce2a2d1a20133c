// Package imapcheck is a multi-session consistency checker for an IMAP server (issue 15,
// "several clients on one mailbox, random operations, a checker that replays what each was
// told"). Several sessions of one user work on one mailbox at once, each from a goroutine of
// its own with a seeded random sequence of APPEND, STORE, EXPUNGE, UID EXPUNGE, COPY, MOVE,
// NOOP, IDLE and FETCH. Every session keeps a model of the mailbox built only from what the
// server told it (EXISTS, EXPUNGE, FETCH, FLAGS), and the checker holds the server to the
// rules a state-tracking client relies on (RFC 9051 sections 2.3.1, 7.4, 7.5):
//
//   - a message keeps its UID for as long as the session sees it, UIDs ascend with sequence
//     numbers, and an expunged UID never comes back;
//   - sequence numbers shift only through EXPUNGE responses the session was sent: a FETCH of
//     1:* after a NOOP returns exactly the session's model;
//   - EXISTS never shrinks; no EXPUNGE arrives during FETCH, STORE or SEARCH;
//   - a new message's UID is above every UID the session has seen (APPENDUID, FETCH);
//   - every flag a FETCH shows was announced in FLAGS first;
//
// and, once every session has stopped, that all sessions' models agree with each other and
// with a fresh session, that every appended message is there unless a session was told it
// was expunged, and that each session's own keyword ($S<n>, which only that session sets and
// clears) is on exactly the messages where its last acknowledged STORE left it.
//
// It speaks the protocol by hand (no client library between it and the server), over plain
// TCP on loopback or through a dial function.
package imapcheck

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config is one run.
type Config struct {
	Addr           string
	User, Password string
	Sessions       int // concurrent sessions on INBOX (default 4)
	Ops            int // operations per session (default 200)
	Seed           uint64
	// Mailbox is the folder the sessions share (default INBOX); Other receives COPY and MOVE
	// (default "Check-Other", created if missing).
	Mailbox, Other string
	// Timeout bounds one command (default 30 s).
	Timeout time.Duration
	// Trace, when set, receives every line each session sends and reads, prefixed with the
	// session's number (for debugging a failed run).
	Trace io.Writer
}

// Result is what a run found.
type Result struct {
	Errors   []string // violations, each with the session and the command
	Ops      int      // commands sent, all sessions
	Appended int      // messages appended (APPENDUID)
	Final    int      // messages in the mailbox at the end
	Expunged int      // UIDs some session was told were expunged
}

// Failed reports whether the run found a violation.
func (r *Result) Failed() bool { return len(r.Errors) > 0 }

// Summary is a one-line account of the run.
func (r *Result) Summary() string {
	return fmt.Sprintf("imapcheck: ops=%d appended=%d expunged=%d final=%d violations=%d",
		r.Ops, r.Appended, r.Expunged, r.Final, len(r.Errors))
}

// Run runs the sessions and the final checks.
func Run(cfg Config) *Result {
	if cfg.Sessions <= 0 {
		cfg.Sessions = 4
	}
	if cfg.Ops <= 0 {
		cfg.Ops = 200
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = "INBOX"
	}
	if cfg.Other == "" {
		cfg.Other = "Check-Other"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	res := &Result{}
	var mu sync.Mutex
	report := func(format string, a ...any) {
		mu.Lock()
		if len(res.Errors) < 200 {
			res.Errors = append(res.Errors, fmt.Sprintf(format, a...))
		}
		mu.Unlock()
	}
	// The other folder exists before the sessions start (a CREATE race is not the subject).
	setup, err := dial(cfg, -1, report)
	if err != nil {
		report("setup: %v", err)
		return res
	}
	setup.command("CREATE " + quote(cfg.Other))
	setup.close()

	sessions := make([]*session, cfg.Sessions)
	for i := range sessions {
		s, err := dial(cfg, i, report)
		if err != nil {
			report("session %d: %v", i, err)
			return res
		}
		if err := s.selectMailbox(); err != nil {
			report("session %d: %v", i, err)
			return res
		}
		sessions[i] = s
	}
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1))
			for range cfg.Ops {
				if s.dead {
					return
				}
				s.randomOp(rng)
			}
		}()
	}
	wg.Wait()

	// Quiescent: every session syncs and checks its model against the server's answer.
	appended := map[uint32]bool{}
	expunged := map[uint32]bool{}
	for _, s := range sessions {
		res.Ops += s.ops
		for u := range s.appended {
			appended[u] = true
		}
		for u := range s.expunged {
			expunged[u] = true
		}
	}
	res.Appended, res.Expunged = len(appended), len(expunged)
	var views [][]uint32
	for _, s := range sessions {
		if s.dead {
			continue
		}
		s.command("NOOP")
		s.verify(true)
		views = append(views, slices.Clone(s.uids))
	}
	fresh, err := dial(cfg, cfg.Sessions, report)
	if err != nil {
		report("final session: %v", err)
		return res
	}
	defer fresh.close()
	if err := fresh.selectMailbox(); err != nil {
		report("final session: %v", err)
		return res
	}
	if len(fresh.uids) > 0 {
		fresh.command("FETCH 1:* (UID FLAGS)")
	}
	if slices.Contains(fresh.uids, 0) {
		report("final session: FETCH 1:* left sequence numbers without a UID: %v", fresh.uids)
	}
	res.Final = len(fresh.uids)
	for i, v := range views {
		if !slices.Equal(v, fresh.uids) {
			report("final: a session's model %v differs from a fresh session's view %v (view %d)", short(v), short(fresh.uids), i)
		}
	}
	present := map[uint32]bool{}
	for _, u := range fresh.uids {
		present[u] = true
		if !appended[u] {
			report("final: UID %d is in the mailbox but no session appended it", u)
		}
		if expunged[u] {
			report("final: UID %d was reported expunged to a session but is still there", u)
		}
	}
	// A message leaves the mailbox only by EXPUNGE (after a STORE of \Deleted), UID EXPUNGE
	// (after one) or MOVE, and the sessions send those only for UIDs they know: an appended
	// message that is gone without any of them is lost. (A session need not be told of a
	// message that came and went between two of its commands, so counting the EXPUNGEs each
	// session saw proves nothing.)
	removable := map[uint32]bool{}
	for _, s := range sessions {
		for u := range s.removed {
			removable[u] = true
		}
	}
	var lost []uint32
	for u := range appended {
		if !present[u] && !removable[u] {
			lost = append(lost, u)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		report("final: %d appended messages (APPENDUID) are gone though no session deleted or moved them: %v", len(lost), short(lost))
	}
	// Each session's keyword is where its last acknowledged STORE left it.
	for _, s := range sessions {
		kw := s.keyword()
		for u, want := range s.kwState {
			if !present[u] {
				continue
			}
			if got := slices.Contains(fresh.flags[u], kw); got != want {
				report("final: UID %d has %s=%v, but session %d's last acknowledged STORE made it %v", u, kw, got, s.id, want)
			}
		}
		s.close()
	}
	return res
}

func short(u []uint32) string {
	if len(u) <= 20 {
		return fmt.Sprint(u)
	}
	return fmt.Sprintf("%v … (%d)", u[:20], len(u))
}

func quote(s string) string { return strconv.Quote(s) }

// session is one connection and its model of the selected mailbox.
type session struct {
	cfg    Config
	id     int
	conn   net.Conn
	r      *bufio.Reader
	tag    int
	report func(string, ...any)
	dead   bool
	ops    int

	uids      []uint32            // sequence number - 1 -> UID (0: not yet known)
	flags     map[uint32][]string // the flags last shown for a UID
	announced map[string]bool     // FLAGS
	expunged  map[uint32]bool     // UIDs this session was told were expunged
	maxUID    uint32              // the highest UID this session has seen
	appended  map[uint32]bool     // UIDs this session's APPENDs got (APPENDUID)
	kwState   map[uint32]bool     // this session's keyword after its last acknowledged STORE
	removed   map[uint32]bool     // UIDs this session flagged \Deleted or moved
	touched   map[uint32]bool     // UIDs whose flags the running command's responses showed
	inFetch   bool                // a FETCH, STORE or SEARCH is running: no EXPUNGE allowed
	current   string              // the command running, for reports
}

func dial(cfg Config, id int, report func(string, ...any)) (*session, error) {
	c, err := net.DialTimeout("tcp", cfg.Addr, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, id: id, conn: c, r: bufio.NewReader(c), report: report,
		flags: map[uint32][]string{}, announced: map[string]bool{}, expunged: map[uint32]bool{},
		appended: map[uint32]bool{}, kwState: map[uint32]bool{}, removed: map[uint32]bool{}}
	_ = c.SetDeadline(time.Now().Add(cfg.Timeout))
	if line, err := s.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", line, err)
	}
	if st, _ := s.command("LOGIN " + quote(cfg.User) + " " + quote(cfg.Password)); !strings.HasPrefix(st, "OK") {
		c.Close()
		return nil, fmt.Errorf("LOGIN: %s", st)
	}
	return s, nil
}

func (s *session) close() {
	if !s.dead {
		s.command("LOGOUT")
	}
	s.conn.Close()
}

var traceMu sync.Mutex

func (s *session) trace(dir, line string) {
	if s.cfg.Trace == nil {
		return
	}
	traceMu.Lock()
	fmt.Fprintf(s.cfg.Trace, "%d %s %s\n", s.id, dir, line)
	traceMu.Unlock()
}

func (s *session) keyword() string { return "$S" + strconv.Itoa(s.id) }

func (s *session) fail(format string, a ...any) {
	s.report("session %d, %s: %s", s.id, s.current, fmt.Sprintf(format, a...))
}

func (s *session) selectMailbox() error {
	st, _ := s.command("SELECT " + quote(s.cfg.Mailbox))
	if !strings.HasPrefix(st, "OK") {
		return fmt.Errorf("SELECT: %s", st)
	}
	if len(s.uids) > 0 {
		s.command("FETCH 1:* (UID FLAGS)")
	}
	return nil
}

// command sends one command and reads to its tagged response, applying every untagged
// response to the model; it returns the tagged status ("OK ...", "NO ...", "BAD ...") and
// the untagged lines.
func (s *session) command(cmd string) (string, []string) {
	return s.commandLiteral(cmd, nil)
}

// commandLiteral sends cmd followed by a LITERAL+ literal (RFC 7888) when lit is not nil.
func (s *session) commandLiteral(cmd string, lit []byte) (string, []string) {
	if s.dead {
		return "BAD dead", nil
	}
	s.tag++
	tag := fmt.Sprintf("c%d.%d", s.id, s.tag)
	s.current = cmd
	if len(s.current) > 80 {
		s.current = s.current[:80] + "…"
	}
	verb := strings.ToUpper(strings.Fields(cmd)[0])
	if verb == "UID" {
		verb = strings.ToUpper(strings.Fields(cmd)[1])
	}
	s.inFetch = verb == "FETCH" || verb == "STORE" || verb == "SEARCH"
	s.touched = map[uint32]bool{}
	defer func() { s.inFetch = false }()
	_ = s.conn.SetDeadline(time.Now().Add(s.cfg.Timeout))
	out := tag + " " + cmd
	s.trace("C", out)
	if lit != nil {
		out += fmt.Sprintf(" {%d+}\r\n%s", len(lit), lit)
	}
	if _, err := s.conn.Write([]byte(out + "\r\n")); err != nil {
		s.fail("write: %v", err)
		s.dead = true
		return "BAD " + err.Error(), nil
	}
	s.ops++
	var untagged []string
	for {
		line, err := s.readLine()
		if err != nil {
			s.fail("read: %v", err)
			s.dead = true
			return "BAD " + err.Error(), untagged
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if strings.HasPrefix(rest, "BAD") {
				s.fail("BAD: %s", rest)
			}
			return rest, untagged
		}
		if strings.HasPrefix(line, "* ") {
			untagged = append(untagged, line)
			s.untagged(line[2:])
		}
	}
}

// readLine reads a response line, with any literals it holds inlined.
func (s *session) readLine() (string, error) {
	var b strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		s.trace("S", line)
		b.WriteString(line)
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return b.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(s.r, buf); err != nil {
			return "", err
		}
		b.Write(buf)
	}
}

var (
	literalRE = regexp.MustCompile(`~?\{(\d+)\}$`)
	numRE     = regexp.MustCompile(`^(\d+) (EXISTS|EXPUNGE|RECENT|FETCH)\b ?(.*)$`)
	uidRE     = regexp.MustCompile(`\bUID (\d+)`)
	flagsRE   = regexp.MustCompile(`\bFLAGS \(([^)]*)\)`)
	appendRE  = regexp.MustCompile(`\[APPENDUID \d+ (\d+)\]`)
)

// untagged applies one untagged response (without "* ") to the model.
func (s *session) untagged(line string) {
	if rest, ok := strings.CutPrefix(line, "FLAGS ("); ok {
		s.announced = map[string]bool{}
		for _, f := range strings.Fields(strings.TrimSuffix(rest, ")")) {
			s.announced[strings.ToLower(f)] = true
		}
		return
	}
	if strings.HasPrefix(line, "BYE") {
		if !strings.HasPrefix(s.current, "LOGOUT") {
			s.fail("BYE: %s", line)
		}
		return
	}
	m := numRE.FindStringSubmatch(line)
	if m == nil {
		return
	}
	n, _ := strconv.Atoi(m[1])
	switch m[2] {
	case "EXISTS":
		if n < len(s.uids) {
			s.fail("EXISTS %d after %d messages without an EXPUNGE", n, len(s.uids))
			s.uids = s.uids[:n]
		}
		for len(s.uids) < n {
			s.uids = append(s.uids, 0)
		}
	case "EXPUNGE":
		if s.inFetch {
			s.fail("EXPUNGE %d during a FETCH, STORE or SEARCH (RFC 9051 section 7.5.1)", n)
		}
		if n < 1 || n > len(s.uids) {
			s.fail("EXPUNGE %d with %d messages", n, len(s.uids))
			return
		}
		if u := s.uids[n-1]; u != 0 {
			s.expunged[u] = true
			delete(s.flags, u)
			delete(s.kwState, u)
		}
		s.uids = slices.Delete(s.uids, n-1, n)
	case "FETCH":
		if n < 1 || n > len(s.uids) {
			s.fail("FETCH for message %d with %d messages: %s", n, len(s.uids), line)
			return
		}
		var uid uint32
		if um := uidRE.FindStringSubmatch(m[3]); um != nil {
			v, _ := strconv.ParseUint(um[1], 10, 32)
			uid = uint32(v)
			switch old := s.uids[n-1]; {
			case old != 0 && old != uid:
				s.fail("message %d was UID %d and is now UID %d", n, old, uid)
			case old == 0 && s.expunged[uid]:
				s.fail("UID %d came back after it was expunged", uid)
			}
			s.uids[n-1] = uid
			for i := n - 2; i >= 0; i-- { // UIDs ascend with sequence numbers
				if s.uids[i] != 0 {
					if s.uids[i] >= uid {
						s.fail("UID %d at message %d, after UID %d at %d", uid, n, s.uids[i], i+1)
					}
					break
				}
			}
			for i := n; i < len(s.uids); i++ {
				if s.uids[i] != 0 {
					if s.uids[i] <= uid {
						s.fail("UID %d at message %d, before UID %d at %d", uid, n, s.uids[i], i+1)
					}
					break
				}
			}
			s.maxUID = max(s.maxUID, uid)
		} else {
			uid = s.uids[n-1]
		}
		if fm := flagsRE.FindStringSubmatch(m[3]); fm != nil {
			fl := strings.Fields(fm[1])
			for _, f := range fl {
				if !s.announced[strings.ToLower(f)] && !strings.EqualFold(f, `\Recent`) {
					s.fail("flag %s shown before it was announced in FLAGS", f)
				}
			}
			if uid != 0 {
				s.flags[uid] = fl
				s.touched[uid] = true
			}
		}
	}
}

// verify checks the model against FETCH 1:* (UID FLAGS). With quiet set (no other session
// is working) the flags must match what the session was told, too.
func (s *session) verify(quiet bool) {
	before := slices.Clone(s.uids)
	beforeFlags := map[uint32][]string{}
	for u, f := range s.flags {
		beforeFlags[u] = slices.Clone(f)
	}
	if len(before) == 0 {
		return
	}
	st, untagged := s.command("FETCH 1:* (UID FLAGS)")
	if !strings.HasPrefix(st, "OK") {
		s.fail("FETCH 1:*: %s", st)
		return
	}
	fetched := 0
	for _, l := range untagged {
		if m := numRE.FindStringSubmatch(l[2:]); m != nil && m[2] == "FETCH" {
			fetched++
		}
	}
	if quiet && fetched != len(s.uids) {
		s.fail("FETCH 1:* returned %d messages; the session's model has %d", fetched, len(s.uids))
	}
	for i, u := range before {
		if i < len(s.uids) && u != 0 && s.uids[i] != u {
			s.fail("after NOOP, message %d is UID %d in the model but %d on the server", i+1, u, s.uids[i])
		}
	}
	if quiet {
		for i, u := range before {
			if u == 0 && i < len(s.uids) && s.expunged[s.uids[i]] {
				s.fail("message %d: the session was told UID %d was expunged", i+1, s.uids[i])
			}
		}
		for u, f := range beforeFlags {
			got := s.flags[u]
			if !sameFlags(f, got) {
				s.fail("UID %d: told flags %v, FETCH says %v", u, f, got)
			}
		}
	}
}

func sameFlags(a, b []string) bool {
	norm := func(f []string) []string {
		var out []string
		for _, x := range f {
			if !strings.EqualFold(x, `\Recent`) {
				out = append(out, strings.ToLower(x))
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

// knownUID picks a UID of the model at random (0 if none is known).
func (s *session) knownUID(rng *rand.Rand) uint32 {
	var known []uint32
	for _, u := range s.uids {
		if u != 0 {
			known = append(known, u)
		}
	}
	if len(known) == 0 {
		return 0
	}
	return known[rng.IntN(len(known))]
}

func (s *session) randomOp(rng *rand.Rand) {
	switch p := rng.IntN(100); {
	case p < 22:
		s.appendMessage(rng)
	case p < 50:
		s.storeKeyword(rng)
	case p < 58:
		s.storeDeleted(rng)
	case p < 64:
		s.command("EXPUNGE")
	case p < 68:
		if u := s.knownUID(rng); u != 0 {
			s.storeDeletedUID(u)
			s.command(fmt.Sprintf("UID EXPUNGE %d", u))
		}
	case p < 72:
		if u := s.knownUID(rng); u != 0 {
			s.command(fmt.Sprintf("UID COPY %d %s", u, quote(s.cfg.Other)))
		}
	case p < 76:
		if u := s.knownUID(rng); u != 0 {
			s.removed[u] = true
			s.command(fmt.Sprintf("UID MOVE %d %s", u, quote(s.cfg.Other)))
		}
	case p < 86:
		s.command("NOOP")
		s.verify(false)
	case p < 90:
		s.idle(time.Duration(20+rng.IntN(80)) * time.Millisecond)
	case p < 95:
		s.command("UID SEARCH ALL")
	default:
		if len(s.uids) > 0 {
			s.command("FETCH 1:* (UID FLAGS)")
		}
	}
}

func (s *session) appendMessage(rng *rand.Rand) {
	body := fmt.Sprintf("From: s%d@example.org\r\nTo: %s\r\nSubject: check %d-%d\r\nMessage-ID: <%d.%d.%d@imapcheck>\r\n\r\nbody %x\r\n",
		s.id, s.cfg.User, s.id, s.ops, s.id, s.ops, rng.Uint64(), rng.Uint64())
	st, _ := s.commandLiteral("APPEND "+quote(s.cfg.Mailbox), []byte(body))
	if !strings.HasPrefix(st, "OK") {
		s.fail("APPEND: %s", st)
		return
	}
	m := appendRE.FindStringSubmatch(st)
	if m == nil {
		s.fail("APPEND OK without APPENDUID (UIDPLUS): %s", st)
		return
	}
	v, _ := strconv.ParseUint(m[1], 10, 32)
	uid := uint32(v)
	if uid <= s.maxUID {
		s.fail("APPENDUID %d is not above UID %d the session saw before (RFC 9051 section 2.3.1.1)", uid, s.maxUID)
	}
	s.maxUID = max(s.maxUID, uid)
	s.appended[uid] = true
}

func (s *session) storeKeyword(rng *rand.Rand) {
	u := s.knownUID(rng)
	if u == 0 {
		return
	}
	add := rng.IntN(2) == 0
	op := "-FLAGS"
	if add {
		op = "+FLAGS"
	}
	st, _ := s.command(fmt.Sprintf("UID STORE %d %s (%s)", u, op, s.keyword()))
	if !strings.HasPrefix(st, "OK") {
		return // the message may have been expunged meanwhile
	}
	if slices.Contains(s.uids, u) && !s.expunged[u] {
		s.kwState[u] = add
		if s.touched[u] && slices.Contains(s.flags[u], s.keyword()) != add {
			s.fail("UID STORE %d %s (%s) answered with flags %v", u, op, s.keyword(), s.flags[u])
		}
	}
}

func (s *session) storeDeleted(rng *rand.Rand) {
	if u := s.knownUID(rng); u != 0 {
		s.storeDeletedUID(u)
	}
}

func (s *session) storeDeletedUID(u uint32) {
	s.removed[u] = true
	st, _ := s.command(fmt.Sprintf(`UID STORE %d +FLAGS.SILENT (\Deleted)`, u))
	// .SILENT: the server tells the other sessions, not this one (RFC 9051 section 6.4.6),
	// unless the flags changed otherwise meanwhile; the session knows what it asked for.
	if strings.HasPrefix(st, "OK") && slices.Contains(s.uids, u) && !s.touched[u] {
		if f := s.flags[u]; !slices.ContainsFunc(f, func(x string) bool { return strings.EqualFold(x, `\Deleted`) }) {
			s.flags[u] = append(slices.Clone(f), `\Deleted`)
		}
	}
}

// idle runs IDLE for d (RFC 2177), applying what arrives.
func (s *session) idle(d time.Duration) {
	if s.dead {
		return
	}
	s.tag++
	tag := fmt.Sprintf("c%d.%d", s.id, s.tag)
	s.current = "IDLE"
	_ = s.conn.SetDeadline(time.Now().Add(s.cfg.Timeout))
	if _, err := s.conn.Write([]byte(tag + " IDLE\r\n")); err != nil {
		s.dead = true
		return
	}
	s.ops++
	line, err := s.readLine()
	for err == nil && strings.HasPrefix(line, "* ") { // updates may precede the continuation
		s.untagged(line[2:])
		line, err = s.readLine()
	}
	if err != nil || !strings.HasPrefix(line, "+") {
		s.fail("IDLE: %q %v", line, err)
		s.dead = err != nil
		return
	}
	timer := time.AfterFunc(d, func() { _, _ = s.conn.Write([]byte("DONE\r\n")) })
	defer timer.Stop()
	for {
		line, err := s.readLine()
		if err != nil {
			s.fail("IDLE: %v", err)
			s.dead = true
			return
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				s.fail("IDLE ended with %s", rest)
			}
			return
		}
		if strings.HasPrefix(line, "* ") {
			s.untagged(line[2:])
		}
	}
}
