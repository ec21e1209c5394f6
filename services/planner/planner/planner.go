package planner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Run runs the planner until ctx is cancelled, then drains.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	keys := make([][]byte, len(cfg.VERPKeys))
	for i, k := range cfg.VERPKeys {
		keys[i] = []byte(k)
	}
	signer, err := verp.NewSigner(keys...)
	if err != nil {
		return err
	}
	return service.Run(ctx, "planner", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		p, err := newPlanner(ctx, cfg, rt, signer)
		if err != nil {
			return nil, nil, err
		}
		c := &events.Consumer[*mailwavev1.SendRequest]{
			JS: rt.JS, Stream: mailwavev1.StreamSend, Name: mailwavev1.ConsumerPlanner,
			New:     func() *mailwavev1.SendRequest { return &mailwavev1.SendRequest{} },
			Handle:  p.handle,
			Workers: cfg.Workers,
			Logger:  log,
			OnDead:  rt.OnDead(mailwavev1.StreamSend),
		}
		// New attempts after a DSN reported a temporary failure (replan.go).
		rp, err := newReplanner(ctx, p, rt, log)
		if err != nil {
			return nil, nil, err
		}
		return nil, runBoth(c.Run, rp.consumer(rt, cfg.Workers).Run), nil
	})
}

// runBoth runs two consumers until both have drained; the first failure
// stops the other.
func runBoth(a, b func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, 2)
		for _, run := range []func(context.Context) error{a, b} {
			go func() {
				err := run(ctx)
				if err != nil && ctx.Err() == nil {
					cancel()
				} else if ctx.Err() != nil {
					err = nil // cut short by the shutdown
				}
				errs <- err
			}()
		}
		return errors.Join(<-errs, <-errs)
	}
}

type planner struct {
	cfg      Config
	suppress *suppressions
	rt       *service.Runtime
	signer   *verp.Signer
	now      func() time.Time
	planned  *prometheus.CounterVec
}

func newPlanner(ctx context.Context, cfg Config, rt *service.Runtime, signer *verp.Signer) (*planner, error) {
	kv, err := rt.JS.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		return nil, fmt.Errorf("planner: suppressions bucket: %w", err)
	}
	planned := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_planner_recipients_total",
		Help: "Recipients planned, by outcome (accepted, suppressed, dropped).",
	}, []string{"tenant", "outcome"})
	rt.Metrics.MustRegister(planned)
	return &planner{cfg: cfg, suppress: &suppressions{kv: kv}, rt: rt, signer: signer, now: time.Now, planned: planned}, nil
}

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

// batch bounds the publishes awaited at once.
const batch = 512

func (p *planner) handle(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest]) error {
	req := m.Payload
	if err := client.Validate(req); err != nil {
		return fmt.Errorf("%w: %v", events.ErrMalformed, err)
	}
	now := p.now()
	cont, err := prepare(req)
	if err != nil {
		// Every recipient ends dropped with the reason: nothing is silent.
		return p.forEachRecipient(ctx, m, func(r *mailwavev1.Recipient, pend *pending) error {
			return p.drop(ctx, req, r, err.Error(), now, pend)
		})
	}
	return p.forEachRecipient(ctx, m, func(r *mailwavev1.Recipient, pend *pending) error {
		return p.plan(ctx, req, m.Sequence, cont, r, now, pend)
	})
}

// pending collects publish acknowledgements awaited together.
type pending struct{ futures []jetstream.PubAckFuture }

