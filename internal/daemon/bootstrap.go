package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"epost/internal/ids"
	"epost/internal/tcp"
	"epost/internal/transport"
)

// addrBook maps peers' advertised addresses to the node ids they proved. Entries expire so that
// a node replaced at the same address (new id) is found again by a fresh probe.
type addrBook struct {
	mu     sync.Mutex
	byAddr map[string]addrEntry
}

type addrEntry struct {
	id   ids.ID
	seen time.Time
	// proven: this node dialed addr and the id answered there (a probe). An entry learned from
	// a peer's hello (the address it advertises, which nothing checks) never replaces a
	// proven one while that is fresh: a hostile member could otherwise advertise a bootstrap
	// node's address and make this node's joins and heals to it fail.
	proven bool
}

// addrTTL bounds how long an address is believed to belong to an id without hearing from it.
const addrTTL = 10 * time.Minute

// proofHold is how long a proven entry not heard from keeps other ids' claims off its
// address (the proven node's own frames keep it fresh); after that a node that really moved
// there (a new id at the old address) is learned from its hello again.
const proofHold = time.Minute

func newAddrBook() *addrBook { return &addrBook{byAddr: make(map[string]addrEntry)} }

// learn records that id claims addr (a peer's hello); see learnProven for what a dial showed.
func (b *addrBook) learn(addr string, id ids.ID) { b.record(addr, id, false) }

// learnProven records that a dial to addr found id there.
func (b *addrBook) learnProven(addr string, id ids.ID) { b.record(addr, id, true) }

