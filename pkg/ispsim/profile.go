package ispsim

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultProfile []byte

// DefaultProfileYAML returns the embedded default profile, which documents
// every knob in its comments.
func DefaultProfileYAML() []byte { return bytes.Clone(defaultProfile) }

// Profile is the whole simulated world: DNS, feedback mailboxes, outbound
// routes and providers. It is read from YAML by ParseProfile.
type Profile struct {
	Hostname     string            `yaml:"hostname"`
	DNS          DNSConfig         `yaml:"dns"`
	IMAP         IMAPConfig        `yaml:"imap"`
	Routes       map[string]string `yaml:"routes"`
	OutboundPort int               `yaml:"outbound_port"`
	Ledger       LedgerConfig      `yaml:"ledger"`
	Providers    []ProviderConfig  `yaml:"providers"`
}

// LedgerConfig bounds the ledger's memory.
type LedgerConfig struct {
	// MaxEntries caps each of the ledger's lists (messages, rejections,
	// reports); the oldest entries go first. Counters and metrics keep
	// counting. 0: unbounded.
	MaxEntries int `yaml:"max_entries"`
}

// DNSConfig configures the DNS server.
type DNSConfig struct {
	TTL        uint32            `yaml:"ttl"`
	Records    []string          `yaml:"records"`
	Rcodes     map[string]string `yaml:"rcodes"`
	Blocklists []BlocklistConfig `yaml:"blocklists"`
}

// BlocklistConfig is one DNSBL zone (RFC 5782).
type BlocklistConfig struct {
	Zone     string            `yaml:"zone"`
	Kind     string            `yaml:"kind"` // "ip" or "domain"
	Text     string            `yaml:"text"`
	Listings map[string]string `yaml:"listings"`
	Refused  string            `yaml:"refused"`
}

// IMAPConfig configures the feedback mailbox server.
type IMAPConfig struct {
	Users []IMAPUser `yaml:"users"`
}

// IMAPUser is one login of the feedback mailbox server.
type IMAPUser struct {
	Username  string   `yaml:"username"`
	Password  string   `yaml:"password"`
	Mailboxes []string `yaml:"mailboxes"`
}

// ProviderConfig describes one simulated mailbox provider.
type ProviderConfig struct {
	Name            string           `yaml:"name"`
	Address         string           `yaml:"address"`
	Hostname        string           `yaml:"hostname"`
	Domains         []DomainConfig   `yaml:"domains"`
	Generated       GeneratedDomains `yaml:"generated"`
	StartTLS        bool             `yaml:"starttls"`
	MaxMessageBytes int64            `yaml:"max_message_bytes"`
	Limits          Limits           `yaml:"limits"`
	Greylist        GreylistConfig   `yaml:"greylist"`
	Rules           []RecipientRule  `yaml:"rules"`
	Replies         Replies          `yaml:"replies"`
	Outage          Outage           `yaml:"outage"`
	Slow            SlowConfig       `yaml:"slow"`
	Blocked         []string         `yaml:"blocked"`
	DNSBL           []string         `yaml:"dnsbl"`
	AutoBlock       AutoBlockConfig  `yaml:"autoblock"`
	Complaints      ComplaintConfig  `yaml:"complaints"`
	DSN             DSNConfig        `yaml:"dsn"`
}

// DomainConfig is a recipient domain and its MX records.
type DomainConfig struct {
	Name string   `yaml:"name"`
	MX   []string `yaml:"mx"` // "preference host"
}

// GeneratedDomains adds Count domains named fmt.Sprintf(Format, i), each
// with one MX host fmt.Sprintf(MXFormat, domain).
type GeneratedDomains struct {
	Count    int    `yaml:"count"`
	Format   string `yaml:"format"`
	MXFormat string `yaml:"mx_format"`
}

// Limits are enforced per source IP.
type Limits struct {
	MaxConnections           int           `yaml:"max_connections"`
	MaxMessagesPerConnection int           `yaml:"max_messages_per_connection"`
	Rate                     int           `yaml:"rate"`
	Per                      time.Duration `yaml:"per"`
}

// GreylistConfig configures greylisting of (source IP, sender, recipient)
// triplets.
type GreylistConfig struct {
	Enabled    bool          `yaml:"enabled"`
	Recipients []string      `yaml:"recipients"`
	Delay      time.Duration `yaml:"delay"`
	Window     time.Duration `yaml:"window"`
	TTL        time.Duration `yaml:"ttl"`
}

