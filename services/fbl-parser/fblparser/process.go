package fblparser

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/arf"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Outcome says what Process did with a report.
type Outcome string

// Outcomes of Process, also the "result" label of the reports metric.
const (
	OutcomeActed       Outcome = "acted"       // trusted: event, suppression, counters
	OutcomeUntrusted   Outcome = "untrusted"   // quarantined: published trusted=false, nothing acted on
	OutcomeDuplicate   Outcome = "duplicate"   // the same report was processed before
	OutcomeUnparseable Outcome = "unparseable" // not a feedback report; kept in INBOUND only
	OutcomeIgnored     Outcome = "ignored"     // a trusted report of a kind that is not a complaint (not-spam, auth-failure)
	OutcomeOptOut      Outcome = "opt-out"     // trusted opt-out request: unsubscribed event and suppression, not a complaint
)

// Processor turns stored feedback reports into complaints: it parses
// them, decides whether their source is trusted, recovers the recipient
// and the message from our own VERP return path or Message-ID, and for a
// trusted report that was not seen before publishes a complained
// DeliveryEvent and a ComplaintReport, suppresses the recipient for the
// whole brand and counts the complaint in Redis. An opt-out report
// (RFC 5965 §7.3 "opt-out") is an unsubscribe, not a complaint: it
// publishes an unsubscribed event and suppresses the recipient for the
// brand, without counting.
type Processor struct {
	// Signer checks VERP return paths; nil disables VERP recovery.
	Signer *verp.Signer
	// Messages is the messages KV bucket (MessageRecord per message id).
	Messages jetstream.KeyValue
	// Suppressions is the suppressions KV bucket.
	Suppressions jetstream.KeyValue
	Pub          *events.Publisher
	Redis        *redis.Client
	// Trust decides which reports are acted on.
	Trust *Trust
	// DedupTTL is how long a report fingerprint is remembered (default
	// 30 days, the INBOUND retention).
	DedupTTL time.Duration
	// CounterTTL is how long an hourly counter is kept (default 8 days).
	CounterTTL time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	// OnOutcome, when set, is called once per processed report (metrics).
	OnOutcome func(source string, o Outcome)
}

// Handle is the events.Handler of the fbl-parser consumer.
func (p *Processor) Handle(ctx context.Context, m *events.Msg[*mailwavev1.InboundMessage]) error {
	o, err := p.Process(ctx, m.Payload)
	if err != nil {
		return events.Retry(5*time.Second, err)
	}
	if p.OnOutcome != nil {
		p.OnOutcome(sourceKind(m.Payload.GetSource()), o)
	}
	return nil
}

func sourceKind(s string) string {
	if strings.HasPrefix(s, "imap:") {
		return "imap"
	}
	return "smtp"
}

func (p *Processor) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Processor) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

// Process handles one stored report. Its effects are idempotent: a report
// processed again (redelivery after a crash) publishes under the same
// message ids, writes the same suppression and counts once.
func (p *Processor) Process(ctx context.Context, in *mailwavev1.InboundMessage) (Outcome, error) {
	log := p.log().With("inbound_id", in.GetId(), "source", in.GetSource())
	rep, err := arf.Parse(in.GetRaw())
	if err != nil {
		log.Warn("fbl: not a feedback report", "err", err.Error())
		return OutcomeUnparseable, nil
	}
	trusted, why, err := p.Trust.Check(in, rep)
	if err != nil {
		return "", err
	}
	corr, rec, err := p.correlate(ctx, rep)
	if err != nil {
		return "", err
	}
	cr := p.complaintReport(in, rep, corr, trusted)
	cr.QuarantineReason = why
	log = log.With("fingerprint", rep.Fingerprint, "tenant", corr.GetTenant(), "message_id", corr.GetMessageId(), "method", corr.GetMethod())
	if !trusted {
		// Quarantine: the raw message stays in INBOUND; the report is
		// published for inspection and nothing is acted on.
		if err := p.publishReport(ctx, cr); err != nil {
			return "", err
		}
		log.Warn("fbl: report from an untrusted source", "why", why)
		return OutcomeUntrusted, nil
	}
	first, err := p.claim(ctx, rep.Fingerprint, in.GetId())
	if err != nil {
		return "", err
	}
	if !first {
		log.Info("fbl: duplicate report")
		return OutcomeDuplicate, nil
	}
	o, err := p.act(ctx, in, rep, cr, corr, rec)
	if err != nil {
		return "", err
	}
	// Only now is the report done: a copy of the same inbound message
	// delivered again (stored twice across a crash, or redelivered after
	// the duplicate windows of the streams) finds the mark and does
	// nothing, while one interrupted before this point completes its
	// effects, each of which is idempotent.
	if err := p.Redis.Set(ctx, DoneKey(rep.Fingerprint), in.GetId(), p.dedupTTL()).Err(); err != nil {
		return "", fmt.Errorf("fblparser: done mark: %w", err)
	}
	log.Info("fbl: report acted on", "outcome", string(o), "recipient_known", corr.GetRecipient() != "", "feedback_type", rep.FeedbackType)
	return o, nil
}

