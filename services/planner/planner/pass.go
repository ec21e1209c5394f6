package planner

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/mail"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/tenancy"
	"github.com/mailwave/mailwave/pkg/warmup"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// chunk is the number of recipients planned together: one round of
// warm-up reservations, wave placements and publish acknowledgements.
const chunk = 512

// request is one pass over a send request. A campaign may take several
// passes: one per day while its volume exceeds the warm-up caps.
type request struct {
	req   *mailwavev1.SendRequest
	msg   *events.Msg[*mailwavev1.SendRequest]
	now   time.Time
	lane  string
	tx    bool
	route *tenancy.Route
	cont  *content
	// verdict, when set, refuses every recipient not planned yet with
	// this reason.
	verdict string
	maxAge  time.Duration
	// lastCall is set once the request's max age has passed: volume that
	// does not fit today is dropped instead of waiting.
	lastCall bool

	sendingDomain, bounceDomain string
	ips                         []tenancy.IP
	warm                        []int // indices of warm IPs in ips

	// waves: start and end of the send window, the recipients per
	// provider still to plan, and those placed so far in this pass.
	waved      bool
	start, end time.Time
	counts     map[string]int
	placed     map[string]int

	bits     *bitmap
	pend     pending
	leftover int
	seen     int
	// progressAt is when JetStream last heard that the request is being
	// worked on (see keepAlive).
	progressAt time.Time
}

// keepAlive tells JetStream that a long request is still being planned,
// so that it is not given to another replica, at most every few seconds:
// a request planned within them costs no message for it.
func (p *planner) keepAlive(r *request) {
	every := 10 * time.Second
	if w := p.cfg.AckWait; w > 0 {
		every = min(every, w/3)
	}
	if r.msg == nil || time.Since(r.progressAt) < every {
		return
	}
	_ = r.msg.InProgress()
	r.progressAt = time.Now()
}

// item is one recipient in a chunk.
type item struct {
	idx       int
	r         *mailwavev1.Recipient
	addr      string
	id        string
	domain    string
	provider  string
	ip        int // index in request.ips; -1 for none
	notBefore time.Time
	// reserved lists what this item holds of today's warm-up caps.
	reserved []warmup.Subject
	// done is set when the item was dropped while capping it.
	done bool
}

