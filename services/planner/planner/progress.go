package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// progress keeps each campaign's counters in Redis. The planner counts
// its own outcomes (accepted, suppressed, dropped) once they are stored;
// the others are counted from the EVENTS stream by the planner-events
// consumer: whichever replica gets an event counts it, and a redelivered
// event (a crash before its ack) or a request planned again is counted
// once, because every message remembers which counters it already
// added to (about 50 bytes per recipient, for MW_CAMPAIGN_TTL). The
// planner also records where planning stands (planned, held, waiting,
// refused) with the reason.
type progress struct {
	rdb redis.UniversalClient
	ttl time.Duration
	log interface {
		Warn(msg string, args ...any)
	}
}

// Planning states of a campaign.
const (
	statusPlanned = "planned"
	statusHeld    = "held"
	statusWaiting = "waiting"
	statusRefused = "refused"
)

// Counters, in the order the API shows them, each with the flag that marks
// a message as counted in it.
var counters = []struct{ name, flag string }{
	{"planned", "a"}, {"suppressed", "s"}, {"dropped", "x"}, {"sent", "t"}, {"delivered", "d"},
	{"deferred", "f"}, {"bounced", "b"}, {"complained", "c"}, {"unsubscribed", "u"}, {"expired", "e"},
}

func campaignKey(tenant, campaign string) string {
	return "mw:campaign:" + mailwavev1.KeyToken(tenant) + ":" + campaign
}

// countScript adds a message (ARGV[1]) to counters (pairs of flag and
// counter name from ARGV[3]) it was not added to before.
var countScript = redis.NewScript(`
local seen = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local added = ''
for i = 3, #ARGV, 2 do
  if not string.find(seen, ARGV[i], 1, true) then
    redis.call('HINCRBY', KEYS[1], ARGV[i+1], 1)
    added = added .. ARGV[i]
  end
end
if added ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], seen .. added)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return added
`)

// countersOf returns the counters an event adds to.
func countersOf(ev *mailwavev1.DeliveryEvent) []string {
	smtp := ev.GetOrigin() == mailwavev1.Origin_ORIGIN_SMTP
	switch ev.GetKind() {
	case mailwavev1.EventKind_EVENT_KIND_ACCEPTED:
		return []string{"planned"}
	case mailwavev1.EventKind_EVENT_KIND_SUPPRESSED:
		return []string{"suppressed"}
	case mailwavev1.EventKind_EVENT_KIND_DROPPED:
		return []string{"dropped"}
	case mailwavev1.EventKind_EVENT_KIND_DELIVERED:
		if smtp {
			return []string{"sent", "delivered"}
		}
		return []string{"delivered"}
	case mailwavev1.EventKind_EVENT_KIND_DEFERRED:
		if smtp {
			return []string{"sent", "deferred"}
		}
		return []string{"deferred"}
	case mailwavev1.EventKind_EVENT_KIND_BOUNCED:
		if smtp {
			return []string{"sent", "bounced"}
		}
		return []string{"bounced"}
	case mailwavev1.EventKind_EVENT_KIND_COMPLAINED:
		return []string{"complained"}
	case mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED:
		return []string{"unsubscribed"}
	case mailwavev1.EventKind_EVENT_KIND_EXPIRED:
		return []string{"expired"}
	}
	return nil
}

// tally is one message to add to counters of a campaign.
type tally struct {
	key    string // campaignKey
	member string // the message, as the seen hash names it
	names  []string
}

// tallyOf returns what ev adds to its campaign's counters; false when it
// has no campaign or counts in none.
func tallyOf(ev *mailwavev1.DeliveryEvent) (tally, bool) {
	names := countersOf(ev)
	if ev.GetCampaignId() == "" || len(names) == 0 {
		return tally{}, false
	}
	member := ev.GetMessageId()
	if member == "" {
		member = mailwavev1.AddressHash(ev.GetRecipient())
	}
	if len(member) > 16 {
		member = member[:16]
	}
	return tally{key: campaignKey(ev.GetTenant(), ev.GetCampaignId()), member: member, names: names}, true
}