func (b *addrBook) record(addr string, id ids.ID, proven bool) {
	if addr == "" || id.IsZero() {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byAddr[addr]
	fresh := ok && now.Sub(e.seen) <= addrTTL
	switch {
	case fresh && e.proven && !proven && e.id != id && now.Sub(e.seen) <= proofHold:
		return // a claim against what a dial showed, while the proven node is still heard
	case fresh && e.id == id && now.Sub(e.seen) <= time.Second && (e.proven || !proven):
		return
	}
	b.byAddr[addr] = addrEntry{id: id, seen: now, proven: proven || (fresh && e.proven && e.id == id)}
}

func (b *addrBook) lookup(addr string) (ids.ID, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byAddr[addr]
	if !ok || time.Since(e.seen) > addrTTL {
		return ids.Zero, false
	}
	return e.id, true
}

// resolvingTransport lets Pastry send to a node known only by address (to == ids.Zero, as for
// join requests to bootstrap nodes): tcp refuses those, because it authenticates every peer
// against the id it expects. The id comes from the address book, or from a probe run in the
// background; the frame waits for the probe (one frame per address, the newest: Pastry retries
// joins end to end).
type resolvingTransport struct {
	tr    *tcp.Transport
	out   transport.Transport // frames go out here when set (the global ring's admission layer), else on tr
	book  *addrBook
	log   *slog.Logger
	probe func(ctx context.Context, addr string) (ids.ID, error)
	// barred, if set, names peers not to send to (dropped for bad input, peerguard.go): a
	// dial would be refused at our own end.
	barred func(ids.ID) bool

	mu      sync.Mutex
	pending map[string]*pendingProbe
}

type pendingProbe struct {
	frame    []byte
	running  bool
	failures int
	until    time.Time // no new probe before this (backoff)
}

func (r *resolvingTransport) LocalAddr() string { return r.tr.LocalAddr() }
func (r *resolvingTransport) Close() error      { return r.tr.Close() }

func (r *resolvingTransport) send(to ids.ID, addr string, frame []byte) error {
	if r.barred != nil && r.barred(to) {
		return fmt.Errorf("%w: %s is dropped for bad input", transport.ErrUnreachable, to.Short())
	}
	if r.out != nil {
		return r.out.Send(to, addr, frame)
	}
	return r.tr.Send(to, addr, frame)
}

// SendParts implements transport.PartsSender (a payload is not joined to its overlay header
// when it goes straight to the node's TLS transport).
func (r *resolvingTransport) SendParts(to ids.ID, addr string, head, tail []byte) error {
	if r.out == nil {
		if to.IsZero() {
			to, _ = r.book.lookup(addr)
		}
		if !to.IsZero() && (r.barred == nil || !r.barred(to)) {
			return r.tr.SendParts(to, addr, head, tail)
		}
	}
	return r.Send(to, addr, append(head[:len(head):len(head)], tail...))
}

func (r *resolvingTransport) Send(to ids.ID, addr string, frame []byte) error {
	if !to.IsZero() {
		return r.send(to, addr, frame)
	}
	if id, ok := r.book.lookup(addr); ok {
		return r.send(id, addr, frame)
	}
	r.mu.Lock()
	p := r.pending[addr]
	if p == nil {
		p = &pendingProbe{}
		r.pending[addr] = p
	}
	p.frame = frame
	if p.running || time.Now().Before(p.until) {
		r.mu.Unlock()
		return nil // the running probe sends it, or Pastry retries after the backoff
	}
	p.running = true
	r.mu.Unlock()
	go r.resolve(addr)
	return nil
}

func (r *resolvingTransport) resolve(addr string) {
	id, err := r.probe(context.Background(), addr)
	r.mu.Lock()
	p := r.pending[addr]
	p.running = false
	frame := p.frame
	if err != nil {
		p.failures++
		p.until = time.Now().Add(min(time.Second<<min(p.failures-1, 5), 30*time.Second))
		r.mu.Unlock()
		r.log.Debug("resolve address failed", "addr", addr, "err", err)
		return
	}
	delete(r.pending, addr)
	r.mu.Unlock()
	r.book.learnProven(addr, id)
	if err := r.send(id, addr, frame); err != nil {
		r.log.Debug("send after resolve failed", "addr", addr, "peer", id.Short(), "err", err)
	}
}

// probeAddr learns the node id at addr (tcp's Identify: TLS under the ring's trust rules and
// the hello exchange), with refusals turned into advice.
func (n *Node) probeAddr(ctx context.Context, addr string) (ids.ID, error) {
	id, err := n.rt.tr.Identify(ctx, addr)
	if err != nil {
		if errors.Is(err, tcp.ErrOwnID) {
			return ids.Zero, errors.New("that address is this node itself")
		}
		return ids.Zero, explainHandshake(err)
	}
	return id, nil
}

// explainHandshake turns the usual refusals into advice.
func explainHandshake(err error) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "bad certificate"), strings.Contains(s, "certificate required"),
		strings.Contains(s, "unknown certificate"), errors.Is(err, io.EOF), strings.Contains(s, "connection reset"):
		return fmt.Errorf("the peer refused our certificate (%v): check the peer's log, and that this node is enrolled in that ring with a valid, unrevoked certificate", err)
	}
	return err
}

func (n *Node) advertised() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tr != nil {
		return n.tr.LocalAddr()
	}
	return n.rn.Config.Listen
}

// candidate is a node to join through.
type candidate struct {
	addr       string
	remembered bool // from peers.json rather than the config
}

// candidates lists the config's bootstrap addresses, then the remembered peers, without this
// node's own address and without duplicates.
func (n *Node) candidates(self string) []candidate {
	var cs []candidate
	seen := map[string]bool{self: true, n.rn.Config.Listen: true}
	for _, a := range n.rn.Config.Bootstrap {
		if !seen[a] {
			seen[a] = true
			cs = append(cs, candidate{addr: a})
		}
	}
	remembered, err := n.peers.load()
	if err != nil {
		n.log.Warn("remembered peers ignored: " + err.Error())
	}
	for _, p := range remembered {
		if !seen[p.Addr] {
			seen[p.Addr] = true
			cs = append(cs, candidate{addr: p.Addr, remembered: true})
			n.book.learn(p.Addr, p.ID)
		}
	}
	return cs
}

