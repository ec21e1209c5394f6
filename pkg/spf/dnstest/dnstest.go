// Package dnstest runs an authoritative DNS server (RFC 1035) on loopback
// that answers from an in-memory zone, for tests and for the SPF test-suite
// driver. It listens on UDP and TCP on the same 127.0.0.1 port, truncates UDP
// answers that do not fit (so clients must retry over TCP), and can be told
// never to answer for a name, to simulate a timeout.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// ErrListen is returned by Start when no port could be bound for both UDP
// and TCP.
var ErrListen = errors.New("dnstest: cannot listen")

// Zone is a set of records keyed by owner name. Names are raw (any bytes,
// labels separated by dots), compared without regard to ASCII case, with or
// without a trailing dot. A Zone is safe for concurrent use, also while a
// server answers from it.
type Zone struct {
	mu      sync.RWMutex
	records map[string][]dns.RR
	exists  map[string]bool
	timeout map[string]bool
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{records: map[string][]dns.RR{}, exists: map[string]bool{}, timeout: map[string]bool{}}
}

func key(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func header(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(escapeName(strings.TrimSuffix(name, "."))), Rrtype: rrtype, Class: dns.ClassINET, Ttl: 300}
}

func (z *Zone) add(name string, rr dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := key(name)
	z.records[k] = append(z.records[k], rr)
	z.exists[k] = true
}

// TXT adds one TXT record made of the given character-strings, in raw bytes;
// a string longer than 255 bytes is split into several, which readers join
// again (RFC 7208 §3.3).
func (z *Zone) TXT(name string, strs ...string) {
	var parts []string
	for _, s := range strs {
		for len(s) > 255 {
			parts = append(parts, escapeText(s[:255]))
			s = s[255:]
		}
		parts = append(parts, escapeText(s))
	}
	z.add(name, &dns.TXT{Hdr: header(name, dns.TypeTXT), Txt: parts})
}

// Addr adds an A or AAAA record.
func (z *Zone) Addr(name string, a netip.Addr) {
	if a.Is4() {
		z.add(name, &dns.A{Hdr: header(name, dns.TypeA), A: net.IP(a.AsSlice())})
		return
	}
	z.add(name, &dns.AAAA{Hdr: header(name, dns.TypeAAAA), AAAA: net.IP(a.AsSlice())})
}

// MX adds an MX record; host "" or "." makes a null MX (RFC 7505).
func (z *Zone) MX(name string, pref uint16, host string) {
	host = strings.TrimSuffix(host, ".")
	target := "."
	if host != "" {
		target = dns.Fqdn(escapeName(host))
	}
	z.add(name, &dns.MX{Hdr: header(name, dns.TypeMX), Preference: pref, Mx: target})
}

// PTR adds a PTR record; name is a reverse name such as
// "4.3.2.1.in-addr.arpa".
func (z *Zone) PTR(name, target string) {
	z.add(name, &dns.PTR{Hdr: header(name, dns.TypePTR), Ptr: dns.Fqdn(escapeName(strings.TrimSuffix(target, ".")))})
}

// ReversePTR adds the PTR record of an address.
func (z *Zone) ReversePTR(a netip.Addr, target string) {
	arpa, _ := dns.ReverseAddr(a.String())
	z.PTR(arpa, target)
}

// Exists makes name exist without records of its own, so queries get an
// empty answer instead of NXDOMAIN.
func (z *Zone) Exists(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.exists[key(name)] = true
}

// Timeout makes the server drop every query for name without answering.
func (z *Zone) Timeout(name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.timeout[key(name)] = true
}

// Delete removes every record of one type at name.
func (z *Zone) Delete(name string, rrtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := key(name)
	kept := z.records[k][:0]
	for _, rr := range z.records[k] {
		if rr.Header().Rrtype != rrtype {
			kept = append(kept, rr)
		}
	}
	z.records[k] = kept
}

// answer builds the reply to a query; ok is false when the query must go
// unanswered.
func (z *Zone) answer(q dns.Question) (rrs []dns.RR, rcode int, ok bool) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	k := key(unescape(q.Name))
	if z.timeout[k] {
		return nil, 0, false
	}
	if !z.exists[k] && !z.hasBelow(k) {
		return nil, dns.RcodeNameError, true
	}
	for _, rr := range z.records[k] {
		if rr.Header().Rrtype == q.Qtype {
			c := dns.Copy(rr)
			c.Header().Name = q.Name
			rrs = append(rrs, c)
		}
	}
	return rrs, dns.RcodeSuccess, true
}

// hasBelow reports whether k is an empty non-terminal: a name with no
// records but with names below it, which exists (RFC 8020).
func (z *Zone) hasBelow(k string) bool {
	for n := range z.exists {
		if strings.HasSuffix(n, "."+k) {
			return true
		}
	}
	return false
}

// Stats counts the queries a server received.
type Stats struct {
	UDP, TCP int64
}

// Server is a running DNS server.
type Server struct {
	zone     *Zone
	addr     string
	udp, tcp *dns.Server
	udpN     atomic.Int64
	tcpN     atomic.Int64
}

// Start serves zone on 127.0.0.1, on one port for UDP and TCP.
func Start(zone *Zone) (*Server, error) {
	s := &Server{zone: zone}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrListen, err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			lastErr = err
			continue // the TCP port was taken; try another
		}
		s.addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
		s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve)}
		if err := activate(s.udp); err != nil {
			l.Close()
			pc.Close()
			return nil, fmt.Errorf("%w: %w", ErrListen, err)
		}
		if err := activate(s.tcp); err != nil {
			_ = s.udp.Shutdown()
			l.Close()
			return nil, fmt.Errorf("%w: %w", ErrListen, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrListen, lastErr)
}

// activate starts srv and waits until it serves, so that Shutdown cannot
// race with the start.
func activate(srv *dns.Server) error {
	started := make(chan struct{})
	done := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-done:
		return err
	}
}

// Addr is the HOST:PORT of the server.
func (s *Server) Addr() string { return s.addr }

// Stats returns how many queries arrived over each transport.
func (s *Server) Stats() Stats { return Stats{UDP: s.udpN.Load(), TCP: s.tcpN.Load()} }

// Close stops the server.
func (s *Server) Close() error {
	return errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
}

func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg) {
	udp := w.LocalAddr().Network() == "udp"
	if udp {
		s.udpN.Add(1)
	} else {
		s.tcpN.Add(1)
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	rrs, rcode, ok := s.zone.answer(r.Question[0])
	if !ok {
		return
	}
	m.Rcode = rcode
	m.Answer = rrs
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if udp {
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// escapeName puts a raw name in miekg/dns presentation form.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' || c == '$':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c <= ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escapeText escapes the one byte miekg/dns interprets when it packs a
// character-string.
func escapeText(s string) string {
	return strings.ReplaceAll(s, `\`, `\\`)
}

// unescape undoes the \DDD and \X escapes of a presentation-form name.
func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			b.WriteByte(byte(int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')))
			i += 3
			continue
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
