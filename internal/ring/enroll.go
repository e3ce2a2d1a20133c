package ring

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"epost/internal/ids"
)

// Request is a node's enrollment request: its public key, the node id derived from it and where
// it listens, signed with the node's own key as proof that the requester holds the private key
// (so nobody can get a certificate for a key they merely copied).
type Request struct {
	PublicKey ed25519.PublicKey
	NodeID    ids.ID
	Listen    string
	Created   time.Time
}

type requestJSON struct {
	Version   int       `json:"version"`
	PublicKey []byte    `json:"public_key"`
	NodeID    string    `json:"node_id"`
	Listen    string    `json:"listen"`
	Created   time.Time `json:"created"`
}

const requestVersion = 1

// NewRequest makes the signed request for the node holding key.
func NewRequest(key ed25519.PrivateKey, listen string, now time.Time) ([]byte, error) {
	if err := ValidateAddr(listen); err != nil {
		return nil, fmt.Errorf("listen %w", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	return Sign(key, typeRequest, requestJSON{
		Version: requestVersion, PublicKey: pub, NodeID: NodeIDFromPublicKey(pub).String(),
		Listen: listen, Created: now.UTC().Truncate(time.Second),
	})
}

// ParseRequest decodes a request and checks the proof of possession and the node id. The request
// may come from anywhere, so everything in it is checked before it is believed.
func ParseRequest(data []byte) (*Request, error) {
	env, err := parseEnvelope(typeRequest, data)
	if err != nil {
		return nil, fmt.Errorf("enrollment request: %w", err)
	}
	var j requestJSON
	if err := decodeStrict(env.Body, &j); err != nil {
		return nil, fmt.Errorf("enrollment request: %w", err)
	}
	if j.Version != requestVersion {
		return nil, fmt.Errorf("enrollment request: format version %d, want %d", j.Version, requestVersion)
	}
	if len(j.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("enrollment request: public key is %d bytes, want %d", len(j.PublicKey), ed25519.PublicKeySize)
	}
	pub := ed25519.PublicKey(j.PublicKey)
	if !ed25519.Verify(pub, signedMessage(typeRequest, env.Body), env.Sig) {
		return nil, fmt.Errorf("enrollment request: %w (not signed by the key it contains)", ErrBadSignature)
	}
	id, err := ids.Parse(j.NodeID)
	if err != nil {
		return nil, fmt.Errorf("enrollment request: node id: %w", err)
	}
	if want := NodeIDFromPublicKey(pub); id != want {
		return nil, fmt.Errorf("enrollment request: node id %s is not the id of its key (%s)", id.Short(), want.Short())
	}
	if err := ValidateAddr(j.Listen); err != nil {
		return nil, fmt.Errorf("enrollment request: listen %w", err)
	}
	return &Request{PublicKey: pub, NodeID: id, Listen: j.Listen, Created: j.Created}, nil
}

// Response is what the CA hands back to an enrolled node: its certificate and everything else a
// node of the ring needs. It contains the ring's convergence secret, so the file must travel
// privately (it is written with mode 0600).
type Response struct {
	Cert           *x509.Certificate
	CA             *x509.Certificate
	Descriptor     []byte // signed, byte for byte as the CA wrote it
	Revocations    []byte // signed
	ConvergenceKey ConvergenceKey
}

type responseJSON struct {
	Version        int    `json:"version"`
	Certificate    string `json:"certificate"`    // PEM
	CACertificate  string `json:"ca_certificate"` // PEM
	Descriptor     []byte `json:"descriptor"`     // base64 of the signed file, so no re-encoding
	Revocations    []byte `json:"revocations"`    // touches the signed bytes
	ConvergenceKey string `json:"convergence_key"`
}

const responseVersion = 1

// Marshal encodes the response for the file that "ring enroll" writes.
func (r *Response) Marshal() ([]byte, error) {
	return marshalIndent(responseJSON{
		Version:        responseVersion,
		Certificate:    string(encodeCert(r.Cert.Raw)),
		CACertificate:  string(encodeCert(r.CA.Raw)),
		Descriptor:     r.Descriptor,
		Revocations:    r.Revocations,
		ConvergenceKey: hex.EncodeToString(r.ConvergenceKey[:]),
	})
}

// ParseResponse decodes a response file. It checks only the shape; Accept verifies the contents
// against each other and against the node's key.
func ParseResponse(data []byte) (*Response, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("enrollment response: larger than %d bytes", maxFileSize)
	}
	var j responseJSON
	if err := decodeStrict(data, &j); err != nil {
		return nil, fmt.Errorf("enrollment response: %w", err)
	}
	if j.Version != responseVersion {
		return nil, fmt.Errorf("enrollment response: format version %d, want %d", j.Version, responseVersion)
	}
	cert, err := decodeCert([]byte(j.Certificate))
	if err != nil {
		return nil, fmt.Errorf("enrollment response: certificate: %w", err)
	}
	ca, err := decodeCert([]byte(j.CACertificate))
	if err != nil {
		return nil, fmt.Errorf("enrollment response: CA certificate: %w", err)
	}
	conv, err := decodeConvergenceKey([]byte(j.ConvergenceKey))
	if err != nil {
		return nil, fmt.Errorf("enrollment response: %w", err)
	}
	return &Response{Cert: cert, CA: ca, Descriptor: j.Descriptor, Revocations: j.Revocations, ConvergenceKey: conv}, nil
}

// WriteFile writes the response to a new file with mode 0600 (it holds the convergence secret);
// it refuses to overwrite an existing file.
func (r *Response) WriteFile(path string) error {
	data, err := r.Marshal()
	if err != nil {
		return err
	}
	return writeNew(path, data, 0o600)
}
