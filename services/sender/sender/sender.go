package sender

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/batch"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/response"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/shaping"
	"github.com/mailwave/mailwave/pkg/smtpclient"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Run runs the sender until ctx is cancelled, then drains: it stops
// fetching, lets messages in an SMTP session finish, and hands the rest
// back to the stream.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	if cfg.HeloName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("sender: host name for EHLO: %w", err)
		}
		cfg.HeloName = h
	}
	return service.Run(ctx, "sender", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		s, err := newSender(cfg, rt, log)
		if err != nil {
			return nil, nil, err
		}
		c := &events.Consumer[*mailwavev1.DispatchMessage]{
			JS: rt.JS, Stream: mailwavev1.StreamDispatch, Name: mailwavev1.ConsumerSender,
			New:     func() *mailwavev1.DispatchMessage { return &mailwavev1.DispatchMessage{} },
			Handle:  s.handle,
			Workers: cfg.Workers,
			Logger:  log,
			OnDead:  rt.OnDead(mailwavev1.StreamDispatch),
		}
		// Transactional dispatches have their own consumer and workers, so
		// they never wait behind a campaign's.
		tx := *c
		tx.Name = mailwavev1.ConsumerSenderTransactional
		if err := s.policy.watch(ctx, rt.JS); err != nil {
			return nil, nil, fmt.Errorf("sender: watch policies: %w", err)
		}
		if err := s.policy.waitReady(ctx); err != nil {
			return nil, nil, err
		}
		return nil, func(ctx context.Context) error {
			// The keeper renews connection slots until the last session
			// is closed, drain included.
			keepCtx, stopKeeping := context.WithCancel(context.WithoutCancel(ctx))
			defer stopKeeping()
			go s.keeper.Run(keepCtx)
			go s.allow.Run(keepCtx, 5*time.Second)
			go s.marks.Run(keepCtx, 5*time.Second)
			go s.redeems.Run(keepCtx, 5*time.Second)
			defer s.sessions.closeAll()
			go s.sessions.reapIdle(ctx, cfg.IdleTimeout)
			go s.sessions.yield(ctx, yieldEvery, s.slotsWanted)
			go s.signing.reloadEvery(ctx, cfg.DKIMReload)
			// Either consumer failing stops the other, which drains.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			txDone := make(chan error, 1)
			go func() {
				err := tx.Run(ctx)
				cancel()
				txDone <- err
			}()
			err := c.Run(ctx)
			cancel()
			return errors.Join(err, <-txDone)
		}, nil
	})
}

type sender struct {
	cfg      Config
	rt       *service.Runtime
	log      *slog.Logger
	routes   *mx.Resolver
	rules    *response.Rules
	sessions *sessions
	policy   *policies
	now      func() time.Time

	attempts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	held     *prometheus.CounterVec

	shaping     *shaping.Policy
	limiter     *ratelimit.Limiter
	keeper      *ratelimit.Keeper
	shapedCount *prometheus.CounterVec

	// allow and marks batch the Redis calls of every message: its rate
	// check and, once delivered, its delivered marker.
	allow *batch.Batcher[ratelimit.Request, ratelimit.Result]
	marks *batch.Batcher[mark, struct{}]
	// redeems ends the held rate slots of messages about to be sent.
	redeems *batch.Batcher[ratelimit.Redemption, struct{}]

	signing    *signing
	relays     *relays
	requireTLS map[string]bool
	socks      map[netip.Addr]string
}

