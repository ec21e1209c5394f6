package inbound

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
)

// Settings are the receiver's limits and TLS as a service configures them.
// inbound-dsn and fbl-parser embed them in their Config, so both read the
// same variables the same way (pkg/config).
type Settings struct {
	MaxMessageBytes int64         `env:"MW_SMTP_MAX_BYTES" default:"983040" usage:"largest message accepted, bytes (must fit the NATS max_payload with room for the envelope)"`
	MaxConnsPerIP   int           `env:"MW_SMTP_MAX_CONNS_PER_IP" default:"10" usage:"simultaneous SMTP connections per client IP"`
	MaxConns        int           `env:"MW_SMTP_MAX_CONNS" default:"500" usage:"simultaneous SMTP connections in all"`
	SessionTimeout  time.Duration `env:"MW_SMTP_SESSION_TIMEOUT" default:"10m" usage:"longest SMTP session"`
	CommandTimeout  time.Duration `env:"MW_SMTP_COMMAND_TIMEOUT" default:"2m" usage:"longest wait for one SMTP command"`
	StoreTimeout    time.Duration `env:"MW_SMTP_STORE_TIMEOUT" default:"30s" usage:"longest wait for JetStream to store a message before the receiver answers 451 (try again later)"`
	// TLSCert and TLSKey enable STARTTLS.
	TLSCert string `env:"MW_SMTP_TLS_CERT" flag:"tls-cert" usage:"PEM certificate for STARTTLS (with MW_SMTP_TLS_KEY)"`
	TLSKey  string `env:"MW_SMTP_TLS_KEY" flag:"tls-key" usage:"PEM private key for STARTTLS"`

	tls *tls.Config
}

// envelopeRoom is what an InboundMessage adds to the raw message it
// carries (envelope, ids, headers), below the NATS max_payload.
const envelopeRoom = 16 << 10

// Validate checks the settings and loads the certificate; errors name the
// variable (pkg/config.Errorf). A zero StoreTimeout (settings built in
// code) becomes its default.
func (s *Settings) Validate() error {
	if s.MaxMessageBytes < 1024 {
		return config.Errorf("MW_SMTP_MAX_BYTES", "must be at least 1024")
	}
	if s.MaxConnsPerIP < 1 {
		return config.Errorf("MW_SMTP_MAX_CONNS_PER_IP", "must be at least 1")
	}
	if s.MaxConns < s.MaxConnsPerIP {
		return config.Errorf("MW_SMTP_MAX_CONNS", "must be at least MW_SMTP_MAX_CONNS_PER_IP")
	}
	if s.SessionTimeout < time.Second {
		return config.Errorf("MW_SMTP_SESSION_TIMEOUT", "must be at least 1s")
	}
	if s.CommandTimeout < time.Second {
		return config.Errorf("MW_SMTP_COMMAND_TIMEOUT", "must be at least 1s")
	}
	if s.StoreTimeout == 0 {
		s.StoreTimeout = 30 * time.Second
	}
	if s.StoreTimeout < time.Second {
		return config.Errorf("MW_SMTP_STORE_TIMEOUT", "must be at least 1s")
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return config.Errorf("MW_SMTP_TLS_CERT", "MW_SMTP_TLS_CERT and MW_SMTP_TLS_KEY go together")
	}
	s.tls = nil
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return config.Errorf("MW_SMTP_TLS_CERT", "%v", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return nil
}

// FitPayload checks that the largest message, with its envelope, fits
// maxPayload, the NATS server's max_payload.
func (s *Settings) FitPayload(maxPayload int64) error {
	if s.MaxMessageBytes+envelopeRoom > maxPayload {
		return fmt.Errorf("inbound: MW_SMTP_MAX_BYTES %d does not fit the NATS max_payload %d with room for the envelope", s.MaxMessageBytes, maxPayload)
	}
	return nil
}

// Apply sets c's limits and TLS (the certificate Validate loaded).
func (s *Settings) Apply(c *Config) {
	c.TLS = s.tls
	c.MaxMessageBytes = s.MaxMessageBytes
	c.MaxConnsPerIP = s.MaxConnsPerIP
	c.MaxConns = s.MaxConns
	c.SessionTimeout = s.SessionTimeout
	c.CommandTimeout = s.CommandTimeout
	c.StoreTimeout = s.StoreTimeout
}
