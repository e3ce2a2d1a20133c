package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"epost/internal/daemon"
	"epost/internal/dnstest"
	"epost/internal/ring"
)

// "epost demo": a whole ring on this machine, ready for a mail client. The nodes are daemon
// nodes in this process, each with its own node directory and TLS listener on loopback, so
// node-to-node traffic is the same TLS 1.3 a real ring uses. Two users, alice and bob, live on
// two different nodes; each gets IMAP, SMTP and POP3 on their own node.
//
// Layout of DIR (kept across runs with --dir; a temporary directory otherwise):
//
//	DIR/ring/            the ring (CA key, descriptor)
//	DIR/nodeN/           node directories (config.json holds the ports chosen at first start)
//	DIR/USER.password    the users' generated passwords (0600)
//	DIR/logs/nodeN.log   the nodes' logs
//	DIR/demo.json        written once the ring is ready: addresses, passwords, endpoints

func init() {
	register("demo", "run the main job: a whole ring on this machine with two mail users, until Ctrl-C", runDemo)
}

const demoDomain = "demo.example"

// demoUsers are the demo's users and the nodes they live on (never node0, the founder).
var demoUsers = []struct {
	name string
	node int
}{{"alice", 1}, {"bob", 2}}

// DemoUser is one user's entry in demo.json.
type DemoUser struct {
	Address  string `json:"address"`
	Password string `json:"password"`
	IMAP     string `json:"imap"`
	SMTP     string `json:"smtp"`
	POP3     string `json:"pop3"`
	Ring     string `json:"ring"` // the name of the user's ring
	// Node is the directory of the node that serves the user (its mail servers, its keys);
	// NodeListen that node's node-to-node address.
	Node       string `json:"node"`
	NodeListen string `json:"node_listen"`
}

// demoGateway is DIR/gateway.json: the ports of node0's gateway roles, kept across runs.
type demoGateway struct {
	MX     string `json:"mx"`
	Global string `json:"global"`
}

// DemoFile is demo.json.
type DemoFile struct {
	Users []DemoUser `json:"users"`
	// MX is the ring's inbound SMTP for the internet (node0, the gateway; no AUTH).
	MX string `json:"mx,omitempty"`
}

