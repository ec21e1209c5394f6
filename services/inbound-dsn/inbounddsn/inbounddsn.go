// Package inbounddsn is the inbound-dsn service: it receives bounces on the
// bounce domains over SMTP (package inbound), stores them raw in the
// INBOUND stream before answering 250, then reads them back, parses them
// (package dsn, RFC 3464 and the non-standard long tail), ties them to the
// message they report on (a signed VERP token, package verp; else our
// Message-ID in the returned header; then the messages KV), and acts:
//
//   - a BounceReport on mail.report.bounce.<tenant>;
//   - per failed recipient, a bounced DeliveryEvent (origin DSN) and a
//     hard or soft count in Redis (see counters); when the brand's
//     threshold is reached, a brand-scope Suppression in the suppressions
//     KV;
//   - for a failure the thresholds call retryable (mailbox full, 4.x.x)
//     on a message still within its max age, a deferred event with
//     next_attempt_at instead of a bounce: the planner plans the recipient
//     again from its send request;
//   - a delivered event resets the recipient's soft count.
//
// Only a VERP token whose signature checks is trusted to change a counter
// or a suppression: a bounce correlated by Message-ID alone is reported,
// never acted on, and an uncorrelated one is kept in INBOUND and counted.
// Replies and auto-replies to a return path (RFC 3834) are stored apart and
// forwarded to the brand's reply address when one is configured.
package inbounddsn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/batch"
	"github.com/mailwave/mailwave/pkg/dsn"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/smtpclient"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Run runs the service until ctx is cancelled: the SMTP receiver, the
// consumer of inbound bounces and replies, and the consumer of delivered
// events. It connects to NATS and Redis, creates the topology and serves
// its health and metrics endpoints.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	if cfg.thresholds == nil {
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	signer, err := verp.ParseKeys(cfg.VERPKeys)
	if err != nil {
		return err
	}
	return service.Run(ctx, "inbound-dsn", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		s, err := newService(ctx, cfg, rt, signer, log)
		if err != nil {
			return nil, nil, err
		}
		if err := cfg.FitPayload(rt.NC.MaxPayload()); err != nil {
			return nil, nil, err
		}
		icfg := inbound.Config{
			Domain:    s.hostname,
			Policy:    newReceiverPolicy(cfg.BounceDomains, signer),
			Store:     inbound.JetStream(rt.Pub),
			Logger:    log,
			OnStored:  func(m *mailwavev1.InboundMessage) { s.received.WithLabelValues(kindWord(m.GetKind())).Inc() },
			OnRefused: func(code int, _ string) { s.refused.WithLabelValues(strconv.Itoa(code)).Inc() },
		}
		cfg.Apply(&icfg)
		srv, err := inbound.New(icfg)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", cfg.SMTPAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("inbounddsn: listen %s: %w", cfg.SMTPAddr, err)
		}
		log.Info("smtp receiver listening", "addr", ln.Addr().String(), "domains", strings.Join(cfg.BounceDomains, ","))
		if cfg.OnSMTPListen != nil {
			cfg.OnSMTPListen(ln.Addr())
		}
		in := &events.Consumer[*mailwavev1.InboundMessage]{
			JS: rt.JS, Stream: mailwavev1.StreamInbound, Name: mailwavev1.ConsumerInboundDSN,
			New:     func() *mailwavev1.InboundMessage { return &mailwavev1.InboundMessage{} },
			Handle:  s.handleInbound,
			Workers: cfg.Workers,
			Logger:  log,
			OnDead:  rt.OnDead(mailwavev1.StreamInbound),
		}
		delivered := &events.Consumer[*mailwavev1.DeliveryEvent]{
			JS: rt.JS, Stream: mailwavev1.StreamEvents, Name: mailwavev1.ConsumerInboundDSNEvents,
			New:     func() *mailwavev1.DeliveryEvent { return &mailwavev1.DeliveryEvent{} },
			Handle:  s.handleEvent,
			Workers: cfg.EventWorkers,
			Logger:  log,
			OnDead:  rt.OnDead(mailwavev1.StreamEvents),
		}
		loop := func(ctx context.Context) error {
			g, gctx := errgroup.WithContext(ctx)
			// Sessions in progress finish (their message is stored or
			// refused) within the drain timeout.
			g.Go(func() error { return srv.Run(gctx, ln, cfg.DrainTimeout) })
			// A consumer stopped by the shutdown (its setup cut short by
			// the cancelled context) is not a failure of the service.
			consume := func(run func(context.Context) error) func() error {
				return func() error {
					if err := run(gctx); err != nil && ctx.Err() == nil {
						return err
					}
					return nil
				}
			}
			// The resets outlive ctx until the events consumer has
			// drained, since its in-flight handlers wait on them.
			resetCtx, stopResets := context.WithCancel(context.WithoutCancel(ctx))
			defer stopResets()
			go s.resets.Run(resetCtx, 5*time.Second)
			g.Go(consume(in.Run))
			g.Go(func() error {
				err := consume(delivered.Run)()
				stopResets()
				return err
			})
			return g.Wait()
		}
		return nil, loop, nil
	})
}

