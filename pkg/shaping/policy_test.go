package shaping_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/reason"
	"github.com/mailwave/mailwave/pkg/shaping"
)

func TestShippedDefaults(t *testing.T) {
	p := shaping.Default()
	again, err := shaping.Parse(shaping.DefaultYAML())
	if err != nil {
		t.Fatalf("the shipped file laid over itself: %v", err)
	}
	for _, prov := range []string{"google", "yahoo", "microsoft", "apple", "default", "some-site"} {
		l := p.Limits(prov, "", "")
		if l != again.Limits(prov, "", "") {
			t.Errorf("%s: Parse(DefaultYAML()) differs from Default()", prov)
		}
		if l.MaxConnections < 1 || l.MaxMessagesPerConnection < 1 || l.MessagesPerSecond <= 0 ||
			l.MessagesPerMinute <= 0 || l.MessagesPerHour <= 0 || l.ConnectionsPerMinute <= 0 || l.Paused {
			t.Errorf("%s: shipped limits incomplete: %+v", prov, l)
		}
		// Each window allows at least what the next longer one needs.
		if l.MessagesPerSecond*60 < l.MessagesPerMinute || l.MessagesPerMinute*60 < l.MessagesPerHour {
			t.Errorf("%s: a shorter window starves a longer one: %+v", prov, l)
		}
	}
	if p.Limits("some-site", "", "") != p.Limits("default", "", "") {
		t.Error("an unknown provider does not get the long tail's limits")
	}
	// Shipped retry intervals lie between 15 minutes and 30 hours.
	for _, r := range reason.All() {
		for attempt := 1; attempt <= 10; attempt++ {
			if d := p.RetryAfter(string(r), attempt); d < 15*time.Minute || d > 30*time.Hour {
				t.Errorf("RetryAfter(%s, %d) = %s, outside 15m..30h", r, attempt, d)
			}
		}
	}
	if got := p.MaxAge("newsletter"); got != 72*time.Hour {
		t.Errorf("MaxAge = %s, want 72h", got)
	}
	if p2, err := shaping.Parse(nil); err != nil || p2.Limits("google", "", "") != p.Limits("google", "", "") {
		t.Errorf("Parse(nil) = %v, want the shipped policy", err)
	}
	if p2, err := shaping.Parse([]byte("{}\n")); err != nil || p2.RetryAfter("speeding", 1) != p.RetryAfter("speeding", 1) {
		t.Errorf("Parse({}) = %v, want the shipped policy", err)
	}
}

