package ispsim

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/mail"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// AuthVerdicts are the receiver's checks of one accepted message: SPF
// (RFC 7208) of the source IP and MAIL FROM, DKIM (RFC 6376) signatures
// and DMARC (RFC 7489) alignment, also formatted as an
// Authentication-Results field (RFC 8601).
type AuthVerdicts struct {
	SPF         string        `json:"spf"` // pass, fail, softfail, neutral, none, temperror, permerror
	SPFDomain   string        `json:"spf_domain"`
	DKIM        []DKIMVerdict `json:"dkim"`
	DMARC       string        `json:"dmarc"` // pass, fail, none, temperror, permerror
	DMARCPolicy string        `json:"dmarc_policy,omitempty"`
	FromDomain  string        `json:"from_domain"`
	// AuthenticationResults is the header field's value.
	AuthenticationResults string `json:"authentication_results"`
}

// DKIMVerdict is the result of one DKIM signature.
type DKIMVerdict struct {
	Domain     string `json:"domain"`
	Identifier string `json:"identifier,omitempty"`
	Result     string `json:"result"` // pass, fail, temperror, permerror, none
	Reason     string `json:"reason,omitempty"`
}

// DKIMPass reports whether a signature of domain ("" for any) verified.
func (a AuthVerdicts) DKIMPass(domain string) bool {
	for _, d := range a.DKIM {
		if d.Result == "pass" && (domain == "" || strings.EqualFold(d.Domain, domain)) {
			return true
		}
	}
	return false
}

// checker runs the receiver's checks against the simulator's own DNS.
type checker struct {
	hostname string
	resolver *net.Resolver
}

func (c *checker) check(ctx context.Context, ip netip.Addr, helo, mailFrom string, data []byte, from string) AuthVerdicts {
	var v AuthVerdicts
	var results []authres.Result

	// SPF: RFC 7208 §2.4 checks MAIL FROM, or the HELO identity for the
	// null reverse-path.
	v.SPFDomain = domainOf(mailFrom)
	if v.SPFDomain == "" {
		v.SPFDomain = helo
	}
	res, _ := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, mailFrom,
		spf.WithResolver(c.resolver), spf.WithContext(ctx))
	v.SPF = string(res)
	results = append(results, &authres.SPFResult{Value: authres.ResultValue(v.SPF), From: mailFrom, Helo: helo})

	// DKIM.
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return c.resolver.LookupTXT(ctx, name) },
	})
	if err != nil && len(verifs) == 0 {
		v.DKIM = append(v.DKIM, DKIMVerdict{Result: "permerror", Reason: err.Error()})
	}
	for _, vr := range verifs {
		d := DKIMVerdict{Domain: vr.Domain, Identifier: vr.Identifier, Result: "pass"}
		if vr.Err != nil {
			d.Reason = vr.Err.Error()
			switch {
			case dkim.IsTempFail(vr.Err):
				d.Result = "temperror"
			case dkim.IsPermFail(vr.Err):
				d.Result = "permerror"
			default:
				d.Result = "fail"
			}
		}
		v.DKIM = append(v.DKIM, d)
		results = append(results, &authres.DKIMResult{Value: authres.ResultValue(d.Result), Reason: d.Reason, Domain: d.Domain, Identifier: d.Identifier})
	}
	if len(verifs) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}

	// DMARC: the RFC5322.From domain must align with a passing SPF or DKIM
	// identifier (RFC 7489 §3.1, §4.2).
	v.FromDomain = strings.ToLower(domainOf(from))
	v.DMARC = "none"
	if v.FromDomain != "" {
		rec, err := c.lookupDMARC(ctx, v.FromDomain)
		switch {
		case err == nil:
			v.DMARCPolicy = string(rec.Policy)
			v.DMARC = "fail"
			if v.SPF == "pass" && aligned(v.SPFDomain, v.FromDomain, rec.SPFAlignment) {
				v.DMARC = "pass"
			}
			for _, d := range v.DKIM {
				if d.Result == "pass" && aligned(d.Domain, v.FromDomain, rec.DKIMAlignment) {
					v.DMARC = "pass"
				}
			}
		case dmarc.IsTempFail(err):
			v.DMARC = "temperror"
		case errors.Is(err, dmarc.ErrNoPolicy):
			v.DMARC = "none"
		default:
			v.DMARC = "permerror"
		}
	}
	results = append(results, &authres.DMARCResult{Value: authres.ResultValue(v.DMARC), From: v.FromDomain})
	v.AuthenticationResults = authres.Format(c.hostname, results)
	return v
}

// lookupDMARC finds the policy of domain, falling back to its
// organizational domain (RFC 7489 §6.6.3).
func (c *checker) lookupDMARC(ctx context.Context, domain string) (*dmarc.Record, error) {
	opts := &dmarc.LookupOptions{LookupTXT: func(name string) ([]string, error) {
		txt, err := c.resolver.LookupTXT(ctx, name)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, nil // no record is "no policy", not an error
		}
		return txt, err
	}}
	rec, err := dmarc.LookupWithOptions(domain, opts)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(domain); org != domain {
			return dmarc.LookupWithOptions(org, opts)
		}
	}
	return rec, err
}

func aligned(a, b string, mode dmarc.AlignmentMode) bool {
	a, b = strings.ToLower(strings.TrimSuffix(a, ".")), strings.ToLower(strings.TrimSuffix(b, "."))
	if a == "" || b == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return a == b
	}
	return orgDomain(a) == orgDomain(b)
}

func orgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// domainOf returns the domain of an address ("a@b" or a From field).
func domainOf(addr string) string {
	if a, err := mail.ParseAddress(addr); err == nil {
		addr = a.Address
	}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.Trim(addr[i+1:], "> ")
	}
	return ""
}
