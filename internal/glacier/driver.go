package glacier

import (
	"crypto/ed25519"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/transport"
)

// Driver runs a Glacier Node on a pastry.Driver and a clock, under simnet (one event loop) or
// the real network (many goroutines): a mutex serialises access to the node, and the pastry
// driver is only called with that mutex released.
//
// Install HandleEvent as (or call it from) the pastry driver's OnEvent, or register App() with
// an appmux.Mux. Glacier needs no Forward upcall.
type Driver struct {
	loop  *transport.Loop // its Mu guards node
	node  *Node
	pd    *pastry.Driver
	clock transport.Clock

	// OnReject is told about Glacier payloads that could not be decoded.
	OnReject func(from pastry.Handle, err error)
	// OnStoreError is told when committing the node's writes failed; the messages that
	// depended on them were not sent (persist.go).
	OnStoreError func(err error)
	// Async: a step whose messages wait for a commit sends them from a goroutine of its own
	// (see past.Driver.Async). Off under simnet.
	Async bool

	wb *writeBack
}

// NewDriver wires node to the overlay driver pd. Call Start once the overlay is running.
func NewDriver(node *Node, pd *pastry.Driver, clock transport.Clock, tick time.Duration) *Driver {
	d := &Driver{node: node, pd: pd, clock: clock}
	d.wb = newWriteBack(node.st)
	node.st = d.wb
	d.loop = transport.NewLoop(clock, tick, func(now time.Time) { d.node.Tick(now) }, d.flushLocked)
	return d
}

// Start begins ticking.
func (d *Driver) Start() { d.loop.Start() }

// Stop stops ticking; further events are ignored.
func (d *Driver) Stop() { d.loop.Stop() }

// With runs f with the node locked, for inspection.
func (d *Driver) With(f func(n *Node)) {
	d.loop.Mu.Lock()
	defer d.loop.Mu.Unlock()
	f(d.node)
}

// HandleEvent takes the overlay's application events; it must run outside the pastry
// driver's lock, as OnEvent does.
func (d *Driver) HandleEvent(e pastry.Event) {
	switch e.Kind {
	case pastry.EventReady, pastry.EventLeafSetChanged:
		left, right, ready := d.pd.ReadyLeafSet()
		if !ready {
			return
		}
		d.loop.Mu.Lock()
		if d.loop.Stopped() {
			d.loop.Mu.Unlock()
			return
		}
		d.node.SetLeafSet(d.clock.Now(), left, right)
		d.flushLocked()
	case pastry.EventDeliver, pastry.EventDirect:
		if len(e.Payload) == 0 || e.Payload[0] != appTag {
			return
		}
		d.loop.Mu.Lock()
		if d.loop.Stopped() {
			d.loop.Mu.Unlock()
			return
		}
		var err error
		if e.Kind == pastry.EventDeliver {
			err = d.node.Deliver(d.clock.Now(), e.Origin, e.Key, e.Payload)
		} else {
			err = d.node.Direct(d.clock.Now(), e.Origin, e.Payload)
		}
		d.flushLocked()
		if err != nil && d.OnReject != nil {
			d.OnReject(e.Origin, err)
		}
	}
}

// Insert: see Node.Insert. Callbacks run on the driver's caller without locks held.
func (d *Driver) Insert(man *Manifest, frags [][]byte, cb func(InsertResult)) {
	d.loop.Mu.Lock()
	d.node.Insert(d.clock.Now(), man, frags, cb)
	d.flushLocked()
}

// InsertEncoded: see Node.InsertEncoded. Callbacks run on the driver's caller without locks
// held.
func (d *Driver) InsertEncoded(e *Encoded, cb func(InsertResult)) {
	d.loop.Mu.Lock()
	d.node.InsertEncoded(d.clock.Now(), e, cb)
	d.flushLocked()
}

// EncodeInsert erasure-codes obj with the ring's code under a manifest signed by priv (Encode)
// and inserts it (InsertEncoded). cb gets the manifest, or nil when obj could not be encoded
// (the result's error says why), and the insert's result. With Async the coding runs on a
// goroutine of its own: a 512 KB aggregate is 4 MB of fragments to compute and hash, several
// milliseconds that would otherwise hold the caller, which in the daemon is the event loop
// PAST and POST share.
func (d *Driver) EncodeInsert(priv ed25519.PrivateKey, name []byte, version uint64, expiry time.Time, obj []byte, cb func(*Manifest, InsertResult)) {
	run := func() {
		e, err := Encode(d.node.Codec(), priv, d.node.cfg.Ring, name, version, expiry, obj)
		if err != nil {
			cb(nil, InsertResult{Err: err})
			return
		}
		d.InsertEncoded(e, func(r InsertResult) { cb(e.Manifest, r) })
	}
	if d.Async {
		go run()
		return
	}
	run()
}

// Renew: see Node.Renew. Callbacks run on the driver's caller without locks held.
func (d *Driver) Renew(man *Manifest, cb func(InsertResult)) {
	d.loop.Mu.Lock()
	d.node.Renew(d.clock.Now(), man, cb)
	d.flushLocked()
}

// Codec is the ring's erasure code (immutable: safe to use without the lock).
func (d *Driver) Codec() *Codec { return d.node.Codec() }

// Retrieve: see Node.Retrieve.
func (d *Driver) Retrieve(key ids.ID, cb func([]byte, *Manifest, error)) {
	d.loop.Mu.Lock()
	d.node.Retrieve(d.clock.Now(), key, cb)
	d.flushLocked()
}

// flushLocked sends the outbox and runs completed callbacks; called with d.mu held, it
// releases it.
func (d *Driver) flushLocked() {
	out := d.node.TakeOutbox()
	done := d.node.TakeDone()
	own, upTo := d.wb.q.TakeStep()
	d.loop.Mu.Unlock()
	// Persist before sending: a holder acknowledges only what is on disk.
	d.wb.q.Flush(own, upTo, d.Async, func(err error) {
		if err != nil {
			out = nil
			if d.OnStoreError != nil {
				d.OnStoreError(err)
			}
		}
		for _, o := range out {
			switch {
			case o.Route && len(o.Tail) > 0:
				d.pd.RouteParts(o.Key, o.Payload, o.Tail)
			case o.Route:
				d.pd.Route(o.Key, o.Payload)
			default:
				d.pd.Send(o.To, o.Payload)
			}
		}
		for _, f := range done {
			f()
		}
	})
}

// App returns the driver as an appmux application (tag appmux.TagGlacier).
func (d *Driver) App() appmux.App { return muxApp{d} }

type muxApp struct{ d *Driver }

func (a muxApp) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	return payload, true
}

func (a muxApp) HandleEvent(e pastry.Event) bool {
	a.d.HandleEvent(e)
	return (e.Kind == pastry.EventDeliver || e.Kind == pastry.EventDirect) && len(e.Payload) > 0 && e.Payload[0] == appTag
}
