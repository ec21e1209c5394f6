package spf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Result is an SPF result word (RFC 7208 §2.6).
type Result string

// The seven results of check_host().
const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// Errors that explain a permerror or temperror; Verdict.Err wraps one of them
// (or ErrSyntax).
var (
	ErrNoRecord        = errors.New("spf: no spf record")
	ErrMultipleRecords = errors.New("spf: more than one spf record")
	ErrLookupLimit     = errors.New("spf: more than 10 dns lookups")
	ErrVoidLookupLimit = errors.New("spf: more than 2 void lookups")
	ErrTooManyMX       = errors.New("spf: more than 10 mx records")
	ErrIncludeNone     = errors.New("spf: included domain has no spf record")
	ErrRedirectNone    = errors.New("spf: redirect target has no spf record")
	ErrInvalidRedirect = errors.New("spf: redirect target is not a valid domain")
	ErrDNS             = errors.New("spf: dns lookup failed")
	ErrInvalidIP       = errors.New("spf: invalid client ip")
	ErrMalformedDomain = errors.New("spf: domain is not a valid host name")
)

// Processing limits of RFC 7208 §4.6.4.
const (
	MaxLookups     = 10
	MaxVoidLookups = 2
	maxMX          = 10
	maxPTR         = 10
)

// Resolver is the DNS a check needs. *net.Resolver and *DNSClient implement
// it. A name that does not exist, or has no record of the type, is reported
// as a *net.DNSError with IsNotFound set; any other error is a lookup
// failure (temperror).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Checker evaluates SPF policies. The zero value uses net.DefaultResolver.
type Checker struct {
	Resolver Resolver
}

// Query names what is checked (RFC 7208 §4.1).
type Query struct {
	// IP is the SMTP client's address; an IPv4-mapped IPv6 address is
	// treated as IPv4 (§5.6).
	IP netip.Addr
	// Helo is the HELO/EHLO name.
	Helo string
	// Sender is the MAIL FROM address; when empty, the check is of the
	// HELO identity, as postmaster@Helo (§2.4).
	Sender string
	// Receiver is the receiving host's name, for the %{r} macro; "unknown"
	// when empty.
	Receiver string
}

// Verdict is the outcome of a check.
type Verdict struct {
	Result Result
	// Domain is the domain whose policy was checked.
	Domain string
	// Term is the directive that gave the result, "redirect=..." when it
	// came from a redirect, empty when no term matched.
	Term string
	// Explanation is the expanded exp= text of a fail, empty otherwise.
	Explanation string
	// Err says why a result is permerror, temperror or none.
	Err error
	// Lookups and VoidLookups count the DNS lookups of §4.6.4.
	Lookups, VoidLookups int
}

// Check runs check_host() for the MAIL FROM identity (or HELO when Sender is
// empty) of q. now is the time for the %{t} macro.
func (c *Checker) Check(ctx context.Context, q Query, now time.Time) Verdict {
	// §4.3: the domain is the part after the last "@"; a missing local-part
	// is "postmaster". §2.4: an empty reverse-path is checked as
	// postmaster@helo.
	sender, local, domain := q.Sender, "", q.Helo
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		local, domain = sender[:i], sender[i+1:]
	}
	if local == "" {
		local = "postmaster"
	}
	sender = local + "@" + domain
	res := c.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	e := &eval{
		ctx: ctx, res: res, now: now,
		ip: q.IP.Unmap(), helo: q.Helo, sender: sender,
		local: local, senderDomain: domain, receiver: q.Receiver,
	}
	if e.receiver == "" {
		e.receiver = "unknown"
	}
	v := Verdict{Domain: domain}
	if !q.IP.IsValid() {
		v.Result, v.Err = PermError, ErrInvalidIP
		return v
	}
	// §4.3: a malformed or single-label domain gives none at once.
	if !validHostName(domain) {
		v.Result, v.Err = None, fmt.Errorf("%w: %q", ErrMalformedDomain, domain)
		return v
	}
	r := e.checkHost(domain, true)
	v.Result, v.Term, v.Explanation, v.Err = r.result, r.term, r.explanation, r.err
	v.Lookups, v.VoidLookups = e.lookups, e.voids
	return v
}

