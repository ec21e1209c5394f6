package mx_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/mx"
)

var records = []string{
	"gmail.com. 300 IN MX 5 gmail-smtp-in.l.google.com.",
	"gmail.com. 300 IN MX 10 alt1.gmail-smtp-in.l.google.com.",
	"gmail.com. 300 IN MX 20 alt2.gmail-smtp-in.l.google.com.",
	"gmail-smtp-in.l.google.com. 300 IN A 127.0.1.1",
	"alt1.gmail-smtp-in.l.google.com. 300 IN A 127.0.1.2",
	"alt2.gmail-smtp-in.l.google.com. 300 IN A 127.0.1.3",
	// A company on Google Workspace.
	"acme.test. 300 IN MX 1 aspmx.l.google.com.",
	"acme.test. 300 IN MX 5 alt1.aspmx.l.google.com.",
	"aspmx.l.google.com. 300 IN A 127.0.1.4",
	"alt1.aspmx.l.google.com. 300 IN A 127.0.1.5",
	// A domain pointing at gmail's own MX set, in another order.
	"twin.test. 300 IN MX 30 alt2.gmail-smtp-in.l.google.com.",
	"twin.test. 300 IN MX 10 gmail-smtp-in.l.google.com.",
	"twin.test. 300 IN MX 20 alt1.gmail-smtp-in.l.google.com.",
	"hotmail.test. 300 IN MX 2 hotmail-com.olc.protection.outlook.com.",
	"hotmail-com.olc.protection.outlook.com. 300 IN A 127.0.1.6",
	"yahoo.test. 300 IN MX 1 mta5.am0.yahoodns.net.",
	"mta5.am0.yahoodns.net. 300 IN A 127.0.1.7",
	"equal.test. 300 IN MX 5 first.equal.test.",
	"equal.test. 300 IN MX 10 a.equal.test.",
	"equal.test. 300 IN MX 10 b.equal.test.",
	"equal.test. 300 IN MX 10 c.equal.test.",
	"first.equal.test. 300 IN A 127.0.2.1",
	"a.equal.test. 300 IN A 127.0.2.2",
	"b.equal.test. 300 IN A 127.0.2.3",
	"c.equal.test. 300 IN A 127.0.2.4",
	"implicit.test. 300 IN A 127.0.3.1",
	"implicit.test. 300 IN A 127.0.3.2",
	"nullmx.test. 300 IN MX 0 .",
	"nomail.test. 300 IN TXT \"v=spf1 -all\"",
	"cname.test. 300 IN MX 10 mail.cname.test.",
	"mail.cname.test. 300 IN CNAME real.host.test.",
	"real.host.test. 300 IN A 127.0.4.1",
	"deadmx.test. 300 IN MX 10 nowhere.deadmx.test.",
	"partial.test. 300 IN MX 10 broken.partial.test.",
	"partial.test. 300 IN MX 20 ok.partial.test.",
	"broken.partial.test. 300 IN A 127.0.5.1",
	"ok.partial.test. 300 IN A 127.0.5.2",
	"longtail.test. 300 IN MX 10 mx1.hosting.test.",
	"longtail.test. 300 IN MX 10 mx2.hosting.test.",
	"mx1.hosting.test. 300 IN A 127.0.6.1",
	"mx2.hosting.test. 300 IN A 127.0.6.2",
	"xn--bcher-kva.test. 300 IN MX 10 mx.hosting.test.",
	"mx.hosting.test. 300 IN A 127.0.6.3",
	"v6.test. 300 IN MX 10 mx.v6.test.",
	"mx.v6.test. 300 IN A 127.0.7.1",
	"mx.v6.test. 300 IN AAAA ::1",
	"ttl.test. 60 IN MX 10 mx.ttl.test.",
	"mx.ttl.test. 600 IN A 127.0.8.1",
	"big.test. 300 IN MX 10 mx.big.test.",
	"mx.big.test. 300 IN A 127.0.9.1",
	"servfail.test. 300 IN MX 10 mx.hosting.test.",
	"slow.test. 300 IN MX 10 mx.hosting.test.",
}

