package planner

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/shaping"
	"github.com/mailwave/mailwave/pkg/tenancy"
	"github.com/mailwave/mailwave/pkg/unsubscribe"
	"github.com/mailwave/mailwave/pkg/verp"
	"github.com/mailwave/mailwave/pkg/warmup"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Run runs the planner until ctx is cancelled, then drains.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	signer, err := verp.ParseKeys(cfg.VERPKeys)
	if err != nil {
		return err
	}
	unsub, err := unsubscribe.NewSigner(unsubscribeKeys(cfg)...)
	if err != nil {
		return err
	}
	model, err := cfg.tenancyModel()
	if err != nil {
		return fmt.Errorf("planner: MW_TENANCY: %w", err)
	}
	pol := shaping.Default()
	if cfg.ShapingFile != "" {
		if pol, err = shaping.Load(cfg.ShapingFile); err != nil {
			return fmt.Errorf("planner: MW_SHAPING_FILE: %w", err)
		}
	}
	provs, err := newProviders(cfg.DNSServer, log)
	if err != nil {
		return fmt.Errorf("planner: MW_DNS_SERVER: %w", err)
	}
	return service.Run(ctx, "planner", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		p, err := newPlanner(ctx, cfg, rt, log, signer, unsub, model, pol, provs)
		if err != nil {
			return nil, nil, err
		}
		// New attempts after a DSN reported a temporary failure (replan.go).
		if p.replan, err = newReplanner(ctx, p, rt, log); err != nil {
			return nil, nil, err
		}
		return p.routes(), runAll(p.loops()), nil
	})
}

// unsubscribeKeys are the configured keys, or one derived from each VERP
// key (so a deployment with VERP keys has working links), domain-separated
// so a token of one kind never verifies as the other.
func unsubscribeKeys(cfg Config) [][]byte {
	var out [][]byte
	if len(cfg.UnsubscribeKeys) > 0 {
		for _, k := range cfg.UnsubscribeKeys {
			out = append(out, []byte(k))
		}
		return out
	}
	for _, k := range cfg.VERPKeys {
		m := hmac.New(sha256.New, []byte(k))
		m.Write([]byte("mailwave one-click unsubscribe v1"))
		out = append(out, m.Sum(nil))
	}
	return out
}

// loop is one long-running part of the planner: a consumer, a watch.
type loop func(ctx context.Context) error

// runAll runs every loop until ctx ends; the first to fail stops the
// others, which drain.
func runAll(loops []loop) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, len(loops))
		for _, l := range loops {
			go func() {
				err := l(ctx)
				if err != nil {
					cancel()
				}
				errs <- err
			}()
		}
		var all []error
		for range loops {
			if err := <-errs; err != nil {
				all = append(all, err)
			}
		}
		return errors.Join(all...)
	}
}

type planner struct {
	cfg      Config
	rt       *service.Runtime
	log      *slog.Logger
	signer   *verp.Signer
	unsub    *unsubscribe.Signer
	tenancy  *tenancy.Config
	suppress *suppressions
	audits   jetstream.KeyValue
	provs    *providers
	ramp     *warmup.Ramp
	waves    *waves
	progress *progress
	planned  *plannedSet
	replan   *replanner

	recipients *prometheus.CounterVec
	held       *prometheus.CounterVec
	spilled    *prometheus.CounterVec
}

