package mailauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DKIM keys of a gateway: DIR/DOMAIN.SELECTOR.key, one PEM (PKCS #8) key per domain and
// selector, Ed25519 (RFC 8463) or 2048-bit RSA (RFC 6376; what every verifier knows). The
// public half is published as SELECTOR._domainkey.DOMAIN TXT.

// DKIM signing algorithms.
const (
	Ed25519SHA256 = "ed25519-sha256"
	RSASHA256     = "rsa-sha256"
)

// NewDKIMKey makes an Ed25519 key for domain and selector in dir (mode 0600, never
// overwriting one) and returns the TXT record to publish.
func NewDKIMKey(dir, domain, selector string) (record string, err error) {
	return NewDKIMKeyAlg(dir, domain, selector, Ed25519SHA256)
}

// NewDKIMKeyAlg is NewDKIMKey for algorithm alg (Ed25519SHA256 or RSASHA256).
func NewDKIMKeyAlg(dir, domain, selector, alg string) (record string, err error) {
	if domain == "" || selector == "" || strings.ContainsAny(domain+selector, "/\\ ") {
		return "", fmt.Errorf("mailauth: domain %q and selector %q: want DNS labels", domain, selector)
	}
	var priv any
	var k, p string
	switch alg {
	case Ed25519SHA256:
		pub, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		priv, k, p = ek, "ed25519", base64.StdEncoding.EncodeToString(pub)
	case RSASHA256:
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return "", err
		}
		spki, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
		if err != nil {
			return "", err
		}
		priv, k, p = rk, "rsa", base64.StdEncoding.EncodeToString(spki)
	default:
		return "", fmt.Errorf("mailauth: DKIM algorithm %q: want %s or %s", alg, Ed25519SHA256, RSASHA256)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, strings.ToLower(domain)+"."+selector+".key")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("mailauth: %w (a key is never replaced: remove it first if you mean to)", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s._domainkey.%s. TXT %q", selector, strings.ToLower(domain), "v=DKIM1; k="+k+"; p="+p), nil
}

// LoadDKIMKeys reads the keys in dir: domain -> the options to sign its mail with (the first
// selector in name order when a domain has several). A missing dir is no keys.
func LoadDKIMKeys(dir string) (map[string]SignOptions, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]SignOptions{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(name, '.')
		if i <= 0 {
			continue
		}
		domain, selector := name[:i], name[i+1:]
		if _, have := out[domain]; have {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(data)
		if blk == nil {
			return nil, fmt.Errorf("mailauth: %s: not PEM", e.Name())
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("mailauth: %s: %w", e.Name(), err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("mailauth: %s: not a signing key", e.Name())
		}
		out[domain] = SignOptions{Domain: domain, Selector: selector, Key: signer}
	}
	return out, nil
}
