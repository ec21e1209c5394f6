package mx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
	"golang.org/x/sync/singleflight"
)

// Resolver answers Route. It is safe for concurrent use; one Resolver
// per process shares its cache among all senders.
type Resolver struct {
	servers    []string
	udp, tcp   *dns.Client
	attempts   int
	now        func() time.Time
	shuffle    func(n int, swap func(i, j int))
	ipv6       bool
	maxTTL     time.Duration
	maxNegTTL  time.Duration
	cacheSize  int
	resolvConf string
	table      []Provider
	extra      []Provider
	providers  *matcher
	log        *slog.Logger

	mu    sync.Mutex
	cache map[cacheKey]*entry
	group singleflight.Group
}

// Option configures a Resolver; it returns an error wrapping
// ErrInvalidOption for a value it cannot use.
type Option func(*Resolver) error

// WithClock sets the clock that decides cache expiry (tests pass a fake).
func WithClock(now func() time.Time) Option {
	return func(r *Resolver) error {
		if now == nil {
			return invalidOption("nil clock")
		}
		r.now = now
		return nil
	}
}

// WithTimeout bounds each DNS query (default 2s).
func WithTimeout(d time.Duration) Option {
	return func(r *Resolver) error {
		if d <= 0 {
			return invalidOption("timeout %v", d)
		}
		r.udp.Timeout, r.tcp.Timeout = d, d
		return nil
	}
}

// WithAttempts sets how many rounds over the servers a query makes before
// it fails as temporary (default 2).
func WithAttempts(n int) Option {
	return func(r *Resolver) error {
		if n < 1 {
			return invalidOption("attempts %d", n)
		}
		r.attempts = n
		return nil
	}
}

// WithProviders replaces the provider table (default DefaultProviders()).
func WithProviders(table []Provider) Option {
	return func(r *Resolver) error {
		r.table = table
		return nil
	}
}

// WithExtraProviders adds providers checked before the table, to add a
// provider or to override a default pattern.
func WithExtraProviders(extra []Provider) Option {
	return func(r *Resolver) error {
		r.extra = extra
		return nil
	}
}

// WithCacheSize bounds the number of cached answers (default 100,000).
// When full, expired answers are dropped first, then arbitrary ones.
func WithCacheSize(n int) Option {
	return func(r *Resolver) error {
		if n < 1 {
			return invalidOption("cache size %d", n)
		}
		r.cacheSize = n
		return nil
	}
}

// WithMaxTTL caps how long a positive answer is cached (default 1 hour),
// whatever its TTL.
func WithMaxTTL(d time.Duration) Option {
	return func(r *Resolver) error {
		if d <= 0 {
			return invalidOption("max ttl %v", d)
		}
		r.maxTTL = d
		return nil
	}
}

// WithMaxNegativeTTL caps how long NXDOMAIN and no-data answers are
// cached (default 15 minutes; RFC 2308 §5 suggests at most 3 hours).
func WithMaxNegativeTTL(d time.Duration) Option {
	return func(r *Resolver) error {
		if d <= 0 {
			return invalidOption("max negative ttl %v", d)
		}
		r.maxNegTTL = d
		return nil
	}
}

// WithIPv6 also resolves AAAA records for MX hosts (default only A, as
// the sending pools are IPv4).
func WithIPv6(on bool) Option {
	return func(r *Resolver) error {
		r.ipv6 = on
		return nil
	}
}

// WithShuffle replaces the random shuffle of equal-preference hosts
// (rand.Shuffle's signature), for deterministic tests.
func WithShuffle(shuffle func(n int, swap func(i, j int))) Option {
	return func(r *Resolver) error {
		if shuffle == nil {
			return invalidOption("nil shuffle")
		}
		r.shuffle = shuffle
		return nil
	}
}

// WithResolvConf names the resolv.conf(5) read when NewResolver is given
// no server (default /etc/resolv.conf).
func WithResolvConf(path string) Option {
	return func(r *Resolver) error {
		r.resolvConf = path
		return nil
	}
}

// WithLogger receives a debug record per DNS query that failed.
func WithLogger(l *slog.Logger) Option {
	return func(r *Resolver) error {
		if l == nil {
			return invalidOption("nil logger")
		}
		r.log = l
		return nil
	}
}

