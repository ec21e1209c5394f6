package authaudit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/spf"
)

// checkSPF audits the SPF record of the return-path domain, the identity
// SPF authenticates and DMARC aligns (RFC 7208 §2.4, RFC 7489 §3.1.2).
func (a *Auditor) checkSPF(ctx context.Context, n normalized, now time.Time) Check {
	c := Check{Name: CheckSPF}
	d := n.bounce
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }

	txts, err := a.Resolver.LookupTXT(ctx, d)
	if err != nil && !notFound(err) {
		problem("cannot look up the TXT records of %s: %v", d, err)
		return c
	}
	var recs []string
	for _, t := range txts {
		if spf.IsSPF(t) {
			recs = append(recs, t)
		}
	}

	var rec *spf.Record // the record, when there is exactly one valid one
	var keep []spf.Directive
	var exp string
	switch len(recs) {
	case 0:
		problem("%s publishes no SPF record: receivers get none for its mail, and DMARC cannot pass through SPF", d)
	case 1:
		r, err := spf.Parse(recs[0])
		if err != nil {
			problem("the SPF record of %s is invalid (%v): every receiver returns permerror for all its mail (RFC 7208 §4.6)", d, err)
			keep = validDirectives(recs)
			break
		}
		rec, exp = r, r.Exp
	default:
		problem("%s publishes %d SPF records: every receiver returns permerror for all its mail (RFC 7208 §4.5); publish one record and delete the others", d, len(recs))
		keep = validDirectives(recs)
	}

	redirect := ""
	var costs []int
	if rec != nil {
		allAt := -1
		for i, dir := range rec.Directives {
			if dir.Mechanism == spf.MechAll {
				allAt = i
				break
			}
		}
		if allAt < 0 {
			keep = rec.Directives
			redirect = rec.Redirect
		} else {
			keep = rec.Directives[:allAt]
			if allAt < len(rec.Directives)-1 {
				problem("terms after %q in the SPF record of %s are never evaluated", rec.Directives[allAt].String(), d)
			}
		}
		switch {
		case allAt < 0 && redirect == "":
			problem("the SPF record of %s has no all term: hosts it does not list get neutral, which protects nothing; end it with -all", d)
		case allAt >= 0:
			switch rec.Directives[allAt].Qualifier {
			case '+':
				problem("+all in the SPF record of %s authorises every host on the internet to send as it", d)
			case '?':
				problem("?all in the SPF record of %s gives neutral to hosts it does not list: it protects nothing; use -all", d)
			case '~':
				problem("~all in the SPF record of %s gives softfail to hosts it does not list: receivers still accept their mail and at most mark it; once every sending IP is listed, publish -all", d)
			}
		}
	}

	// Lookup costs of the terms kept, so the fix stays within the limit.
	costs = make([]int, len(keep))
	total := 0
	for i, dir := range keep {
		costs[i] = a.directiveCost(ctx, dir, d, map[string]bool{d: true}, 0)
		total += costs[i]
	}
	redirectCost := 0
	if redirect != "" {
		redirectCost = 1 + a.domainCost(ctx, redirect, map[string]bool{d: true}, 0)
		total += redirectCost
	}
	if rec != nil && total > spf.MaxLookups {
		problem("the SPF record of %s needs %d DNS lookups when every term is evaluated, more than the %d RFC 7208 §4.6.4 allows: receivers return permerror for mail its first terms do not match", d, total, spf.MaxLookups)
	}

	// Does the record authorise every IP of the pool?
	var missing []netip.Addr
	checker := &spf.Checker{Resolver: a.Resolver}
	helo := n.ehlo
	if helo == "" {
		helo = d
	}
	for _, ip := range n.IPs {
		if rec == nil {
			missing = append(missing, ip)
			continue
		}
		v := checker.Check(ctx, spf.Query{IP: ip, Helo: helo, Sender: "postmaster@" + d}, now)
		switch v.Result {
		case spf.Pass:
		case spf.TempError:
			problem("%s: SPF check of %s gave temperror: %v", ip, d, v.Err)
		case spf.PermError:
			problem("%s: SPF check of %s gave permerror: %v", ip, d, v.Err)
			missing = append(missing, ip)
		default:
			how := "no term matched"
			if v.Term != "" {
				how = "it matched " + v.Term
			}
			problem("%s is in the pool but the SPF record of %s does not authorise it: result %s (%s)", ip, d, v.Result, how)
			missing = append(missing, ip)
		}
	}
	if len(c.Problems) == 0 {
		return c
	}

	// The record to publish: the pool's addresses first (they cost no
	// lookup), then the terms kept while they fit in the limit.
	terms := []string{"v=spf1"}
	seen := map[string]bool{}
	for _, ip := range missing {
		t := ipTerm(ip)
		if !seen[t] {
			seen[t] = true
			terms = append(terms, t)
		}
	}
	budget := spf.MaxLookups - redirectCost
	for i, dir := range keep {
		t := dir.String()
		if seen[t] {
			continue
		}
		if costs[i] > budget {
			problem("the fix drops %s (%d lookups) to stay within %d lookups: list the addresses it stands for as ip4:/ip6: terms instead", t, costs[i], spf.MaxLookups)
			continue
		}
		budget -= costs[i]
		seen[t] = true
		terms = append(terms, t)
	}
	if redirect != "" {
		terms = append(terms, "redirect="+redirect)
	} else {
		terms = append(terms, "-all")
	}
	if exp != "" {
		terms = append(terms, "exp="+exp)
	}
	c.Fix = txtRecord(d, strings.Join(terms, " "))
	return c
}