func newResolver(t testing.TB, opts ...mx.Option) (*mx.Resolver, *zone) {
	t.Helper()
	z, addr := newZone(t, records...)
	z.mu.Lock()
	z.servfail["servfail.test."] = true
	z.servfail["broken.partial.test."] = true
	z.drop["slow.test."] = true
	z.truncate["big.test."] = true
	z.mu.Unlock()
	opts = append([]mx.Option{mx.WithTimeout(300 * time.Millisecond), mx.WithAttempts(1)}, opts...)
	r, err := mx.NewResolver(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r, z
}

// noShuffle keeps equal preferences in answer order, for exact tables.
func noShuffle(int, func(i, j int)) {}

const gmailSite = "alt1.gmail-smtp-in.l.google.com,alt2.gmail-smtp-in.l.google.com,gmail-smtp-in.l.google.com"

func TestRoute(t *testing.T) {
	r, _ := newResolver(t, mx.WithShuffle(noShuffle))
	tests := []struct {
		domain   string
		provider string
		site     string
		hosts    string // "name=addr addr|…"
		implicit bool
		skipped  string
	}{
		{domain: "gmail.com", provider: "google", site: gmailSite,
			hosts: "gmail-smtp-in.l.google.com=127.0.1.1|alt1.gmail-smtp-in.l.google.com=127.0.1.2|alt2.gmail-smtp-in.l.google.com=127.0.1.3"},
		{domain: "GMail.COM.", provider: "google", site: gmailSite,
			hosts: "gmail-smtp-in.l.google.com=127.0.1.1|alt1.gmail-smtp-in.l.google.com=127.0.1.2|alt2.gmail-smtp-in.l.google.com=127.0.1.3"},
		{domain: "acme.test", provider: "google", site: "alt1.aspmx.l.google.com,aspmx.l.google.com",
			hosts: "aspmx.l.google.com=127.0.1.4|alt1.aspmx.l.google.com=127.0.1.5"},
		{domain: "twin.test", provider: "google", site: gmailSite,
			hosts: "gmail-smtp-in.l.google.com=127.0.1.1|alt1.gmail-smtp-in.l.google.com=127.0.1.2|alt2.gmail-smtp-in.l.google.com=127.0.1.3"},
		{domain: "hotmail.test", provider: "microsoft", site: "hotmail-com.olc.protection.outlook.com",
			hosts: "hotmail-com.olc.protection.outlook.com=127.0.1.6"},
		{domain: "yahoo.test", provider: "yahoo", site: "mta5.am0.yahoodns.net", hosts: "mta5.am0.yahoodns.net=127.0.1.7"},
		{domain: "implicit.test", provider: "implicit.test", site: "implicit.test", implicit: true,
			hosts: "implicit.test=127.0.3.1 127.0.3.2"},
		{domain: "cname.test", provider: "mail.cname.test", site: "mail.cname.test", hosts: "mail.cname.test=127.0.4.1"},
		{domain: "partial.test", provider: "broken.partial.test,ok.partial.test", site: "broken.partial.test,ok.partial.test",
			hosts: "ok.partial.test=127.0.5.2", skipped: "broken.partial.test"},
		{domain: "longtail.test", provider: "mx1.hosting.test,mx2.hosting.test", site: "mx1.hosting.test,mx2.hosting.test",
			hosts: "mx1.hosting.test=127.0.6.1|mx2.hosting.test=127.0.6.2"},
		{domain: "bücher.test", provider: "mx.hosting.test", site: "mx.hosting.test", hosts: "mx.hosting.test=127.0.6.3"},
		{domain: "v6.test", provider: "mx.v6.test", site: "mx.v6.test", hosts: "mx.v6.test=127.0.7.1"},
		{domain: "big.test", provider: "mx.big.test", site: "mx.big.test", hosts: "mx.big.test=127.0.9.1"},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			route, err := r.Route(t.Context(), tc.domain)
			if err != nil {
				t.Fatal(err)
			}
			if route.Provider != tc.provider || route.Site != tc.site || route.Implicit != tc.implicit {
				t.Errorf("provider %q site %q implicit %v", route.Provider, route.Site, route.Implicit)
			}
			if got := hostsString(route); got != tc.hosts {
				t.Errorf("hosts\n got %s\nwant %s", got, tc.hosts)
			}
			var skipped []string
			for _, s := range route.Skipped {
				if !mx.IsTemporary(s.Err) {
					t.Errorf("skipped %s: %v is not temporary", s.Name, s.Err)
				}
				skipped = append(skipped, s.Name)
			}
			if strings.Join(skipped, ",") != tc.skipped {
				t.Errorf("skipped %v", skipped)
			}
		})
	}
}

