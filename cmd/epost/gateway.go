package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"epost/internal/daemon"
	"epost/internal/mailauth"
	"epost/internal/ring"
)

func init() {
	register("gateway dkim", "make a DKIM key on a gateway node for a mail domain; prints the DNS record to publish", runGatewayDKIM)
}

func runGatewayDKIM(args []string) error { return gatewayDKIM(args, os.Stdout) }

func gatewayDKIM(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gateway dkim", flag.ContinueOnError)
	node := fs.String("node", "", "the gateway's node directory")
	domain := fs.String("domain", "", "the mail domain whose outgoing mail the key signs (one of the ring's)")
	selector := fs.String("selector", "epost", "the DKIM selector (the record's name is SELECTOR._domainkey.DOMAIN)")
	alg := fs.String("algorithm", mailauth.Ed25519SHA256, "ed25519-sha256 (RFC 8463, short keys) or rsa-sha256 (2048 bits, what every verifier knows)")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"node", *node}, [2]string{"domain", *domain}); err != nil {
		return err
	}
	dir := filepath.Join(*node, daemon.DirGatewayDKIM)
	rec, err := mailauth.NewDKIMKeyAlg(dir, *domain, *selector, *alg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Made a %s DKIM key in %s.\nPublish this record, then restart the gateway; it signs the domain's outgoing mail from then on:\n  %s\n", *alg, dir, rec)
	return nil
}

func init() {
	register("gateway identity", "give a gateway node its POST identity (it files inbound internet mail as it)", runGatewayIdentity)
	register("ring policy", "set the ring's gateway accept policy (policy.json, signed by the CA) and print it", runRingPolicy)
}

func runGatewayIdentity(args []string) error { return gatewayIdentity(args, os.Stdout, time.Now()) }

func gatewayIdentity(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("gateway identity", flag.ContinueOnError)
	ringDir := fs.String("ring", "", "ring directory (holds the CA key, which signs the identity's record)")
	node := fs.String("node", "", "the gateway's node directory")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"ring", *ringDir}, [2]string{"node", *node}); err != nil {
		return err
	}
	addr, err := makeGatewayIdentity(*ringDir, *node, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Gateway identity %s made on %s (%s, 0600).\nRestart the gateway with --mx to file inbound internet mail as it.\n", addr, *node, filepath.Join(*node, daemon.FileGatewayIdentity))
	return nil
}

// makeGatewayIdentity makes the POST identity of a gateway node: a ring user
// gateway-<node id prefix>@<the ring's first domain>, its record signed by the CA, its keys
// sealed under a random password kept in the node directory (the gateway opens them
// unattended). One per gateway, since a POST log has one writer.
func makeGatewayIdentity(ringDir, nodeDir string, now time.Time) (string, error) {
	n, err := ring.LoadNode(nodeDir)
	if err != nil {
		return "", err
	}
	if !ring.HasRole(n.Cert, ring.RoleGateway) {
		return "", fmt.Errorf("node %s is not a gateway (its certificate has no gateway role)", nodeDir)
	}
	if len(n.Descriptor.Domains) == 0 {
		return "", fmt.Errorf("ring %q has no mail domain for the gateway's address", n.Descriptor.Name)
	}
	if gi, err := daemon.LoadGatewayIdentity(nodeDir); err == nil {
		return "", fmt.Errorf("node %s already has the gateway identity %s", nodeDir, gi.Address)
	}
	addr := "gateway-" + n.ID.String()[:8] + "@" + n.Descriptor.Domains[0]
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	pw := strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
	tmp, err := os.CreateTemp("", "epost-gw-pw-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(pw + "\n"); err != nil {
		tmp.Close()
		return "", err
	}
	tmp.Close()
	if err := userAdd([]string{"--ring", ringDir, "--node", nodeDir, "--address", addr, "--password-file", tmp.Name()}, io.Discard, now); err != nil {
		return "", err
	}
	return addr, daemon.SaveGatewayIdentity(nodeDir, daemon.GatewayIdentity{Address: addr, Password: pw})
}

func runRingPolicy(args []string) error { return ringPolicy(args, os.Stdout, time.Now()) }

// ringPolicy changes fields of the ring's gateway policy, signs it with the CA (version one
// higher) and writes RINGDIR/policy.json; without --set it prints the policy in force.
func ringPolicy(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("ring policy", flag.ContinueOnError)
	ringDir := fs.String("dir", "", "ring directory made by \"epost ring init\"")
	var sets ringListFlag
	fs.Var(&sets, "set", "KEY=VALUE to change (repeat): accept_domains, postmaster, max_message_bytes, max_recipients, dmarc (enforce|report|off), spf_fail (tag|reject), allow, deny (comma-separated addresses, CIDRs, domains), max_conns_per_ip, max_messages_per_ip_per_minute, outbound_deadline, delay_warn")
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"dir", *ringDir}); err != nil {
		return err
	}
	r, err := ring.LoadRing(*ringDir)
	if err != nil {
		return err
	}
	caPub, ok := r.CA.PublicKey.(ed25519.PublicKey)
	if !ok {
		return errors.New("the ring CA certificate has no Ed25519 key")
	}
	p, signed, err := ring.LoadPolicy(*ringDir, caPub, r.Descriptor)
	if err != nil {
		return err
	}
	if len(sets) > 0 {
		for _, kv := range sets {
			if err := p.SetPolicyField(kv); err != nil {
				return err
			}
		}
		p.Version++
		p.Issued = now.UTC().Truncate(time.Second)
		key, err := r.CAKey()
		if err != nil {
			return err
		}
		raw, err := ring.SignPolicy(key, r.Descriptor, p)
		clear(key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*ringDir, ring.FilePolicy), raw, 0o644); err != nil {
			return err
		}
		signed = true
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	state := "signed, " + filepath.Join(*ringDir, ring.FilePolicy)
	if !signed {
		state = "the default: no policy.json yet (set a field with --set to sign one)"
	}
	fmt.Fprintf(out, "Gateway policy of ring %q (%s):\n%s\n", r.Descriptor.Name, state, b)
	if len(sets) > 0 {
		fmt.Fprintf(out, "Copy %s to each gateway's node directory; running gateways pick it up within seconds.\n", ring.FilePolicy)
	}
	return nil
}
