package planner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/tenancy"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// A DSN can report a temporary failure for a message the remote server had
// already accepted — the mailbox filled up before the message reached it
// (the seed's scenario 4). inbound-dsn then publishes a deferred event,
// origin DSN, with next_attempt_at (when that is still within the
// message's max age). The replanner reads those events from the
// planner-events consumer and plans the recipient again from its send
// request, as a dispatch scheduled for next_attempt_at.
//
// The new attempt is a new message with an id of its own, RetryID of the
// accepted one:
//
//   - the sender never sends one message id twice (its delivered marker
//     in Redis refuses a second copy, which is what keeps a crash from
//     sending a delivered message again), and the accepted message was
//     delivered as far as the sender knows;
//   - a DSN for the new attempt must be tied to the new attempt: it gets
//     its own VERP return path, Message-ID and MessageRecord, which keeps
//     the original's expiry, so a chain of full-mailbox reports ends
//     within the max age;
//   - the id is derived, so planning the same event again (a redelivery
//     after a crash, a second DSN for the same message) yields the same
//     dispatch, which JetStream de-duplicates by Nats-Msg-Id, and which
//     the sender's delivered marker refuses once it was delivered.
//
// The record is written before the dispatch, as the planner does, so a DSN
// for the new attempt always finds it.

// RetryID is the message id of the attempt planned after a DSN reported a
// temporary failure for the accepted message messageID.
func RetryID(messageID string) string {
	h := sha256.Sum256([]byte("dsn-retry\x00" + messageID))
	return hex.EncodeToString(h[:16])
}

// replanner plans again the recipients of DSN-reported temporary failures.
type replanner struct {
	p        *planner
	messages jetstream.KeyValue
	send     jetstream.Stream
	log      *slog.Logger
	outcomes *prometheus.CounterVec
}

func newReplanner(ctx context.Context, p *planner, rt *service.Runtime, log *slog.Logger) (*replanner, error) {
	messages, err := rt.JS.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		return nil, fmt.Errorf("planner: messages bucket: %w", err)
	}
	send, err := rt.JS.Stream(ctx, mailwavev1.StreamSend)
	if err != nil {
		return nil, fmt.Errorf("planner: send stream: %w", err)
	}
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_planner_dsn_retries_total",
		Help: "New attempts after a DSN reported a temporary failure for an accepted message, by outcome (scheduled, suppressed, dropped).",
	}, []string{"outcome"})
	if err := rt.Metrics.Register(outcomes); err != nil {
		return nil, fmt.Errorf("planner: metrics: %w", err)
	}
	return &replanner{p: p, messages: messages, send: send, log: log, outcomes: outcomes}, nil
}

func (r *replanner) handle(ctx context.Context, m *events.Msg[*mailwavev1.DeliveryEvent]) error {
	ev := m.Payload
	// The sender schedules its own retries; only a DSN's deferral asks
	// for a new attempt.
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DEFERRED || ev.GetOrigin() != mailwavev1.Origin_ORIGIN_DSN ||
		ev.GetNextAttemptAt() == nil || ev.GetMessageId() == "" {
		return nil
	}
	return r.replan(ctx, ev, r.p.now())
}

// errNoRetry says why a new attempt cannot be planned; the recipient ends
// dropped with it.
var errNoRetry = errors.New("planner: no new attempt")