func hostsString(r *mx.Route) string {
	var parts []string
	for _, h := range r.Hosts {
		var addrs []string
		for _, a := range h.Addrs {
			addrs = append(addrs, a.String())
		}
		parts = append(parts, h.Name+"="+strings.Join(addrs, " "))
	}
	return strings.Join(parts, "|")
}

func TestRouteErrors(t *testing.T) {
	r, _ := newResolver(t)
	tests := []struct {
		domain    string
		want      error
		permanent bool
	}{
		{"nullmx.test", mx.ErrNullMX, true},
		{"nosuch.test", mx.ErrNoSuchDomain, true},
		{"nomail.test", mx.ErrNoMailServer, true},
		{"", mx.ErrInvalidDomain, true},
		{"[127.0.0.1]", mx.ErrInvalidDomain, true},
		{"bad..label", mx.ErrInvalidDomain, true},
		{"servfail.test", mx.ErrTemporary, false},
		{"slow.test", mx.ErrTemporary, false},
		{"deadmx.test", mx.ErrNoAddress, false},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			route, err := r.Route(t.Context(), tc.domain)
			if !errors.Is(err, tc.want) || route != nil {
				t.Fatalf("Route = %v, %v; want %v", route, err, tc.want)
			}
			if mx.IsPermanent(err) != tc.permanent || mx.IsTemporary(err) == tc.permanent {
				t.Errorf("permanent %v temporary %v", mx.IsPermanent(err), mx.IsTemporary(err))
			}
		})
	}
	if mx.IsTemporary(nil) || mx.IsPermanent(nil) {
		t.Error("nil error classified")
	}
}

func TestIPv6(t *testing.T) {
	r, _ := newResolver(t, mx.WithIPv6(true))
	route, err := r.Route(t.Context(), "v6.test")
	if err != nil {
		t.Fatal(err)
	}
	if got := hostsString(route); got != "mx.v6.test=127.0.7.1 ::1" {
		t.Errorf("hosts %s", got)
	}
}

func TestEqualPreferencesShuffled(t *testing.T) {
	r, z := newResolver(t)
	orders := map[string]int{}
	for range 200 {
		route, err := r.Route(t.Context(), "equal.test")
		if err != nil {
			t.Fatal(err)
		}
		if route.Hosts[0].Name != "first.equal.test" {
			t.Fatalf("preference 5 host not first: %s", hostsString(route))
		}
		var names []string
		for _, h := range route.Hosts[1:] {
			names = append(names, h.Name)
		}
		orders[strings.Join(names, ",")]++
	}
	// 200 draws of 6 orders: each appears with overwhelming probability.
	if len(orders) != 6 {
		t.Errorf("orders seen: %v", orders)
	}
	if n := z.count("MX", "equal.test"); n != 1 {
		t.Errorf("%d MX queries for 200 routes", n)
	}
}

func TestCacheHonoursTTL(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	r, z := newResolver(t, mx.WithClock(c.now))
	route := func() {
		t.Helper()
		if _, err := r.Route(t.Context(), "ttl.test"); err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantMX, wantA int) {
		t.Helper()
		if mxq, aq := z.count("MX", "ttl.test"), z.count("A", "mx.ttl.test"); mxq != wantMX || aq != wantA {
			t.Errorf("queries MX %d A %d, want %d %d", mxq, aq, wantMX, wantA)
		}
	}
	route()
	route()
	check(1, 1)
	c.advance(59 * time.Second)
	route()
	check(1, 1)
	c.advance(2 * time.Second) // MX TTL 60 s expired, A TTL 600 s not
	route()
	check(2, 1)
	c.advance(600 * time.Second)
	route()
	check(3, 2)
}

