package mailauth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
)

const msg = "From: Alice <alice@sender.example>\r\nTo: bob@acme.example\r\nSubject: hello\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.example>\r\n\r\nHello Bob.\r\n"

func setup(t *testing.T) (*Checker, *dnstest.Server, ed25519.PrivateKey) {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	pub, key, _ := ed25519.GenerateKey(nil)
	srv.SetTXT("sender.example", time.Hour, "v=spf1 ip4:127.0.0.2 -all")
	srv.SetTXT("sel._domainkey.sender.example", time.Hour, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	srv.SetTXT("_dmarc.sender.example", time.Hour, "v=DMARC1; p=reject; sp=quarantine")
	return &Checker{Resolver: &dnsres.Resolver{Server: srv.Addr, Timeout: time.Second}}, srv, key
}

func TestChecks(t *testing.T) {
	c, srv, key := setup(t)
	ctx := context.Background()
	signed, err := Sign([]byte(msg), SignOptions{Domain: "sender.example", Selector: "sel", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	good, bad := net.ParseIP("127.0.0.2"), net.ParseIP("127.0.0.9")

	// Signed and from the right address: everything passes.
	r := c.Check(ctx, good, "mx.sender.example", "alice@sender.example", signed)
	if r.SPF != spf.Pass || len(r.DKIM) != 1 || r.DKIM[0].Result != Pass || r.DMARC != Pass || r.Reject() {
		t.Fatalf("all good: %+v", r)
	}
	h := r.Header("gw1.acme.example")
	for _, want := range []string{"Authentication-Results: gw1.acme.example;", "spf=pass", "dkim=pass", "header.d=sender.example", "dmarc=pass", "header.from=sender.example"} {
		if !strings.Contains(h, want) {
			t.Fatalf("header %q lacks %q", h, want)
		}
	}

	// From another address but signed: SPF fails, DKIM aligned passes DMARC.
	if r := c.Check(ctx, bad, "x", "alice@sender.example", signed); r.SPF != spf.Fail || r.DMARC != Pass {
		t.Fatalf("SPF fail, DKIM pass: %+v", r)
	}
	// Unsigned from another address: DMARC fails and p=reject asks to reject.
	if r := c.Check(ctx, bad, "x", "alice@sender.example", []byte(msg)); r.DMARC != Fail || !r.Reject() || r.DMARCPolicy != dmarc.PolicyReject {
		t.Fatalf("forgery: %+v", r)
	}
	// Changed after signing: the signature fails, and so does DMARC.
	tampered := strings.Replace(string(signed), "Hello Bob.", "Send money.", 1)
	if r := c.Check(ctx, bad, "x", "alice@sender.example", []byte(tampered)); r.DKIM[0].Result != Fail || r.DMARC != Fail {
		t.Fatalf("tampered: %+v", r)
	}
	// Envelope sender of another domain that passes its own SPF: not aligned with From.
	srv.SetTXT("bulk.example", time.Hour, "v=spf1 ip4:127.0.0.9 -all")
	if r := c.Check(ctx, bad, "x", "bounce@bulk.example", []byte(msg)); r.SPF != spf.Pass || r.DMARC != Fail {
		t.Fatalf("unaligned SPF pass: %+v", r)
	}
	// A subdomain takes sp= (quarantine).
	sub := strings.Replace(msg, "alice@sender.example", "alice@news.sender.example", 1)
	if r := c.Check(ctx, bad, "x", "alice@news.sender.example", []byte(sub)); r.DMARC != Fail || !r.Quarantine() {
		t.Fatalf("subdomain: %+v", r)
	}
	// No DMARC record: none; DNS failing: temperror.
	other := strings.Replace(msg, "alice@sender.example", "alice@nopolicy.example", 1)
	if r := c.Check(ctx, bad, "x", "alice@nopolicy.example", []byte(other)); r.DMARC != None || r.Reject() {
		t.Fatalf("no policy: %+v", r)
	}
	srv.Fail("_dmarc.sender.example", 2) // SERVFAIL
	if r := c.Check(ctx, bad, "x", "alice@sender.example", []byte(msg)); r.DMARC != TempError || r.Reject() {
		t.Fatalf("DNS failing: %+v", r)
	}
	// A From field that cannot be evaluated is refused, or a forger could dodge p=reject by
	// breaking it: two From fields, none, or a malformed line hiding the one there is.
	for name, m := range map[string]string{
		"two From fields": "From: a@sender.example\r\nFrom: b@sender.example\r\n\r\nx\r\n",
		"no From field":   "Subject: x\r\n\r\nx\r\n",
		"a line hides it": "Subject: x\r\nno colon here\r\nFrom: a@sender.example\r\n\r\nx\r\n",
	} {
		if r := c.Check(ctx, bad, "x", "a@sender.example", []byte(m)); r.DMARC != PermError || !r.BadFrom || !r.Reject() {
			t.Fatalf("%s: %+v", name, r)
		}
	}
	// SPF and DKIM both unknown for DNS trouble: DMARC waits (temperror), no refusal.
	srv.Fail("_dmarc.sender.example", 0)
	srv.Fail("sender.example", 2)
	if r := c.Check(ctx, good, "x", "alice@sender.example", []byte(msg)); r.DMARC != TempError || r.Reject() {
		t.Fatalf("SPF temperror, no DKIM: %+v", r)
	}
}

func TestStripAuthResults(t *testing.T) {
	in := "Authentication-Results: gw1.acme.example; dkim=pass header.d=acme.example\r\n" +
		"Received: from x\r\n" +
		"Authentication-Results: other.example;\r\n spf=pass smtp.mailfrom=x@y\r\n" +
		"authentication-results: GW1.ACME.EXAMPLE;\r\n\tdmarc=pass\r\n" +
		"Authentication-Results: gw1.acme.example ; broken((\r\n" +
		"Subject: hi\r\n\r\nAuthentication-Results: gw1.acme.example; body, not header\r\n"
	got := string(StripAuthResults([]byte(in), "gw1.acme.example"))
	want := "Received: from x\r\n" +
		"Authentication-Results: other.example;\r\n spf=pass smtp.mailfrom=x@y\r\n" +
		"Subject: hi\r\n\r\nAuthentication-Results: gw1.acme.example; body, not header\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	// Bare LF line ends (SMTP DATA passes them through) are handled the same way.
	lf := strings.ReplaceAll(in, "\r\n", "\n")
	if got := string(StripAuthResults([]byte(lf), "gw1.acme.example")); got != strings.ReplaceAll(want, "\r\n", "\n") {
		t.Fatalf("LF message: got\n%q", got)
	}
	mixed := "Authentication-Results: gw1.acme.example;\n dkim=pass\r\nFrom: a@b\r\n\r\nbody\r\n"
	if got := string(StripAuthResults([]byte(mixed), "gw1.acme.example")); got != "From: a@b\r\n\r\nbody\r\n" {
		t.Fatalf("mixed line ends: got %q", got)
	}
}

func genEd25519() (ed25519.PublicKey, ed25519.PrivateKey, error) { return ed25519.GenerateKey(nil) }

// A key made by NewDKIMKey signs, and its printed record verifies the signature.
func TestDKIMKeyFiles(t *testing.T) {
	c, srv, _ := setup(t)
	dir := t.TempDir()
	rec, err := NewDKIMKey(dir, "Sender.Example", "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDKIMKey(dir, "sender.example", "gw1"); err == nil {
		t.Fatal("a key was replaced")
	}
	name, value, _ := strings.Cut(rec, " TXT ")
	txt := strings.Trim(value, `"`)
	if name != "gw1._domainkey.sender.example." {
		t.Fatalf("record %q", rec)
	}
	srv.SetTXT(name, time.Hour, txt)
	keys, err := LoadDKIMKeys(dir)
	if err != nil || keys["sender.example"].Selector != "gw1" {
		t.Fatalf("keys: %+v %v", keys, err)
	}
	signed, err := Sign([]byte(msg), keys["sender.example"])
	if err != nil {
		t.Fatal(err)
	}
	r := c.Check(context.Background(), net.ParseIP("127.0.0.9"), "x", "alice@sender.example", signed)
	if len(r.DKIM) != 1 || r.DKIM[0].Result != Pass || r.DMARC != Pass {
		t.Fatalf("signed with the file's key: %+v", r)
	}
	if k, err := LoadDKIMKeys(filepath.Join(dir, "none")); err != nil || len(k) != 0 {
		t.Fatalf("no directory: %v %v", k, err)
	}

	// An RSA key (rsa-sha256) for another domain, in another directory.
	rdir := t.TempDir()
	rrec, err := NewDKIMKeyAlg(rdir, "bulk.example", "r1", RSASHA256)
	if err != nil || !strings.Contains(rrec, "k=rsa; p=") {
		t.Fatalf("rsa key: %q %v", rrec, err)
	}
	rname, rvalue, _ := strings.Cut(rrec, " TXT ")
	srv.SetTXT(rname, time.Hour, strings.Trim(rvalue, `"`))
	srv.SetTXT("_dmarc.bulk.example", time.Hour, "v=DMARC1; p=reject")
	rkeys, err := LoadDKIMKeys(rdir)
	if err != nil {
		t.Fatal(err)
	}
	bulk := strings.ReplaceAll(msg, "alice@sender.example", "news@bulk.example")
	rsigned, err := Sign([]byte(bulk), rkeys["bulk.example"])
	if err != nil || !strings.Contains(string(rsigned), "a=rsa-sha256") {
		t.Fatalf("rsa signature: %v\n%s", err, rsigned)
	}
	r = c.Check(context.Background(), net.ParseIP("127.0.0.9"), "x", "news@bulk.example", rsigned)
	if len(r.DKIM) != 1 || r.DKIM[0].Result != Pass || r.DMARC != Pass {
		t.Fatalf("signed with the RSA key: %+v", r)
	}
	if _, err := NewDKIMKeyAlg(rdir, "x.example", "s", "dsa"); err == nil {
		t.Fatal("an unknown algorithm was accepted")
	}
}