// act carries out a trusted report's effects, once claimed.
func (p *Processor) act(ctx context.Context, in *mailwavev1.InboundMessage, rep *arf.Report, cr *mailwavev1.ComplaintReport, corr *mailwavev1.Correlation, rec *mailwavev1.MessageRecord) (Outcome, error) {
	switch n, err := p.Redis.Exists(ctx, DoneKey(rep.Fingerprint)).Result(); {
	case err != nil:
		return "", fmt.Errorf("fblparser: done mark: %w", err)
	case n > 0:
		return OutcomeDuplicate, nil
	}
	if err := p.publishReport(ctx, cr); err != nil {
		return "", err
	}
	switch rep.FeedbackType {
	case arf.FeedbackNotSpam, arf.FeedbackAuthFailure:
		return OutcomeIgnored, nil
	}
	optOut := rep.FeedbackType == arf.FeedbackOptOut
	if corr.GetTenant() == "" {
		p.log().Warn("fbl: report not tied to any tenant", "inbound_id", in.GetId(), "fingerprint", rep.Fingerprint)
		if optOut {
			return OutcomeOptOut, nil
		}
		return OutcomeActed, p.count(ctx, rep.Fingerprint, corr)
	}
	if err := p.publishEvent(ctx, in, rep, corr, rec); err != nil {
		return "", err
	}
	if corr.GetRecipient() != "" && corr.GetBrand() != "" {
		if err := p.suppress(ctx, rep, corr); err != nil {
			return "", err
		}
	}
	if optOut {
		return OutcomeOptOut, nil
	}
	if err := p.count(ctx, rep.Fingerprint, corr); err != nil {
		return "", err
	}
	return OutcomeActed, nil
}

func (p *Processor) dedupTTL() time.Duration {
	if p.DedupTTL <= 0 {
		return 30 * 24 * time.Hour
	}
	return p.DedupTTL
}

var ourMessageID = regexp.MustCompile(`^<?([0-9a-f]{32})@([^>\s]+)>?$`)