func newSender(cfg Config, rt *service.Runtime, log *slog.Logger) (*sender, error) {
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_sender_attempts_total",
		Help: "Delivery attempts by outcome, provider and source IP.",
	}, []string{"outcome", "provider", "source_ip"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailwave_sender_smtp_seconds",
		Help:    "Time of one SMTP transaction, from session to final reply.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"provider"})
	held := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_sender_held_total",
		Help: "Messages held back by a pause policy, by provider.",
	}, []string{"provider"})
	shapedCount := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailwave_sender_shaped_total",
		Help: "Times a message was set aside to wait for a limit, by provider, source IP and limit (rate, connections, policy, unavailable).",
	}, []string{"provider", "source_ip", "limit"})
	rt.Metrics.MustRegister(attempts, latency, held, shapedCount)
	var err error
	limiter := ratelimit.New(rt.Redis, ratelimit.Options{})
	keeper, err := ratelimit.NewKeeper(limiter, cmp.Or(cfg.ConnLeaseTTL, defaultConnLeaseTTL))
	if err != nil {
		return nil, fmt.Errorf("sender: MW_CONN_LEASE_TTL: %w", err)
	}
	sign, err := newSigning(cfg, log, rt.Metrics)
	if err != nil {
		return nil, err
	}
	var rel *relays
	if cfg.RelayRoutes != "" {
		if rel, err = loadRelays(cfg.RelayRoutes, os.Getenv); err != nil {
			return nil, fmt.Errorf("sender: MW_RELAY_ROUTES: %w", err)
		}
	}
	socks, err := parseSOCKS(cfg.SOCKSProxies, cfg.SOCKSUsername, cfg.SOCKSPassword)
	if err != nil {
		return nil, fmt.Errorf("sender: MW_SOCKS_PROXIES: %w", err)
	}
	requireTLS := map[string]bool{}
	for _, d := range cfg.RequireTLSDomains {
		requireTLS[normDomain(d)] = true
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	pol := shaping.Default()
	if cfg.ShapingFile != "" {
		if pol, err = shaping.Load(cfg.ShapingFile); err != nil {
			return nil, fmt.Errorf("sender: MW_SHAPING_FILE: %w", err)
		}
	}
	routes, err := mx.NewResolver(cfg.DNSServer, mx.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("sender: MW_DNS_SERVER: %w", err)
	}
	rules := response.Default()
	if cfg.ResponseRules != "" {
		if rules, err = response.Load(cfg.ResponseRules); err != nil {
			return nil, fmt.Errorf("sender: MW_RESPONSE_RULES: %w", err)
		}
	}
	// A millisecond of linger before a rate check and two before a
	// delivered marker (which only holds up the ack) let a busy sender
	// make one Redis round trip for several messages.
	marks := batch.New(256, func(ctx context.Context, ms []mark) ([]struct{}, error) {
		_, err := rt.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range ms {
				p.Set(ctx, m.key, m.attempt, m.ttl)
			}
			return nil
		})
		return make([]struct{}, len(ms)), err
	}).WithLinger(2 * time.Millisecond)
	return &sender{
		allow: batch.New(256, limiter.AllowBatch).WithLinger(time.Millisecond),
		redeems: batch.New(256, func(ctx context.Context, rs []ratelimit.Redemption) ([]struct{}, error) {
			return make([]struct{}, len(rs)), limiter.RedeemBatch(ctx, rs)
		}).WithLinger(time.Millisecond),
		marks:       marks,
		shaping:     pol,
		limiter:     limiter,
		keeper:      keeper,
		signing:     sign,
		relays:      rel,
		requireTLS:  requireTLS,
		socks:       socks,
		shapedCount: shapedCount,
		rules:       rules,
		cfg:         cfg,
		rt:          rt,
		log:         log,
		routes:      routes,
		sessions:    newSessions(cfg.MaxPerConnection),
		policy:      newPolicies(log, rt.Metrics),
		now:         now,
		attempts:    attempts,
		latency:     latency,
		held:        held,
	}, nil
}

// outcome is what one attempt decided.
type outcome struct {
	kind     mailwavev1.EventKind
	code     int
	enhanced string
	text     string
	phase    string
	class    mailwavev1.BounceClass
	reason   string
	remoteMX string
	remoteIP string
	// sourceIP is the address the attempt was sent from (a fallback when
	// a policy paused the routed one).
	sourceIP string
	provider string
	tls      bool
	signal   mailwavev1.Signal
	// retry is the rules' interval before the next attempt; 0 leaves it
	// to the backoff.
	retry time.Duration
	// rule names the response rule that decided.
	rule string
	// paused is set when a policy holds the message: nothing was sent and
	// no attempt is counted.
	paused *mailwavev1.PolicyChange
	// shaped is set when a rate or connection limit refused the message
	// for now: nothing was sent, no attempt is counted, and it waits this
	// long.
	shaped time.Duration
	// reserved says the wait is a reserved slot (pkg/ratelimit): the
	// message must come back exactly then, and will pass.
	reserved bool
	// limit says what held it (limitRate, limitConnections, …).
	limit string
}

