package authaudit

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// checkPTR audits forward-confirmed reverse DNS of every pool IP: a PTR name
// that resolves back to the IP (RFC 8601 §3 "iprev"), which is the EHLO
// name when one is given.
func (a *Auditor) checkPTR(ctx context.Context, n normalized, _ time.Time) Check {
	c := Check{Name: CheckPTR}
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	if len(n.IPs) == 0 {
		problem("no pool IPs given: reverse DNS cannot be checked")
		return c
	}
	var fix []string
	for _, ip := range n.IPs {
		ip = ip.Unmap()
		arpa, _ := dns.ReverseAddr(ip.String())
		arpa = strings.TrimSuffix(arpa, ".")
		names, err := a.Resolver.LookupAddr(ctx, ip.String())
		if err != nil && !notFound(err) {
			problem("cannot look up the PTR of %s: %v", ip, err)
			continue
		}
		var confirmed []string
		for _, name := range names {
			name = normName(name)
			if a.resolvesTo(ctx, name, ip) {
				confirmed = append(confirmed, name)
			}
		}
		want := n.ehloOf(ip)
		switch {
		case len(names) == 0:
			problem("%s has no PTR record: many receivers refuse or throttle mail from hosts without reverse DNS", ip)
		case len(confirmed) == 0:
			problem("%s: its PTR names (%s) do not resolve back to it: reverse DNS is not forward-confirmed", ip, strings.Join(trimDots(names), ", "))
			if want == "" {
				want = normName(names[0])
			}
		case want != "" && !containsFold(confirmed, want):
			problem("%s: its reverse name is %s but it greets as %s: receivers that compare EHLO with reverse DNS distrust it", ip, strings.Join(confirmed, ", "), want)
		default:
			continue
		}
		if want == "" {
			problem("%s: give the EHLO name (--ehlo) to get the exact records", ip)
			continue
		}
		if len(names) == 0 || !containsFold(confirmed, want) {
			if !containsFold(trimDots(names), want) {
				fix = append(fix, fmt.Sprintf("%s. PTR %s.", arpa, want))
			}
			if !a.resolvesTo(ctx, want, ip) {
				typ := "A"
				if ip.Is6() {
					typ = "AAAA"
				}
				fix = append(fix, fmt.Sprintf("%s. %s %s", want, typ, ip))
			}
		}
	}
	c.Fix = strings.Join(fix, "\n")
	return c
}

// resolvesTo reports whether name has an address record for ip.
func (a *Auditor) resolvesTo(ctx context.Context, name string, ip netip.Addr) bool {
	network := "ip4"
	if ip.Is6() {
		network = "ip6"
	}
	addrs, err := a.Resolver.LookupNetIP(ctx, network, name)
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if x.Unmap() == ip {
			return true
		}
	}
	return false
}

// checkMX audits that bounces can reach the return-path domain: it has MX
// hosts (RFC 5321 §5.1), not a null MX (RFC 7505), and they resolve.
func (a *Auditor) checkMX(ctx context.Context, n normalized, _ time.Time) Check {
	c := Check{Name: CheckMX}
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	d := n.bounce
	fix := fmt.Sprintf("%s. MX 10 <host that runs inbound-dsn for %s>.", d, d)
	mxs, err := a.Resolver.LookupMX(ctx, d)
	if err != nil && !notFound(err) {
		problem("cannot look up the MX of %s: %v", d, err)
		return c
	}
	if len(mxs) == 0 {
		if addrs, err := a.Resolver.LookupNetIP(ctx, "ip", d); err == nil && len(addrs) > 0 {
			problem("the bounce domain %s has no MX record: bounces go to its address record (implicit MX, RFC 5321 §5.1), which is fragile; publish an MX", d)
		} else {
			problem("the bounce domain %s has no MX record and no address: bounces and complaints sent to the return path are lost", d)
		}
		c.Fix = fix
		return c
	}
	for _, mx := range mxs {
		host := normName(mx.Host)
		if host == "" {
			problem("the bounce domain %s publishes a null MX (RFC 7505): it accepts no mail, so no bounce comes back", d)
			c.Fix = fix
			return c
		}
		addrs, err := a.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil && !notFound(err) {
			problem("cannot resolve the MX host %s of %s: %v", host, d, err)
			continue
		}
		if len(addrs) == 0 {
			problem("the MX host %s of %s has no address record", host, d)
			c.Fix = fmt.Sprintf("%s. A <address of the host that runs inbound-dsn>", host)
		}
	}
	return c
}

func trimDots(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = normName(n)
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