type svc struct {
	cfg      Config
	hostname string // the receiver's name, also the EHLO name towards the relay
	th       *Thresholds
	signer   *verp.Signer
	rt       *service.Runtime
	log      *slog.Logger
	messages jetstream.KeyValue
	supp     jetstream.KeyValue
	counts   *counters
	// resets deletes the soft counters of concurrently delivered
	// recipients in one round trip.
	resets *batch.Batcher[string, struct{}]
	now    func() time.Time

	received     *prometheus.CounterVec
	refused      *prometheus.CounterVec
	bounces      *prometheus.CounterVec
	uncorrelated prometheus.Counter
	forged       prometheus.Counter
	unverified   prometheus.Counter
	suppressions *prometheus.CounterVec
	retries      prometheus.Counter
	replies      *prometheus.CounterVec
}

func newService(ctx context.Context, cfg Config, rt *service.Runtime, signer *verp.Signer, log *slog.Logger) (*svc, error) {
	messages, err := rt.JS.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		return nil, fmt.Errorf("inbounddsn: messages bucket: %w", err)
	}
	supp, err := rt.JS.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		return nil, fmt.Errorf("inbounddsn: suppressions bucket: %w", err)
	}
	s := &svc{cfg: cfg, th: cfg.thresholds, signer: signer, rt: rt, log: log, messages: messages, supp: supp,
		counts: &counters{rdb: rt.Redis}, now: time.Now, hostname: cfg.SMTPHostname}
	// Deliveries trickle in: a few milliseconds of linger let a busy
	// stream reset its counters in batches all the same.
	s.resets = batch.New(max(cfg.EventWorkers, 1), s.counts.reset).WithLinger(5 * time.Millisecond)
	if s.hostname == "" {
		s.hostname = cfg.BounceDomains[0]
	}
	s.received = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_received_total",
		Help: "Messages stored by the bounce receiver, by kind (dsn, reply)."}, []string{"kind"})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_refused_total",
		Help: "Recipients, messages and connections the bounce receiver refused, by SMTP code."}, []string{"code"})
	s.bounces = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_bounces_total",
		Help: "Bounced recipients from verified DSNs, by reason and class."}, []string{"reason", "class"})
	s.uncorrelated = prometheus.NewCounter(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_uncorrelated_total",
		Help: "Bounces that could not be tied to a message we sent (kept in INBOUND, not acted on)."})
	s.forged = prometheus.NewCounter(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_forged_total",
		Help: "Bounces whose VERP token did not verify (not acted on)."})
	s.unverified = prometheus.NewCounter(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_unverified_total",
		Help: "Bounces correlated by Message-ID only, without a signed VERP token (reported, not acted on)."})
	s.suppressions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_suppressions_total",
		Help: "Suppressions written after a brand's bounce threshold was reached, by reason."}, []string{"reason"})
	s.retries = prometheus.NewCounter(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_retries_total",
		Help: "Retryable failures reported by DSN after acceptance, planned again."})
	s.replies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_inbound_dsn_replies_total",
		Help: "Replies and auto-replies to return paths, by outcome (forwarded, kept)."}, []string{"outcome"})
	for _, c := range []prometheus.Collector{s.received, s.refused, s.bounces, s.uncorrelated, s.forged, s.unverified,
		s.suppressions, s.retries, s.replies} {
		if err := rt.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("inbounddsn: metrics: %w", err)
		}
	}
	return s, nil
}

