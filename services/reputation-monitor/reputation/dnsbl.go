package reputation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Errors of blocklist lookups.
var (
	// ErrRefused: the list answered with an error code (127.255.255.252
	// to .255: typo, query refused through a public resolver, over quota),
	// which says nothing about the target.
	ErrRefused = errors.New("reputation: blocklist refused the query")
	// ErrLookup: the lookup failed (timeout, SERVFAIL, ...).
	ErrLookup = errors.New("reputation: blocklist lookup failed")
)

// Listing is the outcome of one blocklist lookup.
type Listing struct {
	Listed  bool
	Code    string
	Meaning string
}

// DNSBL looks targets up in DNS blocklists (RFC 5782) through one
// resolver.
type DNSBL struct {
	// Server is the resolver's host:port.
	Server  string
	Timeout time.Duration
}

// QueryName is the name queried for target in zone: the reversed octets
// (IPv4) or nibbles (IPv6) of an IP (RFC 5782 §2.1, §2.4), or the domain
// itself (§2.3) prefixed to the zone.
func QueryName(bl Blocklist, target string) (string, error) {
	if bl.Kind == "ip" {
		ip, err := netip.ParseAddr(target)
		if err != nil {
			return "", fmt.Errorf("%w: %q is not an IP", ErrLookup, target)
		}
		rev, err := dns.ReverseAddr(ip.Unmap().String())
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrLookup, err)
		}
		rev = strings.TrimSuffix(strings.TrimSuffix(rev, "in-addr.arpa."), "ip6.arpa.")
		return rev + dns.Fqdn(bl.Zone), nil
	}
	return dns.Fqdn(strings.TrimSuffix(target, ".") + "." + bl.Zone), nil
}

// Interpret reads the A records of an answer: a code the list declares is
// a listing; 127.255.255.x is ErrRefused; anything else (an unknown code,
// a wildcard answer outside 127/8) is not a listing.
func Interpret(bl Blocklist, codes []string) (Listing, error) {
	refused := ""
	for _, c := range codes {
		if m, ok := bl.Codes[c]; ok {
			return Listing{Listed: true, Code: c, Meaning: m}, nil
		}
		if strings.HasPrefix(c, "127.255.255.") {
			refused = c
		}
	}
	if refused != "" {
		return Listing{Code: refused}, fmt.Errorf("%w: %s answered %s", ErrRefused, bl.Zone, refused)
	}
	if len(codes) > 0 {
		return Listing{Code: codes[0]}, nil
	}
	return Listing{}, nil
}

// Lookup asks whether target is listed in bl. NXDOMAIN is "not listed";
// errors wrap ErrRefused or ErrLookup.
func (d *DNSBL) Lookup(ctx context.Context, bl Blocklist, target string) (Listing, error) {
	name, err := QueryName(bl, target)
	if err != nil {
		return Listing{}, err
	}
	c := &dns.Client{Timeout: d.Timeout}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Second
	}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.RecursionDesired = true
	r, _, err := c.ExchangeContext(ctx, q, d.Server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, d.Server)
	}
	if err != nil {
		return Listing{}, fmt.Errorf("%w: %s: %w", ErrLookup, name, err)
	}
	switch r.Rcode {
	case dns.RcodeNameError:
		return Listing{}, nil
	case dns.RcodeSuccess:
	default:
		return Listing{}, fmt.Errorf("%w: %s: %s", ErrLookup, name, dns.RcodeToString[r.Rcode])
	}
	var codes []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			codes = append(codes, a.A.String())
		}
	}
	return Interpret(bl, codes)
}

// SystemResolver returns the first name server of /etc/resolv.conf as
// host:port.
func SystemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "", fmt.Errorf("%w: no resolver in /etc/resolv.conf: %v", ErrLookup, err)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}