// correlate ties the report to a message we sent: first by a VERP return
// path whose signature checks, then by our Message-ID in the reported
// message, then by its Feedback-ID (campaign:stream:brand:tenant), which
// identifies the campaign but not the recipient.
func (p *Processor) correlate(ctx context.Context, rep *arf.Report) (*mailwavev1.Correlation, *mailwavev1.MessageRecord, error) {
	corr := &mailwavev1.Correlation{Method: "none"}
	var id string
	var tok verp.Token
	if p.Signer != nil {
		for _, cand := range rep.SenderCandidates() {
			t, err := p.Signer.Parse(cand)
			if err == nil {
				id, tok = t.MessageID, t
				corr.Method, corr.Verified = "verp", true
				break
			}
		}
	}
	if id == "" {
		if m := ourMessageID.FindStringSubmatch(strings.ToLower(strings.TrimSpace(rep.Reported.MessageID))); m != nil {
			id = m[1]
			corr.Method = "message-id"
		}
	}
	var rec *mailwavev1.MessageRecord
	if id != "" && p.Messages != nil {
		e, err := p.Messages.Get(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, nil, fmt.Errorf("fblparser: message record %s: %w", id, err)
		default:
			r := &mailwavev1.MessageRecord{}
			if err := proto.Unmarshal(e.Value(), r); err != nil {
				p.log().Warn("fbl: undecodable message record", "message_id", id, "err", err.Error())
			} else {
				rec = r
			}
		}
	}
	switch {
	case rec != nil && corr.Method == "verp" && !tok.MatchesRecipient(rec.GetRecipient()):
		// The token commits to its recipient; a record that disagrees is
		// not the message the token names.
		rec = nil
	case rec != nil && corr.Method == "message-id" && !strings.EqualFold(rec.GetHeaderMessageId(), strings.Trim(strings.TrimSpace(rep.Reported.MessageID), "<>")):
		rec = nil
	}
	if rec != nil {
		corr.MessageId = rec.GetMessageId()
		corr.Tenant, corr.Brand = rec.GetTenant(), rec.GetBrand()
		corr.CampaignId, corr.MailStream = rec.GetCampaignId(), rec.GetMailStream()
		corr.Recipient = strings.ToLower(rec.GetRecipient())
		corr.SourceIp, corr.SendingDomain, corr.Provider = rec.GetSourceIp(), rec.GetSendingDomain(), rec.GetSite()
		return corr, rec, nil
	}
	corr.Verified = false
	if id != "" {
		corr.MessageId = id
	}
	// Feedback-ID: "campaign:stream:brand:tenant" as the planner writes it
	// ("none" when the message belongs to no campaign).
	if fid := rep.Reported.FeedbackID; len(fid.Identifiers) == 3 && fid.SenderID != "" {
		corr.CampaignId, corr.MailStream, corr.Brand, corr.Tenant = fid.Identifiers[0], fid.Identifiers[1], fid.Identifiers[2], fid.SenderID
		if corr.CampaignId == "none" {
			corr.CampaignId = ""
		}
		corr.Method = "feedback-id"
	}
	if r := rep.Recipient(); r != "" && corr.Tenant != "" {
		corr.Recipient = strings.ToLower(r)
	}
	if rep.SourceIP.IsValid() {
		corr.SourceIp = rep.SourceIP.String()
	}
	return corr, nil, nil
}

func (p *Processor) complaintReport(in *mailwavev1.InboundMessage, rep *arf.Report, corr *mailwavev1.Correlation, trusted bool) *mailwavev1.ComplaintReport {
	cr := &mailwavev1.ComplaintReport{
		Id:               stableID("report", rep.Fingerprint, in.GetId(), strconv.FormatBool(trusted)),
		InboundId:        in.GetId(),
		Correlation:      corr,
		FeedbackType:     rep.FeedbackType,
		UserAgent:        rep.UserAgent,
		OriginalMailFrom: rep.OriginalMailFrom,
		OriginalRcptTo:   rep.OriginalRcptTo,
		ReportedDomains:  rep.ReportedDomains,
		FeedbackId:       rep.Reported.FeedbackID.Raw,
		Trusted:          trusted,
		Fingerprint:      rep.Fingerprint,
		ReceivedAt:       in.GetReceivedAt(),
		Source:           in.GetSource(),
	}
	if trusted {
		// One report per fingerprint, whichever copy carried it.
		cr.Id = stableID("report", rep.Fingerprint)
	}
	if !rep.ArrivalDate.IsZero() {
		cr.ArrivalDate = timestamppb.New(rep.ArrivalDate)
	}
	if rep.SourceIP.IsValid() {
		cr.SourceIp = rep.SourceIP.String()
	}
	return cr
}

func (p *Processor) publishReport(ctx context.Context, cr *mailwavev1.ComplaintReport) error {
	_, err := p.Pub.Publish(ctx, mailwavev1.SubjectComplaintReport(cr.GetCorrelation().GetTenant()), cr, events.WithMsgID(cr.GetId()))
	return err
}

