package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"epost/internal/daemon"
	"epost/internal/ids"
	"epost/internal/ring"
)

// Ring administration (on the CA's machine) and node enrollment. The CA key stays in the ring
// directory; the node commands that run on a node's machine ("node request", "node accept")
// never need it. See internal/ring/doc.go for the flow.

func init() {
	register("ring init", "create a ring: CA, signed descriptor, revocation list", runRingInit)
	register("ring enroll", "sign a node's request file (CA machine), write a response file", runRingEnroll)
	register("ring revoke", "revoke a node certificate by serial or node id", runRingRevoke)
	register("ring dns", "print the DNS TXT records that let the global ring admit this ring", runRingDNS)
	register("node init", "enroll a node with a local ring CA: key, certificate, config", runNodeInit)
	register("node request", "make a node key and an enrollment request for a remote CA", runNodeRequest)
	register("node accept", "install the CA's response to a node request", runNodeAccept)
}

func runRingInit(args []string) error    { return ringInit(args, os.Stdout, time.Now()) }
func runRingEnroll(args []string) error  { return ringEnroll(args, os.Stdout, time.Now()) }
func runRingRevoke(args []string) error  { return ringRevoke(args, os.Stdout, time.Now()) }
func runRingDNS(args []string) error     { return ringDNS(args, os.Stdout) }
func runNodeInit(args []string) error    { return nodeInit(args, os.Stdout, time.Now()) }
func runNodeRequest(args []string) error { return nodeRequest(args, os.Stdout, time.Now()) }
func runNodeAccept(args []string) error  { return nodeAccept(args, os.Stdout, time.Now()) }

// ringListFlag is a repeatable flag whose values may also be comma-separated:
// --domain a.example --domain b.example, or --bootstrap h1:1,h2:2.
type ringListFlag []string

func (l *ringListFlag) String() string { return strings.Join(*l, ",") }

func (l *ringListFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// ringParse parses flags and refuses positional arguments, which are always a typo here.
func ringParse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (all options are flags; see -h)", fs.Args())
	}
	return nil
}

func ringRequire(flags ...[2]string) error {
	for _, f := range flags {
		if f[1] == "" {
			return fmt.Errorf("--%s is required (see -h)", f[0])
		}
	}
	return nil
}

func ringAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// parseFragments reads "N/M": N fragments, any M of which rebuild an object.
func parseFragments(s string) (n, m int, err error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		n, err = strconv.Atoi(a)
		if err == nil {
			m, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("--fragments %q: want N/M, e.g. 64/8 (N fragments, any M rebuild an object)", s)
	}
	return n, m, nil
}

