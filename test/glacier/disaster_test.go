// Package glacier holds the acceptance test of Glacier in the daemon, on real processes: a
// ring of twelve "epost node run" on loopback with mail users, mail sent over SMTP submission
// and read over IMAP, then seven nodes killed with SIGKILL and their directories deleted at
// once, and every message read back, byte for byte, by users whose keys were restored from a
// backup onto fresh nodes. Besides wiping the dead nodes' directories it touches no node's
// files but a user's key files, which a user can back up and restore by hand.
package glacier

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/post"
	"epost/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const (
	ringSize     = 12
	killed       = 7
	usersPerHome = 2
	messageCount = 200
	domain       = "glacier.example" // cluster.New's ring name + ".example"
)

// homeIdx are the indices (in cluster order) of the nodes that get users: node1 founds the
// ring and survives, so that the fresh nodes can join through it; node8-node12 have no users.
var homeIdx = []int{1, 2, 3, 4, 5, 6}

// TestDisasterSevenOfTwelve: twelve users on six of twelve nodes exchange 200 messages; once
// the mail is archived in Glacier, seven nodes (three or four of them users' homes) die at
// once and lose their disks. Seven fresh nodes join, the users of the dead homes restore their
// key files onto them, and every user then reads every message sent to them, byte for byte.
func TestDisasterSevenOfTwelve(t *testing.T) {
	began := time.Now()
	// node1 founds the ring; the others join through it.
	c := cluster.New(t, "glacier", 1, map[int][]string{0: noMail})
	c.RunFlags = append(slices.Clone(runFlags), glacierFlags...)
	pool := &portPool{t: t, used: map[string]bool{c.Nodes[0].Addr: true}}
	nodes := []*mailNode{{Node: c.Nodes[0]}}
	for i := 1; i < ringSize; i++ {
		nodes = append(nodes, pool.enroll(c, fmt.Sprintf("node%d", i+1), !slices.Contains(homeIdx, i)))
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x91ac1e5))

	// The victims: three or four homes and the rest from the nodes without users.
	var homes, victims []*mailNode
	for _, i := range homeIdx {
		homes = append(homes, nodes[i])
	}
	k := 3 + rng.IntN(2)
	for _, p := range rng.Perm(len(homeIdx))[:k] {
		victims = append(victims, nodes[homeIdx[p]])
	}
	others := nodes[homeIdx[len(homeIdx)-1]+1:]
	for _, p := range rng.Perm(len(others))[:killed-k] {
		victims = append(victims, others[p])
	}

	backup := t.TempDir()
	var users []*user
	for _, h := range homes {
		for range usersPerHome {
			addr := fmt.Sprintf("user%02d@%s", len(users)+1, domain)
			users = append(users, addUser(t, c, h, addr, fmt.Sprintf("pw-%d-%d", len(users)+1, rng.Uint32()), backup))
		}
	}
	for _, n := range nodes {
		n.Start()
	}
	took := c.WaitConverged(c.Nodes, 90*time.Second)
	t.Logf("ring of %d converged after %v", ringSize, took.Round(time.Millisecond))

	// Keys open at the first login, and only an online user's mail is archived.
	// A login told "try again later" (NO [UNAVAILABLE]: the ring or the node's password
	// checks are busy) is tried again, as a mail client does.
	if errs := eachUser(users, func(u *user) error {
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			_, err := inboxSubjects(u, 2*time.Minute)
			if err == nil || !strings.Contains(err.Error(), "UNAVAILABLE") || time.Now().After(deadline) {
				return err
			}
		}
	}); errs != nil {
		t.Fatalf("first logins: %v", errs)
	}
	t.Logf("%d users logged in after %v", len(users), time.Since(began).Round(time.Millisecond))

	msgs := makeMessages(rng, c.Seed, users, messageCount)
	sendAll(t, users, msgs)
	waitDelivered(t, users, msgs, 2*time.Minute)

	took = waitArchived(t, homes, 3*time.Minute)
	t.Logf("archived in Glacier after %v:%s", took.Round(time.Millisecond), glacierStatuses(homes))
	logical := 0
	for _, m := range msgs {
		logical += len(m.raw)
	}
	t.Logf("storage: %s", storageSummary(nodes, logical))

	// The disaster: seven nodes die at once and their disks with them.
	killedAt := time.Now()
	var deadHomes []*mailNode
	var names []string
	for _, n := range victims {
		n.Kill9()
		names = append(names, n.Name)
		if slices.Contains(homes, n) {
			deadHomes = append(deadHomes, n)
		}
	}
	for _, n := range victims {
		if err := os.RemoveAll(n.Dir); err != nil {
			t.Fatal(err)
		}
	}
	live := slices.DeleteFunc(slices.Clone(nodes), func(n *mailNode) bool { return slices.Contains(victims, n) })
	t.Logf("killed with SIGKILL and wiped %v (%d homes of users)", names, len(deadHomes))

	// Seven fresh nodes join through node1; the users of each dead home restore their key
	// files onto one of them before it starts.
	var fresh []*mailNode
	for i := range killed {
		fresh = append(fresh, pool.enroll(c, fmt.Sprintf("node%d", ringSize+1+i), false))
	}
	for j, dead := range deadHomes {
		for _, u := range users {
			if u.home == dead {
				copyKeys(t, u.backup, post.UserDir(fresh[j].Dir, u.addr))
				u.home = fresh[j]
				t.Logf("%s: keys restored from backup on %s (was on %s)", u.addr, fresh[j].Name, dead.Name)
			}
		}
	}
	for _, n := range fresh {
		n.Start()
	}
	live = append(live, fresh...)
	var liveNodes []*cluster.Node
	for _, n := range live {
		liveNodes = append(liveNodes, n.Node)
	}
	c.WaitConverged(liveNodes, 90*time.Second)
	t.Logf("ring of %d (5 survivors, 7 fresh) converged %v after the kill", len(live), time.Since(killedAt).Round(time.Millisecond))

	last := waitRecovered(t, users, msgs, live, 3*time.Minute)
	t.Logf("recovery: every user read every message %v after the kill", last.Sub(killedAt).Round(time.Millisecond))
	t.Logf("glacier after recovery:%s", glacierStatuses(live))
	t.Logf("whole run %v", time.Since(began).Round(time.Millisecond))
}

