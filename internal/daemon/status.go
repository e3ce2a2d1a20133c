package daemon

import (
	"os"
	"slices"
	"time"

	"epost/internal/connlimit"
	"epost/internal/diskstat"
	"epost/internal/glacier"
	"epost/internal/ids"
	"epost/internal/mailstore"
	"epost/internal/past"
	"epost/internal/pastry"
)

// Status is a node's state as reported by "epost status --json". Field names are part of the
// command-line contract (DESIGN.md): node_id, ring_id, ready, leaf_set, routing_table_entries
// and peers stay; others may be added.
type Status struct {
	NodeID   string `json:"node_id"` // hex, 64 digits
	RingID   string `json:"ring_id"`
	RingName string `json:"ring_name"`
	Ready    bool   `json:"ready"`
	// Phase is "starting" (probing bootstrap nodes), "joining", "announced", "ready" or "left"
	// (stopping: the neighbours were told, the hand-over runs).
	Phase  string `json:"phase"`
	Listen string `json:"listen"`
	// Advertise is the address peers dial (the listen address unless --advertise).
	Advertise     string  `json:"advertise"`
	PID           int     `json:"pid"`
	UptimeSeconds float64 `json:"uptime_seconds"`

	// LeafSet lists the leaf set's distinct node ids (hex): the clockwise side nearest first,
	// then the rest of the counter-clockwise side (in a small ring a node is on both sides).
	// LeafSetAddrs has their addresses in the same order.
	LeafSet             []string `json:"leaf_set"`
	LeafSetAddrs        []string `json:"leaf_set_addrs"`
	LeafSetSize         int      `json:"leaf_set_size"` // configured L
	RoutingTableEntries int      `json:"routing_table_entries"`
	// Peers is the number of open, authenticated transport connections. KnownPeers counts the
	// distinct nodes in the leaf set and routing table, RememberedPeers those in peers.json.
	Peers           int64 `json:"peers"`
	KnownPeers      int   `json:"known_peers"`
	RememberedPeers int   `json:"remembered_peers"`

	Transport TransportStatus `json:"transport"`
	Overlay   OverlayStatus   `json:"overlay"`
	// PeerGuard: ring members dropped for bad input (peerguard.go).
	PeerGuard PeerGuardStatus `json:"peer_guard"`
	Past      PastStatus      `json:"past"`
	Glacier   GlacierStatus   `json:"glacier"`
	Mail      MailStatus      `json:"mail"`
	Disk      DiskStatus      `json:"disk"`
	// Global is the node's side of the global ring; absent unless it is a gateway running it.
	Global *GlobalStatus `json:"global,omitempty"`
	// Gateway is a gateway's operator view (queue; the MX's counters): absent on other nodes.
	Gateway *GatewayStatus `json:"gateway,omitempty"`
	// Locality: what this node holds of other rings (always zero; checked at most once a
	// minute).
	Locality *LocalityStatus `json:"locality,omitempty"`
}

// DiskStatus is where this process's disk writes went since it started (issue 12). The counters
// are per process, not per node: "epost demo" runs all its nodes in one process, so every demo
// node reports the same sums over all of them. Layers (package diskstat): store_index and
// store_blobs (PAST replicas' object store), glacier (fragments held), post_journal,
// post_heads, post_archive (per-user POST state), mail_cache, outbox, peers. A bbolt commit
// counts two fsyncs; bytes are what each layer handed to write calls. Proc is the kernel's
// account (/proc/self/io, zero where absent) of the whole process, logs included.
type DiskStatus struct {
	Layers map[string]diskstat.Counts `json:"layers"`
	Proc   diskstat.ProcIO            `json:"proc"`
	DiskHealth
}