func kindWord(k mailwavev1.InboundKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "INBOUND_KIND_"))
}

// correlation is what a bounce was tied to.
type correlation struct {
	rec      *mailwavev1.MessageRecord
	method   string // "verp", "message-id" or "none"
	verified bool
	forged   bool
}

// ourMessageID is the form of the Message-ID the planner writes.
var ourMessageID = regexp.MustCompile(`^([0-9a-f]{32})@`)

func (s *svc) record(ctx context.Context, id string) (*mailwavev1.MessageRecord, error) {
	e, err := s.messages.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inbounddsn: message record %s: %w", id, err)
	}
	var rec mailwavev1.MessageRecord
	if err := proto.Unmarshal(e.Value(), &rec); err != nil {
		return nil, nil
	}
	return &rec, nil
}

// correlate ties a bounce to a message: the signed VERP token of the
// envelope recipient first, then our Message-ID in the returned header.
func (s *svc) correlate(ctx context.Context, in *mailwavev1.InboundMessage, m *dsn.Message) (correlation, error) {
	c := correlation{method: "none"}
	for _, rcpt := range in.GetRcptTo() {
		tok, err := s.signer.Parse(rcpt)
		if errors.Is(err, verp.ErrBadSignature) {
			c.forged = true
			continue
		}
		if err != nil {
			continue
		}
		rec, err := s.record(ctx, tok.MessageID)
		if err != nil {
			return c, err
		}
		if rec == nil {
			continue
		}
		if !tok.MatchesRecipient(rec.GetRecipient()) {
			c.forged = true
			continue
		}
		return correlation{rec: rec, method: "verp", verified: true}, nil
	}
	if mm := ourMessageID.FindStringSubmatch(strings.ToLower(m.Original.MessageID)); mm != nil {
		rec, err := s.record(ctx, mm[1])
		if err != nil {
			return c, err
		}
		if rec != nil && strings.EqualFold(rec.GetHeaderMessageId(), m.Original.MessageID) {
			c.rec, c.method = rec, "message-id"
		}
	}
	return c, nil
}

func (s *svc) handleInbound(ctx context.Context, msg *events.Msg[*mailwavev1.InboundMessage]) error {
	in := msg.Payload
	switch in.GetKind() {
	case mailwavev1.InboundKind_INBOUND_KIND_REPLY:
		return s.handleReply(ctx, in)
	case mailwavev1.InboundKind_INBOUND_KIND_DSN:
		return s.handleDSN(ctx, in)
	}
	return nil
}

