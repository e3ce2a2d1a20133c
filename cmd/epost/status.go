package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"epost/internal/connlimit"
	"epost/internal/daemon"
)

func init() {
	register("status", "ask a running node for its state (ring, leaf set, peers, traffic)", runStatus)
}

func runStatus(args []string) error { return status(args, os.Stdout) }

func status(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	asJSON := fs.Bool("json", false, "print the full status as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the node's answer")
	if err := ringParse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage was printed
		}
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	if advice, ok := folderAdvice(*dir); ok {
		return errors.New(advice)
	}
	st, err := daemon.Query(*dir, *timeout)
	if err != nil {
		return demoAdviceForNode(*dir, err)
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(out, st)
	return nil
}

// printStatus is the at-a-glance form: a few aligned lines, short ids.
func printStatus(out io.Writer, st *daemon.Status) {
	short := func(hex string) string {
		if len(hex) > 8 {
			return hex[:8]
		}
		return hex
	}
	state := "READY"
	if !st.Ready {
		state = "not ready (" + st.Phase + ")"
	}
	fmt.Fprintf(out, "node      %s  ring %q %s  pid %d\n", short(st.NodeID), st.RingName, short(st.RingID), st.PID)
	fmt.Fprintf(out, "state     %s, up %s\n", state, (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second))
	if d := st.Disk.DiskHealth; d.Trouble != "" || d.WriteErrors > 0 {
		line := "free space unknown"
		if d.FreeBytes >= 0 {
			line = bytesHuman(uint64(d.FreeBytes)) + " free"
		}
		if d.WriteErrors > 0 {
			line += fmt.Sprintf(", %d writes failed since start, the last %s ago (%s)", d.WriteErrors,
				time.Since(d.LastWriteErrorAt).Round(time.Second), d.LastWriteError)
		}
		if d.Trouble != "" {
			line = strings.ToUpper(d.Trouble) + ": " + line + "; nothing that was not stored is acknowledged. Free space on the node directory's filesystem: the node recovers by itself"
		}
		fmt.Fprintf(out, "disk      %s\n", line)
	}
	addr := st.Listen
	if st.Advertise != "" && st.Advertise != st.Listen {
		addr += " (advertised as " + st.Advertise + ")"
	}
	fmt.Fprintf(out, "listen    %s\n", addr)
	ls := make([]string, len(st.LeafSet))
	for i, id := range st.LeafSet {
		ls[i] = short(id)
	}
	fmt.Fprintf(out, "leaf set  %d of %d: %s\n", len(st.LeafSet), st.LeafSetSize, orDash(strings.Join(ls, " ")))
	fmt.Fprintf(out, "routing   %d table entries, %d known nodes, %d remembered on disk\n",
		st.RoutingTableEntries, st.KnownPeers, st.RememberedPeers)
	t := st.Transport
	fmt.Fprintf(out, "peers     %d open connections\n", st.Peers)
	fmt.Fprintf(out, "traffic   in %d frames / %s, out %d frames / %s\n", t.FramesIn, bytesHuman(t.BytesIn), t.FramesOut, bytesHuman(t.BytesOut))
	fmt.Fprintf(out, "refused   %d handshakes, %d failed dials\n", t.RejectedHandshakes, t.DialFailures)
	if o, g := st.Overlay, st.PeerGuard; o.Rejected+o.RateLimited+o.Unverified+t.ProtocolErrors+g.Dropped > 0 {
		fmt.Fprintf(out, "bad input %d frames breaking the wire format, %d overlay messages refused, %d joins and lookups rate-limited, %d gossiped nodes not verified; peers dropped for it %d (%d connections refused since)\n",
			t.ProtocolErrors, o.Rejected, o.RateLimited, o.Unverified, g.Dropped, g.TurnedAway)
		for _, p := range g.Refusing {
			fmt.Fprintf(out, "          refusing %s until %s\n", short(p.ID), p.Until.Local().Format("15:04:05"))
		}
	}
	p := st.Past
	fmt.Fprintf(out, "past      %d objects / %s held (k=%d), trash %d / %s\n", p.Objects, bytesHuman(uint64(max(p.Bytes, 0))),
		p.Replicas, p.TrashObjects, bytesHuman(uint64(max(p.TrashBytes, 0))))
	fmt.Fprintf(out, "replica   %d stored, %d refused, %d repaired, %d handed off, %d maintenance rounds\n",
		p.Stored, p.Refused, p.Repaired, p.Dropped, p.SyncRounds)
	fmt.Fprintf(out, "client    %d inserts (%d failed), %d lookups (%d failed)\n", p.Inserts, p.InsertsFailed, p.Lookups, p.LookupsFailed)
	g := st.Glacier
	fmt.Fprintf(out, "glacier   %d fragments / %s held (%d/%d), %d stored, %d rebuilt, %d handed off, %d maintenance rounds, %d inserts placing\n",
		g.Fragments, bytesHuman(uint64(max(g.Bytes, 0))), g.N, g.M, g.Stored, g.Rebuilt, g.HandedOff, g.SyncRounds, g.Placing)
	a := g.Archive
	fmt.Fprintf(out, "archive   %d aggregates, %d objects waiting, %d inserting, %d restored from glacier", a.Aggregates, a.Pending, a.Inserting, a.Restored)
	if a.Recovering > 0 {
		fmt.Fprintf(out, ", %d users' index being recovered", a.Recovering)
	}
	fmt.Fprintln(out)
	if g := st.Global; g != nil {
		state := "joining"
		if g.Ready {
			state = "ready"
		}
		fmt.Fprintf(out, "global    %s on %s, %d gateways in its leaf set; rings admitted %d, refused %d; refused by peers %d; sent %d frames / %s, received %d / %s\n",
			state, g.Listen, len(g.LeafSet), g.Admitted, g.Refused, g.RefusedBy, g.SentFrames, bytesHuman(g.SentBytes), g.ReceivedFrames, bytesHuman(g.ReceivedBytes))
		fmt.Fprintf(out, "relay     %d messages handed to other rings, %d taken from them; %d queued (oldest %ds)\n", g.HandoffsOut, g.HandoffsIn, g.QueueEntries, g.QueueOldestS)
	}
	if g := st.Gateway; g != nil {
		printGatewayQueue(out, g.Queue, time.Now())
		printGatewayMX(out, g)
	}
	if l := st.Locality; l != nil {
		fmt.Fprintf(out, "locality  %d objects and %d Glacier fragments of other rings held here (checked %s)\n", l.ForeignObjects, l.ForeignFragments, l.CheckedAt.Format(time.RFC3339))
	}
	m := st.Mail
	if m.Servers != (daemon.MailAddrs{}) {
		fmt.Fprintf(out, "mail      IMAP %s  SMTP %s  POP3 %s\n", orOff(m.Servers.IMAP), orOff(m.Servers.SMTP), orOff(m.Servers.POP3))
	}
	if m.ServersTLS != (daemon.MailAddrs{}) {
		fmt.Fprintf(out, "mail TLS  IMAPS %s  SMTPS %s  POP3S %s\n", orOff(m.ServersTLS.IMAP), orOff(m.ServersTLS.SMTP), orOff(m.ServersTLS.POP3))
	}
	var users []string
	for _, u := range m.Users {
		state := "waiting for first login"
		if u.Online {
			state = fmt.Sprintf("online, %d filed", u.Filed)
		}
		users = append(users, fmt.Sprintf("%s (%s)", u.Address, state))
	}
	fmt.Fprintf(out, "users     %s\n", orDash(strings.Join(users, ", ")))
	fmt.Fprintf(out, "delivery  %d filed here, %d sent (%d stored, %d refused), %d pending held for offline users, %s\n",
		m.Filed, m.Sent, m.Accepted, m.Refused, m.PendingHeld, outboxState(m))
	var refused []string
	for _, c := range []struct {
		name string
		st   connlimit.Stats
	}{{"imap", m.Conns.IMAP}, {"smtp", m.Conns.SMTP}, {"pop3", m.Conns.POP3}} {
		if c.st.RefusedTotal+c.st.RefusedByAddr > 0 {
			refused = append(refused, fmt.Sprintf("%s %d (server full), %d (too many from one address)", c.name, c.st.RefusedTotal, c.st.RefusedByAddr))
		}
	}
	if len(refused) > 0 {
		fmt.Fprintf(out, "limits    connections refused: %s\n", strings.Join(refused, "; "))
	}
	if a := m.Auth; a.Opens+a.Hits+a.Busy+a.Locked > 0 {
		fmt.Fprintf(out, "logins    %d from the cache, %d password checks (%d wrong, %d answered late), %d waited for a check, %d refused: too many at once, %d refused: user or address locked after failures\n",
			a.Hits, a.Opens, a.Wrong, a.Delayed, a.Queued, a.Busy, a.Locked)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