// GlacierStatus is the node's Glacier side: the fragments it holds for the ring, its
// maintenance, and the archive of its own users (POST's aggregates in Glacier).
type GlacierStatus struct {
	N         int   `json:"n"` // fragments per object, from the ring descriptor
	M         int   `json:"m"` // fragments that rebuild one
	Fragments int   `json:"fragments"`
	Bytes     int64 `json:"bytes"`
	// As a holder: fragments stored and refused, re-coded from m others, copied from a
	// neighbour, dropped (no longer ours) and expired; maintenance rounds, messages and bytes.
	Stored     uint64 `json:"stored"`
	Refused    uint64 `json:"refused"`
	Rebuilt    uint64 `json:"rebuilt"`
	HandedOff  uint64 `json:"handed_off"`
	Dropped    uint64 `json:"dropped"`
	Expired    uint64 `json:"expired"`
	SyncRounds uint64 `json:"sync_rounds"`
	MaintMsgs  uint64 `json:"maintenance_messages"`
	MaintBytes uint64 `json:"maintenance_bytes"`
	// Placing counts this node's fragment inserts that reported success and still place the
	// remaining fragments (an aggregate survives the most node losses once it is done).
	Placing int `json:"placing"`

	Archive ArchiveStatus `json:"archive"`
}

// ArchiveStatus is the archive of the node's online users: what waits for an aggregate, what
// is being inserted, and what was restored from Glacier after PAST lost it.
type ArchiveStatus struct {
	Pending    int    `json:"pending"`    // objects waiting for their aggregate
	Inserting  int    `json:"inserting"`  // aggregate and root inserts in flight or waiting to retry
	Aggregates int    `json:"aggregates"` // aggregates in the users' chains
	Recovering int    `json:"recovering"` // users whose index is being rebuilt from Glacier
	Kept       uint64 `json:"kept"`       // objects added since start
	Flushed    uint64 `json:"flushed"`    // aggregates stored since start
	Renewed    uint64 `json:"renewed"`    // aggregate leases renewed since start
	Repacked   uint64 `json:"repacked"`   // mostly dead aggregates rewritten with their live members
	Failed     uint64 `json:"failed"`     // aggregate inserts that failed (retried)
	Restored   uint64 `json:"restored"`   // objects restored into PAST from Glacier since start
	Yields     uint64 `json:"yields"`     // archive operations that waited for a lull in mail traffic
}

// MailStatus is the node's mail side: its servers, its users, and POST's counters since start.
type MailStatus struct {
	Servers    MailAddrs        `json:"servers"`     // bound STARTTLS listeners; empty when off
	ServersTLS MailAddrs        `json:"servers_tls"` // bound implicit-TLS listeners (--imaps ...)
	Users      []MailUserStatus `json:"users"`
	// Filed counts messages filed into local users' INBOXes; Sent notifications built by
	// local senders, Accepted those the ring stored, Refused those for unknown recipients.
	Filed    uint64 `json:"filed"`
	Sent     uint64 `json:"sent"`
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
	// PendingHeld are pending notifications (mail for recipients not online yet) this node
	// holds as a replica; Outbox messages queued for recipients outside the ring.
	PendingHeld int `json:"pending_held"`
	// PartsMissing counts holders' pushes of notifications to local users that were not
	// filed yet because their parts were not in the ring (asked again later).
	PartsMissing uint64 `json:"parts_missing"`
	Outbox       int    `json:"outbox"`
	// OutboxOldestS is the age of the outbox's oldest message; OutboxWaiting says why the
	// outbox is not empty when that is known (no gateway took its next message, and what the
	// ring answered).
	OutboxOldestS int64  `json:"outbox_oldest_seconds"`
	OutboxWaiting string `json:"outbox_waiting,omitempty"`
	// Custody counts messages to other rings that a gateway only queued: this node keeps
	// each until a gateway reports its outcome, and offers it again meanwhile (custody.go).
	Custody int `json:"custody"`
	// Auth counts logins: recognized from the cache, password checks run (Argon2id, one at
	// a time), wrong passwords, failed logins answered late, and attempts that waited for a
	// check or were refused because none came free (a flood of guesses).
	Auth mailstore.AuthStats `json:"auth"`
	// Conns are the mail servers' connections: open, and refused for their bounds.
	Conns MailConns `json:"conns"`
}

// MailConns are the connection counters of the IMAP, SMTP and POP3 servers.
type MailConns struct {
	IMAP connlimit.Stats `json:"imap"`
	SMTP connlimit.Stats `json:"smtp"`
	POP3 connlimit.Stats `json:"pop3"`
}

