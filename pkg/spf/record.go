package spf

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Errors that describe why a record is not valid. Parse wraps them with the
// offending term; callers test them with errors.Is.
var (
	// ErrNotSPF means the text does not start with the version "v=spf1"
	// (RFC 7208 §4.5); such a TXT record is simply not an SPF record.
	ErrNotSPF = errors.New("spf: not an spf record")
	// ErrSyntax means the record breaks the grammar of RFC 7208 §4.6 or
	// §12: every receiver returns permerror for it.
	ErrSyntax = errors.New("spf: syntax error")
)

// Mechanism names (RFC 7208 §5).
const (
	MechAll     = "all"
	MechInclude = "include"
	MechA       = "a"
	MechMX      = "mx"
	MechPTR     = "ptr"
	MechIP4     = "ip4"
	MechIP6     = "ip6"
	MechExists  = "exists"
)

// Directive is one mechanism with its qualifier (RFC 7208 §4.6.2).
type Directive struct {
	// Qualifier is one of '+', '-', '~', '?'; '+' when the record omits it.
	Qualifier byte
	// Mechanism is one of the Mech* names, in lower case.
	Mechanism string
	// Domain is the domain-spec as written, macros unexpanded; empty when
	// the mechanism applies to the current domain.
	Domain string
	// Prefix is the network of an ip4 or ip6 mechanism.
	Prefix netip.Prefix
	// CIDR4 and CIDR6 are the prefix lengths of an a or mx mechanism: 32
	// and 128 when the record gives none.
	CIDR4, CIDR6 int
}

// Result is the result this directive gives when it matches.
func (d Directive) Result() Result {
	switch d.Qualifier {
	case '-':
		return Fail
	case '~':
		return SoftFail
	case '?':
		return Neutral
	default:
		return Pass
	}
}

// NeedsLookup reports whether evaluating the directive costs one of the ten
// DNS lookups RFC 7208 §4.6.4 allows.
func (d Directive) NeedsLookup() bool {
	switch d.Mechanism {
	case MechInclude, MechA, MechMX, MechPTR, MechExists:
		return true
	}
	return false
}

// String renders the directive the way a record writes it, without a '+'.
func (d Directive) String() string {
	var b strings.Builder
	if d.Qualifier != '+' && d.Qualifier != 0 {
		b.WriteByte(d.Qualifier)
	}
	b.WriteString(d.Mechanism)
	switch d.Mechanism {
	case MechIP4, MechIP6:
		b.WriteByte(':')
		if d.Prefix.Bits() == d.Prefix.Addr().BitLen() {
			b.WriteString(d.Prefix.Addr().String())
		} else {
			b.WriteString(d.Prefix.String())
		}
	case MechA, MechMX:
		if d.Domain != "" {
			b.WriteString(":" + d.Domain)
		}
		if d.CIDR4 != 32 {
			b.WriteString("/" + strconv.Itoa(d.CIDR4))
		}
		if d.CIDR6 != 128 {
			b.WriteString("//" + strconv.Itoa(d.CIDR6))
		}
	default:
		if d.Domain != "" {
			b.WriteString(":" + d.Domain)
		}
	}
	return b.String()
}

// Modifier is a name=value term other than redirect and exp (RFC 7208 §6):
// receivers ignore it, but it must still be well formed.
type Modifier struct {
	Name, Value string
}

// Record is a parsed SPF record.
type Record struct {
	Directives []Directive
	// Redirect and Exp are the domain-specs of the redirect= and exp=
	// modifiers, empty when absent.
	Redirect, Exp string
	// Modifiers are the unknown modifiers, in order.
	Modifiers []Modifier
}

// String renders the record in canonical form: "v=spf1", the directives in
// order, then redirect=, exp= and the other modifiers.
func (r *Record) String() string {
	parts := []string{"v=spf1"}
	for _, d := range r.Directives {
		parts = append(parts, d.String())
	}
	if r.Redirect != "" {
		parts = append(parts, "redirect="+r.Redirect)
	}
	if r.Exp != "" {
		parts = append(parts, "exp="+r.Exp)
	}
	for _, m := range r.Modifiers {
		parts = append(parts, m.Name+"="+m.Value)
	}
	return strings.Join(parts, " ")
}