func (s *sender) handle(ctx context.Context, m *events.Msg[*mailwavev1.DispatchMessage]) error {
	d := m.Payload
	if d.GetMessageId() == "" || d.GetRecipient() == "" || len(d.GetData()) == 0 {
		return fmt.Errorf("%w: dispatch needs message_id, recipient and data", events.ErrMalformed)
	}
	now := s.now()
	attempt := max(d.GetAttempt(), 1)
	if exp := d.GetExpiresAt(); exp != nil && now.After(exp.AsTime()) {
		o := outcome{kind: mailwavev1.EventKind_EVENT_KIND_EXPIRED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
			reason: "expired", text: "max age passed without delivery"}
		if d.GetLastReason() != "" {
			// Report why it could not be delivered: "mailboxfull" after
			// days of 552 answers says more than "expired".
			o.reason, o.code, o.enhanced = d.GetLastReason(), int(d.GetLastSmtpCode()), d.GetLastEnhancedCode()
			o.text = "max age passed without delivery; last answer: " + d.GetLastResponse()
		}
		return s.publish(ctx, d, attempt, o, time.Time{})
	}
	if nb := d.GetNotBefore(); nb != nil && nb.AsTime().After(now) {
		// Not due yet (a wave, a scheduled send): park it as a schedule so
		// it holds no consumer slot meanwhile.
		return s.schedule(ctx, m.Subject, d, nb.AsTime())
	}
	// Only a copy can have been delivered already: a redelivery (a crash
	// between the 250 and the ack) or a retry (whose first attempt may
	// have been redelivered and delivered meanwhile). A first attempt on
	// its first delivery skips the round trip.
	if m.Delivered > 1 || attempt > 1 {
		at, done, err := s.alreadyDelivered(ctx, d.GetMessageId())
		if err != nil {
			return err
		}
		if done {
			// A copy of a message that was delivered: never send it twice.
			// The replica that delivered it may have died before its
			// event went out: publish it again under the same id, which
			// the stream drops when the first one made it.
			return s.publish(ctx, d, at, outcome{kind: mailwavev1.EventKind_EVENT_KIND_DELIVERED, code: 250, phase: "dot",
				text: "delivered; a later copy was not sent", provider: d.GetRouting().GetSite()}, time.Time{})
		}
	}
	start := time.Now()
	stopProgress := s.keepInProgress(m)
	o := s.attempt(ctx, d)
	stopProgress()
	if o.paused != nil {
		s.held.WithLabelValues(o.provider).Inc()
		return s.schedule(ctx, m.Subject, d, now.Add(s.pauseRecheck(o.paused, now)))
	}
	if o.shaped > 0 {
		s.shapedCount.WithLabelValues(o.provider, o.sourceIP, o.limit).Inc()
		if o.reserved || o.shaped < 2*time.Second {
			// A reserved slot (at most the horizon away) must be kept to
			// the millisecond, and a short wait is cheaper as a delayed
			// redelivery than as a schedule (one-second resolution).
			return events.Retry(o.shaped, errShapedWait)
		}
		// The turn is beyond the horizon: come back when it is half a
		// horizon away, spread a little so a backlog does not return as
		// one herd, and reserve then.
		wait := max(o.shaped-s.cfg.reserveHorizon()/2, time.Second)
		wait += rand.N(wait/10 + 1)
		return s.schedule(ctx, m.Subject, d, now.Add(wait))
	}
	s.latency.WithLabelValues(o.provider).Observe(time.Since(start).Seconds())
	s.attempts.WithLabelValues(eventWord(o.kind), o.provider, o.sourceIP).Inc()
	if o.kind == mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		s.markDelivered(ctx, d, now)
	}
	if o.kind != mailwavev1.EventKind_EVENT_KIND_DEFERRED {
		return s.publish(ctx, d, attempt, o, time.Time{})
	}
	delay := o.retry
	if delay == 0 {
		delay = s.shaping.RetryAfter(o.reason, int(attempt))
	}
	delay = min(delay, s.cfg.RetryMax)
	next := now.Add(delay)
	if exp := d.GetExpiresAt(); exp != nil && next.After(exp.AsTime()) {
		// The next attempt would come after the max age: wake it at the
		// deadline, when the expiry check ends it with the last reason.
		next = exp.AsTime().Add(time.Second)
	}
	if err := s.publish(ctx, d, attempt, o, next); err != nil {
		return err
	}
	retry := proto.CloneOf(d)
	retry.Attempt = attempt + 1
	retry.LastReason, retry.LastSmtpCode, retry.LastEnhancedCode, retry.LastResponse = o.reason, int32(o.code), o.enhanced, o.text
	// The retry is due at next by the sender's clock, whenever the
	// schedule brings it back.
	retry.NotBefore = timestamppb.New(next)
	return s.schedule(ctx, m.Subject, retry, next)
}

