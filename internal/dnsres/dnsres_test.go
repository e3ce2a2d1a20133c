package dnsres_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"epost/internal/dnsres"
	"epost/internal/dnstest"
)

func TestResolverAgainstLocalServer(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	long := strings.Repeat("k", 600) // a DKIM key's length: several TXT strings
	srv.SetTXT("_epost.acme.example", 300*time.Second, "v=epost1; ring=ab")
	srv.SetTXT("acme.example", time.Hour, "v=spf1 -all", long)
	if err := srv.SetMX("acme.example", 600*time.Second, "mx2.acme.example:20", "mx1.acme.example:10"); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetAddrs("mx1.acme.example", 60*time.Second, "127.0.0.1", "::1"); err != nil {
		t.Fatal(err)
	}
	// Many records: more than 512 bytes, so the UDP answer is truncated and TCP asked.
	var many []string
	for i := range 40 {
		many = append(many, strings.Repeat(string(rune('a'+i%26)), 40))
	}
	srv.SetTXT("big.acme.example", time.Minute, many...)

	r := &dnsres.Resolver{Server: srv.Addr, Timeout: 500 * time.Millisecond}
	ctx := context.Background()

	txt, ttl, err := r.TXT(ctx, "_EPOST.Acme.Example.")
	if err != nil || !slices.Equal(txt, []string{"v=epost1; ring=ab"}) || ttl != 300*time.Second {
		t.Fatalf("TXT: %q %v %v", txt, ttl, err)
	}
	txt, _, err = r.TXT(ctx, "acme.example")
	if err != nil || len(txt) != 2 || !slices.Contains(txt, long) {
		t.Fatalf("TXT with a long value: %d records, %v", len(txt), err)
	}
	txt, _, err = r.TXT(ctx, "big.acme.example")
	if err != nil || len(txt) != len(many) {
		t.Fatalf("TXT over TCP: %d records, want %d, %v", len(txt), len(many), err)
	}
	mx, ttl, err := r.MX(ctx, "acme.example")
	if err != nil || len(mx) != 2 || mx[0].Host != "mx1.acme.example" || mx[0].Preference != 10 || ttl != 600*time.Second {
		t.Fatalf("MX: %+v %v %v", mx, ttl, err)
	}
	addrs, ttl, err := r.Addrs(ctx, "mx1.acme.example")
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	if err != nil || !slices.Equal(addrs, want) || ttl != time.Minute {
		t.Fatalf("Addrs: %v %v %v", addrs, ttl, err)
	}

	// A name that does not exist, and one without records of the type: permanent.
	for _, name := range []string{"_epost.nobody.example", "mx1.acme.example"} {
		if _, _, err := r.TXT(ctx, name); !errors.Is(err, dnsres.ErrNotFound) {
			t.Fatalf("TXT %s: %v, want ErrNotFound", name, err)
		}
	}
	// SERVFAIL and silence: temporary.
	srv.Fail("acme.example", dns.RcodeServerFailure)
	if _, _, err := r.MX(ctx, "acme.example"); !errors.Is(err, dnsres.ErrTemporary) {
		t.Fatalf("SERVFAIL: %v, want ErrTemporary", err)
	}
	srv.Fail("acme.example", 0)
	srv.Delay(2 * time.Second)
	start := time.Now()
	if _, _, err := r.MX(ctx, "acme.example"); !errors.Is(err, dnsres.ErrTemporary) {
		t.Fatalf("no answer in time: %v, want ErrTemporary", err)
	}
	if took := time.Since(start); took > 1900*time.Millisecond {
		t.Fatalf("two tries of 500 ms took %v", took)
	}
	srv.Delay(0)
	dead := &dnsres.Resolver{Server: "127.0.0.1:1", Timeout: 200 * time.Millisecond, Tries: 1}
	if _, _, err := dead.TXT(ctx, "acme.example"); !errors.Is(err, dnsres.ErrTemporary) {
		t.Fatalf("no server: %v, want ErrTemporary", err)
	}
}