// eval is the state of one check: limits are shared by every nested
// include and redirect.
type eval struct {
	ctx          context.Context
	res          Resolver
	now          time.Time
	ip           netip.Addr
	helo         string
	sender       string
	local        string
	senderDomain string
	receiver     string

	lookups, voids int
	ptrDone        bool
	ptrNames       []string // validated names of ip, for %{p}
}

type outcome struct {
	result      Result
	term        string
	explanation string
	err         error
}

// LookupRecord fetches and selects the SPF record of domain (RFC 7208 §4.4,
// §4.5): the result is None with ErrNoRecord when there is none, PermError
// with ErrMultipleRecords when there are several, TempError on a DNS
// failure.
func LookupRecord(ctx context.Context, res Resolver, domain string) (string, Result, error) {
	txts, err := res.LookupTXT(ctx, domain)
	if err != nil {
		if isNotFound(err) {
			return "", None, fmt.Errorf("%w at %s", ErrNoRecord, domain)
		}
		return "", TempError, fmt.Errorf("%w: txt %s: %w", ErrDNS, domain, err)
	}
	var recs []string
	for _, t := range txts {
		if IsSPF(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", None, fmt.Errorf("%w at %s", ErrNoRecord, domain)
	case 1:
		return recs[0], Pass, nil
	default:
		return "", PermError, fmt.Errorf("%w at %s: %d records", ErrMultipleRecords, domain, len(recs))
	}
}

func (e *eval) checkHost(domain string, top bool) outcome {
	txt, res, err := LookupRecord(e.ctx, e.res, domain)
	if err != nil {
		return outcome{result: res, err: err}
	}
	rec, err := Parse(txt)
	if err != nil {
		return outcome{result: PermError, err: fmt.Errorf("%s: %w", domain, err)}
	}
	for _, d := range rec.Directives {
		match, o := e.directive(d, domain)
		if o.result != "" {
			return o
		}
		if !match {
			continue
		}
		out := outcome{result: d.Result(), term: d.String()}
		if out.result == Fail && top && rec.Exp != "" {
			out.explanation = e.explain(rec.Exp, domain)
		}
		return out
	}
	if rec.Redirect != "" {
		// §6.1: redirect applies after all mechanisms; its exp=, not
		// ours, explains the result.
		if err := e.count(); err != nil {
			return outcome{result: PermError, err: err}
		}
		target, err := e.expandDomain(rec.Redirect, domain)
		if err != nil {
			return outcome{result: PermError, err: err}
		}
		if !validHostName(target) {
			return outcome{result: PermError, err: fmt.Errorf("%w: %q", ErrInvalidRedirect, target)}
		}
		o := e.checkHost(target, top)
		if o.result == None {
			return outcome{result: PermError, err: fmt.Errorf("%w: %s: %w", ErrRedirectNone, target, o.err)}
		}
		if o.term == "" {
			o.term = "redirect=" + target
		}
		return o
	}
	return outcome{result: Neutral} // §4.7
}

// directive evaluates one mechanism. A non-empty o.result ends the check
// (an error, or an include's error result).
func (e *eval) directive(d Directive, domain string) (match bool, o outcome) {
	fail := func(r Result, err error) (bool, outcome) { return false, outcome{result: r, err: err} }
	if d.NeedsLookup() {
		if err := e.count(); err != nil {
			return fail(PermError, err)
		}
	}
	target := domain
	if d.Domain != "" {
		t, err := e.expandDomain(d.Domain, domain)
		if err != nil {
			return fail(PermError, err)
		}
		target = t
	}
	switch d.Mechanism {
	case MechAll:
		return true, o
	case MechIP4, MechIP6:
		return d.Prefix.Contains(e.ip), o
	case MechInclude:
		if !validHostName(target) {
			return fail(PermError, fmt.Errorf("%w: include:%s is not a valid domain", ErrIncludeNone, target))
		}
		sub := e.checkHost(target, false)
		switch sub.result {
		case Pass:
			return true, o
		case Fail, SoftFail, Neutral:
			return false, o
		case None:
			// §5.2: an include of a domain without a record is a
			// permerror.
			return fail(PermError, fmt.Errorf("%w: %s", ErrIncludeNone, target))
		default:
			return fail(sub.result, sub.err)
		}
	case MechA:
		if !validName(target) {
			return false, o // §4.3, §5: a name that cannot exist matches nothing
		}
		addrs, err := e.lookupIP(target, e.family())
		if err != nil {
			return fail(e.lookupFailure(err, "a "+target))
		}
		return matchAny(addrs, e.ip, d), o
	case MechMX:
		if !validName(target) {
			return false, o
		}
		mxs, err := e.res.LookupMX(e.ctx, target)
		if err != nil {
			return fail(e.lookupFailure(err, "mx "+target))
		}
		if err := e.void(len(mxs)); err != nil {
			return fail(PermError, err)
		}
		if len(mxs) > maxMX {
			return fail(PermError, fmt.Errorf("%w: %s has %d", ErrTooManyMX, target, len(mxs)))
		}
		for _, mx := range mxs {
			host := strings.TrimSuffix(mx.Host, ".")
			if host == "" {
				continue // RFC 7505 null MX: no host to check
			}
			addrs, err := e.res.LookupNetIP(e.ctx, e.family(), host)
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return fail(TempError, fmt.Errorf("%w: mx host %s: %w", ErrDNS, host, err))
			}
			if matchAny(addrs, e.ip, d) {
				return true, o
			}
		}
		return false, o
	case MechPTR:
		if !validName(target) {
			return false, o
		}
		names, err := e.validatedNames(true)
		if err != nil {
			return fail(PermError, err)
		}
		for _, n := range names {
			if equalFold(n, target) || hasSuffixFold(n, "."+target) {
				return true, o
			}
		}
		return false, o
	case MechExists:
		if !validName(target) {
			return false, o
		}
		// §5.7: always an A lookup, whatever the client's family.
		addrs, err := e.lookupIP(target, "ip4")
		if err != nil {
			return fail(e.lookupFailure(err, "exists "+target))
		}
		return len(addrs) > 0, o
	}
	return fail(PermError, fmt.Errorf("%w: unknown mechanism %q", ErrSyntax, d.Mechanism))
}