// keepInProgress tells JetStream, while an SMTP conversation runs, that the
// message is being worked on, so a slow server (RFC 5321 allows 10 minutes
// for the final reply) does not get it redelivered to another replica.
func (s *sender) keepInProgress(m *events.Msg[*mailwavev1.DispatchMessage]) (stop func()) {
	every := 40 * time.Second
	if s.cfg.AckWait > 0 {
		every = s.cfg.AckWait / 3
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// schedule parks d until at as a JetStream message schedule on its retry
// subject; the server moves it back to subject then. The schedule id is
// unique per message and attempt, so a handler that runs twice (after a
// crash) schedules once. Returning nil acknowledges the current copy.
func (s *sender) schedule(ctx context.Context, subject string, d *mailwavev1.DispatchMessage, at time.Time) error {
	// at is on the sender's clock; the schedule fires on the server's.
	wait := at.Sub(s.now())
	if s.cfg.MaxPark > 0 && wait > s.cfg.MaxPark {
		// An injected clock: look again soon; NotBefore parks it again
		// until the clock says it is due.
		wait = s.cfg.MaxPark
	}
	at = time.Now().Add(wait)
	// Schedules have one-second resolution: round up so nothing fires early.
	at = at.Truncate(time.Second).Add(time.Second)
	_, err := s.rt.Pub.Publish(ctx, mailwavev1.SubjectRetry(d.GetMessageId()), d,
		events.WithMsgID(fmt.Sprintf("%s:sched:%d:%d", d.GetMessageId(), d.GetAttempt(), at.Unix())),
		events.WithHeader(mailwavev1.HeaderSchedule, "@at "+at.UTC().Format(time.RFC3339)),
		events.WithHeader(mailwavev1.HeaderScheduleTarget, subject))
	return err
}

// shapingKey names the budget of a source IP towards a provider; an empty
// source (the system's choice) is one budget of its own.
func shapingKey(sourceIP, provider string) string {
	if sourceIP == "" {
		sourceIP = "default"
	}
	return sourceIP + "|" + provider
}

// yieldEvery is how often a sender looks whether another replica waits
// for a connection slot one of its idle sessions holds.
const yieldEvery = 250 * time.Millisecond

// wantedKey says, for two seconds, that a replica waits for a connection
// slot of the gate key.
func wantedKey(slot string) string { return "mw:conn-wanted:" + slot }

// wantSlot tells the other replicas that this one found every connection
// slot of the gate key slot taken.
func (s *sender) wantSlot(ctx context.Context, slot string) {
	if err := s.rt.Redis.Set(ctx, wantedKey(slot), 1, 2*time.Second).Err(); err != nil {
		s.log.Warn("connection wish not stored", "err", err)
	}
}

// slotsWanted reports which of the slots another replica waits for, and
// clears each wish it reports, so that one replica answers it.
func (s *sender) slotsWanted(ctx context.Context, slots []string) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(slots))
	_, err := s.rt.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, slot := range slots {
			cmds[i] = p.Del(ctx, wantedKey(slot))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(slots))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}

// deliveredKey marks a delivered message in Redis until its max age has
// passed, so no copy of it is ever sent again.
func deliveredKey(id string) string { return "mw:delivered:" + id }

// mark is one delivered marker to set.
type mark struct {
	key     string
	attempt int32
	ttl     time.Duration
}

// alreadyDelivered reports whether the message was delivered, and by
// which attempt.
func (s *sender) alreadyDelivered(ctx context.Context, id string) (int32, bool, error) {
	v, err := s.rt.Redis.Get(ctx, deliveredKey(id)).Int()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("sender: delivered marker: %w", err)
	}
	return int32(max(v, 1)), true, nil
}

func (s *sender) markDelivered(ctx context.Context, d *mailwavev1.DispatchMessage, now time.Time) {
	ttl := 24 * time.Hour
	if exp := d.GetExpiresAt(); exp != nil {
		ttl = max(ttl, ttl+exp.AsTime().Sub(now))
	}
	if _, err := s.marks.Do(ctx, mark{key: deliveredKey(d.GetMessageId()), attempt: max(d.GetAttempt(), 1), ttl: ttl}); err != nil {
		s.log.Warn("delivered marker not stored", "message_id", d.GetMessageId(), "err", err)
	}
}

