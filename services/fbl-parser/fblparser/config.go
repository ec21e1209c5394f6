package fblparser

import (
	"net"
	"os"
	"strings"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/verp"
)

// SMTPOff, as MW_SMTP_ADDR, runs no SMTP intake.
const SMTPOff = "off"

// Config is the fbl-parser configuration.
type Config struct {
	service.Common
	// MailboxesFile is the YAML file of feedback mailboxes (see
	// ParseMailboxes). Passwords come from secret files or environment
	// variables it names, never from the file itself.
	MailboxesFile string `env:"MW_FBL_MAILBOXES" flag:"mailboxes" usage:"YAML file of the feedback mailboxes to read (host, tls, username, password_file or password_env, folders, trusted, reporters)"`
	// SMTPAddr is where the SMTP intake listens; SMTPOff disables it.
	SMTPAddr string `env:"MW_SMTP_ADDR" flag:"smtp-addr" default:":25" usage:"address the SMTP intake listens on (\"off\": no SMTP intake)"`
	// SMTPHostname names the intake in its greeting.
	SMTPHostname string `env:"MW_SMTP_HOSTNAME" flag:"smtp-hostname" usage:"host name in the SMTP greeting (default the domain of the first FBL address)"`
	// Addresses are the FBL addresses providers mail reports to; an entry
	// without '@' takes every address of that domain.
	Addresses []string `env:"MW_FBL_ADDRESSES" flag:"fbl-addresses" usage:"FBL addresses the SMTP intake takes reports for, comma separated; a bare domain takes all its addresses"`
	// Reporters are the feedback-loop operators' domains whose SMTP reports
	// are acted on, when a DKIM signature of one of them verifies.
	Reporters []string `env:"MW_FBL_SMTP_REPORTERS" flag:"smtp-reporters" usage:"domains of the feedback loops whose SMTP reports are acted on (a DKIM signature of the domain must verify), comma separated"`
	// VERPKeys verify return paths: the planner's MW_VERP_KEYS.
	VERPKeys []string `env:"MW_VERP_KEYS" secret:"true" usage:"keys that verify VERP return paths (the planner's), comma separated"`
	// DNSServer answers DKIM key lookups.
	DNSServer string `env:"MW_DNS_SERVER" flag:"dns-server" usage:"host:port of the resolver for DKIM key lookups (default the system resolver)"`
	// The receiver's limits and TLS, as inbound-dsn's; MW_SMTP_MAX_BYTES
	// also bounds a report stored from a mailbox.
	inbound.Settings
	// PollInterval is how often a mailbox without IDLE is looked at, and
	// how often IDLE is renewed.
	PollInterval time.Duration `env:"MW_FBL_POLL_INTERVAL" default:"5m" usage:"how often a mailbox without IDLE is polled; IDLE is renewed as often"`
	// ReconnectMin and ReconnectMax bound the wait before a mailbox is
	// connected again after a failure; it doubles per failure.
	ReconnectMin time.Duration `env:"MW_FBL_RECONNECT_MIN" default:"1s" usage:"first wait before reconnecting to a failed mailbox"`
	ReconnectMax time.Duration `env:"MW_FBL_RECONNECT_MAX" default:"2m" usage:"longest wait before reconnecting to a failed mailbox"`
	// DedupTTL is how long a report fingerprint is remembered.
	DedupTTL time.Duration `env:"MW_FBL_DEDUP_TTL" default:"720h" usage:"how long a report is remembered, so that a second copy counts once"`
	// CounterTTL is how long an hourly complaint counter is kept.
	CounterTTL time.Duration `env:"MW_FBL_COUNTER_TTL" default:"192h" usage:"how long the hourly complaint counters are kept in Redis"`
	// Workers handle stored reports at once.
	Workers int `env:"MW_INBOUND_WORKERS" default:"4" usage:"stored reports processed at once"`

	// Mailboxes are read in addition to those of MailboxesFile: the
	// development stack and tests configure mailboxes in code.
	Mailboxes []Mailbox
	// Getenv reads the variables that mailboxes name in password_env;
	// nil uses os.Getenv. main passes its own.
	Getenv func(string) string
	// OnSMTPListen, when set, receives the SMTP intake's address once it
	// listens (tests and the development stack listen on port 0).
	OnSMTPListen func(net.Addr)

	validated bool
	mailboxes []Mailbox
}

