package post

import (
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
	"epost/internal/transport"
)

// stepClock is a clock the test moves by hand; it never fires timers.
type stepClock struct{ t time.Time }

func (c *stepClock) Now() time.Time { return c.t }
func (c *stepClock) AfterFunc(time.Duration, func()) transport.Timer {
	panic("fetched chunks set no timers")
}

// A fetched chunk serves the next reader within fetchedTTL, the archive's take drops it, old
// ones expire, the byte bound drops the oldest first, and only content objects are kept.
func TestFetchedChunks(t *testing.T) {
	clk := &stepClock{t: time.Unix(1e9, 0)}
	n := &Node{cfg: Config{Clock: clk}}
	ring := ids.HashString("ring")
	chunk := func(i byte, size int) past.Object {
		p := make([]byte, size)
		p[0] = i
		return past.NewContent(ring, p, clk.t.Add(time.Hour))
	}
	a, b := chunk(1, 100), chunk(2, 100)
	n.rememberFetched(a)
	if got, ok := n.recentChunk(a.Key, false); !ok || got.Key != a.Key {
		t.Fatal("a chunk fetched just now is not served")
	}
	if _, ok := n.recentChunk(a.Key, true); !ok {
		t.Fatal("the archive's take missed")
	}
	if _, ok := n.recentChunk(a.Key, false); ok {
		t.Fatal("a taken chunk is still served")
	}
	n.rememberFetched(b)
	clk.t = clk.t.Add(fetchedTTL)
	if _, ok := n.recentChunk(b.Key, false); ok {
		t.Fatal("a chunk older than fetchedTTL is served")
	}
	if n.fetched.bytes != 0 || len(n.fetched.m) != 0 {
		t.Fatalf("expired chunks still counted: %d bytes, %d chunks", n.fetched.bytes, len(n.fetched.m))
	}
	// Four chunks of a third of the bound: the first goes when the fourth comes.
	var cs []past.Object
	for i := range 4 {
		c := chunk(byte(10+i), fetchedMaxBytes/3)
		cs = append(cs, c)
		n.rememberFetched(c)
	}
	if _, ok := n.recentChunk(cs[0].Key, false); ok || n.fetched.bytes > fetchedMaxBytes {
		t.Fatalf("over the byte bound: %d bytes held, oldest still there %v", n.fetched.bytes, ok)
	}
	for _, c := range cs[1:] {
		if _, ok := n.recentChunk(c.Key, false); !ok {
			t.Fatal("a newer chunk was dropped for the bound")
		}
	}
	signed := past.Object{Payload: []byte("x")}
	signed.Key, signed.Type = ids.Key{Ring: ring, ID: ids.HashString("s")}, uint8(past.TypeSigned)
	n.rememberFetched(signed)
	if _, ok := n.recentChunk(signed.Key, false); ok {
		t.Fatal("a mutable object was kept")
	}
}