// NewResolver returns a Resolver that asks server ("host:port", or a
// host for port 53; several separated by commas), or the nameservers of
// /etc/resolv.conf when server is "". It returns an error wrapping
// ErrInvalidOption for a bad option, server or resolv.conf.
func NewResolver(server string, opts ...Option) (*Resolver, error) {
	r := &Resolver{
		udp:        &dns.Client{Net: "udp", Timeout: 2 * time.Second, UDPSize: 1232},
		tcp:        &dns.Client{Net: "tcp", Timeout: 2 * time.Second},
		attempts:   2,
		now:        time.Now,
		shuffle:    rand.Shuffle,
		maxTTL:     time.Hour,
		maxNegTTL:  15 * time.Minute,
		cacheSize:  100_000,
		resolvConf: "/etc/resolv.conf",
		table:      DefaultProviders(),
		log:        slog.New(slog.DiscardHandler),
		cache:      map[cacheKey]*entry{},
	}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	m, err := compile(append(slices.Clone(r.extra), r.table...))
	if err != nil {
		return nil, err
	}
	r.providers = m
	if server == "" {
		cc, err := dns.ClientConfigFromFile(r.resolvConf)
		if err != nil {
			return nil, invalidOption("resolv.conf: %v", err)
		}
		for _, s := range cc.Servers {
			r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
		}
	} else {
		for s := range strings.SplitSeq(server, ",") {
			s = strings.TrimSpace(s)
			if _, _, err := net.SplitHostPort(s); err != nil {
				s = net.JoinHostPort(s, "53")
			}
			r.servers = append(r.servers, s)
		}
	}
	if len(r.servers) == 0 {
		return nil, invalidOption("no DNS server")
	}
	return r, nil
}

// Route returns where to deliver mail for domain (the part after "@";
// U-labels are converted to A-labels). Errors: ErrInvalidDomain,
// ErrNoSuchDomain, ErrNullMX, ErrNoMailServer (permanent); ErrTemporary,
// ErrNoAddress (temporary); ctx's error when ctx ends first.
func (r *Resolver) Route(ctx context.Context, domain string) (*Route, error) {
	name, err := normalize(domain)
	if err != nil {
		return nil, err
	}
	mxs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	switch {
	case mxs.rcode == dns.RcodeNameError:
		return nil, fmt.Errorf("%w: %s", ErrNoSuchDomain, name)
	case mxs.null:
		return nil, fmt.Errorf("%w: %s", ErrNullMX, name)
	}
	route := &Route{Domain: name, Site: mxs.site, Provider: mxs.provider, Implicit: len(mxs.hosts) == 0}
	var hosts []Host
	if route.Implicit {
		// RFC 5321 §5.1: no MX, so the domain itself is the host, with
		// preference 0.
		route.Site, route.Provider = name, name
		hosts = []Host{{Name: name}}
	} else {
		hosts = slices.Clone(mxs.hosts)
		// RFC 5321 §5.1: hosts of equal preference are tried in random
		// order, to spread the load.
		for i := 0; i < len(hosts); {
			j := i + 1
			for j < len(hosts) && hosts[j].Preference == hosts[i].Preference {
				j++
			}
			if j-i > 1 {
				group := hosts[i:j]
				r.shuffle(len(group), func(a, b int) { group[a], group[b] = group[b], group[a] })
			}
			i = j
		}
	}
	if err := r.resolveHosts(ctx, route, hosts); err != nil {
		return nil, err
	}
	return route, nil
}

// prepareMX turns a positive MX answer into what Route needs, once per
// cached answer: the hosts by preference, the site and the provider.
func (r *Resolver) prepareMX(e *entry) {
	for _, m := range e.mx {
		// RFC 7505 §3: "." is never a host to connect to.
		if m.host != "" {
			e.hosts = append(e.hosts, Host{Name: m.host, Preference: m.pref})
		}
	}
	if len(e.hosts) == 0 {
		e.null = len(e.mx) > 0
		return
	}
	slices.SortStableFunc(e.hosts, func(a, b Host) int { return cmp.Compare(a.Preference, b.Preference) })
	e.site = siteKey(e.hosts)
	e.provider = e.site
	for _, h := range e.hosts {
		if p := r.providers.match(h.Name); p != "" {
			e.provider = p
			break
		}
	}
}