// Action is what a recipient rule does.
type Action string

// The recipient rule actions; see the default profile for their meaning.
const (
	ActionAccept   Action = "accept"
	ActionUnknown  Action = "unknown"
	ActionFull     Action = "full"
	ActionDefer    Action = "defer"
	ActionReject   Action = "reject"
	ActionGreylist Action = "greylist"
	ActionDSN      Action = "dsn"
	ActionComplain Action = "complain"
)

// RecipientRule decides the fate of matching recipients.
type RecipientRule struct {
	Match     string        `yaml:"match"`
	Action    Action        `yaml:"action"`
	Reply     Reply         `yaml:"reply"`
	DSNStatus string        `yaml:"dsn_status"`
	Delay     time.Duration `yaml:"delay"`
}

// Reply is an SMTP reply: "CODE [ENHANCED] text", lines separated by "\n".
// Placeholders {ip}, {rcpt}, {from}, {zone}, {host} and {reason} are
// replaced when the reply is given.
type Reply string

// Replies are a provider's texts, in its own style, for each answer.
type Replies struct {
	Rate                  Reply `yaml:"rate"`
	Connections           Reply `yaml:"connections"`
	MessagesPerConnection Reply `yaml:"messages_per_connection"`
	Greylist              Reply `yaml:"greylist"`
	Unknown               Reply `yaml:"unknown"`
	Full                  Reply `yaml:"full"`
	Defer                 Reply `yaml:"defer"`
	Reject                Reply `yaml:"reject"`
	Blocked               Reply `yaml:"blocked"`
	Outage                Reply `yaml:"outage"`
	Relay                 Reply `yaml:"relay"`
}

// Outage is a provider failure mode.
type Outage string

// The outage modes.
const (
	OutageNone     Outage = ""
	OutageGreeting Outage = "greeting" // 421 at connect, then close
	OutageTempFail Outage = "tempfail" // outage reply to every MAIL
	OutageReset    Outage = "reset"    // connection closed at once
	OutageSilent   Outage = "silent"   // connection accepted, never greeted
)

// SlowConfig delays replies in real time.
type SlowConfig struct {
	Greeting time.Duration `yaml:"greeting"`
	Command  time.Duration `yaml:"command"`
}

// AutoBlockConfig blocks a source IP after a complaint or bounce spike.
type AutoBlockConfig struct {
	Complaints int           `yaml:"complaints"`
	Bounces    int           `yaml:"bounces"`
	Window     time.Duration `yaml:"window"`
	Duration   time.Duration `yaml:"duration"`
	ListIn     string        `yaml:"list_in"`
}

// Delivery is how a complaint report travels.
type Delivery string

// The complaint deliveries.
const (
	DeliveryIMAP Delivery = "imap"
	DeliverySMTP Delivery = "smtp"
)

// ComplaintConfig decides which accepted messages are complained about and
// how the ARF report is delivered.
type ComplaintConfig struct {
	Every        int           `yaml:"every"`
	Rate         float64       `yaml:"rate"`
	Seed         int64         `yaml:"seed"`
	Delay        time.Duration `yaml:"delay"`
	Delivery     Delivery      `yaml:"delivery"`
	IMAPUser     string        `yaml:"imap_user"`
	Mailbox      string        `yaml:"mailbox"`
	Address      string        `yaml:"address"`
	From         string        `yaml:"from"`
	FeedbackType string        `yaml:"feedback_type"`
	Redact       bool          `yaml:"redact"`
	Redaction    string        `yaml:"redaction"`
}

// DSNConfig holds the defaults of asynchronous DSNs.
type DSNConfig struct {
	Delay time.Duration `yaml:"delay"`
}

// ErrInvalidProfile is wrapped by every profile validation error.
var ErrInvalidProfile = errors.New("ispsim: invalid profile")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidProfile, fmt.Sprintf(format, args...))
}

// DefaultProfile parses the embedded default profile.
func DefaultProfile() (*Profile, error) { return ParseProfile(defaultProfile) }