func (pr *progress) args(t tally) []any {
	args := []any{t.member, pr.ttl.Milliseconds()}
	for _, n := range t.names {
		for _, c := range counters {
			if c.name == n {
				args = append(args, c.flag, n)
			}
		}
	}
	return args
}

// count adds ev to its campaign's counters.
func (pr *progress) count(ctx context.Context, ev *mailwavev1.DeliveryEvent) error {
	t, ok := tallyOf(ev)
	if !ok {
		return nil
	}
	return pr.countAll(ctx, []tally{t})
}

// countAll adds every tally in one round trip (a pipeline of script
// calls). Each message counts once in each counter, however often it is
// added.
func (pr *progress) countAll(ctx context.Context, ts []tally) error {
	if len(ts) == 0 {
		return nil
	}
	for try := 0; ; try++ {
		cmds := make([]*redis.Cmd, len(ts))
		_, err := pr.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, t := range ts {
				cmds[i] = countScript.EvalSha(ctx, p, []string{t.key, t.key + ":seen"}, pr.args(t)...)
			}
			return nil
		})
		if err == nil || errors.Is(err, redis.Nil) {
			return nil
		}
		// A script cache flushed by a Redis restart: load it, once.
		if try == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := countScript.Load(ctx, pr.rdb).Err(); err != nil {
				return fmt.Errorf("planner: campaign progress: %w", err)
			}
			continue
		}
		return fmt.Errorf("planner: campaign progress: %w", err)
	}
}

// setStatus records where planning of req's campaign stands. Progress is
// informative: a failure to record it is logged, not returned.
func (pr *progress) setStatus(ctx context.Context, req *mailwavev1.SendRequest, status, reason string, now, next time.Time) {
	if req.GetCampaignId() == "" {
		return
	}
	key := campaignKey(req.GetTenant(), req.GetCampaignId())
	fields := []any{"status", status, "reason", reason, "updated_at", now.UTC().Format(time.RFC3339Nano), "request_id", req.GetIdempotencyKey()}
	if next.IsZero() {
		fields = append(fields, "next_check", "")
	} else {
		fields = append(fields, "next_check", next.UTC().Format(time.RFC3339))
	}
	pipe := pr.rdb.TxPipeline()
	pipe.HSet(ctx, key, fields...)
	pipe.PExpire(ctx, key, pr.ttl)
	if _, err := pipe.Exec(ctx); err != nil && pr.log != nil {
		pr.log.Warn("campaign status not recorded", "campaign", req.GetCampaignId(), "err", err)
	}
}

// setRecipients records the size of the campaign's audience.
func (pr *progress) setRecipients(ctx context.Context, req *mailwavev1.SendRequest, n int) {
	if req.GetCampaignId() == "" {
		return
	}
	if err := pr.rdb.HSet(ctx, campaignKey(req.GetTenant(), req.GetCampaignId()), "recipients", n).Err(); err != nil && pr.log != nil {
		pr.log.Warn("campaign size not recorded", "campaign", req.GetCampaignId(), "err", err)
	}
}

