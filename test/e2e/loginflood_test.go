package e2e

import (
	"crypto/tls"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// rssKiB is a process's resident set (VmRSS), in KiB.
func rssKiB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// TestLoginFlood (issue 16): 50 clients guess bob's IMAP password at once for 10 s. Password
// checks (64 MiB of Argon2id each) run one at a time and failed logins are answered later and
// later, so the node's memory stays within 100 MB of where it started, and bob, who logged in
// before, still logs in within 2 s during the attack.
func TestLoginFlood(t *testing.T) {
	seed := testSeed(t)
	r := newRing(t, seed, 3, "bob")
	for _, n := range r.nodes {
		n.start()
	}
	waitReady(t, r.nodes...)
	bob := "bob@e2e.example"
	countInbox(t, r, bob, "nothing")
	home := r.home[bob]
	home.mu.Lock()
	pid := home.cmd.Process.Pid
	home.mu.Unlock()
	time.Sleep(time.Second)
	base := rssKiB(pid)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var attempts, refused atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// The guesser comes from another address than bob's client (127.0.0.2):
				// bob's own address, where he logged in before, passes the lock.
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
				conn, err := d.Dial("tcp", home.imap)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
				if err != nil {
					conn.Close()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				attempts.Add(1)
				if err := c.Login(bob, "not-the-password").Wait(); err != nil {
					refused.Add(1)
				}
				c.Close()
			}
		}()
	}
	peak := base
	var loginTook time.Duration
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v := rssKiB(pid); v > peak {
			peak = v
		}
		if loginTook == 0 && time.Until(deadline) < 5*time.Second {
			start := time.Now()
			countInbox(t, r, bob, "nothing")
			loginTook = time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d wrong logins tried, %d refused; RSS %d MiB before, peak %d MiB; bob logged in during the attack in %v",
		attempts.Load(), refused.Load(), base>>10, peak>>10, loginTook.Round(time.Millisecond))
	if peak-base > 100<<10 {
		t.Fatalf("RSS grew by %d MiB under the flood, want at most 100", (peak-base)>>10)
	}
	if loginTook > 2*time.Second {
		t.Fatalf("bob's login during the attack took %v, want under 2 s", loginTook)
	}
	if attempts.Load() == 0 || refused.Load() != attempts.Load() {
		t.Fatalf("attempts %d, refused %d", attempts.Load(), refused.Load())
	}
	// The guesses locked bob's name against strangers (bob's own address, where he had logged
	// in before, still passes: the login above): status counts the refusals made without a
	// password check.
	if st, ok := home.status(); !ok || st.Mail.Auth.Locked == 0 {
		t.Fatalf("status shows no login refused under a lock after %d attempts, %d wrong passwords checked (status read: %v)", attempts.Load(), st.Mail.Auth.Wrong, ok)
	} else {
		t.Logf("%d wrong passwords checked, %d attempts refused under the lock without a check", st.Mail.Auth.Wrong, st.Mail.Auth.Locked)
	}
}
