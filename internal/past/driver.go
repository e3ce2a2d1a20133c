package past

import (
	"slices"
	"time"

	"epost/internal/appmux"
	"epost/internal/ids"
	"epost/internal/pastry"
	"epost/internal/store"
	"epost/internal/transport"
)

// Driver runs a PAST Node on a pastry.Driver and a clock. The same Driver runs under simnet
// (one event loop) and the real network (many goroutines); a mutex serialises access to the
// node, and the pastry driver is only called with that mutex released.
//
// Install HandleEvent as (or call it from) the pastry driver's OnEvent, and Forward as its
// Forwarder if the overlay was built with one (lookups are then answered by the first replica
// on the route).
type Driver struct {
	loop  *transport.Loop // its Mu guards node
	node  *Node
	pd    *pastry.Driver
	clock transport.Clock

	// OnReject is told about PAST payloads that could not be decoded.
	OnReject func(from pastry.Handle, err error)
	// OnStoreError is told when committing the node's writes to its store failed; the
	// messages that depended on them were not sent (persist.go).
	OnStoreError func(err error)

	// Async: a step whose messages wait for a commit sends them from a goroutine of its own,
	// so the caller (a connection's reader) goes on to the next message at once and the
	// writes of successive messages share commits (persist.go). Off under simnet, whose
	// event loop must stay one goroutine.
	Async bool

	wb *writeBack // the node's store, written back in groups (persist.go)
}

// NewDriver wires node to the overlay driver pd. Call Start once the overlay is running.
func NewDriver(node *Node, pd *pastry.Driver, clock transport.Clock, tick time.Duration) *Driver {
	d := &Driver{node: node, pd: pd, clock: clock}
	d.wb = newWriteBack(node.st)
	node.st = d.wb
	d.loop = transport.NewLoop(clock, tick, func(now time.Time) { d.node.Tick(now) }, func() { d.flushLocked(false) })
	return d
}

// Start begins ticking.
func (d *Driver) Start() { d.loop.Start() }

// Stop stops ticking; further events are ignored.
func (d *Driver) Stop() { d.loop.Stop() }

// Node gives locked access to the node, for inspection.
func (d *Driver) With(f func(n *Node)) {
	d.loop.Mu.Lock()
	defer d.loop.Mu.Unlock()
	f(d.node)
}

// HandleEvent takes the overlay's application events. It calls back into the pastry driver
// (With, Route, Send), so it must run outside the pastry driver's lock, as OnEvent does.
func (d *Driver) HandleEvent(e pastry.Event) {
	switch e.Kind {
	case pastry.EventReady, pastry.EventLeafSetChanged:
		left, right, ready := d.pd.ReadyLeafSet()
		if !ready {
			return // a joining node's leaf set is partial; EventReady follows
		}
		d.loop.Mu.Lock()
		if d.loop.Stopped() {
			d.loop.Mu.Unlock()
			return
		}
		d.node.SetLeafSet(d.clock.Now(), left, right)
		d.flushLocked(false)
	case pastry.EventDeliver, pastry.EventDirect:
		if len(e.Payload) == 0 || e.Payload[0] != appTag {
			return // another application's message
		}
		d.loop.Mu.Lock()
		if d.loop.Stopped() {
			d.loop.Mu.Unlock()
			return
		}
		var err error
		if e.Kind == pastry.EventDeliver {
			err = d.node.Deliver(d.clock.Now(), e.Origin, e.Payload)
		} else {
			err = d.node.Direct(d.clock.Now(), e.Origin, e.Payload)
		}
		d.flushLocked(false)
		if err != nil && d.OnReject != nil {
			d.OnReject(e.Origin, err)
		}
	}
}

// Forward is a pastry.Forwarder. It runs inside the pastry driver's Step, so what it sends
// goes out through pastry.Driver.Defer.
func (d *Driver) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	if len(payload) == 0 || payload[0] != appTag {
		return payload, true
	}
	d.loop.Mu.Lock()
	if d.loop.Stopped() {
		d.loop.Mu.Unlock()
		return payload, true
	}
	cont := d.node.Forward(d.clock.Now(), payload)
	d.flushLocked(true)
	return payload, cont
}

// Insert, Lookup and Refresh start operations; their callbacks run on the driver's caller
// (event loop or network goroutine) without locks held, and may start further operations.
func (d *Driver) Insert(obj Object, cb func(InsertResult)) {
	d.loop.Mu.Lock()
	d.node.Insert(d.clock.Now(), obj, cb)
	d.flushLocked(false)
}

// Lookup: see Node.Lookup.
func (d *Driver) Lookup(key ids.Key, cb func(Object, error)) {
	d.loop.Mu.Lock()
	d.node.Lookup(d.clock.Now(), key, cb)
	d.flushLocked(false)
}

