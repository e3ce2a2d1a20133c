package glacier

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"epost/internal/daemon"
	"epost/internal/post"
	"epost/test/cluster"
)

// A restarted node takes its users' archive index from the state file (tables of contents
// only; checked against Glacier for anything newer), not from a walk of the chain; without
// the file it walks the chain again. Either way the mail stays readable and archiving goes on.
func TestArchiveStateAcrossRestarts(t *testing.T) {
	c := cluster.New(t, "glacier", 1, map[int][]string{0: noMail})
	c.RunFlags = append(slices.Clone(runFlags), glacierFlags...)
	pool := &portPool{t: t, used: map[string]bool{c.Nodes[0].Addr: true}}
	nodes := []*mailNode{{Node: c.Nodes[0]}}
	for i := 1; i < 5; i++ {
		nodes = append(nodes, pool.enroll(c, fmt.Sprintf("node%d", i+1), i != 1))
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x57a7e))
	home := nodes[1]
	backup := t.TempDir()
	users := []*user{
		addUser(t, c, home, "alice@"+domain, fmt.Sprintf("pw-a-%d", rng.Uint32()), backup),
		addUser(t, c, home, "bob@"+domain, fmt.Sprintf("pw-b-%d", rng.Uint32()), backup),
	}
	for _, n := range nodes {
		n.Start()
	}
	c.WaitConverged(c.Nodes, 60*time.Second)
	if errs := eachUser(users, func(u *user) error { _, err := inboxSubjects(u, 2*time.Minute); return err }); errs != nil {
		t.Fatalf("first logins: %v", errs)
	}
	msgs := makeMessages(rng, c.Seed, users, 12)
	sendAll(t, users, msgs)
	waitDelivered(t, users, msgs, 2*time.Minute)
	waitArchived(t, []*mailNode{home}, 2*time.Minute)

	state := filepath.Join(post.UserDir(home.Dir, users[1].addr), daemon.FileArchiveState)
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no archive state file after archiving: %v", err)
	}
	restart := func(wantFrom string) {
		t.Helper()
		home.Stop()
		home.Start()
		c.WaitConverged(c.Nodes, 60*time.Second)
		// Mail opens at the first login; the archive is ready before the logs open.
		waitRecovered(t, users, msgs, nodes, 2*time.Minute)
		home.WaitLog(30*time.Second, "archive index ready", "from="+wantFrom)
	}
	restart(`"state file"`)

	// More mail after the restart is archived into the same chain.
	more := makeMessages(rng, c.Seed+1, users, 4)
	sendAll(t, users, more)
	all := append(slices.Clone(msgs), more...)
	waitDelivered(t, users, all, 2*time.Minute)
	waitArchived(t, []*mailNode{home}, 2*time.Minute)

	// A crash right after archiving: the file may lag behind Glacier (it is written at most
	// once per --archive-flush); the newer aggregates are read forward from Glacier.
	more2 := makeMessages(rng, c.Seed+2, users, 4)
	sendAll(t, users, more2)
	all = append(all, more2...)
	waitDelivered(t, users, all, 2*time.Minute)
	waitArchived(t, []*mailNode{home}, 2*time.Minute)
	home.Kill9()
	home.Start()
	c.WaitConverged(c.Nodes, 60*time.Second)
	waitRecovered(t, users, all, nodes, 2*time.Minute)
	home.WaitLog(30*time.Second, "archive index ready", "from=\"state file")

	// Without the file, the index comes back from Glacier.
	home.Stop()
	for _, u := range users {
		if err := os.Remove(filepath.Join(post.UserDir(home.Dir, u.addr), daemon.FileArchiveState)); err != nil {
			t.Fatal(err)
		}
	}
	home.Start()
	c.WaitConverged(c.Nodes, 60*time.Second)
	waitRecovered(t, users, all, nodes, 2*time.Minute)
	home.WaitLog(30*time.Second, "archive index ready", "from=Glacier")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(state); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the state file was not written again after the index came back from Glacier: %v", err)
		}
	}
}
