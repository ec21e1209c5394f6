// Package tenancy is the model of who sends what from where: tenant →
// brand → mail stream (transactional, newsletter, promotional, …,
// optionally narrowed per communication type) → sending domain (bounce
// domain, DKIM selectors, postal address, unsubscribe settings) → IP pool
// (IPs with their host names, new or warm) or a relay route.
//
// Giving each brand and each kind of mail its own sending domain and IPs
// keeps one from hurting the other's reputation: a promotional campaign
// that draws complaints does not slow a brand's password resets.
//
// The model is a YAML file (see example.yaml, shipped beside this file),
// decoded strictly: an unknown field, a reference to a pool or domain that
// does not exist, or a value out of range is an error naming the field's
// path ("tenants.acme.brands.shop.streams.newsletter.pool"), so a mistake
// stops the planner at start.
package tenancy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailwave/mailwave/pkg/warmup"
)

// Errors.
var (
	// ErrInvalid wraps every error of Load, Parse and Validate; the
	// message names the field.
	ErrInvalid = errors.New("tenancy: invalid")
	// ErrNoRoute wraps every error of Resolve: the request names a
	// tenant, brand or stream that is not configured.
	ErrNoRoute = errors.New("tenancy: no route")
)

// Kind says which rules a mail stream follows.
type Kind string

// Stream kinds.
const (
	// Transactional mail is one-to-one mail a recipient expects (receipts,
	// password resets): no unsubscribe is required.
	Transactional Kind = "transactional"
	// Bulk mail (newsletters, promotions) carries one-click unsubscribe
	// headers (RFC 8058), a Feedback-ID, and must show the sender's postal
	// address and an unsubscribe link (CAN-SPAM).
	Bulk Kind = "bulk"
)

// Any is the name that matches every tenant, brand or stream not named
// otherwise.
const Any = "*"

// Config is a tenancy file.
type Config struct {
	// Warmup is the ramp of new IPs and domains unless their own names
	// one; the default is warmup.Default().
	Warmup  *warmup.Schedule   `yaml:"warmup"`
	Pools   map[string]*Pool   `yaml:"pools"`
	Domains map[string]*Domain `yaml:"domains"`
	Tenants map[string]*Tenant `yaml:"tenants"`
}

// Pool is a set of source IPs.
type Pool struct {
	IPs []IP `yaml:"ips"`
	// Spill lets volume beyond a new IP's daily cap leave from the pool's
	// warm IPs; without it the volume waits for the next day.
	Spill bool `yaml:"spill"`
	// Warmup overrides the file's ramp for the pool's new IPs.
	Warmup *warmup.Schedule `yaml:"warmup"`
}

// IP is one source address.
type IP struct {
	IP string `yaml:"ip"`
	// Hostname is the IP's forward-confirmed reverse DNS name, used in
	// EHLO.
	Hostname string `yaml:"hostname"`
	// New marks an IP without a reputation: it follows the warm-up ramp.
	New bool `yaml:"new"`
}

// Domain is a sending domain.
type Domain struct {
	// BounceDomain receives bounces (VERP return paths); default
	// "bounces.<domain>".
	BounceDomain string `yaml:"bounce_domain"`
	// DKIMSelectors sign the domain's mail (several for dual RSA and
	// Ed25519 signatures).
	DKIMSelectors []string `yaml:"dkim_selectors"`
	// PostalAddress is the sender's physical postal address, which bulk
	// mail must show (CAN-SPAM).
	PostalAddress string      `yaml:"postal_address"`
	Unsubscribe   Unsubscribe `yaml:"unsubscribe"`
	// New marks a domain without a reputation: its volume per provider
	// follows the warm-up ramp too.
	New    bool             `yaml:"new"`
	Warmup *warmup.Schedule `yaml:"warmup"`
}

// Unsubscribe says where recipients unsubscribe.
type Unsubscribe struct {
	// URL is the public HTTPS base of the planner's one-click endpoint:
	// links are <url>/u/<token>.
	URL string `yaml:"url"`
	// Mailto is the address of the List-Unsubscribe mailto alternative.
	Mailto string `yaml:"mailto"`
}

// Tenant is a customer of the platform.
type Tenant struct {
	Brands map[string]*Brand `yaml:"brands"`
}