// pauseRecheck is how long a paused message waits before it is looked at
// again: until the pause expires, but at most the configured recheck.
func (s *sender) pauseRecheck(pc *mailwavev1.PolicyChange, now time.Time) time.Duration {
	d := s.cfg.PauseRecheck
	if exp := pc.GetExpiresAt(); exp != nil {
		if until := exp.AsTime().Sub(now); until > 0 && until < d {
			d = until
		}
	}
	return d
}

// pickSource chooses the address to send d from: the routed source IP,
// or, when a policy pauses it, the first of the pool's fallback sources
// that no policy pauses. When every one is paused it returns the routed
// source and the pause that holds it.
func (s *sender) pickSource(d *mailwavev1.DispatchMessage, provider string, now time.Time) (*mailwavev1.SourceAddress, decision) {
	r := d.GetRouting()
	primary := &mailwavev1.SourceAddress{Ip: r.GetSourceIp(), HeloName: r.GetHeloName()}
	dec := s.policy.decide(d, primary.GetIp(), provider, now)
	if dec.paused == nil {
		return primary, dec
	}
	for _, alt := range r.GetFallbackSources() {
		if alt.GetIp() == "" || alt.GetIp() == primary.GetIp() {
			continue
		}
		if ad := s.policy.decide(d, alt.GetIp(), provider, now); ad.paused == nil {
			return alt, ad
		}
	}
	return primary, dec
}

// target is one server an attempt may go to: an MX address, or a relay
// route's smarthost.
type target struct {
	key        sessionKey
	serverName string // MX or smarthost name: SNI, certificate, events
	remoteIP   string
	dialer     func() *smtpclient.Dialer
	// connKey is the connection budget the target's sessions count
	// against, within the message budget of the source and provider.
	connKey string
	// failover lists the phases whose failure passes to the next target
	// rather than ending the attempt.
	failover map[string]bool
}

// An MX host that cannot be reached, greets with a refusal, or cannot
// give the TLS a destination requires passes to the next MX (RFC 5321
// §5.1); an answer after that is the destination's.
var mxFailover = map[string]bool{"connect": true, "greeting": true, "starttls": true}

// A smarthost that is down or refuses us before MAIL (its greeting, TLS or
// our credentials) passes to the route's next smarthost.
var relayFailover = map[string]bool{"connect": true, "greeting": true, "ehlo": true, "starttls": true, "auth": true}