func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dir := fs.String("dir", "", "keep the ring here across runs (default: a temporary directory removed at exit)")
	nodes := fs.Int("nodes", 5, "nodes in the ring (at least 3)")
	seed := fs.Uint64("seed", 0, "overlay random seed (0: random, printed)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole ring (all nodes run in this process) to this file until the demo stops")
	tracefile := fs.String("trace", "", "write a Go execution trace of the whole ring to this file until the demo stops (go tool trace reads it)")
	rings := fs.Int("rings", 1, "1: one ring (demo.example); 2: two federated rings (acme.example with alice, globex.example with bob), each with a gateway, a local DNS server confirming their domains, and mail between them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *tracefile != "" {
		f, err := os.Create(*tracefile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *nodes < 3 {
		return errors.New("--nodes must be at least 3 (the two users live on nodes of their own)")
	}
	if *rings < 1 || *rings > 2 {
		return errors.New("--rings must be 1 or 2")
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()) | 1
	}
	out := os.Stdout
	root := *dir
	if root == "" {
		tmp, err := os.MkdirTemp("", "epost-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		root = tmp
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	root, _ = filepath.Abs(root)
	dumpOnSIGUSR1(root)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "second signal: exiting without a clean shutdown")
		os.Exit(1)
	}()

	// demo.json announces a ready ring: a stale one from the last run must not.
	if err := os.Remove(filepath.Join(root, "demo.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if *rings == 2 {
		return runDemoRings(ctx, out, root, *dir != "", *seed)
	}
	fresh, err := demoSetup(root, *nodes)
	if err != nil {
		return err
	}
	n := demoNodeCount(root)
	if fresh {
		fmt.Fprintf(out, "epost demo: created a ring of %d nodes in %s (seed %d)\n", n, root, *seed)
	} else {
		fmt.Fprintf(out, "epost demo: reusing the ring of %d nodes in %s (seed %d)\n", n, root, *seed)
	}

	// node0 is the gateway (rings made before it existed have none). A DNS server in the demo
	// stands for an internet that cannot be reached: every name fails (SERVFAIL), so mail
	// from outside is checked quickly (SPF and DMARC temperror), and mail to outside waits
	// in the gateway's queue with that reason.
	var gw *demoGateway
	if b, err := os.ReadFile(filepath.Join(root, "gateway.json")); err == nil {
		gw = &demoGateway{}
		if err := json.Unmarshal(b, gw); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(root, "gateway.json"), err)
		}
	}
	dnsSrv, err := dnstest.Start()
	if err != nil {
		return fmt.Errorf("the demo's DNS server: %w", err)
	}
	defer dnsSrv.Close()
	dnsSrv.Unknown(2) // SERVFAIL

	// Start every node.
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o700); err != nil {
		return err
	}
	var running []*daemon.Node
	defer func() { stopAll(running) }()
	for i := range n {
		logf, err := os.OpenFile(filepath.Join(root, "logs", fmt.Sprintf("node%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer logf.Close()
		log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		opts := daemon.Options{Dir: demoNodeDir(root, i), Logger: log, Timers: demoTimers(), Seed: *seed + uint64(i)}
		if i == 0 && gw != nil {
			opts.MX, opts.MXHostname, opts.GlobalListen, opts.Resolver = gw.MX, "mx."+demoDomain, gw.Global, dnsSrv.Addr
		}
		nd, err := daemon.Open(opts)
		if err != nil {
			return err
		}
		if err := nd.Start(); err != nil {
			return fmt.Errorf("node%d: %w (its log: %s)", i, err, logf.Name())
		}
		running = append(running, nd)
	}
	fmt.Fprintf(out, "waiting for the nodes to join (logs in %s) ...\n", filepath.Join(root, "logs"))
	start := time.Now()
	for !allReady(running) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("the ring did not form within 2 minutes; see the logs in %s", filepath.Join(root, "logs"))
		}
	}
	fmt.Fprintf(out, "ring ready: %d nodes joined in %s\n", n, time.Since(start).Round(100*time.Millisecond))

	// Bring the users online (their nodes open their keys with the passwords) and send bob
	// his welcome mail through alice's SMTP server, once.
	var users []DemoUser
	for _, du := range demoUsers {
		addr := du.name + "@" + demoDomain
		pw, err := os.ReadFile(filepath.Join(root, du.name+".password"))
		if err != nil {
			return fmt.Errorf("%w (the demo directory is incomplete; remove %s and start again)", err, root)
		}
		password := strings.TrimSpace(string(pw))
		nd := running[du.node]
		if _, err := nd.Login(addr, password); err != nil {
			return fmt.Errorf("bring %s online: %w", addr, err)
		}
		a := nd.MailAddrs()
		users = append(users, DemoUser{Address: addr, Password: password, IMAP: a.IMAP, SMTP: a.SMTP, POP3: a.POP3, Ring: "demo",
			Node: demoNodeDir(root, du.node), NodeListen: nd.Status().Listen})
	}
	welcomed := filepath.Join(root, "welcome.sent")
	if _, err := os.Stat(welcomed); err != nil {
		if err := sendWelcome(users[0], users[1]); err != nil {
			return fmt.Errorf("send the welcome mail: %w", err)
		}
		if err := os.WriteFile(welcomed, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "sent %s a welcome mail from %s\n", users[1].Address, users[0].Address)
	}
	df := DemoFile{Users: users}
	if gw != nil {
		df.MX = running[0].MXAddr()
	}
	data, _ := json.MarshalIndent(df, "", "  ")
	if err := writeFileSync(filepath.Join(root, "demo.json"), append(data, '\n')); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(root, "demo.json")) // the ring is not ready once stopped

	printDemoUsers(out, users, root)
	if df.MX != "" {
		fmt.Fprintf(out, "\nthe ring's gateway (node0) takes mail from the internet on %s (no AUTH; SPF/DKIM/DMARC results go in an Authentication-Results field):\n", df.MX)
		fmt.Fprintf(out, "  swaks --server %s --from carol@example.net --to %s --header \"Subject: from the internet\" --body \"hello from outside\"\n", df.MX, users[len(users)-1].Address)
		fmt.Fprintf(out, "mail to other domains waits in its queue, since the demo has no internet (epost status --dir %s shows it and why)\n", demoNodeDir(root, 0))
	} else {
		fmt.Fprintf(out, "\n(this demo ring was made before gateways existed: it has no MX; start in a new --dir for one)\n")
	}
	kept := ""
	if *dir != "" {
		kept = fmt.Sprintf("state kept in %s: run epost demo --dir %s to continue with the same ring, users and passwords", root, *dir)
	}
	liveStatus(ctx, out, running, "the ring", kept)
	return nil
}

