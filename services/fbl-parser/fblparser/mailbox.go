package fblparser

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrMailbox wraps every error in a feedback mailbox definition.
var ErrMailbox = errors.New("fblparser: invalid mailbox")

// TLS modes of a feedback mailbox connection.
const (
	TLSImplicit = "implicit" // TLS from the first byte (port 993, RFC 8314)
	TLSStartTLS = "starttls" // STARTTLS upgrade (RFC 9051 §6.2.1)
	TLSNone     = "none"     // cleartext, for loopback test servers only
)

// Mailbox is one feedback mailbox the intake reads: a provider's feedback
// loop delivers its ARF reports there.
type Mailbox struct {
	// Name identifies the mailbox in logs, metrics, the intake state and
	// the InboundMessage source ("imap:<name>").
	Name string `yaml:"name"`
	// Addr is the IMAP server's host:port.
	Addr string `yaml:"addr"`
	// TLS is implicit (default), starttls or none.
	TLS string `yaml:"tls"`
	// InsecureSkipVerify accepts any server certificate (test servers).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Username logs in; the password is Password, or read from
	// PasswordFile, or from the environment variable PasswordEnv.
	Username     string `yaml:"username"`
	Password     string `yaml:"-"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// Folder is read (default INBOX); reports are moved to Processed
	// (default "Processed") once stored, or to Failed (default "Failed")
	// when they are not feedback reports.
	Folder    string `yaml:"folder"`
	Processed string `yaml:"processed"`
	Failed    string `yaml:"failed"`
	// Trusted says the reports of this mailbox come from a feedback loop we
	// enrolled in: only then are they acted on.
	Trusted bool `yaml:"trusted"`
}

func (m *Mailbox) setDefaults() {
	if m.TLS == "" {
		m.TLS = TLSImplicit
	}
	if m.Folder == "" {
		m.Folder = "INBOX"
	}
	if m.Processed == "" {
		m.Processed = "Processed"
	}
	if m.Failed == "" {
		m.Failed = "Failed"
	}
}

// resolve fills defaults and the password and checks the definition.
func (m *Mailbox) resolve(getenv func(string) string) error {
	m.setDefaults()
	if m.Name == "" || strings.ContainsAny(m.Name, ".*> ") {
		return fmt.Errorf("%w: name %q must be a non-empty token", ErrMailbox, m.Name)
	}
	if m.Addr == "" || !strings.Contains(m.Addr, ":") {
		return fmt.Errorf("%w: %s: addr %q must be host:port", ErrMailbox, m.Name, m.Addr)
	}
	switch m.TLS {
	case TLSImplicit, TLSStartTLS, TLSNone:
	default:
		return fmt.Errorf("%w: %s: tls %q is not implicit, starttls or none", ErrMailbox, m.Name, m.TLS)
	}
	if m.Username == "" {
		return fmt.Errorf("%w: %s: username is required", ErrMailbox, m.Name)
	}
	if m.Password == "" && m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return fmt.Errorf("%w: %s: password_file: %v", ErrMailbox, m.Name, err)
		}
		m.Password = strings.TrimRight(string(b), "\r\n")
	}
	if m.Password == "" && m.PasswordEnv != "" && getenv != nil {
		m.Password = getenv(m.PasswordEnv)
	}
	if m.Password == "" {
		return fmt.Errorf("%w: %s: no password (password_file or password_env)", ErrMailbox, m.Name)
	}
	if m.Folder == m.Processed || m.Folder == m.Failed {
		return fmt.Errorf("%w: %s: processed and failed must differ from folder", ErrMailbox, m.Name)
	}
	return nil
}

// ParseMailboxes reads a YAML list of mailboxes:
//
//	mailboxes:
//	  - name: google
//	    addr: imap.example.com:993
//	    username: fbl@example.com
//	    password_file: /run/secrets/fbl-google
//	    trusted: true
//
// Passwords named by password_env are read with getenv.
func ParseMailboxes(b []byte, getenv func(string) string) ([]Mailbox, error) {
	var doc struct {
		Mailboxes []Mailbox `yaml:"mailboxes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMailbox, err)
	}
	seen := map[string]bool{}
	for i := range doc.Mailboxes {
		if err := doc.Mailboxes[i].resolve(getenv); err != nil {
			return nil, err
		}
		if seen[doc.Mailboxes[i].Name] {
			return nil, fmt.Errorf("%w: name %q used twice", ErrMailbox, doc.Mailboxes[i].Name)
		}
		seen[doc.Mailboxes[i].Name] = true
	}
	return doc.Mailboxes, nil
}
