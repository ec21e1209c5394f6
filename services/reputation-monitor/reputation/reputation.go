// Package reputation is the reputation-monitor service: it counts every
// delivery, deferral, block, bounce, complaint and unsubscribe in sliding
// windows kept in Redis, per source IP, sending domain, tenant and campaign
// at each provider and per tenant, brand and campaign; turns the rates into
// policy changes (pause, throttle, a stepped rate factor, a gradual resume)
// in the policy KV bucket that every sender watches; checks every sending
// IP and domain against DNS blocklists (RFC 5782) and audits each sending
// domain's SPF, DKIM, DMARC, reverse DNS and MX (package authaudit). It
// serves the state on /v1/status and /metrics.
package reputation

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/batch"
	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/service"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Config is the reputation-monitor configuration. Zero durations take
// their defaults.
type Config struct {
	service.Common
	// PolicyFile replaces the shipped policy (rules, resume ladder,
	// blocklists).
	PolicyFile string `env:"MW_POLICY_RULES" flag:"policy-rules" usage:"YAML file of reputation rules and blocklists (default: the shipped policy)"`
	// DNSServer is the resolver of blocklist and audit lookups.
	DNSServer string `env:"MW_DNS_SERVER" flag:"dns-server" usage:"host:port of the resolver for blocklist and audit lookups (default: /etc/resolv.conf)"`
	// SourceIPs, SendingDomains and LinkDomains are checked against the
	// blocklists besides those seen in events.
	SourceIPs      []string `env:"MW_SOURCE_IPS" usage:"sending IPs to check against blocklists, comma separated"`
	SendingDomains []string `env:"MW_SENDING_DOMAINS" usage:"sending domains to audit and check against blocklists, comma separated"`
	LinkDomains    []string `env:"MW_LINK_DOMAINS" usage:"link (tracking) domains to check against domain blocklists, comma separated"`
	DKIMSelector   string   `env:"MW_DKIM_SELECTOR" usage:"DKIM selector the audit checks"`
	// HeloNames are the EHLO names of SourceIPs, same order: the audit
	// checks each IP's reverse DNS against its own.
	HeloNames []string `env:"MW_HELO_NAMES" usage:"the EHLO name of each of MW_SOURCE_IPS, same order"`
	// BounceDomain is the return-path domain the audit checks SPF and MX
	// of; empty means bounces.<sending domain>, as the planner derives it.
	BounceDomain string `env:"MW_BOUNCE_DOMAIN" usage:"return-path domain of the audited sending domains (default: bounces.<sending domain>)"`
	// EvalInterval is the least time between two evaluations of the
	// scopes that counted new events (the first event after a quiet spell
	// is evaluated at once) and the beat of the resume ladder;
	// SweepInterval is how often every known scope is evaluated.
	EvalInterval  time.Duration `env:"MW_EVAL_INTERVAL" default:"250ms" usage:"least time between evaluations of scopes with new events, and the beat of the resume ladder"`
	SweepInterval time.Duration `env:"MW_SWEEP_INTERVAL" default:"30s" usage:"how often every scope is evaluated and lapsed policies resume"`
	DNSBLInterval time.Duration `env:"MW_DNSBL_INTERVAL" default:"10m" usage:"how often sending IPs and domains are checked against blocklists"`
	AuditInterval time.Duration `env:"MW_AUDIT_INTERVAL" default:"6h" usage:"how often every sending domain is audited"`
	ListingPause  time.Duration `env:"MW_LISTING_PAUSE" default:"24h" usage:"how long a blocklist listing pauses an IP or domain before it is checked again"`
	Workers       int           `env:"MW_MONITOR_WORKERS" default:"64" usage:"events counted at once (they go to Redis together)"`
}

func (c *Config) withDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.EvalInterval, 250*time.Millisecond)
	def(&c.SweepInterval, 30*time.Second)
	def(&c.DNSBLInterval, 10*time.Minute)
	def(&c.AuditInterval, 6*time.Hour)
	def(&c.ListingPause, 24*time.Hour)
	if c.Workers == 0 {
		c.Workers = 64
	}
}

// Validate checks the configuration; errors name the variable.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	for env, d := range map[string]time.Duration{"MW_EVAL_INTERVAL": c.EvalInterval, "MW_SWEEP_INTERVAL": c.SweepInterval,
		"MW_DNSBL_INTERVAL": c.DNSBLInterval, "MW_AUDIT_INTERVAL": c.AuditInterval, "MW_LISTING_PAUSE": c.ListingPause} {
		if d < 0 {
			return config.Errorf(env, "must not be negative")
		}
	}
	if c.Workers < 0 {
		return config.Errorf("MW_MONITOR_WORKERS", "must not be negative")
	}
	for _, ip := range c.SourceIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return config.Errorf("MW_SOURCE_IPS", "%v", err)
		}
	}
	if len(c.HeloNames) > 0 && len(c.HeloNames) != len(c.SourceIPs) {
		return config.Errorf("MW_HELO_NAMES", "%d names for %d source IPs: give one per IP, same order", len(c.HeloNames), len(c.SourceIPs))
	}
	if _, err := c.policy(); err != nil {
		return config.Errorf("MW_POLICY_RULES", "%v", err)
	}
	return nil
}

