package ring

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names inside a ring directory and a node directory. The names are part of the on-disk
// contract (tests, scripts and the README refer to them), so they never change.
const (
	FileCAKey          = "ca.key"           // ring dir only, 0600: never leaves the CA machine
	FileCACert         = "ca.crt"           // ring and node dir
	FileDescriptor     = "ring.json"        // ring and node dir: signed descriptor
	FileRevocations    = "revocations.json" // ring and node dir: signed revocation list
	FileConvergenceKey = "convergence.key"  // ring and node dir, 0600: POST's convergent-encryption secret
	FileIssued         = "issued.jsonl"     // ring dir only: one line per certificate issued
	FileNodeKey        = "node.key"         // node dir, 0600
	FileNodeCert       = "node.crt"         // node dir
	FileNodeConfig     = "config.json"      // node dir
	FileNodeRequest    = "request.json"     // node dir: default output of "node request"
	DirNodeData        = "data"             // node dir: default data directory
)

// maxFileSize bounds every file this package reads: all of them are small, and a bigger one is
// a mistake or an attack, not something to load into memory.
const maxFileSize = 1 << 20

// readSmall reads a file of at most maxFileSize bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	return b, nil
}

// writeNew creates path with the given mode and contents, failing if it already exists: keys
// and certificates are never silently replaced. The data is synced before returning so that a
// crash right after enrollment does not leave an empty key file behind.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// writeReplace atomically replaces path (temporary file, sync, rename), for files that change
// over a ring's life such as the revocation list: readers see the old or the new list, never a
// torn one.
func writeReplace(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// fileSet writes several new files as one step: if any write fails, the files written so far
// are removed, so a failed init can simply be retried.
type fileSet struct {
	written []string
}

func (s *fileSet) write(path string, data []byte, perm fs.FileMode) error {
	if err := writeNew(path, data, perm); err != nil {
		return err
	}
	s.written = append(s.written, path)
	return nil
}

func (s *fileSet) undo() {
	for _, p := range s.written {
		os.Remove(p)
	}
}

// exists reports whether any of the named files exists in dir, returning the first one found.
func exists(dir string, names ...string) (string, bool) {
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return n, true
		}
	}
	return "", false
}

// PEM block types.
const (
	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY" // PKCS #8, what crypto/tls and openssl expect
)

func encodeKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemKey, Bytes: der}), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

// decodeKey reads an Ed25519 private key in PKCS #8 PEM.
func decodeKey(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != pemKey {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want Ed25519", k)
	}
	return ek, nil
}

// decodeCert reads one PEM certificate.
func decodeCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != pemCert {
		return nil, errors.New("not a PEM \"CERTIFICATE\" block")
	}
	return x509.ParseCertificate(b.Bytes)
}

func loadKey(path string) (ed25519.PrivateKey, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	k, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func loadCert(path string) (*x509.Certificate, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	c, err := decodeCert(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ConvergenceKey is a ring's convergence secret: the key of POST's keyed convergent encryption
// (content.Secret(k) converts it), so that identical content is stored once inside a ring while
// outsiders cannot confirm guesses. Every node of the ring holds it; the descriptor never does.
type ConvergenceKey [32]byte

func encodeConvergenceKey(k ConvergenceKey) []byte { return []byte(hex.EncodeToString(k[:]) + "\n") }

func decodeConvergenceKey(data []byte) (ConvergenceKey, error) {
	var k ConvergenceKey
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("convergence key: want %d hex-encoded bytes", len(k))
	}
	copy(k[:], b)
	return k, nil
}

func loadConvergenceKey(path string) (ConvergenceKey, error) {
	data, err := readSmall(path)
	if err != nil {
		return ConvergenceKey{}, err
	}
	k, err := decodeConvergenceKey(data)
	if err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// marshalIndent is json.MarshalIndent with a final newline, for files people read.
func marshalIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