// liveStatus prints a status line whenever it changes (and, unchanged, once every
// liveStatusHeartbeat, to show the demo still runs) until ctx ends, then says the demo stops
// and, if not empty, what was kept.
func liveStatus(ctx context.Context, out io.Writer, running []*daemon.Node, what, kept string) {
	fmt.Fprintf(out, "\nlive status, printed when it changes (Ctrl-C stops %s):\n", what)
	last, lastAt := "", time.Time{}
	for {
		line := demoStatusLine(running)
		if line != last || time.Since(lastAt) >= liveStatusHeartbeat {
			fmt.Fprintf(out, "  %s  %s\n", time.Now().Format("15:04:05"), line)
			last, lastAt = line, time.Now()
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "stopping %s ...\n", what)
			if kept != "" {
				fmt.Fprintln(out, kept)
			}
			return
		case <-time.After(3 * time.Second):
		}
	}
}

// liveStatusHeartbeat is how often an unchanged status line is printed again.
const liveStatusHeartbeat = 5 * time.Minute

// demoTimers are quicker than production so the ring forms and heals in seconds on one machine.
func demoTimers() daemon.Timers {
	return daemon.Timers{
		Tick:                 100 * time.Millisecond,
		ProbeInterval:        time.Second,
		ProbeTimeout:         300 * time.Millisecond,
		JoinTimeout:          time.Second,
		BootstrapBackoff:     250 * time.Millisecond,
		BootstrapMaxBackoff:  2 * time.Second,
		DialTimeout:          2 * time.Second,
		Keepalive:            2 * time.Second,
		PeersSave:            time.Second,
		PastTick:             100 * time.Millisecond,
		PastRequestTimeout:   time.Second,
		PastMaintenanceDelay: time.Second,
		PostHolderDelay:      5 * time.Second,
		PostRetryDelay:       time.Second,
		PostOnlineInterval:   30 * time.Second,
	}
}

func demoNodeDir(root string, i int) string { return filepath.Join(root, fmt.Sprintf("node%d", i)) }

func demoNodeCount(root string) int {
	n := 0
	for {
		if _, err := os.Stat(filepath.Join(demoNodeDir(root, n), "config.json")); err != nil {
			return n
		}
		n++
	}
}

