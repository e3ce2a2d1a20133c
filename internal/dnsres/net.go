package dnsres

import (
	"context"
	"errors"
	"net"
	"strings"
)

// The mail-authentication libraries (go-msgauth's DKIM and DMARC, blitiri's SPF) ask DNS
// through net.Resolver-shaped functions and tell a missing record from a failure by
// *net.DNSError's IsNotFound and Temporary. NetResolver answers them from a Resolver.

// NetResolver adapts a Resolver to those libraries.
type NetResolver struct {
	R *Resolver
}

// netErr turns this package's errors into the *net.DNSError the libraries expect.
func netErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return &net.DNSError{Err: err.Error(), Name: name, IsNotFound: errors.Is(err, ErrNotFound), IsTemporary: errors.Is(err, ErrTemporary)}
}

// LookupTXT implements spf.DNSResolver.
func (n NetResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, _, err := n.R.TXT(ctx, name)
	return txt, netErr(name, err)
}

// LookupMX implements spf.DNSResolver.
func (n NetResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mx, _, err := n.R.MX(ctx, name)
	if err != nil {
		return nil, netErr(name, err)
	}
	out := make([]*net.MX, len(mx))
	for i, m := range mx {
		out[i] = &net.MX{Host: m.Host + ".", Pref: m.Preference}
	}
	return out, nil
}

// LookupIPAddr implements spf.DNSResolver.
func (n NetResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, _, err := n.R.Addrs(ctx, host)
	if err != nil {
		return nil, netErr(host, err)
	}
	out := make([]net.IPAddr, len(addrs))
	for i, a := range addrs {
		out[i] = net.IPAddr{IP: net.IP(a.AsSlice())}
	}
	return out, nil
}

// LookupAddr implements spf.DNSResolver. PTR lookups (SPF's deprecated "ptr" mechanism,
// RFC 7208 section 5.5) are not asked: the answer is "no such record".
func (n NetResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "PTR lookups are not made", Name: addr, IsNotFound: true}
}

// TXTFunc is LookupTXT in the form go-msgauth's options take, bound to ctx.
func (n NetResolver) TXTFunc(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) { return n.LookupTXT(ctx, strings.TrimSuffix(name, ".")) }
}
