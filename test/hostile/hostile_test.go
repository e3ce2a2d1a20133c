// Package hostile holds multi-process tests of a ring member gone bad (issue 16, item 4):
// real "epost" processes on loopback, and an attacker enrolled in the same ring (a valid
// certificate from its CA) that speaks to one of them over an ordinary authenticated TLS
// connection and sends what it likes. The node must refuse the bad input, limit the floods,
// never take forged nodes into its leaf set, and keep serving the honest nodes; "epost status"
// counts what it refused.
package hostile

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/ring"
	"epost/internal/tcp"
	"epost/internal/transport"
	"epost/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// Overlay message types and flags (internal/pastry/message.go, wire version 1); written by
// hand here, as an attacker would.
const (
	wireVersion  = 1
	mJoinRequest = 1
	mLeafReply   = 15
	flagReady    = 1
)

// overlayMsg encodes a message header from sender (id, advertised address) in ringID, then body.
func overlayMsg(typ byte, ringID, sender ids.ID, addr string, body []byte) []byte {
	b := []byte{wireVersion, typ}
	b = append(b, ringID[:]...)
	b = append(b, sender[:]...)
	b = binary.AppendUvarint(b, uint64(len(addr)))
	b = append(b, addr...)
	b = append(b, flagReady)
	return append(b, body...)
}

type handle struct {
	id   ids.ID
	addr string
}

func handles(hs []handle) []byte {
	b := binary.AppendUvarint(nil, uint64(len(hs)))
	for _, h := range hs {
		b = append(b, h.id[:]...)
		b = binary.AppendUvarint(b, uint64(len(h.addr)))
		b = append(b, h.addr...)
	}
	return b
}

// near returns an id at distance d from id, clockwise if cw.
func near(id ids.ID, d uint64, cw bool) ids.ID {
	var off ids.ID
	binary.BigEndian.PutUint64(off[ids.Bytes-8:], d)
	if cw {
		return ids.Add(id, off)
	}
	return ids.Sub(id, off)
}

func TestHostileMember(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, "hostile", 4, nil)
	// The victim would drop the attacker after its first 100 refused messages
	// (TestGarbageDropsPeer); here it listens on, to show what it does with each kind.
	c.RunFlags = append(c.RunFlags, "--peer-drop-after", "-1")
	rng := rand.New(rand.NewPCG(c.Seed, 16))
	ports := cluster.FreePorts(t, 1)
	honest := c.Nodes[:4]
	for _, n := range honest {
		n.Start()
	}
	c.WaitConverged(honest, 60*time.Second)
	victim := honest[1]

	// The attacker: enrolled like any node ("epost node init"), never run; its key and
	// certificate drive a TLS transport of the test's own.
	bad := c.AddNode("attacker", ports[0], false)
	rn, err := ring.LoadNode(bad.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Uint64
	tr, err := tcp.New(tcp.Config{
		ListenAddr: "127.0.0.1:0",
		ID:         rn.ID,
		TLSConfig:  rn.Trust.TLSConfig(rn.Creds, time.Now),
		VerifyPeer: rn.Trust.Verifier(time.Now),
		Handler:    func(transport.From, []byte) { got.Add(1) },
		// The ring's nodes run with --keepalive 1s and close a connection silent for 3 s:
		// the attacker keeps its connections up the same way between its attacks.
		KeepaliveInterval: time.Second,
		ReadTimeout:       10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ringID, self, addr := rn.Descriptor.RingID, rn.ID, tr.LocalAddr()
	send := func(f []byte) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			err := tr.Send(victim.ID, victim.Addr, f)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("attacker cannot send to the victim: %v", err)
			}
		}
	}
	status := func() (rejected, limited uint64, leaf []string) {
		t.Helper()
		st, err := victim.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Overlay.Rejected, st.Overlay.RateLimited, st.LeafSet
	}
	waitStatus := func(what string, ok func(rejected, limited uint64) bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r, l, _ := status()
			if ok(r, l) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("seed %d: %s: victim's status says rejected=%d rate_limited=%d", c.Seed, what, r, l)
			}
		}
	}
	rejected0, limited0, _ := status()

	// 1. Overlay messages that do not decode, or claim another sender.
	const garbage = 500
	for i := range garbage {
		var f []byte
		if i%2 == 0 {
			f = make([]byte, 1+rng.IntN(1000))
			for j := range f {
				f[j] = byte(rng.Uint32())
			}
			f[0] = wireVersion + 1
		} else {
			f = overlayMsg(mJoinRequest, ringID, honest[2].ID, honest[2].Addr, []byte{0})
		}
		send(f)
	}
	waitStatus("malformed and spoofed messages", func(r, _ uint64) bool { return r-rejected0 >= garbage })

	// 2. Bytes that break the transport's framing: a length prefix of 4 GiB.
	conn, err := tls.Dial("tcp", victim.Addr, rn.Trust.TLSConfig(rn.Creds, time.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hello := binary.BigEndian.AppendUint32(nil, uint32(1+2+len("127.0.0.1:1")))
	hello = append(hello, 2, 0, 1) // kind hello, version 1
	hello = append(hello, "127.0.0.1:1"...)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(hello); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[4] != 2 {
		t.Fatalf("read hello: %v", err)
	}
	if _, err := io.ReadFull(br, make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte{0xff, 0xff, 0xff, 0xff, 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("seed %d: victim kept a connection open after a 4 GiB length prefix", c.Seed)
		}
	}
	victim.WaitLog(10*time.Second, "frame over the size limit, closing connection")
	// The raw connection replaced the attacker's transport's own at the victim, which closed
	// it: frames written into it before the attacker notices are lost in the network (a whole
	// send queue of the flood below, under load). Its next frames go on a new connection.
	tr.Disconnect(victim.ID, errors.New("replaced by the raw connection at the victim"))

	// 3. A flood of join requests.
	// The victim takes on JoinRequestBurst and then one per JoinRequestEvery (half a second)
	// and refuses the rest.
	const joins = 5000
	for range joins {
		send(overlayMsg(mJoinRequest, ringID, self, addr, []byte{0}))
	}
	waitStatus("join flood", func(_, l uint64) bool { return l-limited0 >= joins-100 })

	// 4. Forged nodes next to the victim, at the attacker's address and at one where nothing
	// listens: the victim must never take them into its leaf set.
	forged := map[string]bool{}
	var hs []handle
	for i := range 16 {
		id := near(victim.ID, 1+rng.Uint64N(1<<40), i%2 == 0)
		forged[id.String()] = true
		a := addr
		if i%4 >= 2 {
			a = "127.0.0.1:1"
		}
		hs = append(hs, handle{id, a})
	}
	leafReply := overlayMsg(mLeafReply, ringID, self, addr, handles(hs))
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		send(leafReply)
		_, _, leaf := status()
		for _, id := range leaf {
			if forged[id] {
				t.Fatalf("seed %d: victim took forged node %s into its leaf set", c.Seed, id[:8])
			}
		}
	}

	// The honest ring is as it was, and "epost status" says what the victim refused.
	c.WaitConverged(honest, 60*time.Second)
	out, err := exec.Command(cluster.Bin, "status", "--dir", victim.Dir, "--timeout", "5s").CombinedOutput()
	if err != nil {
		t.Fatalf("epost status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "bad input") || !strings.Contains(string(out), "joins and lookups rate-limited") {
		t.Fatalf("seed %d: epost status does not count the bad input:\n%s", c.Seed, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "bad input") {
			t.Log(line)
		}
	}
	t.Logf("the attacker got %d frames back", got.Load())
}
