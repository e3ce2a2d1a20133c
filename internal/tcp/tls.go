package tcp

import (
	"crypto/tls"
	"errors"
	"fmt"

	"epost/internal/ids"
)

// Reasons a handshake is refused, besides the errors of VerifyPeer and crypto/tls.
var (
	ErrNoCertificate = errors.New("tcp: peer presented no certificate")
	ErrOwnID         = errors.New("tcp: peer presents our own node id")
	// ErrPeerBarred, wrapped in VerifyPeer's error, refuses a peer the owner of the transport
	// keeps away for a while (a member that sent garbage): counted like any refusal, but logged
	// only at debug level, as the owner logs why (a barred peer that keeps dialing would
	// otherwise fill the log).
	ErrPeerBarred = errors.New("tcp: peer barred")
)

// PeerMismatchError reports that the node at an address proved an id other than the one Send
// expected: someone else is at that address (the node moved, or the address book is stale).
type PeerMismatchError struct {
	Addr          string
	Expected, Got ids.ID
}

func (e *PeerMismatchError) Error() string {
	return fmt.Sprintf("tcp: node at %s is %s, expected %s", e.Addr, e.Got.Short(), e.Expected.Short())
}

// baseTLS builds the configuration shared by all connections. Chain verification is VerifyPeer's
// job (it knows the ring CA and the revocation list), so crypto/tls's own verification is off
// (InsecureSkipVerify for the client, RequireAnyClientCert for the server) and VerifyConnection,
// which crypto/tls calls on both sides regardless, does the real check. Session resumption is
// off so that every connection runs VerifyPeer against the current revocation state.
func baseTLS(cfg Config) *tls.Config {
	var c *tls.Config
	if cfg.TLSConfig != nil {
		c = cfg.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if cfg.Certificate.PrivateKey != nil {
		c.Certificates = []tls.Certificate{cfg.Certificate}
	}
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequireAnyClientCert
	c.InsecureSkipVerify = true
	c.VerifyPeerCertificate = nil
	c.SessionTicketsDisabled = true
	c.ClientSessionCache = nil
	c.GetConfigForClient = nil
	return c
}

// connTLS returns a per-connection configuration whose VerifyConnection stores the peer's
// authenticated id in *got. For outbound connections expect is the id Send was given; a
// different id fails the handshake with a *PeerMismatchError.
func (t *Transport) connTLS(addr string, expect *ids.ID, got *ids.ID) *tls.Config {
	c := t.tls.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrNoCertificate
		}
		var id ids.ID
		var err error
		if t.cfg.VerifyPeerChain != nil {
			id, err = t.cfg.VerifyPeerChain(cs.PeerCertificates)
		} else {
			id, err = t.cfg.VerifyPeer(cs.PeerCertificates[0])
		}
		if err != nil {
			return fmt.Errorf("peer certificate refused: %w", err)
		}
		if id == t.cfg.ID {
			return ErrOwnID
		}
		if expect != nil && id != *expect {
			return &PeerMismatchError{Addr: addr, Expected: *expect, Got: id}
		}
		*got = id
		return nil
	}
	return c
}