func (c *Config) policy() (*Policy, error) {
	b := DefaultPolicy()
	if c.PolicyFile != "" {
		var err error
		if b, err = os.ReadFile(c.PolicyFile); err != nil {
			return nil, err
		}
	}
	return LoadPolicy(b)
}

// Run runs the service until ctx is cancelled.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	cfg.withDefaults()
	pol, err := cfg.policy()
	if err != nil {
		return config.Errorf("MW_POLICY_RULES", "%v", err)
	}
	if cfg.DNSServer == "" {
		if cfg.DNSServer, err = SystemResolver(); err != nil {
			return config.Errorf("MW_DNS_SERVER", "%v", err)
		}
	}
	return service.Run(ctx, "reputation-monitor", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		m, err := newMonitor(ctx, cfg, pol, rt, log)
		if err != nil {
			return nil, nil, err
		}
		return m.routes(), m.run, nil
	})
}

// monitor is one replica of the service.
type monitor struct {
	cfg    Config
	policy *Policy
	rt     *service.Runtime
	log    *slog.Logger
	store  *Store
	// records counts the events of concurrent handlers in one call.
	records *batch.Batcher[Entry, bool]
	decider *Decider
	dnsbl   *DNSBL
	audits  jetstream.KeyValue

	dirtyMu sync.Mutex
	dirty   map[Scope]struct{}
	// wake tells the evaluation loop that a scope became dirty.
	wake chan struct{}

	counted  *prometheus.CounterVec
	rates    *prometheus.GaugeVec
	listed   *prometheus.GaugeVec
	blErrors *prometheus.CounterVec
	auditOK  *prometheus.GaugeVec
}

func newMonitor(ctx context.Context, cfg Config, pol *Policy, rt *service.Runtime, log *slog.Logger) (*monitor, error) {
	kv, err := rt.JS.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		return nil, fmt.Errorf("reputation: policy bucket: %w", err)
	}
	audits, err := rt.JS.KeyValue(ctx, mailwavev1.BucketAudits)
	if err != nil {
		return nil, fmt.Errorf("reputation: audits bucket: %w", err)
	}
	store := &Store{Redis: rt.Redis}
	m := &monitor{
		cfg: cfg, policy: pol, rt: rt, log: log, audits: audits,
		store: store,
		// Events trickle in as mail is delivered: a few milliseconds of
		// linger let a busy stream go to Redis in batches all the same.
		records: batch.New(cfg.Workers, store.RecordBatch).WithLinger(5 * time.Millisecond),
		decider: NewDecider(kv, rt.Pub, pol, log, rt.Metrics),
		dnsbl:   &DNSBL{Server: cfg.DNSServer},
		dirty:   map[Scope]struct{}{},
		wake:    make(chan struct{}, 1),
		counted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_reputation_events_total",
			Help: "Events counted, by counter."}, []string{"counter"}),
		rates: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailwave_reputation_rate",
			Help: "Rates of every scope and window at the last evaluation."}, []string{"scope_kind", "scope", "provider", "window", "rate"}),
		listed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailwave_reputation_dnsbl_listed",
			Help: "1 when the target is listed in the zone."}, []string{"zone", "target"}),
		blErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_reputation_dnsbl_errors_total",
			Help: "Blocklist lookups that said nothing: refused (127.255.255.x) or failed."}, []string{"zone", "kind"}),
		auditOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailwave_reputation_audit_ok",
			Help: "1 when the sending domain's latest authentication audit passed."}, []string{"domain"}),
	}
	rt.Metrics.MustRegister(m.counted, m.rates, m.listed, m.blErrors, m.auditOK)
	if err := m.decider.Watch(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *monitor) run(ctx context.Context) error {
	var wg sync.WaitGroup
	loops := []func(context.Context){m.evalLoop, m.sweepLoop, m.dnsblLoop, m.auditLoop}
	for _, l := range loops {
		wg.Go(func() { l(ctx) })
	}
	// The batches outlive ctx until the consumer has drained, since its
	// in-flight handlers wait on them.
	batchCtx, stopBatches := context.WithCancel(context.WithoutCancel(ctx))
	go m.records.Run(batchCtx, 5*time.Second)
	c := &events.Consumer[*mailwavev1.DeliveryEvent]{
		JS: m.rt.JS, Stream: mailwavev1.StreamEvents, Name: mailwavev1.ConsumerReputationMonitor,
		New: func() *mailwavev1.DeliveryEvent { return &mailwavev1.DeliveryEvent{} }, Handle: m.handle,
		Workers: m.cfg.Workers, Logger: m.log, OnDead: m.rt.OnDead(mailwavev1.StreamEvents),
	}
	err := c.Run(ctx)
	stopBatches()
	wg.Wait()
	return err
}

