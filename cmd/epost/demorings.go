package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"epost/internal/daemon"
	"epost/internal/dnstest"
	"epost/internal/ring"
)

// "epost demo --rings 2": two autonomous rings on this machine, acme.example (alice) and
// globex.example (bob), each of three nodes, node0 its gateway in the global ring. A DNS server
// in the demo process answers the _epost records that let each ring's gateway admit the other,
// and every node asks it (--resolver). alice and bob write to each other across the rings with
// any mail client; their rings keep their data to themselves.
//
// DIR layout: DIR/acme/{ring,node0,node1,node2}, DIR/globex/..., DIR/rings.json (the gateways'
// global-ring addresses, fixed at the first start), DIR/USER.password, DIR/logs/RING-nodeN.log,
// and DIR/demo.json once both rings are ready.

type demoRingSpec struct {
	name, user string
}

var demoRingSpecs = []demoRingSpec{{"acme", "alice"}, {"globex", "bob"}}

// demoRingsFile is DIR/rings.json.
type demoRingsFile struct {
	Global map[string]string `json:"global"` // ring name -> its gateway's global-ring address
}

const demoRingNodes = 3

func runDemoRings(ctx context.Context, out io.Writer, root string, kept bool, seed uint64) error {
	dns, err := dnstest.Start()
	if err != nil {
		return fmt.Errorf("the demo's DNS server: %w", err)
	}
	defer dns.Close()
	rf, fresh, err := demoRingsSetup(root)
	if err != nil {
		return err
	}
	if fresh {
		fmt.Fprintf(out, "epost demo: created two rings (acme.example, globex.example) of %d nodes each in %s (seed %d)\n", demoRingNodes, root, seed)
	} else {
		fmt.Fprintf(out, "epost demo: reusing the two rings in %s (seed %d)\n", root, seed)
	}
	for _, sp := range demoRingSpecs {
		d, err := ring.LoadDescriptor(filepath.Join(root, sp.name, "ring"))
		if err != nil {
			return err
		}
		for _, rec := range d.Domains {
			dns.SetTXT(ring.DNSName(rec), time.Hour, ring.DNSValue(d.RingID))
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o700); err != nil {
		return err
	}
	var running []*daemon.Node
	defer func() { stopAll(running) }()
	homes := map[string]*daemon.Node{}
	for ri, sp := range demoRingSpecs {
		for i := range demoRingNodes {
			logf, err := os.OpenFile(filepath.Join(root, "logs", fmt.Sprintf("%s-node%d.log", sp.name, i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer logf.Close()
			opts := daemon.Options{Dir: filepath.Join(root, sp.name, fmt.Sprintf("node%d", i)), Timers: demoTimers(),
				Logger: slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo})),
				Seed:   seed + uint64(100*ri+i), Resolver: dns.Addr}
			if i == 0 {
				opts.GlobalListen = rf.Global[sp.name]
				if ri > 0 {
					opts.GlobalBootstrap = []string{rf.Global[demoRingSpecs[0].name]}
				}
			}
			nd, err := daemon.Open(opts)
			if err != nil {
				return err
			}
			if err := nd.Start(); err != nil {
				return fmt.Errorf("%s node%d: %w (its log: %s)", sp.name, i, err, logf.Name())
			}
			running = append(running, nd)
			if i == 1 {
				homes[sp.name] = nd
			}
		}
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
			return fmt.Errorf("the rings did not form within 2 minutes; see the logs in %s", filepath.Join(root, "logs"))
		}
	}
	fmt.Fprintf(out, "rings ready: %d nodes joined in %s\n", len(running), time.Since(start).Round(100*time.Millisecond))

	var users []DemoUser
	for _, sp := range demoRingSpecs {
		addr := sp.user + "@" + sp.name + ".example"
		pw, err := os.ReadFile(filepath.Join(root, sp.user+".password"))
		if err != nil {
			return fmt.Errorf("%w (the demo directory is incomplete; remove %s and start again)", err, root)
		}
		password := strings.TrimSpace(string(pw))
		nd := homes[sp.name]
		if _, err := nd.Login(addr, password); err != nil {
			return fmt.Errorf("bring %s online: %w", addr, err)
		}
		a := nd.MailAddrs()
		users = append(users, DemoUser{Address: addr, Password: password, IMAP: a.IMAP, SMTP: a.SMTP, POP3: a.POP3, Ring: sp.name,
			Node: filepath.Join(root, sp.name, "node1"), NodeListen: nd.Status().Listen})
	}
	welcomed := filepath.Join(root, "welcome.sent")
	if _, err := os.Stat(welcomed); err != nil {
		// The gateways admit each other within seconds; until then the submission is told to
		// come back later (451), as a mail client would be.
		var serr error
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			if serr = sendWelcome(users[0], users[1]); serr == nil || ctx.Err() != nil {
				break
			}
		}
		if serr != nil {
			return fmt.Errorf("send the welcome mail across the rings: %w (see the gateways' logs, %s/*-node0.log)", serr, filepath.Join(root, "logs"))
		}
		if err := os.WriteFile(welcomed, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "sent %s a welcome mail from %s, across the two rings\n", users[1].Address, users[0].Address)
	}
	data, _ := json.MarshalIndent(DemoFile{Users: users}, "", "  ")
	if err := writeFileSync(filepath.Join(root, "demo.json"), append(data, '\n')); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(root, "demo.json"))

	printDemoUsers(out, users, root)
	msg := ""
	if kept {
		msg = fmt.Sprintf("state kept in %s: run epost demo --rings 2 --dir %s to continue with the same rings, users and passwords", root, root)
	}
	liveStatus(ctx, out, running, "the rings", msg)
	return nil
}

