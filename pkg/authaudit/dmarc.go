package authaudit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// orgDomain is the organizational domain of a name (RFC 7489 §3.2), from the
// public suffix list.
func orgDomain(name string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return org
}

// aligned reports whether an authenticated domain aligns with the From
// domain in the given mode (RFC 7489 §3.1).
func aligned(from, other string, mode dmarc.AlignmentMode) bool {
	if mode == dmarc.AlignmentStrict {
		return strings.EqualFold(from, other)
	}
	return strings.EqualFold(orgDomain(from), orgDomain(other))
}

// checkDMARC audits the DMARC record that governs the From domain (RFC 7489
// §6.6.3: the From domain's, else its organizational domain's) and the
// alignment of the return-path and DKIM domains with it.
func (a *Auditor) checkDMARC(ctx context.Context, n normalized, _ time.Time) Check {
	c := Check{Name: CheckDMARC}
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	opts := &dmarc.LookupOptions{LookupTXT: func(name string) ([]string, error) { return a.Resolver.LookupTXT(ctx, name) }}

	at := n.from
	raw, rec, err := lookupDMARC(at, opts)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(n.from); org != n.from {
			at = org
			raw, rec, err = lookupDMARC(at, opts)
		}
	}
	recommended := func() string {
		return "v=DMARC1; p=quarantine; rua=mailto:postmaster@" + orgDomain(n.from)
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		problem("no DMARC record at _dmarc.%s: receivers apply no policy to mail that fails authentication and send no reports", n.from)
		c.Fix = txtRecord("_dmarc."+n.from, recommended())
		return c
	case dmarc.IsTempFail(err):
		problem("cannot look up _dmarc.%s: %v", at, err)
		return c
	case err != nil:
		problem("the DMARC record at _dmarc.%s is invalid (%v): receivers ignore it", at, err)
		c.Fix = txtRecord("_dmarc."+at, recommended())
		return c
	}

	tags := newTagList(raw)
	policy, policyTag := rec.Policy, "p"
	if at != n.from && rec.SubdomainPolicy != "" {
		policy, policyTag = rec.SubdomainPolicy, "sp"
	}
	if policy == dmarc.PolicyNone {
		problem("%s=none at _dmarc.%s: receivers deliver mail that fails DMARC as if it passed; move to quarantine, then reject once the reports show all your mail aligned", policyTag, at)
		tags.set(policyTag, "quarantine")
	}
	if rec.Percent != nil && *rec.Percent < 100 {
		problem("pct=%d at _dmarc.%s: the policy applies to only part of the failing mail", *rec.Percent, at)
		tags.del("pct")
	}
	if len(rec.ReportURIAggregate) == 0 {
		problem("no rua= at _dmarc.%s: nobody receives the aggregate reports that show who sends as %s", at, n.from)
		tags.set("rua", "mailto:postmaster@"+orgDomain(n.from))
	}

	spfOK := aligned(n.from, n.bounce, rec.SPFAlignment)
	dkimOK := aligned(n.from, n.dkimDomain, rec.DKIMAlignment)
	if !spfOK {
		if rec.SPFAlignment == dmarc.AlignmentStrict && aligned(n.from, n.bounce, dmarc.AlignmentRelaxed) {
			problem("aspf=s: the return-path domain %s is not identical to the From domain %s, so SPF never aligns; use relaxed alignment", n.bounce, n.from)
			tags.set("aspf", "r")
		} else {
			problem("the return-path domain %s is not under the organizational domain of %s: SPF never aligns, so DMARC rests on DKIM alone; use a bounce domain under %s", n.bounce, n.from, orgDomain(n.from))
		}
	}
	if !dkimOK {
		if rec.DKIMAlignment == dmarc.AlignmentStrict && aligned(n.from, n.dkimDomain, dmarc.AlignmentRelaxed) {
			problem("adkim=s: the DKIM domain %s is not identical to the From domain %s, so DKIM never aligns; use relaxed alignment", n.dkimDomain, n.from)
			tags.set("adkim", "r")
		} else {
			problem("the DKIM signing domain %s is not under the organizational domain of %s: DKIM never aligns; sign with d=%s", n.dkimDomain, n.from, n.from)
		}
	}
	if !spfOK && !dkimOK {
		problem("neither SPF nor DKIM aligns with %s: all its mail fails DMARC", n.from)
	}
	if tags.changed {
		c.Fix = txtRecord("_dmarc."+at, tags.String())
	}
	return c
}

// lookupDMARC returns the raw DMARC record of a domain and its parse.
func lookupDMARC(domain string, opts *dmarc.LookupOptions) (string, *dmarc.Record, error) {
	var raw string
	inner := opts.LookupTXT
	rec, err := dmarc.LookupWithOptions(domain, &dmarc.LookupOptions{LookupTXT: func(name string) ([]string, error) {
		txts, err := inner(name)
		for _, t := range txts {
			if strings.HasPrefix(t, "v=DMARC1") {
				raw = t
			}
		}
		return txts, err
	}})
	return raw, rec, err
}

// tagList edits a DMARC tag list (RFC 7489 §6.4) keeping the order of its
// tags; v= stays first and p= second.
type tagList struct {
	names   []string
	values  map[string]string
	changed bool
}

func newTagList(raw string) *tagList {
	t := &tagList{values: map[string]string{}}
	for _, part := range strings.Split(raw, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if _, dup := t.values[name]; !dup {
			t.names = append(t.names, name)
		}
		t.values[name] = strings.TrimSpace(value)
	}
	return t
}

func (t *tagList) set(name, value string) {
	if _, ok := t.values[name]; !ok {
		t.names = append(t.names, name)
	}
	t.values[name] = value
	t.changed = true
}

func (t *tagList) del(name string) {
	if _, ok := t.values[name]; !ok {
		return
	}
	delete(t.values, name)
	kept := t.names[:0]
	for _, n := range t.names {
		if n != name {
			kept = append(kept, n)
		}
	}
	t.names = kept
	t.changed = true
}

func (t *tagList) String() string {
	parts := make([]string, 0, len(t.names))
	for _, n := range t.names {
		parts = append(parts, n+"="+t.values[n])
	}
	return strings.Join(parts, "; ")
}
