package post

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"epost/internal/glacier"
	"epost/internal/identity"
	"epost/internal/ids"
	"epost/internal/transport"
)

type heldClock struct {
	t      time.Time
	timers []func()
}

func (c *heldClock) Now() time.Time { return c.t }
func (c *heldClock) AfterFunc(_ time.Duration, f func()) transport.Timer {
	c.timers = append(c.timers, f)
	return heldTimer{}
}

type heldTimer struct{}

func (heldTimer) Stop() bool { return false }

type heldCall struct {
	name []byte
	ver  uint64
	cb   func(*glacier.Manifest, glacier.InsertResult)
}

type heldArchive struct{ calls []heldCall }

func (f *heldArchive) Codec() *glacier.Codec { return nil }
func (f *heldArchive) EncodeInsert(_ ed25519.PrivateKey, name []byte, version uint64, _ time.Time, _ []byte, cb func(*glacier.Manifest, glacier.InsertResult)) {
	f.calls = append(f.calls, heldCall{name, version, cb})
}
func (f *heldArchive) Renew(*glacier.Manifest, func(glacier.InsertResult))     {}
func (f *heldArchive) Retrieve(ids.ID, func([]byte, *glacier.Manifest, error)) {}

// heldSetup is a user with an archive (aggregates of two objects, an hour's flush) on a node
// with clk and cfg (its Ring, Clock, Log and Archive set here; nothing else filled in), and
// content(b), a 1,000-byte content member.
type heldSetup struct {
	dir     string
	ring    ids.RingID
	fa      *heldArchive
	u       *User
	keys    *identity.Keys
	exp     time.Time
	content func(b byte) glacier.Member
}

func newHeldSetup(t *testing.T, clk *heldClock, cfg Config) *heldSetup {
	t.Helper()
	s := &heldSetup{dir: t.TempDir(), ring: ids.RingIDOf("review"), fa: &heldArchive{}, exp: clk.t.Add(2 * time.Hour)}
	cfg.Ring, cfg.Clock, cfg.Archive = s.ring, clk, s.fa
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	n := &Node{cfg: cfg, users: map[string]*User{}}
	keys, err := identity.NewKeys(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.keys = keys
	s.u = &User{n: n, addr: "u", keys: keys}
	acfg := glacier.DefaultAggregatorConfig(s.ring, keys.Public().Signing)
	acfg.MaxObjects, acfg.MaxAge = 2, time.Hour
	agg, err := glacier.NewAggregator(acfg)
	if err != nil {
		t.Fatal(err)
	}
	s.u.arch = &userArchive{agg: agg, ready: true, mans: map[ids.ID]*glacier.Manifest{}, fetching: map[ids.ID]bool{},
		file: filepath.Join(s.dir, "archive.state")}
	s.content = func(b byte) glacier.Member {
		d := make([]byte, 1000)
		d[0] = b
		return glacier.Member{Key: ids.Key{Ring: s.ring, ID: ids.Hash(d)}, Data: d, Expiry: s.exp, ContentHash: true}
	}
	return s
}

// A held file waits for the aggregates cut with it, not for a later one: aggregate 1's
// first insert fails, maintenance repacks it (a superseded head makes it mostly dead), so its
// retry is skipped and its repack goes behind aggregate 2; when aggregate 2 is stored,
// archive.held.1 must stay until a version of aggregate 1 is.
func TestHeldFileWaitsForItsOwnAggregate(t *testing.T) {
	clk := &heldClock{t: time.Unix(1e9, 0)}
	hs := newHeldSetup(t, clk, Config{ContentLease: 2 * time.Hour, ArchiveFlush: time.Hour, RetryDelay: time.Second})
	dir, ring, fa, u, keys, exp, content := hs.dir, hs.ring, hs.fa, hs.u, hs.keys, hs.exp, hs.content
	headKey := ids.Key{Ring: ring, ID: ids.HashString("a log head")}
	head := func(b byte) glacier.Member {
		d := make([]byte, 5000)
		d[0] = b
		return glacier.Member{Key: headKey, Data: d, Expiry: exp}
	}

	c1 := content(1)
	u.enqueueInserts(u.aggregate(c1))
	u.enqueueInserts(u.aggregate(head(1))) // cut: aggregate 1 = {c1, head v1}; its insert starts
	u.enqueueInserts(u.aggregate(head(2)))
	u.enqueueInserts(u.aggregate(content(2))) // cut: aggregate 2 = {head v2, c2}; queued
	held1 := filepath.Join(dir, "archive.held.1")
	if _, err := os.Stat(held1); err != nil || len(fa.calls) != 1 {
		t.Fatalf("setup: %v, %d inserts", err, len(fa.calls))
	}
	// Aggregate 1's insert fails (a quorum not reached): retried after RetryDelay.
	fa.calls[0].cb(&glacier.Manifest{}, glacier.InsertResult{Err: glacier.ErrQuorum})
	// Maintenance: aggregate 1 is mostly a superseded head: repacked (version 2, queued last).
	u.archiveTick()
	for _, f := range clk.timers {
		f()
	}
	clk.timers = nil
	// The retry finds version 1 superseded and skips it; aggregate 2 goes out.
	last := fa.calls[len(fa.calls)-1]
	if string(last.name) != "agg/2" {
		t.Fatalf("expected aggregate 2's insert, got %s", last.name)
	}
	last.cb(&glacier.Manifest{}, glacier.InsertResult{Acks: 9})
	g1, _ := u.arch.agg.Aggregate(glacier.AggregateKey(ring, keys.Public().Signing, 1))
	if _, err := os.Stat(held1); os.IsNotExist(err) {
		t.Fatalf("archive.held.1 removed when aggregate 2 was stored; aggregate 1 (version %d) is not stored yet", g1.Version)
	}
	// Aggregate 1's repack is stored: now its file goes.
	for i := len(fa.calls) - 1; i >= 0; i-- {
		if string(fa.calls[i].name) == "agg/1" && fa.calls[i].ver > 1 {
			fa.calls[i].cb(&glacier.Manifest{}, glacier.InsertResult{Acks: 9})
			break
		}
	}
	if _, err := os.Stat(held1); !os.IsNotExist(err) {
		t.Fatalf("archive.held.1 still there after aggregate 1's repack was stored (%d inserts: %v)", len(fa.calls), err)
	}
}
