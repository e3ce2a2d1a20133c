package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"epost/internal/multiring"
	"epost/internal/post"
	"epost/internal/wire"
)

// Custody (docs/gateway-design.md §8.2): a message for another ring leaves its sender's node
// when a gateway of the ring answers its hand-off. When the other ring stored it within the
// gateway's wait, that answer is final. When the gateway only queued it, the 250 the sender got
// rests on that one gateway's disk; so the node keeps the sealed bundle here too, and offers it
// to the ring's gateways again every CustodyTimeout until one answers with the outcome (the
// gateway holding it says "queued" until its queue finished it; another gateway, when that one
// is gone, passes it on itself; the recipient's ring files each notification id once).
//
//	DATADIR/custody/ENTRY   one bundle: version, sender, time taken, the sealed bundle

// FileCustody is the directory under DATADIR.
const FileCustody = "custody"

// DefaultCustodyTimeout is how long a node waits before it offers a queued message again.
const DefaultCustodyTimeout = 10 * time.Minute

// custodyGrace is how long past the federation deadline a node keeps offering a message
// (the gateway's queue gives up at the deadline and reports to the sender).
const custodyGrace = 24 * time.Hour

const custodyVersion = 1

type custody struct {
	dir string

	mu   sync.Mutex
	next map[string]time.Time // entry -> when to offer it again
}

type custodyEntry struct {
	entry, from string
	taken       time.Time
	bundle      *post.RemoteBundle
}

func (n *Node) custodyTimeout() time.Duration {
	if n.opts.CustodyTimeout > 0 {
		return n.opts.CustodyTimeout
	}
	return DefaultCustodyTimeout
}

// custodyStore is the node's custody directory, made on first use.
func (n *Node) custodyStore() *custody {
	n.custodyOnce.Do(func() {
		n.cust = &custody{dir: filepath.Join(n.rn.DataDir(), FileCustody), next: map[string]time.Time{}}
	})
	return n.cust
}

func validEntry(entry string) bool {
	if entry == "" || len(entry) > 64 {
		return false
	}
	for _, c := range entry {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// keep writes the bundle durably (before the sender hears 250) and schedules its next offer.
func (c *custody) keep(entry, from string, b *post.RemoteBundle, now time.Time, after time.Duration) error {
	if !validEntry(entry) {
		return fmt.Errorf("custody: bad entry id %q", entry)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("custody: %w", err)
	}
	var w wire.Writer
	w.U8(custodyVersion)
	w.String(from)
	w.U64(uint64(now.UnixNano()))
	w.Bytes(b.Encode())
	if err := WriteFileSync(filepath.Join(c.dir, entry), w.B, 0o600); err != nil {
		return fmt.Errorf("custody: %w", err)
	}
	c.mu.Lock()
	c.next[entry] = now.Add(after)
	c.mu.Unlock()
	return nil
}

func (c *custody) load(entry string) (*custodyEntry, error) {
	raw, err := os.ReadFile(filepath.Join(c.dir, entry))
	if err != nil {
		return nil, err
	}
	r := wire.NewReader(raw)
	if v := r.U8(); v != custodyVersion && r.Err() == nil {
		return nil, fmt.Errorf("custody %s: version %d, want %d", entry, v, custodyVersion)
	}
	e := &custodyEntry{entry: entry, from: r.String(254, "sender")}
	e.taken = time.Unix(0, int64(r.U64()))
	data := r.Bytes(multiring.MaxLarge, "bundle")
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("custody %s: %w", entry, err)
	}
	b, err := post.DecodeRemoteBundle(data)
	if err != nil {
		return nil, fmt.Errorf("custody %s: %w", entry, err)
	}
	e.bundle = b
	return e, nil
}

func (c *custody) drop(entry string) error {
	c.mu.Lock()
	delete(c.next, entry)
	c.mu.Unlock()
	err := os.Remove(filepath.Join(c.dir, entry))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = syncDir(c.dir)
	}
	return err
}

// due lists the entries to offer now: those on disk not yet scheduled (after a restart: first
// offered after one timeout) and those whose time came.
func (c *custody) due(now time.Time, after time.Duration) ([]string, int) {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, de := range des {
		name := de.Name()
		if !validEntry(name) {
			continue // a temporary file of WriteFileSync
		}
		t, ok := c.next[name]
		if !ok {
			c.next[name] = now.Add(after)
			continue
		}
		if !now.Before(t) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, len(des)
}

func (c *custody) later(entry string, at time.Time) {
	c.mu.Lock()
	if _, ok := c.next[entry]; ok {
		c.next[entry] = at
	}
	c.mu.Unlock()
}

// count is the number of messages in custody.
func (c *custody) count() int {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, de := range des {
		if validEntry(de.Name()) {
			n++
		}
	}
	return n
}

// keepCustody offers the messages in custody to the ring's gateways again, one at a time,
// until each has a final answer.
func (n *Node) keepCustody() {
	c := n.custodyStore()
	after := n.custodyTimeout()
	t := time.NewTicker(min(max(after/4, 250*time.Millisecond), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		link := n.RingLink()
		if link == nil {
			continue
		}
		due, _ := c.due(time.Now(), after)
		for _, entry := range due {
			select {
			case <-n.stop:
				return
			default:
			}
			n.offerAgain(c, link, entry, after)
		}
	}
}

func (n *Node) offerAgain(c *custody, link *multiring.RingLink, entry string, after time.Duration) {
	e, err := c.load(entry)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			c.drop(entry)
			return
		}
		n.log.Error("custody: unreadable entry; kept for inspection", "entry", entry, "err", err)
		c.later(entry, time.Now().Add(24*time.Hour))
		return
	}
	if time.Since(e.taken) > federationDeadline+custodyGrace {
		n.log.Error("custody: no gateway reported an outcome for a message to another ring before the deadline; giving up on it",
			"entry", entry, "from", e.from, "ring", e.bundle.Dest.Short(), "taken", e.taken.UTC().Format(time.RFC3339))
		c.drop(entry)
		return
	}
	type res struct {
		o   multiring.Outcome
		err error
	}
	ch := make(chan res, 1)
	link.Offer(entry, e.from, e.bundle, true, func(o multiring.Outcome, err error) { ch <- res{o, err} })
	var r res
	select {
	case r = <-ch:
	case <-n.stop:
		return
	}
	switch {
	case r.err != nil && errors.Is(r.err, multiring.ErrHandOffRefused):
		n.log.Error("custody: a gateway refused a message offered again; dropped", "entry", entry, "from", e.from, "err", r.err)
		c.drop(entry)
	case r.err != nil:
		n.log.Warn("custody: no gateway took a message offered again; trying later", "entry", entry, "err", r.err)
		c.later(entry, time.Now().Add(after))
	case r.o.Queued:
		c.later(entry, time.Now().Add(after))
	default:
		if err := c.drop(entry); err != nil {
			n.log.Warn("custody: cannot remove a finished entry", "entry", entry, "err", err)
		}
		refused := make([]string, 0, len(r.o.Refused))
		for a := range r.o.Refused {
			refused = append(refused, a)
		}
		n.log.Info("custody: a gateway reports the outcome of a message to another ring", "entry", entry, "ring", e.bundle.Dest.Short(),
			"refused", strings.Join(refused, ","))
	}
}
