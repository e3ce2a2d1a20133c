package tcp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// Defaults for the zero fields of Config.
const (
	// DefaultMaxFrame allows a 4 MiB overlay message (PAST objects are at most 1 MiB, plus
	// batching) and some slack for the overlay's own headers.
	DefaultMaxFrame          = 4<<20 + 64<<10
	DefaultQueueBytes        = 8 << 20
	DefaultQueueFrames       = 1024
	DefaultDialTimeout       = 10 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultReadTimeout       = 45 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultMaxInbound        = 1024
	DefaultMinBackoff        = 250 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
)

// Config configures a Transport. ID, VerifyPeer, Handler and a certificate (Certificate or
// TLSConfig.Certificates) are required; zero durations and sizes take the defaults above.
//
// With the ring package (n a loaded *ring.Node):
//
//	tcp.Config{ListenAddr: n.Config.Listen, ID: n.ID, Certificate: n.Creds,
//		VerifyPeer: n.Trust.Verifier(clock.Now), Handler: h, Logger: log}
//
// Memory bounds: per peer, QueueBytes of queued frames; per connection, one inbound frame of at
// most MaxFrame while it is read and delivered. With MaxInbound connections (plus outbound ones)
// the worst case is (peers × QueueBytes) + (connections × MaxFrame).
type Config struct {
	// ListenAddr is the TCP address to listen on, e.g. ":7946" or "127.0.0.1:0".
	ListenAddr string
	// AdvertiseAddr is the address sent to peers in the hello and returned by LocalAddr.
	// Default: the listener's address (right for tests; set it when listening on a wildcard).
	AdvertiseAddr string

	// ID is this node's id; it must be the one bound in Certificate.
	ID ids.ID
	// Certificate is this node's certificate chain and key, presented in both directions.
	Certificate tls.Certificate
	// VerifyPeer checks a peer's leaf certificate (chain to the ring CA, validity, revocation)
	// and returns the node id bound in it. Its error is logged as the reason a connection was
	// refused, so it should read well ("wrong ring CA", "expired", "revoked").
	VerifyPeer func(cert *x509.Certificate) (ids.ID, error)
	// VerifyPeerChain, if set, is used instead of VerifyPeer and sees the whole chain the peer
	// presented, leaf first: the global ring's members belong to rings whose CAs they have
	// never seen, so each presents its CA certificate after its own (Certificate then carries
	// both).
	VerifyPeerChain func(chain []*x509.Certificate) (ids.ID, error)
	// OnPeer, if set, hears of every completed handshake (the peer proved possession of its
	// key and sent its hello) with the chain it presented, before any frame of that connection
	// is delivered. State about a peer belongs here, not in VerifyPeer(Chain), which TLS calls
	// before the peer's signature is checked: anyone can present anyone's certificate.
	OnPeer func(id ids.ID, chain []*x509.Certificate)
	// OnBadFrame, if set, hears of every connection of an authenticated peer closed for a
	// frame over MaxFrame or one that breaks the protocol, so that its owner can keep a peer
	// that does it again and again away (ErrPeerBarred). It is called on the connection's
	// reader goroutine and must not block.
	OnBadFrame func(id ids.ID, err error)
	// TLSConfig is an optional base (cipher preferences, KeyLogWriter in a debugging session).
	// It is cloned; versions, client authentication and verification are always overridden:
	// TLS 1.3 only, a certificate required from both sides, checked by VerifyPeer.
	TLSConfig *tls.Config

	// Handler receives data frames; see transport.Handler and the package doc for its rules.
	Handler transport.Handler
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Clock drives keepalive, idle and backoff decisions; nil is the wall clock.
	Clock transport.Clock

	// MaxFrame is the largest payload accepted or sent; larger inbound frames close the
	// connection before anything is allocated.
	MaxFrame int
	// QueueBytes and QueueFrames bound each peer's send queue (frames not yet written to the
	// socket). Send returns transport.ErrBackpressure rather than exceed either. A single frame
	// larger than QueueBytes is still accepted when the queue is empty.
	QueueBytes  int
	QueueFrames int

	DialTimeout time.Duration // TCP connect
	// HandshakeTimeout bounds TLS handshake plus hello exchange, in both directions; a peer
	// that opens TCP and never completes it is closed after this.
	HandshakeTimeout time.Duration
	// KeepaliveInterval: a keepalive frame is sent when nothing was written for this long, so
	// the peer's read deadline does not fire on a healthy idle connection.
	KeepaliveInterval time.Duration
	// ReadTimeout bounds the wait for each complete frame (header and payload). It must exceed
	// the peers' KeepaliveInterval; it closes dead connections and slow-loris peers.
	ReadTimeout time.Duration
	// WriteTimeout bounds the write of each frame; a peer that stops reading is closed after it.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection that carried no data frame in either direction for this
	// long (keepalives do not count).
	IdleTimeout time.Duration
	// MaxInbound bounds accepted connections, including those still handshaking.
	MaxInbound int
	// MinBackoff and MaxBackoff bound the exponential wait after a failed dial to a peer id.
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

// withDefaults fills zero fields and checks the required ones.
func (c Config) withDefaults() (Config, error) {
	if c.VerifyPeer == nil && c.VerifyPeerChain == nil {
		return c, errors.New("tcp: Config.VerifyPeer (or VerifyPeerChain) is required")
	}
	if c.Handler == nil {
		return c, errors.New("tcp: Config.Handler is required")
	}
	if c.ID.IsZero() {
		return c, errors.New("tcp: Config.ID is required")
	}
	if c.Certificate.PrivateKey == nil && (c.TLSConfig == nil || len(c.TLSConfig.Certificates) == 0) {
		return c, errors.New("tcp: a certificate is required (Config.Certificate or Config.TLSConfig.Certificates)")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = transport.RealClock{}
	}
	setInt(&c.MaxFrame, DefaultMaxFrame)
	setInt(&c.QueueBytes, DefaultQueueBytes)
	setInt(&c.QueueFrames, DefaultQueueFrames)
	setInt(&c.MaxInbound, DefaultMaxInbound)
	setDur(&c.DialTimeout, DefaultDialTimeout)
	setDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDur(&c.KeepaliveInterval, DefaultKeepaliveInterval)
	setDur(&c.ReadTimeout, DefaultReadTimeout)
	setDur(&c.WriteTimeout, DefaultWriteTimeout)
	setDur(&c.IdleTimeout, DefaultIdleTimeout)
	setDur(&c.MinBackoff, DefaultMinBackoff)
	setDur(&c.MaxBackoff, DefaultMaxBackoff)
	if c.MaxFrame > 1<<31 {
		return c, fmt.Errorf("tcp: MaxFrame %d does not fit the 32-bit length field", c.MaxFrame)
	}
	if c.ReadTimeout <= c.KeepaliveInterval {
		return c, fmt.Errorf("tcp: ReadTimeout %v must exceed KeepaliveInterval %v, or idle healthy connections time out",
			c.ReadTimeout, c.KeepaliveInterval)
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	return c, nil
}

func setInt(p *int, d int) {
	if *p <= 0 {
		*p = d
	}
}

func setDur(p *time.Duration, d time.Duration) {
	if *p <= 0 {
		*p = d
	}
}
