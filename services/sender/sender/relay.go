package sender

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"gopkg.in/yaml.v3"

	"github.com/mailwave/mailwave/pkg/smtpclient"
)

// A relay routes file (MW_RELAY_ROUTES) names smarthosts that deliver
// instead of the recipients' MX hosts, as when a tenant's mail goes
// through an email service provider with a second one as failover:
//
//	routes:
//	  esp:
//	    require_tls: true          # default true: never plaintext to a relay
//	    verify_tls: false          # also require a certificate that verifies
//	    ca_file: /etc/mailwave/relay-ca.pem  # roots for verify_tls (default: the system's)
//	    smarthosts:                # tried in order; the next one when one is
//	                               # unreachable or refuses before MAIL
//	      - address: smtp.esp-a.example:587
//	        tls: starttls          # starttls (default), implicit (port 465), none
//	        auth:
//	          username: acme
//	          password_env: ESP_A_PASSWORD    # or password_file: /run/secrets/esp-a
//	          mechanism: plain     # plain or login; default: plain when offered, else login
//	      - address: smtp.esp-b.example:465
//	        tls: implicit
//	        auth: {username: acme, password_file: /run/secrets/esp-b/password}
//	select:                        # first match wins; a route the planner names
//	  - {route: esp, tenants: [acme]}     # in routing.relay_route wins over these
//	  - {route: esp, recipient_domains: [example.org]}
//
// A route is shaped as the provider of its name (providers.<route> in the
// shaping policy, the long tail's limits when absent), and its events
// carry that name as their provider.

type relayFile struct {
	Routes map[string]*relayRouteYAML `yaml:"routes"`
	Select []relaySelectYAML          `yaml:"select"`
}

type relayRouteYAML struct {
	RequireTLS *bool           `yaml:"require_tls"`
	VerifyTLS  bool            `yaml:"verify_tls"`
	CAFile     string          `yaml:"ca_file"`
	Smarthosts []smarthostYAML `yaml:"smarthosts"`
}

type smarthostYAML struct {
	Address string    `yaml:"address"`
	TLS     string    `yaml:"tls"`
	Auth    *authYAML `yaml:"auth"`
}