func ringInit(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("ring init", flag.ContinueOnError)
	dir := fs.String("dir", "", "new ring directory (CA key, descriptor); must not hold a ring yet")
	name := fs.String("name", "", "ring name, a label for people (the ring id is derived from the new CA key)")
	var domains, bootstrap ringListFlag
	fs.Var(&domains, "domain", "mail domain of the ring's addresses (repeat or comma-separate for several)")
	replicas := fs.Int("replicas", ring.DefaultReplicas, "PAST replication factor k")
	fragments := fs.String("fragments", fmt.Sprintf("%d/%d", ring.DefaultFragmentsTotal, ring.DefaultFragmentsNeeded),
		"Glacier erasure code N/M: N fragments per object, any M rebuild it (64/8: 8× storage, 6.6 nines at 60% simultaneous failure; ePOST used 48/5)")
	leafset := fs.Int("leafset", ring.DefaultLeafSet, "Pastry leaf-set size L (even, >= 4)")
	fs.Var(&bootstrap, "bootstrap", "HOST:PORT of long-lived nodes new nodes contact first (repeat or comma-separate)")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}, [2]string{"name", *name}); err != nil {
		return err
	}
	n, m, err := parseFragments(*fragments)
	if err != nil {
		return err
	}
	p := ring.Params{Name: *name, Replicas: *replicas, FragmentsTotal: n, FragmentsNeeded: m,
		LeafSet: *leafset, Bootstrap: bootstrap}
	for _, d := range domains {
		p.Domains = append(p.Domains, strings.ToLower(d)) // DNS names are case-insensitive
	}
	r, err := ring.Create(*dir, p, now)
	if err != nil {
		return err
	}
	d := r.Descriptor
	abs := ringAbs(r.Dir)
	fmt.Fprintf(out, "Created ring %q in %s\n", d.Name, abs)
	fmt.Fprintf(out, "  ring id          %s\n", d.RingID)
	fmt.Fprintf(out, "  mail domains     %s\n", strings.Join(d.Domains, ", "))
	fmt.Fprintf(out, "  parameters       replicas %d, fragments %d/%d, leaf set %d\n", d.Replicas, d.FragmentsTotal, d.FragmentsNeeded, d.LeafSet)
	fmt.Fprintf(out, "  bootstrap        %s\n", ringOrNone(d.Bootstrap))
	fmt.Fprintf(out, "  CA fingerprint   %s\n", ring.Fingerprint(r.CA))
	if len(d.Domains) > 0 {
		fmt.Fprintf(out, "\nTo federate with other rings, publish in DNS (epost ring dns prints them again):\n")
		for _, rec := range d.DNSRecords() {
			fmt.Fprintf(out, "  %s\n", rec)
		}
	}
	fmt.Fprintf(out, "\n%s signs every node and user certificate: keep it private and back up\n", filepath.Join(abs, ring.FileCAKey))
	fmt.Fprintf(out, "the ring directory (without it no node can ever be enrolled again).\n")

	// Suggest node directories next to the ring directory and a first node that listens where
	// the descriptor says the bootstrap node is.
	parent := filepath.Dir(abs)
	first := "127.0.0.1:7001"
	if len(d.Bootstrap) > 0 {
		first = d.Bootstrap[0]
	}
	fmt.Fprintf(out, "\nNext, enroll the first node (its key is made in its own directory):\n")
	fmt.Fprintf(out, "  epost node init --ring %s --dir %s --listen %s\n", abs, filepath.Join(parent, "node1"), first)
	fmt.Fprintf(out, "then more nodes, each with its own ports, joining through a running one:\n")
	fmt.Fprintf(out, "  epost node init --ring %s --dir %s --listen 127.0.0.1:7002 --bootstrap %s --imap 127.0.0.1:1144 --smtp 127.0.0.1:2026 --pop3 127.0.0.1:2111\n",
		abs, filepath.Join(parent, "node2"), first)
	fmt.Fprintf(out, "For a node on another machine: \"epost node request\" there, \"epost ring enroll\" here,\n")
	fmt.Fprintf(out, "\"epost node accept\" there (each command's -h says more).\n")
	return nil
}

// ringDNS prints the ring's federation TXT records, one zone-file line per mail domain.
func ringDNS(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ring dns", flag.ContinueOnError)
	dir := fs.String("dir", "", "ring directory (or a node directory: both hold the signed descriptor)")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	d, err := ring.LoadDescriptor(*dir)
	if err != nil {
		return err
	}
	if !d.Federable() {
		return fmt.Errorf("ring %q has a version %d descriptor: its id %s is derived from its name, which any ring could claim, so it cannot federate; create a new ring with this epost (ring init)", d.Name, d.Version, d.RingID.Short())
	}
	if len(d.Domains) == 0 {
		return fmt.Errorf("ring %q has no mail domains: nothing to publish", d.Name)
	}
	for _, rec := range d.DNSRecords() {
		fmt.Fprintln(out, rec)
	}
	return nil
}

// gatewayRoles is the roles a --gateway flag asks for.
func gatewayRoles(gateway bool) []ring.Role {
	if gateway {
		return []ring.Role{ring.RoleGateway}
	}
	return nil
}

func ringOrNone(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	return strings.Join(l, ", ")
}

// nodeFlags are the node-configuration flags shared by "node init" and "node request".
type nodeFlags struct {
	dir, listen, imap, smtp, pop3 string
	bootstrap                     ringListFlag
}