// LoadProfile reads and parses a profile file.
func LoadProfile(file string) (*Profile, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ispsim: load profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

// ParseProfile decodes a YAML profile strictly (an unknown field is an
// error naming it), fills defaults and validates it. Errors wrap
// ErrInvalidProfile.
func ParseProfile(b []byte) (*Profile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	if err := p.normalize(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Clone returns a deep copy, so a test can change a profile without
// touching the one it came from.
func (p *Profile) Clone() *Profile {
	b, err := yaml.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("ispsim: clone profile: %v", err)) // plain data always marshals
	}
	var q Profile
	if err := yaml.Unmarshal(b, &q); err != nil {
		panic(fmt.Sprintf("ispsim: clone profile: %v", err))
	}
	return &q
}

func (p *Profile) normalize() error {
	if p.Hostname == "" {
		p.Hostname = "ispsim.test"
	}
	if p.DNS.TTL == 0 {
		p.DNS.TTL = 60
	}
	if p.Ledger.MaxEntries < 0 {
		return invalid("ledger.max_entries %d is negative", p.Ledger.MaxEntries)
	}
	if p.OutboundPort == 0 {
		p.OutboundPort = 25
	}
	for _, r := range p.DNS.Records {
		if _, err := dns.NewRR(r); err != nil {
			return invalid("dns.records %q: %v", r, err)
		}
	}
	for name, rc := range p.DNS.Rcodes {
		if _, err := parseRcode(rc); err != nil {
			return invalid("dns.rcodes %s: %v", name, err)
		}
	}
	zones := map[string]bool{}
	for i, bl := range p.DNS.Blocklists {
		if bl.Zone == "" {
			return invalid("dns.blocklists[%d]: zone is empty", i)
		}
		zones[canonical(bl.Zone)] = true
		switch bl.Kind {
		case "ip":
			for k, code := range bl.Listings {
				if _, err := netip.ParseAddr(k); err != nil {
					return invalid("blocklist %s: listing %q is not an IP", bl.Zone, k)
				}
				if err := checkCode(code); err != nil {
					return invalid("blocklist %s: listing %s: %v", bl.Zone, k, err)
				}
			}
		case "domain":
			for k, code := range bl.Listings {
				if _, ok := dns.IsDomainName(k); !ok {
					return invalid("blocklist %s: listing %q is not a domain", bl.Zone, k)
				}
				if err := checkCode(code); err != nil {
					return invalid("blocklist %s: listing %s: %v", bl.Zone, k, err)
				}
			}
		default:
			return invalid("blocklist %s: kind %q: use ip or domain", bl.Zone, bl.Kind)
		}
		if bl.Refused != "" {
			if err := checkCode(bl.Refused); err != nil {
				return invalid("blocklist %s: refused: %v", bl.Zone, err)
			}
		}
	}
	users := map[string]bool{}
	for _, u := range p.IMAP.Users {
		if u.Username == "" || u.Password == "" {
			return invalid("imap.users: username and password are required")
		}
		users[u.Username] = true
	}
	for d, hp := range p.Routes {
		if _, _, err := splitHostPort(hp); err != nil {
			return invalid("routes %s: %v", d, err)
		}
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	domains := map[string]string{}
	for i := range p.Providers {
		pc := &p.Providers[i]
		if pc.Name == "" {
			return invalid("providers[%d]: name is empty", i)
		}
		if names[pc.Name] {
			return invalid("provider %s: duplicate name", pc.Name)
		}
		names[pc.Name] = true
		if pc.Address == "" {
			pc.Address = fmt.Sprintf("127.0.0.%d", 10+i)
		}
		a, err := netip.ParseAddr(pc.Address)
		if err != nil || !a.Is4() || !a.IsLoopback() {
			return invalid("provider %s: address %q: use a 127.0.0.0/8 address", pc.Name, pc.Address)
		}
		if addrs[a.String()] {
			return invalid("provider %s: address %s used twice", pc.Name, a)
		}
		addrs[a.String()] = true
		if g := pc.Generated; g.Count > 10000 || g.Count < 0 {
			return invalid("provider %s: generated.count %d: use 0 to 10000", pc.Name, g.Count)
		} else if g.Count > 0 {
			// Exactly one verb each, without width: a "%999999999d" would
			// make gigabyte names.
			if strings.Count(g.Format, "%") != 1 || !strings.Contains(g.Format, "%d") ||
				strings.Count(g.MXFormat, "%") != 1 || !strings.Contains(g.MXFormat, "%s") {
				return invalid("provider %s: generated: format needs one %%d and mx_format one %%s", pc.Name)
			}
			for n := 1; n <= g.Count; n++ {
				d := fmt.Sprintf(g.Format, n)
				pc.Domains = append(pc.Domains, DomainConfig{Name: d, MX: []string{"10 " + fmt.Sprintf(g.MXFormat, d)}})
			}
			pc.Generated = GeneratedDomains{}
		}
		if len(pc.Domains) == 0 {
			return invalid("provider %s: no domains", pc.Name)
		}
		for _, d := range pc.Domains {
			key := canonical(d.Name)
			if other, dup := domains[key]; dup {
				return invalid("domain %s: served by %s and %s", d.Name, other, pc.Name)
			}
			domains[key] = pc.Name
			if len(d.MX) == 0 {
				return invalid("provider %s: domain %s has no mx", pc.Name, d.Name)
			}
			for _, mx := range d.MX {
				if _, _, err := parseMX(mx); err != nil {
					return invalid("provider %s: domain %s: %v", pc.Name, d.Name, err)
				}
			}
		}
		if pc.Hostname == "" {
			_, host, _ := parseMX(pc.Domains[0].MX[0])
			pc.Hostname = strings.TrimSuffix(host, ".")
		}
		if pc.MaxMessageBytes == 0 {
			pc.MaxMessageBytes = 35 << 20
		}
		if pc.Limits.Rate > 0 && pc.Limits.Per <= 0 {
			return invalid("provider %s: limits.rate needs limits.per", pc.Name)
		}
		if pc.Greylist.Delay == 0 {
			pc.Greylist.Delay = 5 * time.Minute
		}
		if pc.Greylist.Window == 0 {
			pc.Greylist.Window = 4 * time.Hour
		}
		if pc.Greylist.TTL == 0 {
			pc.Greylist.TTL = 36 * 24 * time.Hour
		}
		if pc.Greylist.Window < pc.Greylist.Delay {
			return invalid("provider %s: greylist.window is shorter than greylist.delay", pc.Name)
		}
		for _, pat := range pc.Greylist.Recipients {
			if _, err := path.Match(pat, ""); err != nil {
				return invalid("provider %s: greylist pattern %q: %v", pc.Name, pat, err)
			}
		}
		for j, r := range pc.Rules {
			if err := r.validate(); err != nil {
				return invalid("provider %s: rules[%d]: %v", pc.Name, j, err)
			}
		}
		pc.Replies = pc.Replies.withDefaults()
		if err := pc.Replies.validate(); err != nil {
			return invalid("provider %s: %v", pc.Name, err)
		}
		switch pc.Outage {
		case OutageNone, OutageGreeting, OutageTempFail, OutageReset, OutageSilent:
		default:
			return invalid("provider %s: outage %q", pc.Name, pc.Outage)
		}
		for _, b := range pc.Blocked {
			if _, err := netip.ParseAddr(b); err != nil {
				return invalid("provider %s: blocked %q is not an IP", pc.Name, b)
			}
		}
		for _, z := range pc.DNSBL {
			if !zones[canonical(z)] {
				return invalid("provider %s: dnsbl zone %s is not in dns.blocklists", pc.Name, z)
			}
		}
		ab := &pc.AutoBlock
		if ab.Window == 0 {
			ab.Window = time.Hour
		}
		if ab.Duration == 0 {
			ab.Duration = 24 * time.Hour
		}
		if ab.ListIn != "" && !zones[canonical(ab.ListIn)] {
			return invalid("provider %s: autoblock.list_in zone %s is not in dns.blocklists", pc.Name, ab.ListIn)
		}
		if err := pc.Complaints.normalize(users); err != nil {
			return invalid("provider %s: complaints: %v", pc.Name, err)
		}
		if pc.DSN.Delay == 0 {
			pc.DSN.Delay = time.Minute
		}
	}
	return nil
}

func (c *ComplaintConfig) normalize(users map[string]bool) error {
	if c.Every < 0 || c.Rate < 0 || c.Rate > 1 {
		return errors.New("every must be >= 0 and rate within [0, 1]")
	}
	if c.Delivery == "" {
		c.Delivery = DeliveryIMAP
	}
	if c.Mailbox == "" {
		c.Mailbox = "INBOX"
	}
	if c.FeedbackType == "" {
		c.FeedbackType = "abuse"
	}
	if c.Redaction == "" {
		c.Redaction = "redacted"
	}
	if c.From == "" {
		c.From = "feedback@ispsim.test"
	}
	active := c.Every > 0 || c.Rate > 0
	switch c.Delivery {
	case DeliveryIMAP:
		if c.IMAPUser == "" && active {
			return errors.New("delivery imap needs imap_user")
		}
		if c.IMAPUser != "" && !users[c.IMAPUser] {
			return fmt.Errorf("imap_user %s is not in imap.users", c.IMAPUser)
		}
	case DeliverySMTP:
		if c.Address == "" {
			return errors.New("delivery smtp needs address")
		}
	default:
		return fmt.Errorf("delivery %q: use imap or smtp", c.Delivery)
	}
	return nil
}

func (r RecipientRule) validate() error {
	if r.Match == "" {
		return errors.New("match is empty")
	}
	if _, err := path.Match(strings.ToLower(r.Match), ""); err != nil {
		return fmt.Errorf("match %q: %v", r.Match, err)
	}
	switch r.Action {
	case ActionAccept, ActionUnknown, ActionFull, ActionDefer, ActionReject, ActionGreylist, ActionComplain:
	case ActionDSN:
		if !validStatus(r.DSNStatus) {
			return fmt.Errorf("dsn_status %q: use class.subject.detail with class 4 or 5", r.DSNStatus)
		}
	default:
		return fmt.Errorf("action %q", r.Action)
	}
	if r.Reply != "" {
		if _, err := r.Reply.parse(); err != nil {
			return err
		}
	}
	return nil
}

func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 {
			return false
		}
	}
	return true
}

