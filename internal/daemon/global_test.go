package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"epost/internal/dnstest"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/mailqueue"
	"epost/internal/multiring"
	"epost/internal/past"
	"epost/internal/post"
	"epost/internal/ring"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fedRing is a ring of one gateway and, optionally, one ordinary node.
type fedRing struct {
	r        *ring.Ring
	gw       *Node
	gwLog    *lockedBuffer
	plain    *Node
	plainLog *lockedBuffer
	global   string // the gateway's global-ring address
}

// startFedRing makes and starts a ring; the domains in publish get their _epost records in
// dns before its gateway starts.
func startFedRing(t *testing.T, name string, domains []string, dns *dnstest.Server, publish []string, globalBootstrap []string, withPlain bool) *fedRing {
	t.Helper()
	root := t.TempDir()
	now := time.Now()
	r, err := ring.Create(filepath.Join(root, "ring"), ring.DefaultParams(name, domains...), now)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range publish {
		dns.SetTXT(ring.DNSName(d), 10*time.Minute, ring.DNSValue(r.Descriptor.RingID))
	}
	resolver := dns.Addr
	addrs := freeAddrs(t, 3)
	gwDir := filepath.Join(root, "gw")
	if _, err := ring.InitNode(r, gwDir, ring.NodeConfig{Listen: addrs[0]}, ring.Validity{}, now, ring.RoleGateway); err != nil {
		t.Fatal(err)
	}
	fr := &fedRing{r: r, gwLog: &lockedBuffer{}, global: addrs[2]}
	gw, err := Open(Options{Dir: gwDir, Timers: fastTimers, Seed: 7, NoControl: true,
		Logger:       slog.New(slog.NewTextHandler(fr.gwLog, nil)),
		GlobalListen: addrs[2], GlobalBootstrap: globalBootstrap, Resolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop() })
	fr.gw = gw
	if withPlain {
		dir := filepath.Join(root, "plain")
		if _, err := ring.InitNode(r, dir, ring.NodeConfig{Listen: addrs[1], Bootstrap: []string{addrs[0]}}, ring.Validity{}, now); err != nil {
			t.Fatal(err)
		}
		fr.plainLog = &lockedBuffer{}
		plain, err := Open(Options{Dir: dir, Timers: fastTimers, Seed: 8, NoControl: true, Resolver: resolver,
			Logger: slog.New(slog.NewTextHandler(fr.plainLog, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := plain.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { plain.Stop() })
		fr.plain = plain
	}
	return fr
}

// Gateways of two rings whose DNS confirms their domains form the global ring; a third ring
// claiming one of their domains is refused by both and never joins, and both sides' logs say
// why; ordinary nodes stay out of the global ring.
func TestGlobalRingAdmission(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	acme := startFedRing(t, "acme", []string{"acme.example"}, srv, []string{"acme.example"}, nil, true)
	globex := startFedRing(t, "globex", []string{"globex.example"}, srv, []string{"globex.example"}, []string{acme.global}, false)
	evil := startFedRing(t, "evil", []string{"evil.example", "acme.example"}, srv, []string{"evil.example"}, []string{acme.global, globex.global}, false)

	deadline := time.Now().Add(30 * time.Second)
	for {
		a, g := acme.gw.Status().Global, globex.gw.Status().Global
		if a != nil && g != nil && a.Ready && g.Ready && slices.Contains(a.LeafSet, globex.gw.ID().String()) && slices.Contains(g.LeafSet, acme.gw.ID().String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme and globex did not form the global ring: %+v %+v\nacme log:\n%s", a, g, acme.gwLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	reason := fmt.Sprintf("domain acme.example: its _epost TXT record names ring %s, not %s", acme.r.Descriptor.RingID.Short(), evil.r.Descriptor.RingID.Short())
	for !strings.Contains(acme.gwLog.String(), reason) || !strings.Contains(evil.gwLog.String(), reason) {
		if time.Now().After(deadline) {
			t.Fatalf("no log says why evil was refused (%q)\nacme:\n%s\nevil:\n%s", reason, acme.gwLog, evil.gwLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // long enough for several join attempts
	for _, fr := range []*fedRing{acme, globex} {
		st := fr.gw.Status().Global
		if slices.Contains(st.LeafSet, evil.gw.ID().String()) {
			t.Fatalf("%s's global leaf set has the refused ring's gateway: %v", fr.r.Descriptor.Name, st.LeafSet)
		}
	}
	if st := evil.gw.Status().Global; len(st.LeafSet) != 0 || st.RefusedBy == 0 {
		t.Fatalf("the refused gateway: %+v", st)
	}
	if st := acme.gw.Status().Global; st.Refused == 0 || st.Admitted == 0 || st.Unadmitted == 0 {
		t.Fatalf("acme's global counters: %+v", st)
	}
	if acme.plain.Status().Global != nil || acme.plain.global != nil {
		t.Fatal("an ordinary node runs the global ring")
	}
}

// A node without the gateway role cannot start the global ring, and says why.
func TestGlobalListenNeedsGatewayRole(t *testing.T) {
	dirs := enroll(t, 1)
	n, err := Open(Options{Dir: dirs[0], Timers: fastTimers, NoControl: true, GlobalListen: freeAddrs(t, 1)[0]})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start()
	if err == nil || !strings.Contains(err.Error(), "not a gateway") {
		t.Fatalf("start with --global-listen: %v", err)
	}
	n.Stop()
}

// A gateway asks another ring's gateways for a user record over the global ring and gets it
// verified under that ring's CA; an unknown user is reported as unknown, a ring that is not
// admitted is not asked.
func TestGlobalDirectory(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	acme := startFedRing(t, "acme", []string{"acme.example"}, srv, []string{"acme.example"}, nil, false)
	globex := startFedRing(t, "globex", []string{"globex.example"}, srv, []string{"globex.example"}, []string{acme.global}, true)

	// bob's record, signed by globex's CA, published in globex's ring.
	keys, sr := signUser(t, globex.r, "bob@globex.example", 1)
	deadline := time.Now().Add(30 * time.Second)
	publishRecord(t, globex.gw, sr, deadline)

	type answer struct {
		rec *identity.Record
		err error
	}
	ask := func(r ids.RingID, addr string) answer {
		ch := make(chan answer, 1)
		acme.gw.LookupRemoteRecord(r, addr, func(rec *identity.Record, _ identity.SignedRecord, err error) { ch <- answer{rec, err} })
		return <-ch
	}
	var a answer
	for {
		// The first questions may find globex not admitted yet, or its group not formed.
		if a = ask(globex.r.Descriptor.RingID, "bob@globex.example"); a.err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if a.err != nil || a.rec.Address != "bob@globex.example" || a.rec.Ring != globex.r.Descriptor.RingID || !bytes.Equal(a.rec.Keys.Signing, keys.Public().Signing) {
		t.Fatalf("bob's record through the global ring: %+v %v\nacme log:\n%s", a.rec, a.err, acme.gwLog)
	}
	if a = ask(globex.r.Descriptor.RingID, "nobody@globex.example"); !errors.Is(a.err, multiring.ErrRemoteUnknown) {
		t.Fatalf("unknown user: %v", a.err)
	}
	if a = ask(ids.RingIDOf("elsewhere"), "x@elsewhere.example"); !errors.Is(a.err, multiring.ErrNotAdmitted) {
		t.Fatalf("a ring not admitted: %v", a.err)
	}
	if plain := globex.plain; !errors.Is(func() error {
		ch := make(chan error, 1)
		plain.LookupRemoteRecord(acme.r.Descriptor.RingID, "x@acme.example", func(_ *identity.Record, _ identity.SignedRecord, err error) { ch <- err })
		return <-ch
	}(), ErrNotGateway) {
		t.Fatal("an ordinary node asked another ring")
	}
}

// signUser makes a user's keys and CA-signed record in r.
func signUser(t *testing.T, r *ring.Ring, addr string, serial uint64) (*identity.Keys, identity.SignedRecord) {
	t.Helper()
	caKey, err := r.CAKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := identity.NewKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	sr, err := identity.SignRecord(identity.Record{Ring: r.Descriptor.RingID, Address: addr, Keys: keys.Public(),
		Serial: serial, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return keys, sr
}

// A message sealed in ring acme for bob of ring globex, queued on acme's gateway, is handed
// over the global ring to globex's gateway, which stores it in globex's PAST before it
// confirms; acme's gateway then finishes the entry as delivered.
func TestGlobalRelay(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	acme := startFedRing(t, "acme", []string{"acme.example"}, srv, []string{"acme.example"}, nil, false)
	globex := startFedRing(t, "globex", []string{"globex.example"}, srv, []string{"globex.example"}, []string{acme.global}, true)
	deadline := time.Now().Add(40 * time.Second)

	_, bobRec := signUser(t, globex.r, "bob@globex.example", 1)
	publishRecord(t, globex.gw, bobRec, deadline)
	// alice, a user of acme on its gateway's node.
	aliceKeys, aliceRec := signUser(t, acme.r, "alice@acme.example", 1)
	if err := os.MkdirAll(post.UserDir(acme.gw.opts.Dir, "alice@acme.example"), 0o700); err != nil {
		t.Fatal(err)
	}
	uc := make(chan error, 1)
	var alice *post.User
	acme.gw.apps.Load().post.AddUser(aliceKeys, aliceRec, true, func(u *post.User, err error) { alice = u; uc <- err })
	if err := <-uc; err != nil {
		t.Fatalf("alice: %v", err)
	}
	// bob's record from globex's gateways, then the sealed message.
	var rec *identity.Record
	for {
		ch := make(chan error, 1)
		acme.gw.LookupRemoteRecord(globex.r.Descriptor.RingID, "bob@globex.example", func(r *identity.Record, _ identity.SignedRecord, err error) {
			rec = r
			ch <- err
		})
		if err = <-ch; err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's record: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	nid := post.NotificationID{7, 7, 7}
	bundle, err := alice.SealRemote(globex.r.Descriptor.RingID, []*identity.Record{rec}, []post.NotificationID{nid},
		[][]byte{[]byte("Subject: across\r\n\r\n"), bytes.Repeat([]byte("body "), 5000)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := acme.gw.QueueFederated("", "alice@acme.example", bundle, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	q := acme.gw.GatewayQueue()
	for q.Has(id) != "done" {
		if time.Now().After(deadline) {
			_, s, _ := q.Get(id)
			t.Fatalf("entry not handed over: %+v\nacme log:\n%s", s, acme.gwLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d, _ := q.Finished(id); d.Outcome != "delivered" || len(d.Rcpts) != 1 || d.Rcpts[0].State != mailqueue.Delivered {
		t.Fatalf("entry finished as %+v", d)
	}
	// The operator's view of the queue: on the gateway, empty again; absent on a plain node.
	if g := acme.gw.Status().Gateway; g == nil || g.Queue.Federation.Entries != 0 || len(g.Queue.Destinations) != 0 {
		t.Fatalf("acme's gateway status after the hand-off: %+v", g)
	}
	if g := globex.plain.Status().Gateway; g != nil {
		t.Fatalf("a plain node reports a gateway queue: %+v", g)
	}
	// The pending notification is in globex's PAST.
	found := make(chan error, 1)
	globex.plain.apps.Load().past.Lookup(past.PendingKey(globex.r.Descriptor.RingID, "bob@globex.example", nid), func(_ past.Object, err error) { found <- err })
	if err := <-found; err != nil {
		t.Fatalf("bob's pending notification in globex: %v", err)
	}
	if st := globex.gw.global.relay.Stats(); st.HandoffsIn != 1 {
		t.Fatalf("globex's relay: %+v", st)
	}
}

// publishRecord stores a user's record in n's ring, retrying until the ring takes it.
func publishRecord(t *testing.T, n *Node, sr identity.SignedRecord, deadline time.Time) {
	t.Helper()
	retry(t, deadline, "publishing a record", func() error {
		a := n.apps.Load()
		if a == nil {
			return errors.New("not running")
		}
		errc := make(chan error, 1)
		post.PublishRecord(a.past, sr, time.Now().Add(24*time.Hour), func(err error) { errc <- err })
		return <-errc
	})
}

// addUser starts a POST user on node n (its directory made first).
func addUser(t *testing.T, n *Node, keys *identity.Keys, sr identity.SignedRecord, addr string) *post.User {
	t.Helper()
	if err := os.MkdirAll(post.UserDir(n.opts.Dir, addr), 0o700); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		type res struct {
			u   *post.User
			err error
		}
		ch := make(chan res, 1)
		n.apps.Load().post.AddUser(keys, sr, true, func(u *post.User, err error) { ch <- res{u, err} })
		r := <-ch
		if r.err == nil {
			return r.u
		}
		if time.Now().After(deadline) {
			t.Fatalf("user %s: %v", addr, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// retry calls f until it succeeds or the deadline passes.
func retry(t *testing.T, deadline time.Time, what string, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Mail between two rings of real daemons over TLS, from an ordinary node of acme to a user on
// an ordinary node of globex: the sender's node gets globex's trust and bob's record through
// its ring's gateway, seals the message and hands it to the gateway, which queues it and
// relays it over the global ring to globex's gateway; globex stores it, bob's node is pushed,
// checks alice under acme's CA (DNS says acme.example is acme's; acme's bundle comes through
// globex's gateway) and files it once.
func TestMailBetweenRingsOfDaemons(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	acme := startFedRing(t, "acme", []string{"acme.example"}, srv, []string{"acme.example"}, nil, true)
	globex := startFedRing(t, "globex", []string{"globex.example"}, srv, []string{"globex.example"}, []string{acme.global}, true)
	deadline := time.Now().Add(60 * time.Second)

	bobKeys, bobSR := signUser(t, globex.r, "bob@globex.example", 1)
	bob := addUser(t, globex.plain, bobKeys, bobSR, "bob@globex.example")
	aliceKeys, aliceSR := signUser(t, acme.r, "alice@acme.example", 1)
	alice := addUser(t, acme.plain, aliceKeys, aliceSR, "alice@acme.example")

	link := acme.plain.RingLink()
	var trust *ring.Foreign
	retry(t, deadline, "globex's trust through acme's gateway", func() error {
		ch := make(chan error, 1)
		link.Trust(globex.r.Descriptor.RingID, func(f *ring.Foreign, err error) { trust = f; ch <- err })
		return <-ch
	})
	var rec *identity.Record
	retry(t, deadline, "bob's record through acme's gateway", func() error {
		ch := make(chan error, 1)
		link.LookupRecord(trust, "bob@globex.example", func(r *identity.Record, _ identity.SignedRecord, err error) { rec = r; ch <- err })
		return <-ch
	})
	parts := [][]byte{[]byte("Subject: from acme\r\n\r\n"), bytes.Repeat([]byte("hello globex "), 3000)}
	nid := post.NotificationID{9, 9}
	bundle, err := alice.SealRemote(globex.r.Descriptor.RingID, []*identity.Record{rec}, []post.NotificationID{nid}, parts)
	if err != nil {
		t.Fatal(err)
	}
	entry := mailqueue.NewID()
	retry(t, deadline, "hand-off to acme's gateway", func() error {
		ch := make(chan error, 1)
		link.HandOff(entry, "alice@acme.example", bundle, func(_ map[string]string, err error) { ch <- err })
		return <-ch
	})
	// The gateway answered once globex stored it: bob's pending notification is there now.
	found := make(chan error, 1)
	globex.plain.apps.Load().past.Lookup(past.PendingKey(globex.r.Descriptor.RingID, "bob@globex.example", nid), func(_ past.Object, err error) { found <- err })
	if err := <-found; err != nil {
		t.Fatalf("right after the hand-off, bob's pending notification in globex: %v", err)
	}
	var entries [][]byte
	defer func() {
		if t.Failed() {
			q := acme.gw.GatewayQueue()
			h, s, qerr := q.Get(entry)
			d, done := q.Finished(entry)
			t.Logf("acme's queue: has %q, %+v %+v %v; finished %v %+v; relay %+v / %+v", q.Has(entry), h, s, qerr, done, d, acme.gw.global.relay.Stats(), globex.gw.global.relay.Stats())
			t.Logf("acme gateway log:\n%s\nglobex gateway log:\n%s\nglobex plain log:\n%s", acme.gwLog, globex.gwLog, globex.plainLog)
		}
	}()
	retry(t, deadline, "bob's INBOX", func() error {
		entries, err = bob.Entries(post.InboxLog, 0)
		if err == nil && len(entries) == 0 {
			err = errors.New("empty")
		}
		return err
	})
	f, err := post.DecodeFiled(entries[0])
	if err != nil || !f.Foreign || f.From != "alice@acme.example" || f.ID != nid || len(entries) != 1 {
		t.Fatalf("bob's INBOX: %d entries, first %+v %v", len(entries), f, err)
	}
	got := make(chan []byte, 1)
	bob.GetForeign(f.Parts[1], func(d []byte, err error) {
		if err != nil {
			t.Errorf("reading the part: %v", err)
		}
		got <- d
	})
	if d := <-got; !bytes.Equal(d, parts[1]) {
		t.Fatal("the part read back differs")
	}
	// The same hand-off again (the origin did not hear the gateway's answer): nothing new.
	ch := make(chan error, 1)
	link.HandOff(entry, "alice@acme.example", bundle, func(_ map[string]string, err error) { ch <- err })
	if err := <-ch; err != nil {
		t.Fatalf("repeated hand-off: %v", err)
	}
	time.Sleep(2 * time.Second)
	if entries, _ = bob.Entries(post.InboxLog, 0); len(entries) != 1 {
		t.Fatalf("after a repeated hand-off bob has %d entries", len(entries))
	}
	// A recipient globex does not know (its record signed but never published): the gateway's
	// answer names it, so the sender's node can tell the sender.
	ghostKeys, ghostSR := signUser(t, globex.r, "ghost@globex.example", 9)
	_ = ghostKeys
	ghostRec, err := identity.DecodeRecord(ghostSR.Body)
	if err != nil {
		t.Fatal(err)
	}
	ghostBundle, err := alice.SealRemote(globex.r.Descriptor.RingID, []*identity.Record{ghostRec}, []post.NotificationID{{8, 8}}, [][]byte{[]byte("hello?")})
	if err != nil {
		t.Fatal(err)
	}
	var refused map[string]string
	retry(t, deadline, "hand-off for a ghost", func() error {
		ch := make(chan error, 1)
		link.HandOff(mailqueue.NewID(), "alice@acme.example", ghostBundle, func(r map[string]string, err error) { refused = r; ch <- err })
		return <-ch
	})
	if refused["ghost@globex.example"] == "" {
		t.Fatalf("the gateway's answer for an unknown recipient: %v", refused)
	}
	// Each ring kept its data home: no node holds an object or a fragment of the other ring.
	for _, n := range []*Node{acme.gw, acme.plain, globex.gw, globex.plain} {
		l, err := n.Locality()
		if err != nil || l.ForeignObjects != 0 || l.ForeignFragments != 0 {
			t.Fatalf("node %s of ring %s holds foreign data: %+v %v", n.ID().Short(), n.rn.Descriptor.Name, l, err)
		}
	}
}