func (s *svc) handleDSN(ctx context.Context, in *mailwavev1.InboundMessage) error {
	m, err := dsn.Parse(in.GetRaw())
	if err != nil {
		// Kept in INBOUND for inspection; nothing to act on.
		s.uncorrelated.Inc()
		s.log.Info("unreadable bounce kept", "inbound_id", in.GetId(), "err", err.Error())
		return nil
	}
	c, err := s.correlate(ctx, in, m)
	if err != nil {
		return err
	}
	if c.rec == nil {
		if c.forged {
			s.forged.Inc()
		} else {
			s.uncorrelated.Inc()
		}
		s.log.Info("uncorrelated bounce kept", "inbound_id", in.GetId(), "forged", c.forged, "original_message_id", m.Original.MessageID)
		return nil
	}
	rec := c.rec
	now := s.now()
	report := &mailwavev1.BounceReport{
		Id:        in.GetId(),
		InboundId: in.GetId(),
		Correlation: &mailwavev1.Correlation{
			MessageId: rec.GetMessageId(), Tenant: rec.GetTenant(), Brand: rec.GetBrand(), CampaignId: rec.GetCampaignId(),
			Recipient: rec.GetRecipient(), Method: c.method, Verified: c.verified, SourceIp: rec.GetSourceIp(),
			SendingDomain: rec.GetSendingDomain(), Provider: rec.GetSite(), MailStream: rec.GetMailStream(),
		},
		ReportingMta: m.ReportingMTA,
		ReceivedAt:   in.GetReceivedAt(),
		Kind:         string(m.Kind),
	}
	for _, r := range m.Records {
		report.Records = append(report.Records, &mailwavev1.BounceRecord{
			Recipient: r.Recipient, Status: r.Status, ReplyCode: int32(atoi(r.ReplyCode)), RemoteMta: r.RemoteMTA,
			Diagnostic: r.Diagnostic, Reason: r.Reason.String(), BounceClass: classOf(r), Action: r.Action,
		})
	}
	if _, err := s.rt.Pub.Publish(ctx, mailwavev1.SubjectBounceReport(rec.GetTenant()), report, events.WithMsgID(in.GetId()+":report")); err != nil {
		return err
	}
	if !c.verified {
		// Our Message-ID can be copied by anyone who received the
		// message: reported, never acted on.
		s.unverified.Inc()
		return nil
	}
	if !m.IsBounce {
		return nil
	}
	r, ok := pick(m.Records, rec.GetRecipient())
	if !ok {
		return nil
	}
	return s.act(ctx, in, rec, r, now)
}

// pick chooses the record about the message's recipient: the VERP token
// names one recipient, and a report may also list others of the same
// delivery or name the recipient only after forwarding.
func pick(recs []dsn.Record, rcpt string) (dsn.Record, bool) {
	var first *dsn.Record
	for i, r := range recs {
		if !r.Reason.IsBounce() && r.Action != "failed" && r.Action != "delayed" {
			continue
		}
		if strings.EqualFold(r.Recipient, rcpt) || strings.EqualFold(r.OriginalRecipient, rcpt) {
			return r, true
		}
		if first == nil {
			first = &recs[i]
		}
	}
	if first == nil {
		return dsn.Record{}, false
	}
	return *first, true
}