// lookupIP looks up addresses and counts a void answer.
func (e *eval) lookupIP(name, network string) ([]netip.Addr, error) {
	addrs, err := e.res.LookupNetIP(e.ctx, network, name)
	if err != nil {
		return nil, err
	}
	if err := e.void(len(addrs)); err != nil {
		return nil, err
	}
	return addrs, nil
}

// lookupFailure turns a mechanism's lookup error into its result: a
// not-found answer is a void lookup that matches nothing, a limit is a
// permerror, anything else a temperror (§5).
func (e *eval) lookupFailure(err error, what string) (Result, error) {
	switch {
	case errors.Is(err, ErrVoidLookupLimit):
		return PermError, err
	case isNotFound(err):
		if verr := e.void(0); verr != nil {
			return PermError, verr
		}
		return "", nil
	default:
		return TempError, fmt.Errorf("%w: %s: %w", ErrDNS, what, err)
	}
}

func (e *eval) count() error {
	if e.lookups >= MaxLookups {
		return ErrLookupLimit
	}
	e.lookups++
	return nil
}

func (e *eval) void(answers int) error {
	if answers > 0 {
		return nil
	}
	e.voids++
	if e.voids > MaxVoidLookups {
		return ErrVoidLookupLimit
	}
	return nil
}

func (e *eval) family() string {
	if e.ip.Is4() {
		return "ip4"
	}
	return "ip6"
}

