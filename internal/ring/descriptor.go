package ring

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"epost/internal/ids"
)

// DescriptorVersion is the format version of descriptors this package writes: 2, whose ring id
// is derived from the CA's public key (ids.RingIDOfCA). Version 1 descriptors (ring id derived
// from the name, ids.RingIDOf) are still read: such a ring works on its own but cannot
// federate, since anyone could claim its id.
const DescriptorVersion = 2

// descriptorV1 is the earlier format, read but no longer written.
const descriptorV1 = 1

// Defaults for a new ring. The leaf set of 24 is FreePastry's default. Fragments are 64/8, not
// ePOST's published 48/5: predicted loss at 60 % simultaneous failure is 2.8e-7 per object
// (6.6 nines; 48/5: 9.9e-7, 6.0 nines) at 8.0× storage instead of 9.6×, and the simulator lost
// nothing at 1,000 nodes, 20,000 objects, 60 % failure, seeds 5–7 (docs/bench-glacier.md).
// Fragment positions stay on distinct nodes while the ring has more than about 2n = 128 nodes.
const (
	DefaultReplicas        = 3
	DefaultFragmentsTotal  = 64
	DefaultFragmentsNeeded = 8
	DefaultLeafSet         = 24
)

// ErrBadParams is returned for ring parameters that cannot work.
var ErrBadParams = errors.New("ring: invalid ring parameters")

// Params are the administrator's choices for a new ring.
type Params struct {
	Name            string
	Domains         []string // mail domains whose addresses live in this ring
	Replicas        int      // PAST replication factor k
	FragmentsTotal  int      // Glacier: n fragments per object...
	FragmentsNeeded int      // ...any m of which rebuild it
	LeafSet         int      // Pastry leaf-set size L (even: L/2 on each side)
	Bootstrap       []string // HOST:PORT of long-lived nodes that new nodes contact first
}

// DefaultParams returns the defaults with the given name and domains.
func DefaultParams(name string, domains ...string) Params {
	return Params{
		Name: name, Domains: domains,
		Replicas: DefaultReplicas, FragmentsTotal: DefaultFragmentsTotal,
		FragmentsNeeded: DefaultFragmentsNeeded, LeafSet: DefaultLeafSet,
	}
}

// Descriptor is a ring's public, CA-signed parameter set. Every node checks it on load, so all
// nodes of a ring agree on the parameters. It holds nothing secret.
type Descriptor struct {
	Version         int
	Name            string
	RingID          ids.RingID // version 2: ids.RingIDOfCA(the CA key); version 1: ids.RingIDOf(Name)
	Domains         []string
	Replicas        int
	FragmentsTotal  int
	FragmentsNeeded int
	LeafSet         int
	Bootstrap       []string
	Created         time.Time
}

// descriptorJSON is the signed body; ids are hex so that the file is readable by people.
type descriptorJSON struct {
	Version         int       `json:"version"`
	Name            string    `json:"name"`
	RingID          string    `json:"ring_id"`
	Domains         []string  `json:"domains"`
	Replicas        int       `json:"replicas"`
	FragmentsTotal  int       `json:"fragments_total"`
	FragmentsNeeded int       `json:"fragments_needed"`
	LeafSet         int       `json:"leaf_set"`
	Bootstrap       []string  `json:"bootstrap"`
	Created         time.Time `json:"created"`
}

// Validate reports the first thing wrong with p, phrased for the administrator who typed it.
func (p Params) Validate() error {
	if err := validateName(p.Name); err != nil {
		return err
	}
	if len(p.Domains) == 0 {
		return fmt.Errorf("%w: at least one mail domain is needed (--domain example.org)", ErrBadParams)
	}
	seen := map[string]bool{}
	for _, d := range p.Domains {
		if err := validateDomain(d); err != nil {
			return err
		}
		if seen[d] {
			return fmt.Errorf("%w: domain %q given twice", ErrBadParams, d)
		}
		seen[d] = true
	}
	if p.LeafSet < 4 || p.LeafSet%2 != 0 || p.LeafSet > 256 {
		return fmt.Errorf("%w: leaf-set size %d must be even and between 4 and 256 (half of it on each side of a node)", ErrBadParams, p.LeafSet)
	}
	// The k replicas of a key live on the k nodes closest to it, which must all be in the
	// root's leaf set for replica maintenance to see them: k <= L/2.
	if p.Replicas < 1 || p.Replicas > p.LeafSet/2 {
		return fmt.Errorf("%w: replicas %d must be between 1 and half the leaf set (%d)", ErrBadParams, p.Replicas, p.LeafSet/2)
	}
	// Reed-Solomon over GF(2^8) allows at most 256 fragments in total.
	if p.FragmentsNeeded < 1 || p.FragmentsTotal > 256 || p.FragmentsNeeded > p.FragmentsTotal {
		return fmt.Errorf("%w: fragments %d/%d must satisfy 1 <= m <= n <= 256 (n fragments, any m rebuild an object)", ErrBadParams, p.FragmentsTotal, p.FragmentsNeeded)
	}
	for _, a := range p.Bootstrap {
		if err := ValidateAddr(a); err != nil {
			return fmt.Errorf("%w: bootstrap %v", ErrBadParams, err)
		}
	}
	return nil
}

