// Package planner turns send requests into dispatch messages: one rendered
// message per recipient, routed by the tenancy model (brand → stream →
// sending domain → IP pool), checked against suppressions and
// preferences, made compliant (one-click unsubscribe, Feedback-ID, postal
// address), capped by the warm-up ramps of new IPs and domains, and
// released in waves per provider over the campaign's send window.
// Transactional requests have their own lane from the SEND stream to the
// sender. Every recipient gets an accepted event, or a suppressed or
// dropped event with the reason.
package planner

import (
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/shaping"
	"github.com/mailwave/mailwave/pkg/tenancy"
	"github.com/mailwave/mailwave/pkg/verp"
)

// Config is the planner's configuration.
type Config struct {
	service.Common
	// VERPKeys sign return paths; the first signs, all verify.
	VERPKeys []string `env:"MW_VERP_KEYS" secret:"true" usage:"keys that sign VERP return paths, comma separated; the first signs"`
	// Tenancy is the YAML tenancy file; without it the planner runs the
	// open default built from Pool, SourceIPs, HeloNames and BounceDomain.
	Tenancy string `env:"MW_TENANCY" flag:"tenancy" usage:"YAML tenancy file: tenants, brands, streams, sending domains, pools (default: one open pool from MW_POOL and MW_SOURCE_IPS)"`
	// Pool is the IP pool of the default tenancy.
	Pool string `env:"MW_POOL" flag:"pool" default:"default" usage:"IP pool of the default tenancy (without MW_TENANCY)"`
	// SourceIPs are the default pool's addresses; a message gets one by
	// hash of its recipient so a recipient's mail keeps one source.
	SourceIPs []string `env:"MW_SOURCE_IPS" flag:"source-ips" usage:"source IPs of the default pool, comma separated (empty: the sender's default route)"`
	// HeloNames are the EHLO names of SourceIPs, in the same order.
	HeloNames []string `env:"MW_HELO_NAMES" flag:"helo-names" usage:"EHLO name of each source IP, same order"`
	// BounceDomain receives bounces in the default tenancy; empty means
	// "bounces." + the sending domain.
	BounceDomain string `env:"MW_BOUNCE_DOMAIN" flag:"bounce-domain" usage:"domain of VERP return paths in the default tenancy (default bounces.<sending domain>)"`
	// UnsubscribeURL is the public https base of the one-click endpoint
	// in the default tenancy.
	UnsubscribeURL string `env:"MW_UNSUBSCRIBE_URL" usage:"public https base of the one-click unsubscribe endpoint in the default tenancy (links are <url>/u/<token>)"`
	// UnsubscribeKeys sign one-click unsubscribe tokens; empty derives a
	// key from each VERP key.
	UnsubscribeKeys []string      `env:"MW_UNSUBSCRIBE_KEYS" secret:"true" usage:"keys that sign one-click unsubscribe tokens, comma separated; the first signs (default: derived from MW_VERP_KEYS)"`
	MaxAge          time.Duration `env:"MW_MAX_AGE" default:"72h" usage:"how long a message may be retried before it expires (a stream or request may say otherwise)"`
	// Workers plan bulk requests; TxWorkers plan transactional ones, in
	// their own lane.
	Workers   int `env:"MW_PLANNER_WORKERS" default:"4" usage:"bulk send requests planned at once"`
	TxWorkers int `env:"MW_PLANNER_TX_WORKERS" default:"64" usage:"transactional send requests planned at once (their own lane)"`
	// EventWorkers count campaign progress and apply preference updates.
	EventWorkers int `env:"MW_PLANNER_EVENT_WORKERS" default:"4" usage:"events counted for campaign progress at once"`
	// DNSServer resolves recipient domains' MX to their provider (warm-up
	// and waves are per provider).
	DNSServer string `env:"MW_DNS_SERVER" flag:"dns-server" usage:"host:port of the resolver for MX lookups (default: /etc/resolv.conf; none: no lookups, each recipient domain is its own provider)"`
	// ShapingFile is the sender's shaping policy: waves are sized to it.
	ShapingFile string `env:"MW_SHAPING_FILE" flag:"shaping" usage:"the sender's YAML shaping policy, which sizes waves (default: the shipped limits)"`
	// WaveInterval is the spacing of a campaign's waves.
	WaveInterval time.Duration `env:"MW_WAVE_INTERVAL" default:"1m" usage:"time between two waves of a campaign to one provider"`
	// WaveShare is the share of a source IP's shaping rate that waves
	// fill, leaving room for retries and transactional mail.
	WaveShare float64 `env:"MW_WAVE_SHARE" default:"0.8" usage:"share of the shaping rate of an IP and provider that waves may fill (0..1]"`
	// Recheck is how often a request that waits (a failing audit, volume
	// beyond today's warm-up caps) is looked at again.
	Recheck time.Duration `env:"MW_PLANNER_RECHECK" default:"5m" usage:"how often a held or waiting request is looked at again"`
	// HoldMax is how long a request held by a failing authentication audit
	// waits before every recipient is dropped with the reason.
	HoldMax time.Duration `env:"MW_HOLD_MAX" default:"24h" usage:"how long a request held by a failing SPF/DKIM/DMARC audit waits before it is dropped"`
	// CampaignTTL is how long campaign progress is kept.
	CampaignTTL time.Duration `env:"MW_CAMPAIGN_TTL" default:"1080h" usage:"how long campaign progress counters are kept"`

	// Clock, when set, replaces the wall clock of every planning
	// decision (tests run days in seconds). Not configurable.
	Clock func() time.Time
}

