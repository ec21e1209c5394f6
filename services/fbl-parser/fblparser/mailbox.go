package fblparser

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrMailbox wraps every error in a feedback mailbox definition.
var ErrMailbox = errors.New("fblparser: invalid mailbox")

// TLS modes of a feedback mailbox connection.
const (
	TLSImplicit = "implicit" // TLS from the first byte (port 993, RFC 8314 §3.2)
	TLSStartTLS = "starttls" // STARTTLS upgrade (RFC 9051 §6.2.1), port 143
	TLSNone     = "none"     // cleartext, for loopback test servers only
)

// Mailbox is one feedback mailbox the intake reads: a provider's feedback
// loop delivers its ARF reports there. The YAML file of MW_FBL_MAILBOXES
// holds a list of them (see ParseMailboxes).
type Mailbox struct {
	// Name identifies the mailbox in logs, metrics, the intake state and
	// the InboundMessage source ("imap:<name>").
	Name string `yaml:"name"`
	// Host and Port locate the IMAP server; Port defaults to 993 with
	// implicit TLS and 143 otherwise.
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// TLS is implicit (default), starttls or none.
	TLS string `yaml:"tls"`
	// InsecureSkipVerify accepts any server certificate (test servers).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Username logs in; the password is Password (set in code only), or
	// read from PasswordFile (a mounted secret), or from the environment
	// variable PasswordEnv.
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
	// Reporters, when not empty, narrows Trusted to reports whose author
	// (the From of the report message) is in one of these domains or
	// below: mail of anyone else that lands in the mailbox is kept in
	// quarantine.
	Reporters []string `yaml:"reporters"`
	// RequireDKIM demands, on top of Reporters, a DKIM signature
	// (RFC 6376) of a Reporters domain that verifies.
	RequireDKIM bool `yaml:"require_dkim"`
	// PollOnly never uses IDLE (RFC 2177), even when the server offers
	// it, and looks at the folder every poll interval instead: for
	// servers whose IDLE is unreliable.
	PollOnly bool `yaml:"poll_only"`
}

// Addr is the IMAP server's host:port.
func (m Mailbox) Addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// LogValue shows the mailbox without its password.
func (m Mailbox) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", m.Name), slog.String("addr", m.Addr()), slog.String("tls", m.TLS),
		slog.String("username", m.Username), slog.String("folder", m.Folder), slog.Bool("trusted", m.Trusted),
		slog.String("reporters", strings.Join(m.Reporters, ",")), slog.Bool("require_dkim", m.RequireDKIM),
		slog.Bool("poll_only", m.PollOnly))
}

// String shows the mailbox without its password.
func (m Mailbox) String() string {
	return fmt.Sprintf("%s (%s@%s, %s, folder %s, trusted %v)", m.Name, m.Username, m.Addr(), m.TLS, m.Folder, m.Trusted)
}

func (m *Mailbox) setDefaults() {
	if m.TLS == "" {
		m.TLS = TLSImplicit
	}
	if m.Port == 0 {
		m.Port = 143
		if m.TLS == TLSImplicit {
			m.Port = 993
		}
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

// Resolve fills the defaults and the password and checks the definition.
// getenv reads PasswordEnv; nil uses os.Getenv. Errors wrap ErrMailbox.
func (m *Mailbox) Resolve(getenv func(string) string) error {
	m.setDefaults()
	if m.Name == "" || strings.ContainsAny(m.Name, ".*>: \t") {
		return fmt.Errorf("%w: name %q must be a non-empty token (no dots, colons or spaces)", ErrMailbox, m.Name)
	}
	if m.Host == "" || strings.ContainsAny(m.Host, " /") {
		return fmt.Errorf("%w: %s: host %q is not a host name or address", ErrMailbox, m.Name, m.Host)
	}
	if m.Port < 1 || m.Port > 65535 {
		return fmt.Errorf("%w: %s: port %d is out of range", ErrMailbox, m.Name, m.Port)
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
	if m.Password == "" && m.PasswordEnv != "" {
		if getenv == nil {
			getenv = os.Getenv
		}
		m.Password = getenv(m.PasswordEnv)
	}
	if m.Password == "" {
		return fmt.Errorf("%w: %s: no password (password_file or password_env, and it must not be empty)", ErrMailbox, m.Name)
	}
	if m.Folder == m.Processed || m.Folder == m.Failed {
		return fmt.Errorf("%w: %s: processed and failed must differ from folder", ErrMailbox, m.Name)
	}
	for i, d := range m.Reporters {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if !isDomain(d) {
			return fmt.Errorf("%w: %s: reporter %q is not a domain", ErrMailbox, m.Name, m.Reporters[i])
		}
		m.Reporters[i] = d
	}
	if m.RequireDKIM && len(m.Reporters) == 0 {
		return fmt.Errorf("%w: %s: require_dkim needs reporters (the domains whose signature counts)", ErrMailbox, m.Name)
	}
	return nil
}

// isDomain reports whether d looks like a DNS domain with at least two
// labels.
func isDomain(d string) bool {
	return d != "" && strings.Contains(d, ".") && !strings.ContainsAny(d, "@ /:,") &&
		!strings.HasPrefix(d, ".") && !strings.Contains(d, "..")
}

// ParseMailboxes reads a YAML document holding a list of mailboxes and
// resolves each one (see Mailbox.Resolve):
//
//	mailboxes:
//	  - name: google
//	    host: imap.example.com
//	    port: 993
//	    tls: implicit
//	    username: fbl@example.com
//	    password_file: /run/secrets/fbl-google
//	    folder: INBOX
//	    processed: Processed
//	    failed: Failed
//	    trusted: true
//	    reporters: [google.com]
//
// Unknown keys are errors, so a typo never passes silently. Errors wrap
// ErrMailbox.
func ParseMailboxes(b []byte, getenv func(string) string) ([]Mailbox, error) {
	var doc struct {
		Mailboxes []Mailbox `yaml:"mailboxes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrMailbox, err)
	}
	return resolveMailboxes(doc.Mailboxes, getenv)
}

func resolveMailboxes(boxes []Mailbox, getenv func(string) string) ([]Mailbox, error) {
	seen := map[string]bool{}
	for i := range boxes {
		if err := boxes[i].Resolve(getenv); err != nil {
			return nil, err
		}
		if seen[boxes[i].Name] {
			return nil, fmt.Errorf("%w: name %q used twice", ErrMailbox, boxes[i].Name)
		}
		seen[boxes[i].Name] = true
	}
	return boxes, nil
}