// demoSetup creates the ring, nodes and users on the first start (ports picked free now and
// kept in the node configs) and reports whether it did; a later start finds them in place.
func demoSetup(root string, nodes int) (fresh bool, err error) {
	ringDir := filepath.Join(root, "ring")
	if _, err := os.Stat(filepath.Join(ringDir, ring.FileDescriptor)); err == nil {
		if demoNodeCount(root) < 3 {
			return false, fmt.Errorf("%s holds a ring but not its nodes; remove the directory and start again", root)
		}
		return false, nil
	}
	now := time.Now()
	if err := ringInit([]string{"--dir", ringDir, "--name", "demo", "--domain", demoDomain}, io.Discard, now); err != nil {
		return false, err
	}
	ports, err := freeLoopbackPorts(nodes + 3*len(demoUsers) + 2)
	if err != nil {
		return false, err
	}
	// node0 is the ring's gateway: the MX for the internet, and the outbound queue (which
	// needs the global ring's side of the gateway to run).
	gw := demoGateway{MX: ports[len(ports)-2], Global: ports[len(ports)-1]}
	mailPorts := map[int][]string{}
	for i, du := range demoUsers {
		mailPorts[du.node] = ports[nodes+3*i : nodes+3*i+3]
	}
	for i := range nodes {
		args := []string{"--ring", ringDir, "--dir", demoNodeDir(root, i), "--listen", ports[i]}
		if i > 0 {
			args = append(args, "--bootstrap", ports[0])
		}
		mp := mailPorts[i]
		if mp == nil {
			mp = []string{"", "", ""}
		}
		args = append(args, "--imap", mp[0], "--smtp", mp[1], "--pop3", mp[2])
		if i == 0 {
			args = append(args, "--gateway")
		}
		if err := nodeInit(args, io.Discard, now); err != nil {
			return false, fmt.Errorf("node%d: %w", i, err)
		}
	}
	gj, _ := json.Marshal(gw)
	if err := os.WriteFile(filepath.Join(root, "gateway.json"), append(gj, '\n'), 0o600); err != nil {
		return false, err
	}
	for _, du := range demoUsers {
		var b [10]byte
		if _, err := rand.Read(b[:]); err != nil {
			return false, err
		}
		pwFile := filepath.Join(root, du.name+".password")
		pw := strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			return false, err
		}
		if err := userAdd([]string{"--ring", ringDir, "--node", demoNodeDir(root, du.node),
			"--address", du.name + "@" + demoDomain, "--password-file", pwFile}, io.Discard, now); err != nil {
			return false, err
		}
	}
	return true, nil
}

// freeLoopbackPorts returns n loopback addresses that were free a moment ago. They are taken
// below the kernel's ephemeral range when it can be read: a port from that range, free when
// picked, can become the source port of any outgoing connection on the machine before the
// node binds it (CI saw "address already in use" so, with other tests running alongside).
func freeLoopbackPorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []string
	lo, hi := belowEphemeral()
	for tries := 0; len(out) < n && hi-lo >= 1000 && tries < 50*n; tries++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+mrand.IntN(hi-lo))))
		if err != nil {
			continue // taken: try another
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for len(out) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// belowEphemeral is a range of ports under the kernel's ephemeral range (Linux's
// ip_local_port_range), or an empty one when it cannot be read.
func belowEphemeral() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first <= 11024 {
		return 0, 0
	}
	return max(10000, first-12000), first
}

// stopAll stops the nodes together rather than one after another, each waiting out a
// hand-over grace to neighbours that are about to go too.
func stopAll(ns []*daemon.Node) {
	var wg sync.WaitGroup
	for _, nd := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.Stop()
		}()
	}
	wg.Wait()
}

func allReady(ns []*daemon.Node) bool {
	for _, n := range ns {
		if !n.Ready() {
			return false
		}
	}
	return true
}

