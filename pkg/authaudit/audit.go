// Package authaudit audits how a sending domain lets receivers authenticate
// its mail: SPF (RFC 7208), DKIM keys (RFC 6376, key sizes per RFC 8301,
// Ed25519 per RFC 8463), DMARC policy and alignment (RFC 7489), forward-
// confirmed reverse DNS of the sending IPs (RFC 8601 §3 "iprev"), and the MX
// of the bounce domain (RFC 5321 §5.1). It is pure logic over a resolver:
// each check names its problems and the exact records to publish.
package authaudit

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/spf"
)

// ErrInvalidRequest is returned by Audit for a request it cannot run.
var ErrInvalidRequest = errors.New("authaudit: invalid request")

// Check names, in the order a Report lists them.
const (
	CheckSPF   = "spf"
	CheckDKIM  = "dkim"
	CheckDMARC = "dmarc"
	CheckPTR   = "ptr"
	CheckMX    = "mx"
)

// Request describes one sending domain and its pool.
type Request struct {
	// Domain is the RFC 5322 From domain.
	Domain string
	// IPs are the addresses of the domain's IP pool.
	IPs []netip.Addr
	// Selector is the DKIM selector; the DKIM check reports a problem when
	// it is empty.
	Selector string
	// DKIMKey is the private signing key, when known: the published key
	// must match it.
	DKIMKey crypto.Signer
	// DKIMDomain is the d= of signatures; Domain when empty.
	DKIMDomain string
	// BounceDomain is the return-path (RFC 5321 MAIL FROM) domain; Domain
	// when empty.
	BounceDomain string
	// EHLO is the name the pool's IPs greet with; each IP's reverse name
	// must be it. When empty, only forward confirmation is checked.
	EHLO string
	// EHLONames gives the name of each IP that greets with its own (a
	// pool whose IPs each have their own reverse name); IPs not in it
	// greet with EHLO.
	EHLONames map[netip.Addr]string
}

// Check is the outcome of one check.
type Check struct {
	Name     string   `json:"name"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
	// Fix holds the records to publish, one per line in zone-file form,
	// empty when there is nothing to publish.
	Fix string `json:"fix"`
}

// Report is the outcome of an audit.
type Report struct {
	Domain string  `json:"domain"`
	Checks []Check `json:"checks"`
}

// OK reports whether every check passed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Auditor runs audits through a resolver.
type Auditor struct {
	Resolver spf.Resolver
}

// normalized is a request with its defaults filled in and names lower-cased
// without trailing dot.
type normalized struct {
	Request
	from, bounce, dkimDomain, ehlo string
	ehloNames                      map[netip.Addr]string
}

// ehloOf is the name ip greets with, "" when unknown.
func (n normalized) ehloOf(ip netip.Addr) string {
	if name := n.ehloNames[ip.Unmap()]; name != "" {
		return name
	}
	return n.ehlo
}

func normName(s string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), ".")) }

// Audit runs every check. now is the time of the audit (for DKIM test
// signatures). It returns ErrInvalidRequest when the domain is missing or an
// IP is invalid; DNS failures are problems in the report, not errors.
func (a *Auditor) Audit(ctx context.Context, req Request, now time.Time) (Report, error) {
	n := normalized{Request: req, from: normName(req.Domain)}
	if n.from == "" || !strings.Contains(n.from, ".") {
		return Report{}, fmt.Errorf("%w: domain %q is not a fully qualified name", ErrInvalidRequest, req.Domain)
	}
	for _, ip := range req.IPs {
		if !ip.IsValid() {
			return Report{}, fmt.Errorf("%w: invalid IP in the pool", ErrInvalidRequest)
		}
	}
	n.ehloNames = map[netip.Addr]string{}
	for ip, name := range req.EHLONames {
		if !ip.IsValid() {
			return Report{}, fmt.Errorf("%w: invalid IP in the EHLO names", ErrInvalidRequest)
		}
		n.ehloNames[ip.Unmap()] = normName(name)
	}
	n.bounce, n.dkimDomain, n.ehlo = normName(req.BounceDomain), normName(req.DKIMDomain), normName(req.EHLO)
	if n.bounce == "" {
		n.bounce = n.from
	}
	if n.dkimDomain == "" {
		n.dkimDomain = n.from
	}
	if a.Resolver == nil {
		return Report{}, fmt.Errorf("%w: no resolver", ErrInvalidRequest)
	}
	rep := Report{Domain: n.from}
	for _, run := range []func(context.Context, normalized, time.Time) Check{a.checkSPF, a.checkDKIM, a.checkDMARC, a.checkPTR, a.checkMX} {
		c := run(ctx, n, now)
		if c.Problems == nil {
			c.Problems = []string{}
		}
		c.OK = len(c.Problems) == 0
		rep.Checks = append(rep.Checks, c)
	}
	return rep, nil
}

// txtRecord renders a TXT record in zone-file form, splitting text into
// character-strings of at most 255 bytes (RFC 1035 §3.3.14); receivers join
// them without separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func txtRecord(name, text string) string {
	var parts []string
	for len(text) > 255 {
		parts = append(parts, quote(text[:255]))
		text = text[255:]
	}
	parts = append(parts, quote(text))
	return fmt.Sprintf("%s. TXT %s", name, strings.Join(parts, " "))
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// ipTerm is the SPF term that authorises one address.
func ipTerm(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}
