package hostile

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"epost/internal/daemon"
	"epost/internal/ring"
	"epost/internal/tcp"
	"epost/internal/transport"
	"epost/test/cluster"
)

// attacker is a ring member enrolled with the ring's CA ("epost node init"), never run: its
// key and certificate drive a TLS transport of the test's own.
type attacker struct {
	rn  *ring.Node
	tr  *tcp.Transport
	got atomic.Uint64 // frames received
}

func newAttacker(t *testing.T, c *cluster.Cluster) *attacker {
	t.Helper()
	bad := c.AddNode("attacker", cluster.FreePorts(t, 1)[0], false)
	rn, err := ring.LoadNode(bad.Dir)
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{rn: rn}
	a.tr, err = tcp.New(tcp.Config{
		ListenAddr:        "127.0.0.1:0",
		ID:                rn.ID,
		TLSConfig:         rn.Trust.TLSConfig(rn.Creds, time.Now),
		VerifyPeer:        rn.Trust.Verifier(time.Now),
		Handler:           func(transport.From, []byte) { a.got.Add(1) },
		MinBackoff:        time.Millisecond,
		MaxBackoff:        50 * time.Millisecond,
		KeepaliveInterval: time.Second, // the ring's nodes close connections silent for 3 s
		ReadTimeout:       10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.tr.Close() })
	return a
}

// garbage is an overlay message that claims an honest node as its sender: refused by the
// victim, counted against the attacker (the id its certificate proved).
func (a *attacker) garbage(honest *cluster.Node) []byte {
	return overlayMsg(mJoinRequest, a.rn.Descriptor.RingID, honest.ID, honest.Addr, []byte{0})
}

// mailUser is a user of the victim, with its password.
type mailUser struct{ addr, pw string }