// attempt makes one delivery attempt: through a relay route when one is
// chosen, else through the MX hosts of the recipient's domain in
// preference order, each target tried until one answers for the message.
func (s *sender) attempt(ctx context.Context, d *mailwavev1.DispatchMessage) outcome {
	domain := d.GetRouting().GetRecipientDomain()
	if domain == "" {
		domain = domainOf(d.GetRecipient())
	}
	relay, err := s.relays.pick(d.GetRouting().GetRelayRoute(), d.GetTenant(), domain)
	if err != nil {
		// The planner names a route this replica does not know: a
		// configuration mismatch the operator fixes; the message waits.
		return outcome{kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
			reason: "systemerror", phase: "route", text: err.Error(), provider: d.GetRouting().GetRelayRoute()}
	}
	var route *mx.Route
	provider := ""
	if relay != nil {
		provider = relay.name
	} else {
		route, err = s.routes.Route(ctx, domain)
		if err != nil {
			o := outcome{provider: domain, phase: "dns", text: err.Error()}
			switch {
			case errors.Is(err, mx.ErrNullMX):
				o.kind, o.class, o.reason, o.code, o.enhanced = mailwavev1.EventKind_EVENT_KIND_BOUNCED, mailwavev1.BounceClass_BOUNCE_CLASS_HARD, "notaccept", 556, "5.1.10"
			case errors.Is(err, mx.ErrNoSuchDomain):
				o.kind, o.class, o.reason, o.code, o.enhanced = mailwavev1.EventKind_EVENT_KIND_BOUNCED, mailwavev1.BounceClass_BOUNCE_CLASS_HARD, "hostunknown", 550, "5.1.2"
			default:
				o.kind, o.class, o.reason = mailwavev1.EventKind_EVENT_KIND_DEFERRED, mailwavev1.BounceClass_BOUNCE_CLASS_SOFT, "networkerror"
			}
			return o
		}
		provider = route.Provider
	}
	src, dec := s.pickSource(d, provider, s.now())
	if dec.paused != nil {
		return outcome{paused: dec.paused, provider: provider, sourceIP: src.GetIp()}
	}
	// DKIM keys are looked up before anything is spent on the message: a
	// message that waits for its key takes no rate token.
	plan := s.signing.plan(d)
	if plan.stop != nil {
		o := *plan.stop
		o.provider, o.sourceIP = provider, src.GetIp()
		return o
	}
	// Shaping: the limits of this source IP towards this provider (and
	// tenant), scaled by any throttle in force, held across every replica
	// in Redis. A refusal waits without an attempt being counted.
	lim := s.shaping.Limits(provider, src.GetIp(), d.GetTenant())
	if dec.pinPerHour > 0 {
		lim = lim.Pin(dec.pinPerHour)
	}
	if dec.factor < 1 {
		lim = lim.Scale(dec.factor)
	}
	if lim.Paused {
		return outcome{shaped: s.cfg.PauseRecheck, limit: limitPolicy, provider: provider, sourceIP: src.GetIp()}
	}
	budget := shapingKey(src.GetIp(), provider)
	// The message takes its rate slot, or reserves the next one and comes
	// back exactly then (pkg/ratelimit reservations), so a backlog waits
	// parked instead of asking at every free slot. The slot stays its own
	// until a connection is in hand: a message that finds none free waits
	// for one without paying again. A slot taken at once is recorded only
	// then (Lazy, then Hold): most messages find a session and cost one
	// call to Redis.
	key := "msg:" + budget
	res, err := s.allow.Do(ctx, ratelimit.Request{Key: key, N: 1, Windows: lim.MessageWindows(),
		Reservation: d.GetMessageId(), Horizon: s.cfg.reserveHorizon(), Lazy: true})
	if err != nil {
		s.log.Warn("rate limit unavailable", "err", err)
		return outcome{shaped: time.Second, limit: limitUnavailable, provider: provider, sourceIP: src.GetIp()}
	}
	if !res.Allowed {
		return outcome{shaped: res.RetryAfter, reserved: res.Reserved, limit: limitRate, provider: provider, sourceIP: src.GetIp()}
	}
	data, stop := s.signing.sign(plan, d.GetData())
	if stop != nil {
		o := *stop
		o.provider, o.sourceIP = provider, src.GetIp()
		return o
	}
	used := false
	redeem := func() error {
		if used {
			return nil
		}
		if res.Held {
			if _, err := s.redeems.Do(ctx, ratelimit.Redemption{Key: key, ID: d.GetMessageId()}); err != nil {
				s.log.Warn("rate reservation not redeemed", "err", err)
				return &shapedError{after: time.Second, limit: limitUnavailable}
			}
		}
		used = true
		return nil
	}
	// hold keeps a slot paid for at once when no connection was free.
	hold := func() {
		if used || res.Held {
			return
		}
		if err := s.limiter.Hold(ctx, key, d.GetMessageId(), s.cfg.reserveHorizon()); err != nil {
			s.log.Warn("rate slot not held: the message pays again", "err", err)
		}
	}
	targets := s.targets(src, relay, route, s.requireTLS[normDomain(domain)])
	last := outcome{
		kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, class: mailwavev1.BounceClass_BOUNCE_CLASS_SOFT,
		reason: "networkerror", provider: provider, text: "no MX host reachable", phase: "connect",
		sourceIP: src.GetIp(),
	}
	if relay != nil {
		last.text = "no smarthost of relay route " + relay.name + " reachable"
	}
	for _, t := range targets {
		gate := &connGate{limiter: s.limiter, keeper: s.keeper, key: budget + t.connKey, limits: lim, want: s.wantSlot}
		res, err := s.sessions.send(ctx, t.key, gate, t.dialer, t.serverName, d.GetReturnPath(), d.GetRecipient(), data, redeem)
		var shaped *shapedError
		if errors.As(err, &shaped) {
			hold()
			return outcome{shaped: shaped.after, limit: shaped.limit, provider: provider, sourceIP: src.GetIp()}
		}
		o := classify(s.rules, response.Answer{Provider: provider, SendingDomain: d.GetRouting().GetSendingDomain(),
			RecipientDomain: domain}, res, err)
		o.remoteMX, o.remoteIP, o.provider, o.sourceIP = t.serverName, t.remoteIP, provider, src.GetIp()
		if !t.failover[o.phase] {
			return o
		}
		last = o
	}
	return last
}