func (f *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "dir", "", "new node directory (node key, certificate, config)")
	fs.StringVar(&f.listen, "listen", "", "HOST:PORT this node listens on for other nodes")
	fs.Var(&f.bootstrap, "bootstrap", "HOST:PORT of running nodes to join through (repeat or comma-separate); the ring's are added")
	fs.StringVar(&f.imap, "imap", ring.DefaultIMAP, "IMAP listen address for the node's users (empty: none)")
	fs.StringVar(&f.smtp, "smtp", ring.DefaultSMTP, "SMTP submission listen address (empty: none)")
	fs.StringVar(&f.pop3, "pop3", ring.DefaultPOP3, "POP3 listen address (empty: none)")
}

func (f *nodeFlags) config() (ring.NodeConfig, error) {
	if err := ringRequire([2]string{"dir", f.dir}, [2]string{"listen", f.listen}); err != nil {
		return ring.NodeConfig{}, err
	}
	return ring.NodeConfig{Listen: f.listen, Bootstrap: f.bootstrap, IMAP: f.imap, SMTP: f.smtp,
		POP3: f.pop3, DataDir: ring.DirNodeData}, nil
}

// validityFlags choose a certificate's validity window. --not-before and --not-after exist
// mostly so that tests can make certificates that are expired or not yet valid.
type validityFlags struct {
	validFor            time.Duration
	notBefore, notAfter string
}

func (v *validityFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&v.validFor, "valid-for", ring.DefaultNodeValidity, "certificate lifetime from now (e.g. 8760h)")
	fs.StringVar(&v.notBefore, "not-before", "", "certificate valid from this RFC 3339 time instead of now")
	fs.StringVar(&v.notAfter, "not-after", "", "certificate valid until this RFC 3339 time (overrides --valid-for)")
}

func (v *validityFlags) validity(now time.Time) (ring.Validity, error) {
	var out ring.Validity
	var err error
	if v.notBefore != "" {
		if out.NotBefore, err = time.Parse(time.RFC3339, v.notBefore); err != nil {
			return out, fmt.Errorf("--not-before: want RFC 3339, e.g. 2025-01-02T15:04:05Z: %v", err)
		}
	}
	if v.notAfter != "" {
		if out.NotAfter, err = time.Parse(time.RFC3339, v.notAfter); err != nil {
			return out, fmt.Errorf("--not-after: want RFC 3339, e.g. 2025-01-02T15:04:05Z: %v", err)
		}
	} else {
		if v.validFor <= 0 {
			return out, fmt.Errorf("--valid-for %v: must be positive (use --not-after for a past date)", v.validFor)
		}
		out.NotAfter = now.Add(v.validFor)
	}
	return out, nil
}

func nodeInit(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("node init", flag.ContinueOnError)
	ringDir := fs.String("ring", "", "ring directory made by \"epost ring init\" (holds the CA key)")
	gateway := fs.Bool("gateway", false, "make the node one of the ring's gateways (the role is in its certificate: it joins the global ring and carries mail between rings and to the internet)")
	var nf nodeFlags
	nf.register(fs)
	var vf validityFlags
	vf.register(fs)
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"ring", *ringDir}); err != nil {
		return err
	}
	cfg, err := nf.config()
	if err != nil {
		return err
	}
	v, err := vf.validity(now)
	if err != nil {
		return err
	}
	r, err := ring.LoadRing(*ringDir)
	if err != nil {
		return err
	}
	n, err := ring.InitNode(r, nf.dir, cfg, v, now, gatewayRoles(*gateway)...)
	if err != nil {
		return err
	}
	printNode(out, n, now)
	if *gateway {
		return initGateway(out, *ringDir, nf.dir, now)
	}
	return nil
}

// initGateway gives a new gateway node its POST identity (for inbound internet mail) and the
// ring's gateway policy, when the ring has one.
func initGateway(out io.Writer, ringDir, nodeDir string, now time.Time) error {
	addr, err := makeGatewayIdentity(ringDir, nodeDir, now)
	if err != nil {
		return fmt.Errorf("the gateway's POST identity: %w", err)
	}
	fmt.Fprintf(out, "  identity      %s (files inbound internet mail; %s)\n", addr, daemon.FileGatewayIdentity)
	if raw, err := os.ReadFile(filepath.Join(ringDir, ring.FilePolicy)); err == nil {
		if err := os.WriteFile(filepath.Join(nodeDir, ring.FilePolicy), raw, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "  policy        copied from the ring directory (%s)\n", ring.FilePolicy)
	}
	return nil
}