// plan runs one pass over the request in m at instant now.
func (p *planner) plan(ctx context.Context, m *events.Msg[*mailwavev1.SendRequest], now time.Time) error {
	req := m.Payload
	r := &request{req: req, msg: m, now: now, tx: req.GetPriority() == mailwavev1.Priority_PRIORITY_TRANSACTIONAL, progressAt: time.Now()}
	r.lane = mailwavev1.LaneFor(req.GetPriority())
	route, err := p.tenancy.Resolve(req.GetTenant(), req.GetBrand(), req.GetMailStream(), req.GetCommunicationType())
	if err != nil {
		r.verdict = strings.TrimPrefix(err.Error(), tenancy.ErrNoRoute.Error()+": ")
	} else {
		r.route = route
		if r.cont, err = prepare(req, route); err != nil {
			r.verdict = strings.TrimPrefix(err.Error(), errContent.Error()+": ")
		}
	}
	r.maxAge = p.cfg.MaxAge
	if route != nil && route.MaxAge > 0 {
		r.maxAge = route.MaxAge
	}
	if d := req.GetMaxAge(); d != nil && d.AsDuration() > 0 {
		r.maxAge = d.AsDuration()
	}
	requested := now
	if t := req.GetRequestedAt(); t != nil && t.AsTime().Before(now) {
		requested = t.AsTime()
	}
	r.lastCall = now.Sub(requested) >= r.maxAge
	if r.verdict == "" {
		reason, err := p.auditFailure(ctx, r.cont.sendingDomain)
		if err != nil {
			return err
		}
		if reason != "" {
			// Held: nothing is planned while the domain fails its audit;
			// the request is looked at again every MW_PLANNER_RECHECK and
			// dropped with the reason once MW_HOLD_MAX has passed.
			if age := now.Sub(requested); age < p.cfg.HoldMax {
				p.held.WithLabelValues("audit").Inc()
				p.progress.setStatus(ctx, req, statusHeld, reason, now, now.Add(p.cfg.Recheck))
				return events.Retry(min(p.cfg.Recheck, p.cfg.HoldMax-age), fmt.Errorf("%w: %s", errHeld, reason))
			}
			r.verdict = fmt.Sprintf("%s; held for %s without the audit passing", reason, p.cfg.HoldMax)
		}
	}
	if r.verdict == "" {
		p.setup(r)
	}
	if err := p.suppress.sync(ctx); err != nil {
		return err
	}
	multi := req.GetAudience() != nil || len(req.GetRecipients()) > 1
	if multi {
		if r.bits, err = p.planned.load(ctx, req, r.maxAge); err != nil {
			return err
		}
	}
	if r.waved {
		if err := p.count(ctx, r); err != nil {
			return err
		}
	}
	var batch []*item
	err = p.forEach(ctx, req, func(idx int, rcpt *mailwavev1.Recipient) error {
		r.seen++
		if r.bits.has(idx) {
			return nil
		}
		batch = append(batch, &item{idx: idx, r: rcpt, ip: -1})
		if len(batch) < chunk {
			return nil
		}
		err := p.planChunk(ctx, r, batch)
		batch = batch[:0]
		return err
	})
	if err == nil && len(batch) > 0 {
		err = p.planChunk(ctx, r, batch)
	}
	if err != nil {
		return err
	}
	if r.leftover > 0 {
		next := warmup.DayStart(warmup.DayOf(now) + 1)
		wait := min(p.cfg.Recheck, next.Sub(now))
		p.held.WithLabelValues("warmup").Inc()
		p.progress.setStatus(ctx, req, statusWaiting,
			fmt.Sprintf("%d recipients wait for the next day's warm-up caps", r.leftover), now, now.Add(wait))
		return events.Retry(wait, fmt.Errorf("%w: %d recipients", errWaiting, r.leftover))
	}
	status, reason := statusPlanned, ""
	if r.verdict != "" {
		status, reason = statusRefused, r.verdict
	}
	p.progress.setStatus(ctx, req, status, reason, now, time.Time{})
	p.progress.setRecipients(ctx, req, r.seen)
	return nil
}

// setup fills the request's routing and wave window.
func (p *planner) setup(r *request) {
	r.sendingDomain = r.cont.sendingDomain
	r.bounceDomain = r.route.DomainConfig.BounceDomain
	if r.bounceDomain == "" {
		r.bounceDomain = "bounces." + r.sendingDomain
	}
	if pc := r.route.PoolConfig; pc != nil {
		r.ips = pc.IPs
		for i, ip := range pc.IPs {
			if !ip.New {
				r.warm = append(r.warm, i)
			}
		}
	}
	// The campaign starts at its not_before, else when it was requested;
	// its window counts from there, so a later pass (the next day's
	// volume) spreads over what remains of it, if anything.
	origin := timeOr(r.req.GetNotBefore(), timeOr(r.req.GetRequestedAt(), r.now))
	r.start = later(r.now, origin)
	window := r.route.SendWindow
	if w := r.req.GetSendWindow(); w != nil && w.AsDuration() > 0 {
		window = w.AsDuration()
	}
	if !r.tx && window > 0 {
		r.waved = true
		// No wave after the messages would expire.
		r.end = origin.Add(window)
		if exp := r.now.Add(r.maxAge); r.end.After(exp) {
			r.end = exp
		}
		r.counts, r.placed = map[string]int{}, map[string]int{}
	}
}

func timeOr(ts *timestamppb.Timestamp, def time.Time) time.Time {
	if ts == nil {
		return def
	}
	return ts.AsTime()
}

// count tallies the recipients still to plan per provider, so each
// provider's share is spread evenly over the window.
func (p *planner) count(ctx context.Context, r *request) error {
	byDomain := map[string]int{}
	err := p.forEach(ctx, r.req, func(idx int, rcpt *mailwavev1.Recipient) error {
		if idx%100_000 == 99_999 {
			// Millions of recipients take seconds: keep the request ours.
			p.keepAlive(r)
		}
		if r.bits.has(idx) {
			return nil
		}
		addr, ok := parseAddress(rcpt.GetAddress())
		if !ok || p.suppress.check(r.req, addr) != nil {
			return nil
		}
		byDomain[domainOf(addr)]++
		return nil
	})
	if err != nil {
		return err
	}
	domains := make([]string, 0, len(byDomain))
	for d := range byDomain {
		domains = append(domains, d)
	}
	provs := p.provs.lookup(ctx, domains)
	for d, n := range byDomain {
		r.counts[provs[d]] += n
	}
	return nil
}