func (p *Processor) publishEvent(ctx context.Context, in *mailwavev1.InboundMessage, rep *arf.Report, corr *mailwavev1.Correlation, rec *mailwavev1.MessageRecord) error {
	occurred := in.GetReceivedAt()
	if !rep.ArrivalDate.IsZero() {
		occurred = timestamppb.New(rep.ArrivalDate)
	}
	if occurred == nil {
		occurred = timestamppb.New(p.now())
	}
	kind, reason, idKind := mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "complaint", "complained"
	if rep.FeedbackType == arf.FeedbackOptOut {
		kind, reason, idKind = mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, "unsubscribe", "unsubscribed"
	}
	ev := &mailwavev1.DeliveryEvent{
		EventId:       stableID(idKind, rep.Fingerprint),
		Kind:          kind,
		Origin:        mailwavev1.Origin_ORIGIN_FBL,
		MessageId:     corr.GetMessageId(),
		Tenant:        corr.GetTenant(),
		Brand:         corr.GetBrand(),
		MailStream:    corr.GetMailStream(),
		CampaignId:    corr.GetCampaignId(),
		Recipient:     corr.GetRecipient(),
		Reason:        reason,
		SourceIp:      corr.GetSourceIp(),
		SendingDomain: corr.GetSendingDomain(),
		Provider:      corr.GetProvider(),
		OccurredAt:    occurred,
		Detail:        "feedback report (" + rep.FeedbackType + ") via " + in.GetSource(),
		Metadata: map[string]string{
			"feedback_type": rep.FeedbackType,
			"fingerprint":   rep.Fingerprint,
			"inbound_id":    in.GetId(),
			"correlation":   corr.GetMethod(),
			"user_agent":    rep.UserAgent,
		},
	}
	if rec != nil {
		ev.RequestId, ev.CommunicationType, ev.Pool = rec.GetRequestId(), rec.GetCommunicationType(), rec.GetPool()
		ev.ExternalId, ev.CreatedAt = rec.GetExternalId(), rec.GetCreatedAt()
	}
	_, err := p.Pub.Publish(ctx, mailwavev1.SubjectEvent(ev.Kind, ev.Tenant), ev, events.WithMsgID(ev.EventId))
	return err
}

// suppress writes the brand-wide suppression; one already there (a hard
// bounce, a manual entry) is kept as it is.
func (p *Processor) suppress(ctx context.Context, rep *arf.Report, corr *mailwavev1.Correlation) error {
	reason := "complaint"
	if rep.FeedbackType == arf.FeedbackOptOut {
		reason = "unsubscribe"
	}
	s := &mailwavev1.Suppression{
		Address:   corr.GetRecipient(),
		Tenant:    corr.GetTenant(),
		Brand:     corr.GetBrand(),
		Scope:     mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND,
		Reason:    reason,
		Origin:    mailwavev1.Origin_ORIGIN_FBL,
		CreatedAt: timestamppb.New(p.now()),
		Evidence: map[string]string{
			"fingerprint":   rep.Fingerprint,
			"message_id":    corr.GetMessageId(),
			"feedback_type": rep.FeedbackType,
			"correlation":   corr.GetMethod(),
			"campaign_id":   corr.GetCampaignId(),
		},
	}
	b, err := proto.Marshal(s)
	if err != nil {
		return fmt.Errorf("fblparser: suppression: %w", err)
	}
	key := mailwavev1.SuppressionKey(s.Scope, s.Tenant, s.Brand, "", s.Address)
	if _, err := p.Suppressions.Create(ctx, key, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("fblparser: suppression %s: %w", key, err)
	}
	return nil
}

// claim remembers a fingerprint; it reports false when another inbound
// message carried the same report before. The same inbound message
// delivered again (a crash before its ack) claims it again, so that its
// unfinished effects are completed.
func (p *Processor) claim(ctx context.Context, fp, inboundID string) (bool, error) {
	ttl := p.dedupTTL()
	key := SeenKey(fp)
	ok, err := p.Redis.SetNX(ctx, key, inboundID, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("fblparser: dedup: %w", err)
	}
	if ok {
		return true, nil
	}
	v, err := p.Redis.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return p.claim(ctx, fp, inboundID)
	}
	if err != nil {
		return false, fmt.Errorf("fblparser: dedup: %w", err)
	}
	return v == inboundID, nil
}

func stableID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}
