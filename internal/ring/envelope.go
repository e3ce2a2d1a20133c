package ring

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrBadSignature is returned when a signed document's signature does not verify.
var ErrBadSignature = errors.New("ring: bad signature")

// envelope is the on-disk and on-wire form of every signed document of this package:
//
//	{"type": "ring-descriptor", "body": "<base64 JSON>", "sig": "<base64 Ed25519 signature>"}
//
// The body travels as opaque bytes so that the signature is checked over exactly the bytes that
// were signed, never over a re-encoding (JSON has more than one spelling of the same value).
type envelope struct {
	Type string `json:"type"`
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// Document types; each is part of the signed bytes, so a signature over one kind of document
// can never be replayed as another (a descriptor as a revocation list, say).
const (
	typeDescriptor  = "ring-descriptor"
	typeRevocations = "ring-revocations"
	typeRequest     = "node-request"
)

// signedMessage is what the key actually signs: a fixed prefix, the type and the body.
func signedMessage(typ string, body []byte) []byte {
	m := make([]byte, 0, len("epost-signed-v1\x00")+len(typ)+1+len(body))
	m = append(m, "epost-signed-v1\x00"...)
	m = append(m, typ...)
	m = append(m, 0)
	return append(m, body...)
}

// Sign encodes v as JSON and wraps it in a signed envelope of the given type. Other packages use
// it for CA-signed records (user certificates, say) so that every signed document of the ring
// has one format.
func Sign(key ed25519.PrivateKey, typ string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", typ, err)
	}
	env := envelope{Type: typ, Body: body, Sig: ed25519.Sign(key, signedMessage(typ, body))}
	return marshalIndent(env)
}

// Open checks the envelope's type and signature under pub and returns the signed body. The body
// must then be decoded with decodeStrict (or json.Unmarshal by callers outside this package).
func Open(pub ed25519.PublicKey, typ string, data []byte) ([]byte, error) {
	env, err := parseEnvelope(typ, data)
	if err != nil {
		return nil, err
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, signedMessage(typ, env.Body), env.Sig) {
		return nil, fmt.Errorf("%w on %s", ErrBadSignature, typ)
	}
	return env.Body, nil
}

// parseEnvelope decodes an envelope without checking its signature (for a node request, whose
// key is inside the body).
func parseEnvelope(typ string, data []byte) (*envelope, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", typ, len(data), maxFileSize)
	}
	var env envelope
	if err := decodeStrict(data, &env); err != nil {
		return nil, fmt.Errorf("%s: not a signed envelope: %w", typ, err)
	}
	if env.Type != typ {
		return nil, fmt.Errorf("%w: document is a %q, want %q", ErrBadSignature, env.Type, typ)
	}
	if len(env.Sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w on %s: signature is %d bytes", ErrBadSignature, typ, len(env.Sig))
	}
	return &env, nil
}

// decodeStrict decodes exactly one JSON value and rejects unknown fields: a signed document with
// fields this version does not understand must not be half-understood.
func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