// planChunk plans a batch of recipients: refusals and suppressions first,
// then warm-up caps, waves, rendering and publishing.
func (p *planner) planChunk(ctx context.Context, r *request, batch []*item) error {
	var done, cands []*item
	for _, it := range batch {
		addr, ok := parseAddress(it.r.GetAddress())
		it.addr = addr
		it.id = MessageID(r.req.GetIdempotencyKey(), it.r.GetAddress())
		switch {
		case r.verdict != "":
			p.drop(ctx, r, it, r.verdict)
			done = append(done, it)
		case !ok:
			p.drop(ctx, r, it, fmt.Sprintf("invalid recipient address %q", it.r.GetAddress()))
			done = append(done, it)
		default:
			it.id = MessageID(r.req.GetIdempotencyKey(), addr)
			if sup := p.suppress.check(r.req, addr); sup != nil {
				p.suppressed(ctx, r, it, sup)
				done = append(done, it)
				continue
			}
			it.domain = domainOf(addr)
			cands = append(cands, it)
		}
	}
	if len(cands) > 0 {
		domains := make([]string, len(cands))
		for i, it := range cands {
			domains[i] = it.domain
		}
		provs := p.provs.lookup(ctx, domains)
		for _, it := range cands {
			it.provider = provs[it.domain]
			it.ip = r.preferredIP(it.addr)
		}
		kept, err := p.capByWarmup(ctx, r, cands)
		if err != nil {
			return err
		}
		for _, it := range cands {
			if it.done {
				done = append(done, it)
			}
		}
		if r.waved {
			if err := p.placeWaves(ctx, r, kept); err != nil {
				p.releaseAll(ctx, r, kept)
				return err
			}
		} else if r.start.After(r.now) {
			// A scheduled send without a window: everything at its start.
			for _, it := range kept {
				it.notBefore = r.start
			}
		}
		for _, it := range kept {
			if err := p.publish(ctx, r, it); err != nil {
				return err
			}
			done = append(done, it)
		}
	}
	if err := r.pend.wait(ctx); err != nil {
		return err
	}
	// The outcomes are stored: they count in the campaign's progress.
	// (The planner-events consumer does not read the planner's own
	// events, which would cost every message a second delivery.)
	if err := p.progress.countAll(ctx, r.pend.tallies); err != nil {
		return err
	}
	r.pend.tallies = r.pend.tallies[:0]
	if r.bits != nil {
		if err := r.bits.mark(ctx, done); err != nil {
			return err
		}
	}
	p.keepAlive(r)
	return nil
}

// preferredIP is the pool IP a recipient keeps by hash, so a recipient's
// mail leaves from one address; -1 without IPs.
func (r *request) preferredIP(addr string) int {
	if len(r.ips) == 0 {
		return -1
	}
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(addr)))
	return int(h.Sum32() % uint32(len(r.ips)))
}

// spillIP is the warm IP a recipient moves to when its new IP is at its
// cap; -1 when the pool has none or does not spill.
func (r *request) spillIP(addr string) int {
	if len(r.warm) == 0 || !r.route.PoolConfig.Spill {
		return -1
	}
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(addr)))
	return r.warm[h.Sum32()%uint32(len(r.warm))]
}

