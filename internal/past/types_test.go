package past

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
)

// checkRefusedEverywhere requires that every one of the k replicas refused with want.
func (r *testRing) checkRefusedEverywhere(what string, res InsertResult, want error) {
	r.t.Helper()
	if res.Err == nil || res.Acked != 0 {
		r.fail("%s: insert succeeded (%d acks)", what, res.Acked)
	}
	if res.Replicas != 3 || len(res.Refusals) != 3 {
		r.fail("%s: %d replicas, %d refusals, want 3 and 3: %v", what, res.Replicas, len(res.Refusals), res.Err)
	}
	for _, ref := range res.Refusals {
		if !errors.Is(ref.Err, want) {
			r.fail("%s: replica %s said %v, want %v", what, ref.Replica.ID.Short(), ref.Err, want)
		}
	}
}

// A log head (a signed object its single writer rewrites) with a lower sequence number than
// the stored one is refused by every replica, whether the writer locates the key first or
// sends straight to the replica set it cached (LocateCacheTTL); the newer head stays.
func TestLogHeadRollbackRefusedByEveryReplica(t *testing.T) {
	const seed = 31
	cfg := testConfig()
	cfg.LocateCacheTTL = time.Minute
	r := newTestRing(t, seed, 10, cfg)
	rng := rand.New(rand.NewPCG(seed, 1))
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	lease := r.net.Now().Add(24 * time.Hour)
	writer := r.nodes[4]
	writer.node.skipClientCheck = true
	name := []byte("epost/v1/log/INBOX")

	for seq := uint64(1); seq <= 5; seq++ {
		if res := r.insert(writer, NewSigned(priv, r.ring, name, seq, []byte{byte(seq)}, lease)); res.Err != nil {
			r.fail("head seq %d: %v", seq, res.Err)
		}
	}
	key := SignedKey(r.ring, priv.Public().(ed25519.PublicKey), name)
	var hinted bool
	writer.drv.With(func(n *Node) {
		_, hinted = n.located[key]
		if !hinted {
			_, hinted = n.knownReplicas(key.ID)
		}
	})
	if !hinted {
		r.fail("the writer neither cached the head's replica set nor knows it from its leaf set")
	}
	// Through the cached or known replica set (the writer's own path), then through a locate
	// (another node replaying an old head it saw).
	r.nodes[7].drv.With(func(n *Node) { n.skipKnownReplicas = true })
	for _, from := range []*testNode{writer, r.nodes[7]} {
		from.node.skipClientCheck = true
		for _, seq := range []uint64{4, 1} {
			res := r.insert(from, NewSigned(priv, r.ring, name, seq, []byte("old"), lease))
			r.checkRefusedEverywhere("rollback", res, ErrStale)
		}
	}
	for _, tn := range r.closest(key.ID, 3) {
		got, err := tn.st.Get(key)
		if err != nil || got.Seq != 5 {
			r.fail("replica %s holds seq %d (%v), want 5", tn.ep.ID().Short(), got.Seq, err)
		}
	}
	// A refusal drops the cached replica set; the next head still goes through.
	if res := r.insert(writer, NewSigned(priv, r.ring, name, 6, []byte{6}, lease)); res.Err != nil || res.Acked < 2 {
		r.fail("head seq 6: %d acks, %v", res.Acked, res.Err)
	}
}

type recordFixture struct {
	ca   ed25519.PrivateKey
	ring ids.RingID
	now  time.Time
	rng  *rand.Rand
}