func (r *replanner) replan(ctx context.Context, ev *mailwavev1.DeliveryEvent, now time.Time) error {
	rec, req, err := r.load(ctx, ev)
	if errors.Is(err, errNoRetry) {
		return r.drop(ctx, ev, err.Error(), now)
	}
	if err != nil {
		return err
	}
	id := RetryID(rec.GetMessageId())
	at := ev.GetNextAttemptAt().AsTime()
	if exp := rec.GetExpiresAt(); exp != nil && !at.Before(exp.AsTime()) {
		return r.drop(ctx, ev, "the next attempt would come after the max age", now)
	}
	rcpt := &mailwavev1.Recipient{Address: rec.GetRecipient(), Vars: rec.GetVars(), ExternalId: rec.GetExternalId()}
	// A suppression written since the first attempt (the DSN's own
	// threshold, a complaint) is honoured: the mirror catches up first.
	if err := r.p.suppress.sync(ctx); err != nil {
		return err
	}
	if sup := r.p.suppress.check(req, rec.GetRecipient()); sup != nil {
		out := r.event(ev, rec, id, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, now)
		out.Reason = sup.reason
		out.Detail = "suppressed for " + scopeWord(sup.scope) + " before the new attempt"
		if err := r.publishEvent(ctx, out, id+":suppressed"); err != nil {
			return err
		}
		r.outcomes.WithLabelValues("suppressed").Inc()
		return nil
	}
	route, err := r.p.tenancy.Resolve(req.GetTenant(), req.GetBrand(), req.GetMailStream(), req.GetCommunicationType())
	if err != nil {
		return r.drop(ctx, ev, err.Error(), now)
	}
	cont, err := prepare(req, route)
	if err != nil {
		return r.drop(ctx, ev, err.Error(), now)
	}
	// The same personal parts as the first attempt: the one-click link
	// names the new message, so an unsubscribe from it is tied to it.
	pers := r.p.personal(&request{req: req, route: route}, &item{addr: rec.GetRecipient(), id: id})
	data, headerID, err := cont.render(rcpt, rec.GetRecipient(), id, now, pers)
	if err != nil {
		return r.drop(ctx, ev, err.Error(), now)
	}
	bounceDomain := domainOf(rec.GetReturnPath())
	if bounceDomain == "" {
		bounceDomain = "bounces." + rec.GetSendingDomain()
	}
	returnPath, err := r.p.signer.Address(id, rec.GetRecipient(), bounceDomain)
	if err != nil {
		return fmt.Errorf("planner: return path: %w", err)
	}
	routing := r.routing(rec, route)
	d := &mailwavev1.DispatchMessage{
		MessageId: id, RequestId: rec.GetRequestId(), Tenant: rec.GetTenant(), Brand: rec.GetBrand(),
		MailStream: rec.GetMailStream(), CommunicationType: rec.GetCommunicationType(), CampaignId: rec.GetCampaignId(),
		Priority: rec.GetPriority(), Recipient: rec.GetRecipient(), ReturnPath: returnPath, Data: data, Routing: routing,
		Attempt: 1, CreatedAt: rec.GetCreatedAt(), ExpiresAt: rec.GetExpiresAt(), NotBefore: ev.GetNextAttemptAt(),
		HeaderMessageId: headerID, Metadata: mergeMeta(req.GetMetadata(), rcpt),
		// Should the max age pass first, the expiry says why.
		LastReason: ev.GetReason(), LastSmtpCode: ev.GetSmtpCode(), LastEnhancedCode: ev.GetEnhancedCode(),
		LastResponse: ev.GetResponse(), RetryOf: rec.GetMessageId(),
	}
	next := proto.CloneOf(rec)
	next.MessageId, next.ReturnPath, next.HeaderMessageId = id, returnPath, headerID
	next.Pool, next.SourceIp, next.SendingDomain, next.Site = routing.GetPool(), routing.GetSourceIp(), routing.GetSendingDomain(), routing.GetSite()
	recData, err := proto.Marshal(next)
	if err != nil {
		return fmt.Errorf("planner: message record: %w", err)
	}
	if _, err := r.messages.Put(ctx, id, recData); err != nil {
		return fmt.Errorf("planner: message record %s: %w", id, err)
	}
	// A schedule has one-second resolution: round up so it never fires
	// early, and never in the past.
	if at.Before(now) {
		at = now
	}
	at = at.Truncate(time.Second).Add(time.Second)
	if _, err := r.p.rt.Pub.Publish(ctx, mailwavev1.SubjectRetry(id), d,
		events.WithMsgID(id+":dsn-retry"),
		events.WithHeader(mailwavev1.HeaderSchedule, "@at "+at.UTC().Format(time.RFC3339)),
		events.WithHeader(mailwavev1.HeaderScheduleTarget, mailwavev1.SubjectDispatch(routing.GetPool(), routing.GetSite()))); err != nil {
		return err
	}
	r.outcomes.WithLabelValues("scheduled").Inc()
	r.log.Info("new attempt after a DSN", "message_id", rec.GetMessageId(), "retry_id", id, "at", at, "reason", ev.GetReason())
	return nil
}

// load reads the record of the reported message and its send request.
// What can never be planned again is an errNoRetry.
func (r *replanner) load(ctx context.Context, ev *mailwavev1.DeliveryEvent) (*mailwavev1.MessageRecord, *mailwavev1.SendRequest, error) {
	e, err := r.messages.Get(ctx, ev.GetMessageId())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("%w: the message record is gone", errNoRetry)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("planner: message record %s: %w", ev.GetMessageId(), err)
	}
	var rec mailwavev1.MessageRecord
	if err := proto.Unmarshal(e.Value(), &rec); err != nil {
		return nil, nil, fmt.Errorf("%w: unreadable message record: %v", errNoRetry, err)
	}
	raw, err := r.send.GetMsg(ctx, rec.GetSendSequence())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, fmt.Errorf("%w: the send request is no longer in the %s stream", errNoRetry, mailwavev1.StreamSend)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("planner: send request %d: %w", rec.GetSendSequence(), err)
	}
	var req mailwavev1.SendRequest
	if err := proto.Unmarshal(raw.Data, &req); err != nil || req.GetIdempotencyKey() != rec.GetRequestId() || req.GetTenant() != rec.GetTenant() {
		return nil, nil, fmt.Errorf("%w: send request %d is not the message's", errNoRetry, rec.GetSendSequence())
	}
	return &rec, &req, nil
}

