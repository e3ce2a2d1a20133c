package ring

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	"epost/internal/ids"
)

// ErrRingExists is returned by Create when the directory already holds a ring.
var ErrRingExists = errors.New("ring: directory already holds a ring")

// Ring is a ring directory on the CA's machine: everything a node gets at enrollment, plus the
// CA key (read only while signing, never kept in memory longer).
type Ring struct {
	Dir        string
	Descriptor *Descriptor
	CA         *x509.Certificate
	Trust      *Trust // holds the current revocation list

	descriptorRaw  []byte // signed bytes, handed to nodes verbatim
	convergenceKey ConvergenceKey
}

// Create makes a new ring in dir (created with mode 0700 if missing): CA key and certificate,
// signed descriptor, empty signed revocation list and convergence secret. It refuses to touch a
// directory that already holds any of these files, because overwriting a CA key orphans every
// node enrolled with it.
func Create(dir string, p Params, now time.Time) (*Ring, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ring init: %w", err)
	}
	if f, ok := exists(dir, FileCAKey, FileCACert, FileDescriptor, FileRevocations, FileConvergenceKey); ok {
		return nil, fmt.Errorf("%w: %s exists; choose a new --dir (a ring's CA key is never replaced)", ErrRingExists, filepath.Join(dir, f))
	}
	var caKey ed25519.PrivateKey
	for caKey == nil || ids.RingIDOfCA(caKey.Public().(ed25519.PublicKey)) == ids.GlobalRing {
		var err error
		if _, caKey, err = ed25519.GenerateKey(nil); err != nil {
			return nil, err
		}
	}
	d := newDescriptor(p, caKey.Public().(ed25519.PublicKey), now)
	caDER, err := newCACert(caKey, d, now)
	if err != nil {
		return nil, fmt.Errorf("ring init: CA certificate: %w", err)
	}
	descRaw, err := SignDescriptor(caKey, d)
	if err != nil {
		return nil, err
	}
	rl := &RevocationList{Version: 1, Issued: d.Created, Ring: d.RingID}
	rlRaw, err := SignRevocations(caKey, rl)
	if err != nil {
		return nil, err
	}
	var conv ConvergenceKey
	if _, err := rand.Read(conv[:]); err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(caKey)
	if err != nil {
		return nil, err
	}
	var fs fileSet
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{FileCACert, encodeCert(caDER), 0o644},
		{FileDescriptor, descRaw, 0o644},
		{FileRevocations, rlRaw, 0o644},
		{FileConvergenceKey, encodeConvergenceKey(conv), 0o600},
		{FileCAKey, keyPEM, 0o600}, // last: a ring dir with a CA key is a complete one
	} {
		if err := fs.write(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			fs.undo()
			return nil, fmt.Errorf("ring init: %w", err)
		}
	}
	return LoadRing(dir)
}

// LoadRing reads and verifies a ring directory: the descriptor and revocation list must carry
// valid signatures of the directory's CA. It does not read the CA key.
func LoadRing(dir string) (*Ring, error) {
	ca, desc, descRaw, t, err := loadTrustFiles(dir)
	if err != nil {
		return nil, err
	}
	conv, err := loadConvergenceKey(filepath.Join(dir, FileConvergenceKey))
	if err != nil {
		return nil, fmt.Errorf("load ring: %w", err)
	}
	return &Ring{Dir: dir, Descriptor: desc, CA: ca, Trust: t,
		descriptorRaw: descRaw, convergenceKey: conv}, nil
}

// LoadDescriptor reads and verifies the signed descriptor of a ring or node directory (both
// hold the CA certificate, the descriptor and the revocation list).
func LoadDescriptor(dir string) (*Descriptor, error) {
	_, d, _, _, err := loadTrustFiles(dir)
	return d, err
}

// loadTrustFiles reads the public files that ring and node directories share and verifies them
// against the CA certificate found next to them.
func loadTrustFiles(dir string) (ca *x509.Certificate, d *Descriptor, dRaw []byte, t *Trust, err error) {
	fail := func(err error) (*x509.Certificate, *Descriptor, []byte, *Trust, error) {
		return nil, nil, nil, nil, fmt.Errorf("load %s: %w", dir, err)
	}
	if ca, err = loadCert(filepath.Join(dir, FileCACert)); err != nil {
		return fail(err)
	}
	pub, err := caPublicKey(ca)
	if err != nil {
		return fail(err)
	}
	if dRaw, err = readSmall(filepath.Join(dir, FileDescriptor)); err != nil {
		return fail(err)
	}
	if d, err = VerifyDescriptor(pub, dRaw); err != nil {
		return fail(fmt.Errorf("%s: %w", FileDescriptor, err))
	}
	rlRaw, err := readSmall(filepath.Join(dir, FileRevocations))
	if err != nil {
		return fail(err)
	}
	if t, err = NewTrust(ca, d, rlRaw); err != nil {
		return fail(fmt.Errorf("%s: %w", FileRevocations, err))
	}
	return ca, d, dRaw, t, nil
}

