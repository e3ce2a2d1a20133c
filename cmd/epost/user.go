package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"epost/internal/daemon"
	"epost/internal/identity"
	"epost/internal/post"
	"epost/internal/ring"
)

// "epost user add": the user's keys are made here, on the node's machine; the ring CA (whose
// key is in the ring directory) checks the signing request and signs the record. The CA never
// sees a private key (ePOST weakness 6). The node publishes the record when it runs.

func init() {
	register("user add", "create a user on a node: keys made there, record signed by the ring CA", runUserAdd)
}

func runUserAdd(args []string) error { return userAdd(args, os.Stdout, time.Now()) }

func userAdd(args []string, out io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("user add", flag.ContinueOnError)
	ringDir := fs.String("ring", "", "ring directory made by \"epost ring init\" (holds the CA key)")
	nodeDir := fs.String("node", "", "node directory of the user's own node")
	address := fs.String("address", "", "the user's mail address, in one of the ring's domains")
	pwFile := fs.String("password-file", "", "file holding the password (first line); default: generate one and print it")
	validity := fs.Duration("validity", 365*24*time.Hour, "how long the user's record is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *ringDir == "" || *nodeDir == "" || *address == "" {
		return errors.New("--ring, --node and --address are required")
	}
	r, err := ring.LoadRing(*ringDir)
	if err != nil {
		return err
	}
	node, err := ring.LoadNode(*nodeDir)
	if err != nil {
		return err
	}
	if node.Descriptor.RingID != r.Descriptor.RingID {
		return fmt.Errorf("node %s belongs to ring %q, not %q", *nodeDir, node.Descriptor.Name, r.Descriptor.Name)
	}
	addr, err := identity.NormalizeAddress(*address)
	if err != nil {
		return err
	}
	if _, err := os.Stat(post.UserDir(*nodeDir, addr)); err == nil {
		return fmt.Errorf("%w: %s", post.ErrUserExists, post.UserDir(*nodeDir, addr))
	}
	var password []byte
	generated := false
	if *pwFile != "" {
		data, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = []byte(strings.TrimRight(strings.SplitN(string(data), "\n", 2)[0], "\r"))
		if len(password) < 8 {
			return fmt.Errorf("the password in %s is shorter than 8 characters; choose a longer one", *pwFile)
		}
	} else {
		var b [15]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		password = []byte(strings.ToLower(base32.StdEncoding.EncodeToString(b[:])))
		generated = true
	}

	// On the node: keys and the signing request with proof of possession.
	keys, err := identity.NewKeys(nil)
	if err != nil {
		return err
	}
	req, err := identity.NewRequest(keys, node.Descriptor.RingID, addr, now)
	if err != nil {
		return err
	}
	// On the CA side: the request crosses as bytes, as it would between machines.
	dreq, err := identity.DecodeSignedRequest(req.Encode())
	if err != nil {
		return err
	}
	caKey, err := r.CAKey()
	if err != nil {
		return err
	}
	sr, rec, err := post.IssueRecord(r.Dir, caKey, r.Descriptor.RingID, r.Descriptor.HasDomain, dreq, now, *validity)
	clear(caKey)
	if err != nil {
		return err
	}
	// Back on the node: check what the CA returned before keeping it.
	caPub, ok := r.CA.PublicKey.(ed25519.PublicKey)
	if !ok {
		return errors.New("the ring CA certificate has no Ed25519 key")
	}
	got, err := sr.Verify(caPub, now, r.Trust.IsRecordRevoked)
	if err != nil || !got.Keys.Equal(keys.Public()) || got.Address != addr {
		return fmt.Errorf("the CA returned a record that does not match the request: %v", err)
	}
	sealed, err := identity.SealPrivate(keys, addr, password, nil, identity.DefaultSealOptions)
	if err != nil {
		return err
	}
	if err := post.SaveUser(*nodeDir, addr, sealed, sr); err != nil {
		return err
	}
	fmt.Fprintf(out, "user %s created on node %s (record serial %d, valid until %s)\n", addr, node.ID.Short(), rec.Serial, rec.NotAfter.Format(time.RFC3339))
	if generated {
		fmt.Fprintf(out, "password: %s\n(keep it: it unlocks the user's keys and is not stored anywhere)\n", password)
	}
	fmt.Fprintln(out, "mail client settings:")
	fmt.Fprintf(out, "  user name: %s\n", addr)
	fmt.Fprintf(out, "  IMAP: %s (STARTTLS)\n  SMTP: %s (submission, STARTTLS, AUTH PLAIN)\n  POP3: %s (STLS)\n", orOff(node.Config.IMAP), orOff(node.Config.SMTP), orOff(node.Config.POP3))
	fmt.Fprintf(out, "(re)start the node (epost node run --dir %s) to serve them: it publishes the user's record,\n"+
		"makes itself a TLS certificate (%s, accept it once in the mail client) and accepts\n"+
		"clear-text logins only from this machine; the user's keys open at the first login\n",
		*nodeDir, filepath.Join(*nodeDir, daemon.FileMailCert))
	return nil
}

func orOff(a string) string {
	if a == "" {
		return "off"
	}
	return a
}
