package shaping

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailwave/mailwave/pkg/reason"
)

//go:embed default.yaml
var defaultYAML []byte

// ErrInvalid wraps every error of Parse and Load; the message names the
// field's path.
var ErrInvalid = errors.New("shaping: invalid policy")

// DefaultProvider is the provider key of the long tail.
const DefaultProvider = "default"

// Value ranges. Rates have generous upper bounds: they catch a slipped
// digit, not a policy.
const (
	maxConnections        = 1000
	maxPerConnection      = 100000
	maxPerSecond          = 100000
	maxPerMinute          = 60 * maxPerSecond
	maxPerHour            = 60 * maxPerMinute
	maxConnectionsPerMin  = 100000
	minRetry, maxRetry    = time.Second, 30 * time.Hour
	minBackoff, maxBkoff  = 1.0, 10.0
	minMaxAge, maxMaxAge  = time.Minute, 168 * time.Hour
	retryAttemptsForPower = 64
)

// DefaultYAML returns the shipped policy file, with its comments.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Policy is a parsed, validated policy. It is immutable and safe for
// concurrent use.
type Policy struct {
	providers map[string]layer
	tenants   map[string]override
	sourceIPs map[netip.Addr]override

	backoff      float64
	retryDefault interval
	retry        map[reason.Reason]interval

	maxAgeDefault time.Duration
	maxAge        map[string]time.Duration
}

type override struct {
	all       layer
	providers map[string]layer
}

type interval struct{ first, max time.Duration }

// Default returns the shipped policy. It panics if the shipped file does
// not parse, which its test rules out.
func Default() *Policy {
	p, err := Parse(nil)
	if err != nil {
		panic(err)
	}
	return p
}

// Load reads a policy file and lays it over the shipped policy. Errors name
// the file and wrap ErrInvalid, or the error of reading the file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shaping: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Parse reads a policy document and lays it over the shipped policy; an
// empty document gives the shipped policy. Errors wrap ErrInvalid and name
// the offending field's path.
func Parse(b []byte) (*Policy, error) {
	base, err := decode(defaultYAML)
	if err != nil {
		return nil, fmt.Errorf("shipped policy: %w", err)
	}
	over, err := decode(b)
	if err != nil {
		return nil, err
	}
	base.overlay(over)
	return base.compile()
}

// The document as written: pointers tell a field that is absent from one
// that is zero.
type rawPolicy struct {
	Providers map[string]*rawLimits   `yaml:"providers"`
	Tenants   map[string]*rawOverride `yaml:"tenants"`
	SourceIPs map[string]*rawOverride `yaml:"source_ips"`
	Retry     *rawRetry               `yaml:"retry"`
	MaxAge    *rawMaxAge              `yaml:"max_age"`
}

type rawLimits struct {
	MaxConnections           *int     `yaml:"max_connections"`
	MaxMessagesPerConnection *int     `yaml:"max_messages_per_connection"`
	MessagesPerSecond        *float64 `yaml:"messages_per_second"`
	MessagesPerMinute        *float64 `yaml:"messages_per_minute"`
	MessagesPerHour          *float64 `yaml:"messages_per_hour"`
	ConnectionsPerMinute     *float64 `yaml:"connections_per_minute"`
}

type rawOverride struct {
	Limits    *rawLimits            `yaml:"limits"`
	Providers map[string]*rawLimits `yaml:"providers"`
}

type rawRetry struct {
	Backoff *float64                `yaml:"backoff"`
	Default *rawInterval            `yaml:"default"`
	Reasons map[string]*rawInterval `yaml:"reasons"`
}

type rawInterval struct {
	First *time.Duration `yaml:"first"`
	Max   *time.Duration `yaml:"max"`
}

type rawMaxAge struct {
	Default *time.Duration            `yaml:"default"`
	Streams map[string]*time.Duration `yaml:"streams"`
}

// decode reads one document strictly. yaml.v3 reports an unknown field or
// a wrong type by line; decode names the field's path instead.
func decode(b []byte) (*rawPolicy, error) {
	var raw rawPolicy
	if len(bytes.TrimSpace(b)) == 0 {
		return &raw, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, describe(b, err))
	}
	// A second document would be ignored silently: refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	return &raw, nil
}

