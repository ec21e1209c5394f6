package tenancy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/tenancy"
)

func TestExampleLoadsAndResolves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenancy.yaml")
	if err := os.WriteFile(path, tenancy.Example(), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := tenancy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tenant, brand, stream, ctype string
		kind                         tenancy.Kind
		domain, pool, relay, bounce  string
		window                       time.Duration
	}{
		{"acme", "shop", "", "", tenancy.Transactional, "tx.shop.example", "shop-tx", "", "bounces.tx.shop.example", 0},
		{"acme", "shop", "newsletter", "", tenancy.Bulk, "news.shop.example", "shop-bulk", "", "bounces.news.shop.example", 6 * time.Hour},
		{"acme", "shop", "newsletter", "weekly-digest", tenancy.Bulk, "digest.shop.example", "shop-bulk", "", "bounces.digest.shop.example", 6 * time.Hour},
		{"acme", "shop", "newsletter", "other-type", tenancy.Bulk, "news.shop.example", "shop-bulk", "", "bounces.news.shop.example", 6 * time.Hour},
		{"acme", "shop", "promotional", "", tenancy.Bulk, "promo.shop.example", "", "esp-primary", "bounces.promo.shop.example", 12 * time.Hour},
	} {
		r, err := c.Resolve(tc.tenant, tc.brand, tc.stream, tc.ctype)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if r.Kind != tc.kind || r.Domain != tc.domain || r.Pool != tc.pool || r.Relay != tc.relay ||
			r.DomainConfig.BounceDomain != tc.bounce || r.SendWindow != tc.window {
			t.Errorf("%s/%s/%s/%s: %+v", tc.tenant, tc.brand, tc.stream, tc.ctype, r)
		}
	}
	r, _ := c.Resolve("acme", "shop", "newsletter", "")
	if len(r.PoolConfig.IPs) != 2 || !r.PoolConfig.IPs[1].New || !r.PoolConfig.Spill || r.PoolSchedule == nil {
		t.Errorf("pool %+v", r.PoolConfig)
	}
	if r.DomainSchedule != nil {
		t.Error("a warm domain has a ramp")
	}
	if r, _ := c.Resolve("acme", "shop", "newsletter", "weekly-digest"); r.DomainSchedule == nil {
		t.Error("the new digest domain has no ramp")
	}
	for _, tc := range []struct{ tenant, brand, stream, want string }{
		{"globex", "shop", "", `tenant "globex"`},
		{"acme", "toys", "", `brand "toys"`},
		{"acme", "shop", "alerts", `mail stream "alerts"`},
	} {
		if _, err := c.Resolve(tc.tenant, tc.brand, tc.stream, ""); !errors.Is(err, tenancy.ErrNoRoute) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
}

func TestWildcards(t *testing.T) {
	c, err := tenancy.Parse([]byte(`
pools: {p: {ips: [{ip: 127.0.0.3, hostname: mta.example.test}]}}
domains: {example.test: {}}
tenants:
  "*":
    brands:
      "*":
        streams:
          "*": {kind: transactional, domain: example.test, pool: p}
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("anyone", "anything", "whatever", "")
	if err != nil || r.Pool != "p" || r.Stream != "*" {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestFlat(t *testing.T) {
	c := tenancy.Flat("default", []tenancy.IP{{IP: "127.0.0.3", Hostname: "mta2.mailwave.test"}}, "", tenancy.Unsubscribe{})
	r, err := c.Resolve("acme", "shop", "newsletter", "digest")
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != tenancy.Transactional || r.Domain != "" || r.Pool != "default" || len(r.PoolConfig.IPs) != 1 || r.DomainSchedule != nil {
		t.Fatalf("%+v", r)
	}
}

// Every mistake stops the planner with the path of the field.
func TestValidateNamesTheField(t *testing.T) {
	const base = `
pools:
  p: {ips: [{ip: 127.0.0.3, hostname: mta.example.test}]}
domains:
  example.test: {postal_address: "1 Main St", unsubscribe: {url: "https://u.example.test"}}
tenants:
  acme:
    brands:
      shop:
        streams:
          news: {kind: bulk, domain: example.test, pool: p}
`
	if _, err := tenancy.Parse([]byte(base)); err != nil {
		t.Fatalf("base: %v", err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"ip: 127.0.0.3", "ip: mta1", "pools.p.ips[0].ip"},
		{"hostname: mta.example.test", "hostname: localhost", "pools.p.ips[0].hostname"},
		{`"https://u.example.test"`, `"http://u.example.test"`, "domains.example.test.unsubscribe.url"},
		{`postal_address: "1 Main St", `, "", "domains.example.test.postal_address"},
		{"kind: bulk", "kind: spam", "tenants.acme.brands.shop.streams.news.kind"},
		{"pool: p}", "pool: q}", "tenants.acme.brands.shop.streams.news.pool"},
		{"pool: p}", "pool: p, relay: esp}", "tenants.acme.brands.shop.streams.news.relay"},
		{"domain: example.test,", "domain: other.test,", "tenants.acme.brands.shop.streams.news.domain"},
		{"shop:\n", "shop:\n        default_stream: tx\n", "tenants.acme.brands.shop.default_stream"},
		{"kind: bulk,", "kind: bulk, colour: blue,", "field colour not found"},
		{"pools:\n", "warmup: {levels: [{days: 0, per_day: 5}], then: {per_day: 10, increase: 1, until: 20}, fast_share: 1, fast_step: 1}\npools:\n", "warmup.levels[0].days"},
		{"news: {", "news: {types: {bad.type: {pool: p}}, ", "streams.news.types.bad.type"},
	} {
		src := strings.Replace(base, tc.old, tc.new, 1)
		if src == base {
			t.Fatalf("%q does not occur", tc.old)
		}
		_, err := tenancy.Parse([]byte(src))
		if !errors.Is(err, tenancy.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.want, err)
		}
	}
}