// IsSPF reports whether a TXT record claims to be an SPF record: it starts
// with "v=spf1" followed by a space or the end (RFC 7208 §4.5), in any case.
func IsSPF(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// Parse parses a complete SPF record strictly: a record with any syntax error
// anywhere is rejected (RFC 7208 §4.6), even where a lazy evaluator would have
// matched an earlier term. It returns an error wrapping ErrNotSPF or
// ErrSyntax.
func Parse(txt string) (*Record, error) {
	if !IsSPF(txt) {
		return nil, ErrNotSPF
	}
	// RFC 7208 §3.1 and the ABNF admit only 7-bit printable text and
	// spaces.
	for i := 0; i < len(txt); i++ {
		if c := txt[i]; c < 0x20 || c > 0x7e {
			return nil, fmt.Errorf("%w: byte 0x%02x at offset %d is not printable ASCII", ErrSyntax, c, i)
		}
	}
	rec := &Record{}
	var seenRedirect, seenExp bool
	for _, term := range strings.Split(txt[6:], " ") {
		if term == "" {
			continue // terms are separated by 1*SP (§4.6.1)
		}
		if name, value, ok := splitModifier(term); ok {
			switch strings.ToLower(name) {
			case "redirect":
				// §6: redirect and exp may each appear once.
				if seenRedirect {
					return nil, fmt.Errorf("%w: second redirect= in %q", ErrSyntax, term)
				}
				seenRedirect = true
				if err := checkDomainSpec(value, false); err != nil {
					return nil, fmt.Errorf("%w: %q: %w", ErrSyntax, term, err)
				}
				rec.Redirect = value
			case "exp":
				if seenExp {
					return nil, fmt.Errorf("%w: second exp= in %q", ErrSyntax, term)
				}
				seenExp = true
				if err := checkDomainSpec(value, false); err != nil {
					return nil, fmt.Errorf("%w: %q: %w", ErrSyntax, term, err)
				}
				rec.Exp = value
			default:
				// unknown-modifier = name "=" macro-string (§A).
				if _, err := parseMacroString(value, false); err != nil {
					return nil, fmt.Errorf("%w: %q: %w", ErrSyntax, term, err)
				}
				rec.Modifiers = append(rec.Modifiers, Modifier{Name: name, Value: value})
			}
			continue
		}
		d, err := parseDirective(term)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrSyntax, term, err)
		}
		rec.Directives = append(rec.Directives, d)
	}
	return rec, nil
}

// splitModifier recognises name "=" value, where name = ALPHA *( ALPHA /
// DIGIT / "-" / "_" / "." ) (RFC 7208 §4.6.1): the "=" must come before any
// ":" or "/".
func splitModifier(term string) (name, value string, ok bool) {
	i := strings.IndexByte(term, '=')
	if i <= 0 || !isAlpha(term[0]) {
		return "", "", false
	}
	for j := 1; j < i; j++ {
		c := term[j]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return "", "", false
		}
	}
	return term[:i], term[i+1:], true
}

func parseDirective(term string) (Directive, error) {
	d := Directive{Qualifier: '+', CIDR4: 32, CIDR6: 128}
	switch term[0] {
	case '+', '-', '~', '?':
		d.Qualifier = term[0]
		term = term[1:]
	}
	end := strings.IndexAny(term, ":/")
	if end < 0 {
		end = len(term)
	}
	d.Mechanism = strings.ToLower(term[:end])
	rest := term[end:]
	switch d.Mechanism {
	case MechAll:
		if rest != "" {
			return d, errors.New("all takes no argument")
		}
	case MechInclude, MechExists:
		if !strings.HasPrefix(rest, ":") {
			return d, fmt.Errorf("%s needs a domain", d.Mechanism)
		}
		d.Domain = rest[1:]
		if err := checkDomainSpec(d.Domain, false); err != nil {
			return d, err
		}
	case MechPTR:
		if rest == "" {
			break
		}
		if rest[0] != ':' {
			return d, errors.New("ptr takes no prefix length")
		}
		d.Domain = rest[1:]
		if err := checkDomainSpec(d.Domain, false); err != nil {
			return d, err
		}
	case MechA, MechMX:
		spec := rest
		if strings.HasPrefix(rest, ":") {
			spec = rest[1:]
			// The domain-spec may itself contain "/", so the prefix
			// lengths are the longest well-formed suffix.
			d.Domain, spec = splitDualCIDR(spec)
			if err := checkDomainSpec(d.Domain, false); err != nil {
				return d, err
			}
		}
		if err := parseDualCIDR(spec, &d); err != nil {
			return d, err
		}
	case MechIP4, MechIP6:
		if !strings.HasPrefix(rest, ":") {
			return d, fmt.Errorf("%s needs an address", d.Mechanism)
		}
		p, err := parseNetwork(d.Mechanism, rest[1:])
		if err != nil {
			return d, err
		}
		d.Prefix = p
	default:
		return d, fmt.Errorf("unknown mechanism %q", d.Mechanism)
	}
	return d, nil
}