func addUser(t *testing.T, c *cluster.Cluster, n *cluster.Node, name string) mailUser {
	t.Helper()
	u := mailUser{addr: name + "@" + "drop.example", pw: fmt.Sprintf("pw-%s-%d", name, c.Seed)}
	pwFile := filepath.Join(c.Root, name+".pw")
	if err := os.WriteFile(pwFile, []byte(u.pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster.Run(t, "user", "add", "--ring", c.RingDir, "--node", n.Dir, "--address", u.addr, "--password-file", pwFile)
	return u
}

// submit sends one message over SMTP submission (STARTTLS, AUTH PLAIN) and returns nil only
// on a 250 to the end of DATA.
func submit(smtpAddr string, from, to mailUser, subject string) error {
	conn, err := net.DialTimeout("tcp", smtpAddr, 5*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	host, _, _ := net.SplitHostPort(smtpAddr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		return err
	}
	if err := c.Auth(smtp.PlainAuth("", from.addr, from.pw, host)); err != nil {
		return err
	}
	if err := c.Mail(from.addr); err != nil {
		return err
	}
	if err := c.Rcpt(to.addr); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s\r\n", from.addr, to.addr, subject, subject)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// inboxCount logs u in over IMAP (STARTTLS) and returns the number of messages in INBOX.
func inboxCount(imapAddr string, u mailUser) (uint32, error) {
	conn, err := net.DialTimeout("tcp", imapAddr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		conn.Close()
		return 0, err
	}
	defer c.Close()
	if err := c.Login(u.addr, u.pw).Wait(); err != nil {
		return 0, err
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return 0, err
	}
	c.Logout().Wait()
	return sel.NumMessages, nil
}

// TestGarbageDropsPeer: a ring member that keeps sending overlay messages the node refuses is
// disconnected after --peer-drop-after of them, refused (whichever side dials) for
// --peer-cooloff, and let in again afterwards; the node serves mail all the while, and
// "epost status" names the dropped peer.
func TestGarbageDropsPeer(t *testing.T) {
	t.Parallel()
	const dropAfter, coolOff = 40, 20 * time.Second
	c := cluster.New(t, "drop", 3, nil)
	mailPorts := cluster.FreePorts(t, 3)
	victim := c.AddNode("victim", cluster.FreePorts(t, 1)[0], true,
		"--imap", mailPorts[0], "--smtp", mailPorts[1], "--pop3", mailPorts[2])
	alice, bob := addUser(t, c, victim, "alice"), addUser(t, c, victim, "bob")
	for _, n := range c.Nodes[:3] {
		n.Start()
	}
	victim.Start("--peer-drop-after", fmt.Sprint(dropAfter), "--peer-drop-window", "1m", "--peer-cooloff", coolOff.String())
	honest := c.Nodes[:4]
	c.WaitConverged(honest, 60*time.Second)
	a := newAttacker(t, c)

	status := func() *daemon.Status {
		t.Helper()
		st, err := victim.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor := func(what string, timeout time.Duration, ok func(*daemon.Status) bool) *daemon.Status {
		t.Helper()
		for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
			st := status()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("seed %d: %s: victim's status: rejected=%d peer guard %+v", c.Seed, what, st.Overlay.Rejected, st.PeerGuard)
			}
		}
	}
	// Mail works before the attack.
	var sent uint32
	mail := func(when string) {
		t.Helper()
		sent++
		if err := submit(mailPorts[1], alice, bob, fmt.Sprintf("%s %d", when, sent)); err != nil {
			t.Fatalf("seed %d: submission %s: %v", c.Seed, when, err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			n, err := inboxCount(mailPorts[0], bob)
			if err == nil && n >= sent {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("seed %d: mail %s: bob's INBOX has %d of %d messages (%v)", c.Seed, when, n, sent, err)
			}
		}
	}
	mail("before the attack")

	// The attacker sends garbage until the victim drops it.
	rejected0 := status().Overlay.Rejected
	for range dropAfter {
		for deadline := time.Now().Add(30 * time.Second); a.tr.Send(victim.ID, victim.Addr, a.garbage(c.Nodes[0])) != nil; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("seed %d: the attacker cannot send to the victim", c.Seed)
			}
		}
	}
	st := waitFor("the attacker dropped", 30*time.Second, func(st *daemon.Status) bool { return st.PeerGuard.Dropped == 1 })
	droppedAt := time.Now()
	if len(st.PeerGuard.Refusing) != 1 || st.PeerGuard.Refusing[0].ID != a.rn.ID.String() {
		t.Fatalf("seed %d: victim refuses %+v, want the attacker %s", c.Seed, st.PeerGuard.Refusing, a.rn.ID.Short())
	}
	if got := st.Overlay.Rejected - rejected0; got < dropAfter {
		t.Fatalf("seed %d: dropped after %d refused messages, want %d", c.Seed, got, dropAfter)
	}
	victim.WaitLog(10*time.Second, "dropped a ring member for bad input")
	for deadline := time.Now().Add(10 * time.Second); a.tr.Stats().ConnsOpen != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: the attacker's connection to the victim is still open", c.Seed)
		}
	}

	// Cooling off: the attacker keeps dialing and sending; nothing of it reaches the overlay,
	// its connections are refused, and mail goes on.
	rejected1 := status().Overlay.Rejected
	stop := make(chan struct{})
	done := make(chan struct{})
	var connected atomic.Bool // the attacker held a connection to the victim during the cool-off
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if a.tr.Send(victim.ID, victim.Addr, a.garbage(c.Nodes[0])) != nil {
				time.Sleep(20 * time.Millisecond)
			}
			if a.tr.Stats().ConnsOpen > 0 && time.Since(droppedAt) < coolOff-time.Second {
				connected.Store(true)
			}
		}
	}()
	mail("while the attacker is refused")
	waitFor("the attacker's connections refused", 10*time.Second, func(st *daemon.Status) bool { return st.PeerGuard.TurnedAway > 0 })
	out, err := exec.Command(cluster.Bin, "status", "--dir", victim.Dir, "--timeout", "5s").CombinedOutput()
	if err != nil {
		t.Fatalf("epost status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "peers dropped for it 1") || !strings.Contains(string(out), "refusing "+a.rn.ID.Short()) {
		t.Fatalf("seed %d: epost status does not show the dropped peer:\n%s", c.Seed, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "bad input") || strings.Contains(line, "refusing") {
			t.Log(line)
		}
	}
	if time.Since(droppedAt) < coolOff-2*time.Second {
		time.Sleep(coolOff - 2*time.Second - time.Since(droppedAt))
	}
	st = status()
	if st.Overlay.Rejected != rejected1 {
		t.Fatalf("seed %d: %d messages of the dropped attacker reached the overlay during its cool-off", c.Seed, st.Overlay.Rejected-rejected1)
	}
	if connected.Load() {
		t.Fatalf("seed %d: the attacker got a connection to the victim during its cool-off", c.Seed)
	}

	// After the cool-off the attacker is let in again (and, as it goes on, dropped again).
	waitFor("the attacker let in after its cool-off", coolOff+30*time.Second, func(st *daemon.Status) bool {
		return st.Overlay.Rejected > rejected1
	})
	t.Logf("the attacker let in again %v after its drop", time.Since(droppedAt).Round(100*time.Millisecond))
	close(stop)
	<-done
	c.WaitConverged(honest, 60*time.Second)
	mail("after the attack")
}

