package ring

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"epost/internal/ids"
)

// ErrEnrolled is returned when a node directory already holds a certificate.
var ErrEnrolled = errors.New("ring: node directory is already enrolled")

// Default loopback addresses of a node's mail servers: unprivileged ports, reachable only from
// the machine itself, because each user's mail client talks to their own node.
const (
	DefaultIMAP = "127.0.0.1:1143"
	DefaultSMTP = "127.0.0.1:2025"
	DefaultPOP3 = "127.0.0.1:2110"
)

// NodeConfig is a node's local configuration (config.json). It is not signed: it is the node
// operator's own choice, unlike the ring descriptor.
type NodeConfig struct {
	Listen    string   `json:"listen"`    // HOST:PORT for node-to-node TLS
	Bootstrap []string `json:"bootstrap"` // HOST:PORT of nodes to join through (flag's, then the descriptor's)
	IMAP      string   `json:"imap"`      // HOST:PORT, "" disables the server
	SMTP      string   `json:"smtp"`
	POP3      string   `json:"pop3"`
	DataDir   string   `json:"data_dir"` // relative to the node directory unless absolute
}

// Validate checks the addresses.
func (c *NodeConfig) Validate() error {
	if err := ValidateAddr(c.Listen); err != nil {
		return fmt.Errorf("listen %w", err)
	}
	for _, a := range c.Bootstrap {
		if err := ValidateAddr(a); err != nil {
			return fmt.Errorf("bootstrap %w", err)
		}
	}
	for _, s := range []struct{ name, addr string }{{"imap", c.IMAP}, {"smtp", c.SMTP}, {"pop3", c.POP3}} {
		if s.addr == "" {
			continue
		}
		if err := ValidateAddr(s.addr); err != nil {
			return fmt.Errorf("%s %w (or empty to disable)", s.name, err)
		}
	}
	if c.DataDir == "" {
		return errors.New("data_dir is empty")
	}
	return nil
}

// Node is a loaded, verified node directory: what the node daemon and the transport need.
type Node struct {
	Dir            string
	Config         NodeConfig
	ID             ids.ID
	Key            ed25519.PrivateKey
	Cert           *x509.Certificate
	Creds          tls.Certificate // Cert and Key, for Trust.TLSConfig
	Descriptor     *Descriptor
	Trust          *Trust
	ConvergenceKey ConvergenceKey // POST's keyed convergent-encryption secret, shared by the ring
}

// DataDir returns the node's data directory as a path usable from the current directory.
func (n *Node) DataDir() string {
	if filepath.IsAbs(n.Config.DataDir) {
		return n.Config.DataDir
	}
	return filepath.Join(n.Dir, n.Config.DataDir)
}

// CheckOwnCert reports whether the node's own certificate is acceptable to its peers at now
// (not expired, not revoked). LoadNode does not check this, so that a node with a stale
// certificate still starts and can say why its peers refuse it; the daemon should log it.
func (n *Node) CheckOwnCert(now time.Time) error {
	_, err := n.Trust.VerifyPeer(n.Cert, now)
	return err
}

// PrepareNode creates the node directory (0700) with the node's key (made here, 0600, never
// leaving the machine) and its config, and returns the key. Run again before the node is
// enrolled, it keeps the existing key, so a lost request can simply be made again.
func PrepareNode(dir string, cfg NodeConfig) (ed25519.PrivateKey, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DirNodeData
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// A running node must never hold the CA key; sharing one directory would give it to it.
	if _, ok := exists(dir, FileCAKey); ok {
		return nil, fmt.Errorf("%s holds a ring CA key: give the node its own directory", dir)
	}
	if _, ok := exists(dir, FileNodeCert); ok {
		return nil, fmt.Errorf("%w: %s exists (a new node needs a new directory)", ErrEnrolled, filepath.Join(dir, FileNodeCert))
	}
	keyPath := filepath.Join(dir, FileNodeKey)
	key, err := loadKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if _, key, err = ed25519.GenerateKey(nil); err != nil {
			return nil, err
		}
		pemKey, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := writeNew(keyPath, pemKey, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if err := writeConfig(dir, cfg); err != nil {
		return nil, err
	}
	return key, nil
}

func writeConfig(dir string, cfg NodeConfig) error {
	if cfg.Bootstrap == nil {
		cfg.Bootstrap = []string{}
	}
	data, err := marshalIndent(cfg)
	if err != nil {
		return err
	}
	return writeReplace(filepath.Join(dir, FileNodeConfig), data, 0o644)
}

func loadConfig(dir string) (NodeConfig, error) {
	var cfg NodeConfig
	data, err := readSmall(filepath.Join(dir, FileNodeConfig))
	if err != nil {
		return cfg, err
	}
	if err := decodeStrict(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", filepath.Join(dir, FileNodeConfig), err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", filepath.Join(dir, FileNodeConfig), err)
	}
	return cfg, nil
}

// MakeRequest returns the signed enrollment request of a prepared node directory.
func MakeRequest(dir string, now time.Time) ([]byte, error) {
	key, err := loadKey(filepath.Join(dir, FileNodeKey))
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	return NewRequest(key, cfg.Listen, now)
}