// Brand is one of a tenant's brands.
type Brand struct {
	// DefaultStream is used by requests that name no mail stream.
	DefaultStream string             `yaml:"default_stream"`
	Streams       map[string]*Stream `yaml:"streams"`
}

// Stream is a mail stream of a brand.
type Stream struct {
	Kind Kind `yaml:"kind"`
	// Domain names an entry of domains.
	Domain string `yaml:"domain"`
	// Pool names an entry of pools; Relay names a relay route of the
	// sender instead. Exactly one is set.
	Pool  string `yaml:"pool"`
	Relay string `yaml:"relay"`
	// SendWindow spreads a campaign over this long unless the request
	// names its own; 0 sends as fast as shaping allows.
	SendWindow time.Duration `yaml:"send_window"`
	// MaxAge bounds retries unless the request names its own.
	MaxAge time.Duration `yaml:"max_age"`
	// Types give communication types their own domain, pool or relay;
	// the kind and windows are the stream's.
	Types map[string]*TypeRoute `yaml:"types"`
}

// TypeRoute overrides where one communication type of a stream goes.
type TypeRoute struct {
	Domain string `yaml:"domain"`
	Pool   string `yaml:"pool"`
	Relay  string `yaml:"relay"`
}

//go:embed example.yaml
var exampleYAML []byte

// Example returns the shipped example file.
func Example() []byte { return bytes.Clone(exampleYAML) }

// Load reads and validates the tenancy file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Parse(b)
}

// Parse decodes and validates a tenancy file. Unknown fields are errors.
func Parse(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, path, fmt.Sprintf(format, args...))
}

