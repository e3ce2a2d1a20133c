package multiring

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
	"epost/internal/ring"
)

func foreignRing(t *testing.T, name string, domains ...string) *ring.Foreign {
	t.Helper()
	r, err := ring.Create(filepath.Join(t.TempDir(), name), ring.DefaultParams(name, domains...), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ring.LoadBundle(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ring.VerifyBundle(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAdmission(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res := &dnsres.Resolver{Server: srv.Addr, Timeout: 300 * time.Millisecond, Tries: 1}

	acme := foreignRing(t, "acme", "acme.example", "mail.acme.example")
	globex := foreignRing(t, "globex", "globex.example")
	impostor := foreignRing(t, "acme", "acme.example") // same name and domain, its own CA
	closed := foreignRing(t, "initech", "initech.example")
	split := foreignRing(t, "split", "a.split.example", "b.split.example")

	for _, f := range []*ring.Foreign{acme, globex} {
		for _, d := range f.Descriptor.Domains {
			srv.SetTXT(ring.DNSName(d), 10*time.Minute, "v=spf1 -all", ring.DNSValue(f.Descriptor.RingID))
		}
	}
	srv.SetTXT("_epost.mail.acme.example", 7*time.Minute, ring.DNSValue(acme.Descriptor.RingID)) // shorter TTL
	srv.SetTXT("_epost.a.split.example", time.Hour, ring.DNSValue(split.Descriptor.RingID))
	srv.SetTXT("_epost.b.split.example", time.Hour, ring.DNSValue(split.Descriptor.RingID), ring.DNSValue(globex.Descriptor.RingID))

	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	a := &Admission{Resolver: res, Now: func() time.Time { return now },
		Trusted: []TrustedRing{{Name: "initech", RingID: closed.Descriptor.RingID, Domains: []string{"INITECH.example"}}}}
	ctx := context.Background()

	tests := []struct {
		name     string
		f        *ring.Foreign
		admitted bool
		reason   string
	}{
		{"every domain confirmed by DNS", acme, true, ""},
		{"another ring", globex, true, ""},
		{"same name and domain, another CA", impostor, false, "names ring " + acme.Descriptor.RingID.Short()},
		{"confirmed by the trust file only", closed, true, ""},
		{"one domain names two rings", split, false, "name two rings"},
	}
	for _, tc := range tests {
		d := a.Check(ctx, tc.f)
		if d.Admitted != tc.admitted || !strings.Contains(d.Reason, tc.reason) || d.Temporary {
			t.Errorf("%s: %v", tc.name, d)
		}
	}
	if d := a.Check(ctx, acme); d.Until != now.Add(7*time.Minute) || d.Confirmed["mail.acme.example"] != "dns" {
		t.Fatalf("acme: until %v (want the smallest TTL, 7 min), confirmed %v", d.Until, d.Confirmed)
	}
	if d := a.Check(ctx, closed); d.Confirmed["initech.example"] != "trust file" || d.Until != now.Add(DefaultMaxTTL) {
		t.Fatalf("initech: %v until %v", d.Confirmed, d.Until)
	}

	// The decision holds until it runs out, then DNS is asked again: acme's record is gone.
	srv.SetTXT("_epost.acme.example", time.Minute)
	asked := srv.Queries()
	now = now.Add(6 * time.Minute)
	if d := a.Check(ctx, acme); !d.Admitted || srv.Queries() != asked {
		t.Fatalf("within its TTL: %v, %d more queries", d, srv.Queries()-asked)
	}
	now = now.Add(2 * time.Minute)
	if d := a.Check(ctx, acme); d.Admitted || !strings.Contains(d.Reason, "no _epost TXT record") || d.Until != now.Add(DefaultMinTTL) {
		t.Fatalf("after its TTL, record gone: %v until %v", d, d.Until)
	}

	// A DNS failure refuses for a short while only, and says so.
	srv.Fail("_epost.globex.example", dns.RcodeServerFailure)
	now = now.Add(time.Hour)
	d := a.Check(ctx, globex)
	if d.Admitted || !d.Temporary || !strings.Contains(d.Reason, "DNS did not answer") || d.Until != now.Add(DefaultRetryAfter) {
		t.Fatalf("SERVFAIL: %v until %v", d, d.Until)
	}
	srv.Fail("_epost.globex.example", 0)
	now = now.Add(DefaultRetryAfter)
	if d := a.Check(ctx, globex); !d.Admitted {
		t.Fatalf("DNS back: %v", d)
	}
	// A TXT record with a TTL below MinTTL is kept MinTTL.
	srv.SetTXT("_epost.globex.example", time.Second, ring.DNSValue(globex.Descriptor.RingID))
	a.Forget(globex.Descriptor.RingID)
	if d := a.Check(ctx, globex); !d.Admitted || d.Until != now.Add(DefaultMinTTL) {
		t.Fatalf("short TTL: %v until %v", d, d.Until)
	}
}