// publish stores the message record, the dispatch (or its wave's
// schedule) and the accepted event of a planned recipient.
func (p *planner) publish(ctx context.Context, r *request, it *item) error {
	req := r.req
	data, headerID, err := r.cont.render(it.r, it.addr, it.id, r.now, p.personal(r, it))
	if err != nil {
		p.releaseAll(ctx, r, []*item{it})
		p.drop(ctx, r, it, strings.TrimPrefix(err.Error(), errContent.Error()+": "))
		return nil
	}
	returnPath, err := p.signer.Address(it.id, it.addr, r.bounceDomain)
	if err != nil {
		return fmt.Errorf("planner: return path: %w", err)
	}
	site := mx.Token(it.provider)
	routing := &mailwavev1.Routing{
		Pool:            r.route.Pool,
		SendingDomain:   r.sendingDomain,
		DkimSelectors:   r.route.DomainConfig.DKIMSelectors,
		Site:            site,
		RecipientDomain: it.domain,
		RelayRoute:      r.route.Relay,
	}
	if r.route.Relay != "" {
		routing.Pool = "relay-" + r.route.Relay
	}
	if it.ip >= 0 {
		ip := r.ips[it.ip]
		routing.SourceIp, routing.HeloName = ip.IP, ip.Hostname
		// The pool's other warm IPs, in ring order from the chosen one:
		// where the sender goes when a policy pauses the chosen IP. New
		// IPs are left out: their daily caps are exact.
		for k := 1; k < len(r.ips); k++ {
			alt := r.ips[(it.ip+k)%len(r.ips)]
			if !alt.New {
				routing.FallbackSources = append(routing.FallbackSources, &mailwavev1.SourceAddress{Ip: alt.IP, HeloName: alt.Hostname})
			}
		}
	}
	d := &mailwavev1.DispatchMessage{
		MessageId:         it.id,
		RequestId:         req.GetIdempotencyKey(),
		Tenant:            req.GetTenant(),
		Brand:             req.GetBrand(),
		MailStream:        req.GetMailStream(),
		CommunicationType: req.GetCommunicationType(),
		CampaignId:        req.GetCampaignId(),
		Priority:          req.GetPriority(),
		Recipient:         it.addr,
		ReturnPath:        returnPath,
		Data:              data,
		Routing:           routing,
		Attempt:           1,
		CreatedAt:         timestamppb.New(r.now),
		ExpiresAt:         timestamppb.New(r.now.Add(r.maxAge)),
		HeaderMessageId:   headerID,
		Metadata:          mergeMeta(req.GetMetadata(), it.r),
	}
	if !it.notBefore.IsZero() {
		d.NotBefore = timestamppb.New(it.notBefore)
	}
	// The record goes first: once the dispatch is stored, a bounce for
	// it can arrive, and must find the record.
	rec := &mailwavev1.MessageRecord{
		MessageId: it.id, RequestId: d.RequestId, Tenant: d.Tenant, Brand: d.Brand, MailStream: d.MailStream,
		CommunicationType: d.CommunicationType, CampaignId: d.CampaignId, Recipient: it.addr,
		ExternalId: it.r.GetExternalId(), Pool: routing.Pool, SourceIp: routing.SourceIp,
		SendingDomain: routing.SendingDomain, Site: it.provider, ReturnPath: returnPath, HeaderMessageId: headerID,
		CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt, SendSequence: r.msg.Sequence, Vars: it.r.GetVars(), Priority: d.Priority,
	}
	rf, err := p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectMessageRecord(it.id), rec)
	if err != nil {
		return err
	}
	subject := mailwavev1.SubjectDispatch(routing.Pool, site)
	if r.tx {
		subject = mailwavev1.SubjectDispatchTransactional(routing.Pool, site)
	}
	var f jetstream.PubAckFuture
	if at := it.notBefore; !at.IsZero() && at.After(r.now.Add(time.Second)) {
		// A later wave or a scheduled send waits as a JetStream message
		// schedule in the DISPATCH stream, outside the sender's filter,
		// holding no consumer slot, until the server moves it to its
		// dispatch subject. Schedules have one-second resolution: round
		// up so nothing leaves early.
		at = at.Truncate(time.Second).Add(time.Second)
		f, err = p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectRetry(it.id), d,
			events.WithMsgID(it.id+":wave"),
			events.WithHeader(mailwavev1.HeaderSchedule, "@at "+at.UTC().Format(time.RFC3339)),
			events.WithHeader(mailwavev1.HeaderScheduleTarget, subject))
	} else {
		f, err = p.rt.Pub.PublishAsync(ctx, subject, d, events.WithMsgID(it.id))
	}
	if err != nil {
		return err
	}
	r.pend.futures = append(r.pend.futures, rf, f)
	ev := p.event(r, it.r, mailwavev1.EventKind_EVENT_KIND_ACCEPTED)
	ev.MessageId = it.id
	ev.Recipient = it.addr
	ev.Pool = routing.Pool
	ev.SourceIp = routing.SourceIp
	ev.SendingDomain = routing.SendingDomain
	ev.Provider = it.provider
	if d.NotBefore != nil {
		ev.NextAttemptAt = d.NotBefore
	}
	if err := p.publishEvent(ctx, r, ev, it.id+":accepted"); err != nil {
		return err
	}
	p.recipients.WithLabelValues(req.GetTenant(), r.lane, "accepted").Inc()
	return nil
}

