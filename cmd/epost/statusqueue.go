package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"epost/internal/daemon"
)

// statusQueueDests is how many destinations the text status lists (--json has more).
const statusQueueDests = 10

// printGatewayQueue is the gateway's queue in the text status: depth and age per kind, then
// the destinations with the most queued, each with its last error and next attempt.
func printGatewayQueue(out io.Writer, q daemon.QueueStatus, now time.Time) {
	kind := func(k daemon.QueueKindStatus) string {
		if k.Entries == 0 {
			return "empty"
		}
		return fmt.Sprintf("%d / %s, oldest %s", k.Entries, bytesHuman(uint64(max(k.Bytes, 0))), time.Duration(k.OldestS)*time.Second)
	}
	fmt.Fprintf(out, "queue     federation %s; internet %s\n", kind(q.Federation), kind(q.Internet))
	for i, d := range q.Destinations {
		if i == statusQueueDests {
			fmt.Fprintf(out, "          ... %d more destinations (epost status --json lists them)\n", len(q.Destinations)-i+q.DestinationsOmitted)
			break
		}
		fmt.Fprintf(out, "  to %s: %s\n", queueDestName(d), queueDestState(d, now))
	}
	if len(q.Destinations) <= statusQueueDests && q.DestinationsOmitted > 0 {
		fmt.Fprintf(out, "          ... %d more destinations\n", q.DestinationsOmitted)
	}
}

func queueDestName(d daemon.QueueDestStatus) string {
	if d.Kind == "federation" {
		name := "ring " + shortHex(d.Dest)
		if len(d.Domains) > 0 {
			name += " (" + strings.Join(d.Domains, ", ") + ")"
		}
		return name
	}
	return d.Dest
}

func queueDestState(d daemon.QueueDestStatus, now time.Time) string {
	s := fmt.Sprintf("%d queued (%d recipients)", d.Queued, d.Recipients)
	if !d.NextAttempt.IsZero() {
		if wait := d.NextAttempt.Sub(now); wait > 0 {
			s += ", next attempt in " + wait.Round(time.Second).String()
		} else {
			s += ", next attempt now"
		}
	}
	if d.LastError != "" {
		s += ", last error: " + d.LastError
		if !d.LastAttempt.IsZero() {
			s += " (" + now.Sub(d.LastAttempt).Round(time.Second).String() + " ago)"
		}
	}
	return s
}

// outboxState is what the delivery line says about a node's outbox.
func outboxState(m daemon.MailStatus) string {
	s := fmt.Sprintf("%d in outbox", m.Outbox)
	if m.Custody > 0 {
		defer func() { s += fmt.Sprintf(", %d to other rings kept until a gateway reports delivery", m.Custody) }()
	}
	if m.Outbox == 0 {
		return s
	}
	var more []string
	if m.OutboxOldestS > 0 {
		more = append(more, "oldest "+(time.Duration(m.OutboxOldestS)*time.Second).String())
	}
	if m.OutboxWaiting != "" {
		more = append(more, m.OutboxWaiting)
	}
	if len(more) > 0 {
		s += " (" + strings.Join(more, "; ") + ")"
	}
	return s
}

func shortHex(hex string) string {
	if len(hex) > 8 {
		return hex[:8]
	}
	return hex
}

// printGatewayMX is the inbound MX's line: where it listens, what it accepted, and its
// refusals by reason.
func printGatewayMX(out io.Writer, g *daemon.GatewayStatus) {
	if g.MX == nil {
		return
	}
	var reasons []string
	for r, n := range g.MX.Refused {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(reasons)
	refused := "none"
	if len(reasons) > 0 {
		refused = strings.Join(reasons, ", ")
	}
	fmt.Fprintf(out, "mx        %s: %d messages accepted (%d copies), refused: %s; files as %s\n", g.MX.Listen, g.MX.Accepted, g.MX.Recipients, refused, g.Identity)
}
