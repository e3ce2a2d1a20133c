// Package diskfull runs a ring of real "epost" processes whose node directories each live on a
// small filesystem of their own (tmpfs, mounted by the test, so it needs root), fills those
// filesystems while mail flows, and audits afterwards that nothing the ring acknowledged is
// lost, duplicated or corrupted (issue 16, "Disk trouble").
package diskfull

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"epost/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// runFlags are the e2e tests' fast timers: joins, repair, holders' pushes and filing retries
// take seconds. --submit-timeout bounds how long a submission waits for a quorum of replicas
// before it answers 451, so that a refused submission is seen within the test's budget.
var runFlags = append(append([]string{}, cluster.FastFlags...),
	"--past-tick", "100ms",
	"--past-request-timeout", "1s",
	"--past-maintenance-interval", "3s",
	"--past-maintenance-delay", "500ms",
	"--past-drop-grace", "1h",
	"--post-holder-delay", "3s",
	"--post-retry-delay", "1s",
	"--post-online-interval", "5s",
	"--submit-timeout", "8s",
)

// smallFS mounts a tmpfs of sizeMB at dir (made empty first) and unmounts it when the test
// ends. It skips the test when mounting is not possible (not root, or no CAP_SYS_ADMIN).
func smallFS(t *testing.T, dir string, sizeMB int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("diskfull: needs root to mount a small tmpfs per node (CI runs as root); skipped")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0755", sizeMB), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("diskfull: cannot mount a tmpfs at %s (%v: %s); skipped", dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fill writes a filler file into dir until its filesystem has no byte left, and returns the
// file's path and size.
func fill(t *testing.T, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("filler: %v", err)
	}
	defer f.Close()
	var size int64
	for _, chunk := range []int{1 << 20, 4 << 10, 512, 1} {
		buf := make([]byte, chunk)
		for {
			n, err := f.Write(buf)
			size += int64(n)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("filler: %v", err)
			}
		}
	}
	return path, size
}

// freeBytes is what the filesystem holding dir has left.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// user is a mail user and the node that serves her.
type user struct {
	addr, pw   string
	smtp, imap string
	node       *cluster.Node
}

// outcome is a submission's result class.
type outcome int

const (
	acked     outcome = iota // 250
	tempFail                 // 4xx
	permFail                 // 5xx
	noAnswer                 // the connection failed or timed out: no reply to the end of DATA
	refusedTx                // refused before DATA (connect, STARTTLS, AUTH, MAIL, RCPT)
)

func (o outcome) String() string {
	return [...]string{"250", "4xx", "5xx", "no answer", "refused before DATA"}[o]
}

// submit sends one message over SMTP submission (STARTTLS, AUTH PLAIN) and classifies the
// reply to the end of DATA. The whole exchange is bounded by limit.
func submit(from *user, to, subject, body string, limit time.Duration) (outcome, error) {
	conn, err := net.DialTimeout("tcp", from.smtp, 5*time.Second)
	if err != nil {
		return refusedTx, err
	}
	conn.SetDeadline(time.Now().Add(limit))
	host, _, _ := net.SplitHostPort(from.smtp)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return refusedTx, err
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return refusedTx, err
	}
	if err := c.Auth(smtp.PlainAuth("", from.addr, from.pw, host)); err != nil {
		return refusedTx, err
	}
	if err := c.Mail(from.addr); err != nil {
		return classify(err, refusedTx), err
	}
	if err := c.Rcpt(to); err != nil {
		return classify(err, refusedTx), err
	}
	w, err := c.Data()
	if err != nil {
		return classify(err, refusedTx), err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s\r\n", from.addr, to, subject, body)
	if err := w.Close(); err != nil { // the reply to the end of DATA
		return classify(err, noAnswer), err
	}
	c.Quit()
	return acked, nil
}

// classify maps an SMTP error to its class; other errors (I/O) get otherwise.
func classify(err error, otherwise outcome) outcome {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return otherwise
	}
	switch te.Code / 100 {
	case 4:
		return tempFail
	case 5:
		return permFail
	}
	return otherwise
}

// readTokens logs in over IMAP (STARTTLS) and counts, per token matching re, the INBOX
// messages holding it.
func readTokens(u *user, re *regexp.Regexp) (map[string]int, error) {
	c, err := imapclient.DialStartTLS(u.imap, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		return nil, fmt.Errorf("imap dial %s: %w", u.imap, err)
	}
	defer c.Close()
	if err := c.Login(u.addr, u.pw).Wait(); err != nil {
		return nil, fmt.Errorf("imap login %s: %w", u.addr, err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("select INBOX: %w", err)
	}
	got := map[string]int{}
	if sel.NumMessages > 0 {
		var seq imap.SeqSet
		seq.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for _, m := range msgs {
			// One token per message: a message is counted once whatever it quotes.
			if tok := re.Find(m.FindBodySection(&imap.FetchItemBodySection{})); tok != nil {
				got[string(tok)]++
			}
		}
	}
	c.Logout().Wait()
	return got, nil
}

// mustLogin logs u in once over IMAP, which opens her keys on her node (her mail is filed
// from then on), retrying for a while as a mail client would.
func mustLogin(t *testing.T, u *user) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := readTokens(u, regexp.MustCompile(`\A\z`))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot log in: %v\n%s", u.addr, err, u.node.LogTail(30))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// logSince is what n's log gained after mark bytes.
func logSince(n *cluster.Node, mark int) string {
	l := n.Log()
	return l[min(mark, len(l)):]
}
