package daemon

import (
	"epost/internal/mxserver"
	"strconv"
	"strings"
	"time"

	"epost/internal/mailqueue"
)

// The queues in epost status (docs/gateway-design.md §11, issue 14 §8): a gateway's
// store-and-forward queue (DATADIR/gwqueue) by kind and destination, and every node's outbox
// (mail for internet addresses waiting for a gateway of the ring).

// GatewayStatus is a gateway's operator view: what its queue holds and why, and what its
// inbound MX accepted and refused (by reason).
type GatewayStatus struct {
	Identity string          `json:"identity,omitempty"` // the gateway's POST identity
	Queue    QueueStatus     `json:"queue"`
	MX       *mxserver.Stats `json:"mx,omitempty"`
}

// QueueStatus is the gateway queue's depth per kind and its destinations, most queued first.
// At most maxQueueDests destinations are listed; DestinationsOmitted counts the rest.
type QueueStatus struct {
	Federation          QueueKindStatus   `json:"federation"`
	Internet            QueueKindStatus   `json:"internet"`
	Destinations        []QueueDestStatus `json:"destinations"`
	DestinationsOmitted int               `json:"destinations_omitted,omitempty"`
}

// QueueKindStatus is one kind's depth: entries, body bytes, and the oldest entry's age.
type QueueKindStatus struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
	OldestS int64 `json:"oldest_seconds"`
}

// QueueDestStatus is one destination: an internet domain, or another ring (its id in hex,
// with the recipients' domains in it). Queued counts entries with recipients pending there;
// LastError is the newest attempt's complaint, NextAttempt the soonest retry.
type QueueDestStatus struct {
	Kind        string    `json:"kind"`
	Dest        string    `json:"dest"`
	Domains     []string  `json:"domains,omitempty"`
	Queued      int       `json:"queued"`
	Recipients  int       `json:"recipients"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// maxQueueDests bounds the destinations one status lists (a queue may hold thousands).
const maxQueueDests = 50

func (gs *globalSide) gatewayStatus() *GatewayStatus {
	if gs == nil || gs.queue == nil {
		return nil
	}
	return &GatewayStatus{Queue: queueStatus(gs.queue.Summary(), time.Now())}
}

func queueStatus(sum mailqueue.Summary, now time.Time) QueueStatus {
	kind := func(k mailqueue.Kind) QueueKindStatus {
		ks := sum.Kinds[k]
		s := QueueKindStatus{Entries: ks.Entries, Bytes: ks.Bytes}
		if !ks.Oldest.IsZero() {
			s.OldestS = max(int64(now.Sub(ks.Oldest)/time.Second), 0)
		}
		return s
	}
	qs := QueueStatus{Federation: kind(mailqueue.KindFederation), Internet: kind(mailqueue.KindInternet), Destinations: []QueueDestStatus{}}
	for i, d := range sum.Destinations {
		if i == maxQueueDests {
			qs.DestinationsOmitted = len(sum.Destinations) - i
			break
		}
		qs.Destinations = append(qs.Destinations, QueueDestStatus{Kind: string(d.Kind), Dest: d.Dest, Domains: d.Domains,
			Queued: d.Queued, Recipients: d.Rcpts, LastError: d.LastError, LastAttempt: d.LastAttempt, NextAttempt: d.NextAttempt})
	}
	return qs
}

// outboxOldest is when the oldest of the outbox's messages was queued: DirOutbox names begin
// with the nanoseconds of their staging (zero when none parses).
func outboxOldest(ids []string) time.Time {
	var oldest time.Time
	for _, id := range ids {
		prefix, _, _ := strings.Cut(id, "-")
		ns, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			continue
		}
		if t := time.Unix(0, ns); oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}

// setOutboxWaiting records why the outbox's next message still waits ("" once it is empty).
func (n *Node) setOutboxWaiting(why string) { n.outboxWaiting.Store(&why) }

func (n *Node) outboxWaitingReason() string {
	if p := n.outboxWaiting.Load(); p != nil {
		return *p
	}
	return ""
}