func (pd *pending) wait(ctx context.Context) error {
	defer func() { pd.futures = pd.futures[:0] }()
	for _, f := range pd.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("planner: publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (p *planner) forEachRecipient(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest], fn func(*mailwavev1.Recipient, *pending) error) error {
	pend := &pending{}
	n := 0
	each := func(r *mailwavev1.Recipient) error {
		if err := fn(r, pend); err != nil {
			return err
		}
		n++
		if len(pend.futures) >= batch {
			if err := pend.wait(ctx); err != nil {
				return err
			}
			_ = m.InProgress()
		}
		return nil
	}
	req := m.Payload
	if ref := req.GetAudience(); ref != nil {
		if err := readAudience(ctx, p.rt.JS, ref, each); err != nil {
			if errors.Is(err, errAudience) {
				return fmt.Errorf("%w: %v", events.ErrMalformed, err)
			}
			return err
		}
	} else {
		for _, r := range req.GetRecipients() {
			if err := each(r); err != nil {
				return err
			}
		}
	}
	return pend.wait(ctx)
}

func (p *planner) plan(ctx context.Context, req *mailwavev1.SendRequest, seq uint64, cont *content, r *mailwavev1.Recipient, now time.Time, pend *pending) error {
	addr, err := mail.ParseAddress(r.GetAddress())
	if err != nil || domainOf(addr.Address) == "" {
		return p.drop(ctx, req, r, fmt.Sprintf("invalid recipient address %q", r.GetAddress()), now, pend)
	}
	rcpt := addr.Address
	id := MessageID(req.GetIdempotencyKey(), rcpt)
	sup, err := p.suppress.check(ctx, req, rcpt)
	if err != nil {
		return err
	}
	if sup != nil {
		ev := p.event(req, r, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, now)
		ev.MessageId = id
		ev.Recipient = rcpt
		ev.Reason = sup.GetReason()
		ev.Detail = "suppressed for " + scopeWord(sup.GetScope())
		if err := p.publishEvent(ctx, ev, id+":suppressed", pend); err != nil {
			return err
		}
		p.planned.WithLabelValues(req.GetTenant(), "suppressed").Inc()
		return nil
	}
	data, headerID, err := cont.render(r, id, now)
	if err != nil {
		return p.drop(ctx, req, r, err.Error(), now, pend)
	}
	bounceDomain := p.cfg.BounceDomain
	if bounceDomain == "" {
		bounceDomain = "bounces." + cont.sendingDomain
	}
	returnPath, err := p.signer.Address(id, rcpt, bounceDomain)
	if err != nil {
		return fmt.Errorf("planner: return path: %w", err)
	}
	maxAge := p.cfg.MaxAge
	if d := req.GetMaxAge(); d != nil && d.AsDuration() > 0 {
		maxAge = d.AsDuration()
	}
	site := domainOf(rcpt)
	routing := &mailwavev1.Routing{
		Pool:            p.cfg.Pool,
		SendingDomain:   cont.sendingDomain,
		Site:            site,
		RecipientDomain: domainOf(rcpt),
	}
	if n := len(p.cfg.SourceIPs); n > 0 {
		h := fnv.New32a()
		h.Write([]byte(strings.ToLower(rcpt)))
		i := int(h.Sum32() % uint32(n))
		routing.SourceIp = p.cfg.SourceIPs[i]
		if len(p.cfg.HeloNames) > 0 {
			routing.HeloName = p.cfg.HeloNames[i]
		}
		// The pool's other IPs, in ring order from the chosen one: where
		// the sender goes when a policy pauses the chosen IP.
		for k := 1; k < n; k++ {
			j := (i + k) % n
			alt := &mailwavev1.SourceAddress{Ip: p.cfg.SourceIPs[j]}
			if len(p.cfg.HeloNames) > 0 {
				alt.HeloName = p.cfg.HeloNames[j]
			}
			routing.FallbackSources = append(routing.FallbackSources, alt)
		}
	}
	d := &mailwavev1.DispatchMessage{
		MessageId:         id,
		RequestId:         req.GetIdempotencyKey(),
		Tenant:            req.GetTenant(),
		Brand:             req.GetBrand(),
		MailStream:        req.GetMailStream(),
		CommunicationType: req.GetCommunicationType(),
		CampaignId:        req.GetCampaignId(),
		Priority:          req.GetPriority(),
		Recipient:         rcpt,
		ReturnPath:        returnPath,
		Data:              data,
		Routing:           routing,
		Attempt:           1,
		CreatedAt:         timestamppb.New(now),
		ExpiresAt:         timestamppb.New(now.Add(maxAge)),
		NotBefore:         req.GetNotBefore(),
		HeaderMessageId:   headerID,
		Metadata:          mergeMeta(req.GetMetadata(), r),
	}
	// The record goes first: once the dispatch is stored, a bounce for
	// it can arrive, and must find the record.
	rec := &mailwavev1.MessageRecord{
		MessageId: id, RequestId: d.RequestId, Tenant: d.Tenant, Brand: d.Brand, MailStream: d.MailStream,
		CommunicationType: d.CommunicationType, CampaignId: d.CampaignId, Recipient: rcpt,
		ExternalId: r.GetExternalId(), Pool: routing.Pool, SourceIp: routing.SourceIp,
		SendingDomain: routing.SendingDomain, Site: site, ReturnPath: returnPath, HeaderMessageId: headerID,
		CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt, SendSequence: seq, Vars: r.GetVars(), Priority: d.Priority,
	}
	rf, err := p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectMessageRecord(id), rec)
	if err != nil {
		return err
	}
	f, err := p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectDispatch(routing.Pool, site), d, events.WithMsgID(id))
	if err != nil {
		return err
	}
	pend.futures = append(pend.futures, rf, f)
	ev := p.event(req, r, mailwavev1.EventKind_EVENT_KIND_ACCEPTED, now)
	ev.MessageId = id
	ev.Recipient = rcpt
	ev.Pool = routing.Pool
	ev.SourceIp = routing.SourceIp
	ev.SendingDomain = routing.SendingDomain
	ev.Provider = site
	if err := p.publishEvent(ctx, ev, id+":accepted", pend); err != nil {
		return err
	}
	p.planned.WithLabelValues(req.GetTenant(), "accepted").Inc()
	return nil
}