func (f *recordFixture) record(t *testing.T, addr string, serial uint64, signer ed25519.PrivateKey) (Object, identity.SignedRecord) {
	t.Helper()
	keys, err := identity.NewKeys(rngReader{f.rng})
	if err != nil {
		t.Fatal(err)
	}
	nb := f.now.Add(-time.Hour).Truncate(time.Second)
	sr, err := identity.SignRecord(identity.Record{Ring: f.ring, Address: addr, Keys: keys.Public(), Serial: serial, NotBefore: nb, NotAfter: nb.Add(48 * time.Hour)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := NewRecord(sr, f.now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return obj, sr
}

// TypeRecord: replicas take CA-signed records at their address's key, a re-issued record
// (higher serial) replaces the old one, and they refuse records not signed by the CA, records
// at another address's key, older serials and revoked serials.
func TestRecordPolicyAtEveryReplica(t *testing.T) {
	const seed = 32
	rng := rand.New(rand.NewPCG(seed, 1))
	_, ca, _ := ed25519.GenerateKey(rngReader{rng})
	_, notCA, _ := ed25519.GenerateKey(rngReader{rng})
	cfg := testConfig()
	cfg.Policy = Policy{CA: ca.Public().(ed25519.PublicKey), Revoked: func(serial uint64) bool { return serial == 13 }}
	r := newTestRing(t, seed, 10, cfg)
	client := r.nodes[2]
	client.node.skipClientCheck = true
	f := &recordFixture{ca: ca, ring: r.ring, now: r.net.Now(), rng: rng}

	v1, _ := f.record(t, "alice@example.org", 1, ca)
	if res := r.insert(client, v1); res.Err != nil {
		r.fail("record serial 1: %v", res.Err)
	}
	got, err := r.lookup(r.nodes[8], v1.Key)
	if err != nil || got.Seq != 1 || Type(got.Type) != TypeRecord {
		r.fail("lookup record: seq %d type %d: %v", got.Seq, got.Type, err)
	}
	v2, _ := f.record(t, "alice@example.org", 2, ca)
	if res := r.insert(client, v2); res.Err != nil {
		r.fail("re-issued record serial 2: %v", res.Err)
	}

	forged, _ := f.record(t, "alice@example.org", 3, notCA)
	moved, _ := f.record(t, "mallory@example.org", 4, ca)
	moved.Key = v1.Key // a valid record of someone else, put at alice's key
	revoked, _ := f.record(t, "alice@example.org", 13, ca)
	cases := []struct {
		name string
		obj  Object
		want error
	}{
		{"not signed by the ring CA", forged, ErrBadSignature},
		{"another address's record", moved, ErrNotOwner},
		{"older serial", v1, ErrStale},
		{"revoked serial", revoked, ErrRevoked},
	}
	for _, c := range cases {
		r.checkRefusedEverywhere(c.name, r.insert(client, c.obj), c.want)
	}
	for _, tn := range r.closest(v1.Key.ID, 3) {
		if got, err := tn.st.Get(v1.Key); err != nil || got.Seq != 2 {
			r.fail("replica %s holds serial %d (%v), want 2", tn.ep.ID().Short(), got.Seq, err)
		}
	}
}

// countingObserver counts what replicas report for one key.
type countingObserver struct {
	key              ids.Key
	stored, removed  int
	lastStoredTypeOK bool
}

func (o *countingObserver) Stored(m store.Meta) {
	if m.Key == o.key {
		o.stored++
		o.lastStoredTypeOK = Type(m.Type) == TypePending
	}
}

func (o *countingObserver) Removed(k ids.Key) {
	if k == o.key {
		o.removed++
	}
}

// TypePending: immutable (the same bytes again only extend the lease, other bytes under the
// key are refused), integrity-checked at every replica, and deleted only with the
// recipient's DropProof; the Observer hears each replica's store and removal.
func TestPendingPolicyAndDropProof(t *testing.T) {
	const seed = 33
	rng := rand.New(rand.NewPCG(seed, 1))
	recipient, err := identity.NewKeys(rngReader{rng})
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := identity.NewKeys(rngReader{rng})
	cfg := testConfig()
	id := [PendingIDSize]byte{7}
	obs := &countingObserver{key: PendingKey(ids.RingIDOf("test"), "bob@example.org", id)}
	cfg.Observer = obs
	r := newTestRing(t, seed, 10, cfg)
	client := r.nodes[5]
	client.node.skipClientCheck = true
	lease := r.net.Now().Add(24 * time.Hour)
	rkey := recipient.Public().Signing

	obj := NewPending(r.ring, "bob@example.org", rkey, id, randomPayload(rng, 600), lease)
	if res := r.insert(client, obj); res.Err != nil {
		r.fail("pending insert: %v", res.Err)
	}
	if res := r.insert(r.nodes[1], obj); res.Err != nil {
		r.fail("the same pending object again: %v", res.Err)
	}
	if r.holders(obj.Key) != 3 || obs.stored != 3 || !obs.lastStoredTypeOK {
		r.fail("%d holders, observer heard %d stores, want 3 and 3", r.holders(obj.Key), obs.stored)
	}

	other := NewPending(r.ring, "bob@example.org", rkey, id, randomPayload(rng, 600), lease)
	tampered := obj
	tampered.Payload = append([]byte(nil), obj.Payload...)
	tampered.Payload[0] ^= 1
	misplaced := NewPending(r.ring, "bob@example.org", rkey, [PendingIDSize]byte{8}, randomPayload(rng, 600), lease)
	misplaced.Key = obj.Key
	withSeq := NewPending(r.ring, "bob@example.org", rkey, [PendingIDSize]byte{9}, randomPayload(rng, 600), lease)
	withSeq.Seq = 4
	tiny := NewPending(r.ring, "bob@example.org", rkey, [PendingIDSize]byte{10}, []byte("x"), lease)
	cases := []struct {
		name string
		obj  Object
		want error
	}{
		{"other bytes under the same id", other, ErrConflict},
		{"payload does not match its hash", tampered, ErrHashMismatch},
		{"key of another id", misplaced, ErrNotOwner},
		{"sequence number", withSeq, ErrBadType},
		{"too small to be a sealed notification", tiny, ErrTooLarge},
	}
	for _, c := range cases {
		r.checkRefusedEverywhere(c.name, r.insert(client, c.obj), c.want)
	}

	del := func(key ids.Key, proof []byte) error {
		var (
			err  error
			done bool
		)
		client.drv.Delete(key, proof, func(e error) { err, done = e, true })
		for i := 0; i < 30 && !done; i++ {
			r.net.RunFor(time.Second)
		}
		if !done {
			r.fail("delete %s never completed", key)
		}
		r.net.RunFor(2 * time.Second) // the root's fan-out to the other replicas
		return err
	}
	// Nobody but the recipient can drop it: a stranger's proof, a proof for another key.
	bad, _ := DropProof(stranger, obj.Key)
	if err := del(obj.Key, bad); !errors.Is(err, ErrForbidden) {
		r.fail("stranger's drop: %v, want %v", err, ErrForbidden)
	}
	wrongKey, _ := DropProof(recipient, PendingKey(r.ring, "bob@example.org", [PendingIDSize]byte{99}))
	if err := del(obj.Key, wrongKey); !errors.Is(err, ErrForbidden) {
		r.fail("drop proof for another key: %v, want %v", err, ErrForbidden)
	}
	if r.holders(obj.Key) != 3 || obs.removed != 0 {
		r.fail("after refused drops: %d holders, %d removals", r.holders(obj.Key), obs.removed)
	}
	// Only pending objects can be deleted at all.
	content := NewContent(r.ring, randomPayload(rng, 100), lease)
	if res := r.insert(client, content); res.Err != nil {
		r.fail("content insert: %v", res.Err)
	}
	proof, _ := DropProof(recipient, content.Key)
	if err := del(content.Key, proof); !errors.Is(err, ErrForbidden) {
		r.fail("delete of a content object: %v, want %v", err, ErrForbidden)
	}
	// The recipient's proof drops it from every replica; doing it again is harmless.
	good, _ := DropProof(recipient, obj.Key)
	if err := del(obj.Key, good); err != nil {
		r.fail("recipient's drop: %v", err)
	}
	if n := r.holders(obj.Key); n != 0 || obs.removed != 3 {
		r.fail("after the drop: %d holders, observer heard %d removals, want 0 and 3", n, obs.removed)
	}
	if err := del(obj.Key, good); err != nil {
		r.fail("second drop: %v", err)
	}
}

// InsertDedupe sends a content object's bytes only to replicas that lack it: a second insert
// extends the lease everywhere without resending the payload, and a replica that lost its
// copy gets the bytes again.
func TestInsertDedupe(t *testing.T) {
	const seed = 34
	r := newTestRing(t, seed, 10, testConfig())
	rng := rand.New(rand.NewPCG(seed, 1))
	client := r.nodes[6]
	now := r.net.Now()
	obj := NewContent(r.ring, randomPayload(rng, 60<<10), now.Add(24*time.Hour))
	dedupe := func(o Object) InsertResult {
		var res *InsertResult
		client.drv.InsertDedupe(o, func(x InsertResult) { res = &x })
		for i := 0; i < 60 && res == nil; i++ {
			r.net.RunFor(time.Second)
		}
		if res == nil {
			r.fail("dedupe insert never completed")
		}
		r.net.RunFor(2 * time.Second) // late acknowledgements
		return *res
	}
	if res := dedupe(obj); res.Err != nil || r.holders(obj.Key) != 3 {
		r.fail("first insert: %v, %d holders", res.Err, r.holders(obj.Key))
	}
	before := r.net.Stats().Bytes
	longer := obj
	longer.Expiry = now.Add(72 * time.Hour)
	if res := dedupe(longer); res.Err != nil || res.Acked < 2 {
		r.fail("second insert: %d acks, %v", res.Acked, res.Err)
	}
	if sent := r.net.Stats().Bytes - before; sent >= uint64(len(obj.Payload)) {
		r.fail("second insert sent %d bytes for a %d-byte object the ring holds", sent, len(obj.Payload))
	}
	for _, tn := range r.closest(obj.Key.ID, 3) {
		if m, err := tn.st.Meta(obj.Key); err != nil || m.Expiry.Before(now.Add(71*time.Hour)) {
			r.fail("replica %s: lease %v (%v), want it extended", tn.ep.ID().Short(), m.Expiry, err)
		}
	}
	// A replica (not the root) loses its copy: only it gets the bytes again.
	lost := r.closest(obj.Key.ID, 3)[2]
	if err := lost.st.Delete(obj.Key); err != nil {
		t.Fatal(err)
	}
	before = r.net.Stats().Bytes
	if res := dedupe(longer); res.Err != nil {
		r.fail("insert after a replica lost its copy: %v", res.Err)
	}
	if !lost.st.Has(obj.Key) {
		r.fail("the replica that lost its copy did not get it back")
	}
	if sent := r.net.Stats().Bytes - before; sent >= 2*uint64(len(obj.Payload)) {
		r.fail("sent %d bytes to restore one copy of %d bytes", sent, len(obj.Payload))
	}
	// Objects other than content go through a plain insert.
	_, priv, _ := ed25519.GenerateKey(rngReader{rng})
	if res := dedupe(NewSigned(priv, r.ring, []byte("head"), 1, []byte("h"), now.Add(time.Hour))); res.Err != nil {
		r.fail("signed object through InsertDedupe: %v", res.Err)
	}
}

// Prelocate keeps the key's replica set as its root names it, and the insert that follows
// goes straight to those replicas, hinted, without a locate of its own; a prelocated set
// that is wrong costs a second locate, never a misplaced object.
func TestPrelocatedInsert(t *testing.T) {
	const seed = 33
	cfg := testConfig()
	cfg.LocateCacheTTL = time.Minute
	r := newTestRing(t, seed, 10, cfg)
	writer := r.nodes[2]
	lease := r.net.Now().Add(24 * time.Hour)
	obj := NewContent(r.ring, []byte("prelocated"), lease)
	writer.drv.Prelocate(obj.Key)
	r.net.RunFor(time.Second)
	var cached located
	writer.drv.With(func(n *Node) { cached = n.located[obj.Key] })
	want := r.closest(obj.Key.ID, cfg.Replicas)
	if len(cached.replicas) != len(want) {
		r.fail("prelocated %d replicas, want %d", len(cached.replicas), len(want))
	}
	for _, tn := range want {
		if !slices.ContainsFunc(cached.replicas, func(h pastry.Handle) bool { return h.ID == tn.ep.ID() }) {
			r.fail("replica %s missing from the prelocated set", tn.ep.ID().Short())
		}
	}
	var before Stats
	writer.drv.With(func(n *Node) { before = n.Stats() })
	res := r.insert(writer, obj)
	if res.Err != nil || res.Acked < 2 {
		r.fail("insert after prelocate: %d acks, %v", res.Acked, res.Err)
	}
	for _, tn := range want {
		if _, err := tn.st.Get(obj.Key); err != nil {
			r.fail("replica %s lacks the object: %v", tn.ep.ID().Short(), err)
		}
	}
	var after Stats
	writer.drv.With(func(n *Node) { after = n.Stats() })
	if after.Retries != before.Retries {
		r.fail("insert after prelocate retried %d times", after.Retries-before.Retries)
	}

	// A wrong set (as if the ring had changed since): the replicas refuse the hinted store
	// and the insert locates again.
	other := NewContent(r.ring, []byte("moved"), lease)
	right := r.closest(other.Key.ID, cfg.Replicas)
	writer.drv.With(func(n *Node) {
		c := located{until: r.net.Now().Add(time.Minute)}
		for _, tn := range r.nodes {
			if len(c.replicas) < cfg.Replicas && !slices.Contains(right, tn) {
				c.replicas = append(c.replicas, tn.pd.Self())
			}
		}
		n.located[other.Key] = c
	})
	if res := r.insert(writer, other); res.Err != nil || res.Acked < 2 {
		r.fail("insert through a wrong prelocated set: %d acks, %v", res.Acked, res.Err)
	}
	for _, tn := range right {
		if _, err := tn.st.Get(other.Key); err != nil {
			r.fail("replica %s lacks the object stored through a wrong set: %v", tn.ep.ID().Short(), err)
		}
	}
}

// A hinted insert whose first stores got no answer sends them again hinted: a node of a
// wrong prelocated set that was silent the first time refuses the retry too, and the insert
// locates again, instead of storing the object on nodes that are not its replicas and
// counting their acknowledgements.
func TestPrelocatedInsertRetryStaysHinted(t *testing.T) {
	const seed = 34
	cfg := testConfig()
	cfg.LocateCacheTTL = time.Minute
	r := newTestRing(t, seed, 10, cfg)
	writer := r.nodes[2]
	lease := r.net.Now().Add(24 * time.Hour)
	obj := NewContent(r.ring, []byte("retried"), lease)
	right := r.closest(obj.Key.ID, cfg.Replicas)
	var wrong []*testNode
	writer.drv.With(func(n *Node) {
		c := located{until: r.net.Now().Add(time.Minute)}
		for _, tn := range r.nodes {
			if len(c.replicas) < cfg.Replicas && tn != writer && !slices.Contains(right, tn) {
				c.replicas = append(c.replicas, tn.pd.Self())
				wrong = append(wrong, tn)
			}
		}
		n.located[obj.Key] = c
	})
	// The first hinted stores are lost; the retry after the request timeout gets through.
	r.net.SetLoss(1)
	var res *InsertResult
	writer.drv.Insert(obj, func(x InsertResult) { res = &x })
	r.net.RunFor(50 * time.Millisecond)
	r.net.SetLoss(0)
	for i := 0; i < 60 && res == nil; i++ {
		r.net.RunFor(time.Second)
	}
	if res == nil || res.Err != nil || res.Acked < 2 {
		r.fail("insert through a wrong prelocated set whose first stores were lost: %+v", res)
	}
	for _, tn := range wrong {
		if _, err := tn.st.Get(obj.Key); err == nil {
			r.fail("node %s, not a replica of the key, stored the retried hinted insert", tn.ep.ID().Short())
		}
	}
	held := 0
	for _, tn := range right {
		if _, err := tn.st.Get(obj.Key); err == nil {
			held++
		}
	}
	if held < 2 {
		r.fail("%d of the key's replicas hold the object acknowledged by %d", held, res.Acked)
	}
}
