package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"epost/internal/ring"
)

var ringTestNow = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

// ringRun runs one of this file's commands with a fixed clock and returns its output.
func ringRun(t *testing.T, cmd func([]string, *bytes.Buffer) error, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := cmd(args, &out)
	return out.String(), err
}

func cmdRingInit(a []string, o *bytes.Buffer) error    { return ringInit(a, o, ringTestNow) }
func cmdRingEnroll(a []string, o *bytes.Buffer) error  { return ringEnroll(a, o, ringTestNow) }
func cmdRingRevoke(a []string, o *bytes.Buffer) error  { return ringRevoke(a, o, ringTestNow) }
func cmdNodeInit(a []string, o *bytes.Buffer) error    { return nodeInit(a, o, ringTestNow) }
func cmdNodeRequest(a []string, o *bytes.Buffer) error { return nodeRequest(a, o, ringTestNow) }
func cmdNodeAccept(a []string, o *bytes.Buffer) error  { return nodeAccept(a, o, ringTestNow) }

func TestRingCommandsRegistered(t *testing.T) {
	for _, name := range []string{"ring init", "ring enroll", "ring revoke", "ring dns", "node init", "node request", "node accept"} {
		if _, ok := commands[name]; !ok {
			t.Errorf("%q not registered", name)
		}
	}
}

func TestRingInitFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // substring of the error
	}{
		{"no dir", []string{"--name", "a", "--domain", "a.example"}, "--dir is required"},
		{"no name", []string{"--domain", "a.example"}, "--name is required"},
		{"no domain", []string{"--name", "a"}, "at least one mail domain"},
		{"bad domain", []string{"--name", "a", "--domain", "a_b.example"}, "only a-z"},
		{"k < 1", []string{"--name", "a", "--domain", "a.example", "--replicas", "0"}, "replicas 0"},
		{"m > n", []string{"--name", "a", "--domain", "a.example", "--fragments", "4/5"}, "1 <= m <= n <= 256"},
		{"n > 256", []string{"--name", "a", "--domain", "a.example", "--fragments", "300/5"}, "1 <= m <= n <= 256"},
		{"fragments syntax", []string{"--name", "a", "--domain", "a.example", "--fragments", "48"}, "want N/M"},
		{"leafset odd", []string{"--name", "a", "--domain", "a.example", "--leafset", "23"}, "even"},
		{"leafset small", []string{"--name", "a", "--domain", "a.example", "--leafset", "2", "--replicas", "1"}, "between 4 and 256"},
		{"bootstrap", []string{"--name", "a", "--domain", "a.example", "--bootstrap", "host-without-port"}, "HOST:PORT"},
		{"stray argument", []string{"--name", "a", "--domain", "a.example", "extra"}, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ring")
			args := tc.args
			if tc.name != "no dir" {
				args = append([]string{"--dir", dir}, args...)
			}
			_, err := ringRun(t, cmdRingInit, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, ring.FileCAKey)); err == nil {
				t.Fatal("a CA key was written despite the error")
			}
		})
	}
}

func TestRingInitAndLocalNodeInit(t *testing.T) {
	base := t.TempDir()
	ringDir := filepath.Join(base, "ring")
	out, err := ringRun(t, cmdRingInit, "--dir", ringDir, "--name", "acme", "--domain", "acme.example,Mail.Acme.Example",
		"--replicas", "4", "--fragments", "32/8", "--leafset", "16", "--bootstrap", "127.0.0.1:7001")
	if err != nil {
		t.Fatal(err)
	}
	// The printed next step is a command that works as printed.
	next := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "epost node init") {
			next = strings.TrimSpace(l)
			break
		}
	}
	if next == "" {
		t.Fatalf("no next step in output:\n%s", out)
	}
	args := strings.Fields(next)[3:]
	if _, err := ringRun(t, cmdNodeInit, args...); err != nil {
		t.Fatalf("%s: %v", next, err)
	}
	// ring dns prints one record per domain, as ring init did, naming the ring's id; the node
	// directory gives the same answer.
	for _, dir := range []string{ringDir, filepath.Join(base, "node1")} {
		dns, err := ringRun(t, func(a []string, o *bytes.Buffer) error { return ringDNS(a, o) }, "--dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(dns), "\n")
		if len(lines) != 2 || !strings.Contains(out, lines[0]) || !strings.HasPrefix(lines[1], "_epost.mail.acme.example. TXT ") {
			t.Fatalf("ring dns --dir %s:\n%s\nring init said:\n%s", dir, dns, out)
		}
		val, err := strconv.Unquote(strings.TrimPrefix(lines[0], "_epost.acme.example. TXT "))
		if err != nil {
			t.Fatal(err)
		}
		r, err := ring.LoadRing(ringDir)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := ring.ParseDNSRecords([]string{val}); err != nil || id != r.Descriptor.RingID {
			t.Fatalf("record %q names %s (%v), ring id %s", val, id.Short(), err, r.Descriptor.RingID.Short())
		}
	}
	// --gateway puts the role in the certificate; without it there is none.
	if _, err := ringRun(t, cmdNodeInit, "--ring", ringDir, "--dir", filepath.Join(base, "gw"), "--listen", "127.0.0.1:7100", "--gateway"); err != nil {
		t.Fatal(err)
	}
	gw, err := ring.LoadNode(filepath.Join(base, "gw"))
	if err != nil {
		t.Fatal(err)
	}
	if !ring.HasRole(gw.Cert, ring.RoleGateway) {
		t.Fatalf("node init --gateway: roles %v", ring.NodeRoles(gw.Cert))
	}
	n, err := ring.LoadNode(filepath.Join(base, "node1"))
	if err != nil {
		t.Fatal(err)
	}
	d := n.Descriptor
	if d.Replicas != 4 || d.FragmentsTotal != 32 || d.FragmentsNeeded != 8 || d.LeafSet != 16 ||
		strings.Join(d.Domains, ",") != "acme.example,mail.acme.example" {
		t.Fatalf("descriptor %+v", d)
	}
	if n.Config.Listen != "127.0.0.1:7001" {
		t.Fatalf("listen %q", n.Config.Listen)
	}
	if _, err := ringRun(t, cmdRingInit, "--dir", ringDir, "--name", "acme", "--domain", "acme.example"); !errors.Is(err, ring.ErrRingExists) {
		t.Fatalf("second ring init: %v", err)
	}

	// An expired certificate for tests of peers refusing it: installed, with a warning.
	out, err = ringRun(t, cmdNodeInit, "--ring", ringDir, "--dir", filepath.Join(base, "old"), "--listen", "127.0.0.1:7009",
		"--imap", "", "--smtp", "", "--pop3", "",
		"--not-before", "2030-01-01T00:00:00Z", "--not-after", "2030-02-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "WARNING: peers will refuse this node") {
		t.Fatalf("no warning for an expired certificate:\n%s", out)
	}
	old, err := ring.LoadNode(filepath.Join(base, "old"))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.CheckOwnCert(ringTestNow); !errors.Is(err, ring.ErrExpired) {
		t.Fatalf("expired node: %v", err)
	}
	if old.Config.IMAP != "" || old.Config.SMTP != "" || old.Config.POP3 != "" {
		t.Fatalf("mail servers not disabled: %+v", old.Config)
	}
	if _, err := ringRun(t, cmdNodeInit, "--ring", ringDir, "--dir", filepath.Join(base, "x"), "--listen", "127.0.0.1:1", "--valid-for", "-1h"); err == nil {
		t.Fatal("negative --valid-for accepted")
	}
}

