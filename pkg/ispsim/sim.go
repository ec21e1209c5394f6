package ispsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrInvalidOption is wrapped by the error of an Option that cannot work.
var ErrInvalidOption = errors.New("ispsim: invalid option")

// Option configures Start.
type Option func(*options) error

type options struct {
	clock    Clock
	log      *slog.Logger
	dnsAddr  string
	smtpPort int
	imapAddr string
}

// WithClock sets the clock that time-based behaviour reads (default: the
// wall clock).
func WithClock(c Clock) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.clock = c
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// WithDNSAddr sets the DNS listen address (default "127.0.0.1:0").
func WithDNSAddr(addr string) Option {
	return func(o *options) error {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: dns address: %v", ErrInvalidOption, err)
		}
		o.dnsAddr = addr
		return nil
	}
}

// WithSMTPPort sets the port every provider listens on (default 0: one
// free port, the same on every provider address).
func WithSMTPPort(port int) Option {
	return func(o *options) error {
		if port < 0 || port > 65535 {
			return fmt.Errorf("%w: smtp port %d", ErrInvalidOption, port)
		}
		o.smtpPort = port
		return nil
	}
}

// WithIMAPAddr sets the feedback IMAP listen address (default
// "127.0.0.1:0").
func WithIMAPAddr(addr string) Option {
	return func(o *options) error {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: imap address: %v", ErrInvalidOption, err)
		}
		o.imapAddr = addr
		return nil
	}
}

// Sim is a running simulated world: DNS, providers, feedback mailboxes.
type Sim struct {
	profile  *Profile
	clock    Clock
	log      *slog.Logger
	zone     *Zone
	ledger   *Ledger
	registry *prometheus.Registry
	checker  *checker
	resolver *net.Resolver
	tlsConf  *tls.Config

	providers []*Provider
	byName    map[string]*Provider
	smtpPort  int
	imap      *imapBox
	reports   *reportSigner

	routesMu sync.RWMutex
	routes   map[string]string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup

	idSeq   atomic.Int64
	trackMu sync.Mutex
	closing bool

	closeOnce sync.Once
	closeErr  error
}

// Start builds the world of profile p and starts its servers. The context
// bounds start-up only; Close stops everything.
func Start(ctx context.Context, p *Profile, opts ...Option) (*Sim, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil profile", ErrInvalidProfile)
	}
	p = p.Clone()
	if err := p.normalize(); err != nil {
		return nil, err
	}
	o := options{clock: RealClock(), log: slog.New(slog.DiscardHandler), dnsAddr: "127.0.0.1:0", imapAddr: "127.0.0.1:0"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		profile:  p,
		clock:    o.clock,
		log:      o.log,
		registry: prometheus.NewRegistry(),
		byName:   map[string]*Provider{},
		routes:   map[string]string{},
		ctx:      runCtx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	for d, hp := range p.Routes {
		s.routes[strings.TrimSuffix(canonical(d), ".")] = hp
	}
	s.ledger = newLedger(s.clock, s.registry, p.Ledger.MaxEntries)
	s.reports = newReportSigner()
	var err error
	if s.zone, err = newZone(p.DNS, s.log); err != nil {
		cancel()
		return nil, err
	}
	var hosts []string
	for _, pc := range p.Providers {
		prov := newProvider(s, pc)
		s.providers = append(s.providers, prov)
		s.byName[prov.name] = prov
		hosts = append(hosts, pc.Hostname)
		for _, d := range pc.Domains {
			var mxs []MX
			for _, m := range d.MX {
				pref, host, _ := parseMX(m)
				mxs = append(mxs, MX{Pref: pref, Host: host})
				s.zone.SetA(host, prov.addr)
				hosts = append(hosts, strings.TrimSuffix(host, "."))
			}
			s.zone.SetMX(d.Name, mxs...)
		}
		s.zone.SetA(pc.Hostname, prov.addr)
	}
	if s.tlsConf, err = selfSignedTLS(hosts, time.Now()); err != nil {
		cancel()
		return nil, err
	}
	if err := s.zone.listen(o.dnsAddr); err != nil {
		cancel()
		return nil, err
	}
	dnsAddr := s.zone.Addr()
	s.resolver = &net.Resolver{
		PreferGo:     true,
		StrictErrors: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, dnsAddr)
		},
	}
	s.checker = &checker{hostname: p.Hostname, resolver: s.resolver}
	if err := s.listenSMTP(o.smtpPort); err != nil {
		s.zone.close()
		cancel()
		return nil, err
	}
	if s.imap, err = startIMAP(o.imapAddr, p.IMAP, s.log); err != nil {
		s.Close()
		return nil, err
	}
	s.log.Info("ispsim started", "dns", s.DNSAddr(), "smtp_port", s.smtpPort, "imap", s.IMAPAddr())
	return s, nil
}

// listenSMTP binds every provider address on one port: the first with
// the requested port (0 picks one), the rest on the same number. A taken
// port on a later address retries the whole set.
func (s *Sim) listenSMTP(port int) error {
	var lastErr error
	for range 20 {
		ls, err := s.bindAll(port)
		if err == nil {
			for i, p := range s.providers {
				s.serve(p, ls[i])
			}
			return nil
		}
		lastErr = err
		if port != 0 {
			break
		}
	}
	return fmt.Errorf("ispsim: smtp listen: %w", lastErr)
}

