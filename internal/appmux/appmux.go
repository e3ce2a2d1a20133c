// Package appmux lets several applications (Scribe, PAST, POST, ...) share one Pastry node.
//
// A pastry.Driver takes exactly one Forwarder and one OnEvent function, and carries opaque
// payloads. appmux names the application of every payload by its first byte, the tag, and
// dispatches on it:
//
//	mux := appmux.New()
//	var s *scribe.Scribe
//	drv := pastry.NewDriver(cfg, self, rng, mux.Forward, tr, clock, tick)
//	drv.OnEvent = mux.OnEvent
//	s = scribe.New(scribe.Config{...}, drv)
//	mux.Register(appmux.TagScribe, s)
//
// Each application writes its own tag as the first byte of every payload it routes or sends
// and owns the rest; the mux never strips or rewrites bytes, so an application's Forward may
// return a modified payload as is. Events that carry no payload (leaf-set changes, ready) go
// to every registered application, in registration order.
//
// The mux holds no lock: register every application before the driver starts.
package appmux

import (
	"errors"
	"fmt"

	"epost/internal/ids"
	"epost/internal/pastry"
)

// Tags of the applications in this repository. Add new applications here so that tags never
// collide; a tag is part of the wire format and must never be reused for something else.
const (
	TagScribe    byte = 0x01
	TagPast      byte = 0x02
	TagPost      byte = 0x03
	TagGlacier   byte = 0x04
	TagRelay     byte = 0x05 // mail handed between gateways on the global ring
	TagDirectory byte = 0x06 // gateways answering other rings' questions on the global ring
)

// ErrTagTaken is returned by Register for a tag that already has an application.
var ErrTagTaken = errors.New("appmux: tag already registered")

// App is an application on a shared Pastry node.
type App interface {
	// Forward is the application's Pastry Forward upcall for payloads carrying its tag. It
	// runs inside the node's Step with the node locked: it must not call into the driver
	// except Driver.Defer, and must not block.
	Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool)
	// HandleEvent receives EventDeliver and EventDirect whose payload carries the app's tag,
	// and every EventLeafSetChanged and EventReady. It runs outside the node lock and may call
	// the driver. The result says whether the event was the application's; the mux ignores it.
	HandleEvent(e pastry.Event) bool
}

// Mux dispatches a node's payloads to applications by tag.
type Mux struct {
	byTag [256]App
	all   []App
	// OnUnknown, if set, receives deliveries with an empty payload or an unregistered tag
	// (for counting; such messages are otherwise dropped).
	OnUnknown func(pastry.Event)
}

// New returns an empty mux.
func New() *Mux { return &Mux{} }

// Register installs app for tag.
func (m *Mux) Register(tag byte, app App) error {
	if m.byTag[tag] != nil {
		return fmt.Errorf("%w: 0x%02x", ErrTagTaken, tag)
	}
	m.byTag[tag] = app
	m.all = append(m.all, app)
	return nil
}

// Forward is a pastry.Forwarder. Payloads without a registered tag pass through unchanged:
// an intermediate node need not run every application to route its messages.
func (m *Mux) Forward(key ids.ID, payload []byte, next pastry.Handle) ([]byte, bool) {
	if len(payload) == 0 || m.byTag[payload[0]] == nil {
		return payload, true
	}
	return m.byTag[payload[0]].Forward(key, payload, next)
}

// OnEvent is a pastry.Driver OnEvent function.
func (m *Mux) OnEvent(e pastry.Event) {
	switch e.Kind {
	case pastry.EventDeliver, pastry.EventDirect:
		if len(e.Payload) > 0 && m.byTag[e.Payload[0]] != nil {
			m.byTag[e.Payload[0]].HandleEvent(e)
		} else if m.OnUnknown != nil {
			m.OnUnknown(e)
		}
	default:
		for _, a := range m.all {
			a.HandleEvent(e)
		}
	}
}