// validDirectives collects the well-formed directives of broken records, in
// order and once each, leaving out all: what a merged record can keep.
func validDirectives(recs []string) []spf.Directive {
	var out []spf.Directive
	seen := map[string]bool{}
	for _, r := range recs {
		for _, term := range strings.Fields(r)[1:] {
			one, err := spf.Parse("v=spf1 " + term)
			if err != nil {
				continue
			}
			for _, dir := range one.Directives {
				if dir.Mechanism == spf.MechAll || seen[dir.String()] {
					continue
				}
				seen[dir.String()] = true
				out = append(out, dir)
			}
		}
	}
	return out
}

// maxDepth bounds how deep the cost count follows includes and redirects.
const maxDepth = 10

// directiveCost counts the DNS lookups one directive costs when evaluated
// in full, following includes of literal domains (RFC 7208 §4.6.4).
func (a *Auditor) directiveCost(ctx context.Context, dir spf.Directive, domain string, seen map[string]bool, depth int) int {
	if !dir.NeedsLookup() {
		return 0
	}
	if dir.Mechanism != spf.MechInclude {
		return 1
	}
	return 1 + a.domainCost(ctx, dir.Domain, seen, depth+1)
}

// domainCost counts the lookups of the record at target; a loop costs more
// than the limit, as it does at a receiver.
func (a *Auditor) domainCost(ctx context.Context, target string, seen map[string]bool, depth int) int {
	if strings.Contains(target, "%") {
		return 0 // depends on the message: cannot be followed statically
	}
	target = strings.ToLower(strings.TrimSuffix(target, "."))
	if seen[target] || depth > maxDepth {
		return spf.MaxLookups + 1
	}
	txt, _, err := spf.LookupRecord(ctx, a.Resolver, target)
	if err != nil {
		return 0
	}
	rec, err := spf.Parse(txt)
	if err != nil {
		return 0
	}
	next := make(map[string]bool, len(seen)+1)
	for k := range seen {
		next[k] = true
	}
	next[target] = true
	total := 0
	hasAll := false
	for _, dir := range rec.Directives {
		total += a.directiveCost(ctx, dir, target, next, depth)
		hasAll = hasAll || dir.Mechanism == spf.MechAll
	}
	if rec.Redirect != "" && !hasAll {
		total += 1 + a.domainCost(ctx, rec.Redirect, next, depth+1)
	}
	return total
}

func notFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}