// join probes the candidates until one answers and then starts the overlay through the ones that
// did, followed by the config's bootstrap addresses (Pastry heals partitions through those).
// With no candidate at all the node founds a new ring. It runs on its own goroutine.
func (n *Node) join(self string) {
	defer n.wg.Done()
	cs := n.candidates(self)
	if len(cs) == 0 {
		n.log.Info("no bootstrap nodes configured and no remembered peers: founding a new ring")
		n.startOverlay(nil)
		return
	}
	nRemembered := 0
	for _, c := range cs {
		if c.remembered {
			nRemembered++
		}
	}
	n.log.Info("joining", "bootstrap", strings.Join(n.rn.Config.Bootstrap, ","), "remembered_peers", nRemembered)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := n.timers.BootstrapBackoff
	for round := 1; ; round++ {
		type result struct {
			c   candidate
			id  ids.ID
			err error
		}
		results := make([]result, len(cs))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := n.probeAddr(ctx, c.addr)
				results[i] = result{c, id, err}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		var up []string
		for _, r := range results {
			if r.err == nil {
				n.book.learnProven(r.c.addr, r.id)
				up = append(up, r.c.addr)
			}
		}
		if len(up) > 0 {
			bs := up
			for _, a := range n.rn.Config.Bootstrap {
				if !slices.Contains(bs, a) {
					bs = append(bs, a)
				}
			}
			for _, r := range results {
				if r.err != nil && !r.c.remembered {
					n.log.Info(fmt.Sprintf("bootstrap %s unreachable: %v; joining through %s instead", r.c.addr, r.err, strings.Join(up, ",")))
				}
			}
			n.log.Info("bootstrap answered, joining", "via", strings.Join(up, ","), "round", round)
			n.startOverlay(bs)
			if len(n.rn.Config.Bootstrap) == 0 {
				n.founderWatch(ctx, up)
			}
			return
		}
		silent := 0
		for _, r := range results {
			if r.c.remembered {
				silent++
				n.log.Debug("remembered peer unreachable", "addr", r.c.addr, "err", r.err)
				continue
			}
			n.log.Warn(fmt.Sprintf("bootstrap %s unreachable: %v; retrying in %v", r.c.addr, r.err, wait),
				"bootstrap", r.c.addr, "round", round)
		}
		if silent > 0 {
			n.log.Warn(fmt.Sprintf("none of %d remembered peers answers; retrying in %v", silent, wait), "round", round)
		}
		// A node that was the ring's founder (no bootstrap configured) and finds none of its old
		// peers founds the ring anew rather than wait forever; the others rejoin through it.
		if len(n.rn.Config.Bootstrap) == 0 && round >= 3 {
			n.log.Warn("no bootstrap node configured and no remembered peer answered in 3 rounds: founding the ring anew")
			n.startOverlay(nil)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, n.timers.BootstrapMaxBackoff)
	}
}

// founderWatch covers a whole ring restarting: the founder (a node whose config names no
// bootstrap node) rejoins through its remembered peers, but when they too are only joining, all
// wait for each other. If the join does not complete within a few join timeouts, the founder
// founds the ring anew with a fresh driver; the others' join retries (their bootstrap lists name
// the founder) then reach it.
func (n *Node) founderWatch(ctx context.Context, via []string) {
	limit := 4 * n.timers.JoinTimeout
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if n.Ready() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(n.timers.Tick, 100*time.Millisecond) + 10*time.Millisecond):
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped || n.drv.Ready() {
		return
	}
	n.log.Warn(fmt.Sprintf("the remembered peers %s answered but none completed the join in %v (they are probably waiting for this node, the ring's founder): founding the ring anew",
		strings.Join(via, ","), limit))
	n.drv.Stop()
	drv := n.newDriver(n.seed + 1)
	n.drv = drv
	n.cur.Store(drv)
	drv.Start(nil)
}

func (n *Node) startOverlay(bootstrap []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	n.drv.Start(bootstrap)
	n.joined.Store(true)
}

// Compile-time check: the wrapper is a transport.
var _ transport.Transport = (*resolvingTransport)(nil)
