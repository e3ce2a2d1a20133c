package ring

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// handshake runs a TLS handshake between client and server configurations over an in-memory
// pipe, and one byte of application data from server to client so that a client whose
// certificate the server refuses learns it (in TLS 1.3 the client finishes its handshake before
// the server has checked the client's certificate).
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	c, s := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	done := make(chan error, 1)
	go func() {
		defer s.Close()
		ts := tls.Server(s, server)
		if err := ts.Handshake(); err != nil {
			done <- err
			return
		}
		_, err := ts.Write([]byte{1})
		done <- err
	}()
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		var b [1]byte
		_, clientErr = tc.Read(b[:])
	}
	c.Close()
	return clientErr, <-done
}

func TestTLSHandshake(t *testing.T) {
	r := newTestRing(t, "acme")
	a := newTestNode(t, r, Validity{})
	b := newTestNode(t, r, Validity{})
	expired := newTestNode(t, r, Validity{NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(-time.Hour)})
	revoked := newTestNode(t, r, Validity{})
	if _, err := r.Revoke(nil, revoked.ID, "", testNow); err != nil {
		t.Fatal(err)
	}
	// a and b learn the revocation the way nodes will: a newer signed list.
	for _, n := range []*Node{a, b} {
		if _, err := n.Trust.UpdateRevocations(r.Trust.SignedRevocations()); err != nil {
			t.Fatal(err)
		}
	}
	foreign := newTestNode(t, newTestRing(t, "globex"), Validity{})
	now := func() time.Time { return testNow }
	cfg := func(n *Node) *tls.Config { return n.Trust.TLSConfig(n.Creds, now) }

	t.Run("same ring", func(t *testing.T) {
		cerr, serr := handshake(t, cfg(a), cfg(b))
		if cerr != nil || serr != nil {
			t.Fatalf("client %v, server %v", cerr, serr)
		}
	})
	t.Run("peer id after handshake", func(t *testing.T) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		ts := tls.Server(s, cfg(b))
		go ts.Handshake()
		tc := tls.Client(c, cfg(a))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		id, err := a.Trust.PeerID(tc.ConnectionState(), testNow)
		if err != nil || id != b.ID {
			t.Fatalf("PeerID %s %v, want %s", id.Short(), err, b.ID.Short())
		}
	})

	tests := []struct {
		name           string
		client, server *tls.Config
		wantServer     error // the side that must refuse, with this reason
		wantClient     error
	}{
		// A node of another ring refuses our server before it ever shows its own certificate...
		{"client of another ring", cfg(foreign), cfg(a), nil, ErrWrongRing},
		// ...so to see the server refuse it, the client must trust our ring but hold theirs.
		{"client with another ring's certificate", a.Trust.TLSConfig(foreign.Creds, now), cfg(a), ErrWrongRing, nil},
		{"server of another ring", cfg(a), cfg(foreign), nil, ErrWrongRing},
		{"client expired", cfg(expired), cfg(a), ErrExpired, nil},
		{"server expired", cfg(a), cfg(expired), nil, ErrExpired},
		{"client revoked", cfg(revoked), cfg(a), ErrRevoked, nil},
		{"server revoked", cfg(a), cfg(revoked), nil, ErrRevoked},
		{"client without certificate", a.Trust.TLSConfig(tls.Certificate{}, now), cfg(b), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cerr, serr := handshake(t, tc.client, tc.server)
			if cerr == nil && serr == nil {
				t.Fatal("handshake succeeded")
			}
			if tc.wantServer != nil && !errors.Is(serr, tc.wantServer) {
				t.Fatalf("server error %v, want %v", serr, tc.wantServer)
			}
			if tc.wantClient != nil && !errors.Is(cerr, tc.wantClient) {
				t.Fatalf("client error %v, want %v", cerr, tc.wantClient)
			}
			if cerr == nil || serr == nil {
				t.Fatalf("both sides must fail: client %v, server %v", cerr, serr)
			}
			t.Logf("client: %v; server: %v", cerr, serr)
		})
	}

	t.Run("TLS 1.2 refused", func(t *testing.T) {
		old := cfg(a)
		old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		cerr, serr := handshake(t, old, cfg(b))
		if cerr == nil || serr == nil {
			t.Fatalf("TLS 1.2: client %v, server %v", cerr, serr)
		}
	})
}