// sendWelcome sends to's welcome mail through from's SMTP server, over STARTTLS with AUTH
// PLAIN, as a mail client would (the node's certificate is self-signed, so it is not checked).
func sendWelcome(from, to DemoUser) error {
	c, err := smtp.Dial(from.SMTP)
	if err != nil {
		return err
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(from.SMTP)
	if err := c.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: true}); err != nil {
		return err
	}
	if err := c.Auth(smtp.PlainAuth("", from.Address, from.Password, host)); err != nil {
		return err
	}
	if err := c.Mail(from.Address); err != nil {
		return err
	}
	if err := c.Rcpt(to.Address); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: Welcome to ePOST\r\nDate: %s\r\nMessage-ID: <welcome.%d@%s>\r\n\r\n"+
		"Hello %s,\r\n\r\nthis message crossed a peer-to-peer ring: stored encrypted and replicated on its\r\n"+
		"nodes, and filed into your INBOX by your own node.\r\n",
		from.Address, to.Address, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), demoDomain, strings.Split(to.Address, "@")[0])
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func printDemoUsers(out io.Writer, users []DemoUser, root string) {
	fmt.Fprintf(out, "\nmail accounts (also in %s):\n", filepath.Join(root, "demo.json"))
	for _, u := range users {
		fmt.Fprintf(out, "\n  %s   password: %s\n", u.Address, u.Password)
		if u.Node != "" {
			fmt.Fprintf(out, "    served by %s (node-to-node %s; its state: epost status --dir %s)\n", u.Node, u.NodeListen, u.Node)
		}
		fmt.Fprintf(out, "    IMAP  %s  (STARTTLS; plain login allowed on loopback)\n", u.IMAP)
		fmt.Fprintf(out, "    SMTP  %s  (submission, STARTTLS, AUTH PLAIN)\n", u.SMTP)
		fmt.Fprintf(out, "    POP3  %s  (STLS)\n", u.POP3)
		cert := "the node's certificate"
		if u.Node != "" {
			cert = filepath.Join(u.Node, daemon.FileMailCert)
		}
		fmt.Fprintf(out, "    user name: %s (%s is self-signed, for localhost and 127.0.0.1: accept it once)\n", u.Address, cert)
	}
	if len(users) >= 2 {
		a, b := users[0], users[1]
		fmt.Fprintf(out, "\nsend a mail from %s to %s:\n", a.Address, b.Address)
		fmt.Fprintf(out, "  %s\n", swaksLine(a, b))
		fmt.Fprintf(out, "\nand one back:\n  %s\n", swaksLine(b, a))
	}
	fmt.Fprintf(out, "\n(swaks: apt-get install swaks. epost status --dir %s lists every node of the demo to ask.)\n", root)
}

func swaksLine(from, to DemoUser) string {
	return fmt.Sprintf(`swaks --server %s --tls --auth PLAIN --auth-user %s --auth-password %s --from %s --to %s --header "Subject: hi" --body "hello from %s"`,
		from.SMTP, from.Address, from.Password, from.Address, to.Address, strings.Split(from.Address, "@")[0])
}

// demoStatusLine is one line of live status: nodes ready, stored objects, and per user the
// messages filed since start.
func demoStatusLine(ns []*daemon.Node) string {
	ready, objects, pending, outbox := 0, int64(0), 0, 0
	var users []string
	for _, n := range ns {
		st := n.Status()
		if st.Ready {
			ready++
		}
		objects += st.Past.Objects
		pending += st.Mail.PendingHeld
		outbox += st.Mail.Outbox
		for _, u := range st.Mail.Users {
			users = append(users, fmt.Sprintf("%s %d", strings.Split(u.Address, "@")[0], u.Filed))
		}
	}
	return fmt.Sprintf("nodes ready %d/%d | filed since start: %s | pending deliveries %d | outbox %d | objects stored %d",
		ready, len(ns), strings.Join(users, ", "), pending, outbox, objects)
}

// writeFileSync writes path through a temporary file (mode 0600), fsynced, renamed into place.
func writeFileSync(path string, data []byte) error { return daemon.WriteFileSync(path, data, 0o600) }

// dumpOnSIGUSR1 writes every goroutine's stack to root/goroutines-TIME.txt on each SIGUSR1:
// what the ring's nodes wait on during a stall, without stopping them.
func dumpOnSIGUSR1(root string) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	go func() {
		for range c {
			name := filepath.Join(root, "goroutines-"+time.Now().UTC().Format("150405.000")+".txt")
			f, err := os.Create(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "goroutine dump:", err)
				continue
			}
			_ = pprof.Lookup("goroutine").WriteTo(f, 2)
			f.Close()
		}
	}()
}
