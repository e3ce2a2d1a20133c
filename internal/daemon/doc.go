// Package daemon is the node runtime: it loads an enrolled node directory, runs the Pastry
// overlay (pastry.Driver) over the TLS transport (tcp) with the wall clock, joins the ring through
// the configured bootstrap addresses and the peers it remembered on disk, and answers status
// queries on a local control socket. "epost node run" is a thin wrapper around it, so that
// "epost demo" and tests can run several nodes in one process.
//
// # Joining
//
// Before the overlay starts, the daemon probes the candidates (the config's bootstrap addresses,
// then the peers remembered in DATADIR/peers.json) with a short TLS handshake, retrying with
// exponential backoff until one answers; a node whose config names no bootstrap node and that
// remembers no peer founds a new ring at once. The probe also tells the daemon the node id at a
// bootstrap address, which the transport needs: tcp authenticates every peer against the id it
// expects, while Pastry addresses a bootstrap node by address alone (ids.Zero).
//
// # Files
//
//	NODEDIR/control.sock    Unix socket, mode 0600, JSON status requests (see control.go)
//	DATADIR/peers.json      remembered peers, rewritten atomically after leaf-set changes
//
// # What it must never do
//
// It never trusts a peer beyond what tcp and pastry have checked, never blocks the transport's
// delivery goroutine on disk or socket I/O, and never leaves the control socket behind on a
// clean stop.
package daemon