// withDefaults fills the replies a profile left empty with generic
// Postfix-style texts.
func (r Replies) withDefaults() Replies {
	def := func(v *Reply, s Reply) {
		if *v == "" {
			*v = s
		}
	}
	def(&r.Rate, "421 4.7.0 Too many messages from {ip}, try again later")
	def(&r.Connections, "421 4.7.0 Too many connections from {ip}")
	def(&r.MessagesPerConnection, "421 4.7.0 Too many messages in this session")
	def(&r.Greylist, "451 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, try again later")
	def(&r.Unknown, "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
	def(&r.Full, "552 5.2.2 <{rcpt}>: Mailbox full")
	def(&r.Defer, "450 4.2.0 <{rcpt}>: Try again later")
	def(&r.Reject, "554 5.7.1 <{rcpt}>: Recipient address rejected: Access denied")
	def(&r.Blocked, "554 5.7.1 Service unavailable; Client host [{ip}] blocked: {reason}")
	def(&r.Outage, "421 4.3.2 Service not available, closing transmission channel")
	def(&r.Relay, "554 5.7.1 <{rcpt}>: Relay access denied")
	return r
}

func (r Replies) validate() error {
	for name, v := range map[string]Reply{
		"rate": r.Rate, "connections": r.Connections, "messages_per_connection": r.MessagesPerConnection,
		"greylist": r.Greylist, "unknown": r.Unknown, "full": r.Full, "defer": r.Defer,
		"reject": r.Reject, "blocked": r.Blocked, "outage": r.Outage, "relay": r.Relay,
	} {
		pr, err := v.parse()
		if err != nil {
			return fmt.Errorf("replies.%s: %v", name, err)
		}
		if pr.Code < 400 {
			return fmt.Errorf("replies.%s: code %d is not an error", name, pr.Code)
		}
	}
	return nil
}

func parseRcode(s string) (int, error) {
	switch strings.ToUpper(s) {
	case "NXDOMAIN":
		return dns.RcodeNameError, nil
	case "SERVFAIL":
		return dns.RcodeServerFailure, nil
	case "REFUSED":
		return dns.RcodeRefused, nil
	}
	return 0, fmt.Errorf("rcode %q: use NXDOMAIN, SERVFAIL or REFUSED", s)
}

func checkCode(code string) error {
	a, err := netip.ParseAddr(code)
	if err != nil || !a.Is4() || !a.IsLoopback() {
		return fmt.Errorf("answer %q: use a 127.0.0.0/8 address", code)
	}
	return nil
}

func parseMX(s string) (uint16, string, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, "", fmt.Errorf("mx %q: use \"preference host\"", s)
	}
	pref, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return 0, "", fmt.Errorf("mx %q: preference: %v", s, err)
	}
	if _, ok := dns.IsDomainName(f[1]); !ok {
		return 0, "", fmt.Errorf("mx %q: bad host", s)
	}
	return uint16(pref), dns.Fqdn(strings.ToLower(f[1])), nil
}

func splitHostPort(hp string) (string, int, error) {
	ap, err := netip.ParseAddrPort(hp)
	if err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	i := strings.LastIndexByte(hp, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	port, err := strconv.Atoi(hp[i+1:])
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", hp)
	}
	return hp[:i], port, nil
}

// canonical lower-cases a domain name and makes it fully qualified.
func canonical(name string) string { return dns.Fqdn(strings.ToLower(strings.TrimSpace(name))) }