// routing sends the new attempt the way the first one went: same pool,
// source IP (with its EHLO name and the pool's other warm IPs as
// fallbacks, when the IP is still the pool's), sending domain and site.
func (r *replanner) routing(rec *mailwavev1.MessageRecord, route *tenancy.Route) *mailwavev1.Routing {
	rt := &mailwavev1.Routing{
		Pool: rec.GetPool(), SourceIp: rec.GetSourceIp(), SendingDomain: rec.GetSendingDomain(),
		Site: mx.Token(rec.GetSite()), RecipientDomain: domainOf(rec.GetRecipient()), RelayRoute: route.Relay,
	}
	if route.DomainConfig != nil {
		rt.DkimSelectors = route.DomainConfig.DKIMSelectors
	}
	if rt.Pool == "" {
		rt.Pool = route.Pool
	}
	if rt.Site == "" {
		rt.Site = mx.Token(rt.RecipientDomain)
	}
	if route.PoolConfig == nil {
		return rt
	}
	ips := route.PoolConfig.IPs
	for i, ip := range ips {
		if ip.IP != rt.SourceIp {
			continue
		}
		rt.HeloName = ip.Hostname
		for k := 1; k < len(ips); k++ {
			alt := ips[(i+k)%len(ips)]
			if !alt.New {
				rt.FallbackSources = append(rt.FallbackSources, &mailwavev1.SourceAddress{Ip: alt.IP, HeloName: alt.Hostname})
			}
		}
		break
	}
	return rt
}

// drop ends the reported message's recipient dropped, with the reason no
// new attempt could be planned.
func (r *replanner) drop(ctx context.Context, ev *mailwavev1.DeliveryEvent, why string, now time.Time) error {
	id := RetryID(ev.GetMessageId())
	out := &mailwavev1.DeliveryEvent{
		EventId: events.NewID(), Kind: mailwavev1.EventKind_EVENT_KIND_DROPPED, Origin: mailwavev1.Origin_ORIGIN_PLANNER,
		MessageId: id, RequestId: ev.GetRequestId(), Tenant: ev.GetTenant(), Brand: ev.GetBrand(), MailStream: ev.GetMailStream(),
		CommunicationType: ev.GetCommunicationType(), CampaignId: ev.GetCampaignId(), Recipient: ev.GetRecipient(),
		ExternalId: ev.GetExternalId(), Reason: ev.GetReason(), EnhancedCode: ev.GetEnhancedCode(), SmtpCode: ev.GetSmtpCode(),
		Detail:     "no new attempt after the DSN: " + strings.TrimPrefix(why, errNoRetry.Error()+": "),
		OccurredAt: timestamppb.New(now), CreatedAt: ev.GetCreatedAt(),
		Metadata: map[string]string{"retry_of": ev.GetMessageId()},
	}
	if err := r.publishEvent(ctx, out, id+":dropped"); err != nil {
		return err
	}
	r.outcomes.WithLabelValues("dropped").Inc()
	r.log.Info("no new attempt after a DSN", "message_id", ev.GetMessageId(), "why", why)
	return nil
}

func (r *replanner) event(ev *mailwavev1.DeliveryEvent, rec *mailwavev1.MessageRecord, id string, kind mailwavev1.EventKind, now time.Time) *mailwavev1.DeliveryEvent {
	return &mailwavev1.DeliveryEvent{
		EventId: events.NewID(), Kind: kind, Origin: mailwavev1.Origin_ORIGIN_PLANNER,
		MessageId: id, RequestId: rec.GetRequestId(), Tenant: rec.GetTenant(), Brand: rec.GetBrand(), MailStream: rec.GetMailStream(),
		CommunicationType: rec.GetCommunicationType(), CampaignId: rec.GetCampaignId(), Recipient: rec.GetRecipient(),
		ExternalId: rec.GetExternalId(), OccurredAt: timestamppb.New(now), CreatedAt: rec.GetCreatedAt(),
		Metadata: map[string]string{"retry_of": ev.GetMessageId()},
	}
}

func (r *replanner) publishEvent(ctx context.Context, ev *mailwavev1.DeliveryEvent, msgID string) error {
	if _, err := r.p.rt.Pub.Publish(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(msgID)); err != nil {
		return err
	}
	// The planner counts its own outcomes (see planner.publishEvent).
	if t, ok := tallyOf(ev); ok {
		return r.p.progress.countAll(ctx, []tally{t})
	}
	return nil
}