// resolveHosts fills in each host's addresses and keeps the hosts that
// have some. Hosts whose answers are cached are done in place; the others
// are looked up concurrently.
func (r *Resolver) resolveHosts(ctx context.Context, route *Route, hosts []Host) error {
	var errs []error
	pending := false
	for i := range hosts {
		if !r.cachedAddrs(hosts[i].Name) {
			pending = true
			continue
		}
		var err error
		if hosts[i].Addrs, err = r.addrs(ctx, hosts[i].Name); err != nil {
			errs = setErr(errs, len(hosts), i, err)
		}
	}
	if pending {
		if errs == nil {
			errs = make([]error, len(hosts))
		}
		var wg sync.WaitGroup
		for i := range hosts {
			if hosts[i].Addrs == nil && errs[i] == nil {
				wg.Go(func() { hosts[i].Addrs, errs[i] = r.addrs(ctx, hosts[i].Name) })
			}
		}
		wg.Wait()
	}
	if errs == nil {
		route.Hosts = hosts
		return nil
	}
	route.Hosts = hosts[:0]
	temporary := false
	var firstErr error
	for i, h := range hosts {
		if errs[i] != nil {
			temporary = temporary || IsTemporary(errs[i])
			if firstErr == nil || IsTemporary(errs[i]) && !IsTemporary(firstErr) {
				firstErr = errs[i]
			}
			route.Skipped = append(route.Skipped, SkippedHost{Name: h.Name, Err: errs[i]})
			continue
		}
		route.Hosts = append(route.Hosts, h)
	}
	if len(route.Hosts) > 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	switch {
	case route.Implicit && !temporary:
		return fmt.Errorf("%w: %s", ErrNoMailServer, route.Domain)
	case route.Implicit:
		return firstErr
	case temporary:
		return fmt.Errorf("%w: %s: %w", ErrNoAddress, route.Domain, firstErr)
	}
	return fmt.Errorf("%w: %s", ErrNoAddress, route.Domain)
}

// setErr records err for host i, making the slice on first need so that
// the common all-cached, all-good path allocates nothing.
func setErr(errs []error, n, i int, err error) []error {
	if errs == nil {
		errs = make([]error, n)
	}
	errs[i] = err
	return errs
}

// cachedAddrs reports whether host's address answers are all cached.
func (r *Resolver) cachedAddrs(host string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.cache[cacheKey{host, dns.TypeA}]; !ok || !now.Before(e.expires) {
		return false
	}
	if r.ipv6 {
		if e, ok := r.cache[cacheKey{host, dns.TypeAAAA}]; !ok || !now.Before(e.expires) {
			return false
		}
	}
	return true
}

// addrs returns the A (and AAAA) addresses of host. A name without any
// is reported as ErrNoSuchDomain or ErrNoMailServer, so that the caller
// can tell it from a DNS failure.
func (r *Resolver) addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	a, err := r.lookup(ctx, host, dns.TypeA)
	if err != nil {
		return nil, err
	}
	if a.rcode == dns.RcodeNameError {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchDomain, host)
	}
	// A copy, so that a caller changing a Route cannot change the cache.
	addrs := slices.Clone(a.addrs)
	if r.ipv6 {
		aaaa, err := r.lookup(ctx, host, dns.TypeAAAA)
		if err != nil && len(addrs) == 0 {
			return nil, err
		}
		if err == nil {
			addrs = append(addrs, aaaa.addrs...)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s has no address", ErrNoMailServer, host)
	}
	return addrs, nil
}

// siteKey is the sorted set of host names, joined with ",".
func siteKey(hosts []Host) string {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ",")
}

// normalize turns a mail domain into lower-case A-labels without the
// trailing dot (RFC 5890), and rejects what cannot be one.
func normalize(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	if d == "" || strings.HasPrefix(d, "[") {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, domain)
	}
	ascii, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidDomain, domain, err)
	}
	ascii = strings.ToLower(ascii)
	if _, ok := dns.IsDomainName(ascii); !ok || len(ascii) > 253 {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, domain)
	}
	return ascii, nil
}

// cacheKey names one DNS question.
type cacheKey struct {
	name  string
	qtype uint16
}

// entry is one cached answer: the records of the queried type (after
// following CNAMEs), or a negative answer.
type entry struct {
	expires time.Time
	rcode   int // dns.RcodeSuccess or dns.RcodeNameError
	mx      []mxRecord
	addrs   []netip.Addr

	// For MX answers, made once by prepareMX.
	hosts    []Host // by preference, without the null MX
	null     bool   // only "MX 0 ." (RFC 7505)
	site     string
	provider string
}

type mxRecord struct {
	host string // lower case, no trailing dot; "" for the null MX's "."
	pref uint16
}