// splitDualCIDR splits "domain/24//64" into the domain-spec and the
// dual-cidr-length; a suffix that is not a well-formed cidr stays part of the
// domain-spec, where the top-label check rejects it.
func splitDualCIDR(s string) (domain, cidr string) {
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '/' {
			continue
		}
		if isDualCIDRShape(s[i:]) {
			return s[:i], s[i:]
		}
	}
	return s, ""
}

// isDualCIDRShape reports whether s has the shape [ "/" 1*DIGIT ] [ "//"
// 1*DIGIT ].
func isDualCIDRShape(s string) bool {
	if s == "" {
		return true
	}
	if strings.HasPrefix(s, "//") {
		return allDigits(s[2:])
	}
	if !strings.HasPrefix(s, "/") {
		return false
	}
	s = s[1:]
	if i := strings.Index(s, "//"); i >= 0 {
		return allDigits(s[:i]) && allDigits(s[i+2:])
	}
	return allDigits(s)
}

func parseDualCIDR(s string, d *Directive) error {
	if s == "" {
		return nil
	}
	if !isDualCIDRShape(s) {
		return fmt.Errorf("bad prefix length %q", s)
	}
	v4, v6, dual := s, "", false
	if i := strings.Index(s, "//"); i >= 0 {
		v4, v6, dual = s[:i], s[i+2:], true
	}
	if v4 != "" {
		n, err := parseCIDRLength(v4[1:], 32)
		if err != nil {
			return err
		}
		d.CIDR4 = n
	}
	if dual {
		n, err := parseCIDRLength(v6, 128)
		if err != nil {
			return err
		}
		d.CIDR6 = n
	}
	return nil
}

// parseCIDRLength parses a prefix length: digits, no leading zero, at most
// max. RFC 7208 §5.6 forbids leading zeros in ip4-network, and the same
// reading applies to the length.
func parseCIDRLength(s string, max int) (int, error) {
	if !allDigits(s) || (len(s) > 1 && s[0] == '0') || len(s) > 3 {
		return 0, fmt.Errorf("bad prefix length %q", s)
	}
	n, _ := strconv.Atoi(s)
	if n > max {
		return 0, fmt.Errorf("prefix length %d is over %d", n, max)
	}
	return n, nil
}

func parseNetwork(mech, s string) (netip.Prefix, error) {
	addr, length, hasLen := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address %q", addr)
	}
	if mech == MechIP4 && !a.Is4() || mech == MechIP6 && !a.Is6() {
		return netip.Prefix{}, fmt.Errorf("%q is not an %s address", addr, mech)
	}
	bits := a.BitLen()
	if hasLen {
		if bits, err = parseCIDRLength(length, a.BitLen()); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// checkDomainSpec checks domain-spec = macro-string domain-end, where
// domain-end = ( "." toplabel [ "." ] ) / macro-expand (RFC 7208 §7.1).
func checkDomainSpec(s string, exp bool) error {
	if s == "" {
		return errors.New("empty domain")
	}
	toks, err := parseMacroString(s, exp)
	if err != nil {
		return err
	}
	last := toks[len(toks)-1]
	if last.letter != 0 || last.escape {
		return nil // ends in a macro-expand
	}
	// Gather the literal text after the last macro-expand.
	tail := ""
	for i := len(toks) - 1; i >= 0 && toks[i].letter == 0 && !toks[i].escape; i-- {
		tail = toks[i].literal + tail
	}
	tail = strings.TrimSuffix(tail, ".")
	dot := strings.LastIndexByte(tail, '.')
	if dot < 0 {
		return fmt.Errorf("domain %q does not end in a dot and a top label", s)
	}
	if !isTopLabel(tail[dot+1:]) {
		return fmt.Errorf("domain %q has an invalid top label %q", s, tail[dot+1:])
	}
	return nil
}

// isTopLabel checks toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum
// "-" *( alphanum / "-" ) alphanum ): letters, digits and inner dashes, not
// all digits.
func isTopLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	numeric := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlpha(c):
			numeric = false
		case c == '-':
			numeric = false
		case isDigit(c):
		default:
			return false
		}
	}
	return !numeric
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