// overlay lays o over r, field by field.
func (r *rawPolicy) overlay(o *rawPolicy) {
	r.Providers = overlayLimitsMap(r.Providers, o.Providers)
	r.Tenants = overlayOverrides(r.Tenants, o.Tenants)
	r.SourceIPs = overlayOverrides(r.SourceIPs, o.SourceIPs)
	if o.Retry != nil {
		if r.Retry == nil {
			r.Retry = &rawRetry{}
		}
		set(&r.Retry.Backoff, o.Retry.Backoff)
		r.Retry.Default = overlayInterval(r.Retry.Default, o.Retry.Default)
		if r.Retry.Reasons == nil && o.Retry.Reasons != nil {
			r.Retry.Reasons = map[string]*rawInterval{}
		}
		for k, v := range o.Retry.Reasons {
			r.Retry.Reasons[k] = overlayInterval(r.Retry.Reasons[k], v)
		}
	}
	if o.MaxAge != nil {
		if r.MaxAge == nil {
			r.MaxAge = &rawMaxAge{}
		}
		set(&r.MaxAge.Default, o.MaxAge.Default)
		if r.MaxAge.Streams == nil && o.MaxAge.Streams != nil {
			r.MaxAge.Streams = map[string]*time.Duration{}
		}
		for k, v := range o.MaxAge.Streams {
			if v != nil || r.MaxAge.Streams[k] == nil {
				r.MaxAge.Streams[k] = v
			}
		}
	}
}

func set[T any](dst **T, src *T) {
	if src != nil {
		*dst = src
	}
}

func (r *rawLimits) overlay(o *rawLimits) *rawLimits {
	if r == nil {
		r = &rawLimits{}
	}
	if o == nil {
		return r
	}
	set(&r.MaxConnections, o.MaxConnections)
	set(&r.MaxMessagesPerConnection, o.MaxMessagesPerConnection)
	set(&r.MessagesPerSecond, o.MessagesPerSecond)
	set(&r.MessagesPerMinute, o.MessagesPerMinute)
	set(&r.MessagesPerHour, o.MessagesPerHour)
	set(&r.ConnectionsPerMinute, o.ConnectionsPerMinute)
	return r
}

func overlayLimitsMap(r, o map[string]*rawLimits) map[string]*rawLimits {
	if r == nil && o != nil {
		r = map[string]*rawLimits{}
	}
	for k, v := range o {
		r[k] = r[k].overlay(v)
	}
	return r
}

func overlayOverrides(r, o map[string]*rawOverride) map[string]*rawOverride {
	if r == nil && o != nil {
		r = map[string]*rawOverride{}
	}
	for k, v := range o {
		cur := r[k]
		if cur == nil {
			cur = &rawOverride{}
			r[k] = cur
		}
		if v == nil {
			continue
		}
		if v.Limits != nil {
			cur.Limits = cur.Limits.overlay(v.Limits)
		}
		cur.Providers = overlayLimitsMap(cur.Providers, v.Providers)
	}
	return r
}

func overlayInterval(r, o *rawInterval) *rawInterval {
	if r == nil {
		r = &rawInterval{}
	}
	if o != nil {
		set(&r.First, o.First)
		set(&r.Max, o.Max)
	}
	return r
}

// compile validates the merged document and builds the Policy.
func (r *rawPolicy) compile() (*Policy, error) {
	p := &Policy{
		providers: map[string]layer{},
		tenants:   map[string]override{},
		sourceIPs: map[netip.Addr]override{},
		retry:     map[reason.Reason]interval{},
		maxAge:    map[string]time.Duration{},
	}
	if _, ok := r.Providers[DefaultProvider]; !ok {
		return nil, invalid("providers.default", "missing: the long tail needs limits")
	}
	for _, name := range sortedKeys(r.Providers) {
		path := "providers" + pathKey(name)
		if !isProviderName(name) {
			return nil, invalid(path, "a provider name is lower-case letters, digits and '-'")
		}
		l, err := compileLayer(path, r.Providers[name])
		if err != nil {
			return nil, err
		}
		p.providers[name] = l
	}
	// The long tail is the base of every merge, so it must name every
	// field.
	if err := p.providers[DefaultProvider].complete("providers.default"); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(r.Tenants) {
		path := "tenants" + pathKey(name)
		if strings.TrimSpace(name) != name || name == "" {
			return nil, invalid(path, "a tenant name has no surrounding space")
		}
		o, err := compileOverride(path, r.Tenants[name])
		if err != nil {
			return nil, err
		}
		p.tenants[name] = o
	}
	for _, name := range sortedKeys(r.SourceIPs) {
		path := "source_ips" + pathKey(name)
		ip, err := netip.ParseAddr(name)
		if err != nil {
			return nil, invalid(path, "not an IP address")
		}
		ip = ip.Unmap()
		if _, dup := p.sourceIPs[ip]; dup {
			return nil, invalid(path, "the same address as another entry (%s)", ip)
		}
		o, err := compileOverride(path, r.SourceIPs[name])
		if err != nil {
			return nil, err
		}
		p.sourceIPs[ip] = o
	}
	if err := p.compileRetry(r.Retry); err != nil {
		return nil, err
	}
	if err := p.compileMaxAge(r.MaxAge); err != nil {
		return nil, err
	}
	return p, nil
}