// lookup answers from the cache, or queries the servers with concurrent
// queries of one name collapsed into one. The query runs detached from
// the first caller's cancellation, bounded by the per-query timeout, so
// that one caller giving up does not fail the others.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*entry, error) {
	key := cacheKey{name, qtype}
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[key]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e, nil
	}
	ch := r.group.DoChan(dns.TypeToString[qtype]+" "+name, func() (any, error) {
		// A flight that ended between our cache miss and DoChan has
		// stored its answer: use it rather than ask again.
		r.mu.Lock()
		e, ok := r.cache[key]
		r.mu.Unlock()
		if ok && r.now().Before(e.expires) {
			return e, nil
		}
		e, ttl, err := r.query(context.WithoutCancel(ctx), name, qtype)
		if err != nil {
			return nil, err
		}
		if qtype == dns.TypeMX {
			r.prepareMX(e)
		}
		if ttl > 0 {
			e.expires = r.now().Add(ttl)
			r.store(key, e)
		}
		return e, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*entry), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (r *Resolver) store(key cacheKey, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.cacheSize {
		now := r.now()
		for k, old := range r.cache {
			if !now.Before(old.expires) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < r.cacheSize {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = e
}

// query asks each server in turn, for the configured number of rounds,
// and returns the answer with how long it may be cached.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*entry, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	var last error
	for range r.attempts {
		for _, server := range r.servers {
			resp, err := r.exchange(ctx, m, server)
			if err != nil {
				last = err
				r.log.LogAttrs(ctx, slog.LevelDebug, "dns query failed", slog.String("name", name),
					slog.String("type", dns.TypeToString[qtype]), slog.String("server", server), slog.Any("error", err))
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				e, ttl := r.parse(resp, name, qtype)
				return e, ttl, nil
			}
			last = fmt.Errorf("%s", dns.RcodeToString[resp.Rcode])
			r.log.LogAttrs(ctx, slog.LevelDebug, "dns query failed", slog.String("name", name),
				slog.String("type", dns.TypeToString[qtype]), slog.String("server", server), slog.String("rcode", dns.RcodeToString[resp.Rcode]))
		}
	}
	return nil, 0, fmt.Errorf("%w: %s %s: %w", ErrTemporary, name, dns.TypeToString[qtype], last)
}

// exchange sends one query over UDP, and again over TCP when the answer
// was truncated (RFC 7766 §3).
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, _, err := r.udp.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, err
	}
	if resp.Truncated {
		return nil, errors.New("truncated answer over tcp")
	}
	return resp, nil
}

// parse extracts the records of qtype for name, following a CNAME chain
// inside the answer, and the cache lifetime: the smallest TTL of the
// records used, or for a negative answer the SOA's minimum (RFC 2308 §5).
func (r *Resolver) parse(resp *dns.Msg, name string, qtype uint16) (*entry, time.Duration) {
	e := &entry{rcode: resp.Rcode}
	target := dns.Fqdn(name)
	var ttl uint32
	have := false
	minTTL := func(t uint32) {
		if !have || t < ttl {
			ttl, have = t, true
		}
	}
	// CNAME chains are short; bound the walk against loops.
	for range 8 {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, target) {
				next = c.Target
				minTTL(c.Hdr.Ttl)
			}
		}
		if next == "" {
			break
		}
		target = next
	}
	if resp.Rcode == dns.RcodeSuccess {
		for _, rr := range resp.Answer {
			if !strings.EqualFold(rr.Header().Name, target) {
				continue
			}
			switch v := rr.(type) {
			case *dns.MX:
				if qtype == dns.TypeMX {
					host := strings.ToLower(strings.TrimSuffix(v.Mx, "."))
					e.mx = append(e.mx, mxRecord{host: host, pref: v.Preference})
					minTTL(v.Hdr.Ttl)
				}
			case *dns.A:
				if qtype == dns.TypeA {
					if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
						e.addrs = append(e.addrs, a)
						minTTL(v.Hdr.Ttl)
					}
				}
			case *dns.AAAA:
				if qtype == dns.TypeAAAA {
					if a, ok := netip.AddrFromSlice(v.AAAA); ok {
						e.addrs = append(e.addrs, a)
						minTTL(v.Hdr.Ttl)
					}
				}
			}
		}
	}
	if len(e.mx) > 0 || len(e.addrs) > 0 {
		return e, min(time.Duration(ttl)*time.Second, r.maxTTL)
	}
	// Negative answer: NXDOMAIN or no data. Without an SOA it is not
	// cached (RFC 2308 §5).
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			neg := min(soa.Hdr.Ttl, soa.Minttl)
			return e, min(time.Duration(neg)*time.Second, r.maxNegTTL)
		}
	}
	return e, 0
}