func newPlanner(ctx context.Context, cfg Config, rt *service.Runtime, log *slog.Logger, signer *verp.Signer, unsub *unsubscribe.Signer,
	model *tenancy.Config, pol *shaping.Policy, provs *providers) (*planner, error) {
	supKV, err := rt.JS.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		return nil, fmt.Errorf("planner: suppressions bucket: %w", err)
	}
	supStream, err := rt.JS.Stream(ctx, "KV_"+mailwavev1.BucketSuppressions)
	if err != nil {
		return nil, fmt.Errorf("planner: suppressions bucket: %w", err)
	}
	audits, err := rt.JS.KeyValue(ctx, mailwavev1.BucketAudits)
	if err != nil {
		return nil, fmt.Errorf("planner: audits bucket: %w", err)
	}
	policy, err := rt.JS.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		return nil, fmt.Errorf("planner: policy bucket: %w", err)
	}
	p := &planner{
		cfg: cfg, rt: rt, log: log, signer: signer, unsub: unsub, tenancy: model,
		suppress: newSuppressions(supKV, supStream, log),
		audits:   audits,
		provs:    provs,
		ramp:     warmup.NewRamp(rt.Redis, "mw:", &warmup.PolicySignals{KV: policy}),
		waves:    &waves{rdb: rt.Redis, interval: cfg.WaveInterval, share: cfg.WaveShare, shaping: pol},
		progress: &progress{rdb: rt.Redis, ttl: cfg.CampaignTTL, log: log},
		planned:  &plannedSet{rdb: rt.Redis, js: rt.JS},
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailwave_planner_recipients_total",
			Help: "Recipients planned, by lane and outcome (accepted, suppressed, dropped).",
		}, []string{"tenant", "lane", "outcome"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailwave_planner_held_total",
			Help: "Send requests put back to wait, by why (audit: a failing authentication audit; warmup: volume beyond today's caps).",
		}, []string{"why"}),
		spilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailwave_planner_spilled_total",
			Help: "Recipients moved from a new IP at its daily cap to a warm IP of its pool, by provider.",
		}, []string{"provider"}),
	}
	rt.Metrics.MustRegister(p.recipients, p.held, p.spilled, p.suppress.size)
	return p, nil
}

// loops are the planner's long-running parts. Each consumer is one entry:
// another consumer is one more line here.
func (p *planner) loops() []loop {
	send := func(name string, workers int) loop {
		c := &events.Consumer[*mailwavev1.SendRequest]{
			JS: p.rt.JS, Stream: mailwavev1.StreamSend, Name: name,
			New:     func() *mailwavev1.SendRequest { return &mailwavev1.SendRequest{} },
			Handle:  p.handle,
			Workers: workers,
			Logger:  p.log,
			OnDead:  p.rt.OnDead(mailwavev1.StreamSend),
		}
		return c.Run
	}
	evc := &events.Consumer[*mailwavev1.DeliveryEvent]{
		JS: p.rt.JS, Stream: mailwavev1.StreamEvents, Name: mailwavev1.ConsumerPlannerEvents,
		New:     func() *mailwavev1.DeliveryEvent { return &mailwavev1.DeliveryEvent{} },
		Handle:  p.handleEvent,
		Workers: p.cfg.EventWorkers,
		Logger:  p.log,
		OnDead:  p.rt.OnDead(mailwavev1.StreamEvents),
	}
	return []loop{
		p.suppress.watch,
		send(mailwavev1.ConsumerPlannerTransactional, p.cfg.TxWorkers),
		send(mailwavev1.ConsumerPlanner, p.cfg.Workers),
		evc.Run,
	}
}

// routes are the planner's HTTP endpoints beside health and metrics.
func (p *planner) routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /u/{token}":                    http.HandlerFunc(p.serveUnsubscribe),
		"GET /u/{token}":                     http.HandlerFunc(p.serveUnsubscribePage),
		"GET /campaigns/{tenant}/{id}":       http.HandlerFunc(p.serveCampaign),
		"GET /warmup/{kind}/{id}/{provider}": http.HandlerFunc(p.serveWarmup),
	}
}

func (p *planner) now() time.Time { return p.cfg.now() }

// MessageID is the dispatch id of the message for recipient in the request
// with idempotency key: deterministic, so a request planned twice (after
// a crash) yields the same ids and JetStream stores each dispatch once.
func MessageID(idempotencyKey, recipient string) string {
	h := sha256.New()
	h.Write([]byte(idempotencyKey))
	h.Write([]byte{0})
	h.Write([]byte(strings.ToLower(strings.TrimSpace(recipient))))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Errors of a request that waits; the consumer redelivers it later.
var (
	errHeld    = errors.New("planner: held by a failing authentication audit")
	errWaiting = errors.New("planner: waiting for the next day's warm-up caps")
)

func (p *planner) handle(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
	if err := client.Validate(m.Payload); err != nil {
		return fmt.Errorf("%w: %v", events.ErrMalformed, err)
	}
	return p.plan(ctx, m, p.now())
}
