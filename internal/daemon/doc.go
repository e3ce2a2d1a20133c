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
// # Applications
//
// PAST, Scribe and POST run on every node (apps.go): replicated objects on the k nodes closest
// to each key, k from the ring descriptor, persisted in the node's durable store, which fsyncs
// before a replica acknowledges; topic trees (POST's presence); and mail delivery with the
// holder role for pending notifications. Applications share the overlay through appmux; their
// messages are handled on one worker goroutine fed by a bounded queue, never on the
// transport's delivery goroutine. The control socket exposes PAST to operators and tests
// (epost object).
//
// # Mail
//
// The node's users are the directories "epost user add" made under NODEDIR/users. Their
// records are published in PAST once the node is ready; their keys open at their first login
// (mailusers.go), which brings them online in POST and opens their mail store
// (internal/mailstore). When the node has users it serves IMAP, SMTP submission and POP3 on
// the config's addresses (mailservers.go): STARTTLS with a certificate the node makes for
// itself, clear-text logins only from loopback, optional implicit-TLS listeners, and mail for
// addresses outside the ring in a durable outbox for the ring's gateway.
//
// # Stopping
//
// Stop (SIGINT or SIGTERM to "epost node run") leaves the ring cleanly (leave.go): the overlay
// tells the leaf set and routing table that the node is gone, PAST offers the neighbours what
// they take over and serves their fetches for at most Timers.LeaveGrace, and only then do the
// applications stop, the peers get saved and the stores and the transport close.
//
// # Files
//
//	NODEDIR/control.sock    Unix socket, mode 0600, JSON requests (see control.go)
//	DATADIR/peers.json      remembered peers, rewritten atomically after leaf-set changes
//	DATADIR/global-peers.json  a gateway's remembered members of the global ring
//	DATADIR/store/          the object store (internal/store): PAST's replicas
//	DATADIR/outbox/         mail for recipients outside the ring (smtpserver.DirOutbox)
//	DATADIR/custody/        mail for other rings a gateway only queued, kept until the outcome (custody.go)
//	NODEDIR/mail-tls.crt    the mail servers' self-signed certificate; mail-tls.key (0600)
//	NODEDIR/users/ADDR/     a user: sealed keys, record, received journal, mail cache
//
// # What it must never do
//
// It never trusts a peer beyond what tcp and pastry have checked, never writes to disk on the
// transport's delivery goroutine (one exception to "never blocks": PAST's Forward upcall reads
// the store there, and waits for PAST's lock while the worker holds it for a write), never
// acknowledges an insert the store has not made durable, and never leaves the control socket
// behind on a clean stop.
package daemon