// demoRingsSetup makes the two rings on the first start (ports picked free now and kept).
func demoRingsSetup(root string) (demoRingsFile, bool, error) {
	path := filepath.Join(root, "rings.json")
	var rf demoRingsFile
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &rf); err != nil || len(rf.Global) != len(demoRingSpecs) {
			return rf, false, fmt.Errorf("%s is damaged; remove %s and start again", path, root)
		}
		return rf, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return rf, false, err
	}
	if _, err := os.Stat(filepath.Join(root, "ring")); err == nil {
		return rf, false, fmt.Errorf("%s holds a one-ring demo; use another --dir for --rings 2", root)
	}
	now := time.Now()
	rf.Global = map[string]string{}
	for _, sp := range demoRingSpecs {
		ringDir := filepath.Join(root, sp.name, "ring")
		if err := ringInit([]string{"--dir", ringDir, "--name", sp.name, "--domain", sp.name + ".example"}, io.Discard, now); err != nil {
			return rf, false, err
		}
		ports, err := freeLoopbackPorts(demoRingNodes + 1 + 3)
		if err != nil {
			return rf, false, err
		}
		rf.Global[sp.name] = ports[demoRingNodes]
		for i := range demoRingNodes {
			args := []string{"--ring", ringDir, "--dir", filepath.Join(root, sp.name, fmt.Sprintf("node%d", i)), "--listen", ports[i]}
			switch i {
			case 0:
				args = append(args, "--gateway", "--imap", "", "--smtp", "", "--pop3", "")
			case 1:
				mp := ports[demoRingNodes+1:]
				args = append(args, "--bootstrap", ports[0], "--imap", mp[0], "--smtp", mp[1], "--pop3", mp[2])
			default:
				args = append(args, "--bootstrap", ports[0], "--imap", "", "--smtp", "", "--pop3", "")
			}
			if err := nodeInit(args, io.Discard, now); err != nil {
				return rf, false, fmt.Errorf("%s node%d: %w", sp.name, i, err)
			}
		}
		var b [10]byte
		if _, err := rand.Read(b[:]); err != nil {
			return rf, false, err
		}
		pwFile := filepath.Join(root, sp.user+".password")
		if err := os.WriteFile(pwFile, []byte(strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))+"\n"), 0o600); err != nil {
			return rf, false, err
		}
		if err := userAdd([]string{"--ring", ringDir, "--node", filepath.Join(root, sp.name, "node1"),
			"--address", sp.user + "@" + sp.name + ".example", "--password-file", pwFile}, io.Discard, now); err != nil {
			return rf, false, err
		}
	}
	data, _ := json.MarshalIndent(rf, "", "  ")
	if err := writeFileSync(path, append(data, '\n')); err != nil {
		return rf, false, err
	}
	return rf, true, nil
}