func compileOverride(path string, r *rawOverride) (override, error) {
	o := override{providers: map[string]layer{}}
	if r == nil {
		return o, nil
	}
	var err error
	if o.all, err = compileLayer(path+".limits", r.Limits); err != nil {
		return o, err
	}
	for _, name := range sortedKeys(r.Providers) {
		pp := path + ".providers" + pathKey(name)
		if !isProviderName(name) {
			return o, invalid(pp, "a provider name is lower-case letters, digits and '-'")
		}
		if o.providers[name], err = compileLayer(pp, r.Providers[name]); err != nil {
			return o, err
		}
	}
	return o, nil
}

func (p *Policy) compileRetry(r *rawRetry) error {
	if r == nil || r.Backoff == nil {
		return invalid("retry.backoff", "missing")
	}
	if b := *r.Backoff; !(b >= minBackoff && b <= maxBkoff) {
		return invalid("retry.backoff", "must be between %g and %g, got %g", minBackoff, maxBkoff, b)
	}
	p.backoff = *r.Backoff
	var err error
	if p.retryDefault, err = compileInterval("retry.default", r.Default); err != nil {
		return err
	}
	for _, name := range sortedKeys(r.Reasons) {
		path := "retry.reasons" + pathKey(name)
		rs := reason.Reason(name)
		if !rs.Valid() {
			return invalid(path, "not a reason word of pkg/reason")
		}
		iv, err := compileInterval(path, r.Reasons[name])
		if err != nil {
			return err
		}
		p.retry[rs] = iv
	}
	return nil
}

func compileInterval(path string, r *rawInterval) (interval, error) {
	if r == nil || r.First == nil {
		return interval{}, invalid(path+".first", "missing")
	}
	if r.Max == nil {
		return interval{}, invalid(path+".max", "missing")
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"first", *r.First}, {"max", *r.Max}} {
		if f.d < minRetry || f.d > maxRetry {
			return interval{}, invalid(path+"."+f.name, "must be between %s and %s, got %s", minRetry, maxRetry, f.d)
		}
	}
	if *r.Max < *r.First {
		return interval{}, invalid(path+".max", "must not be below first (%s), got %s", *r.First, *r.Max)
	}
	return interval{first: *r.First, max: *r.Max}, nil
}

func (p *Policy) compileMaxAge(r *rawMaxAge) error {
	if r == nil || r.Default == nil {
		return invalid("max_age.default", "missing")
	}
	check := func(path string, d *time.Duration) error {
		if d == nil {
			return invalid(path, "missing")
		}
		if *d < minMaxAge || *d > maxMaxAge {
			return invalid(path, "must be between %s and %s, got %s", minMaxAge, maxMaxAge, *d)
		}
		return nil
	}
	if err := check("max_age.default", r.Default); err != nil {
		return err
	}
	p.maxAgeDefault = *r.Default
	for _, name := range sortedKeys(r.Streams) {
		path := "max_age.streams" + pathKey(name)
		if strings.TrimSpace(name) != name || name == "" {
			return invalid(path, "a stream name has no surrounding space")
		}
		if err := check(path, r.Streams[name]); err != nil {
			return err
		}
		p.maxAge[name] = *r.Streams[name]
	}
	return nil
}

// RetryAfter returns how long a message deferred for reason r (a word of
// pkg/reason) waits before attempt number attempt+1: attempt is the number
// of the retry, 1 for the first. A reason the policy does not list, and
// the empty reason, use retry.default; an attempt below 1 counts as 1.
func (p *Policy) RetryAfter(r string, attempt int) time.Duration {
	iv, ok := p.retry[reason.Reason(r)]
	if !ok {
		iv = p.retryDefault
	}
	// Past 64 doublings every interval is at its cap anyway.
	k := min(max(attempt, 1), retryAttemptsForPower) - 1
	d := float64(iv.first) * math.Pow(p.backoff, float64(k))
	if d >= float64(iv.max) {
		return iv.max
	}
	return time.Duration(d)
}

// MaxAge returns how long a message of the mail stream is retried before
// it expires: the stream's own max age, else max_age.default.
func (p *Policy) MaxAge(stream string) time.Duration {
	if d, ok := p.maxAge[stream]; ok {
		return d
	}
	return p.maxAgeDefault
}

// Limits returns the effective limits for one source IP sending to one
// provider on behalf of one tenant, merged in the documented order. Each
// argument may be empty; an unknown provider is the long tail, and a
// source IP that does not parse matches no override.
func (p *Policy) Limits(provider, sourceIP, tenant string) Limits {
	provider = strings.ToLower(provider)
	l := p.providers[DefaultProvider]
	if provider != DefaultProvider {
		if pl, ok := p.providers[provider]; ok {
			l = l.over(pl)
		}
	}
	if t, ok := p.tenants[tenant]; ok && tenant != "" {
		l = l.over(t.all).over(t.providers[provider])
	}
	if ip, err := netip.ParseAddr(sourceIP); err == nil {
		if o, ok := p.sourceIPs[ip.Unmap()]; ok {
			l = l.over(o.all).over(o.providers[provider])
		}
	}
	return l.limits()
}

func isProviderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, path, fmt.Sprintf(format, args...))
}