func printNode(out io.Writer, n *ring.Node, now time.Time) {
	abs := ringAbs(n.Dir)
	fmt.Fprintf(out, "Enrolled node %s in ring %q (%s)\n", n.ID, n.Descriptor.Name, n.Descriptor.RingID.Short())
	fmt.Fprintf(out, "  directory     %s\n", abs)
	fmt.Fprintf(out, "  listen        %s\n", n.Config.Listen)
	if ring.HasRole(n.Cert, ring.RoleGateway) {
		fmt.Fprintf(out, "  role          gateway\n")
	}
	fmt.Fprintf(out, "  bootstrap     %s\n", ringOrNone(n.Config.Bootstrap))
	fmt.Fprintf(out, "  imap %s, smtp %s, pop3 %s\n", ringOrOff(n.Config.IMAP), ringOrOff(n.Config.SMTP), ringOrOff(n.Config.POP3))
	fmt.Fprintf(out, "  certificate   serial %s, valid %s to %s\n", n.Cert.SerialNumber,
		n.Cert.NotBefore.UTC().Format(time.RFC3339), n.Cert.NotAfter.UTC().Format(time.RFC3339))
	if err := n.CheckOwnCert(now); err != nil {
		fmt.Fprintf(out, "WARNING: peers will refuse this node: %v\n", err)
	}
	fmt.Fprintf(out, "Start it with: epost node run --dir %s\n", abs)
}

func ringOrOff(a string) string {
	if a == "" {
		return "off"
	}
	return a
}

func nodeRequest(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("node request", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	outFile := fs.String("out", "", "request file to write (default NODEDIR/"+ring.FileNodeRequest+")")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	cfg, err := nf.config()
	if err != nil {
		return err
	}
	if _, err := ring.PrepareNode(nf.dir, cfg); err != nil {
		return err
	}
	req, err := ring.MakeRequest(nf.dir, now)
	if err != nil {
		return err
	}
	path := *outFile
	if path == "" {
		path = filepath.Join(nf.dir, ring.FileNodeRequest)
	}
	// The request is public (a public key and an address), so overwriting an older one is fine.
	if err := os.WriteFile(path, req, 0o644); err != nil {
		return err
	}
	parsed, err := ring.ParseRequest(req)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Node key made in %s; node id %s\n", ringAbs(nf.dir), parsed.NodeID)
	fmt.Fprintf(out, "Wrote the enrollment request %s. Carry it to the ring CA's machine and run there:\n", ringAbs(path))
	fmt.Fprintf(out, "  epost ring enroll --dir RINGDIR --request %s --out response.json\n", filepath.Base(path))
	fmt.Fprintf(out, "then bring response.json back privately (it holds the ring's convergence secret) and run:\n")
	fmt.Fprintf(out, "  epost node accept --dir %s --response response.json\n", ringAbs(nf.dir))
	return nil
}

func ringEnroll(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("ring enroll", flag.ContinueOnError)
	dir := fs.String("dir", "", "ring directory (holds the CA key)")
	reqFile := fs.String("request", "", "request file made by \"epost node request\"")
	outFile := fs.String("out", "", "response file to write (mode 0600; must not exist)")
	gateway := fs.Bool("gateway", false, "grant the node the gateway role (see node init -h)")
	var vf validityFlags
	vf.register(fs)
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}, [2]string{"request", *reqFile}, [2]string{"out", *outFile}); err != nil {
		return err
	}
	v, err := vf.validity(now)
	if err != nil {
		return err
	}
	r, err := ring.LoadRing(*dir)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(*reqFile)
	if err != nil {
		return err
	}
	req, err := ring.ParseRequest(data)
	if err != nil {
		return err
	}
	resp, err := r.Enroll(req, v, now, gatewayRoles(*gateway)...)
	if err != nil {
		return err
	}
	if err := resp.WriteFile(*outFile); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	fmt.Fprintf(out, "Issued certificate serial %s to node %s (listen %s), valid %s to %s\n",
		resp.Cert.SerialNumber, req.NodeID, req.Listen,
		resp.Cert.NotBefore.UTC().Format(time.RFC3339), resp.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "Wrote %s: carry it to the node privately (it holds the ring's convergence secret),\n", ringAbs(*outFile))
	fmt.Fprintf(out, "run \"epost node accept --dir NODEDIR --response %s\" there, then delete it.\n", filepath.Base(*outFile))
	fmt.Fprintf(out, "CA fingerprint to compare on the node: %s\n", ring.Fingerprint(r.CA))
	return nil
}