// MailUserStatus is one user of the node.
type MailUserStatus struct {
	Address string `json:"address"`
	Online  bool   `json:"online"` // logged in since the node started: keys open, mail filed at once
	Filed   uint64 `json:"filed"`
}

// mailStatus fills the mail section.
func (n *Node) mailStatus() MailStatus {
	m := MailStatus{Users: []MailUserStatus{}, Auth: n.mail.glue.AuthStats()}
	n.mu.Lock()
	ms := n.servers
	n.mu.Unlock()
	if ms != nil {
		m.Servers, m.ServersTLS = ms.addrs, ms.tlsAddrs
		if ms.imap != nil {
			m.Conns.IMAP = ms.imap.ConnStats()
		}
		if ms.smtp != nil {
			m.Conns.SMTP = ms.smtp.ConnStats()
		}
		if ms.pop3 != nil {
			m.Conns.POP3 = ms.pop3.ConnStats()
		}
		if ms.outbox != nil {
			if p, err := ms.outbox.Pending(); err == nil && len(p) > 0 {
				m.Outbox = len(p)
				if t := outboxOldest(p); !t.IsZero() {
					m.OutboxOldestS = max(int64(time.Since(t)/time.Second), 0)
				}
				m.OutboxWaiting = n.outboxWaitingReason()
			}
		}
	}
	m.Custody = n.custodyStore().count()
	for _, addr := range n.mail.addresses() {
		m.Users = append(m.Users, MailUserStatus{Address: addr, Online: n.mail.online(addr), Filed: n.mail.filed[addr].Load()})
	}
	m.Filed = n.mail.filedAll.Load()
	if a := n.apps.Load(); a != nil {
		ps := a.post.Stats()
		m.Sent, m.Accepted, m.Refused, m.PendingHeld = ps.Sent, ps.Accepted, ps.Refused, ps.PendingHeld
		m.PartsMissing = ps.PartsMissing
	}
	return m
}

// PastStatus is the node's PAST replica and client state. Objects and bytes come from the
// store (live objects, payload bytes); the counters are since start.
type PastStatus struct {
	Replicas     int   `json:"replicas"` // k, from the ring descriptor
	Objects      int64 `json:"objects"`
	Bytes        int64 `json:"bytes"`
	TrashObjects int64 `json:"trash_objects"`
	TrashBytes   int64 `json:"trash_bytes"`

	// As a replica: writes stored and refused (inserts and maintenance transfers alike).
	Stored  uint64 `json:"stored"`
	Refused uint64 `json:"refused"`
	// Maintenance: objects fetched from neighbours, handed off after responsibility moved,
	// expired and purged; rounds run, and the messages and bytes they sent.
	Repaired   uint64 `json:"repaired"`
	Dropped    uint64 `json:"dropped"`
	Expired    uint64 `json:"expired"`
	Purged     uint64 `json:"purged"`
	SyncRounds uint64 `json:"sync_rounds"`
	MaintMsgs  uint64 `json:"maintenance_messages"`
	MaintBytes uint64 `json:"maintenance_bytes"`
	// BadMessages are PAST messages that did not decode; QueueDropped messages for the node's
	// applications dropped because their queue was full (overload); QueueLen is its length now.
	BadMessages  uint64 `json:"bad_messages"`
	QueueDropped uint64 `json:"queue_dropped"`
	QueueLen     int    `json:"queue_len"`

	// As a client (operations started on this node, e.g. by epost object): inserts and
	// lookups, and how many of them failed.
	Inserts       uint64 `json:"inserts"`
	InsertsFailed uint64 `json:"inserts_failed"`
	Lookups       uint64 `json:"lookups"`
	LookupsFailed uint64 `json:"lookups_failed"`
	// Retries: requests of operations started here sent again after the request timeout.
	Retries uint64 `json:"retries"`
	// InsertsDirect went straight to a replica set the node knew (its leaf set named it, or
	// it wrote the key lately); InsertsLocated asked the key's root first.
	InsertsDirect  uint64 `json:"inserts_direct"`
	InsertsLocated uint64 `json:"inserts_located"`
}

