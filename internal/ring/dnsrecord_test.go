package ring

import (
	"errors"
	"strings"
	"testing"

	"epost/internal/ids"
)

func TestDNSRecords(t *testing.T) {
	r := newTestRing(t, "acme")
	id := r.Descriptor.RingID
	recs := r.Descriptor.DNSRecords()
	if len(recs) != len(r.Descriptor.Domains) || len(recs) == 0 {
		t.Fatalf("records %q for domains %q", recs, r.Descriptor.Domains)
	}
	for i, rec := range recs {
		want := "_epost." + r.Descriptor.Domains[i] + ". TXT \"v=epost1; ring=" + id.String() + "\""
		if rec != want {
			t.Fatalf("record %q, want %q", rec, want)
		}
	}
	other := ids.RingIDOfCA([]byte("another CA key, 32 bytes long..."))
	tests := []struct {
		name string
		txts []string
		want ids.RingID
		err  string // "" ok; "none": ErrNoDNSRecord; else a substring
	}{
		{"ours", []string{DNSValue(id)}, id, ""},
		{"spacing, case of tag names, unknown tags", []string{"  V=epost1 ;x=1;  RING = " + id.String() + " ; later=yes"}, id, ""},
		{"among unrelated records", []string{"v=spf1 -all", DNSValue(id), "google-site-verification=abc"}, id, ""},
		{"the same twice", []string{DNSValue(id), DNSValue(id)}, id, ""},
		{"no record", nil, ids.RingID{}, "none"},
		{"only others", []string{"v=spf1 -all", "v=epost2; ring=" + id.String()}, ids.RingID{}, "none"},
		{"two rings", []string{DNSValue(id), DNSValue(other)}, ids.RingID{}, "name two rings"},
		{"no ring tag", []string{"v=epost1"}, ids.RingID{}, "64 hex digits"},
		{"short id", []string{"v=epost1; ring=" + id.Short()}, ids.RingID{}, "64 hex digits"},
		{"not hex", []string{"v=epost1; ring=" + strings.Repeat("zz", 32)}, ids.RingID{}, "64 hex digits"},
		{"the global ring", []string{"v=epost1; ring=" + ids.GlobalRing.String()}, ids.RingID{}, "64 hex digits"},
	}
	for _, tc := range tests {
		got, err := ParseDNSRecords(tc.txts)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: %s, %v; want %s", tc.name, got.Short(), err, tc.want.Short())
		case tc.err == "none" && !errors.Is(err, ErrNoDNSRecord):
			t.Errorf("%s: %v, want ErrNoDNSRecord", tc.name, err)
		case tc.err != "" && tc.err != "none" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
	if DNSName("Acme.Example.") != "_epost.acme.example." {
		t.Fatalf("DNSName: %q", DNSName("Acme.Example."))
	}
}