func (p *planner) drop(ctx context.Context, req *mailwavev1.SendRequest, r *mailwavev1.Recipient, reason string, now time.Time, pend *pending) error {
	ev := p.event(req, r, mailwavev1.EventKind_EVENT_KIND_DROPPED, now)
	ev.MessageId = MessageID(req.GetIdempotencyKey(), r.GetAddress())
	ev.Reason = reason
	if err := p.publishEvent(ctx, ev, ev.MessageId+":dropped", pend); err != nil {
		return err
	}
	p.planned.WithLabelValues(req.GetTenant(), "dropped").Inc()
	return nil
}

func (p *planner) event(req *mailwavev1.SendRequest, r *mailwavev1.Recipient, kind mailwavev1.EventKind, now time.Time) *mailwavev1.DeliveryEvent {
	return &mailwavev1.DeliveryEvent{
		EventId:           events.NewID(),
		Kind:              kind,
		Origin:            mailwavev1.Origin_ORIGIN_PLANNER,
		RequestId:         req.GetIdempotencyKey(),
		Tenant:            req.GetTenant(),
		Brand:             req.GetBrand(),
		MailStream:        req.GetMailStream(),
		CommunicationType: req.GetCommunicationType(),
		CampaignId:        req.GetCampaignId(),
		Recipient:         r.GetAddress(),
		ExternalId:        r.GetExternalId(),
		OccurredAt:        timestamppb.New(now),
		CreatedAt:         timestamppb.New(now),
		Metadata:          req.GetMetadata(),
	}
}

func (p *planner) publishEvent(ctx context.Context, ev *mailwavev1.DeliveryEvent, msgID string, pend *pending) error {
	f, err := p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(msgID))
	if err != nil {
		return err
	}
	pend.futures = append(pend.futures, f)
	return nil
}

func scopeWord(s mailwavev1.SuppressionScope) string {
	switch s {
	case mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL:
		return "every tenant"
	case mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE:
		return "this communication type"
	default:
		return "the brand"
	}
}

func mergeMeta(meta map[string]string, r *mailwavev1.Recipient) map[string]string {
	if r.GetExternalId() == "" {
		return meta
	}
	out := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	out["external_id"] = r.GetExternalId()
	return out
}