// validateName accepts printable names without spaces at the ends; the name is hashed into the
// ring id, so two spellings of "the same" name would silently make two rings.
func validateName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%w: ring name must be 1 to 253 characters (--name acme)", ErrBadParams)
	}
	for _, r := range name {
		if r < 0x21 || r == 0x7f {
			return fmt.Errorf("%w: ring name %q may contain no spaces or control characters", ErrBadParams, name)
		}
	}
	return nil
}

// validateDomain accepts lower-case ASCII DNS names (IDNs in their xn-- form), as they appear
// after the @ of the ring's addresses.
func validateDomain(d string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: mail domain %q %s", ErrBadParams, d, why)
	}
	if d == "" || len(d) > 253 {
		return bad("must be 1 to 253 characters")
	}
	if d != strings.ToLower(d) {
		return bad("must be lower case")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" {
			return bad("has an empty label (leading, trailing or double dot)")
		}
		if len(label) > 63 {
			return bad("has a label longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("has a label starting or ending with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad("may contain only a-z, 0-9, '-' and dots (write IDNs as xn--)")
			}
		}
	}
	return nil
}

// ValidateAddr checks a HOST:PORT network address (host may be empty for "all interfaces").
func ValidateAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT: %v", a, err)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("address %q: bad host", a)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", a)
	}
	return nil
}

// newDescriptor builds the descriptor for validated params and the ring's CA key.
func newDescriptor(p Params, caPub ed25519.PublicKey, now time.Time) *Descriptor {
	return &Descriptor{
		Version:         DescriptorVersion,
		Name:            p.Name,
		RingID:          ids.RingIDOfCA(caPub),
		Domains:         append([]string(nil), p.Domains...),
		Replicas:        p.Replicas,
		FragmentsTotal:  p.FragmentsTotal,
		FragmentsNeeded: p.FragmentsNeeded,
		LeafSet:         p.LeafSet,
		Bootstrap:       append([]string{}, p.Bootstrap...),
		Created:         now.UTC().Truncate(time.Second),
	}
}

// Params returns the descriptor's parameters, for re-validation.
func (d *Descriptor) Params() Params {
	return Params{
		Name: d.Name, Domains: d.Domains, Replicas: d.Replicas,
		FragmentsTotal: d.FragmentsTotal, FragmentsNeeded: d.FragmentsNeeded,
		LeafSet: d.LeafSet, Bootstrap: d.Bootstrap,
	}
}

// Federable reports whether the ring's id is bound to its CA key (version 2), which the global
// ring requires: a version 1 id is the hash of the name, which any CA could claim.
func (d *Descriptor) Federable() bool { return d.Version >= DescriptorVersion }

// HasDomain reports whether the mail domain belongs to this ring.
func (d *Descriptor) HasDomain(domain string) bool {
	for _, x := range d.Domains {
		if x == strings.ToLower(domain) {
			return true
		}
	}
	return false
}

// SignDescriptor encodes d and signs it with the CA key.
func SignDescriptor(caKey ed25519.PrivateKey, d *Descriptor) ([]byte, error) {
	return Sign(caKey, typeDescriptor, descriptorJSON{
		Version: d.Version, Name: d.Name, RingID: d.RingID.String(), Domains: d.Domains,
		Replicas: d.Replicas, FragmentsTotal: d.FragmentsTotal, FragmentsNeeded: d.FragmentsNeeded,
		LeafSet: d.LeafSet, Bootstrap: d.Bootstrap, Created: d.Created,
	})
}

// VerifyDescriptor checks the CA's signature over the exact bytes of data and then the
// descriptor's contents (version, ring id derived from the CA key, or from the name for
// version 1, parameters).
func VerifyDescriptor(caPub ed25519.PublicKey, data []byte) (*Descriptor, error) {
	body, err := Open(caPub, typeDescriptor, data)
	if err != nil {
		return nil, fmt.Errorf("ring descriptor: %w", err)
	}
	// Check the version before the strict decode, so a newer descriptor says "upgrade" rather
	// than "unknown field".
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("ring descriptor: %w", err)
	}
	if v.Version != DescriptorVersion && v.Version != descriptorV1 {
		return nil, fmt.Errorf("ring descriptor: format version %d, this epost reads versions %d and %d: upgrade epost", v.Version, descriptorV1, DescriptorVersion)
	}
	var j descriptorJSON
	if err := decodeStrict(body, &j); err != nil {
		return nil, fmt.Errorf("ring descriptor: %w", err)
	}
	id, err := ids.Parse(j.RingID)
	if err != nil {
		return nil, fmt.Errorf("ring descriptor: ring id: %w", err)
	}
	d := &Descriptor{
		Version: j.Version, Name: j.Name, RingID: id, Domains: j.Domains,
		Replicas: j.Replicas, FragmentsTotal: j.FragmentsTotal, FragmentsNeeded: j.FragmentsNeeded,
		LeafSet: j.LeafSet, Bootstrap: j.Bootstrap, Created: j.Created,
	}
	switch {
	case d.Version == descriptorV1 && id != ids.RingIDOf(d.Name):
		return nil, fmt.Errorf("ring descriptor: ring id %s is not the id of name %q", id.Short(), d.Name)
	case d.Version != descriptorV1 && id != ids.RingIDOfCA(caPub):
		return nil, fmt.Errorf("ring descriptor: ring id %s is not the id of the CA key that signed it (%s)", id.Short(), ids.RingIDOfCA(caPub).Short())
	}
	if err := d.Params().Validate(); err != nil {
		return nil, fmt.Errorf("ring descriptor: %w", err)
	}
	return d, nil
}
