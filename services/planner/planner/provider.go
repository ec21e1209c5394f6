package planner

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mailwave/mailwave/pkg/mx"
)

// providers maps recipient domains to mailbox providers by their MX hosts
// (pkg/mx), as the sender does: warm-up caps and waves are per provider,
// and a Google-hosted company domain must count against Google's, which no
// list of domain names can know. A lookup that fails leaves the domain as
// its own provider (the sender will bounce or retry it). Answers are kept
// for the resolver's TTL; lookups of one batch run concurrently.
type providers struct {
	resolver *mx.Resolver // nil: no lookups, the domain is the provider
	log      *slog.Logger

	mu    sync.Mutex
	known map[string]entry
}

type entry struct {
	provider string
	until    time.Time
}

const (
	providerTTL     = 10 * time.Minute
	providerFailTTL = time.Minute
	lookupTimeout   = 5 * time.Second
	lookupParallel  = 16
)

func newProviders(server string, log *slog.Logger) (*providers, error) {
	p := &providers{log: log, known: map[string]entry{}}
	if server == "none" {
		return p, nil
	}
	r, err := mx.NewResolver(server, mx.WithLogger(log))
	if err != nil {
		return nil, err
	}
	p.resolver = r
	return p, nil
}

// cached returns the provider of domain if it is known.
func (p *providers) cached(domain string, now time.Time) (string, bool) {
	if p.resolver == nil {
		return domain, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.known[domain]
	if !ok || now.After(e.until) {
		return "", false
	}
	return e.provider, true
}

// lookup resolves every domain not known yet, concurrently, and returns
// the provider of each.
func (p *providers) lookup(ctx context.Context, domains []string) map[string]string {
	now := time.Now()
	out := make(map[string]string, len(domains))
	var missing []string
	for _, d := range domains {
		if _, dup := out[d]; dup {
			continue
		}
		if prov, ok := p.cached(d, now); ok {
			out[d] = prov
			continue
		}
		out[d] = d
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return out
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, lookupParallel)
	for _, d := range missing {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			prov := p.resolve(ctx, d)
			mu.Lock()
			out[d] = prov
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (p *providers) resolve(ctx context.Context, domain string) string {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	prov, ttl := domain, providerFailTTL
	if route, err := p.resolver.Route(ctx, domain); err == nil {
		prov, ttl = route.Provider, providerTTL
	} else {
		p.log.Debug("mx lookup failed; the domain is its own provider", "domain", domain, "err", err)
	}
	p.mu.Lock()
	if len(p.known) > 200000 {
		// Bound the memory of an audience of endless distinct domains.
		clear(p.known)
	}
	p.known[domain] = entry{provider: prov, until: time.Now().Add(ttl)}
	p.mu.Unlock()
	return prov
}