func (s *Sim) bindAll(port int) ([]net.Listener, error) {
	var ls []net.Listener
	for _, p := range s.providers {
		l, err := net.Listen("tcp", netip.AddrPortFrom(p.addr, uint16(port)).String())
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		if port == 0 {
			port = l.Addr().(*net.TCPAddr).Port
		}
		ls = append(ls, l)
	}
	s.smtpPort = port
	return ls, nil
}

func (s *Sim) serve(p *Provider, l net.Listener) {
	srv := smtp.NewServer(backend{p})
	srv.Domain = p.hostname
	srv.MaxMessageBytes = s.profileOf(p.name).MaxMessageBytes
	srv.MaxRecipients = 100
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableDSN = true
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = smtpLogger{s}
	if s.profileOf(p.name).StartTLS {
		srv.TLSConfig = s.tlsConf
	}
	p.srv = srv
	g := newGate(l, p)
	p.gate = g
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		g.run()
	}()
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(g); err != nil {
			s.log.Debug("smtp serve", "provider", p.name, "err", err)
		}
	}()
}

func (s *Sim) profileOf(name string) ProviderConfig {
	for _, pc := range s.profile.Providers {
		if pc.Name == name {
			return pc
		}
	}
	return ProviderConfig{}
}

// DNSAddr is the DNS server's "127.0.0.1:port" (UDP and TCP).
func (s *Sim) DNSAddr() string { return s.zone.Addr() }

// SMTPPort is the port every provider listens on.
func (s *Sim) SMTPPort() int { return s.smtpPort }

// IMAPAddr is the feedback mailbox server's "127.0.0.1:port".
func (s *Sim) IMAPAddr() string { return s.imap.addr }

// Ledger is the record of everything the simulator saw and did.
func (s *Sim) Ledger() *Ledger { return s.ledger }

// DNS is the zone, editable at run time.
func (s *Sim) DNS() *Zone { return s.zone }

// Clock is the clock the simulator reads.
func (s *Sim) Clock() Clock { return s.clock }

// Profile returns a copy of the profile the simulator runs, with defaults
// filled in.
func (s *Sim) Profile() *Profile { return s.profile.Clone() }

// Resolver returns a resolver that asks the simulator's DNS server only.
func (s *Sim) Resolver() *net.Resolver { return s.resolver }

// Registry is the Prometheus registry of the simulator's metrics.
func (s *Sim) Registry() *prometheus.Registry { return s.registry }

// Handler serves /ledger (JSON; ?data=1 adds message bodies) and /metrics
// (Prometheus).
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/ledger", s.ledger.Handler())
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	return mux
}

// Provider returns the provider called name, or nil.
func (s *Sim) Provider(name string) *Provider { return s.byName[name] }

// Providers returns every provider in profile order.
func (s *Sim) Providers() []*Provider { return append([]*Provider(nil), s.providers...) }

// ProviderFor returns the provider serving domain, or nil.
func (s *Sim) ProviderFor(domain string) *Provider {
	for _, p := range s.providers {
		if p.Serves(domain) {
			return p
		}
	}
	return nil
}

// SetRoute sends the simulator's own mail (DSNs, ARF by SMTP) for domain
// to hostport instead of the domain's MX; domain "*" matches every domain;
// an empty hostport removes the route.
func (s *Sim) SetRoute(domain, hostport string) error {
	d := strings.TrimSuffix(canonical(domain), ".")
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if hostport == "" {
		delete(s.routes, d)
		return nil
	}
	if _, _, err := splitHostPort(hostport); err != nil {
		return fmt.Errorf("%w: route %s: %v", ErrInvalidOption, domain, err)
	}
	s.routes[d] = hostport
	return nil
}

// Routes returns the route overrides.
func (s *Sim) Routes() map[string]string {
	s.routesMu.RLock()
	defer s.routesMu.RUnlock()
	out := make(map[string]string, len(s.routes))
	for k, v := range s.routes {
		out[k] = v
	}
	return out
}

// Describe lists where everything listens, one line each, for people.
func (s *Sim) Describe() []string {
	lines := []string{
		"dns  " + s.DNSAddr() + " (udp+tcp)",
		"imap " + s.IMAPAddr(),
	}
	for _, p := range s.providers {
		lines = append(lines, fmt.Sprintf("smtp %s:%d %s %s", p.addr, s.smtpPort, p.name, strings.Join(p.Domains(), ",")))
	}
	sort.Strings(lines[2:])
	return lines
}

// Close stops every server and waits for them. Reports not yet sent are
// dropped.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		s.trackMu.Lock()
		s.closing = true
		s.trackMu.Unlock()
		close(s.done)
		s.cancel()
		var errs []error
		for _, p := range s.providers {
			// Close the gate here too: go-smtp's Close only knows the
			// listeners its Serve has registered, which it may not have
			// done yet.
			if p.gate != nil {
				p.gate.Close()
			}
			if p.srv != nil {
				if err := p.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
					errs = append(errs, err)
				}
			}
		}
		if s.imap != nil {
			if err := s.imap.close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.zone.close()
		s.wg.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