// Validate checks every field and reference and fills defaults (bounce
// domains, the ramp). Errors wrap ErrInvalid and name the field.
func (c *Config) Validate() error {
	if c.Warmup == nil {
		d := warmup.Default()
		c.Warmup = &d
	} else if err := c.Warmup.Validate("warmup"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	for _, name := range sortedKeys(c.Pools) {
		p := c.Pools[name]
		path := "pools." + name
		if !isName(name) {
			return invalid(path, "a pool name is letters, digits, '-' and '_'")
		}
		if p == nil || len(p.IPs) == 0 {
			return invalid(path+".ips", "a pool needs at least one IP")
		}
		seen := map[netip.Addr]bool{}
		for i, ip := range p.IPs {
			ipath := fmt.Sprintf("%s.ips[%d]", path, i)
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				return invalid(ipath+".ip", "%q is not an IP address", ip.IP)
			}
			if seen[a] {
				return invalid(ipath+".ip", "%s appears twice", a)
			}
			seen[a] = true
			if !isHostname(ip.Hostname) {
				return invalid(ipath+".hostname", "%q is not a host name (the IP's reverse DNS name, used in EHLO)", ip.Hostname)
			}
		}
		if p.Warmup != nil {
			if err := p.Warmup.Validate(path + ".warmup"); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
		}
	}
	for _, name := range sortedKeys(c.Domains) {
		d := c.Domains[name]
		path := "domains." + name
		if !isHostname(name) || strings.ToLower(name) != name {
			return invalid(path, "%q is not a lower-case domain name", name)
		}
		if d == nil {
			d = &Domain{}
			c.Domains[name] = d
		}
		if d.BounceDomain == "" {
			d.BounceDomain = "bounces." + name
		} else if !isHostname(d.BounceDomain) {
			return invalid(path+".bounce_domain", "%q is not a domain name", d.BounceDomain)
		}
		for i, s := range d.DKIMSelectors {
			if !isLabel(s) {
				return invalid(fmt.Sprintf("%s.dkim_selectors[%d]", path, i), "%q is not a DNS label", s)
			}
		}
		if err := validUnsubscribe(path+".unsubscribe", d.Unsubscribe); err != nil {
			return err
		}
		if d.Warmup != nil {
			if err := d.Warmup.Validate(path + ".warmup"); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
		}
	}
	if len(c.Tenants) == 0 {
		return invalid("tenants", "at least one tenant is needed")
	}
	for _, tn := range sortedKeys(c.Tenants) {
		t := c.Tenants[tn]
		path := "tenants." + tn
		if tn != Any && !isName(tn) {
			return invalid(path, "a tenant name is letters, digits, '-' and '_' (or \"*\")")
		}
		if t == nil || len(t.Brands) == 0 {
			return invalid(path+".brands", "a tenant needs at least one brand")
		}
		for _, bn := range sortedKeys(t.Brands) {
			b := t.Brands[bn]
			bpath := path + ".brands." + bn
			if bn != Any && !isName(bn) {
				return invalid(bpath, "a brand name is letters, digits, '-' and '_' (or \"*\")")
			}
			if b == nil || len(b.Streams) == 0 {
				return invalid(bpath+".streams", "a brand needs at least one mail stream")
			}
			if b.DefaultStream != "" && b.Streams[b.DefaultStream] == nil {
				return invalid(bpath+".default_stream", "%q is not one of the brand's streams", b.DefaultStream)
			}
			for _, sn := range sortedKeys(b.Streams) {
				if err := c.validateStream(bpath+".streams."+sn, sn, b.Streams[sn]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *Config) validateStream(path, name string, s *Stream) error {
	if name != Any && !isName(name) {
		return invalid(path, "a stream name is letters, digits, '-' and '_' (or \"*\")")
	}
	if s == nil {
		return invalid(path, "empty stream")
	}
	switch s.Kind {
	case Transactional, Bulk:
	case "":
		return invalid(path+".kind", "missing: transactional or bulk")
	default:
		return invalid(path+".kind", "%q is not transactional or bulk", s.Kind)
	}
	if s.SendWindow < 0 {
		return invalid(path+".send_window", "must not be negative")
	}
	if s.MaxAge != 0 && s.MaxAge < time.Minute {
		return invalid(path+".max_age", "must be at least 1m")
	}
	if err := c.validateTarget(path, s.Kind, s.Domain, s.Pool, s.Relay); err != nil {
		return err
	}
	for _, tn := range sortedKeys(s.Types) {
		t := s.Types[tn]
		tpath := path + ".types." + tn
		if !isName(tn) {
			return invalid(tpath, "a communication type is letters, digits, '-' and '_'")
		}
		if t == nil {
			return invalid(tpath, "empty type route")
		}
		domain, pool, relay := t.Domain, t.Pool, t.Relay
		if domain == "" {
			domain = s.Domain
		}
		if pool == "" && relay == "" {
			pool, relay = s.Pool, s.Relay
		}
		if err := c.validateTarget(tpath, s.Kind, domain, pool, relay); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateTarget(path string, kind Kind, domain, pool, relay string) error {
	d := c.Domains[domain]
	if d == nil {
		if domain == "" {
			return invalid(path+".domain", "missing: name one of domains")
		}
		return invalid(path+".domain", "%q is not one of domains", domain)
	}
	switch {
	case pool != "" && relay != "":
		return invalid(path+".relay", "a stream goes to a pool or a relay, not both")
	case pool == "" && relay == "":
		return invalid(path+".pool", "missing: name a pool or a relay")
	case pool != "" && c.Pools[pool] == nil:
		return invalid(path+".pool", "%q is not one of pools", pool)
	case relay != "" && !isName(relay):
		return invalid(path+".relay", "%q is not a relay route name", relay)
	}
	if kind == Bulk {
		if strings.TrimSpace(d.PostalAddress) == "" {
			return invalid("domains."+domain+".postal_address", "bulk mail from %s (%s) must show a postal address", domain, path)
		}
		if d.Unsubscribe.URL == "" {
			return invalid("domains."+domain+".unsubscribe.url", "bulk mail from %s (%s) needs a one-click unsubscribe URL", domain, path)
		}
	}
	return nil
}

func validUnsubscribe(path string, u Unsubscribe) error {
	if u.URL != "" {
		p, err := url.Parse(u.URL)
		// RFC 8058 §3.1: the one-click URI must be HTTPS.
		if err != nil || p.Scheme != "https" || p.Host == "" || p.RawQuery != "" || p.Fragment != "" {
			return invalid(path+".url", "%q is not an https URL without query", u.URL)
		}
	}
	if u.Mailto != "" {
		a, err := mail.ParseAddress(u.Mailto)
		if err != nil || a.Name != "" || a.Address != u.Mailto {
			return invalid(path+".mailto", "%q is not a bare mail address", u.Mailto)
		}
	}
	return nil
}

// Route is where a request's mail goes and the rules it follows.
type Route struct {
	// Stream is the stream's configured name (perhaps "*").
	Stream string
	Kind   Kind
	// Domain is the sending domain; empty means the From header's domain
	// (only in the default tenancy built by Flat).
	Domain       string
	DomainConfig *Domain
	// DomainSchedule is the ramp of a new domain.
	DomainSchedule *warmup.Schedule
	// Pool and PoolConfig are the IP pool, unless Relay names a relay
	// route.
	Pool         string
	PoolConfig   *Pool
	PoolSchedule *warmup.Schedule
	Relay        string
	SendWindow   time.Duration
	MaxAge       time.Duration
}

// Resolve returns the route of a request of tenant and brand on stream
// (empty: the brand's default stream) for communication type ctype. A
// name not configured falls back to "*" where one is. Errors wrap
// ErrNoRoute and say what is missing, for the request's dropped events.
func (c *Config) Resolve(tenant, brand, stream, ctype string) (*Route, error) {
	t := c.Tenants[tenant]
	if t == nil {
		if t = c.Tenants[Any]; t == nil {
			return nil, fmt.Errorf("%w: tenant %q is not configured", ErrNoRoute, tenant)
		}
	}
	b := t.Brands[brand]
	if b == nil {
		if b = t.Brands[Any]; b == nil {
			return nil, fmt.Errorf("%w: brand %q of tenant %q is not configured", ErrNoRoute, brand, tenant)
		}
	}
	name := stream
	if name == "" {
		name = b.DefaultStream
	}
	s := b.Streams[name]
	if s == nil {
		if s = b.Streams[Any]; s == nil {
			if stream == "" {
				return nil, fmt.Errorf("%w: the request names no mail stream and brand %q has no default_stream", ErrNoRoute, brand)
			}
			return nil, fmt.Errorf("%w: mail stream %q of brand %q is not configured", ErrNoRoute, stream, brand)
		}
		name = Any
	}
	r := &Route{Stream: name, Kind: s.Kind, Domain: s.Domain, Pool: s.Pool, Relay: s.Relay, SendWindow: s.SendWindow, MaxAge: s.MaxAge}
	if tr := s.Types[ctype]; ctype != "" && tr != nil {
		if tr.Domain != "" {
			r.Domain = tr.Domain
		}
		if tr.Pool != "" || tr.Relay != "" {
			r.Pool, r.Relay = tr.Pool, tr.Relay
		}
	}
	r.DomainConfig = c.Domains[r.Domain]
	if r.DomainConfig == nil {
		r.DomainConfig = &Domain{}
	}
	if r.DomainConfig.New {
		r.DomainSchedule = c.schedule(r.DomainConfig.Warmup)
	}
	if r.Pool != "" {
		r.PoolConfig = c.Pools[r.Pool]
		r.PoolSchedule = c.schedule(r.PoolConfig.Warmup)
	}
	return r, nil
}

func (c *Config) schedule(own *warmup.Schedule) *warmup.Schedule {
	if own != nil {
		return own
	}
	if c.Warmup != nil {
		return c.Warmup
	}
	d := warmup.Default()
	return &d
}

// Flat is the open default of a planner without a tenancy file: every
// tenant, brand and stream sends as transactional mail (no bulk rules) from
// the From header's domain through one pool of warm IPs. It is meant for
// development; production names its tenants in a file.
func Flat(pool string, ips []IP, bounceDomain string, unsubscribe Unsubscribe) *Config {
	p := &Pool{IPs: ips}
	dom := &Domain{BounceDomain: bounceDomain, Unsubscribe: unsubscribe}
	s := warmup.Default()
	return &Config{
		Warmup:  &s,
		Pools:   map[string]*Pool{pool: p},
		Domains: map[string]*Domain{"": dom},
		Tenants: map[string]*Tenant{Any: {Brands: map[string]*Brand{Any: {Streams: map[string]*Stream{
			Any: {Kind: Transactional, Pool: pool},
		}}}}},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isName reports whether s is usable as a subject token and key part.
func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isLabel(l) {
			return false
		}
	}
	return true
}