func TestNegativeCache(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	r, z := newResolver(t, mx.WithClock(c.now))
	for _, domain := range []string{"nosuch.test", "nomail.test"} {
		t.Run(domain, func(t *testing.T) {
			for range 3 {
				if _, err := r.Route(t.Context(), domain); !mx.IsPermanent(err) {
					t.Fatal(err)
				}
			}
			if n := z.count("MX", domain); n != 1 {
				t.Errorf("%d queries before the SOA minimum passed", n)
			}
			c.advance(31 * time.Second) // SOA minimum is 30 s
			r.Route(t.Context(), domain)
			if n := z.count("MX", domain); n != 2 {
				t.Errorf("%d queries after the SOA minimum passed", n)
			}
		})
	}

	r2, z2 := newResolver(t, mx.WithClock(c.now), mx.WithMaxNegativeTTL(10*time.Second))
	r2.Route(t.Context(), "nosuch.test")
	c.advance(11 * time.Second)
	r2.Route(t.Context(), "nosuch.test")
	if n := z2.count("MX", "nosuch.test"); n != 2 {
		t.Errorf("max negative ttl not applied: %d queries", n)
	}

	// Failures are not cached.
	r.Route(t.Context(), "servfail.test")
	r.Route(t.Context(), "servfail.test")
	if n := z.count("MX", "servfail.test"); n != 2 {
		t.Errorf("SERVFAIL cached: %d queries", n)
	}
}

func TestCacheSizeBounded(t *testing.T) {
	r, z := newResolver(t, mx.WithCacheSize(2), mx.WithShuffle(noShuffle))
	// yahoo.test needs two entries (MX, A); gmail.com four, evicting.
	for _, d := range []string{"yahoo.test", "gmail.com", "yahoo.test"} {
		if _, err := r.Route(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	if n := z.count("MX", "yahoo.test"); n != 2 {
		t.Errorf("yahoo.test MX queried %d times; cache not bounded?", n)
	}
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	r, z := newResolver(t)
	if _, err := r.Route(t.Context(), "big.test"); err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.tcp != 1 {
		t.Errorf("%d TCP queries, want 1", z.tcp)
	}
}

func TestConcurrentLookupsCollapse(t *testing.T) {
	r, z := newResolver(t)
	hold, arrived := make(chan struct{}), make(chan struct{}, 1)
	z.mu.Lock()
	z.hold, z.arrived = hold, arrived
	z.mu.Unlock()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := r.Route(t.Context(), "gmail.com")
			errs <- err
		})
	}
	// Release the server once the first query is in; the others have
	// joined it or will find its answer cached.
	<-arrived
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q := z.count("MX", "gmail.com"); q != 1 {
		t.Errorf("%d MX queries for %d concurrent routes", q, n)
	}
	if q := z.count("A", "gmail-smtp-in.l.google.com"); q != 1 {
		t.Errorf("%d A queries for %d concurrent routes", q, n)
	}
}

func TestContextCancelled(t *testing.T) {
	r, z := newResolver(t, mx.WithTimeout(5*time.Second))
	hold := make(chan struct{})
	z.mu.Lock()
	z.hold = hold
	z.mu.Unlock()
	defer close(hold)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.Route(ctx, "gmail.com"); !errors.Is(err, context.DeadlineExceeded) || !mx.IsTemporary(err) {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v", d)
	}
}