// pastStatus fills the PAST section.
func (n *Node) pastStatus() PastStatus {
	p := PastStatus{
		Replicas:      n.rn.Descriptor.Replicas,
		QueueDropped:  n.queue.dropped.Load(),
		QueueLen:      n.queue.len(),
		Inserts:       n.ops.inserts.Load(),
		InsertsFailed: n.ops.insertsFailed.Load(),
		Lookups:       n.ops.lookups.Load(),
		LookupsFailed: n.ops.lookupsFailed.Load(),
	}
	n.mu.Lock()
	st := n.store
	n.mu.Unlock()
	if st != nil {
		if ss, err := st.Stats(); err == nil {
			p.Objects, p.Bytes, p.TrashObjects, p.TrashBytes = ss.Objects, ss.Bytes, ss.TrashObjects, ss.TrashBytes
		}
	}
	if a := n.apps.Load(); a != nil {
		a.past.With(func(pn *past.Node) {
			s := pn.Stats()
			p.Stored, p.Refused, p.Repaired, p.Dropped = s.Stored, s.Refused, s.Repaired, s.Dropped
			p.Expired, p.Purged, p.SyncRounds = s.Expired, s.Purged, s.SyncRounds
			p.MaintMsgs, p.MaintBytes, p.BadMessages = s.MaintMsgs, s.MaintBytes, s.BadMessages
			p.Retries, p.InsertsDirect, p.InsertsLocated = s.Retries, s.Direct, s.Located
		})
	}
	return p
}

// TransportStatus are the tcp counters since start. Bytes count data-frame payloads.
type TransportStatus struct {
	FramesIn           uint64 `json:"frames_in"`
	FramesOut          uint64 `json:"frames_out"`
	BytesIn            uint64 `json:"bytes_in"`
	BytesOut           uint64 `json:"bytes_out"`
	ConnsOpen          int64  `json:"conns_open"`
	RejectedHandshakes uint64 `json:"rejected_handshakes"`
	DialFailures       uint64 `json:"dial_failures"`
	Dropped            uint64 `json:"dropped"` // back-pressure and unsent at close
	ProtocolErrors     uint64 `json:"protocol_errors"`
}

// OverlayStatus are Pastry's counters since start.
type OverlayStatus struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Rejected uint64 `json:"rejected"`
	Rerouted uint64 `json:"rerouted"`
	Dropped  uint64 `json:"dropped"`
	// HopLimited are the dropped messages that reached pastry.MaxHops (a routing loop).
	HopLimited uint64 `json:"hop_limited"`
	// RateLimited are join and heal requests, routed joins and lookups (routed application
	// messages) refused by the per-peer limits; Unverified are gossiped nodes left unprobed
	// because too many were being verified. Either growing means a peer floods the ring with
	// joins, lookups or forged nodes.
	RateLimited uint64 `json:"rate_limited"`
	Unverified  uint64 `json:"unverified"`
}

var phaseNames = []string{"idle", "joining", "announced", "ready", "left"}

