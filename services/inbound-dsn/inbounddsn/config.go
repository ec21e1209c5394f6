package inbounddsn

import (
	"crypto/tls"
	"net"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/service"
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
	// Receiver limits.
	MaxMessageBytes int64         `env:"MW_SMTP_MAX_BYTES" default:"983040" usage:"largest message accepted, bytes (must fit the NATS max_payload)"`
	MaxConnsPerIP   int           `env:"MW_SMTP_MAX_CONNS_PER_IP" default:"10" usage:"simultaneous SMTP connections per client IP"`
	MaxConns        int           `env:"MW_SMTP_MAX_CONNS" default:"500" usage:"simultaneous SMTP connections in all"`
	SessionTimeout  time.Duration `env:"MW_SMTP_SESSION_TIMEOUT" default:"10m" usage:"longest SMTP session"`
	CommandTimeout  time.Duration `env:"MW_SMTP_COMMAND_TIMEOUT" default:"2m" usage:"longest wait for one SMTP command"`
	StoreTimeout    time.Duration `env:"MW_SMTP_STORE_TIMEOUT" default:"30s" usage:"longest wait for JetStream to store a message before the receiver answers 451 (try again later)"`
	// TLSCert and TLSKey enable STARTTLS.
	TLSCert string `env:"MW_SMTP_TLS_CERT" flag:"tls-cert" usage:"PEM certificate for STARTTLS (with MW_SMTP_TLS_KEY)"`
	TLSKey  string `env:"MW_SMTP_TLS_KEY" flag:"tls-key" usage:"PEM private key for STARTTLS"`
	// ReplyRelay is the smarthost replies are forwarded through.
	ReplyRelay string `env:"MW_REPLY_RELAY" flag:"reply-relay" usage:"host:port of the relay replies are forwarded through (empty: replies are kept, not forwarded)"`
	// Workers handle inbound messages at once.
	Workers int `env:"MW_INBOUND_WORKERS" default:"4" usage:"inbound messages handled at once"`

	// OnSMTPListen, when set, receives the receiver's address once it
	// listens (tests and the development stack listen on port 0).
	OnSMTPListen func(net.Addr)

	thresholds *Thresholds
	tls        *tls.Config
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
	if len(c.VERPKeys) == 0 {
		return config.Errorf("MW_VERP_KEYS", "at least one key is required (the planner's keys)")
	}
	for _, k := range c.VERPKeys {
		if len(k) < 16 {
			return config.Errorf("MW_VERP_KEYS", "each key needs at least 16 characters")
		}
	}
	t := DefaultThresholds()
	if c.ThresholdsFile != "" {
		var err error
		if t, err = LoadThresholds(c.ThresholdsFile); err != nil {
			return config.Errorf("MW_BOUNCE_THRESHOLDS", "%v", err)
		}
	}
	c.thresholds = t
	if c.MaxMessageBytes < 1024 {
		return config.Errorf("MW_SMTP_MAX_BYTES", "must be at least 1024")
	}
	if c.MaxConnsPerIP < 1 {
		return config.Errorf("MW_SMTP_MAX_CONNS_PER_IP", "must be at least 1")
	}
	if c.MaxConns < c.MaxConnsPerIP {
		return config.Errorf("MW_SMTP_MAX_CONNS", "must be at least MW_SMTP_MAX_CONNS_PER_IP")
	}
	if c.SessionTimeout < time.Second {
		return config.Errorf("MW_SMTP_SESSION_TIMEOUT", "must be at least 1s")
	}
	if c.CommandTimeout < time.Second {
		return config.Errorf("MW_SMTP_COMMAND_TIMEOUT", "must be at least 1s")
	}
	if c.StoreTimeout == 0 {
		// A Config built in code rather than read from the environment.
		c.StoreTimeout = 30 * time.Second
	}
	if c.StoreTimeout < time.Second {
		return config.Errorf("MW_SMTP_STORE_TIMEOUT", "must be at least 1s")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return config.Errorf("MW_SMTP_TLS_CERT", "MW_SMTP_TLS_CERT and MW_SMTP_TLS_KEY go together")
	}
	c.tls = nil
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return config.Errorf("MW_SMTP_TLS_CERT", "%v", err)
		}
		c.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if c.ReplyRelay != "" {
		if _, _, err := net.SplitHostPort(c.ReplyRelay); err != nil {
			return config.Errorf("MW_REPLY_RELAY", "%q is not host:port", c.ReplyRelay)
		}
	}
	if c.Workers < 1 {
		return config.Errorf("MW_INBOUND_WORKERS", "must be at least 1")
	}
	return nil
}

// Thresholds returns the thresholds Validate loaded.
func (c *Config) Thresholds() *Thresholds { return c.thresholds }
