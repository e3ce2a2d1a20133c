package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"epost/internal/daemon"
)

// "epost node run": the node daemon. The runtime itself lives in internal/daemon so that the
// demo and tests can run nodes in one process; this file only parses flags, sets up logging and
// waits for a signal.

func init() {
	register("node run", "run a node until SIGINT/SIGTERM (epost status --dir asks it)", runNodeRun)
}

// hiddenRunFlags are protocol timers meant for tests and measurements; -h does not list them.
// Each may also be set by an environment variable (EPOST_PROBE_INTERVAL, ...), which a flag
// overrides.
var hiddenRunFlags = map[string]bool{}

// durationFlag registers a hidden duration flag whose default comes from an environment
// variable when set.
func durationFlag(fs *flag.FlagSet, p *time.Duration, name, usage string) error {
	env := "EPOST_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if v := os.Getenv(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: %v (want a duration such as 500ms)", env, v, err)
		}
		*p = d
	}
	fs.DurationVar(p, name, *p, usage+" (or $"+env+"; for tests)")
	hiddenRunFlags[name] = true
	return nil
}

func runNodeRun(args []string) error { return nodeRun(args, os.Stderr) }

func nodeRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("node run", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory made by \"epost node init\" (or node request/accept)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	jsonLogs := fs.Bool("log-json", false, "log JSON lines instead of text")
	advertise := fs.String("advertise", "", "HOST:PORT peers dial to reach this node (default: the config's listen address)")
	seed := fs.Uint64("seed", 0, "overlay random seed (0: random, logged at start)")
	var tlsAddrs daemon.MailAddrs
	fs.StringVar(&tlsAddrs.IMAP, "imaps", "", "also serve IMAP with implicit TLS on HOST:PORT (e.g. 127.0.0.1:993)")
	fs.StringVar(&tlsAddrs.SMTP, "smtps", "", "also serve SMTP submission with implicit TLS on HOST:PORT (e.g. 127.0.0.1:465)")
	fs.StringVar(&tlsAddrs.POP3, "pop3s", "", "also serve POP3 with implicit TLS on HOST:PORT (e.g. 127.0.0.1:995)")
	globalListen := fs.String("global-listen", "", "gateways only: join the global ring (federation with other rings), listening on HOST:PORT")
	globalAdvertise := fs.String("global-advertise", "", "HOST:PORT other rings' gateways dial (default: --global-listen)")
	var globalBootstrap ringListFlag
	fs.Var(&globalBootstrap, "global-bootstrap", "HOST:PORT of gateways of other rings to join the global ring through (repeat or comma-separate; none: found it)")
	outboundPort := fs.Int("outbound-port", 0, "gateways: the port internet mail is delivered to (0: 25; for tests)")
	hiddenRunFlags["outbound-port"] = true
	var queueBackoff time.Duration
	if err := durationFlag(fs, &queueBackoff, "queue-backoff", "gateways: retry queued mail after this fixed wait instead of the usual schedule"); err != nil {
		return err
	}
	var limits daemon.MailLimits
	fs.IntVar(&limits.MaxConns, "max-mail-conns", 0, "bound on each mail server's (IMAP, SMTP, POP3) connections (0: 64 IMAP, 32 SMTP and POP3; -1: none)")
	fs.IntVar(&limits.MaxConnsPerAddr, "max-mail-conns-per-ip", 0, "bound on each mail server's connections from one client IP address (0: 32 IMAP, 16 SMTP and POP3; -1: none)")
	fs.IntVar(&limits.Login.UserLockAfter, "login-lock-after", 0, "lock a user name against logins from unknown addresses after this many recent wrong passwords (0: 5; -1: never)")
	fs.IntVar(&limits.Login.ClientLockAfter, "login-lock-addr-after", 0, "lock a client address after this many recent wrong passwords, across user names (0: 20; -1: never)")
	fs.IntVar(&limits.PasswordChecks, "password-checks", 0, "password checks (64 MiB of memory each) run at once (0: 1)")
	fs.IntVar(&limits.MaxPeerConns, "max-peer-conns", 0, "bound on inbound node-to-node connections, handshakes included (0: 1024)")
	fs.IntVar(&limits.PeerDropAfter, "peer-drop-after", 0, "drop a ring member that sends this many overlay messages the node refuses, or frames breaking the wire format, within --peer-drop-window (0: 100; -1: never)")
	fs.DurationVar(&limits.PeerDropWindow, "peer-drop-window", 0, "the window of --peer-drop-after (0: 1m)")
	fs.DurationVar(&limits.PeerCoolOff, "peer-cooloff", 0, "a dropped ring member is refused this long (0: 10m)")
	fs.DurationVar(&limits.Login.LockFor, "login-lock-for", 0, "a login lock lasts this long after the last wrong password (0: 15m)")
	fs.DurationVar(&limits.PasswordWait, "password-wait", 0, "a login waits at most this long for a password check slot, then is told to try later (0: 30s)")
	var handOffWait, custodyTimeout time.Duration
	if err := durationFlag(fs, &handOffWait, "hand-off-wait", "gateways: answer a node's hand-off from the queue after this long when the other ring has not stored it yet"); err != nil {
		return err
	}
	if err := durationFlag(fs, &custodyTimeout, "custody-timeout", "offer mail a gateway only queued to a gateway again after this long"); err != nil {
		return err
	}
	mx := fs.String("mx", "", "gateways only: serve SMTP for the internet (the ring's MX, no AUTH, under the ring's policy.json) on HOST:PORT, e.g. :25")
	mxHostname := fs.String("mx-hostname", "", "the MX's host name in greetings and Received/Authentication-Results fields (default: the ring's first domain)")
	mxCert := fs.String("mx-tls-cert", "", "PEM certificate the MX offers with STARTTLS (default: the node's mail certificate)")
	mxKey := fs.String("mx-tls-key", "", "PEM private key of --mx-tls-cert")
	resolver := fs.String("resolver", "", "DNS server HOST:PORT for federation's _epost records; setting it also lets this node's users send to users of other rings (without it, addresses outside the ring go to the outbox)")
	var t daemon.Timers
	for _, f := range []struct {
		p           *time.Duration
		name, usage string
	}{
		{&t.Tick, "tick", "overlay timer tick"},
		{&t.ProbeInterval, "probe-interval", "probe a leaf-set member not heard from for this long"},
		{&t.ProbeTimeout, "probe-timeout", "first probe timeout (doubles per retry)"},
		{&t.JoinTimeout, "join-timeout", "retry a join after this long without a reply"},
		{&t.HealInterval, "heal-interval", "re-join through bootstrap nodes this often (partition healing)"},
		{&t.BootstrapBackoff, "bootstrap-backoff", "first wait when no bootstrap node answers (doubles)"},
		{&t.BootstrapMaxBackoff, "bootstrap-max-backoff", "longest wait between bootstrap attempts"},
		{&t.DialTimeout, "dial-timeout", "TCP connect and bootstrap probe timeout"},
		{&t.Keepalive, "keepalive", "transport keepalive interval"},
		{&t.PeersSave, "peers-save-interval", "rewrite peers.json at most this often"},
		{&t.LeaveGrace, "leave-grace", "on SIGINT/SIGTERM, serve the neighbours' hand-over for at most this long (at most 10s)"},
		{&t.PastTick, "past-tick", "PAST timer tick"},
		{&t.PastRequestTimeout, "past-request-timeout", "PAST: retry a request after this long without a reply"},
		{&t.PastMaintenance, "past-maintenance-interval", "PAST: periodic replica maintenance"},
		{&t.PastMaintenanceDelay, "past-maintenance-delay", "PAST: maintenance this long after a leaf-set change"},
		{&t.PastDropGrace, "past-drop-grace", "PAST: keep objects this node is no longer a replica of this long"},
		{&t.PastGC, "past-gc-interval", "PAST: expire leases and purge the trash this often"},
		{&t.PostHolderDelay, "post-holder-delay", "POST: a holder offers a pending notification itself after this"},
		{&t.PostRetryDelay, "post-retry-delay", "POST: retry a failed filing or log open after this"},
		{&t.PostOnlineInterval, "post-online-interval", "POST: re-announce the node's online users this often"},
		{&t.GlacierTick, "glacier-tick", "Glacier timer tick"},
		{&t.GlacierRequestTimeout, "glacier-request-timeout", "Glacier: ask elsewhere after this long without a fragment reply"},
		{&t.GlacierSync, "glacier-sync-interval", "Glacier: maintenance round (Bloom-filter sync between fragment holders)"},
		{&t.GlacierSyncDelay, "glacier-sync-delay", "Glacier: maintenance this long after a leaf-set change"},
		{&t.GlacierGoneAfter, "glacier-gone-after", "Glacier: re-code an absent node's fragments only after this"},
		{&t.ArchiveFlush, "archive-flush", "an object waits at most this long before it is aggregated and erasure-coded into Glacier"},
		{&t.Submit, "submit-timeout", "an SMTP submission the ring has not stored after this long is answered 451"},
	} {
		if err := durationFlag(fs, f.p, f.name, f.usage); err != nil {
			return err
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost node run --dir NODEDIR [flags]\n\nRuns the node until SIGINT or SIGTERM.\n\n")
		var names []string
		fs.VisitAll(func(f *flag.Flag) {
			if !hiddenRunFlags[f.Name] {
				names = append(names, f.Name)
			}
		})
		sort.Strings(names)
		for _, n := range names {
			f := fs.Lookup(n)
			fmt.Fprintf(fs.Output(), "  --%s\n    \t%s\n", n, f.Usage)
		}
	}
	if err := ringParse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage was printed
		}
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	if (*mxCert == "") != (*mxKey == "") {
		return errors.New("--mx-tls-cert and --mx-tls-key go together")
	}
	log, err := newLogger(stderr, *level, *jsonLogs)
	if err != nil {
		return err
	}

	n, err := daemon.Open(daemon.Options{Dir: *dir, Logger: log, Timers: t, Advertise: *advertise, Seed: *seed, ImplicitTLS: tlsAddrs,
		GlobalListen: *globalListen, GlobalAdvertise: *globalAdvertise, GlobalBootstrap: globalBootstrap, Resolver: *resolver,
		OutboundPort: *outboundPort, MX: *mx, MXHostname: *mxHostname, MXCert: *mxCert, MXKey: *mxKey, QueueBackoff: queueBackoff,
		HandOffWait: handOffWait, CustodyTimeout: custodyTimeout, MailLimits: limits})
	if err != nil {
		return err
	}
	// Signals are caught before Start so that an early SIGTERM still shuts down cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := n.Start(); err != nil {
		return err
	}
	sig := <-sigs
	log.Info("signal received: leaving the ring (a second signal exits at once)", "signal", sig.String())
	// A second signal while stopping means the user wants out now.
	go func() {
		<-sigs
		log.Warn("second signal: exiting without a clean shutdown")
		os.Exit(1)
	}()
	return n.Stop()
}

// newLogger builds the slog logger of "node run": text (or JSON) lines on stderr.
func newLogger(w io.Writer, level string, asJSON bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, errors.New("--log-level " + level + ": want debug, info, warn or error")
	}
	opts := &slog.HandlerOptions{Level: l}
	if asJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