func nodeAccept(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("node accept", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory prepared by \"epost node request\"")
	respFile := fs.String("response", "", "response file made by \"epost ring enroll\"")
	fingerprint := fs.String("ca-fingerprint", "", "expected CA fingerprint (printed by \"ring init\"); refuse a response from any other CA")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}, [2]string{"response", *respFile}); err != nil {
		return err
	}
	data, err := os.ReadFile(*respFile)
	if err != nil {
		return err
	}
	resp, err := ring.ParseResponse(data)
	if err != nil {
		return err
	}
	got := ring.Fingerprint(resp.CA)
	if *fingerprint != "" && !strings.EqualFold(strings.ReplaceAll(*fingerprint, ":", ""), got) {
		return fmt.Errorf("the response's CA has fingerprint %s, not %s: it is not your ring's CA", got, *fingerprint)
	}
	n, err := ring.Accept(*dir, resp)
	if err != nil {
		return err
	}
	printNode(out, n, now)
	fmt.Fprintf(out, "CA fingerprint %s: compare it with the one \"epost ring init\" printed.\n", got)
	fmt.Fprintf(out, "Delete %s now; the node has its own copy of the secret.\n", *respFile)
	return nil
}

func ringRevoke(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("ring revoke", flag.ContinueOnError)
	dir := fs.String("dir", "", "ring directory (holds the CA key)")
	serialFlag := fs.String("serial", "", "serial of the certificate or record to revoke (decimal, or hex with 0x)")
	nodeFlag := fs.String("node-id", "", "node id (64 hex digits) whose certificates, past and future, to revoke")
	reason := fs.String("reason", "", "free text recorded with the revocation")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	if (*serialFlag == "") == (*nodeFlag == "") {
		return errors.New("give exactly one of --serial or --node-id")
	}
	var serial *big.Int
	var node ids.ID
	var err error
	if *serialFlag != "" {
		if serial, err = ring.ParseSerial(*serialFlag); err != nil {
			return err
		}
	} else if node, err = ids.Parse(strings.ToLower(*nodeFlag)); err != nil {
		return fmt.Errorf("--node-id: %w", err)
	}
	r, err := ring.LoadRing(*dir)
	if err != nil {
		return err
	}
	l, err := r.Revoke(serial, node, *reason, now)
	if err != nil {
		return err
	}
	if serial != nil {
		fmt.Fprintf(out, "Revoked serial %s", serial)
		if issued, err := r.IssuedCerts(); err == nil && !slices.ContainsFunc(issued, func(i ring.Issued) bool { return i.Serial == serial.String() }) {
			fmt.Fprintf(out, " (no node certificate with this serial in %s: fine if it is a user record's)", ring.FileIssued)
		}
	} else {
		fmt.Fprintf(out, "Revoked node %s", node)
		if issued, err := r.IssuedCerts(); err == nil {
			var serials []string
			for _, i := range issued {
				if i.NodeID == node.String() {
					serials = append(serials, i.Serial)
				}
			}
			fmt.Fprintf(out, " (its certificates: %s)", ringOrNone(serials))
		}
	}
	fmt.Fprintf(out, "; revocation list is now version %d with %d entries.\n", l.Version, len(l.Entries))
	fmt.Fprintf(out, "Copy %s into every node directory (nodes keep the highest version they see).\n",
		filepath.Join(ringAbs(r.Dir), ring.FileRevocations))
	return nil
}