// handle counts one event at its own time (occurred_at, so a late DSN or
// complaint counts when it happened if that is inside the windows).
func (m *monitor) handle(ctx context.Context, msg *events.Msg[*mailwavev1.DeliveryEvent]) error {
	ev := msg.Payload
	counts := CountsOf(ev)
	if counts == nil {
		return nil
	}
	at := time.Now()
	if t := ev.GetOccurredAt(); t != nil && t.AsTime().Before(at) && t.AsTime().After(at.Add(-7*24*time.Hour)) {
		at = t.AsTime()
	}
	id := ev.GetEventId()
	if id == "" {
		id = fmt.Sprintf("seq-%d", msg.Sequence)
	}
	scopes := ScopesOf(ev)
	// Concurrent events go to Redis together, in one script call.
	added, err := m.records.Do(ctx, Entry{EventID: id, Scopes: scopes, Counts: counts, At: at})
	if err != nil {
		return err
	}
	if !added {
		return nil
	}
	for n, v := range counts {
		m.counted.WithLabelValues(n).Add(float64(v))
	}
	m.markDirty(scopes...)
	return nil
}

func every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// evalLoop evaluates the scopes that counted new events. A pass starts
// as soon as a scope becomes dirty, so an isolated event that crosses a
// threshold is acted on in milliseconds, but passes start at most once per
// EvalInterval, so a burst of events is evaluated in batches. Lapsed
// policies climb the resume ladder on the same beat, so a short step_for
// is honoured closely.
func (m *monitor) evalLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.EvalInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.wake:
		}
		start := time.Now()
		m.evalPass(ctx, start)
		if rest := m.cfg.EvalInterval - time.Since(start); rest > 0 {
			t := time.NewTimer(rest)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func (m *monitor) evalPass(ctx context.Context, now time.Time) {
	m.dirtyMu.Lock()
	dirty := m.dirty
	m.dirty = map[Scope]struct{}{}
	m.dirtyMu.Unlock()
	for sc := range dirty {
		m.evaluate(ctx, sc, now)
	}
	if _, err := m.decider.Ladder(ctx, now); err != nil {
		m.log.Warn("resume ladder failed", "err", err)
	}
}

func (m *monitor) sweepLoop(ctx context.Context) {
	every(ctx, m.cfg.SweepInterval, func(ctx context.Context) {
		now := time.Now()
		scopes, err := m.store.Scopes(ctx, now.Add(-7*24*time.Hour), 10000)
		if err != nil {
			m.log.Warn("list scopes failed", "err", err)
			return
		}
		for _, sc := range scopes {
			m.evaluate(ctx, sc, now)
		}
	})
}

func (m *monitor) evaluate(ctx context.Context, sc Scope, now time.Time) {
	w, err := m.store.Read(ctx, sc, now)
	if err != nil {
		m.log.Warn("read windows failed", "scope", sc.String(), "err", err)
		m.markDirty(sc)
		return
	}
	for name, c := range w {
		for rate, v := range Rates(c) {
			m.rates.WithLabelValues(sc.KindWord(), sc.Value, sc.Provider, name, rate).Set(v)
		}
	}
	pc, err := m.decider.Decide(ctx, sc, w, now)
	if err != nil {
		m.log.Warn("decide failed", "scope", sc.String(), "err", err)
		m.markDirty(sc)
		return
	}
	if pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE {
		// Traffic stopped: a person should know at once, not when they
		// next look at the policies.
		m.alert(ctx, "paused-"+pc.GetId(), "paused", "warning", sc.String(), pc.GetReason(), pc.GetEvidence(), now)
	}
}

// markDirty queues scopes for the next evaluation pass and wakes the loop.
func (m *monitor) markDirty(scopes ...Scope) {
	m.dirtyMu.Lock()
	for _, sc := range scopes {
		m.dirty[sc] = struct{}{}
	}
	m.dirtyMu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// alert publishes an alert on EVENTS; id de-duplicates it across replicas.
func (m *monitor) alert(ctx context.Context, id, name, severity, target, reason string, evidence map[string]string, now time.Time) {
	a := &mailwavev1.Alert{Id: id, Name: name, Severity: severity, Target: target, Reason: reason, Evidence: evidence,
		OccurredAt: timestamppb.New(now)}
	if _, err := m.rt.Pub.Publish(ctx, mailwavev1.SubjectAlert(name), a, events.WithMsgID(id)); err != nil {
		m.log.Warn("alert not published", "alert", name, "target", target, "err", err)
		return
	}
	m.log.Warn("alert", "alert", name, "target", target, "reason", reason)
}