// Refresh: see Node.Refresh.
func (d *Driver) Refresh(keys []ids.Key, expiry time.Time, cb func(error)) {
	d.loop.Mu.Lock()
	d.node.Refresh(d.clock.Now(), keys, expiry, cb)
	d.flushLocked(false)
}

// flushLocked sends the outbox and runs completed callbacks; it is called with d.mu held and
// releases it. deferred: we are inside pastry's Step (Forward) and must not call into it.
func (d *Driver) flushLocked(deferred bool) {
	out := d.node.TakeOutbox()
	done := d.node.TakeDone()
	durable := d.node.TakeDurable()
	own, upTo := d.wb.q.TakeStep()
	d.loop.Mu.Unlock()
	send := func(err error) {
		if err != nil {
			// The step's acknowledgements would be lies; its requests to others (stores
			// to the other replicas of our own insert, lookups) do not depend on our disk.
			out = slices.DeleteFunc(out, func(o Outgoing) bool { return o.Ack })
			durable = nil
			d.loop.Mu.Lock()
			d.node.stats.StoreFailures++
			d.loop.Mu.Unlock()
			if d.OnStoreError != nil {
				d.OnStoreError(err)
			}
		}
		for _, o := range out {
			switch {
			case o.Route:
				d.pd.Route(o.Key, o.Payload)
			case len(o.Tail) > 0:
				d.pd.SendParts(o.To, o.Payload, o.Tail)
			default:
				d.pd.Send(o.To, o.Payload)
			}
		}
		for _, f := range done {
			f()
		}
		if len(durable) > 0 {
			// Our own acknowledgements of this step's writes count now that they are durable.
			d.loop.Mu.Lock()
			if d.loop.Stopped() {
				d.loop.Mu.Unlock()
				return
			}
			d.node.DeliverDurable(d.clock.Now(), durable)
			d.flushLocked(false)
		}
	}
	// Persist before sending: what the step acknowledges must be on disk first. A
	// forwarder's step (deferred: inside pastry's Step) only answers lookups; it waits for
	// nobody's commit unless it wrote something itself.
	if deferred {
		if len(own) == 0 {
			upTo = 0
		}
		d.pd.Defer(func() { send(d.wb.q.Persist(own, upTo)) })
		return
	}
	d.wb.q.Flush(own, upTo, d.Async, send)
}

// Prelocate: see Node.Prelocate.
func (d *Driver) Prelocate(key ids.Key) {
	d.loop.Mu.Lock()
	d.node.Prelocate(d.clock.Now(), key)
	d.flushLocked(false)
}

// InsertDedupe: see Node.InsertDedupe.
func (d *Driver) InsertDedupe(obj Object, cb func(InsertResult)) {
	d.loop.Mu.Lock()
	d.node.InsertDedupe(d.clock.Now(), obj, cb)
	d.flushLocked(false)
}

// Delete: see Node.Delete.
func (d *Driver) Delete(key ids.Key, proof []byte, cb func(error)) {
	d.loop.Mu.Lock()
	d.node.Delete(d.clock.Now(), key, proof, cb)
	d.flushLocked(false)
}

// LocalGet reads a live object from this node's own store (no network): holders use it to
// act on what they hold.
func (d *Driver) LocalGet(key ids.Key) (Object, bool) {
	d.loop.Mu.Lock()
	defer d.loop.Mu.Unlock()
	obj, err := d.node.st.Get(key)
	if err != nil || obj.Expired(d.clock.Now()) {
		return Object{}, false
	}
	return obj, true
}

// LocalMetas lists the live objects of type t in this node's own store, for an application
// rebuilding its index after a restart.
func (d *Driver) LocalMetas(t Type) []store.Meta {
	d.loop.Mu.Lock()
	defer d.loop.Mu.Unlock()
	var out []store.Meta
	now := d.clock.Now()
	for meta, err := range d.node.st.Range(store.WholeRing(d.node.cfg.Ring)) {
		if err != nil {
			break
		}
		if Type(meta.Type) == t && !meta.Expired(now) {
			out = append(out, meta)
		}
	}
	return out
}

// App returns the driver as an appmux application (tag appmux.TagPast).
func (d *Driver) App() appmux.App { return muxApp{d} }

type muxApp struct{ d *Driver }

func (a muxApp) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	return a.d.Forward(key, payload, next)
}

func (a muxApp) HandleEvent(e pastry.Event) bool {
	a.d.HandleEvent(e)
	return (e.Kind == pastry.EventDeliver || e.Kind == pastry.EventDirect) && len(e.Payload) > 0 && e.Payload[0] == appTag
}

// LookupLatest: see Node.LookupLatest.
func (d *Driver) LookupLatest(key ids.Key, cb func(LookupResult)) {
	d.loop.Mu.Lock()
	d.node.LookupLatest(d.clock.Now(), key, cb)
	d.flushLocked(false)
}
