package spf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout is how long DNSClient waits for one answer when Timeout is
// zero.
const DefaultTimeout = 5 * time.Second

// DNSClient sends every query to one DNS server: over UDP, again over TCP
// when the answer is truncated (RFC 1035 §4.2.1, RFC 7766). It implements
// Resolver, with the error conventions of *net.Resolver: an NXDOMAIN or an
// empty answer is a *net.DNSError with IsNotFound, a timeout one with
// IsTimeout and IsTemporary, SERVFAIL one with IsTemporary.
type DNSClient struct {
	// Server is the HOST:PORT of the server.
	Server string
	// Timeout bounds each exchange; DefaultTimeout when zero.
	Timeout time.Duration
}

// LookupTXT returns the TXT records of name, each one's strings joined
// without separator (RFC 7208 §3.3).
func (c *DNSClient) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := c.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, s := range t.Txt {
				b.WriteString(unescapeText(s))
			}
			out = append(out, b.String())
		}
	}
	return out, nil
}

// LookupNetIP returns the addresses of host: network "ip4" asks for A
// records, "ip6" for AAAA, "ip" for both.
func (c *DNSClient) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var types []uint16
	switch network {
	case "ip4":
		types = []uint16{dns.TypeA}
	case "ip6":
		types = []uint16{dns.TypeAAAA}
	case "ip":
		types = []uint16{dns.TypeA, dns.TypeAAAA}
	default:
		return nil, &net.DNSError{Err: "unknown network " + network, Name: host}
	}
	var out []netip.Addr
	var notFound error
	for _, t := range types {
		rrs, err := c.query(ctx, host, t)
		if err != nil {
			if isNotFound(err) {
				notFound = err
				continue
			}
			return nil, err
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) == 0 && notFound != nil {
		return nil, notFound
	}
	return out, nil
}

// LookupMX returns the MX records of name sorted by preference; hosts end in
// a dot, and a null MX (RFC 7505) has host ".".
func (c *DNSClient) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := c.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*net.MX
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, &net.MX{Host: unescapeName(mx.Mx), Pref: mx.Preference})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pref < out[j].Pref })
	return out, nil
}

// LookupAddr returns the PTR names of an address, each ending in a dot.
func (c *DNSClient) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	rrs, err := c.query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, unescapeName(p.Ptr))
		}
	}
	return out, nil
}

// query asks the server for name/qtype and returns the answer records of
// that type, following any CNAME the server put in the answer.
func (c *DNSClient) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(escapeName(strings.TrimSuffix(name, ".")))
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(dns.DefaultMsgSize, false)
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	resp, err := c.exchange(ctx, m, "udp", timeout)
	if err == nil && resp.Truncated {
		resp, err = c.exchange(ctx, m, "tcp", timeout)
	}
	if err != nil {
		dnsErr := &net.DNSError{Err: err.Error(), Name: name, Server: c.Server, IsTemporary: true, UnwrapErr: err}
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			dnsErr.Err, dnsErr.IsTimeout = "i/o timeout", true
		}
		return nil, dnsErr
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: c.Server, IsNotFound: true}
	case dns.RcodeServerFailure:
		return nil, &net.DNSError{Err: "server failure", Name: name, Server: c.Server, IsTemporary: true}
	default:
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Name: name, Server: c.Server}
	}
	var out []dns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: c.Server, IsNotFound: true}
	}
	return out, nil
}

func (c *DNSClient) exchange(ctx context.Context, m *dns.Msg, network string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl := &dns.Client{Net: network, Timeout: timeout}
	resp, _, err := cl.ExchangeContext(ctx, m, c.Server)
	return resp, err
}

// escapeName turns a name as SPF builds it (any bytes, dots between labels)
// into miekg/dns presentation form, where "\" starts an escape.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' || c == '$':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c <= ' ' || c > '~':
			b.WriteByte('\\')
			b.WriteByte('0' + c/100)
			b.WriteByte('0' + c/10%10)
			b.WriteByte('0' + c%10)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescapeName undoes the escapes miekg/dns puts in names it unpacks. An
// escaped dot stays escaped, since it is part of a label.
func unescapeName(s string) string {
	return unescape(s, true)
}

// unescapeText undoes the escapes miekg/dns puts in character-strings.
func unescapeText(s string) string {
	return unescape(s, false)
}

func unescape(s string, keepDot bool) string {
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
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v < 256 {
				if keepDot && v == '.' {
					b.WriteString(`\.`)
				} else {
					b.WriteByte(byte(v))
				}
				i += 3
				continue
			}
		}
		if keepDot && s[i+1] == '.' {
			b.WriteString(`\.`)
		} else {
			b.WriteByte(s[i+1])
		}
		i++
	}
	return b.String()
}