// Status reports the node's current state.
func (n *Node) Status() Status {
	d := n.rn.Descriptor
	s := Status{
		NodeID:      n.rn.ID.String(),
		RingID:      d.RingID.String(),
		RingName:    d.Name,
		Listen:      n.rn.Config.Listen,
		Advertise:   n.advertised(),
		PID:         os.Getpid(),
		LeafSetSize: d.LeafSet,
		Phase:       "starting",
		LeafSet:     []string{},
	}
	n.mu.Lock()
	drv, tr, started, gs, mx := n.drv, n.tr, n.started, n.global, n.mx
	n.mu.Unlock()
	s.Global = gs.status(n.opts.GlobalListen)
	s.Gateway = gs.gatewayStatus()
	if mx != nil {
		if s.Gateway == nil {
			s.Gateway = &GatewayStatus{}
		}
		st := mx.srv.Stats()
		st.Listen = mx.addr
		s.Gateway.MX = &st
	}
	if s.Gateway != nil && n.gwid != nil {
		s.Gateway.Identity = n.gwid.addr
	}
	s.Locality = n.recentLocality()
	s.PeerGuard = n.guard.status(time.Now())
	if !started.IsZero() {
		s.UptimeSeconds = time.Since(started).Round(time.Millisecond).Seconds()
	}
	if tr != nil {
		ts := tr.Stats()
		s.Peers = ts.ConnsOpen
		s.Transport = TransportStatus{
			FramesIn: ts.FramesIn, FramesOut: ts.FramesOut, BytesIn: ts.BytesIn, BytesOut: ts.BytesOut,
			ConnsOpen: ts.ConnsOpen, RejectedHandshakes: ts.RejectedHandshakes, DialFailures: ts.DialFailures,
			Dropped: ts.DroppedBackpressure + ts.DroppedUnsent, ProtocolErrors: ts.ProtocolErrors + ts.FramesTooLong,
		}
	}
	if drv != nil && n.joined.Load() {
		known := map[ids.ID]bool{}
		drv.With(func(pn *pastry.Node) {
			s.Ready = pn.Ready()
			if p := pn.Phase(); p >= 0 && p < len(phaseNames) {
				s.Phase = phaseNames[p]
			}
			for _, h := range pn.LeafMembers() {
				s.LeafSet = append(s.LeafSet, h.ID.String())
				s.LeafSetAddrs = append(s.LeafSetAddrs, h.Addr)
				known[h.ID] = true
			}
			t := pn.Table()
			s.RoutingTableEntries = t.Len()
			for r := 0; r < t.Rows(); r++ {
				for _, h := range t.Row(r) {
					known[h.ID] = true
				}
			}
			st := pn.Stats()
			s.Overlay = OverlayStatus{Sent: st.Sent, Received: st.Received, Rejected: st.Rejected,
				Rerouted: st.Rerouted, Dropped: st.Dropped, HopLimited: st.HopLimited,
				RateLimited: st.RateLimited, Unverified: st.Unverified}
		})
		s.KnownPeers = len(known)
	}
	if rem, err := n.peers.load(); err == nil {
		s.RememberedPeers = len(rem)
	}
	s.Past = n.pastStatus()
	s.Glacier = n.glacierStatus()
	s.Mail = n.mailStatus()
	s.Disk.Layers = diskstat.Snapshot()
	s.Disk.Proc, _ = diskstat.ReadProcIO()
	s.Disk.DiskHealth = n.diskHealthStatus(time.Now())
	return s
}

// SortedLeafSet returns the leaf set's ids in ascending order, for comparisons.
func (s Status) SortedLeafSet() []string {
	l := slices.Clone(s.LeafSet)
	slices.Sort(l)
	return l
}

// glacierStatus fills the glacier section.
func (n *Node) glacierStatus() GlacierStatus {
	d := n.rn.Descriptor
	g := GlacierStatus{N: d.FragmentsTotal, M: d.FragmentsNeeded}
	n.mu.Lock()
	fr := n.frags
	n.mu.Unlock()
	if fr != nil {
		g.Fragments, g.Bytes = fr.Len(), fr.Bytes()
	}
	a := n.apps.Load()
	if a == nil {
		return g
	}
	a.glacier.With(func(gn *glacier.Node) {
		st := gn.Stats()
		g.Stored, g.Refused, g.Rebuilt, g.HandedOff = st.Stored, st.Refused, st.Rebuilt, st.HandedOff
		g.Dropped, g.Expired, g.SyncRounds = st.Dropped, st.Expired, st.SyncRounds
		g.MaintMsgs, g.MaintBytes = st.MaintMsgs, st.MaintBytes
		g.Placing = st.Placing
	})
	ps := a.post.Stats()
	g.Archive = ArchiveStatus{Pending: ps.ArchivePending, Inserting: ps.ArchiveInserting,
		Aggregates: ps.ArchiveAggregates, Recovering: ps.ArchiveRecovering, Kept: ps.ArchiveKept,
		Flushed: ps.ArchiveFlushed, Renewed: ps.ArchiveRenewed, Repacked: ps.ArchiveRepacked, Failed: ps.ArchiveFailed, Restored: ps.ArchiveRestored,
		Yields: ps.ArchiveYields}
	return g
}