func matchAny(addrs []netip.Addr, ip netip.Addr, d Directive) bool {
	bits := d.CIDR6
	if ip.Is4() {
		bits = d.CIDR4
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() != ip.Is4() {
			continue
		}
		p, err := a.Prefix(bits)
		if err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

// validatedNames returns the names of the client IP that resolve back to it
// (§5.5), at most ten of them. forMech says whether the PTR lookup is that of
// a ptr mechanism, whose void answer counts against the limit.
func (e *eval) validatedNames(forMech bool) ([]string, error) {
	if e.ptrDone {
		return e.ptrNames, nil
	}
	names, err := e.res.LookupAddr(e.ctx, e.ip.String())
	if err != nil {
		// §5.5: a DNS error on the PTR lookup makes the mechanism not
		// match.
		if forMech && isNotFound(err) {
			if verr := e.void(0); verr != nil {
				return nil, verr
			}
		}
		e.ptrDone = true
		return nil, nil
	}
	if len(names) > maxPTR {
		names = names[:maxPTR]
	}
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if !validName(n) {
			continue
		}
		addrs, err := e.res.LookupNetIP(e.ctx, e.family(), n)
		if err != nil {
			continue // §5.5: a name whose lookup fails is skipped
		}
		for _, a := range addrs {
			if a.Unmap() == e.ip {
				e.ptrNames = append(e.ptrNames, n)
				break
			}
		}
	}
	e.ptrDone = true
	return e.ptrNames, nil
}

// expandDomain expands a domain-spec and shortens the result to 253
// characters by dropping labels from the left (§7.3).
func (e *eval) expandDomain(spec, domain string) (string, error) {
	toks, err := parseMacroString(spec, false)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	s := strings.TrimSuffix(e.expand(toks, domain), ".")
	for len(s) > 253 {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	return s, nil
}

func (e *eval) expand(toks []macroToken, domain string) string {
	var b strings.Builder
	for _, t := range toks {
		if t.letter == 0 {
			b.WriteString(t.literal)
			continue
		}
		b.WriteString(t.transform(e.macroValue(t.letter, domain)))
	}
	return b.String()
}

func (e *eval) macroValue(letter byte, domain string) string {
	switch letter {
	case 's':
		return e.sender
	case 'l':
		return e.local
	case 'o':
		return e.senderDomain
	case 'd':
		return domain
	case 'i':
		return dottedIP(e.ip)
	case 'p':
		return e.validatedName(domain)
	case 'v':
		if e.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'h':
		return e.helo
	case 'c':
		return e.ip.String()
	case 'r':
		return e.receiver
	case 't':
		return strconv.FormatInt(e.now.Unix(), 10)
	}
	return ""
}

// validatedName picks the %{p} value: the domain itself if validated, else
// a validated subdomain of it, else any validated name, else "unknown"
// (§7.3).
func (e *eval) validatedName(domain string) string {
	names, err := e.validatedNames(false)
	if err != nil || len(names) == 0 {
		return "unknown"
	}
	for _, n := range names {
		if equalFold(n, domain) {
			return n
		}
	}
	for _, n := range names {
		if hasSuffixFold(n, "."+domain) {
			return n
		}
	}
	return names[0]
}

// explain computes the explanation of a fail (§6.2). Any problem with it
// leaves the explanation empty, as if there were no exp=.
func (e *eval) explain(spec, domain string) string {
	target, err := e.expandDomain(spec, domain)
	if err != nil || !validName(target) {
		return ""
	}
	txts, err := e.res.LookupTXT(e.ctx, target)
	if err != nil || len(txts) != 1 {
		return ""
	}
	text := txts[0]
	for i := 0; i < len(text); i++ {
		if text[i] < 0x20 || text[i] > 0x7e {
			return ""
		}
	}
	toks, err := parseMacroString(text, true)
	if err != nil {
		return ""
	}
	return e.expand(toks, domain)
}

// dottedIP is the %{i} form: dotted quad, or 32 dotted nibbles for IPv6.
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789abcdef"
	b := ip.As16()
	parts := make([]string, 0, 32)
	for _, x := range b {
		parts = append(parts, string(hex[x>>4]), string(hex[x&15]))
	}
	return strings.Join(parts, ".")
}

// validName reports whether a name can be looked up: labels of 1 to 63
// bytes, at most 253 in all (§4.3).
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

// validHostName is validName plus the shape of a fully qualified host name:
// several labels and a top label that is not numeric, which rules out
// address literals (§4.3).
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if !validName(s) {
		return false
	}
	dot := strings.LastIndexByte(s, '.')
	if dot < 0 {
		return false
	}
	return isTopLabel(s[dot+1:])
}

func isNotFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// NewResolver returns the resolver a command line uses: a DNSClient that
// asks only server when server is a HOST:PORT, else the system resolver.
func NewResolver(server string, timeout time.Duration) Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &DNSClient{Server: server, Timeout: timeout}
}