func load(t *testing.T, name string) *shaping.Policy {
	t.Helper()
	p, err := shaping.Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLimitsMerge(t *testing.T) {
	p := load(t, "override.yaml")
	lim := func(conns, perConn int, sec, min, hour, connRate float64) shaping.Limits {
		return shaping.Limits{MaxConnections: conns, MaxMessagesPerConnection: perConn, MessagesPerSecond: sec,
			MessagesPerMinute: min, MessagesPerHour: hour, ConnectionsPerMinute: connRate}
	}
	tests := []struct {
		name                       string
		provider, sourceIP, tenant string
		want                       shaping.Limits
	}{
		{"provider over shipped", "google", "", "", lim(10, 100, 10, 300, 5000, 30)},
		{"provider name case", "GOOGLE", "", "", lim(10, 100, 10, 300, 5000, 30)},
		{"long tail", "example-site", "", "", lim(1, 20, 2, 60, 600, 10)},
		{"no provider", "", "", "", lim(1, 20, 2, 60, 600, 10)},
		{"new provider, minute window off", "fastmail", "", "", lim(4, 20, 2, 0, 600, 10)},
		{"shipped provider untouched", "microsoft", "192.0.2.99", "nobody", lim(3, 30, 3, 60, 600, 10)},
		{"tenant then tenant×provider", "google", "", "acme", lim(10, 5, 1, 300, 400, 30)},
		{"tenant at another provider", "yahoo", "", "acme", lim(5, 5, 1, 100, 1000, 20)},
		{"source IP then IP×provider", "google", "192.0.2.10", "", lim(20, 100, 10, 300, 20000, 5)},
		{"source IP wins over tenant", "google", "192.0.2.10", "acme", lim(20, 5, 1, 300, 20000, 5)},
		{"mapped address in the file", "yahoo", "192.0.2.11", "", lim(5, 20, 5, 100, 50, 20)},
		{"mapped address asked", "yahoo", "::ffff:192.0.2.11", "", lim(5, 20, 5, 100, 50, 20)},
		{"source IP that does not parse", "yahoo", "not-an-ip", "acme", lim(5, 5, 1, 100, 1000, 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Limits(tt.provider, tt.sourceIP, tt.tenant); got != tt.want {
				t.Errorf("Limits(%q, %q, %q)\n got %+v\nwant %+v", tt.provider, tt.sourceIP, tt.tenant, got, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	shipped := shaping.Default()
	over := load(t, "override.yaml")
	tests := []struct {
		p       *shaping.Policy
		reason  string
		attempt int
		want    time.Duration
	}{
		{shipped, "speeding", 1, 20 * time.Minute},
		{shipped, "speeding", 2, 40 * time.Minute},
		{shipped, "speeding", 4, 160 * time.Minute},
		{shipped, "speeding", 5, 4 * time.Hour},
		{shipped, "expired", 1, 15 * time.Minute}, // greylisting
		{shipped, "toomanyconn", 3, time.Hour},
		{shipped, "mailboxfull", 1, 24 * time.Hour},
		{shipped, "blocked", 2, 30 * time.Hour},
		{shipped, "", 1, 30 * time.Minute},
		{shipped, "no-such-reason", 3, 2 * time.Hour},
		// The file's backoff of 3 applies to the shipped intervals too.
		{over, "speeding", 1, 10 * time.Minute},
		{over, "speeding", 2, 30 * time.Minute},
		{over, "speeding", 3, 90 * time.Minute},
		{over, "speeding", 4, 4 * time.Hour},
		{over, "speeding", 0, 10 * time.Minute},
		{over, "speeding", -5, 10 * time.Minute},
		{over, "speeding", 1 << 30, 4 * time.Hour},
		{over, "mailboxfull", 2, 30 * time.Hour},
		{over, "userunknown", 1, time.Hour},
		{over, "userunknown", 2, 2 * time.Hour},
	}
	for _, tt := range tests {
		if got := tt.p.RetryAfter(tt.reason, tt.attempt); got != tt.want {
			t.Errorf("RetryAfter(%q, %d) = %s, want %s", tt.reason, tt.attempt, got, tt.want)
		}
	}
}

func TestMaxAge(t *testing.T) {
	p := load(t, "override.yaml")
	for stream, want := range map[string]time.Duration{"transactional": 30 * time.Minute, "newsletter": 48 * time.Hour, "": 48 * time.Hour} {
		if got := p.MaxAge(stream); got != want {
			t.Errorf("MaxAge(%q) = %s, want %s", stream, got, want)
		}
	}
}

// TestParseErrors: every mistake is refused with the field's path.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown top-level field", "bogus: 1\n", "bogus: unknown field"},
		{"unknown limits field", "providers:\n  yahoo:\n    messages_per_hr: 100\n", "providers.yahoo.messages_per_hr: unknown field"},
		{"unknown override field", "tenants:\n  acme:\n    limit: {}\n", "tenants.acme.limit: unknown field"},
		{"unknown retry field", "retry:\n  reasons:\n    speeding: {first: 1h, maximum: 2h}\n", "retry.reasons.speeding.maximum: unknown field"},
		{"wrong type", "providers:\n  google:\n    messages_per_hour: fast\n", "providers.google.messages_per_hour: cannot unmarshal"},
		{"list for a map", "providers: [1, 2]\n", "providers: cannot unmarshal"},
		{"duration without unit", "retry:\n  reasons:\n    speeding: {first: 20, max: 1h}\n", "retry.reasons.speeding.first: cannot unmarshal"},
		{"bad duration", "max_age:\n  default: 3 days\n", "max_age.default: cannot unmarshal"},
		{"no connections", "providers:\n  google:\n    max_connections: 0\n", "providers.google.max_connections: must be between 1 and 1000, got 0"},
		{"too many per connection", "providers:\n  google:\n    max_messages_per_connection: 1000001\n", "providers.google.max_messages_per_connection: must be between"},
		{"zero per second", "providers:\n  google:\n    messages_per_second: 0\n", "providers.google.messages_per_second: must be above 0"},
		{"negative per hour", "providers:\n  google:\n    messages_per_hour: -1\n", "providers.google.messages_per_hour: must be 0 (no limit) or above"},
		{"NaN per minute", "providers:\n  google:\n    messages_per_minute: .nan\n", "providers.google.messages_per_minute: must be"},
		{"zero connection rate", "providers:\n  default:\n    connections_per_minute: 0\n", "providers.default.connections_per_minute: must be above 0"},
		{"new provider, bad name", "providers:\n  Google: {max_connections: 1}\n", "providers.Google: a provider name is lower-case"},
		{"nested bad value", "tenants:\n  acme:\n    providers:\n      google: {max_messages_per_connection: 0}\n", "tenants.acme.providers.google.max_messages_per_connection: must be between"},
		{"bad tenant provider name", "tenants:\n  acme:\n    providers:\n      'x y': {}\n", `tenants.acme.providers["x y"]: a provider name`},
		{"tenant name with space", "tenants:\n  ' acme': {}\n", `tenants[" acme"]: a tenant name`},
		{"source IP not an IP", "source_ips:\n  nope: {}\n", "source_ips.nope: not an IP address"},
		{"source IP twice", "source_ips:\n  192.0.2.1: {}\n  '::ffff:192.0.2.1': {}\n", `source_ips["::ffff:192.0.2.1"]: the same address`},
		{"source IP bad value", "source_ips:\n  192.0.2.1:\n    limits: {messages_per_second: -2}\n", `source_ips["192.0.2.1"].limits.messages_per_second: must be above 0`},
		{"unknown reason", "retry:\n  reasons:\n    speedin: {first: 1h, max: 2h}\n", "retry.reasons.speedin: not a reason word"},
		{"reason in capitals", "retry:\n  reasons:\n    Speeding: {first: 1h, max: 2h}\n", "retry.reasons.Speeding: not a reason word"},
		{"retry too long", "retry:\n  reasons:\n    speeding: {first: 31h, max: 31h}\n", "retry.reasons.speeding.first: must be between 1s and 30h0m0s, got 31h0m0s"},
		{"retry too short", "retry:\n  default: {first: 0s}\n", "retry.default.first: must be between"},
		{"max below first after merge", "retry:\n  reasons:\n    speeding: {first: 5h}\n", "retry.reasons.speeding.max: must not be below first (5h0m0s), got 4h0m0s"},
		{"new reason without max", "retry:\n  reasons:\n    userunknown: {first: 1h}\n", "retry.reasons.userunknown.max: missing"},
		{"backoff below 1", "retry:\n  backoff: 0.5\n", "retry.backoff: must be between 1 and 10, got 0.5"},
		{"max age zero", "max_age:\n  default: 0s\n", "max_age.default: must be between 1m0s and 168h0m0s"},
		{"stream max age too long", "max_age:\n  streams:\n    bulk: 200h\n", "max_age.streams.bulk: must be between"},
		{"stream max age null", "max_age:\n  streams:\n    bulk: ~\n", "max_age.streams.bulk: missing"},
		{"two documents", "providers: {}\n---\nbogus: 1\n", "more than one YAML document"},
		{"syntax error", "providers: [\n", "yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := shaping.Parse([]byte(tt.doc))
			if !errors.Is(err, shaping.ErrInvalid) {
				t.Fatalf("Parse: %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse: %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join("testdata", "bad-unknown-field.yaml")
	_, err := shaping.Load(path)
	if !errors.Is(err, shaping.ErrInvalid) || !strings.Contains(err.Error(), path+": ") ||
		!strings.Contains(err.Error(), "providers.yahoo.messages_per_hr") {
		t.Errorf("Load: %v", err)
	}
	_, err = shaping.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestDefaultYAMLIsACopy(t *testing.T) {
	b := shaping.DefaultYAML()
	b[0] = 'X'
	if reflect.DeepEqual(b, shaping.DefaultYAML()) {
		t.Error("DefaultYAML returned the embedded slice itself")
	}
}
