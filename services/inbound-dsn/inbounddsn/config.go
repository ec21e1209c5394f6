package inbounddsn

import (
	"net"
	"strings"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/verp"
)

// Config is the inbound-dsn configuration.
type Config struct {
	service.Common
	// SMTPAddr is where the bounce receiver listens (the MX of the
	// bounce domains).
	SMTPAddr string `env:"MW_SMTP_ADDR" flag:"smtp-addr" default:":25" usage:"address the SMTP receiver listens on"`
	// SMTPHostname names the receiver in its greeting.
	SMTPHostname string `env:"MW_SMTP_HOSTNAME" flag:"smtp-hostname" usage:"host name in the SMTP greeting (default the first bounce domain)"`
	// BounceDomains are the domains of the VERP return paths.
	BounceDomains []string `env:"MW_BOUNCE_DOMAINS" flag:"bounce-domains" usage:"domains of VERP return paths, comma separated"`
	// VERPKeys verify return paths: the planner's MW_VERP_KEYS.
	VERPKeys []string `env:"MW_VERP_KEYS" secret:"true" usage:"keys that verify VERP return paths (the planner's), comma separated"`
	// ThresholdsFile holds the bounce thresholds per brand (YAML, see
	// Thresholds); empty uses DefaultThresholds.
	ThresholdsFile string `env:"MW_BOUNCE_THRESHOLDS" flag:"thresholds" usage:"YAML file of bounce thresholds, retryable statuses and reply addresses per brand"`
	// The receiver's limits and TLS, as fbl-parser's.
	inbound.Settings
	// ReplyRelay is the smarthost replies are forwarded through.
	ReplyRelay string `env:"MW_REPLY_RELAY" flag:"reply-relay" usage:"host:port of the relay replies are forwarded through (empty: replies are kept, not forwarded)"`
	// Workers handle inbound messages at once.
	Workers int `env:"MW_INBOUND_WORKERS" default:"4" usage:"inbound messages handled at once"`
	// EventWorkers handle delivery events at once; their counter resets
	// go to Redis together.
	EventWorkers int `env:"MW_EVENT_WORKERS" default:"64" usage:"delivery events handled at once (their counter resets go to Redis together)"`

	// OnSMTPListen, when set, receives the receiver's address once it
	// listens (tests and the development stack listen on port 0).
	OnSMTPListen func(net.Addr)

	thresholds *Thresholds
}

// Validate checks the configuration and loads the thresholds file and the
// certificate; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.SMTPAddr); err != nil {
		return config.Errorf("MW_SMTP_ADDR", "%q is not host:port", c.SMTPAddr)
	}
	if len(c.BounceDomains) == 0 {
		return config.Errorf("MW_BOUNCE_DOMAINS", "at least one bounce domain is required")
	}
	for i, d := range c.BounceDomains {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if d == "" || strings.ContainsAny(d, "@ /") || !strings.Contains(d, ".") {
			return config.Errorf("MW_BOUNCE_DOMAINS", "%q is not a domain", c.BounceDomains[i])
		}
		c.BounceDomains[i] = d
	}
	if _, err := verp.ParseKeys(c.VERPKeys); err != nil {
		return config.Errorf("MW_VERP_KEYS", "%v", err)
	}
	t := DefaultThresholds()
	if c.ThresholdsFile != "" {
		var err error
		if t, err = LoadThresholds(c.ThresholdsFile); err != nil {
			return config.Errorf("MW_BOUNCE_THRESHOLDS", "%v", err)
		}
	}
	c.thresholds = t
	if err := c.Settings.Validate(); err != nil {
		return err
	}
	if c.ReplyRelay != "" {
		if _, _, err := net.SplitHostPort(c.ReplyRelay); err != nil {
			return config.Errorf("MW_REPLY_RELAY", "%q is not host:port", c.ReplyRelay)
		}
	}
	if c.Workers < 1 {
		return config.Errorf("MW_INBOUND_WORKERS", "must be at least 1")
	}
	if c.EventWorkers < 0 {
		return config.Errorf("MW_EVENT_WORKERS", "must not be negative")
	}
	if c.EventWorkers == 0 {
		c.EventWorkers = 64
	}
	return nil
}

// Thresholds returns the thresholds Validate loaded.
func (c *Config) Thresholds() *Thresholds { return c.thresholds }
