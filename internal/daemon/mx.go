package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"epost/internal/dnsres"
	"epost/internal/identity"
	"epost/internal/mailauth"
	"epost/internal/mxserver"
	"epost/internal/post"
	"epost/internal/ring"
	"epost/internal/smtpserver"
)

// The inbound MX (issue 14, docs/gateway-design.md §7.4): a gateway serves SMTP for the
// internet on --mx under the ring's CA-signed accept policy (NODEDIR/policy.json, copied from
// the ring directory; without it ring.DefaultPolicy). It files each message through POST as
// the gateway's own identity (NODEDIR/gateway/identity.json, made by node init --gateway or
// epost gateway identity), and answers 250 only once every recipient's copy is durably
// stored in the ring. Internet mail is plaintext at the gateway, as in ePOST: the gateway is
// the organization's border.

// FileGatewayIdentity names the gateway's POST identity and the password that opens its keys
// (NODEDIR, 0600): the gateway uses it unattended.
const FileGatewayIdentity = "gateway/identity.json"

// GatewayIdentity is the content of FileGatewayIdentity.
type GatewayIdentity struct {
	Address  string `json:"address"`
	Password string `json:"password"`
}

// SaveGatewayIdentity writes dir's FileGatewayIdentity.
func SaveGatewayIdentity(dir string, gi GatewayIdentity) error {
	p := filepath.Join(dir, FileGatewayIdentity)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(gi, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileSync(p, append(b, '\n'), 0o600)
}

// LoadGatewayIdentity reads dir's FileGatewayIdentity.
func LoadGatewayIdentity(dir string) (GatewayIdentity, error) {
	var gi GatewayIdentity
	b, err := os.ReadFile(filepath.Join(dir, FileGatewayIdentity))
	if err != nil {
		return gi, err
	}
	if err := json.Unmarshal(b, &gi); err != nil || gi.Address == "" || gi.Password == "" {
		return gi, fmt.Errorf("%s: not a gateway identity (%v)", filepath.Join(dir, FileGatewayIdentity), err)
	}
	return gi, nil
}

// WriteFileSync writes p through a temporary file, fsynced, renamed into place, and fsyncs
// the directory (the rename is durable when it returns).
func WriteFileSync(p string, b []byte, mode os.FileMode) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// syncDir fsyncs a directory, making the creation, renaming or removal of its entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mxSide is a gateway's running MX.
type mxSide struct {
	srv  *mxserver.Server
	addr string // bound
}

// gatewayID is a gateway's POST identity, online once ready is closed.
type gatewayID struct {
	addr  string
	ready chan struct{}
}

// policyCache holds the gateway policy in force.
type policyCache struct {
	mu      sync.Mutex
	policy  *ring.Policy
	signed  bool
	modTime time.Time
	checked time.Time
}

// startGatewayIdentity brings the gateway's POST identity online, when it has one: it files
// inbound internet mail and sends delivery reports. Called by Start with n.mu held.
func (n *Node) startGatewayIdentity() error {
	if !ring.HasRole(n.rn.Cert, ring.RoleGateway) {
		return nil
	}
	gi, err := LoadGatewayIdentity(n.opts.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	id := &gatewayID{addr: gi.Address, ready: make(chan struct{})}
	n.gwid = id
	// The session needs the ring: open it in the background, retrying. Stop does not wait for
	// it (a start waits up to the login timeout for the ring); it gives up once stopped.
	go func() {
		// As for users at login: once the node has joined, so that the identity's logs are
		// read from their replicas.
		for !n.Ready() {
			select {
			case <-n.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			err := n.mail.glue.StartService(gi.Address, gi.Password)
			select {
			case <-n.stop:
				return
			default:
			}
			if err == nil {
				close(id.ready)
				n.log.Info("the gateway's identity is online", "identity", gi.Address)
				return
			}
			n.log.Warn("the gateway's identity cannot start yet; retrying", "identity", gi.Address, "err", err, "in", wait)
			select {
			case <-n.stop:
				return
			case <-time.After(wait):
			}
		}
	}()
	return nil
}

// deliverAs files msg for ring users through POST as the gateway's identity, waiting for it
// to come online (until ctx ends); unknown names the recipients the ring does not know.
func (n *Node) deliverAs(ctx context.Context, to []string, nids []post.NotificationID, msg []byte) (unknown []string, err error) {
	id := n.gwid
	if id == nil {
		return nil, errors.New("this gateway has no POST identity (make one with epost gateway identity)")
	}
	select {
	case <-id.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("the gateway's identity %s is not online yet", id.addr)
	}
	return n.mail.glue.DeliverAs(ctx, id.addr, to, nids, msg)
}

// startMX starts the MX when the node is a gateway with --mx. Called by Start with n.mu held.
func (n *Node) startMX() error {
	o := n.opts
	if o.MX == "" {
		return nil
	}
	if !ring.HasRole(n.rn.Cert, ring.RoleGateway) {
		return fmt.Errorf("--mx: node %s is not a gateway (its certificate has no gateway role: enroll it with node init --gateway or ring enroll --gateway)", n.rn.ID.Short())
	}
	if n.gwid == nil {
		return fmt.Errorf("--mx: the gateway has no POST identity to file internet mail with (make one with epost gateway identity --ring RINGDIR --node %s)", o.Dir)
	}
	ms := &mxSide{}
	if _, err := n.gwPolicy.current(n, true); err != nil {
		return fmt.Errorf("--mx: %w", err)
	}
	var tlsCfg *tls.Config
	var err error
	if o.MXCert != "" {
		cert, err := tls.LoadX509KeyPair(o.MXCert, o.MXKey)
		if err != nil {
			return fmt.Errorf("--mx-tls-cert/--mx-tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else if tlsCfg, err = loadOrMakeMailTLS(o.Dir); err != nil {
		return err
	}
	host := o.MXHostname
	if host == "" {
		host = "localhost"
		if len(n.rn.Descriptor.Domains) > 0 {
			host = n.rn.Descriptor.Domains[0]
		}
	}
	ms.srv, err = mxserver.New(mxserver.Config{
		Hostname: host,
		TLS:      tlsCfg,
		Policy: func() *ring.Policy {
			p, _ := n.gwPolicy.current(n, false)
			return p
		},
		Checker: &mailauth.Checker{Resolver: &dnsres.Resolver{Server: o.Resolver}},
		Ring:    mxRing{n: n},
		Secret:  n.rn.ConvergenceKey[:],
		Logger:  n.log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.MX)
	if err != nil {
		return fmt.Errorf("--mx %s: %w (is another mail server using the port?)", o.MX, err)
	}
	ms.addr = ln.Addr().String()
	go ms.srv.Serve(ln)
	n.mx = ms
	return nil
}

// current is the policy in force: NODEDIR/policy.json when present (checked under the ring
// CA, re-read when it changes; a bad new file keeps the old policy and is logged), else the
// default for the ring.
func (ms *policyCache) current(n *Node, first bool) (*ring.Policy, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	first = first || ms.policy == nil
	now := time.Now()
	if !first && now.Sub(ms.checked) < 5*time.Second {
		return ms.policy, nil
	}
	ms.checked = now
	p := filepath.Join(n.opts.Dir, ring.FilePolicy)
	fi, err := os.Stat(p)
	var mod time.Time
	if err == nil {
		mod = fi.ModTime()
	}
	if !first && mod.Equal(ms.modTime) {
		return ms.policy, nil
	}
	caPub, _ := n.rn.Trust.CA().PublicKey.(ed25519.PublicKey)
	pol, signed, err := ring.LoadPolicy(n.opts.Dir, caPub, n.rn.Descriptor)
	if err != nil {
		if first {
			return nil, err
		}
		n.log.Error("mx: the new gateway policy is refused; the old one stays in force", "err", err)
		ms.modTime = mod
		return ms.policy, nil
	}
	if ms.policy != nil && signed && ms.signed && pol.Version < ms.policy.Version {
		n.log.Error("mx: the new gateway policy is older than the one in force; ignored", "version", pol.Version, "in_force", ms.policy.Version)
		ms.modTime = mod
		return ms.policy, nil
	}
	ms.policy, ms.signed, ms.modTime = pol, signed, mod
	if !first {
		n.log.Info("mx: gateway policy loaded", "version", pol.Version, "signed", signed)
	}
	return pol, nil
}

func (ms *mxSide) stop() {
	if ms != nil {
		ms.srv.Close()
	}
}

// mxRing is the ring as the MX sees it.
type mxRing struct{ n *Node }

func (r mxRing) Lookup(ctx context.Context, addr string) (bool, error) {
	class, err := r.n.mail.glue.Recipients().Classify(ctx, addr)
	if err != nil {
		return false, err
	}
	return class == smtpserver.RingUser, nil
}

func (r mxRing) Deliver(ctx context.Context, rcpts []string, nids [][16]byte, msg []byte) ([]mxserver.Status, error) {
	to := make([]string, len(rcpts))
	ids := make([]post.NotificationID, len(rcpts))
	for i, a := range rcpts {
		to[i] = a
		ids[i] = post.NotificationID(nids[i])
	}
	unknown, err := r.n.deliverAs(ctx, to, ids, msg)
	if err != nil {
		return nil, err
	}
	st := make([]mxserver.Status, len(rcpts))
	for i, a := range rcpts {
		st[i] = mxserver.Delivered
		for _, u := range unknown {
			if na, err := identity.NormalizeAddress(u); err == nil && na == a {
				st[i] = mxserver.Unknown
			}
		}
	}
	return st, nil
}

// MXAddr is the bound address of the MX ("" when off).
func (n *Node) MXAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mx == nil {
		return ""
	}
	return n.mx.addr
}