// Accept installs the CA's response in a prepared node directory after checking that it fits:
// the certificate is for this node's key, signed by the CA in the response, for the ring the
// signed descriptor describes. The certificate's validity period is not checked (a node may be
// given a certificate that starts later, or, in tests, one that has expired); see
// Node.CheckOwnCert. The CA certificate itself is trusted on first use: compare Fingerprint(resp.CA)
// with the one "ring init" printed when the response came by an untrusted channel.
func Accept(dir string, resp *Response) (*Node, error) {
	if _, ok := exists(dir, FileNodeCert); ok {
		return nil, fmt.Errorf("%w: %s exists", ErrEnrolled, filepath.Join(dir, FileNodeCert))
	}
	key, err := loadKey(filepath.Join(dir, FileNodeKey))
	if err != nil {
		return nil, fmt.Errorf("accept: %w (run \"epost node request\" in this directory first)", err)
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	if pub, ok := resp.Cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("accept: %w: the certificate is for another node's key", ErrBadCert)
	}
	caPub, err := caPublicKey(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	d, err := VerifyDescriptor(caPub, resp.Descriptor)
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	t, err := NewTrust(resp.CA, d, resp.Revocations)
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	if _, err := t.verifyIdentity(resp.Cert); err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}

	// The node dials the bootstrap nodes its operator named first, then the ring's own.
	for _, a := range d.Bootstrap {
		if a != cfg.Listen && !slices.Contains(cfg.Bootstrap, a) {
			cfg.Bootstrap = append(cfg.Bootstrap, a)
		}
	}
	data := cfg.DataDir
	if !filepath.IsAbs(data) {
		data = filepath.Join(dir, data)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("accept: data directory: %w", err)
	}
	var fs fileSet
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{FileCACert, encodeCert(resp.CA.Raw), 0o644},
		{FileDescriptor, resp.Descriptor, 0o644},
		{FileRevocations, resp.Revocations, 0o644},
		{FileConvergenceKey, encodeConvergenceKey(resp.ConvergenceKey), 0o600},
		{FileNodeCert, encodeCert(resp.Cert.Raw), 0o644}, // last: its presence means "enrolled"
	} {
		if err := fs.write(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			fs.undo()
			return nil, fmt.Errorf("accept: %w", err)
		}
	}
	if err := writeConfig(dir, cfg); err != nil {
		return nil, err
	}
	return LoadNode(dir)
}

// InitNode enrolls a node in one step when the CA is on this machine: PrepareNode, MakeRequest,
// Ring.Enroll and Accept, without the files in between. Only the node's certificate and the
// ring's public files and convergence secret reach the node directory, never the CA key.
func InitNode(r *Ring, dir string, cfg NodeConfig, v Validity, now time.Time, roles ...Role) (*Node, error) {
	if abs(dir) == abs(r.Dir) {
		return nil, fmt.Errorf("node directory %s is the ring directory: give the node its own directory", dir)
	}
	if _, err := PrepareNode(dir, cfg); err != nil {
		return nil, err
	}
	raw, err := MakeRequest(dir, now)
	if err != nil {
		return nil, err
	}
	req, err := ParseRequest(raw)
	if err != nil {
		return nil, err
	}
	resp, err := r.Enroll(req, v, now, roles...)
	if err != nil {
		return nil, err
	}
	return Accept(dir, resp)
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// LoadNode reads and verifies a node directory: descriptor and revocation list signed by the
// node's ring CA, certificate issued by it for the node's key, config valid. It does not check
// the certificate's validity period or revocation (see Node.CheckOwnCert).
func LoadNode(dir string) (*Node, error) {
	_, d, _, t, err := loadTrustFiles(dir)
	if err != nil {
		return nil, err
	}
	if _, ok := exists(dir, FileCAKey); ok {
		return nil, fmt.Errorf("load node %s: directory holds the ring CA key; a node must never have it", dir)
	}
	key, err := loadKey(filepath.Join(dir, FileNodeKey))
	if err != nil {
		return nil, fmt.Errorf("load node: %w", err)
	}
	cert, err := loadCert(filepath.Join(dir, FileNodeCert))
	if err != nil {
		return nil, fmt.Errorf("load node: %w (is the node enrolled?)", err)
	}
	id, err := t.verifyIdentity(cert)
	if err != nil {
		return nil, fmt.Errorf("load node %s: %w", dir, err)
	}
	if !cert.PublicKey.(ed25519.PublicKey).Equal(key.Public()) {
		return nil, fmt.Errorf("load node %s: %s does not match %s", dir, FileNodeCert, FileNodeKey)
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("load node: %w", err)
	}
	conv, err := loadConvergenceKey(filepath.Join(dir, FileConvergenceKey))
	if err != nil {
		return nil, fmt.Errorf("load node: %w", err)
	}
	return &Node{
		Dir: dir, Config: cfg, ID: id, Key: key, Cert: cert,
		Creds:      tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		Descriptor: d, Trust: t, ConvergenceKey: conv,
	}, nil
}