type authYAML struct {
	Username     string `yaml:"username"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	Mechanism    string `yaml:"mechanism"`
}

type relaySelectYAML struct {
	Route            string   `yaml:"route"`
	Tenants          []string `yaml:"tenants"`
	RecipientDomains []string `yaml:"recipient_domains"`
}

// relays are the parsed routes and the rules that choose them.
type relays struct {
	routes map[string]*relayRoute
	rules  []relayRule
}

type relayRule struct {
	route   *relayRoute
	tenants map[string]bool
	domains map[string]bool
}

// relayRoute is one named route.
type relayRoute struct {
	name       string
	requireTLS bool
	verifyTLS  bool
	roots      *x509.CertPool
	hosts      []smarthost
}

// smarthost is one relay server. Its password lives only in the auth
// closure; the struct prints without it.
type smarthost struct {
	addr     string // host:port
	host     string // for SNI and certificate checks
	implicit bool
	noTLS    bool
	user     string
	auth     func(offered []string) (sasl.Client, error)
}

var routeName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// loadRelays reads a relay routes file; getenv resolves password_env.
// Errors name the route and field, never a password.
func loadRelays(path string, getenv func(string) string) (*relays, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f relayFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rs := &relays{routes: map[string]*relayRoute{}}
	for name, ry := range f.Routes {
		r, err := parseRoute(name, ry, getenv)
		if err != nil {
			return nil, fmt.Errorf("%s: routes.%s: %w", path, name, err)
		}
		rs.routes[name] = r
	}
	for i, sy := range f.Select {
		where := fmt.Sprintf("%s: select[%d]", path, i)
		r := rs.routes[sy.Route]
		if r == nil {
			return nil, fmt.Errorf("%s: route %q is not in routes", where, sy.Route)
		}
		if len(sy.Tenants) == 0 && len(sy.RecipientDomains) == 0 {
			return nil, fmt.Errorf("%s: name tenants, recipient_domains or both", where)
		}
		rule := relayRule{route: r}
		if len(sy.Tenants) > 0 {
			rule.tenants = map[string]bool{}
			for _, t := range sy.Tenants {
				rule.tenants[t] = true
			}
		}
		if len(sy.RecipientDomains) > 0 {
			rule.domains = map[string]bool{}
			for _, d := range sy.RecipientDomains {
				rule.domains[normDomain(d)] = true
			}
		}
		rs.rules = append(rs.rules, rule)
	}
	return rs, nil
}

func parseRoute(name string, ry *relayRouteYAML, getenv func(string) string) (*relayRoute, error) {
	if !routeName.MatchString(name) {
		return nil, errors.New("a route name is lower-case letters, digits and '-' (it names the route's shaping provider)")
	}
	if ry == nil || len(ry.Smarthosts) == 0 {
		return nil, errors.New("smarthosts: at least one is needed")
	}
	r := &relayRoute{name: name, requireTLS: ry.RequireTLS == nil || *ry.RequireTLS, verifyTLS: ry.VerifyTLS}
	if ry.CAFile != "" {
		pem, err := os.ReadFile(ry.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		r.roots = x509.NewCertPool()
		if !r.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: no PEM certificate in %s", ry.CAFile)
		}
	}
	for i, hy := range ry.Smarthosts {
		h, err := parseSmarthost(hy, r.requireTLS || r.verifyTLS, getenv)
		if err != nil {
			return nil, fmt.Errorf("smarthosts[%d]: %w", i, err)
		}
		r.hosts = append(r.hosts, h)
	}
	return r, nil
}

func parseSmarthost(hy smarthostYAML, requireTLS bool, getenv func(string) string) (smarthost, error) {
	host, port, err := net.SplitHostPort(hy.Address)
	if err != nil || host == "" {
		return smarthost{}, fmt.Errorf("address %q: want host:port", hy.Address)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return smarthost{}, fmt.Errorf("address %q: bad port", hy.Address)
	}
	h := smarthost{addr: hy.Address, host: host}
	switch hy.TLS {
	case "", "starttls":
	case "implicit":
		h.implicit = true
	case "none":
		if requireTLS {
			return smarthost{}, errors.New("tls: none needs the route's require_tls: false")
		}
		h.noTLS = true
	default:
		return smarthost{}, fmt.Errorf("tls %q: want starttls, implicit or none", hy.TLS)
	}
	if a := hy.Auth; a != nil {
		if h.noTLS {
			return smarthost{}, errors.New("auth: credentials are only sent over TLS, not with tls: none")
		}
		if a.Username == "" {
			return smarthost{}, errors.New("auth.username: missing")
		}
		var pw string
		switch {
		case a.PasswordEnv != "" && a.PasswordFile != "":
			return smarthost{}, errors.New("auth: password_env or password_file, not both")
		case a.PasswordEnv != "":
			if pw = getenv(a.PasswordEnv); pw == "" {
				return smarthost{}, fmt.Errorf("auth.password_env: %s is not set", a.PasswordEnv)
			}
		case a.PasswordFile != "":
			b, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				return smarthost{}, fmt.Errorf("auth.password_file: %w", err)
			}
			// A Secret file often ends with a newline nobody meant.
			if pw = strings.TrimRight(string(b), "\r\n"); pw == "" {
				return smarthost{}, fmt.Errorf("auth.password_file: %s is empty", a.PasswordFile)
			}
		default:
			return smarthost{}, errors.New("auth: password_env or password_file is needed")
		}
		var mechs []string
		switch strings.ToLower(a.Mechanism) {
		case "":
		case "plain":
			mechs = []string{sasl.Plain}
		case "login":
			mechs = []string{sasl.Login}
		default:
			return smarthost{}, fmt.Errorf("auth.mechanism %q: want plain or login", a.Mechanism)
		}
		h.user = a.Username
		h.auth = smtpclient.PasswordAuth(a.Username, pw, mechs...)
	}
	return h, nil
}

// pick chooses the relay route of a message: the one its routing names,
// else the first rule that matches its tenant and recipient domain. It
// returns nil for delivery by MX, and an error for a named route this
// sender does not know.
func (rs *relays) pick(named, tenant, domain string) (*relayRoute, error) {
	if named != "" {
		if rs == nil || rs.routes[named] == nil {
			return nil, fmt.Errorf("relay route %q is not in MW_RELAY_ROUTES", named)
		}
		return rs.routes[named], nil
	}
	if rs == nil {
		return nil, nil
	}
	domain = normDomain(domain)
	for _, r := range rs.rules {
		if r.tenants != nil && !r.tenants[tenant] {
			continue
		}
		if r.domains != nil && !r.domains[domain] {
			continue
		}
		return r.route, nil
	}
	return nil, nil
}

// dialer configures a session to the smarthost from a source.
func (r *relayRoute) dialer(h smarthost, base smtpclient.Dialer, requireTLS bool) *smtpclient.Dialer {
	d := base
	d.ImplicitTLS = h.implicit
	d.DisableTLS = h.noTLS
	d.RequireTLS = r.requireTLS || requireTLS
	d.RequireVerifiedTLS = r.verifyTLS
	if r.roots != nil {
		d.TLSConfig = &tls.Config{RootCAs: r.roots}
	}
	d.Auth = h.auth
	return &d
}

func normDomain(d string) string { return strings.TrimSuffix(strings.ToLower(d), ".") }