// eachUser runs f for every user at once and returns the errors (nil if none).
func eachUser(users []*user, f func(*user) error) []error {
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() { errs[i] = f(u) })
	}
	wg.Wait()
	if errors.Join(errs...) == nil {
		return nil
	}
	return slices.DeleteFunc(errs, func(e error) bool { return e == nil })
}

// sendAll submits every message, each sender's in order over one session, senders at once.
func sendAll(t *testing.T, users []*user, msgs []*message) {
	t.Helper()
	start := time.Now()
	errs := eachUser(users, func(u *user) error {
		var mine []*message
		for _, m := range msgs {
			if m.from == u {
				mine = append(mine, m)
			}
		}
		return submit(u, mine)
	})
	if errs != nil {
		t.Fatalf("submission: %v", errs)
	}
	t.Logf("%d messages submitted (250 to each) in %v", len(msgs), time.Since(start).Round(time.Millisecond))
}

// to returns the messages sent to u.
func to(u *user, msgs []*message) []*message {
	var out []*message
	for _, m := range msgs {
		if m.to == u {
			out = append(out, m)
		}
	}
	return out
}

// waitDelivered polls every user's INBOX until it holds every message sent to the user once.
func waitDelivered(t *testing.T, users []*user, msgs []*message, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	done := map[*user]bool{}
	lastLog := start
	for {
		var mu sync.Mutex
		var waiting []string
		pending := slices.DeleteFunc(slices.Clone(users), func(u *user) bool { return done[u] })
		errs := eachUser(pending, func(u *user) error {
			got, err := inboxSubjects(u, time.Minute)
			if err != nil {
				return err
			}
			n := 0
			for _, m := range to(u, msgs) {
				switch len(got[m.subject]) {
				case 0:
					n++
				case 1:
				default:
					return fmt.Errorf("%s's INBOX holds %q %d times, want once", u.addr, m.subject, len(got[m.subject]))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if n == 0 {
				done[u] = true
			} else {
				waiting = append(waiting, fmt.Sprintf("%s: %d", u.addr, n))
			}
			return nil
		})
		for _, err := range errs {
			if strings.Contains(err.Error(), "times, want once") {
				t.Fatal(err)
			}
		}
		if len(done) == len(users) {
			t.Logf("all %d messages in their recipients' INBOX %v after the last 250", len(msgs), time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > timeout {
			t.Fatalf("messages not delivered after %v: missing per user %v; errors %v", timeout, waiting, errs)
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			t.Logf("delivery, %v: messages still missing per user %v (errors %v)", time.Since(start).Round(time.Second), waiting, errs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitRecovered checks, user by user and over and over, that each user's INBOX holds every
// message sent to the user with its full content, and returns when the last user was done.
func waitRecovered(t *testing.T, users []*user, msgs []*message, live []*mailNode, timeout time.Duration) time.Time {
	t.Helper()
	start := time.Now()
	verified := map[*user]map[string]bool{}
	for _, u := range users {
		verified[u] = map[string]bool{}
	}
	done := map[*user]time.Time{}
	missing := map[*user][]string{}
	lastLog := start
	for {
		var mu sync.Mutex
		pending := slices.DeleteFunc(slices.Clone(users), func(u *user) bool { return !done[u].IsZero() })
		eachUser(pending, func(u *user) error {
			miss, err := verifyInbox(u, to(u, msgs), verified[u], time.Minute)
			if err != nil {
				miss = []string{err.Error()}
			}
			mu.Lock()
			defer mu.Unlock()
			missing[u] = miss
			if len(miss) == 0 {
				done[u] = time.Now()
				t.Logf("%s at %s: all %d messages read back %v after the ring converged", u.addr, u.home.Name, len(to(u, msgs)), time.Since(start).Round(time.Millisecond))
			}
			return nil
		})
		if len(done) == len(users) {
			var last time.Time
			for _, d := range done {
				if d.After(last) {
					last = d
				}
			}
			return last
		}
		report := func() string {
			var b strings.Builder
			for _, u := range users {
				if m := missing[u]; done[u].IsZero() {
					fmt.Fprintf(&b, "\n  %s at %s: %d of %d messages read back; problems:", u.addr, u.home.Name, len(verified[u]), len(to(u, msgs)))
					for _, s := range m[:min(len(m), 8)] {
						b.WriteString("\n    " + s)
					}
				}
			}
			return b.String()
		}
		if time.Since(start) > timeout {
			t.Fatalf("mail not recovered %v after the ring converged:%s\nglacier status:%s\nlogs:%s",
				timeout, report(), glacierStatuses(live), glacierLines(live, 15))
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			t.Logf("recovery, %v after convergence:%s", time.Since(start).Round(time.Second), report())
		}
		time.Sleep(time.Second)
	}
}
