// Package sender delivers dispatch messages over SMTP: it resolves the
// recipient domain's MX, binds the message's source IP, greets with that
// IP's name, upgrades to TLS when offered, reuses sessions per destination,
// and turns every answer into a delivery event — delivered, deferred (with
// a retry), bounced or expired.
package sender

import (
	"net"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/response"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/shaping"
)

// Config is the sender's configuration.
type Config struct {
	service.Common
	// DNSServer is the resolver for MX lookups; empty uses /etc/resolv.conf.
	DNSServer string `env:"MW_DNS_SERVER" flag:"dns-server" usage:"host:port of the DNS resolver for MX lookups (default: /etc/resolv.conf)"`
	// SMTPPort is the destination port of MX hosts: 25, except against a
	// simulator.
	SMTPPort int `env:"MW_SMTP_PORT" flag:"smtp-port" default:"25" usage:"destination port of MX hosts"`
	// HeloName greets when a message's routing names none.
	HeloName string `env:"MW_HELO_NAME" flag:"helo-name" usage:"default EHLO name (default: the host name)"`
	// Workers is the number of messages in delivery at once.
	Workers int `env:"MW_SENDER_WORKERS" flag:"workers" default:"64" usage:"messages in delivery at once"`
	// MaxPerConnection bounds the messages sent on one SMTP session.
	MaxPerConnection int `env:"MW_MAX_PER_CONNECTION" default:"100" usage:"messages sent on one SMTP session before it is closed"`
	// IdleTimeout closes a reusable session nobody used for this long.
	IdleTimeout time.Duration `env:"MW_SMTP_IDLE_TIMEOUT" default:"15s" usage:"how long an idle SMTP session is kept for reuse"`
	// RetryMax caps every retry delay: the response rules' and the
	// shaping policy's (which gives the interval per reason and attempt
	// when no rule names one).
	RetryMax time.Duration `env:"MW_RETRY_MAX" default:"30h" usage:"longest retry delay, the response rules' and the shaping policy's included"`
	// PauseRecheck is how often a message held by a pause is looked at
	// again: the longest a resume can take to release it.
	PauseRecheck time.Duration `env:"MW_PAUSE_RECHECK" default:"30s" usage:"how often a paused message is looked at again"`
	// ResponseRules is a YAML file of SMTP response rules; empty uses the
	// shipped rules.
	ResponseRules string `env:"MW_RESPONSE_RULES" flag:"response-rules" usage:"YAML file of SMTP response rules (default: the shipped rules)"`
	// ShapingFile is the YAML shaping policy laid over the shipped one.
	ShapingFile string `env:"MW_SHAPING_FILE" flag:"shaping" usage:"YAML shaping policy laid over the shipped defaults (limits per provider, IP and tenant; retry intervals)"`
}

// Validate checks the configuration; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if c.DNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DNSServer); err != nil {
			return config.Errorf("MW_DNS_SERVER", "%v", err)
		}
	}
	if c.SMTPPort < 1 || c.SMTPPort > 65535 {
		return config.Errorf("MW_SMTP_PORT", "must be a port number, got %d", c.SMTPPort)
	}
	if c.Workers < 1 {
		return config.Errorf("MW_SENDER_WORKERS", "must be at least 1")
	}
	if c.MaxPerConnection < 1 {
		return config.Errorf("MW_MAX_PER_CONNECTION", "must be at least 1")
	}
	if c.IdleTimeout <= 0 {
		return config.Errorf("MW_SMTP_IDLE_TIMEOUT", "must be positive")
	}
	if c.RetryMax < time.Second {
		return config.Errorf("MW_RETRY_MAX", "must be at least 1s")
	}
	if c.ResponseRules != "" {
		if _, err := response.Load(c.ResponseRules); err != nil {
			return config.Errorf("MW_RESPONSE_RULES", "%v", err)
		}
	}
	if c.ShapingFile != "" {
		if _, err := shaping.Load(c.ShapingFile); err != nil {
			return config.Errorf("MW_SHAPING_FILE", "%v", err)
		}
	}
	if c.PauseRecheck < time.Second {
		return config.Errorf("MW_PAUSE_RECHECK", "must be at least 1s")
	}
	return nil
}
