// Package planner turns send requests into dispatch messages: one rendered
// message per recipient, with its routing (pool, source IP, sending
// domain, signed VERP return path) and an accepted event, or a dropped
// event with the reason when a recipient cannot be planned.
package planner

import (
	"net/netip"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/service"
)

// Config is the planner's configuration.
type Config struct {
	service.Common
	// VERPKeys sign return paths; the first signs, all verify.
	VERPKeys []string `env:"MW_VERP_KEYS" secret:"true" usage:"keys that sign VERP return paths, comma separated; the first signs"`
	// Pool is the IP pool messages are routed to.
	Pool string `env:"MW_POOL" flag:"pool" default:"default" usage:"IP pool messages are routed to"`
	// SourceIPs are the pool's addresses; a message gets one by hash of
	// its recipient so a recipient's mail keeps one source.
	SourceIPs []string `env:"MW_SOURCE_IPS" flag:"source-ips" usage:"source IPs of the pool, comma separated (empty: the sender's default route)"`
	// HeloNames are the EHLO names of SourceIPs, in the same order.
	HeloNames []string `env:"MW_HELO_NAMES" flag:"helo-names" usage:"EHLO name of each source IP, same order"`
	// BounceDomain receives bounces; empty means "bounces." + the sending domain.
	BounceDomain string        `env:"MW_BOUNCE_DOMAIN" flag:"bounce-domain" usage:"domain of VERP return paths (default bounces.<sending domain>)"`
	MaxAge       time.Duration `env:"MW_MAX_AGE" default:"72h" usage:"how long a message may be retried before it expires"`
	Workers      int           `env:"MW_PLANNER_WORKERS" default:"4" usage:"send requests planned at once"`
}

// Validate checks the configuration; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if len(c.VERPKeys) == 0 {
		return config.Errorf("MW_VERP_KEYS", "at least one key is required")
	}
	for _, k := range c.VERPKeys {
		if len(k) < 16 {
			return config.Errorf("MW_VERP_KEYS", "each key needs at least 16 characters")
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
	if c.MaxAge < time.Minute {
		return config.Errorf("MW_MAX_AGE", "must be at least 1m")
	}
	if c.Workers < 1 {
		return config.Errorf("MW_PLANNER_WORKERS", "must be at least 1")
	}
	return nil
}
