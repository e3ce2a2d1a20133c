// Package dnstest is a small authoritative DNS server on loopback, answering from records set
// in memory, for tests and the demo: federation's _epost TXT records, MX and addresses, SPF,
// DKIM and DMARC. It serves UDP and TCP on the same port. Answers can be made to fail
// (SERVFAIL) or to come late, to test temporary failures.
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server is a running server. Its methods are safe for concurrent use.
type Server struct {
	Addr string // HOST:PORT, UDP and TCP

	udp, tcp *dns.Server
	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	fail     map[string]int      // FQDN -> rcode to answer instead
	delay    time.Duration
	queries  int
	unknown  int // rcode for names without records; 0: NXDOMAIN
}

// Start listens on 127.0.0.1 (a free port, the same for UDP and TCP) and serves.
func Start() (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, fail: map[string]int{}}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil { // the port is taken for TCP: try another
			pc.Close()
			lastErr = err
			continue
		}
		s.Addr = pc.LocalAddr().String()
		h := dns.HandlerFunc(s.serve)
		s.udp = &dns.Server{PacketConn: pc, Handler: h}
		s.tcp = &dns.Server{Listener: l, Handler: h}
		started := make(chan struct{}, 2)
		s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
		s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { _ = s.udp.ActivateAndServe() }()
		go func() { _ = s.tcp.ActivateAndServe() }()
		<-started
		<-started
		return s, nil
	}
	return nil, fmt.Errorf("dnstest: no port free for both UDP and TCP: %v", lastErr)
}

// Close stops the server.
func (s *Server) Close() {
	_ = s.udp.Shutdown()
	_ = s.tcp.Shutdown()
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func hdr(name string, t uint16, ttl time.Duration) dns.RR_Header {
	return dns.RR_Header{Name: fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: uint32(ttl / time.Second)}
}

// set replaces name's records of the type of rrs[0].
func (s *Server) set(name string, t uint16, rrs []dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := fqdn(name)
	kept := s.records[k][:0:0]
	for _, rr := range s.records[k] {
		if rr.Header().Rrtype != t {
			kept = append(kept, rr)
		}
	}
	s.records[k] = append(kept, rrs...)
}

// SetTXT makes name's TXT records values (none: removes them). A value longer than 255 bytes
// is split into strings, as a zone file would hold it.
func (s *Server) SetTXT(name string, ttl time.Duration, values ...string) {
	var rrs []dns.RR
	for _, v := range values {
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		rrs = append(rrs, &dns.TXT{Hdr: hdr(name, dns.TypeTXT, ttl), Txt: append(parts, v)})
	}
	s.set(name, dns.TypeTXT, rrs)
}

// SetMX makes name's MX records: host:preference pairs, e.g. "mx.example.org:10".
func (s *Server) SetMX(name string, ttl time.Duration, hostPrefs ...string) error {
	var rrs []dns.RR
	for _, hp := range hostPrefs {
		host, pref, ok := strings.Cut(hp, ":")
		var p uint16
		if _, err := fmt.Sscan(pref, &p); !ok || err != nil {
			return fmt.Errorf("dnstest: MX %q: want HOST:PREFERENCE", hp)
		}
		rrs = append(rrs, &dns.MX{Hdr: hdr(name, dns.TypeMX, ttl), Mx: fqdn(host), Preference: p})
	}
	s.set(name, dns.TypeMX, rrs)
	return nil
}

// SetAddrs makes name's A and AAAA records.
func (s *Server) SetAddrs(name string, ttl time.Duration, addrs ...string) error {
	var a, aaaa []dns.RR
	for _, x := range addrs {
		ip := net.ParseIP(x)
		switch {
		case ip == nil:
			return fmt.Errorf("dnstest: address %q", x)
		case ip.To4() != nil:
			a = append(a, &dns.A{Hdr: hdr(name, dns.TypeA, ttl), A: ip.To4()})
		default:
			aaaa = append(aaaa, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: ip})
		}
	}
	s.set(name, dns.TypeA, a)
	s.set(name, dns.TypeAAAA, aaaa)
	return nil
}

// Fail makes questions about name answer rcode (dns.RcodeServerFailure, say) instead of its
// records; rcode 0 ends that.
func (s *Server) Fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == 0 {
		delete(s.fail, fqdn(name))
	} else {
		s.fail[fqdn(name)] = rcode
	}
}

// Unknown sets the answer for names without records (0: NXDOMAIN, the default); SERVFAIL
// plays a resolver that cannot reach the internet.
func (s *Server) Unknown(rcode int) {
	s.mu.Lock()
	s.unknown = rcode
	s.mu.Unlock()
}

// Delay makes every answer wait d (0: none), to test timeouts.
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Queries counts the questions answered so far.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	s.queries++
	delay := s.delay
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
	} else {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		if rc, ok := s.fail[name]; ok {
			m.Rcode = rc
		} else if rrs, ok := s.records[name]; !ok || len(rrs) == 0 {
			m.Rcode = dns.RcodeNameError
			if s.unknown != 0 {
				m.Rcode = s.unknown
			}
		} else {
			for _, rr := range rrs {
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	// Over UDP an answer too large for the client's buffer (512 bytes without EDNS) is cut
	// and flagged TC, and the client asks again over TCP.
	size := dns.MinMsgSize
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		size = dns.MaxMsgSize
	} else if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}