// breakFraming opens an authenticated connection to addr as rn, exchanges hellos by hand and
// sends a 4 GiB length prefix; it reports whether the node got as far as answering the hello
// (a dropped peer's handshake is refused before).
func breakFraming(rn *ring.Node, addr string) (helloAnswered bool, err error) {
	conn, err := tls.Dial("tcp", addr, rn.Trust.TLSConfig(rn.Creds, time.Now))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	hello := binary.BigEndian.AppendUint32(nil, uint32(1+2+len("127.0.0.1:1")))
	hello = append(hello, 2, 0, 1) // kind hello, version 1
	hello = append(hello, "127.0.0.1:1"...)
	if _, err := conn.Write(hello); err != nil {
		return false, err
	}
	br := bufio.NewReader(conn)
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[4] != 2 {
		return false, fmt.Errorf("read hello: %v", err)
	}
	if _, err := io.ReadFull(br, make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)); err != nil {
		return false, err
	}
	if _, err := conn.Write([]byte{0xff, 0xff, 0xff, 0xff, 1}); err != nil {
		return true, err
	}
	_, err = io.Copy(io.Discard, br) // until the node closes the connection
	return true, err
}

// TestFramingBreaksDropPeer: a ring member that connects again and again only to break the
// transport's framing (each time closing its connection) is dropped like one that sends bad
// overlay messages: its next handshakes are refused.
func TestFramingBreaksDropPeer(t *testing.T) {
	t.Parallel()
	const dropAfter = 10
	c := cluster.New(t, "framing", 2, nil)
	victim := c.Nodes[1]
	c.Nodes[0].Start()
	victim.Start("--peer-drop-after", fmt.Sprint(dropAfter), "--peer-cooloff", "10m")
	honest := c.Nodes[:2]
	c.WaitConverged(honest, 60*time.Second)
	a := newAttacker(t, c)
	for i := range dropAfter {
		answered, err := breakFraming(a.rn, victim.Addr)
		if !answered {
			t.Fatalf("seed %d: connection %d: the victim refused the attacker before it broke the framing %d times: %v", c.Seed, i+1, dropAfter, err)
		}
	}
	victim.WaitLog(10*time.Second, "dropped a ring member for bad input")
	if answered, err := breakFraming(a.rn, victim.Addr); answered {
		t.Fatalf("seed %d: the victim still exchanges hellos with a dropped peer (%v)", c.Seed, err)
	}
	st, err := victim.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerGuard.Dropped != 1 || st.PeerGuard.TurnedAway == 0 || st.Transport.ProtocolErrors < dropAfter {
		t.Fatalf("seed %d: victim's status: peer guard %+v, %d protocol errors", c.Seed, st.PeerGuard, st.Transport.ProtocolErrors)
	}
	c.WaitConverged(honest, 30*time.Second)
}
