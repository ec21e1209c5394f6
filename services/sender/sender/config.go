// Package sender delivers dispatch messages over SMTP: it resolves the
// recipient domain's MX, binds the message's source IP, greets with that
// IP's name, upgrades to TLS when offered, reuses sessions per destination,
// and turns every answer into a delivery event — delivered, deferred (with
// a retry), bounced or expired.
package sender

import (
	"net"
	"os"
	"strings"
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
	// ReserveHorizon is how far ahead a message waiting for its turn at a
	// rate limit reserves its slot (pkg/ratelimit reservations): it then
	// comes back exactly then, once. A message whose turn is further away
	// is looked at again when it comes within the horizon.
	ReserveHorizon time.Duration `env:"MW_RESERVE_HORIZON" default:"10s" usage:"how far ahead a message waiting for a rate limit reserves its slot (0: the default, 10s)"`
	// ResponseRules is a YAML file of SMTP response rules; empty uses the
	// shipped rules.
	ResponseRules string `env:"MW_RESPONSE_RULES" flag:"response-rules" usage:"YAML file of SMTP response rules (default: the shipped rules)"`
	// ShapingFile is the YAML shaping policy laid over the shipped one.
	ShapingFile string `env:"MW_SHAPING_FILE" flag:"shaping" usage:"YAML shaping policy laid over the shipped defaults (limits per provider, IP and tenant; retry intervals)"`
	// ConnLeaseTTL is how long a connection slot outlives a replica that
	// died holding it; live sessions renew their slots every third of it.
	// Zero is 30s.
	ConnLeaseTTL time.Duration `env:"MW_CONN_LEASE_TTL" default:"30s" usage:"how long a crashed replica's connection slots stay taken (live sessions renew theirs every third of it)"`

	// DKIMKeys is the folder of DKIM private keys, one file per selector
	// named <selector>._domainkey.<domain>.pem (a Kubernetes Secret
	// mounted as a volume); empty signs nothing.
	DKIMKeys string `env:"MW_DKIM_KEYS" flag:"dkim-keys" usage:"folder of DKIM keys named <selector>._domainkey.<domain>.pem, e.g. a Secret volume (default: no signing)"`
	// DKIMMissingKey decides a message whose sending domain (or a selector
	// its routing names) has no key while signing is on: "defer" keeps it
	// until the key is added (the folder is read again every DKIMReload),
	// "send" delivers it with the signatures it can have, or none. Empty
	// is "defer".
	DKIMMissingKey string `env:"MW_DKIM_MISSING_KEY" default:"defer" usage:"a message whose sending domain has no DKIM key: defer (until the key is added) or send (unsigned)"`
	// DKIMReload is how often the key folder is read again, so that a key
	// added to the Secret (or rotated) is used without a restart.
	DKIMReload time.Duration `env:"MW_DKIM_RELOAD" default:"1m" usage:"how often MW_DKIM_KEYS is read again for added or rotated keys (0: only at start)"`

	// RelayRoutes is a YAML file of relay routes: smarthosts with SMTP
	// AUTH that deliver instead of the recipient's MX, chosen per tenant,
	// recipient domain or the routing's relay_route.
	RelayRoutes string `env:"MW_RELAY_ROUTES" flag:"relay-routes" usage:"YAML file of relay routes (smarthosts with AUTH and failover, chosen per tenant or recipient domain)"`
	// RequireTLSDomains are recipient domains whose mail is never sent
	// without TLS: when no MX host completes STARTTLS the message is
	// deferred.
	RequireTLSDomains []string `env:"MW_REQUIRE_TLS_DOMAINS" usage:"recipient domains whose mail must go over TLS (deferred when STARTTLS is absent or fails), comma separated"`
	// SOCKSProxies maps source IPs to the SOCKS5 proxy (RFC 1928) their
	// connections egress through: "ip=host:port", comma separated. Such a
	// source is not bound locally; the proxy owns the address.
	SOCKSProxies []string `env:"MW_SOCKS_PROXIES" usage:"source IP=SOCKS5 host:port pairs, comma separated: connections from that IP leave through the proxy"`
	// SOCKSUsername and SOCKSPassword authenticate to every proxy (RFC
	// 1929); empty: no authentication.
	SOCKSUsername string `env:"MW_SOCKS_USERNAME" usage:"user name for the SOCKS5 proxies (RFC 1929)"`
	SOCKSPassword string `env:"MW_SOCKS_PASSWORD" secret:"true" usage:"password for the SOCKS5 proxies"`

	// Now is the sender's clock for deciding (expiry, retry times, policy
	// expiry); nil is time.Now. Tests share an injected clock with the
	// simulator to run days of retries in seconds.
	Now func() time.Time
	// MaxPark, when positive, bounds the real time a parked message waits
	// before it is looked at again (and parked again when not yet due by
	// Now). Only tests with an injected clock need it.
	MaxPark time.Duration
}

// defaultConnLeaseTTL is MW_CONN_LEASE_TTL's default.
const defaultConnLeaseTTL = 30 * time.Second

// defaultReserveHorizon is MW_RESERVE_HORIZON's default.
const defaultReserveHorizon = 10 * time.Second

// reserveHorizon is the horizon in force.
func (c *Config) reserveHorizon() time.Duration {
	if c.ReserveHorizon == 0 {
		return defaultReserveHorizon
	}
	return c.ReserveHorizon
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
	if c.ReserveHorizon != 0 && (c.ReserveHorizon < time.Second || c.ReserveHorizon > 10*time.Minute) {
		return config.Errorf("MW_RESERVE_HORIZON", "must be between 1s and 10m, got %s", c.ReserveHorizon)
	}
	if c.ConnLeaseTTL != 0 && c.ConnLeaseTTL < 3*time.Second {
		return config.Errorf("MW_CONN_LEASE_TTL", "must be at least 3s, got %s", c.ConnLeaseTTL)
	}
	if c.DKIMKeys != "" {
		if _, err := loadSigner(c.DKIMKeys); err != nil {
			return config.Errorf("MW_DKIM_KEYS", "%v", err)
		}
	}
	if c.DKIMMissingKey != "" && c.DKIMMissingKey != missingKeyDefer && c.DKIMMissingKey != missingKeySend {
		return config.Errorf("MW_DKIM_MISSING_KEY", "must be %q or %q, got %q", missingKeyDefer, missingKeySend, c.DKIMMissingKey)
	}
	if c.DKIMReload < 0 || (c.DKIMReload > 0 && c.DKIMReload < time.Second) {
		return config.Errorf("MW_DKIM_RELOAD", "must be 0 or at least 1s, got %s", c.DKIMReload)
	}
	if c.RelayRoutes != "" {
		if _, err := loadRelays(c.RelayRoutes, os.Getenv); err != nil {
			return config.Errorf("MW_RELAY_ROUTES", "%v", err)
		}
	}
	for _, d := range c.RequireTLSDomains {
		if d == "" || strings.ContainsAny(d, "@ /:") {
			return config.Errorf("MW_REQUIRE_TLS_DOMAINS", "%q is not a domain", d)
		}
	}
	if _, err := parseSOCKS(c.SOCKSProxies, c.SOCKSUsername, c.SOCKSPassword); err != nil {
		return config.Errorf("MW_SOCKS_PROXIES", "%v", err)
	}
	if c.SOCKSPassword != "" && c.SOCKSUsername == "" {
		return config.Errorf("MW_SOCKS_USERNAME", "required with MW_SOCKS_PASSWORD")
	}
	return nil
}