func (p *planner) drop(ctx context.Context, r *request, it *item, reason string) {
	ev := p.event(r, it.r, mailwavev1.EventKind_EVENT_KIND_DROPPED)
	ev.MessageId = it.id
	ev.Reason = reason
	if err := p.publishEvent(ctx, r, ev, it.id+":dropped"); err != nil {
		r.pend.err = errors.Join(r.pend.err, err)
		return
	}
	p.recipients.WithLabelValues(r.req.GetTenant(), r.lane, "dropped").Inc()
}

func (p *planner) suppressed(ctx context.Context, r *request, it *item, sup *suppression) {
	ev := p.event(r, it.r, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED)
	ev.MessageId = it.id
	ev.Recipient = it.addr
	ev.Reason = sup.reason
	ev.Detail = "suppressed for " + scopeWord(sup.scope)
	if err := p.publishEvent(ctx, r, ev, it.id+":suppressed"); err != nil {
		r.pend.err = errors.Join(r.pend.err, err)
		return
	}
	p.recipients.WithLabelValues(r.req.GetTenant(), r.lane, "suppressed").Inc()
}

func (p *planner) event(r *request, rcpt *mailwavev1.Recipient, kind mailwavev1.EventKind) *mailwavev1.DeliveryEvent {
	req := r.req
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
		Recipient:         rcpt.GetAddress(),
		ExternalId:        rcpt.GetExternalId(),
		OccurredAt:        timestamppb.New(r.now),
		CreatedAt:         timestamppb.New(r.now),
		Metadata:          req.GetMetadata(),
	}
}

func (p *planner) publishEvent(ctx context.Context, r *request, ev *mailwavev1.DeliveryEvent, msgID string) error {
	f, err := p.rt.Pub.PublishAsync(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(msgID))
	if err != nil {
		return err
	}
	r.pend.futures = append(r.pend.futures, f)
	if t, ok := tallyOf(ev); ok {
		r.pend.tallies = append(r.pend.tallies, t)
	}
	return nil
}

// pending collects publish acknowledgements awaited together, and the
// campaign counters the planner's own outcomes add to once they are
// stored.
type pending struct {
	futures []jetstream.PubAckFuture
	err     error
	tallies []tally
}

func (pd *pending) wait(ctx context.Context) error {
	defer func() { pd.futures, pd.err = pd.futures[:0], nil }()
	if pd.err != nil {
		return pd.err
	}
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

// forEach yields every recipient of the request with its position: the
// inline list, or the stored audience read as a stream.
func (p *planner) forEach(ctx context.Context, req *mailwavev1.SendRequest, each func(int, *mailwavev1.Recipient) error) error {
	if ref := req.GetAudience(); ref != nil {
		i := 0
		err := readAudience(ctx, p.rt.JS, ref, func(r *mailwavev1.Recipient) error {
			err := each(i, r)
			i++
			return err
		})
		if errors.Is(err, errAudience) {
			return fmt.Errorf("%w: %v", events.ErrMalformed, err)
		}
		return err
	}
	for i, r := range req.GetRecipients() {
		if err := each(i, r); err != nil {
			return err
		}
	}
	return nil
}

func parseAddress(s string) (string, bool) {
	a, err := mail.ParseAddress(s)
	if err != nil || domainOf(a.Address) == "" {
		return "", false
	}
	return a.Address, true
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

// later returns the later of two instants.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