// Campaign is the answer of GET /campaigns/{tenant}/{id}.
type Campaign struct {
	Tenant   string `json:"tenant"`
	Campaign string `json:"campaign"`
	// Status is planned, held, waiting or refused; Reason says why for
	// the last three.
	Status    string `json:"status"`
	Reason    string `json:"reason,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Recipients is the audience's size, once a pass read all of it.
	Recipients int64            `json:"recipients,omitempty"`
	Counts     map[string]int64 `json:"counts"`
	UpdatedAt  string           `json:"updated_at,omitempty"`
	NextCheck  string           `json:"next_check,omitempty"`
}

// get returns a campaign's progress, or nil when nothing is known of it.
func (pr *progress) get(ctx context.Context, tenant, campaign string) (*Campaign, error) {
	h, err := pr.rdb.HGetAll(ctx, campaignKey(tenant, campaign)).Result()
	if err != nil {
		return nil, fmt.Errorf("planner: campaign progress: %w", err)
	}
	if len(h) == 0 {
		return nil, nil
	}
	c := &Campaign{Tenant: tenant, Campaign: campaign, Status: h["status"], Reason: h["reason"], RequestID: h["request_id"],
		UpdatedAt: h["updated_at"], NextCheck: h["next_check"], Counts: map[string]int64{}}
	c.Recipients, _ = strconv.ParseInt(h["recipients"], 10, 64)
	for _, k := range counters {
		c.Counts[k.name], _ = strconv.ParseInt(h[k.name], 10, 64)
	}
	return c, nil
}

// serveCampaign answers GET /campaigns/{tenant}/{id}.
func (p *planner) serveCampaign(w http.ResponseWriter, req *http.Request) {
	c, err := p.progress.get(req.Context(), req.PathValue("tenant"), req.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if c == nil {
		http.Error(w, "no such campaign", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// handleEvent is the planner-events consumer: preference updates first
// (an unsubscribe or a complaint suppresses the recipient for every later
// send), then the campaign's counters.
func (p *planner) handleEvent(ctx context.Context, m *events.Msg[*mailwavev1.DeliveryEvent]) error {
	ev := m.Payload
	switch ev.GetKind() {
	case mailwavev1.EventKind_EVENT_KIND_DEFERRED:
		// A DSN's deferral after acceptance asks for a new attempt; the
		// sender schedules its own retries.
		if p.replan != nil {
			if err := p.replan.handle(ctx, m); err != nil {
				return err
			}
		}
	case mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED:
		if err := p.suppressFromEvent(ctx, ev, "unsubscribe"); err != nil {
			return err
		}
	case mailwavev1.EventKind_EVENT_KIND_COMPLAINED:
		// fbl-parser suppresses complainers too; whoever writes first
		// wins and the other keeps it.
		if err := p.suppressFromEvent(ctx, ev, "complaint"); err != nil {
			return err
		}
	}
	return p.progress.count(ctx, ev)
}

// suppressFromEvent writes the suppression an unsubscribed or complained
// event asks for: from the event's communication type when an unsubscribe
// names one, else from the whole brand.
func (p *planner) suppressFromEvent(ctx context.Context, ev *mailwavev1.DeliveryEvent, reason string) error {
	if ev.GetRecipient() == "" || ev.GetTenant() == "" || ev.GetBrand() == "" {
		p.log.Warn("preference event without recipient, tenant or brand; ignored", "event_id", ev.GetEventId(), "kind", ev.GetKind().String())
		return nil
	}
	addr, ok := parseAddress(ev.GetRecipient())
	if !ok {
		p.log.Warn("preference event with an invalid recipient; ignored", "event_id", ev.GetEventId())
		return nil
	}
	scope := mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND
	ct := ""
	if reason == "unsubscribe" && ev.GetCommunicationType() != "" {
		scope, ct = mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, ev.GetCommunicationType()
	}
	sup := &mailwavev1.Suppression{
		Address: addr, Tenant: ev.GetTenant(), Brand: ev.GetBrand(), Scope: scope, CommunicationType: ct,
		Reason: reason, Origin: ev.GetOrigin(), CreatedAt: timestamppb.New(p.now()),
		Evidence: map[string]string{"event_id": ev.GetEventId(), "message_id": ev.GetMessageId(), "campaign_id": ev.GetCampaignId()},
	}
	return p.writeSuppression(ctx, sup)
}

// writeSuppression stores sup unless a suppression of the same key is
// there already (the first reason is kept), and mirrors it at once.
func (p *planner) writeSuppression(ctx context.Context, sup *mailwavev1.Suppression) error {
	key := mailwavev1.SuppressionKey(sup.GetScope(), sup.GetTenant(), sup.GetBrand(), sup.GetCommunicationType(), sup.GetAddress())
	b, err := proto.Marshal(sup)
	if err != nil {
		return fmt.Errorf("planner: suppression: %w", err)
	}
	if _, err := p.suppress.kv.Create(ctx, key, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("planner: suppression %s: %w", key, err)
	}
	p.suppress.put(key, sup)
	return nil
}