func TestProviderTable(t *testing.T) {
	_, addr := newZone(t, records...)
	extra := []mx.Provider{
		{Name: "hosting", Patterns: []string{"*.hosting.test"}},
		{Name: "gmail-only", Patterns: []string{"gmail-smtp-in.l.google.com"}},
	}
	r, err := mx.NewResolver(addr, mx.WithExtraProviders(extra), mx.WithShuffle(noShuffle))
	if err != nil {
		t.Fatal(err)
	}
	for domain, want := range map[string]string{
		"longtail.test": "hosting",
		"gmail.com":     "gmail-only", // exact pattern overrides the default
		"acme.test":     "google",     // defaults still apply
	} {
		route, err := r.Route(t.Context(), domain)
		if err != nil {
			t.Fatal(err)
		}
		if route.Provider != want {
			t.Errorf("%s: provider %q, want %q", domain, route.Provider, want)
		}
	}

	none, err := mx.NewResolver(addr, mx.WithProviders(nil))
	if err != nil {
		t.Fatal(err)
	}
	route, err := none.Route(t.Context(), "gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	if route.Provider != gmailSite {
		t.Errorf("empty table: provider %q", route.Provider)
	}

	for _, bad := range []mx.Provider{{Name: "Bad Name", Patterns: []string{"*.x.test"}}, {Name: "x", Patterns: []string{"a.*.test"}}, {Name: "x", Patterns: []string{"*."}}} {
		if _, err := mx.NewResolver(addr, mx.WithProviders([]mx.Provider{bad})); !errors.Is(err, mx.ErrInvalidOption) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestDefaultProvidersMatch(t *testing.T) {
	// One MX host per default provider, as the providers publish them.
	hosts := map[string]string{
		"gmail-smtp-in.l.google.com":              "google",
		"smtp.google.com":                         "google",
		"mx-aol.mail.gm0.yahoodns.net":            "yahoo",
		"contoso-com.mail.protection.outlook.com": "microsoft",
		"outlook-com.olc.protection.outlook.com":  "microsoft",
		"mx01.mail.icloud.com":                    "apple",
		"mx.yandex.net":                           "yandex",
		"mxs.mail.ru":                             "mailru",
		"mx00.gmx.net":                            "gmx",
		"mx-ha03.web.de":                          "gmx",
		"mx.zoho.eu":                              "zoho",
		"mail.protonmail.ch":                      "proton",
		"in1-smtp.messagingengine.com":            "fastmail",
	}
	var recs []string
	for h := range hosts {
		d := strings.ReplaceAll(h, ".", "-") + ".test."
		recs = append(recs, d+" 300 IN MX 10 "+h+".", h+". 300 IN A 127.0.10.1")
	}
	_, addr := newZone(t, recs...)
	r, err := mx.NewResolver(addr)
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range hosts {
		route, err := r.Route(t.Context(), strings.ReplaceAll(h, ".", "-")+".test")
		if err != nil {
			t.Fatal(err)
		}
		if route.Provider != want {
			t.Errorf("%s: provider %q, want %q", h, route.Provider, want)
		}
	}
	names := map[string]bool{}
	for _, p := range mx.DefaultProviders() {
		names[p.Name] = true
	}
	for _, want := range []string{"google", "yahoo", "microsoft", "apple"} {
		if !names[want] {
			t.Errorf("default table lacks %s", want)
		}
	}
}

func TestNewResolver(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "resolv.conf")
	os.WriteFile(good, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644)
	empty := filepath.Join(dir, "empty.conf")
	os.WriteFile(empty, []byte("# nothing\n"), 0o644)
	if _, err := mx.NewResolver("", mx.WithResolvConf(good)); err != nil {
		t.Errorf("resolv.conf with a nameserver: %v", err)
	}
	for name, opts := range map[string][]mx.Option{
		"no nameserver": {mx.WithResolvConf(empty)},
		"no file":       {mx.WithResolvConf(filepath.Join(dir, "missing"))},
		"timeout":       {mx.WithResolvConf(good), mx.WithTimeout(0)},
		"attempts":      {mx.WithResolvConf(good), mx.WithAttempts(0)},
		"cache":         {mx.WithResolvConf(good), mx.WithCacheSize(0)},
		"clock":         {mx.WithResolvConf(good), mx.WithClock(nil)},
	} {
		if _, err := mx.NewResolver("", opts...); !errors.Is(err, mx.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := mx.NewResolver("127.0.0.1, 127.0.0.2:5353"); err != nil {
		t.Errorf("server list: %v", err)
	}
}

func TestToken(t *testing.T) {
	if got := mx.Token("google"); got != "google" {
		t.Errorf("Token(google) = %q", got)
	}
	a, b := mx.Token(gmailSite), mx.Token("mx1.hosting.test,mx2.hosting.test")
	if a == b || a != mx.Token(gmailSite) || len(a) != 21 || strings.ContainsAny(a, ".,*> ") {
		t.Errorf("tokens %q %q", a, b)
	}
	if !slices.Contains([]string{a}, mx.Token(gmailSite)) {
		t.Error("token not stable")
	}
}

func BenchmarkRouteCached(b *testing.B) {
	r, _ := newResolver(b)
	if _, err := r.Route(b.Context(), "gmail.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Route(b.Context(), "gmail.com"); err != nil {
			b.Fatal(err)
		}
	}
}