// Validate checks the configuration; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if _, err := verp.ParseKeys(c.VERPKeys); err != nil {
		return config.Errorf("MW_VERP_KEYS", "%v", err)
	}
	for _, k := range c.UnsubscribeKeys {
		if len(k) < 16 {
			return config.Errorf("MW_UNSUBSCRIBE_KEYS", "each key needs at least 16 characters")
		}
	}
	if c.Tenancy != "" {
		if _, err := tenancy.Load(c.Tenancy); err != nil {
			return config.Errorf("MW_TENANCY", "%v", err)
		}
		// The flat settings describe the default tenancy only: set
		// beside a file they would be silently ignored.
		for env, set := range map[string]bool{"MW_SOURCE_IPS": len(c.SourceIPs) > 0, "MW_HELO_NAMES": len(c.HeloNames) > 0,
			"MW_BOUNCE_DOMAIN": c.BounceDomain != "", "MW_UNSUBSCRIBE_URL": c.UnsubscribeURL != ""} {
			if set {
				return config.Errorf(env, "set in the tenancy file (MW_TENANCY) instead")
			}
		}
	}
	if c.Pool == "" || strings.ContainsAny(c.Pool, ".*> ") {
		return config.Errorf("MW_POOL", "%q is not a valid pool name", c.Pool)
	}
	for _, ip := range c.SourceIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return config.Errorf("MW_SOURCE_IPS", "%q is not an IP address", ip)
		}
	}
	if len(c.HeloNames) != 0 && len(c.HeloNames) != len(c.SourceIPs) {
		return config.Errorf("MW_HELO_NAMES", "needs one name per source IP (%d), got %d", len(c.SourceIPs), len(c.HeloNames))
	}
	if c.UnsubscribeURL != "" {
		u, err := url.Parse(c.UnsubscribeURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" {
			return config.Errorf("MW_UNSUBSCRIBE_URL", "%q is not an https URL without query (RFC 8058 §3.1)", c.UnsubscribeURL)
		}
	}
	if c.MaxAge < time.Minute {
		return config.Errorf("MW_MAX_AGE", "must be at least 1m")
	}
	if c.Workers < 1 {
		return config.Errorf("MW_PLANNER_WORKERS", "must be at least 1")
	}
	if c.TxWorkers < 1 {
		return config.Errorf("MW_PLANNER_TX_WORKERS", "must be at least 1")
	}
	if c.EventWorkers < 1 {
		return config.Errorf("MW_PLANNER_EVENT_WORKERS", "must be at least 1")
	}
	if c.ShapingFile != "" {
		if _, err := shaping.Load(c.ShapingFile); err != nil {
			return config.Errorf("MW_SHAPING_FILE", "%v", err)
		}
	}
	// Waves are JetStream message schedules, which have one-second
	// resolution.
	if c.WaveInterval < time.Second {
		return config.Errorf("MW_WAVE_INTERVAL", "must be at least 1s")
	}
	if !(c.WaveShare > 0 && c.WaveShare <= 1) {
		return config.Errorf("MW_WAVE_SHARE", "must be above 0 and at most 1, got %g", c.WaveShare)
	}
	if c.Recheck < time.Second {
		return config.Errorf("MW_PLANNER_RECHECK", "must be at least 1s")
	}
	if c.HoldMax < c.Recheck {
		return config.Errorf("MW_HOLD_MAX", "must be at least MW_PLANNER_RECHECK (%s)", c.Recheck)
	}
	if c.CampaignTTL < time.Hour {
		return config.Errorf("MW_CAMPAIGN_TTL", "must be at least 1h")
	}
	return nil
}

// tenancyModel returns the tenancy the configuration describes.
func (c *Config) tenancyModel() (*tenancy.Config, error) {
	if c.Tenancy != "" {
		return tenancy.Load(c.Tenancy)
	}
	ips := make([]tenancy.IP, len(c.SourceIPs))
	for i, a := range c.SourceIPs {
		ips[i] = tenancy.IP{IP: a}
		if len(c.HeloNames) > 0 {
			ips[i].Hostname = c.HeloNames[i]
		}
	}
	return tenancy.Flat(c.Pool, ips, c.BounceDomain, tenancy.Unsubscribe{URL: c.UnsubscribeURL}), nil
}

func (c *Config) now() time.Time {
	if c.Clock != nil {
		return c.Clock()
	}
	return time.Now()
}