func TestRemoteEnrollmentAndRevocation(t *testing.T) {
	base := t.TempDir()
	ringDir := filepath.Join(base, "ring")
	nodeDir := filepath.Join(base, "node")
	if _, err := ringRun(t, cmdRingInit, "--dir", ringDir, "--name", "acme", "--domain", "acme.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := ringRun(t, cmdNodeRequest, "--dir", nodeDir, "--listen", "192.0.2.1:7002", "--bootstrap", "192.0.2.2:7001"); err != nil {
		t.Fatal(err)
	}
	reqFile := filepath.Join(nodeDir, ring.FileNodeRequest)
	respFile := filepath.Join(base, "response.json")
	if _, err := ringRun(t, cmdRingEnroll, "--dir", ringDir, "--request", reqFile, "--out", respFile, "--valid-for", "720h"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(respFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("response file: %v %v", fi.Mode(), err)
	}
	if _, err := ringRun(t, cmdRingEnroll, "--dir", ringDir, "--request", reqFile, "--out", respFile); err == nil {
		t.Fatal("response file overwritten")
	}
	if _, err := ringRun(t, cmdNodeAccept, "--dir", nodeDir, "--response", respFile, "--ca-fingerprint", strings.Repeat("00", 32)); err == nil ||
		!strings.Contains(err.Error(), "not your ring's CA") {
		t.Fatalf("wrong fingerprint: %v", err)
	}
	r, err := ring.LoadRing(ringDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ringRun(t, cmdNodeAccept, "--dir", nodeDir, "--response", respFile, "--ca-fingerprint", ring.Fingerprint(r.CA)); err != nil {
		t.Fatal(err)
	}
	n, err := ring.LoadNode(nodeDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Cert.NotAfter.Sub(ringTestNow); got != 720*time.Hour {
		t.Fatalf("validity %v", got)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, ring.FileCAKey)); err == nil {
		t.Fatal("node has the CA key")
	}

	// Revoke it by node id; a node that gets the new list refuses it.
	if _, err := ringRun(t, cmdRingRevoke, "--dir", ringDir, "--node-id", n.ID.String(), "--reason", "test"); err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile(filepath.Join(ringDir, ring.FileRevocations))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := n.Trust.UpdateRevocations(list); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	if _, err := n.Trust.VerifyPeer(n.Cert, ringTestNow); !errors.Is(err, ring.ErrRevoked) {
		t.Fatalf("revoked node: %v", err)
	}
	out, err := ringRun(t, cmdRingRevoke, "--dir", ringDir, "--serial", "0x2a")
	if err != nil || !strings.Contains(out, "version 3") {
		t.Fatalf("revoke serial: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"--dir", ringDir},
		{"--dir", ringDir, "--serial", "1", "--node-id", n.ID.String()},
		{"--dir", ringDir, "--node-id", "abc"},
		{"--dir", ringDir, "--serial", "-3"},
	} {
		if _, err := ringRun(t, cmdRingRevoke, args...); err == nil {
			t.Errorf("ring revoke %q accepted", args)
		}
	}
}