// Validate checks the configuration, reads the mailboxes file and their
// passwords and loads the certificate; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var boxes []Mailbox
	if c.MailboxesFile != "" {
		b, err := os.ReadFile(c.MailboxesFile)
		if err != nil {
			return config.Errorf("MW_FBL_MAILBOXES", "%v", err)
		}
		if boxes, err = ParseMailboxes(b, getenv); err != nil {
			return config.Errorf("MW_FBL_MAILBOXES", "%s: %v", c.MailboxesFile, err)
		}
	}
	inCode := make([]Mailbox, len(c.Mailboxes))
	for i, m := range c.Mailboxes {
		m.Reporters = append([]string(nil), m.Reporters...)
		inCode[i] = m
	}
	boxes, err := resolveMailboxes(append(boxes, inCode...), getenv)
	if err != nil {
		return config.Errorf("MW_FBL_MAILBOXES", "%v", err)
	}
	c.mailboxes = boxes
	smtpOn := c.SMTPAddr != SMTPOff
	if smtpOn {
		if _, _, err := net.SplitHostPort(c.SMTPAddr); err != nil {
			return config.Errorf("MW_SMTP_ADDR", "%q is not host:port (or \"off\")", c.SMTPAddr)
		}
		if len(c.Addresses) == 0 {
			return config.Errorf("MW_FBL_ADDRESSES", "the SMTP intake needs at least one FBL address (or MW_SMTP_ADDR=off)")
		}
	}
	if !smtpOn && len(boxes) == 0 {
		return config.Errorf("MW_FBL_MAILBOXES", "no mailbox and no SMTP intake: nothing to read reports from")
	}
	for i, a := range c.Addresses {
		a = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(a), "."))
		local, domain, hasAt := strings.Cut(a, "@")
		if !hasAt {
			domain = local
		}
		if hasAt && (local == "" || strings.ContainsAny(local, " <>")) || !isDomain(domain) {
			return config.Errorf("MW_FBL_ADDRESSES", "%q is neither an address nor a domain", c.Addresses[i])
		}
		c.Addresses[i] = a
	}
	for i, d := range c.Reporters {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if !isDomain(d) {
			return config.Errorf("MW_FBL_SMTP_REPORTERS", "%q is not a domain", c.Reporters[i])
		}
		c.Reporters[i] = d
	}
	if _, err := verp.ParseKeys(c.VERPKeys); err != nil {
		return config.Errorf("MW_VERP_KEYS", "%v", err)
	}
	if c.DNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DNSServer); err != nil {
			return config.Errorf("MW_DNS_SERVER", "%q is not host:port", c.DNSServer)
		}
	}
	if err := c.Settings.Validate(); err != nil {
		return err
	}
	if c.PollInterval < time.Second {
		return config.Errorf("MW_FBL_POLL_INTERVAL", "must be at least 1s")
	}
	if c.PollInterval > 29*time.Minute {
		// RFC 2177: a server may log out a client idle for 30 minutes.
		return config.Errorf("MW_FBL_POLL_INTERVAL", "must be at most 29m (IDLE is renewed that often, RFC 2177)")
	}
	if c.ReconnectMin <= 0 {
		return config.Errorf("MW_FBL_RECONNECT_MIN", "must be positive")
	}
	if c.ReconnectMax < c.ReconnectMin {
		return config.Errorf("MW_FBL_RECONNECT_MAX", "must be at least MW_FBL_RECONNECT_MIN")
	}
	if c.DedupTTL < time.Hour {
		return config.Errorf("MW_FBL_DEDUP_TTL", "must be at least 1h")
	}
	if c.CounterTTL < time.Hour {
		return config.Errorf("MW_FBL_COUNTER_TTL", "must be at least 1h")
	}
	if c.Workers < 1 {
		return config.Errorf("MW_INBOUND_WORKERS", "must be at least 1")
	}
	c.validated = true
	return nil
}

// SMTPEnabled reports whether the SMTP intake runs.
func (c *Config) SMTPEnabled() bool { return c.SMTPAddr != SMTPOff }

// ResolvedMailboxes returns the mailboxes Validate read, with their
// passwords: do not log them as they are (Mailbox redacts itself).
func (c *Config) ResolvedMailboxes() []Mailbox { return append([]Mailbox(nil), c.mailboxes...) }