func classOf(r dsn.Record) mailwavev1.BounceClass {
	if r.Hard {
		return mailwavev1.BounceClass_BOUNCE_CLASS_HARD
	}
	return mailwavev1.BounceClass_BOUNCE_CLASS_SOFT
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// act turns one verified failure into a deferral or a bounce.
func (s *svc) act(ctx context.Context, in *mailwavev1.InboundMessage, rec *mailwavev1.MessageRecord, r dsn.Record, now time.Time) error {
	ev := s.event(in, rec, r, now)
	if r.Action == "delayed" {
		// The remote MTA still holds the message and keeps trying: say
		// so, plan nothing.
		ev.Kind = mailwavev1.EventKind_EVENT_KIND_DEFERRED
		ev.Detail = "DSN: delivery delayed at the remote server"
		return s.publishEvent(ctx, ev, in.GetId()+":delayed")
	}
	retryable := s.th.Retryable(r.Status) || (r.Status == "" && !r.Permanent)
	if retryable {
		next := now.Add(s.th.RetryAfter)
		if exp := rec.GetExpiresAt(); exp == nil || next.Before(exp.AsTime()) {
			ev.Kind = mailwavev1.EventKind_EVENT_KIND_DEFERRED
			ev.BounceClass = mailwavev1.BounceClass_BOUNCE_CLASS_SOFT
			ev.NextAttemptAt = timestamppb.New(next)
			ev.Detail = "DSN after acceptance: a new attempt is planned"
			if err := s.publishEvent(ctx, ev, in.GetId()+":deferred"); err != nil {
				return err
			}
			s.retries.Inc()
			return nil
		}
		// Past the message's max age: no new attempt, it counts as a
		// soft bounce.
		ev.BounceClass = mailwavev1.BounceClass_BOUNCE_CLASS_SOFT
		ev.Detail = "DSN after acceptance, past the max age"
	}
	ev.Kind = mailwavev1.EventKind_EVENT_KIND_BOUNCED
	if err := s.publishEvent(ctx, ev, in.GetId()+":bounced"); err != nil {
		return err
	}
	class := ev.GetBounceClass()
	s.bounces.WithLabelValues(ev.GetReason(), classWord(class)).Inc()
	limits := s.th.For(rec.GetTenant(), rec.GetBrand())
	key := CounterKey(classWord(class), rec.GetTenant(), rec.GetBrand(), rec.GetRecipient())
	n, err := s.counts.add(ctx, key, in.GetId(), now, limits.Window)
	if err != nil {
		return err
	}
	threshold, why := limits.Soft, "softbounce-threshold"
	if class == mailwavev1.BounceClass_BOUNCE_CLASS_HARD {
		threshold, why = limits.Hard, "hardbounce"
	}
	if threshold <= 0 || n < int64(threshold) {
		return nil
	}
	return s.suppress(ctx, in, rec, r, why, n, limits.Window, now)
}

func (s *svc) event(in *mailwavev1.InboundMessage, rec *mailwavev1.MessageRecord, r dsn.Record, now time.Time) *mailwavev1.DeliveryEvent {
	signal := mailwavev1.Signal_SIGNAL_NONE
	if r.Hard {
		signal = mailwavev1.Signal_SIGNAL_INVALID_RECIPIENT
	}
	return &mailwavev1.DeliveryEvent{
		EventId: events.NewID(), Origin: mailwavev1.Origin_ORIGIN_DSN,
		MessageId: rec.GetMessageId(), RequestId: rec.GetRequestId(), Tenant: rec.GetTenant(), Brand: rec.GetBrand(),
		MailStream: rec.GetMailStream(), CommunicationType: rec.GetCommunicationType(), CampaignId: rec.GetCampaignId(),
		Recipient: rec.GetRecipient(), ExternalId: rec.GetExternalId(),
		SmtpCode: int32(atoi(r.ReplyCode)), EnhancedCode: r.Status, Response: r.Diagnostic, Reason: r.Reason.String(),
		BounceClass: classOf(r), Signal: signal, RemoteMx: r.RemoteMTA,
		SourceIp: rec.GetSourceIp(), Pool: rec.GetPool(), SendingDomain: rec.GetSendingDomain(), Provider: rec.GetSite(),
		Attempt: 1, OccurredAt: timestamppb.New(now), CreatedAt: rec.GetCreatedAt(),
		Metadata: map[string]string{"inbound_id": in.GetId()},
	}
}

func (s *svc) publishEvent(ctx context.Context, ev *mailwavev1.DeliveryEvent, msgID string) error {
	_, err := s.rt.Pub.Publish(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(msgID))
	return err
}

// suppress writes the brand-scope suppression; an existing one (an earlier
// bounce, a complaint) is kept with its own evidence.
func (s *svc) suppress(ctx context.Context, in *mailwavev1.InboundMessage, rec *mailwavev1.MessageRecord, r dsn.Record, why string, n int64, window time.Duration, now time.Time) error {
	sup := &mailwavev1.Suppression{
		Address: rec.GetRecipient(), Tenant: rec.GetTenant(), Brand: rec.GetBrand(),
		Scope: mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, Reason: why, Origin: mailwavev1.Origin_ORIGIN_DSN,
		CreatedAt: timestamppb.New(now),
		Evidence: map[string]string{
			"message_id": rec.GetMessageId(), "inbound_id": in.GetId(), "status": r.Status, "reason": r.Reason.String(),
			"diagnostic": r.Diagnostic, "bounces": strconv.FormatInt(n, 10), "window": window.String(),
		},
	}
	data, err := proto.Marshal(sup)
	if err != nil {
		return fmt.Errorf("inbounddsn: suppression: %w", err)
	}
	key := mailwavev1.SuppressionKey(sup.Scope, rec.GetTenant(), rec.GetBrand(), "", rec.GetRecipient())
	if _, err := s.supp.Create(ctx, key, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return fmt.Errorf("inbounddsn: suppression %s: %w", key, err)
	}
	s.suppressions.WithLabelValues(why).Inc()
	s.log.Info("recipient suppressed", "tenant", rec.GetTenant(), "brand", rec.GetBrand(), "key", key, "reason", why, "bounces", n)
	return nil
}

// handleEvent resets a recipient's soft bounces when mail to it is
// delivered again.
func (s *svc) handleEvent(ctx context.Context, msg *events.Msg[*mailwavev1.DeliveryEvent]) error {
	ev := msg.Payload
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetRecipient() == "" {
		return nil
	}
	_, err := s.resets.Do(ctx, CounterKey("soft", ev.GetTenant(), ev.GetBrand(), ev.GetRecipient()))
	return err
}

// relay hands a message from the null reverse path to the smarthost
// MW_REPLY_RELAY, with STARTTLS when it offers it (RFC 3207).
func (s *svc) relay(ctx context.Context, to string, data []byte) error {
	host, _, _ := net.SplitHostPort(s.cfg.ReplyRelay)
	d := &smtpclient.Dialer{HelloName: s.hostname, Logger: s.log}
	c, err := d.Dial(ctx, s.cfg.ReplyRelay, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Send(ctx, "", []string{to}, data, smtpclient.SendOptions{}); err != nil {
		return err
	}
	return c.Quit(ctx)
}

// handleReply forwards a reply or auto-reply to the brand's reply address
// through the relay, or keeps it (it stays in INBOUND).
func (s *svc) handleReply(ctx context.Context, in *mailwavev1.InboundMessage) error {
	var rec *mailwavev1.MessageRecord
	for _, rcpt := range in.GetRcptTo() {
		tok, err := s.signer.Parse(rcpt)
		if err != nil {
			continue
		}
		if rec, err = s.record(ctx, tok.MessageID); err != nil {
			return err
		}
		if rec != nil {
			break
		}
	}
	to := ""
	if rec != nil {
		to = s.th.For(rec.GetTenant(), rec.GetBrand()).ReplyTo
	}
	if to == "" || s.cfg.ReplyRelay == "" {
		s.replies.WithLabelValues("kept").Inc()
		s.log.Info("reply kept", "inbound_id", in.GetId(), "correlated", rec != nil, "reply_to", to)
		return nil
	}
	var buf bytes.Buffer
	// RFC 5322 §3.6.6: the resent fields say it was passed on, and by whom.
	fmt.Fprintf(&buf, "Resent-From: <postmaster@%s>\r\nResent-To: <%s>\r\nResent-Date: %s\r\nResent-Message-ID: <%s@%s>\r\nX-Mailwave-Message-Id: %s\r\n",
		inbound.Domain(in.GetRcptTo()[0]), to, s.now().UTC().Format(time.RFC1123Z), in.GetId(), inbound.Domain(in.GetRcptTo()[0]), rec.GetMessageId())
	buf.Write(in.GetRaw())
	// The null reverse path: an answer to an automatic message must not
	// come back here (RFC 3834 §3.3).
	if err := s.relay(ctx, to, buf.Bytes()); err != nil {
		var se *smtpclient.Error
		if errors.As(err, &se) && se.Permanent() {
			s.replies.WithLabelValues("refused").Inc()
			s.log.Warn("reply forward refused", "inbound_id", in.GetId(), "to", to, "err", err.Error())
			return nil
		}
		return events.Retry(time.Minute, fmt.Errorf("inbounddsn: forward reply: %w", err))
	}
	s.replies.WithLabelValues("forwarded").Inc()
	s.log.Info("reply forwarded", "inbound_id", in.GetId(), "to", to, "message_id", rec.GetMessageId())
	return nil
}
