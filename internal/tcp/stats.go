package tcp

import "sync/atomic"

// Stats are a transport's counters since New. Bytes count data-frame payloads only (not
// headers, keepalives, hellos or TLS overhead).
type Stats struct {
	FramesIn, FramesOut uint64
	BytesIn, BytesOut   uint64
	// ConnsOpen is the number of established connections now; ConnsInbound and ConnsOutbound
	// count connections established since New.
	ConnsOpen                   int64
	ConnsInbound, ConnsOutbound uint64
	// DroppedBackpressure counts Sends refused with transport.ErrBackpressure; DroppedUnsent
	// counts queued frames lost because their connection closed before writing them.
	DroppedBackpressure uint64
	DroppedUnsent       uint64
	// RejectedHandshakes counts inbound connections refused before authentication completed
	// (bad or missing certificate, not TLS, handshake timeout, too many connections).
	RejectedHandshakes uint64
	// DialFailures counts failed outbound connections; PeerMismatches those among them where
	// the node at the address proved another id than the one Send expected.
	DialFailures   uint64
	PeerMismatches uint64
	// FramesTooLong and ProtocolErrors count connections closed for a frame over MaxFrame or
	// bytes that break the wire format.
	FramesTooLong  uint64
	ProtocolErrors uint64
}

type counters struct {
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	connsOpen                              atomic.Int64
	connsInbound, connsOutbound            atomic.Uint64
	droppedBackpressure, droppedUnsent     atomic.Uint64
	rejectedHandshakes                     atomic.Uint64
	dialFailures, peerMismatches           atomic.Uint64
	framesTooLong, protocolErrors          atomic.Uint64
}

// Stats returns a snapshot of the counters; each is read atomically, the set is not.
func (t *Transport) Stats() Stats {
	s := &t.st
	return Stats{
		FramesIn:            s.framesIn.Load(),
		FramesOut:           s.framesOut.Load(),
		BytesIn:             s.bytesIn.Load(),
		BytesOut:            s.bytesOut.Load(),
		ConnsOpen:           s.connsOpen.Load(),
		ConnsInbound:        s.connsInbound.Load(),
		ConnsOutbound:       s.connsOutbound.Load(),
		DroppedBackpressure: s.droppedBackpressure.Load(),
		DroppedUnsent:       s.droppedUnsent.Load(),
		RejectedHandshakes:  s.rejectedHandshakes.Load(),
		DialFailures:        s.dialFailures.Load(),
		PeerMismatches:      s.peerMismatches.Load(),
		FramesTooLong:       s.framesTooLong.Load(),
		ProtocolErrors:      s.protocolErrors.Load(),
	}
}