// CAKey reads the CA's private key from the ring directory and checks that it belongs to the CA
// certificate. Only CA-side commands call it (enrolling nodes, revoking, signing user records);
// callers should use the key and drop it rather than keep it in a long-lived structure.
func (r *Ring) CAKey() (ed25519.PrivateKey, error) {
	k, err := loadKey(filepath.Join(r.Dir, FileCAKey))
	if err != nil {
		return nil, fmt.Errorf("ring CA key (only the CA machine can enroll, revoke or sign): %w", err)
	}
	if !k.Public().(ed25519.PublicKey).Equal(r.Trust.caPub) {
		return nil, fmt.Errorf("ring CA key %s does not match %s", filepath.Join(r.Dir, FileCAKey), FileCACert)
	}
	return k, nil
}

// Issued is one line of the CA's issuance log (issued.jsonl): the only record that maps a node
// id to the serials of its certificates.
type Issued struct {
	Serial    string    `json:"serial"`
	NodeID    string    `json:"node_id"`
	Listen    string    `json:"listen"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Issued    time.Time `json:"issued"`
	Roles     []Role    `json:"roles,omitempty"`
}

// Enroll checks a node's request and issues its certificate with the roles given (the
// administrator's choice, never the node's), returning the bundle the node installs with
// Accept. The request's signature has been checked by ParseRequest.
func (r *Ring) Enroll(req *Request, v Validity, now time.Time, roles ...Role) (*Response, error) {
	if e, revoked := r.Trust.Revocations().IsRevoked(nil, req.NodeID); revoked {
		return nil, fmt.Errorf("%w: node %s was revoked %s; make a new node key", ErrRevoked, req.NodeID.Short(), e.Revoked.Format(time.RFC3339))
	}
	v, err := v.resolve(now)
	if err != nil {
		return nil, err
	}
	k, err := r.CAKey()
	if err != nil {
		return nil, err
	}
	roles = slices.Compact(slices.Sorted(slices.Values(roles))) // the caller's slice stays as it was
	cert, err := issueNodeCert(r.CA, k, r.Descriptor, req.PublicKey, v, roles)
	if err != nil {
		return nil, err
	}
	line, err := json.Marshal(Issued{Serial: cert.SerialNumber.String(), NodeID: req.NodeID.String(),
		Listen: req.Listen, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Issued: now.UTC().Truncate(time.Second), Roles: roles})
	if err != nil {
		return nil, err
	}
	// The log is written before the certificate leaves the CA, so every certificate in the wild
	// can be found (and revoked) by node id.
	f, err := os.OpenFile(filepath.Join(r.Dir, FileIssued), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &Response{Cert: cert, CA: r.CA, Descriptor: r.descriptorRaw, Revocations: r.Trust.SignedRevocations(),
		ConvergenceKey: r.convergenceKey}, nil
}

// IssuedCerts reads the issuance log.
func (r *Ring) IssuedCerts() ([]Issued, error) {
	data, err := os.ReadFile(filepath.Join(r.Dir, FileIssued))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Issued
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var i Issued
		if err := json.Unmarshal(sc.Bytes(), &i); err != nil {
			return nil, fmt.Errorf("%s: %w", FileIssued, err)
		}
		out = append(out, i)
	}
	return out, sc.Err()
}

// Revoke adds a revocation of a serial or a node id (exactly one must be set) to the ring's list,
// re-signs it with the next version and replaces revocations.json. Nodes pick the new list up
// when it is copied to them or gossiped (Trust.UpdateRevocations).
func (r *Ring) Revoke(serial *big.Int, node ids.ID, reason string, now time.Time) (*RevocationList, error) {
	if (serial == nil) == node.IsZero() {
		return nil, errors.New("revoke: give exactly one of a serial or a node id")
	}
	cur := r.Trust.Revocations()
	if _, done := cur.IsRevoked(serial, node); done {
		return nil, fmt.Errorf("revoke: already revoked (list version %d)", cur.Version)
	}
	k, err := r.CAKey()
	if err != nil {
		return nil, err
	}
	l := cur.withEntry(Revocation{Serial: serial, NodeID: node, Revoked: now.UTC().Truncate(time.Second), Reason: reason}, now)
	raw, err := SignRevocations(k, l)
	if err != nil {
		return nil, err
	}
	if err := writeReplace(filepath.Join(r.Dir, FileRevocations), raw, 0o644); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	if _, err := r.Trust.UpdateRevocations(raw); err != nil {
		return nil, err
	}
	return l, nil
}