// targets lists where an attempt from src may go, in order: the relay
// route's smarthosts, or every address of every MX host.
func (s *sender) targets(src *mailwavev1.SourceAddress, relay *relayRoute, route *mx.Route, requireTLS bool) []target {
	var source netip.Addr
	if ip := src.GetIp(); ip != "" {
		source, _ = netip.ParseAddr(ip)
	}
	base := smtpclient.Dialer{HelloName: cmp.Or(src.GetHeloName(), s.cfg.HeloName), LocalAddr: source, Logger: s.log}
	if proxy, ok := s.socks[source]; ok {
		// The proxy owns the source address (how a pod reaches a
		// dedicated IP): connect through it, bound to nothing.
		base.SOCKS5, base.LocalAddr = proxy, netip.Addr{}
	}
	var out []target
	if relay != nil {
		for _, h := range relay.hosts {
			dl := relay.dialer(h, base, requireTLS)
			out = append(out, target{
				key:        sessionKey{source: source, addr: h.addr, route: relay.name},
				serverName: h.host, remoteIP: h.addr, failover: relayFailover,
				// Each smarthost is its own provider's server: connecting
				// to one that is down spends none of the next one's
				// connection budget.
				connKey: "|" + h.addr,
				dialer:  func() *smtpclient.Dialer { return dl },
			})
		}
		return out
	}
	for _, host := range route.Hosts {
		for _, ip := range host.Addrs {
			dl := base
			dl.RequireTLS = requireTLS
			out = append(out, target{
				key:        sessionKey{source: source, addr: net.JoinHostPort(ip.String(), strconv.Itoa(s.cfg.SMTPPort))},
				serverName: host.Name, remoteIP: ip.String(), failover: mxFailover,
				dialer: func() *smtpclient.Dialer { return &dl },
			})
		}
	}
	return out
}

func (s *sender) publish(ctx context.Context, d *mailwavev1.DispatchMessage, attempt int32, o outcome, next time.Time) error {
	r := d.GetRouting()
	ev := &mailwavev1.DeliveryEvent{
		EventId:           events.NewID(),
		Kind:              o.kind,
		Origin:            mailwavev1.Origin_ORIGIN_SMTP,
		MessageId:         d.GetMessageId(),
		RequestId:         d.GetRequestId(),
		Tenant:            d.GetTenant(),
		Brand:             d.GetBrand(),
		MailStream:        d.GetMailStream(),
		CommunicationType: d.GetCommunicationType(),
		CampaignId:        d.GetCampaignId(),
		Recipient:         d.GetRecipient(),
		SmtpCode:          int32(o.code),
		EnhancedCode:      o.enhanced,
		Response:          o.text,
		Reason:            o.reason,
		BounceClass:       o.class,
		Phase:             o.phase,
		RemoteMx:          o.remoteMX,
		RemoteIp:          o.remoteIP,
		SourceIp:          cmp.Or(o.sourceIP, r.GetSourceIp()),
		Pool:              r.GetPool(),
		SendingDomain:     r.GetSendingDomain(),
		Provider:          o.provider,
		Attempt:           attempt,
		OccurredAt:        timestamppb.New(s.now()),
		CreatedAt:         d.GetCreatedAt(),
		Tls:               o.tls,
		Signal:            o.signal,
		Metadata:          d.GetMetadata(),
		ExternalId:        d.GetMetadata()["external_id"],
	}
	if o.kind == mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		ev.BounceClass = mailwavev1.BounceClass_BOUNCE_CLASS_UNSPECIFIED
	}
	if o.rule != "" {
		ev.Detail = "rule " + o.rule
	}
	if !next.IsZero() {
		ev.NextAttemptAt = timestamppb.New(next)
	}
	msgID := d.GetMessageId() + ":" + eventWord(o.kind) + ":" + strconv.Itoa(int(attempt))
	_, err := s.rt.Pub.Publish(ctx, mailwavev1.SubjectEvent(o.kind, d.GetTenant()), ev, events.WithMsgID(msgID))
	return err
}

func eventWord(k mailwavev1.EventKind) string { return mailwavev1.EventKindWord(k) }

func domainOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == '@' {
			return addr[i+1:]
		}
	}
	return ""
}
