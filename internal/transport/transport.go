// Package transport is the narrow interface between the overlay and a network: best-effort,
// message-oriented delivery of byte frames between nodes that know each other by address.
//
// Two implementations exist: simnet (in memory, virtual time, seeded) and tcp (TLS 1.3 with
// ring certificates). The overlay never learns which one it runs on. A transport never
// interprets the bytes it carries, and never trusts the peer: the only facts it vouches for
// are in From (for tcp, the node id is the one proven by the peer's certificate).
package transport

import (
	"errors"
	"time"

	"epost/internal/ids"
)

// Errors shared by implementations.
var (
	ErrClosed       = errors.New("transport: closed")
	ErrFrameTooLong = errors.New("transport: frame exceeds the maximum size")
	ErrBackpressure = errors.New("transport: send queue to peer is full")
	ErrUnreachable  = errors.New("transport: peer unreachable")
)

// From describes the sender of a received frame.
type From struct {
	// ID is the sender's node id as authenticated by the transport (certificate for tcp,
	// construction for simnet). The overlay must reject frames whose claimed id differs.
	ID ids.ID
	// Addr is the address the sender can be reached at, when known ("" for an inbound
	// connection whose listening address the transport cannot know).
	Addr string
}

// Handler receives frames. It runs on the transport's delivery goroutine (tcp) or in the
// event loop (simnet) and must not block: hand the frame to a queue and return. The frame is
// owned by the handler after the call.
type Handler func(from From, frame []byte)

// Transport sends frames to peers by address.
type Transport interface {
	// LocalAddr is the address peers use to reach this node.
	LocalAddr() string
	// Send queues frame for best-effort delivery to the node at addr whose id is expected to be
	// to. It never blocks on the network; a full queue returns ErrBackpressure and the frame is
	// dropped (the overlay retries end to end). The transport may keep frame until it is sent,
	// so the caller must not modify it afterwards.
	Send(to ids.ID, addr string, frame []byte) error
	// Close stops the transport; queued frames may be dropped.
	Close() error
}

// PartsSender is an optional Transport ability: Send of a frame given in two parts, head then
// tail, written one after the other, so that the caller need not join them first (an
// overlay header in front of a 64 KB payload would otherwise be one more allocation and copy
// of the payload). The caller must not modify either part afterwards.
type PartsSender interface {
	SendParts(to ids.ID, addr string, head, tail []byte) error
}

// Clock is injected time: the real clock in a daemon, virtual time in simnet.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f once after d, on the clock's goroutine (simnet: the event loop).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a cancellable pending call of a Clock.
type Timer interface {
	// Stop cancels the call; it reports whether the call was still pending.
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
