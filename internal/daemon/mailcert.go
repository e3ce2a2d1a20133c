package daemon

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"epost/internal/ring"
)

// The mail servers' certificate (FileMailCert): self-signed, made by the node on first use,
// and valid for the names mail clients dial. Its CN is a host name and its subject alternative
// names carry localhost, 127.0.0.1, ::1, the machine's name and the hosts the node's mail
// servers listen on. IPv4 addresses are there twice, as IP SANs (RFC 5280) and as DNS SANs:
// fetchmail 6.4, like other older clients, matches the server name only against the DNS SANs
// and the CN (RFC 2595 section 2.4), and refuses 127.0.0.1 otherwise. A certificate the node
// made that lacks one of these names (those of earlier versions had CN "epost mail
// (self-signed)") is made anew at start; a certificate someone else put there is left alone.

// mailCertOrg marks the certificates the node made itself (Subject O).
const mailCertOrg = "epost node (self-signed)"

// legacyMailCertCN is the CN of the certificates earlier versions made.
const legacyMailCertCN = "epost mail (self-signed)"

// mailTLS is the TLS configuration of the node's mail servers, its certificate made or renewed
// for the hosts they listen on.
func (n *Node) mailTLS() (*tls.Config, error) {
	it := n.opts.ImplicitTLS
	cfg, renewed, err := loadOrMakeMailCert(n.opts.Dir, it.IMAP, it.SMTP, it.POP3)
	if err != nil {
		return nil, err
	}
	if renewed != "" {
		n.log.Warn("mail certificate made anew: mail clients that accepted the old one must accept this one once",
			"why", renewed, "certificate", filepath.Join(n.opts.Dir, FileMailCert), "sha256", certFingerprint(cfg))
	}
	return cfg, nil
}

// loadOrMakeMailTLS is the mail certificate's TLS configuration for a caller without a log.
// addrs are further HOST:PORT (or HOST) the certificate must name, beyond those of the node's
// config.
func loadOrMakeMailTLS(dir string, addrs ...string) (*tls.Config, error) {
	cfg, _, err := loadOrMakeMailCert(dir, addrs...)
	return cfg, err
}

// loadOrMakeMailCert loads the node's mail certificate, making a self-signed one (ECDSA P-256,
// ten years) on first use, or anew when the node made it and it lacks a name now wanted
// (renewed then says which). Clients must trust it once; its fingerprint is the certificate
// file's, e.g. openssl x509 -fingerprint -sha256 -in mail-tls.crt.
func loadOrMakeMailCert(dir string, addrs ...string) (cfg *tls.Config, renewed string, err error) {
	certPath, keyPath := filepath.Join(dir, FileMailCert), filepath.Join(dir, FileMailKey)
	names := wantedMailNames(dir, addrs)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := makeMailCert(certPath, keyPath, names); err != nil {
			return nil, "", fmt.Errorf("make the mail servers' certificate: %w", err)
		}
		cert, err = tls.LoadX509KeyPair(certPath, keyPath)
	case err == nil:
		if leaf, perr := x509.ParseCertificate(cert.Certificate[0]); perr == nil && madeByNode(leaf) {
			if missing := names.missing(leaf); len(missing) > 0 {
				renewed = "it lacked " + strings.Join(missing, ", ")
				if err := makeMailCert(certPath, keyPath, names); err != nil {
					return nil, "", fmt.Errorf("make the mail servers' certificate anew (%s): %w", renewed, err)
				}
				cert, err = tls.LoadX509KeyPair(certPath, keyPath)
			}
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("mail servers' certificate %s: %w (delete %s and %s to make a new one)", certPath, err, certPath, keyPath)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, renewed, nil
}

// mailNames are the names a mail certificate carries: CN, DNS SANs, IP SANs. required are the
// ones an existing certificate must have to be kept (the machine's name is not among them: a
// container gets a new one at each start).
type mailNames struct {
	cn       string
	dns      []string
	ips      []net.IP
	required []string
}

// wantedMailNames are the names for the node in dir: the hosts its config's IMAP, SMTP and
// POP3 addresses and addrs listen on (not wildcards), localhost and the loopback addresses,
// and the machine's name. The CN is the first listen host that is a name, else localhost.
func wantedMailNames(dir string, addrs []string) mailNames {
	var cfg ring.NodeConfig
	if data, err := os.ReadFile(filepath.Join(dir, ring.FileNodeConfig)); err == nil {
		_ = json.Unmarshal(data, &cfg) // a bad config fails the node's start elsewhere
	}
	var w mailNames
	addDNS := func(name string, required bool) {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if name == "" {
			return
		}
		if !slices.Contains(w.dns, name) {
			w.dns = append(w.dns, name)
		}
		if required && !slices.Contains(w.required, name) {
			w.required = append(w.required, name)
		}
	}
	addIP := func(ip net.IP) {
		if !slices.ContainsFunc(w.ips, ip.Equal) {
			w.ips = append(w.ips, ip)
		}
		if ip.To4() != nil { // "::1" is no DNS name: strict parsers refuse it as a DNS SAN
			addDNS(ip.String(), true)
		}
	}
	for _, a := range append([]string{cfg.IMAP, cfg.SMTP, cfg.POP3}, addrs...) {
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil {
			if !ip.IsUnspecified() {
				addIP(ip)
			}
			continue
		}
		if w.cn == "" {
			w.cn = strings.ToLower(host)
		}
		addDNS(host, true)
	}
	w.cn = cmp.Or(w.cn, "localhost")
	addDNS("localhost", true)
	addIP(net.IPv4(127, 0, 0, 1).To4())
	addIP(net.IPv6loopback)
	if h, err := os.Hostname(); err == nil {
		addDNS(h, false)
	}
	return w
}

// missing lists what cert lacks of w: a CN that is one of its host names, and the required
// names as DNS SANs (and addresses as IP SANs).
func (w mailNames) missing(cert *x509.Certificate) []string {
	var out []string
	if !slices.Contains(cert.DNSNames, cert.Subject.CommonName) {
		out = append(out, fmt.Sprintf("a host name as CN (it is %q)", cert.Subject.CommonName))
	}
	for _, name := range w.required {
		if !slices.Contains(cert.DNSNames, name) {
			out = append(out, name)
		}
	}
	for _, ip := range w.ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			out = append(out, ip.String()+" (IP SAN)")
		}
	}
	return out
}

// madeByNode reports whether the node made cert (this version or an earlier one).
func madeByNode(cert *x509.Certificate) bool {
	return slices.Contains(cert.Subject.Organization, mailCertOrg) || cert.Subject.CommonName == legacyMailCertCN
}

func makeMailCert(certPath, keyPath string, names mailNames) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	dns := append([]string{names.cn}, slices.DeleteFunc(slices.Clone(names.dns), func(s string) bool { return s == names.cn })...)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names.cn, Organization: []string{mailCertOrg}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  names.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	// Key first: a certificate without its key would be unusable. (When a certificate is
	// made anew, a crash between the two leaves a pair that does not match: the next start
	// says which files to delete.)
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// certFingerprint is the SHA-256 of the configuration's certificate, in hex.
func certFingerprint(cfg *tls.Config) string {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(cfg.Certificates[0].Certificate[0])
	return hex.EncodeToString(sum[:])
}
