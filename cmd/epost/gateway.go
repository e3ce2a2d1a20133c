package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"epost/internal/daemon"
	"epost/internal/mailauth"
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
	if err := ringParse(fs, args); err != nil {
		return err
	}
	if err := ringRequire([2]string{"node", *node}, [2]string{"domain", *domain}); err != nil {
		return err
	}
	dir := filepath.Join(*node, daemon.DirGatewayDKIM)
	rec, err := mailauth.NewDKIMKey(dir, *domain, *selector)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Made an Ed25519 DKIM key in %s.\nPublish this record, then restart the gateway; it signs the domain's outgoing mail from then on:\n  %s\n", dir, rec)
	return nil
}
