// Package tcp is the real network implementation of transport.Transport: TLS 1.3 over TCP with
// mutual authentication by ring-CA-issued node certificates, length-framed messages, one pooled
// connection per peer, keepalive, bounded per-peer send queues and a bounded frame size.
//
// What the package vouches for: a frame handed to the Handler came over a connection whose peer
// proved, in a TLS 1.3 handshake, possession of the key of a certificate that Config.VerifyPeer
// accepted, and From.ID is the node id VerifyPeer read from that certificate. It never delivers
// a frame attributed to an unauthenticated id, never allocates a buffer larger than
// Config.MaxFrame for a peer's frame, never blocks in Send and never lets a send queue grow past
// its bound. It never interprets the frames it carries.
//
// # Wire format
//
// After the TLS handshake both sides exchange frames:
//
//	+-------------------+--------+---------------------------+
//	| length: uint32 BE | kind   | payload (length-1 bytes)  |
//	+-------------------+--------+---------------------------+
//
// length counts the kind byte plus the payload, so it is at least 1. Kinds:
//
//	1 data       payload is an overlay frame, delivered to the Handler
//	2 hello      payload: uint16 BE protocol version, then the sender's listening address
//	             (host:port, at most 255 bytes); exactly one, first, in each direction
//	3 keepalive  empty payload; sent when nothing else was written for KeepaliveInterval
//
// A frame whose length exceeds MaxFrame+1 (or 1+maxHelloPayload before the hello), an unknown
// kind, a second hello or a non-empty keepalive closes the connection. The hello carries the
// advertised address so that inbound frames get a From.Addr the overlay can dial back; the
// address is a claim of the authenticated peer, the id is proven.
//
// # Connections
//
// The pool holds at most one connection per peer id for sending, used in both directions: a
// connection that X dialed to us also carries our frames to X. If both sides dial each other at
// the same moment, both connections are tolerated: each side keeps sending on the connection in
// its pool (so per-peer order holds) and receives on both; a surplus connection closes when idle.
// A newer inbound connection from X replaces an older inbound one (X only dials when it has
// given up on the old one). Failed dials back off exponentially per peer id; during the backoff
// Send returns transport.ErrUnreachable at once.
//
// # Goroutines and locking
//
// Per transport: one accept loop, and one maintenance timer on the injected clock (keepalive,
// idle close, backoff pruning). Per connection being set up: one goroutine (inbound handshake or
// outbound dial). Per established connection: one reader and one writer goroutine. The Handler
// is called from reader goroutines, one call at a time (Transport.deliverMu serializes the
// calls), in per-peer order; it must not block, since a blocked Handler stalls every reader.
// Every goroutine is counted in Transport.wg, and wg.Add is only ever called with Transport.mu
// held and Transport.closed false, so Close (which sets closed, then waits) cannot race an Add.
//
// Lock order: Transport.mu before conn.mu; neither is held across network I/O or a Handler call.
// Transport.mu guards the pool, the set of all connections, the backoff table and the inbound
// count. conn.mu guards the connection's send queue, its closed flag and its net.Conn.
// Counters are atomics and need no lock.
//
// Socket deadlines (handshake, read, write) are wall-clock, because the kernel and the Go
// netpoller know no other time. Keepalive, idle and backoff decisions use the injected Clock.
package tcp
